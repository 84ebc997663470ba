/*
 * discovery: mDNS/DNS-SD announcements of expert nodes (discovery.h).
 */
#include "discovery.h"

#include <arpa/inet.h>
#include <avahi-client/client.h>
#include <avahi-client/lookup.h>
#include <avahi-client/publish.h>
#include <avahi-common/alternative.h>
#include <avahi-common/error.h>
#include <avahi-common/malloc.h>
#include <avahi-common/strlst.h>
#include <avahi-common/thread-watch.h>
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"

// --- TXT records ------------------------------------------------------------

static bool s_name_ok(const char *s, size_t n) {
    if (n == 0 || n > MC_CLUSTER_MAX_NAME) return false;
    for (size_t i = 0; i < n; i++) {
        const char ch = s[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '.' ||
              ch == '_' || ch == '-'))
            return false;
    }
    return true;
}

mc_err_t mc_discovery_txt_make(const char *name, const char *public_key, bool cache,
                               char txt[][MC_DISCOVERY_TXT_LEN], size_t *n, char *err) {
    if (!name || !s_name_ok(name, strlen(name)))
        return mc_err_set(err, MC_ERR_ARG, "the node name '%.80s' cannot be announced: 1 to %d of [A-Za-z0-9._-]",
                          name ? name : "", MC_CLUSTER_MAX_NAME);
    char key[MC_KEY_TEXT + 1], sub[MC_ERR_LEN];
    const bool has_key = public_key && public_key[0];
    if (has_key && mc_keys_parse(public_key, strlen(public_key), key, sub))
        return mc_err_set(err, MC_ERR_ARG, "the public key cannot be announced: %s", sub);
    size_t k = 0;
    snprintf(txt[k++], MC_DISCOVERY_TXT_LEN, "v=%s", MC_DISCOVERY_VERSION);
    snprintf(txt[k++], MC_DISCOVERY_TXT_LEN, "name=%s", name);
    if (has_key) snprintf(txt[k++], MC_DISCOVERY_TXT_LEN, "key=%s", key);
    if (cache) snprintf(txt[k++], MC_DISCOVERY_TXT_LEN, "cache=1");
    *n = k;
    return MC_OK;
}

// A record's value for key ("key=value"); NULL when it is another key.
static const uint8_t *s_value(const uint8_t *rec, size_t len, const char *key, size_t *vlen) {
    const size_t kl = strlen(key);
    if (len <= kl || memcmp(rec, key, kl) || rec[kl] != '=') return NULL;
    *vlen = len - kl - 1;
    return rec + kl + 1;
}

mc_err_t mc_discovery_node_parse(const char *address, uint32_t port, const uint8_t *const *txt, const size_t *len,
                                 size_t n_txt, mc_discovery_node_t *out, char *err) {
    mc_discovery_node_t d = {0};
    struct in_addr ip;
    if (!address || strlen(address) >= sizeof d.address || inet_pton(AF_INET, address, &ip) != 1)
        return mc_err_set(err, MC_ERR_FORMAT, "the address is not an IPv4 address");
    if (port == 0 || port > 65535) return mc_err_set(err, MC_ERR_FORMAT, "port %u is outside 1..65535", port);
    if (n_txt > MC_DISCOVERY_MAX_TXT)
        return mc_err_set(err, MC_ERR_FORMAT, "%zu TXT records (at most %d)", n_txt, MC_DISCOVERY_MAX_TXT);
    bool seen_v = false, seen_name = false, seen_key = false, seen_cache = false;
    for (size_t i = 0; i < n_txt; i++) {
        const uint8_t *r = txt[i], *v;
        const size_t n = len[i];
        size_t vl;
        if (!r && n) return mc_err_set(err, MC_ERR_FORMAT, "TXT record %zu: NULL", i);
        if (n >= MC_DISCOVERY_TXT_LEN) return mc_err_set(err, MC_ERR_FORMAT, "TXT record %zu: %zu bytes", i, n);
        if (n && memchr(r, 0, n)) return mc_err_set(err, MC_ERR_FORMAT, "TXT record %zu holds a NUL byte", i);
        if ((v = s_value(r, n, "v", &vl))) {
            if (seen_v) return mc_err_set(err, MC_ERR_FORMAT, "two 'v' records");
            seen_v = true;
            if (vl != strlen(MC_DISCOVERY_VERSION) || memcmp(v, MC_DISCOVERY_VERSION, vl))
                return mc_err_set(err, MC_ERR_FORMAT, "version '%.*s' (this coordinator reads %s)", (int)(vl > 16 ? 16 : vl),
                                  (const char *)v, MC_DISCOVERY_VERSION);
        } else if ((v = s_value(r, n, "name", &vl))) {
            if (seen_name) return mc_err_set(err, MC_ERR_FORMAT, "two 'name' records");
            seen_name = true;
            if (!s_name_ok((const char *)v, vl))
                return mc_err_set(err, MC_ERR_FORMAT, "the name is not 1 to %d of [A-Za-z0-9._-]", MC_CLUSTER_MAX_NAME);
            memcpy(d.name, v, vl);
        } else if ((v = s_value(r, n, "key", &vl))) {
            if (seen_key) return mc_err_set(err, MC_ERR_FORMAT, "two 'key' records");
            seen_key = true;
            char sub[MC_ERR_LEN];
            if (vl != MC_KEY_TEXT || mc_keys_parse((const char *)v, vl, d.public_key, sub))
                return mc_err_set(err, MC_ERR_FORMAT, "the key is not %d characters of Z85", MC_KEY_TEXT);
        } else if ((v = s_value(r, n, "cache", &vl))) {
            if (seen_cache) return mc_err_set(err, MC_ERR_FORMAT, "two 'cache' records");
            seen_cache = true;
            if (vl != 1 || (v[0] != '0' && v[0] != '1')) return mc_err_set(err, MC_ERR_FORMAT, "'cache' is not 0 or 1");
            d.cache = v[0] == '1';
        }
    }
    if (!seen_v) return mc_err_set(err, MC_ERR_FORMAT, "no 'v' record");
    if (!seen_name) return mc_err_set(err, MC_ERR_FORMAT, "no 'name' record");
    snprintf(d.address, sizeof d.address, "%s", address);
    d.port = (uint16_t)port;
    snprintf(d.endpoint, sizeof d.endpoint, "tcp://%s:%u", d.address, port);
    *out = d;
    return MC_OK;
}

