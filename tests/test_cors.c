/*
 * test_cors: --cors-origin lists (one origin, several, "*", spaces and a
 * trailing slash), malformed ones refused with a message, which Origin
 * headers are allowed, and the preflight's Allow-Headers list.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>

#include <cmocka.h>
#include <string.h>

#include "cors.h"

static void test_origins(void **state) {
    (void)state;
    char err[MC_ERR_LEN];
    assert_null(mc_cors_allow(NULL, "http://a.example")); // off: nobody
    mc_cors_t *c = mc_cors_new("https://app.example.com, http://localhost:5173/ ,http://[::1]:8000", err);
    assert_non_null(c);
    assert_string_equal(mc_cors_allow(c, "https://app.example.com"), "https://app.example.com");
    assert_string_equal(mc_cors_allow(c, "HTTPS://App.Example.com"), "HTTPS://App.Example.com");
    assert_non_null(mc_cors_allow(c, "http://localhost:5173"));
    assert_non_null(mc_cors_allow(c, "http://[::1]:8000"));
    assert_null(mc_cors_allow(c, "http://app.example.com"));   // another scheme
    assert_null(mc_cors_allow(c, "https://app.example.com:8443")); // another port
    assert_null(mc_cors_allow(c, "https://evil.example.com"));
    assert_null(mc_cors_allow(c, "null"));
    assert_null(mc_cors_allow(c, NULL));
    assert_null(mc_cors_allow(c, ""));
    mc_cors_destroy(&c);
    mc_cors_destroy(&c); // safe twice
    c = mc_cors_new("*", err);
    assert_string_equal(mc_cors_allow(c, "https://anything.example"), "*");
    assert_null(mc_cors_allow(c, NULL)); // no Origin: not a browser's cross-origin call
    mc_cors_destroy(&c);
    static const char *const bad[] = {"", " , ", "app.example.com", "https://app.example.com/path", "ftp//x",
                                      "https://", "https://host:123456", "https://ho st", "https://[zz]"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        err[0] = 0;
        c = mc_cors_new(bad[i], err);
        if (c) fail_msg("accepted '%s'", bad[i]);
        assert_non_null(strstr(err, "--cors-origin"));
    }
}

static void test_allow_headers(void **state) {
    (void)state;
    char out[256];
    mc_cors_allow_headers(NULL, out, sizeof out);
    assert_string_equal(out, "Authorization, Content-Type");
    mc_cors_allow_headers("authorization, content-type, x-stainless-os,X-Api-Key", out, sizeof out);
    assert_string_equal(out, "Authorization, Content-Type, x-stainless-os, X-Api-Key");
    // Not a list of header names: only the two.
    mc_cors_allow_headers("x-a\r\nSet-Cookie: y", out, sizeof out);
    assert_null(strstr(out, "Set-Cookie"));
    assert_null(strchr(out, '\r'));
    // Bounded.
    char small[40];
    mc_cors_allow_headers("x-one, x-two, x-three", small, sizeof small);
    assert_true(strlen(small) < sizeof small);
    assert_int_equal(strncmp(small, "Authorization, Content-Type", 27), 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_origins),
        cmocka_unit_test(test_allow_headers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
