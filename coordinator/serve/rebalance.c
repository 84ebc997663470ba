/*
 * rebalance: the planner on the recent routing, the decisions, and the loop
 * that stages, times and rolls back (rebalance.h).
 */
#include "rebalance.h"

#include <cjson/cJSON.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "clock.h"
#include "log.h"

static const char *const s_outcome_names[MC_REBALANCE_N_OUTCOMES] = {
    "applied", "rolled_back", "skipped_gain", "skipped_busy", "skipped_idle", "failed"};

const char *mc_rebalance_outcome_name(mc_rebalance_outcome_t o) {
    return (unsigned)o < MC_REBALANCE_N_OUTCOMES ? s_outcome_names[o] : "unknown";
}

// --- the decisions -------------------------------------------------------------------

// The machines of cur in cur's order: the coordinator, then each node of
// cur (found by name in ms) at cur's endpoint with cur's key.
static mc_err_t s_machines_of(const mc_plan_machines_t *ms, const mc_cluster_config_t *cur, mc_plan_machines_t *out,
                              char *err) {
    if (!ms->n || !ms->m[0].coordinator) return mc_err_set(err, MC_ERR_ARG, "the machines file has no coordinator");
    mc_plan_machines_t o = {.n = cur->n_nodes + 1, .request_ms = ms->request_ms};
    if (!(o.m = calloc(o.n, sizeof *o.m))) return mc_err_set(err, MC_ERR_NOMEM, "out of memory");
    o.m[0] = ms->m[0];
    for (size_t i = 0; i < cur->n_nodes; i++) {
        const mc_cluster_node_t *n = &cur->nodes[i];
        size_t j = 1;
        while (j < ms->n && strcmp(ms->m[j].name, n->name)) j++;
        if (j == ms->n) {
            free(o.m);
            return mc_err_set(err, MC_ERR_ARG, "node %s is not in the machines file", n->name);
        }
        o.m[i + 1] = ms->m[j];
        snprintf(o.m[i + 1].endpoint, sizeof o.m[i + 1].endpoint, "%s", n->endpoint);
        snprintf(o.m[i + 1].public_key, sizeof o.m[i + 1].public_key, "%s", n->public_key);
        o.m[i + 1].mem_limit_mb = n->mem_limit_mb;
    }
    *out = o;
    return MC_OK;
}

mc_err_t mc_rebalance_propose(const mc_plan_shape_t *s, const mc_plan_machines_t *ms, const mc_routing_stats_t *st,
                              const mc_cluster_config_t *cur, const mc_plan_params_t *pp, mc_cluster_config_t **out,
                              mc_rebalance_proposal_t *prop, char *err) {
    if (st->n_layer != s->n_layer || st->n_expert != s->n_expert || st->k != s->k)
        return mc_err_set(err, MC_ERR_ARG, "the routing statistics are not of this model's shape");
    mc_plan_machines_t mine = {0};
    mc_plan_placement_t now = {0}, next = {0};
    mc_plan_sim_t sim_now = {0}, sim_next = {0};
    mc_cluster_config_t *cand = NULL;
    mc_err_t rc = s_machines_of(ms, cur, &mine, err);
    if (!rc) rc = mc_plan_placement_from_config(cur, &mine, s, &now, err);
    // The proposal is judged against the current placement (min_gain of the
    // rebalance block), not against the naive split.
    mc_plan_params_t own = *pp;
    own.min_gain = 0;
    if (!rc) rc = mc_plan_make(s, &mine, st, &own, &next, err);
    if (!rc) rc = mc_plan_simulate(s, &mine, st, &now, &pp->sim, &sim_now, err);
    if (!rc) rc = mc_plan_simulate(s, &mine, st, &next, &pp->sim, &sim_next, err);
    if (!rc) rc = mc_plan_placement_to_config(&next, &mine, NULL, cur->wire, &cand, err);
    if (!rc) rc = mc_cluster_config_copy_settings(cand, cur, err);
    for (size_t i = 0; !rc && i < cand->n_nodes; i++) cand->nodes[i].mem_limit_mb = cur->nodes[i].mem_limit_mb;
    if (!rc) {
        const size_t cells = mine.n * s->n_layer * s->n_expert;
        prop->cur_ms = sim_now.step_ms, prop->new_ms = sim_next.step_ms;
        prop->gain = sim_next.step_ms > 0 ? sim_now.step_ms / sim_next.step_ms - 1 : 0;
        prop->tokens = st->n_trace;
        prop->same = !memcmp(now.held, next.held, cells);
        *out = cand;
        cand = NULL;
    }
    mc_cluster_config_destroy(&cand);
    mc_plan_sim_free(&sim_now), mc_plan_sim_free(&sim_next);
    mc_plan_placement_free(&now), mc_plan_placement_free(&next);
    free(mine.m);
    return rc;
}