// --- announcing -------------------------------------------------------------

struct mc_announce {
    AvahiThreadedPoll *poll;
    AvahiClient *client;
    AvahiEntryGroup *group;
    char *service; // the service's name (Avahi's alternative after a clash); avahi_malloc'd
    char txt[MC_DISCOVERY_MAX_TXT][MC_DISCOVERY_TXT_LEN];
    size_t n_txt;
    uint16_t port;
    FILE *log;
};

static void s_publish(mc_announce_t *a, AvahiClient *c);

static void s_rename(mc_announce_t *a) {
    char *alt = avahi_alternative_service_name(a->service);
    mc_log_status(a->log, "moe-expert", "announce: another service is called '%s' on this network; trying '%s'",
                  a->service, alt ? alt : "?");
    if (!alt) return;
    avahi_free(a->service);
    a->service = alt;
}

static void s_group_cb(AvahiEntryGroup *g, AvahiEntryGroupState state, void *ud) {
    mc_announce_t *a = ud;
    a->group = g;
    if (state == AVAHI_ENTRY_GROUP_ESTABLISHED)
        mc_log_status(a->log, "moe-expert", "announce: %s '%s' on port %u", MC_DISCOVERY_TYPE, a->service, a->port);
    else if (state == AVAHI_ENTRY_GROUP_COLLISION) {
        s_rename(a);
        s_publish(a, avahi_entry_group_get_client(g));
    } else if (state == AVAHI_ENTRY_GROUP_FAILURE)
        mc_log_status(a->log, "moe-expert", "announce: failed: %s",
                      avahi_strerror(avahi_client_errno(avahi_entry_group_get_client(g))));
}

// Add the service (again after a rename or a reconnection).
static void s_publish(mc_announce_t *a, AvahiClient *c) {
    if (!a->group && !(a->group = avahi_entry_group_new(c, s_group_cb, a))) {
        mc_log_status(a->log, "moe-expert", "announce: %s", avahi_strerror(avahi_client_errno(c)));
        return;
    }
    avahi_entry_group_reset(a->group);
    AvahiStringList *l = NULL;
    for (size_t i = a->n_txt; i-- > 0;) l = avahi_string_list_add(l, a->txt[i]);
    int rc = avahi_entry_group_add_service_strlst(a->group, AVAHI_IF_UNSPEC, AVAHI_PROTO_INET, 0, a->service,
                                                  MC_DISCOVERY_TYPE, NULL, NULL, a->port, l);
    avahi_string_list_free(l);
    if (rc == AVAHI_ERR_COLLISION) {
        s_rename(a);
        s_publish(a, c);
        return;
    }
    if (rc >= 0) rc = avahi_entry_group_commit(a->group);
    if (rc < 0) mc_log_status(a->log, "moe-expert", "announce: %s", avahi_strerror(rc));
}

