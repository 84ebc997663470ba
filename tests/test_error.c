/*
 * test_error: the error buffer: mc_err_set's message and the code it keeps
 * after it (mc_err_code), a message cut to fit with its code intact, a NULL
 * buffer, a buffer never written, and the codes' names.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <string.h>

#include "error.h"

static void test_code_in_buffer(void **state) {
    (void)state;
    char err[MC_ERR_LEN];
    memset(err, 0, sizeof err);
    assert_int_equal(mc_err_code(err, MC_ERR_NET), MC_ERR_NET); // never written: the fallback
    assert_int_equal(mc_err_set(err, MC_ERR_BUSY, "node %s is leased", "a"), MC_ERR_BUSY);
    assert_string_equal(err, "node a is leased");
    assert_int_equal(mc_err_code(err, MC_ERR_NET), MC_ERR_BUSY);
    // The next write replaces both.
    mc_err_set(err, MC_ERR_IO, "%s", "gone");
    assert_string_equal(err, "gone");
    assert_int_equal(mc_err_code(err, MC_ERR_NET), MC_ERR_IO);
    // A message longer than the buffer is cut, and the code survives.
    char long_msg[2 * MC_ERR_LEN];
    memset(long_msg, 'x', sizeof long_msg - 1);
    long_msg[sizeof long_msg - 1] = 0;
    mc_err_set(err, MC_ERR_FORMAT, "%s", long_msg);
    assert_int_equal(strlen(err), MC_ERR_LEN - 2);
    assert_int_equal(mc_err_code(err, MC_ERR_NET), MC_ERR_FORMAT);
    // Copying a message with its code.
    char copy[MC_ERR_LEN];
    mc_err_set(copy, mc_err_code(err, MC_ERR_NET), "%s", "copied");
    assert_int_equal(mc_err_code(copy, MC_ERR_NET), MC_ERR_FORMAT);
    // MC_OK, a byte out of range and NULL read as the fallback.
    mc_err_set(err, MC_OK, "fine");
    assert_int_equal(mc_err_code(err, MC_ERR_ARG), MC_ERR_ARG);
    err[MC_ERR_LEN - 1] = (char)(MC_ERR_LAST + 1);
    assert_int_equal(mc_err_code(err, MC_ERR_ARG), MC_ERR_ARG);
    assert_int_equal(mc_err_code(NULL, MC_ERR_RANGE), MC_ERR_RANGE);
    assert_int_equal(mc_err_set(NULL, MC_ERR_TIMEOUT, "dropped"), MC_ERR_TIMEOUT);
}

static void test_names(void **state) {
    (void)state;
    for (int c = MC_OK; c <= MC_ERR_LAST; c++) assert_string_not_equal(mc_err_name((mc_err_t)c), "unknown");
    assert_string_equal(mc_err_name(MC_ERR_BUSY), "busy");
    assert_string_equal(mc_err_name((mc_err_t)(MC_ERR_LAST + 1)), "unknown");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_code_in_buffer),
        cmocka_unit_test(test_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
