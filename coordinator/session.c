/*
 * session: model, tokenizer, engine, cluster and scheduler, made and
 * destroyed together.
 */
#include "session.h"

#include <stdlib.h>
#include <string.h>

#include "cluster_config.h"
#include "experts_factory.h"
#include "prefetch.h"
#include "routing.h"

// Tokens of routing choices kept as a trace for moe-plan's simulator.
#define MC_SESSION_ROUTING_TRACE 8192

#define MC_SESSION_DEFAULT_CTX 4096u

struct mc_session {
    mc_model_t *model;
    mc_tokenizer_t *tok;
    mc_engine_t *engine;
    mc_scheduler_t *sched;
    mc_experts_t *experts;      // the engine's expert step when there is a cluster (owned)
    struct mc_routing *routing;
    mc_expert_store_t *store;   // --mem-limit (attached to model)
    mc_prefetch_t *prefetch;    // the router's guesses for the store
    char id[256];
    mc_chat_style_t chat_style; // the chat format (chat.h), when chat_err is ""
    char chat_err[MC_ERR_LEN];  // why there is none: an unknown template, a bad --chat-format
};

mc_session_params_t mc_session_params_default(void) {
    return (mc_session_params_t){.threads = 1, .n_seq = 1, .kv_type = MC_DTYPE_F32, .mem_policy = MC_STORE_LFU, .mem_prefetch = -1};
}

// Repack the Q4_0 weights this process multiplies for its kernels
// (mc_model_repack): with a cluster only the file's local experts, whose
// pages are the only expert pages a coordinator keeps (the rest stay
// unread unless a lost node's share is computed here, from the raw rows).
static mc_err_t s_repack(mc_session_t *s, const mc_session_params_t *p, char *err) {
    uint8_t *held = NULL;
    if (p->cluster) {
        const mc_hparams_t *hp = &s->model->hp;
        if (!(held = calloc((size_t)hp->n_layer * hp->n_expert + 1, 1)))
            return mc_err_set(err, MC_ERR_NOMEM, "out of memory");
        for (uint32_t l = 0; l < hp->n_layer; l++)
            for (uint32_t e = 0; e < hp->n_expert; e++)
                held[(size_t)l * hp->n_expert + e] = mc_cluster_config_local_holds(p->cluster, l, e);
    }
    const mc_err_t rc = mc_model_repack(s->model, mc_engine_matmul(s->engine), true, held, err);
    free(held);
    return rc;
}

mc_session_t *mc_session_new(const mc_session_params_t *p, char *err) {
    mc_session_t *s = calloc(1, sizeof *s);
    if (!s) {
        mc_err_set(err, MC_ERR_NOMEM, "out of memory");
        return NULL;
    }
    const char *slash = strrchr(p->model, '/');
    snprintf(s->id, sizeof s->id, "%s", slash ? slash + 1 : p->model);
    size_t len = strlen(s->id);
    if (len > 5 && !strcmp(s->id + len - 5, ".gguf")) s->id[len - 5] = 0;
    if (!(s->model = mc_model_open(p->model, err)) || !(s->tok = mc_tokenizer_new_from_gguf(s->model->gguf, err)))
        goto fail;
    // The chat format: only the chat modes need one (they refuse to start without it).
    if (mc_chat_style_choose(s->model->gguf, s->tok, p->chat_format, &s->chat_style, s->chat_err) == MC_OK)
        s->chat_err[0] = 0;
    mc_engine_params_t ep = mc_engine_params_default();
    ep.n_threads = p->threads;
    const uint32_t train = s->model->hp.n_ctx_train;
    ep.n_ctx = p->ctx ? p->ctx : MC_SESSION_DEFAULT_CTX < train ? MC_SESSION_DEFAULT_CTX : train;
    ep.n_seq = p->n_seq;
    ep.kv_type = p->kv_type;
    ep.pipeline = p->pipeline;
    if (!(s->engine = mc_engine_new(s->model, &ep, err)) || !(s->sched = mc_scheduler_new(s->engine, s->tok, err)))
        goto fail;
    mc_scheduler_set_prefix_cache(s->sched, p->prefix_cache);
    // A cluster that rebalances itself plans on the live routing (rebalance.h).
    const bool rebalance = p->cluster && p->cluster->rebalance.on;
    if ((p->routing || rebalance) && mc_experts_routing_new(s->engine, MC_SESSION_ROUTING_TRACE, &s->routing, err)) goto fail;
    if (p->cluster) {
        mc_experts_params_t xp = mc_experts_params_default();
        xp.model = s->model, xp.mm = mc_engine_matmul(s->engine), xp.cluster = p->cluster, xp.log = p->log;
        if (!(s->experts = mc_experts_new(&xp, err))) goto fail;
        mc_engine_set_experts(s->engine, s->experts);
    }
    // Under a memory limit every expert this process may compute (all of
    // them alone; with a cluster its local ones and a lost node's share)
    // goes through the store, before repacking so they are left to it.
    if (p->mem_limit_mb) {
        mc_expert_store_params_t sp = mc_expert_store_params_default();
        sp.budget_bytes = (uint64_t)p->mem_limit_mb << 20;
        sp.policy = p->mem_policy;
        sp.prefetch = p->mem_prefetch >= 0;
        sp.prefetch_from = p->mem_prefetch >= 0 ? (mc_store_pred_t)p->mem_prefetch : MC_STORE_PRED_ROUTER;
        uint8_t *local = NULL; // with nodes, only the local experts are read ahead
        if (p->cluster) {
            const mc_hparams_t *hp = &s->model->hp;
            if (!(local = calloc((size_t)hp->n_layer * hp->n_expert + 1, 1))) {
                mc_err_set(err, MC_ERR_NOMEM, "out of memory");
                goto fail;
            }
            for (uint32_t l = 0; l < hp->n_layer; l++)
                for (uint32_t e = 0; e < hp->n_expert; e++)
                    local[(size_t)l * hp->n_expert + e] = mc_cluster_config_local_holds(p->cluster, l, e);
        }
        sp.ahead = local;
        s->store = mc_expert_store_new(s->model, mc_engine_matmul(s->engine), &sp, err);
        free(local);
        if (!s->store ||
            !(s->prefetch = mc_prefetch_new(s->engine, s->store, err)))
            goto fail;
        s->model->store = s->store;
    }
    // Without the memory for the repacked copy the products read the file's
    // rows: slower, the same bits. Worth a line, not a failed start.
    char rerr[MC_ERR_LEN];
    if (s_repack(s, p, rerr) != MC_OK && p->log)
        fprintf(p->log, "weights not repacked (%s): products read the file's rows\n", rerr);
    return s;
fail:
    mc_session_destroy(&s);
    return NULL;
}