static void s_announce_client_cb(AvahiClient *c, AvahiClientState state, void *ud) {
    mc_announce_t *a = ud;
    switch (state) {
    case AVAHI_CLIENT_S_RUNNING: s_publish(a, c); break;
    case AVAHI_CLIENT_S_COLLISION:
    case AVAHI_CLIENT_S_REGISTERING:
        if (a->group) avahi_entry_group_reset(a->group);
        break;
    case AVAHI_CLIENT_CONNECTING:
        // The daemon went away (or is not there yet): its objects are gone.
        a->group = NULL;
        mc_log_status(a->log, "moe-expert", "announce: waiting for the Avahi daemon");
        break;
    case AVAHI_CLIENT_FAILURE:
        mc_log_status(a->log, "moe-expert", "announce: the Avahi client failed: %s", avahi_strerror(avahi_client_errno(c)));
        break;
    }
}

mc_announce_t *mc_announce_new(const mc_announce_params_t *p, char *err) {
    if (!p || !p->port) {
        mc_err_set(err, MC_ERR_ARG, "announce: no port");
        return NULL;
    }
    mc_announce_t *a = calloc(1, sizeof *a);
    if (!a) {
        mc_err_set(err, MC_ERR_NOMEM, "out of memory");
        return NULL;
    }
    a->port = p->port;
    a->log = p->log;
    if (mc_discovery_txt_make(p->name, p->public_key, p->cache, a->txt, &a->n_txt, err)) {
        free(a);
        return NULL;
    }
    int aerr = 0;
    if (!(a->service = avahi_strdup(p->name)) || !(a->poll = avahi_threaded_poll_new()) ||
        !(a->client = avahi_client_new(avahi_threaded_poll_get(a->poll), AVAHI_CLIENT_NO_FAIL, s_announce_client_cb, a,
                                       &aerr)) ||
        avahi_threaded_poll_start(a->poll) < 0) {
        mc_err_set(err, MC_ERR_NET, "--announce: cannot reach the Avahi daemon (mDNS) over the D-Bus system bus: %s",
                   aerr ? avahi_strerror(aerr) : "cannot start the client");
        mc_announce_destroy(&a);
        return NULL;
    }
    return a;
}

void mc_announce_destroy(mc_announce_t **pa) {
    if (!pa || !*pa) return;
    mc_announce_t *a = *pa;
    if (a->poll) avahi_threaded_poll_stop(a->poll);
    // Freeing the client frees its groups and withdraws the service.
    if (a->client) avahi_client_free(a->client);
    if (a->poll) avahi_threaded_poll_free(a->poll);
    avahi_free(a->service);
    free(a);
    *pa = NULL;
}

// --- browsing ---------------------------------------------------------------

struct mc_browse {
    AvahiThreadedPoll *poll;
    AvahiClient *client;
    AvahiServiceBrowser *browser;
    FILE *log;
    // The queue from Avahi's thread to the caller's: mu guards the rest.
    pthread_mutex_t mu;
    pthread_cond_t cv;
    mc_discovery_node_t q[MC_DISCOVERY_QUEUE];
    size_t head, n;
    char failed[MC_ERR_LEN]; // the client's failure; "" while it works
};

static void s_push(mc_browse_t *b, const mc_discovery_node_t *d) {
    pthread_mutex_lock(&b->mu);
    const bool full = b->n == MC_DISCOVERY_QUEUE;
    if (!full) {
        b->q[(b->head + b->n) % MC_DISCOVERY_QUEUE] = *d;
        b->n++;
        pthread_cond_signal(&b->cv);
    }
    pthread_mutex_unlock(&b->mu);
    if (full) mc_log_status(b->log, "discover", "%s at %s dropped: %d announcements wait already", d->name, d->endpoint,
                            MC_DISCOVERY_QUEUE);
}

static void s_fail_browse(mc_browse_t *b, const char *what) {
    pthread_mutex_lock(&b->mu);
    snprintf(b->failed, sizeof b->failed, "%s", what);
    pthread_cond_broadcast(&b->cv);
    pthread_mutex_unlock(&b->mu);
}