bool mc_rebalance_decide(const mc_rebalance_proposal_t *p, double min_gain) { return !p->same && p->gain >= min_gain; }

static int s_cmp(const void *a, const void *b) {
    const double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double s_median(double *v, uint32_t n) {
    qsort(v, n, sizeof *v, s_cmp);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

mc_rebalance_verdict_t mc_rebalance_judge(double *before, uint32_t n_before, double *after, uint32_t n_after,
                                          uint32_t window, double tolerance, double *med_before, double *med_after) {
    *med_before = *med_after = 0;
    if (!window || n_after < window) return MC_REBALANCE_WAIT;
    *med_after = s_median(after, n_after);
    if (n_before < window) return MC_REBALANCE_KEEP; // nothing to compare with
    *med_before = s_median(before, n_before);
    return *med_after > *med_before * (1 + tolerance) ? MC_REBALANCE_ROLLBACK : MC_REBALANCE_KEEP;
}

// --- the loop -------------------------------------------------------------------------

mc_rebalance_params_t mc_rebalance_params_default(void) {
    return (mc_rebalance_params_t){.recent_tokens = 4096, .min_tokens = 64, .batch = 1, .max_evals = 2000};
}

typedef enum {
    S_IDLE,      // waiting for the timer
    S_STAGED,    // our change requested, not switched yet
    S_MEASURE,   // switched: timing the steps after
    S_ROLLING,   // rolled back: waiting for the old placement's switch
} s_state_t;

static const char *const s_state_names[] = {"idle", "staged", "measuring", "rolling_back"};

struct mc_rebalance {
    mc_cluster_t *c;
    mc_routing_t *routing;
    mc_rebalance_params_t p;
    mc_cluster_rebalance_t cfg; // the block's numbers (its strings not kept), under mu
    char *machines_path;        // the machines file loaded (resolved; owned)
    const mc_cluster_config_t *seen; // the current file last followed (s_follow)
    bool off;                   // the current file has no block (SIGHUP, PUT): resting, under mu
    mc_plan_shape_t shape;
    mc_plan_machines_t machines;
    s_state_t state;
    double next_at;                    // when the timer next fires (ms); 0: at the first poll + every_s
    const mc_cluster_config_t *want;   // the file requested (owned by the cluster once taken)
    mc_cluster_config_t *previous;     // a copy of the file it replaced, for a rollback
    // Step times, under mu: the last `window` before (a ring), and those after the switch.
    pthread_mutex_t mu;
    double *ring;    // (window)
    uint64_t n_ring; // steps ever put in the ring
    double *frozen;  // (window) the ring at the request
    uint32_t n_frozen;
    double *after;   // (window)
    uint32_t n_after;
    bool timing_after;
    uint64_t counts[MC_REBALANCE_N_OUTCOMES];
    // The last outcome, for /v1/cluster.
    bool have_last;
    mc_rebalance_outcome_t last;
    time_t last_at;
    mc_rebalance_proposal_t prop;
    double measured_before, measured_after;
    char message[MC_ERR_LEN + 128];
};

mc_rebalance_t *mc_rebalance_new(mc_cluster_t *c, const mc_model_t *m, mc_routing_t *routing,
                                 const mc_rebalance_params_t *p, char *err) {
    const mc_cluster_config_t *cfg = mc_cluster_config(c);
    if (!cfg->rebalance.on || !cfg->rebalance.machines_resolved) {
        mc_err_set(err, MC_ERR_ARG, "the cluster file has no rebalance block");
        return NULL;
    }
    mc_rebalance_t *rb = calloc(1, sizeof *rb);
    if (!rb) {
        mc_err_set(err, MC_ERR_NOMEM, "out of memory");
        return NULL;
    }
    pthread_mutex_init(&rb->mu, NULL);
    rb->c = c, rb->routing = routing, rb->p = *p, rb->cfg = cfg->rebalance;
    rb->cfg.machines = rb->cfg.machines_resolved = NULL;
    if (!rb->p.batch) rb->p.batch = 1;
    if (rb->p.min_tokens < rb->p.batch) rb->p.min_tokens = rb->p.batch;
    const uint32_t w = cfg->rebalance.window;
    char sub[MC_ERR_LEN];
    mc_err_t rc = MC_OK;
    if (!(rb->ring = calloc(w, sizeof *rb->ring)) || !(rb->frozen = calloc(w, sizeof *rb->frozen)) ||
        !(rb->after = calloc(w, sizeof *rb->after)))
        rc = mc_err_set(err, MC_ERR_NOMEM, "out of memory");
    if (!rc && (rc = mc_plan_shape_from_model(m, &rb->shape, err))) {
    } else if (!rc && !(rb->machines_path = strdup(cfg->rebalance.machines_resolved))) {
        rc = mc_err_set(err, MC_ERR_NOMEM, "out of memory");
    } else if (!rc && (rc = mc_plan_machines_load(cfg->rebalance.machines_resolved, &rb->machines, sub))) {
        mc_err_set(err, rc, "rebalance: %s", sub);
    } else if (!rc) {
        // Every node must be a machine now (not only when the timer fires).
        mc_plan_machines_t mine;
        if ((rc = s_machines_of(&rb->machines, cfg, &mine, sub))) mc_err_set(err, rc, "rebalance: %s: %s",
                                                                             cfg->rebalance.machines_resolved, sub);
        else free(mine.m);
    }
    if (!rc) rc = mc_routing_keep_recent(routing, rb->p.recent_tokens, err);
    if (rc) mc_rebalance_destroy(&rb);
    return rb;
}

void mc_rebalance_destroy(mc_rebalance_t **prb) {
    if (!prb || !*prb) return;
    mc_rebalance_t *rb = *prb;
    mc_plan_shape_free(&rb->shape);
    mc_plan_machines_free(&rb->machines);
    mc_cluster_config_destroy(&rb->previous);
    free(rb->machines_path);
    free(rb->ring), free(rb->frozen), free(rb->after);
    pthread_mutex_destroy(&rb->mu);
    free(rb);
    *prb = NULL;
}

void mc_rebalance_step(mc_rebalance_t *rb, double ms) {
    pthread_mutex_lock(&rb->mu);
    const uint32_t w = rb->cfg.window;
    const mc_rebalance_phase_t ph = rb->timing_after ? MC_REBALANCE_PHASE_AFTER : MC_REBALANCE_PHASE_BEFORE;
    if (rb->p.step_ms) ms = rb->p.step_ms(rb->p.user, ph, ms);
    if (rb->timing_after) {
        if (rb->n_after < w) rb->after[rb->n_after++] = ms;
    } else {
        rb->ring[rb->n_ring++ % w] = ms;
    }
    pthread_mutex_unlock(&rb->mu);
}

static void s_set_state(mc_rebalance_t *rb, s_state_t st) {
    pthread_mutex_lock(&rb->mu);
    rb->state = st;
    pthread_mutex_unlock(&rb->mu);
}

// The outcome o of this round, logged and counted.
__attribute__((format(printf, 3, 4))) static void s_outcome(mc_rebalance_t *rb, mc_rebalance_outcome_t o,
                                                             const char *fmt, ...) {
    char msg[sizeof rb->message];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    pthread_mutex_lock(&rb->mu);
    rb->counts[o]++;
    rb->have_last = true, rb->last = o, rb->last_at = time(NULL);
    snprintf(rb->message, sizeof rb->message, "%s", msg);
    pthread_mutex_unlock(&rb->mu);
    mc_log_status(rb->p.log, "moe-coordinator", "rebalance %s: %s", mc_rebalance_outcome_name(o), msg);
}

// The current file when no change is staged (NULL while one is).
static const mc_cluster_config_t *s_steady(mc_rebalance_t *rb) {
    bool staging;
    const mc_cluster_config_t *now = mc_cluster_config_latest(rb->c, &staging);
    return staging ? NULL : now;
}

static void s_propose(mc_rebalance_t *rb) {
    char err[MC_ERR_LEN];
    const mc_cluster_config_t *cur = s_steady(rb);
    if (!cur) {
        s_outcome(rb, MC_REBALANCE_SKIPPED_BUSY, "a placement change is staged; next look in %u s", rb->cfg.every_s);
        return;
    }
    // A change must be measurable: window steps timed before it.
    pthread_mutex_lock(&rb->mu);
    const uint64_t timed = rb->n_ring;
    pthread_mutex_unlock(&rb->mu);
    if (timed < rb->cfg.window) {
        s_outcome(rb, MC_REBALANCE_SKIPPED_IDLE, "%llu steps timed, fewer than the window of %u a change is judged on",
                  (unsigned long long)timed, rb->cfg.window);
        return;
    }
    mc_routing_stats_t st;
    if (mc_routing_recent(rb->routing, rb->p.recent_tokens, &st, err)) {
        s_outcome(rb, MC_REBALANCE_FAILED, "%s", err);
        return;
    }
    if (st.n_trace < rb->p.min_tokens) {
        s_outcome(rb, MC_REBALANCE_SKIPPED_IDLE, "%u recent tokens, fewer than the %u a plan needs", st.n_trace,
                  rb->p.min_tokens);
        mc_routing_stats_free(&st);
        return;
    }
    mc_plan_params_t pp = mc_plan_params_default();
    pp.sim.batch = rb->p.batch, pp.sim.wire = cur->wire, pp.max_evals = rb->p.max_evals;
    mc_cluster_config_t *cand = NULL;
    mc_rebalance_proposal_t prop = {0};
    const double t0 = mc_clock_ms();
    const mc_err_t rc = mc_rebalance_propose(&rb->shape, &rb->machines, &st, cur, &pp, &cand, &prop, err);
    mc_routing_stats_free(&st);
    pthread_mutex_lock(&rb->mu);
    rb->prop = prop, rb->measured_before = rb->measured_after = 0;
    pthread_mutex_unlock(&rb->mu);
    if (rc) {
        s_outcome(rb, MC_REBALANCE_FAILED, "the planner: %s", err);
        return;
    }
    mc_log_status(rb->p.log, "moe-coordinator",
                  "rebalance: planned on %u recent tokens in %.0f ms: %.3f ms/step now, %.3f ms/step planned, gain %.1f%% "
                  "(min_gain %.1f%%)%s",
                  prop.tokens, mc_clock_ms() - t0, prop.cur_ms, prop.new_ms, 100 * prop.gain, 100 * rb->cfg.min_gain,
                  prop.same ? ", the same placement" : "");
    if (!mc_rebalance_decide(&prop, rb->cfg.min_gain)) {
        mc_cluster_config_destroy(&cand);
        s_outcome(rb, MC_REBALANCE_SKIPPED_GAIN, "predicted gain %.1f%% below min_gain %.1f%%%s", 100 * prop.gain,
                  100 * rb->cfg.min_gain, prop.same ? " (the plan is the current placement)" : "");
        return;
    }
    mc_cluster_config_t *prev = mc_cluster_config_clone(cur, err);
    if (!prev) {
        mc_cluster_config_destroy(&cand);
        s_outcome(rb, MC_REBALANCE_FAILED, "%s", err);
        return;
    }
    // The steps before: the ring as it stands, frozen at the request.
    pthread_mutex_lock(&rb->mu);
    const uint32_t w = rb->cfg.window;
    rb->n_frozen = rb->n_ring < w ? (uint32_t)rb->n_ring : w;
    for (uint32_t i = 0; i < rb->n_frozen; i++) rb->frozen[i] = rb->ring[i];
    pthread_mutex_unlock(&rb->mu);
    const mc_cluster_config_t *want = cand;
    const mc_err_t rq = mc_cluster_request(rb->c, &cand, err);
    if (rq) {
        mc_cluster_config_destroy(&cand);
        mc_cluster_config_destroy(&prev);
        s_outcome(rb, rq == MC_ERR_BUSY ? MC_REBALANCE_SKIPPED_BUSY : MC_REBALANCE_FAILED, "the change was refused: %s",
                  err);
        return;
    }
    mc_cluster_config_destroy(&rb->previous);
    rb->previous = prev, rb->want = want;
    s_set_state(rb, S_STAGED);
    mc_log_status(rb->p.log, "moe-coordinator", "rebalance: placement staged (predicted gain %.1f%%)", 100 * prop.gain);
}

// The staged change has ended: switched to want (true), or dropped.
static bool s_switched(mc_rebalance_t *rb, bool *done) {
    const mc_cluster_config_t *now = s_steady(rb);
    *done = now != NULL;
    return now == rb->want;
}

// Between rounds: the current file's block is the one followed, so a
// SIGHUP or a PUT of a file with other numbers (or none: the loop rests)
// takes effect once its placement has switched; its machines file is read
// again then (a file that cannot be read keeps the machines loaded).
static void s_follow(mc_rebalance_t *rb, double now_ms) {
    const mc_cluster_config_t *cur = s_steady(rb);
    if (!cur || cur == rb->seen) return;
    rb->seen = cur;
    const mc_cluster_rebalance_t *b = &cur->rebalance;
    if (!b->on || !b->machines_resolved) {
        if (!rb->off) mc_log_status(rb->p.log, "moe-coordinator", "rebalance: off (the current cluster file has no "
                                                                 "rebalance block)");
        pthread_mutex_lock(&rb->mu);
        rb->off = true;
        pthread_mutex_unlock(&rb->mu);
        return;
    }
    char err[MC_ERR_LEN], *path = strdup(b->machines_resolved);
    mc_plan_machines_t ms = {0};
    if (!path) return; // out of memory: tried again with the next file
    if (mc_plan_machines_load(path, &ms, err)) {
        mc_log_status(rb->p.log, "moe-coordinator", "rebalance: %s not taken, the machines of %s kept: %s", path,
                      rb->machines_path, err);
        free(path);
    } else {
        mc_plan_machines_free(&rb->machines);
        rb->machines = ms;
        free(rb->machines_path);
        rb->machines_path = path;
    }
    double *ring = NULL, *frozen = NULL, *after = NULL;
    if (b->window != rb->cfg.window &&
        (!(ring = calloc(b->window, sizeof *ring)) || !(frozen = calloc(b->window, sizeof *frozen)) ||
         !(after = calloc(b->window, sizeof *after)))) {
        free(ring), free(frozen), free(after);
        rb->seen = NULL; // out of memory: the old numbers stay, tried again at the next poll
        return;
    }
    pthread_mutex_lock(&rb->mu);
    const bool changed = rb->off || b->every_s != rb->cfg.every_s || b->min_gain != rb->cfg.min_gain ||
                         b->window != rb->cfg.window || b->tolerance != rb->cfg.tolerance;
    if (ring) { // steps are timed afresh into the new window
        free(rb->ring), free(rb->frozen), free(rb->after);
        rb->ring = ring, rb->frozen = frozen, rb->after = after;
        rb->n_ring = rb->n_frozen = rb->n_after = 0;
    }
    if (b->every_s != rb->cfg.every_s) rb->next_at = now_ms + b->every_s * 1e3;
    rb->cfg.on = true, rb->cfg.every_s = b->every_s, rb->cfg.min_gain = b->min_gain;
    rb->cfg.window = b->window, rb->cfg.tolerance = b->tolerance;
    rb->off = false;
    pthread_mutex_unlock(&rb->mu);
    if (changed)
        mc_log_status(rb->p.log, "moe-coordinator", "rebalance: every %u s, min_gain %.1f%%, window %u, tolerance %.0f%%",
                      b->every_s, 100 * b->min_gain, b->window, 100 * b->tolerance);
}

void mc_rebalance_poll(mc_rebalance_t *rb, double now_ms) {
    char err[MC_ERR_LEN];
    bool done;
    switch (rb->state) {
    case S_IDLE:
        s_follow(rb, now_ms);
        if (rb->off) return;
        if (!rb->next_at) rb->next_at = now_ms + rb->cfg.every_s * 1e3;
        if (now_ms < rb->next_at) return;
        rb->next_at = now_ms + rb->cfg.every_s * 1e3;
        s_propose(rb);
        return;
    case S_STAGED:
        if (s_switched(rb, &done)) {
            pthread_mutex_lock(&rb->mu);
            rb->n_after = 0, rb->timing_after = true;
            pthread_mutex_unlock(&rb->mu);
            s_set_state(rb, S_MEASURE);
            mc_log_status(rb->p.log, "moe-coordinator", "rebalance: switched; timing the next %u steps",
                          rb->cfg.window);
        } else if (done) {
            s_set_state(rb, S_IDLE);
            s_outcome(rb, MC_REBALANCE_FAILED, "the staged change was dropped (GET /v1/cluster says why)");
        }
        return;
    case S_MEASURE: {
        const uint32_t w = rb->cfg.window;
        if (s_steady(rb) != rb->want) { // another change (PUT, SIGHUP) came after ours: not ours to judge or undo
            pthread_mutex_lock(&rb->mu);
            rb->timing_after = false;
            pthread_mutex_unlock(&rb->mu);
            s_set_state(rb, S_IDLE);
            s_outcome(rb, MC_REBALANCE_APPLIED, "switched, then another placement change followed before %u steps were "
                                                "timed: not judged", w);
            return;
        }
        pthread_mutex_lock(&rb->mu);
        double mb, ma;
        const mc_rebalance_verdict_t v =
            mc_rebalance_judge(rb->frozen, rb->n_frozen, rb->after, rb->n_after, w, rb->cfg.tolerance, &mb, &ma);
        if (v != MC_REBALANCE_WAIT) {
            rb->timing_after = false;
            rb->measured_before = mb, rb->measured_after = ma;
            // The ring starts again from the new placement's steps.
            for (uint32_t i = 0; i < rb->n_after; i++) rb->ring[i] = rb->after[i];
            rb->n_ring = rb->n_after;
        }
        pthread_mutex_unlock(&rb->mu);
        if (v == MC_REBALANCE_WAIT) return;
        if (v == MC_REBALANCE_KEEP) {
            s_set_state(rb, S_IDLE);
            if (mb > 0)
                s_outcome(rb, MC_REBALANCE_APPLIED, "median step %.3f ms before, %.3f ms after (%u steps each; "
                                                    "predicted gain %.1f%%)", mb, ma, w, 100 * rb->prop.gain);
            else
                s_outcome(rb, MC_REBALANCE_APPLIED, "median step %.3f ms after; fewer than %u steps before to compare "
                                                    "with (predicted gain %.1f%%)", ma, w, 100 * rb->prop.gain);
            return;
        }
        mc_log_status(rb->p.log, "moe-coordinator",
                      "rebalance: median step %.3f ms after the switch, %.3f ms before (tolerance %.0f%%): rolling back",
                      ma, mb, 100 * rb->cfg.tolerance);
        const mc_cluster_config_t *want = rb->previous;
        const mc_err_t rq = mc_cluster_request(rb->c, &rb->previous, err);
        if (rq) {
            mc_cluster_config_destroy(&rb->previous);
            s_set_state(rb, S_IDLE);
            s_outcome(rb, MC_REBALANCE_FAILED, "measured slower (%.3f ms after, %.3f before) but the rollback was "
                                               "refused: %s", ma, mb, err);
            return;
        }
        rb->want = want;
        s_set_state(rb, S_ROLLING);
        return;
    }
    case S_ROLLING:
        if (s_switched(rb, &done)) {
            s_set_state(rb, S_IDLE);
            s_outcome(rb, MC_REBALANCE_ROLLED_BACK, "median step %.3f ms after the switch, %.3f ms before: the "
                                                    "previous placement is back", rb->measured_after, rb->measured_before);
        } else if (done) {
            s_set_state(rb, S_IDLE);
            s_outcome(rb, MC_REBALANCE_FAILED, "measured slower, but the rollback's change was dropped");
        }
        return;
    }
}

void mc_rebalance_counts(mc_rebalance_t *rb, uint64_t counts[MC_REBALANCE_N_OUTCOMES]) {
    pthread_mutex_lock(&rb->mu);
    memcpy(counts, rb->counts, sizeof rb->counts);
    pthread_mutex_unlock(&rb->mu);
}

struct cJSON *mc_rebalance_json(mc_rebalance_t *rb) {
    cJSON *o = cJSON_CreateObject();
    if (!o) return NULL;
    pthread_mutex_lock(&rb->mu);
    cJSON_AddNumberToObject(o, "every_s", rb->cfg.every_s);
    cJSON_AddNumberToObject(o, "min_gain", rb->cfg.min_gain);
    cJSON_AddNumberToObject(o, "window", rb->cfg.window);
    cJSON_AddNumberToObject(o, "tolerance", rb->cfg.tolerance);
    cJSON_AddStringToObject(o, "state", rb->off ? "off" : s_state_names[rb->state]);
    cJSON *counts = cJSON_AddObjectToObject(o, "counts");
    for (int i = 0; i < MC_REBALANCE_N_OUTCOMES; i++)
        cJSON_AddNumberToObject(counts, s_outcome_names[i], (double)rb->counts[i]);
    if (rb->have_last) {
        cJSON *l = cJSON_AddObjectToObject(o, "last");
        cJSON_AddStringToObject(l, "outcome", s_outcome_names[rb->last]);
        cJSON_AddNumberToObject(l, "at", (double)rb->last_at);
        cJSON_AddNumberToObject(l, "tokens", rb->prop.tokens);
        cJSON_AddNumberToObject(l, "predicted_ms_before", rb->prop.cur_ms);
        cJSON_AddNumberToObject(l, "predicted_ms_after", rb->prop.new_ms);
        cJSON_AddNumberToObject(l, "predicted_gain", rb->prop.gain);
        cJSON_AddNumberToObject(l, "measured_ms_before", rb->measured_before);
        cJSON_AddNumberToObject(l, "measured_ms_after", rb->measured_after);
        cJSON_AddStringToObject(l, "message", rb->message);
    }
    pthread_mutex_unlock(&rb->mu);
    return o;
}
