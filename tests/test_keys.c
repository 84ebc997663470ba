/*
 * test_keys: CURVE key pairs, key files and authorized-key lists, including
 * hostile files (every line checked, file:line in messages).
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>

#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <zmq.h>

#include "keys.h"
#include "testutil.h"

static char s_dir[256];

static int s_setup(void **state) {
    (void)state;
    return mc_test_tmpdir(s_dir, sizeof s_dir) ? 0 : -1;
}

static int s_teardown(void **state) {
    (void)state;
    mc_test_rmtree(s_dir);
    return 0;
}

static void test_generate_write_load(void **state) {
    (void)state;
    char err[MC_ERR_LEN], path[512];
    assert_true(mc_keys_available());
    mc_keypair_t a, b, back;
    assert_int_equal(mc_keys_generate(&a, err), MC_OK);
    assert_int_equal(mc_keys_generate(&b, err), MC_OK);
    assert_string_not_equal(a.pub, b.pub);
    assert_int_equal(strlen(a.pub), MC_KEY_TEXT);
    assert_int_equal(mc_keys_write(s_dir, "node", &a, err), MC_OK);
    snprintf(path, sizeof path, "%s/node.key", s_dir);
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600); // the secret is its owner's only
    assert_int_equal(mc_keys_load_secret(path, &back, err), MC_OK);
    assert_string_equal(back.sec, a.sec);
    assert_string_equal(back.pub, a.pub); // derived from the secret
    // Never overwritten.
    assert_int_equal(mc_keys_write(s_dir, "node", &b, err), MC_ERR_IO);
    assert_int_equal(mc_keys_load_secret(path, &back, err), MC_OK);
    assert_string_equal(back.pub, a.pub);
    // The .pub file given where the secret key goes: refused, not taken as
    // a secret (any 32 bytes are one) that would make an unrelated key.
    snprintf(path, sizeof path, "%s/node.pub", s_dir);
    assert_int_equal(mc_keys_load_secret(path, &back, err), MC_ERR_FORMAT);
    assert_non_null(strstr(err, "is this a .pub file?"));
    // The .pub file is an authorized-keys file of one key.
    mc_keyring_t r;
    snprintf(path, sizeof path, "%s/node.pub", s_dir);
    assert_int_equal(mc_keyring_load(path, &r, err), MC_OK);
    assert_int_equal(r.n, 1);
    uint8_t bin[MC_KEY_BYTES];
    assert_non_null(zmq_z85_decode(bin, a.pub));
    assert_true(mc_keyring_has(&r, bin));
    assert_non_null(zmq_z85_decode(bin, b.pub));
    assert_false(mc_keyring_has(&r, bin));
    mc_keyring_free(&r);
    mc_keyring_free(&r);
}

static void test_keyring_files(void **state) {
    (void)state;
    char err[MC_ERR_LEN], text[512];
    mc_keypair_t a, b;
    mc_keys_generate(&a, err), mc_keys_generate(&b, err);
    snprintf(text, sizeof text, "# coordinators\n\n  %s  \r\n# the laptop\n%s\n", a.pub, b.pub);
    mc_keyring_t r;
    assert_int_equal(mc_keyring_parse(text, strlen(text), "auth", &r, err), MC_OK);
    assert_int_equal(r.n, 2);
    mc_keyring_free(&r);
    // Hostile or broken files: a clear error naming the line.
    static const char *const bad[][2] = {
        {"short\n", "auth:1: a key is 40 characters of Z85 text, not 5"},
        {"# only comments\n\n", "auth: no keys in it"},
        {"", "auth: no keys in it"},
        {"0123456789012345678901234567890123456~~~\n", "is not Z85 text"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        r.n = 99;
        assert_int_equal(mc_keyring_parse(bad[i][0], strlen(bad[i][0]), "auth", &r, err) != MC_OK, 1);
        if (!strstr(err, bad[i][1])) fail_msg("'%s': %s", bad[i][0], err);
        assert_int_equal(r.n, 99); // untouched
    }
    snprintf(text, sizeof text, "%s\n%s extra\n", a.pub, a.pub);
    assert_int_equal(mc_keyring_parse(text, strlen(text), "auth", &r, err), MC_ERR_FORMAT);
    assert_non_null(strstr(err, "auth:2:"));
    // A NUL in the middle is just a bad character.
    char nul[64] = "abc";
    nul[1] = 0;
    assert_int_equal(mc_keyring_parse(nul, 3, "auth", &r, err), MC_ERR_FORMAT);
    // Secret key files: the first key line, in a file marked as moe-keygen
    // marks secret keys. Any 32 bytes are a Curve25519 secret, so without
    // the mark a public key given by mistake (NAME.pub) would be taken.
    mc_keypair_t kp;
    snprintf(text, sizeof text, "# moe-cluster CURVE secret key of x\n%s\n", a.sec);
    assert_int_equal(mc_keys_parse_secret(text, strlen(text), "k", &kp, err), MC_OK);
    assert_string_equal(kp.pub, a.pub);
    snprintf(text, sizeof text, "# secret\n%s\n", a.sec);
    assert_int_equal(mc_keys_parse_secret(text, strlen(text), "k", &kp, err), MC_ERR_FORMAT);
    snprintf(text, sizeof text, "%s\n", a.pub); // what NAME.pub holds
    assert_int_equal(mc_keys_parse_secret(text, strlen(text), "node.pub", &kp, err), MC_ERR_FORMAT);
    assert_non_null(strstr(err, "node.pub: not a secret key file"));
    assert_non_null(strstr(err, "is this a .pub file?"));
    assert_int_equal(mc_keys_parse_secret("# none\n", 7, "k", &kp, err), MC_ERR_FORMAT);
    assert_non_null(strstr(err, "k: no key in it"));
    assert_int_equal(mc_keys_load_secret("/nonexistent/x.key", &kp, err), MC_ERR_IO);
    assert_non_null(strstr(err, "/nonexistent/x.key"));
    char z[MC_KEY_TEXT + 1];
    assert_int_equal(mc_keys_parse(a.pub, MC_KEY_TEXT, z, err), MC_OK);
    assert_string_equal(z, a.pub);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_generate_write_load),
        cmocka_unit_test(test_keyring_files),
    };
    return cmocka_run_group_tests(tests, s_setup, s_teardown);
}