static void s_resolve_cb(AvahiServiceResolver *r, AvahiIfIndex iface, AvahiProtocol proto, AvahiResolverEvent event,
                         const char *name, const char *type, const char *domain, const char *host,
                         const AvahiAddress *addr, uint16_t port, AvahiStringList *txt, AvahiLookupResultFlags flags,
                         void *ud) {
    (void)iface, (void)proto, (void)type, (void)domain, (void)host, (void)flags;
    mc_browse_t *b = ud;
    if (event == AVAHI_RESOLVER_FOUND && addr && addr->proto == AVAHI_PROTO_INET) {
        char at[AVAHI_ADDRESS_STR_MAX] = "";
        avahi_address_snprint(at, sizeof at, addr);
        const uint8_t *recs[MC_DISCOVERY_MAX_TXT + 1];
        size_t lens[MC_DISCOVERY_MAX_TXT + 1], n = 0;
        for (AvahiStringList *l = txt; l && n <= MC_DISCOVERY_MAX_TXT; l = avahi_string_list_get_next(l), n++) {
            recs[n] = avahi_string_list_get_text(l);
            lens[n] = avahi_string_list_get_size(l);
        }
        mc_discovery_node_t d;
        char err[MC_ERR_LEN];
        if (mc_discovery_node_parse(at, port, recs, lens, n, &d, err))
            mc_log_status(b->log, "discover", "ignored the announcement '%.64s' from %s port %u: %s", name ? name : "",
                          at, port, err);
        else s_push(b, &d);
    } else if (event == AVAHI_RESOLVER_FAILURE) {
        mc_log_status(b->log, "discover", "could not resolve '%.64s': %s", name ? name : "",
                      avahi_strerror(avahi_client_errno(avahi_service_resolver_get_client(r))));
    }
    avahi_service_resolver_free(r);
}

static void s_browse_cb(AvahiServiceBrowser *sb, AvahiIfIndex iface, AvahiProtocol proto, AvahiBrowserEvent event,
                        const char *name, const char *type, const char *domain, AvahiLookupResultFlags flags, void *ud) {
    (void)flags;
    mc_browse_t *b = ud;
    AvahiClient *c = avahi_service_browser_get_client(sb);
    if (event == AVAHI_BROWSER_NEW) {
        // IPv4 only: a link-local IPv6 address needs its interface in the
        // endpoint, which ZeroMQ's tcp:// does not take.
        if (!avahi_service_resolver_new(c, iface, proto, name, type, domain, AVAHI_PROTO_INET, 0, s_resolve_cb, b))
            mc_log_status(b->log, "discover", "cannot resolve '%.64s': %s", name, avahi_strerror(avahi_client_errno(c)));
    } else if (event == AVAHI_BROWSER_FAILURE) {
        char what[MC_ERR_LEN];
        snprintf(what, sizeof what, "browsing failed: %s", avahi_strerror(avahi_client_errno(c)));
        s_fail_browse(b, what);
    }
}

static void s_browse_client_cb(AvahiClient *c, AvahiClientState state, void *ud) {
    mc_browse_t *b = ud;
    if (state == AVAHI_CLIENT_S_RUNNING && !b->browser) {
        b->browser = avahi_service_browser_new(c, AVAHI_IF_UNSPEC, AVAHI_PROTO_UNSPEC, MC_DISCOVERY_TYPE, NULL, 0,
                                               s_browse_cb, b);
        if (!b->browser) {
            char what[MC_ERR_LEN];
            snprintf(what, sizeof what, "cannot browse: %s", avahi_strerror(avahi_client_errno(c)));
            s_fail_browse(b, what);
        }
    } else if (state == AVAHI_CLIENT_CONNECTING) {
        b->browser = NULL; // freed with the connection; browsed again once it is back
        mc_log_status(b->log, "discover", "waiting for the Avahi daemon");
    } else if (state == AVAHI_CLIENT_FAILURE) {
        char what[MC_ERR_LEN];
        snprintf(what, sizeof what, "the Avahi daemon: %s", avahi_strerror(avahi_client_errno(c)));
        s_fail_browse(b, what);
    }
}

