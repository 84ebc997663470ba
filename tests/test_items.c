/*
 * test_items: the answers /v1/responses keeps: put and get (a copy, with
 * its length, a NUL byte inside kept), the oldest dropped by count and by
 * bytes, an answer too large for the store refused, threads at once.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>

#include <cmocka.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "items.h"

static void s_has(mc_items_t *s, const char *id, const char *text, size_t len) {
    size_t got = 0;
    char *t = mc_items_get(s, id, &got);
    if (!t) fail_msg("%s is not kept", id);
    assert_int_equal(got, len);
    assert_memory_equal(t, text, len);
    assert_int_equal(t[len], 0);
    free(t);
}

static void test_put_get_evict(void **state) {
    (void)state;
    mc_items_t *s = mc_items_new(3, 20);
    assert_non_null(s);
    size_t len;
    assert_null(mc_items_get(s, "msg_a", &len));
    assert_int_equal(mc_items_put(s, "msg_a", "one\0two", 7), MC_OK);
    s_has(s, "msg_a", "one\0two", 7);
    assert_int_equal(mc_items_put(s, "msg_b", "bb", 2), MC_OK);
    assert_int_equal(mc_items_put(s, "msg_c", "", 0), MC_OK);
    s_has(s, "msg_c", "", 0);
    // A fourth: the oldest goes (count).
    assert_int_equal(mc_items_put(s, "msg_d", "dddd", 4), MC_OK);
    assert_null(mc_items_get(s, "msg_a", &len));
    s_has(s, "msg_b", "bb", 2);
    assert_int_equal(mc_items_put(s, "msg_e", "fifteen bytes!!", 15), MC_OK);
    assert_null(mc_items_get(s, "msg_b", &len));
    s_has(s, "msg_c", "", 0);
    s_has(s, "msg_d", "dddd", 4);
    // 0 + 4 + 15 + 16 > 20 bytes: the oldest go until it fits.
    assert_int_equal(mc_items_put(s, "msg_g", "sixteen bytes!!!", 16), MC_OK);
    assert_null(mc_items_get(s, "msg_c", &len));
    assert_null(mc_items_get(s, "msg_d", &len));
    assert_null(mc_items_get(s, "msg_e", &len));
    s_has(s, "msg_g", "sixteen bytes!!!", 16);
    // Larger than the whole store: refused, the rest untouched.
    assert_int_equal(mc_items_put(s, "msg_f", "twenty-one bytes long", 21), MC_ERR_RANGE);
    s_has(s, "msg_g", "sixteen bytes!!!", 16);
    mc_items_destroy(&s);
    mc_items_destroy(&s); // safe twice
    assert_null(mc_items_new(0, 10));
}

static void *s_writer(void *arg) {
    mc_items_t *s = arg;
    char id[32], text[32];
    for (int i = 0; i < 2000; i++) {
        snprintf(id, sizeof id, "msg_%p_%d", (void *)&id, i);
        snprintf(text, sizeof text, "answer %d", i);
        mc_items_put(s, id, text, strlen(text));
        size_t len;
        free(mc_items_get(s, id, &len));
    }
    return NULL;
}

static void test_threads(void **state) {
    (void)state;
    mc_items_t *s = mc_items_new(64, 1 << 20);
    pthread_t th[4];
    for (int i = 0; i < 4; i++) assert_int_equal(pthread_create(&th[i], NULL, s_writer, s), 0);
    for (int i = 0; i < 4; i++) pthread_join(th[i], NULL);
    assert_int_equal(mc_items_put(s, "msg_last", "x", 1), MC_OK);
    s_has(s, "msg_last", "x", 1);
    mc_items_destroy(&s);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_put_get_evict),
        cmocka_unit_test(test_threads),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
