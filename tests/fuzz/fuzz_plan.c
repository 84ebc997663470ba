/*
 * fuzz_plan: any bytes as a moe-plan machines file (YAML) and as routing
 * statistics (JSON); when both parse with matching shapes, the simulator
 * and the planner run on them against a small made-up model, on machines
 * with room for it and on machines without (one reading from its disk).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "plan.h"
#include "routing.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char err[MC_ERR_LEN];
    mc_plan_machines_t ms;
    if (!mc_plan_machines_parse((const char *)data, size, "fuzz.yaml", &ms, err)) mc_plan_machines_free(&ms);
    mc_routing_stats_t st;
    if (mc_routing_parse((const char *)data, size, &st, err)) return 0;
    // The statistics against a made-up machines file and model of their shape.
    static const char machines[] =
        "network: {latency_ms: 0.3, bandwidth_mbps: 1000}\n"
        "coordinator: {name: c, memory_mb: 1000, threads: 2, layer_ms_1: 0.1, head_ms_1: 1,"
        " experts: [{types: [Q4_0, Q4_0, Q4_0], ms: [[1, 0.5], [8, 2]]}]}\n"
        "nodes:\n"
        "  - {name: a, endpoint: 'tcp://10.0.0.1:1', memory_mb: 100, threads: 1,"
        " experts: [{types: [Q4_0, Q4_0, Q4_0], ms: [[1, 1]]}]}\n"
        "  - {name: b, endpoint: 'tcp://10.0.0.2:1', memory_mb: 100, threads: 2, host: c, cores: 2,"
        " experts: [{types: [Q4_0, Q4_0, Q4_0], ms: [[1, 0.4], [32, 9]]}]}\n";
    // Less memory than most shapes need: node a reads the rest from its disk.
    static const char tiered[] =
        "coordinator: {name: c, memory_mb: 70, threads: 2, layer_ms_1: 0.1, head_ms_1: 1,"
        " experts: [{types: [Q4_0, Q4_0, Q4_0], ms: [[1, 0.5], [8, 2]]}]}\n"
        "nodes:\n"
        "  - {name: a, endpoint: 'tcp://10.0.0.1:1', memory_mb: 80, threads: 1, disk_read_mb_s: 300,"
        " disk_latency_ms: 0.5, experts: [{types: [Q4_0, Q4_0, Q4_0], ms: [[1, 1]]}]}\n"
        "  - {name: b, endpoint: 'tcp://10.0.0.2:1', memory_mb: 72, threads: 2,"
        " experts: [{types: [Q4_0, Q4_0, Q4_0], ms: [[1, 0.4], [32, 9]]}]}\n";
    for (int v = 0; v < 2; v++) {
        const char *text = v ? tiered : machines;
        if (st.n_layer <= 8 && st.n_expert <= 16 && st.n_trace >= 1 &&
            !mc_plan_machines_parse(text, strlen(text), "m.yaml", &ms, err)) {
            const size_t cells = (size_t)st.n_layer * st.n_expert;
            mc_plan_shape_t s = {st.n_layer, st.n_expert, st.k, 64, calloc(cells * 3, sizeof(mc_dtype_t)),
                                 calloc(cells, sizeof(uint64_t)), calloc(cells, sizeof(mc_wire_enc_t)), 1u << 20, NULL};
            if (!s.types || !s.bytes || !s.auto_enc) abort();
            for (size_t i = 0; i < cells; i++) {
                s.types[3 * i] = s.types[3 * i + 1] = s.types[3 * i + 2] = MC_DTYPE_Q4_0;
                s.bytes[i] = 1u << 20;
                s.auto_enc[i] = MC_WIRE_F32;
            }
            mc_plan_params_t pp = mc_plan_params_default();
            pp.sim.batch = st.n_trace >= 4 ? 4 : 1;
            pp.sim.max_steps = 16;
            pp.max_evals = 200;
            pp.search_steps = 8;
            mc_plan_placement_t p;
            if (!mc_plan_make(&s, &ms, &st, &pp, &p, err)) {
                mc_plan_sim_t r;
                if (mc_plan_check_memory(&p, &ms, &s, err)) abort(); // the planner's promise
                if (mc_plan_simulate(&s, &ms, &st, &p, &pp.sim, &r, err)) abort();
                mc_plan_sim_free(&r);
                mc_plan_placement_free(&p);
            }
            mc_plan_shape_free(&s);
            mc_plan_machines_free(&ms);
        }
    }
    mc_routing_stats_free(&st);
    return 0;
}