mc_browse_t *mc_browse_new(FILE *log, bool wait, char *err) {
    mc_browse_t *b = calloc(1, sizeof *b);
    if (!b) {
        mc_err_set(err, MC_ERR_NOMEM, "out of memory");
        return NULL;
    }
    b->log = log;
    pthread_mutex_init(&b->mu, NULL);
    pthread_cond_init(&b->cv, NULL);
    int aerr = 0;
    if (!(b->poll = avahi_threaded_poll_new())) {
        mc_err_set(err, MC_ERR_NOMEM, "out of memory");
        mc_browse_destroy(&b);
        return NULL;
    }
    // Made before the poll thread starts, so its first callbacks (run here)
    // need no lock.
    b->client = avahi_client_new(avahi_threaded_poll_get(b->poll), wait ? AVAHI_CLIENT_NO_FAIL : 0, s_browse_client_cb, b,
                                 &aerr);
    if (!b->client || b->failed[0]) {
        mc_err_set(err, MC_ERR_NET, "cannot reach the Avahi daemon (mDNS) over the D-Bus system bus: %s",
                   b->failed[0] ? b->failed : avahi_strerror(aerr));
        mc_browse_destroy(&b);
        return NULL;
    }
    if (avahi_threaded_poll_start(b->poll) < 0) {
        mc_err_set(err, MC_ERR_NET, "cannot start Avahi's thread");
        mc_browse_destroy(&b);
        return NULL;
    }
    return b;
}

void mc_browse_destroy(mc_browse_t **pb) {
    if (!pb || !*pb) return;
    mc_browse_t *b = *pb;
    if (b->poll) avahi_threaded_poll_stop(b->poll);
    if (b->client) avahi_client_free(b->client); // its browser and resolvers with it
    if (b->poll) avahi_threaded_poll_free(b->poll);
    pthread_mutex_destroy(&b->mu);
    pthread_cond_destroy(&b->cv);
    free(b);
    *pb = NULL;
}

mc_err_t mc_browse_next(mc_browse_t *b, uint32_t timeout_ms, mc_discovery_node_t *out, bool *got, char *err) {
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += timeout_ms / 1000;
    until.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
    if (until.tv_nsec >= 1000000000L) until.tv_sec++, until.tv_nsec -= 1000000000L;
    mc_err_t rc = MC_OK;
    *got = false;
    pthread_mutex_lock(&b->mu);
    while (!b->n && !b->failed[0] && pthread_cond_timedwait(&b->cv, &b->mu, &until) != ETIMEDOUT) {
    }
    if (b->n) {
        *out = b->q[b->head];
        b->head = (b->head + 1) % MC_DISCOVERY_QUEUE;
        b->n--;
        *got = true;
    } else if (b->failed[0]) {
        rc = mc_err_set(err, MC_ERR_NET, "%s", b->failed);
    }
    pthread_mutex_unlock(&b->mu);
    return rc;
}

mc_err_t mc_discovery_list(uint32_t timeout_ms, FILE *out, FILE *log, char *err) {
    enum { S_MAX_LISTED = 256 };
    mc_discovery_node_t *found = malloc(S_MAX_LISTED * sizeof *found);
    if (!found) return mc_err_set(err, MC_ERR_NOMEM, "out of memory");
    mc_browse_t *b = mc_browse_new(log, false, err);
    if (!b) {
        free(found);
        return mc_err_code(err, MC_ERR_NET);
    }
    size_t n = 0;
    struct timespec t0, now;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    mc_err_t rc = MC_OK;
    for (;;) {
        clock_gettime(CLOCK_MONOTONIC, &now);
        const int64_t spent = (int64_t)(now.tv_sec - t0.tv_sec) * 1000 + (now.tv_nsec - t0.tv_nsec) / 1000000;
        if (spent >= timeout_ms) break;
        mc_discovery_node_t d;
        bool got;
        if ((rc = mc_browse_next(b, timeout_ms - (uint32_t)spent, &d, &got, err))) break;
        if (!got) break;
        bool dup = false;
        for (size_t i = 0; i < n && !dup; i++)
            dup = !strcmp(found[i].name, d.name) && !strcmp(found[i].endpoint, d.endpoint);
        if (!dup && n < S_MAX_LISTED) found[n++] = d;
    }
    mc_browse_destroy(&b);
    if (rc) {
        free(found);
        return rc;
    }
    fprintf(out, "%-24s %-28s %-40s %s\n", "NAME", "ENDPOINT", "PUBLIC KEY", "MODEL");
    for (size_t i = 0; i < n; i++)
        fprintf(out, "%-24s %-28s %-40s %s\n", found[i].name, found[i].endpoint,
                found[i].public_key[0] ? found[i].public_key : "-", found[i].cache ? "fetched" : "file");
    fprintf(out, "%zu node%s announced %s\n", n, n == 1 ? "" : "s", MC_DISCOVERY_TYPE);
    free(found);
    if (fflush(out) || ferror(out)) return mc_err_set(err, MC_ERR_IO, "cannot write the table");
    return MC_OK;
}
