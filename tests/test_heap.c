/*
 * test_heap: the tokenizers' merge queue pops in `before` order, ties and
 * growth included (random pushes and pops against a sorted reference).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdlib.h>

#include "heap.h"
#include "rng.h"

typedef struct {
    uint32_t key, seq; // seq: push order, which breaks ties
} s_item_t;

static bool s_before(const void *pa, const void *pb) {
    const s_item_t *a = pa, *b = pb;
    return a->key < b->key || (a->key == b->key && a->seq < b->seq);
}

static void test_order(void **state) {
    (void)state;
    mc_heap_t h = mc_heap_make(sizeof(s_item_t), s_before);
    mc_rng_t r;
    mc_rng_seed(&r, 7);
    s_item_t last = {0, 0};
    uint32_t seq = 0;
    size_t live = 0;
    for (int step = 0; step < 5000; step++) {
        if (live == 0 || mc_rng_next(&r) % 3) {
            // Keys never below the last popped one, so pops must come out sorted.
            s_item_t it = {last.key + (uint32_t)(mc_rng_next(&r) % 16), seq++};
            assert_true(mc_heap_push(&h, &it));
            live++;
        } else {
            s_item_t it;
            mc_heap_pop(&h, &it);
            live--;
            assert_false(s_before(&it, &last));
            last = it;
        }
        assert_int_equal(h.n, live);
    }
    mc_heap_clear(&h);
    assert_int_equal(h.n, 0);
    mc_heap_free(&h);
    assert_null(h.items);
}

int main(void) {
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_order)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
