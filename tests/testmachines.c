/*
 * testmachines: machines files for the tests (testmachines.h).
 */
#include "testmachines.h"

#include <stdarg.h>
#include <setjmp.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <cmocka.h>

mc_test_machines_t mc_test_machines_split(const char *type) {
    return (mc_test_machines_t){.latency_ms = 0.2, .bandwidth_mbps = 1000, .coord_mb = 4000, .layer_ms_1 = 0.05,
                                .layer_ms_8 = 0.2, .head_ms_1 = 0.5, .head_ms_8 = 1, .coord_ms_1 = 50,
                                .coord_ms_32 = 1600, .type = type, .node_ms_1 = 1, .node_ms_32 = 32};
}

// snprintf at buf + *o, failing the test when it does not fit.
static void s_put(char *buf, size_t cap, size_t *o, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static void s_put(char *buf, size_t cap, size_t *o, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    const int w = vsnprintf(buf + *o, cap - *o, fmt, ap);
    va_end(ap);
    if (w < 0 || (size_t)w >= cap - *o) fail_msg("a machines file longer than %zu bytes", cap);
    *o += (size_t)w;
}

char *mc_test_machines_yaml(const mc_test_machines_t *m, const mc_test_machine_t *nodes, size_t n, char *buf,
                            size_t cap) {
    size_t o = 0;
    const char *t = m->type;
    s_put(buf, cap, &o,
          "network: {latency_ms: %g, bandwidth_mbps: %g, request_ms: 0}\n"
          "coordinator:\n  name: coord\n  memory_mb: %g\n  threads: 2\n  layer_ms_1: %g\n  layer_ms_8: %g\n"
          "  head_ms_1: %g\n  head_ms_8: %g\n"
          "  experts:\n    - types: [%s, %s, %s]\n      ms: [[1, %g], [32, %g]]\nnodes:\n",
          m->latency_ms, m->bandwidth_mbps, m->coord_mb, m->layer_ms_1, m->layer_ms_8, m->head_ms_1, m->head_ms_8, t, t,
          t, m->coord_ms_1, m->coord_ms_32);
    for (size_t i = 0; i < n; i++) {
        s_put(buf, cap, &o, "  - name: %s\n    endpoint: '%s'\n    memory_mb: %g\n    threads: 1\n", nodes[i].name,
              nodes[i].endpoint, nodes[i].memory_mb);
        s_put(buf, cap, &o, "    experts:\n      - types: [%s, %s, %s]\n", t, t, t);
        if (m->node_bytes) s_put(buf, cap, &o, "        bytes: %llu\n", (unsigned long long)m->node_bytes);
        s_put(buf, cap, &o, "        ms: [[1, %g], [32, %g]]\n%s", m->node_ms_1, m->node_ms_32,
              nodes[i].extra ? nodes[i].extra : "");
    }
    return buf;
}
