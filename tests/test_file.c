/*
 * test_file: mc_file_read, the one whole-file reader: contents and the NUL
 * after them, the bound (exactly max_bytes is fine, one more is not), files
 * whose size stat does not know (/proc), and the errors' codes and words.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "file.h"
#include "testutil.h"

static void s_write(const char *path, const char *bytes, size_t n) {
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(bytes, 1, n, f), n);
    assert_int_equal(fclose(f), 0);
}

static void test_read(void **state) {
    (void)state;
    char dir[256], path[300], err[MC_ERR_LEN] = "", *buf = NULL;
    size_t len = 0;
    assert_non_null(mc_test_tmpdir(dir, sizeof dir));
    snprintf(path, sizeof path, "%s/f", dir);

    s_write(path, "ab\0cd", 5); // binary: len counts past an inner NUL
    assert_int_equal(mc_file_read(path, 5, &buf, &len, err), MC_OK);
    assert_int_equal(len, 5);
    assert_memory_equal(buf, "ab\0cd", 6); // and a NUL follows
    free(buf);

    assert_int_equal(mc_file_read(path, 4, &buf, &len, err), MC_ERR_FORMAT);
    char want[400];
    snprintf(want, sizeof want, "%s: the file is larger than 4 bytes", path);
    assert_string_equal(err, want);

    s_write(path, "", 0);
    assert_int_equal(mc_file_read(path, 0, &buf, &len, err), MC_OK);
    assert_int_equal(len, 0);
    assert_int_equal(buf[0], 0);
    free(buf);

    // Larger than the first buffer, so it grows.
    size_t big = 200000;
    char *text = malloc(big);
    assert_non_null(text);
    for (size_t i = 0; i < big; i++) text[i] = (char)('a' + i % 26);
    s_write(path, text, big);
    assert_int_equal(mc_file_read(path, big, &buf, &len, err), MC_OK);
    assert_int_equal(len, big);
    assert_memory_equal(buf, text, big);
    free(buf);
    free(text);

    // Errors leave the outputs alone.
    buf = (char *)"untouched";
    len = 7;
    snprintf(path, sizeof path, "%s/missing", dir);
    assert_int_equal(mc_file_read(path, 100, &buf, &len, err), MC_ERR_IO);
    assert_non_null(strstr(err, "missing: cannot open: "));
    assert_int_equal(mc_file_read(dir, 100, &buf, &len, err), MC_ERR_IO);
    assert_non_null(strstr(err, "not a readable regular file (a directory)"));
    assert_string_equal(buf, "untouched");
    assert_int_equal(len, 7);
    mc_test_rmtree(dir);
}

// /proc files report size 0: read to the end all the same, and bounded while read.
static void test_proc(void **state) {
    (void)state;
    char err[MC_ERR_LEN], *buf;
    size_t len;
    assert_int_equal(mc_file_read("/proc/self/status", 1 << 20, &buf, &len, err), MC_OK);
    assert_true(len > 0);
    assert_non_null(strstr(buf, "Name:"));
    free(buf);
    assert_int_equal(mc_file_read("/proc/self/status", 8, &buf, &len, err), MC_ERR_FORMAT);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_read),
        cmocka_unit_test(test_proc),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