void mc_session_destroy(mc_session_t **ps) {
    if (!ps || !*ps) return;
    mc_session_t *s = *ps;
    mc_scheduler_destroy(&s->sched);
    mc_experts_destroy(&s->experts); // the cluster with it
    mc_routing_destroy(&s->routing);
    mc_prefetch_destroy(&s->prefetch);
    mc_engine_destroy(&s->engine);
    if (s->model) s->model->store = NULL;
    mc_expert_store_destroy(&s->store);
    mc_tokenizer_destroy(&s->tok);
    mc_model_destroy(&s->model);
    free(s);
    *ps = NULL;
}

const mc_model_t *mc_session_model(const mc_session_t *s) { return s->model; }
const mc_tokenizer_t *mc_session_tokenizer(const mc_session_t *s) { return s->tok; }
mc_engine_t *mc_session_engine(mc_session_t *s) { return s->engine; }
mc_scheduler_t *mc_session_scheduler(mc_session_t *s) { return s->sched; }
mc_experts_t *mc_session_experts(mc_session_t *s) { return s->experts ? s->experts : mc_engine_experts(s->engine); }
const char *mc_session_model_id(const mc_session_t *s) { return s->id; }

mc_err_t mc_session_chat_style(const mc_session_t *s, mc_chat_style_t *out, char *err) {
    if (s->chat_err[0]) return mc_err_set(err, MC_ERR_UNSUPPORTED, "%s", s->chat_err);
    *out = s->chat_style;
    return MC_OK;
}
struct mc_routing *mc_session_routing(mc_session_t *s) { return s->routing; }
mc_expert_store_t *mc_session_store(mc_session_t *s) { return s->store; }

void mc_session_tick(mc_session_t *s) { mc_experts_tick(mc_engine_experts(s->engine)); }

mc_err_t mc_session_report(mc_session_t *s, FILE *f, const char *json_path, char *err) {
    const mc_experts_t *x = mc_session_experts(s);
    if (!mc_experts_n_nodes(x)) return MC_OK;
    const mc_hparams_t *hp = &s->model->hp;
    uint64_t *counts = malloc((size_t)hp->n_layer * hp->n_expert * sizeof *counts);
    if (!counts) return mc_err_set(err, MC_ERR_NOMEM, "out of memory");
    mc_engine_expert_counts(s->engine, counts);
    mc_experts_print_stats(x, counts, f);
    char *txt = json_path ? mc_experts_stats_json(x, counts) : NULL;
    free(counts);
    if (!json_path) return MC_OK;
    if (!txt) return mc_err_set(err, MC_ERR_NOMEM, "out of memory");
    FILE *o = fopen(json_path, "w");
    bool ok = o && fputs(txt, o) >= 0 && fputc('\n', o) != EOF;
    if (o && fclose(o) != 0) ok = false;
    free(txt);
    return ok ? MC_OK : mc_err_set(err, MC_ERR_IO, "%s: cannot write the stats", json_path);
}
