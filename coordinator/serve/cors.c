/*
 * cors: the allowed origins and the preflight's header list.
 */
#include "cors.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define S_MAX_ORIGINS 64
#define S_ORIGIN_LEN 256

struct mc_cors {
    bool any;
    size_t n;
    char origins[S_MAX_ORIGINS][S_ORIGIN_LEN];
};

// scheme://host[:port] as a browser writes an Origin: a letter-led scheme,
// a host of letters, digits, '.', '-' (or a bracketed IPv6 address), an
// optional port of digits.
static bool s_origin_ok(const char *o) {
    const char *p = strstr(o, "://");
    if (!p || p == o) return false;
    for (const char *q = o; q < p; q++)
        if (!((*q >= 'a' && *q <= 'z') || (*q >= 'A' && *q <= 'Z') || (q > o && ((*q >= '0' && *q <= '9') || *q == '+' || *q == '-' || *q == '.'))))
            return false;
    p += 3;
    if (*p == '[') {
        const char *close = strchr(p, ']');
        if (!close || close == p + 1) return false;
        for (const char *q = p + 1; q < close; q++)
            if (!((*q >= '0' && *q <= '9') || (*q >= 'a' && *q <= 'f') || (*q >= 'A' && *q <= 'F') || *q == ':' || *q == '.'))
                return false;
        p = close + 1;
    } else {
        const char *h = p;
        while ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') || *p == '.' || *p == '-') p++;
        if (p == h) return false;
    }
    if (*p == ':') {
        const char *d = ++p;
        while (*p >= '0' && *p <= '9') p++;
        if (p == d || p - d > 5) return false;
    }
    return *p == 0;
}

mc_cors_t *mc_cors_new(const char *spec, char *err) {
    mc_cors_t *c = calloc(1, sizeof *c);
    if (!c) {
        mc_err_set(err, MC_ERR_NOMEM, "out of memory");
        return NULL;
    }
    for (const char *p = spec;;) {
        const char *end = strchr(p, ',');
        size_t n = end ? (size_t)(end - p) : strlen(p);
        while (n && (*p == ' ' || *p == '\t')) p++, n--;
        while (n && (p[n - 1] == ' ' || p[n - 1] == '\t')) n--;
        if (n && p[n - 1] == '/') n--; // "http://host/" is how people copy it from the address bar
        if (n == 1 && *p == '*') {
            c->any = true;
        } else if (n) {
            if (n >= S_ORIGIN_LEN || c->n == S_MAX_ORIGINS) {
                mc_err_set(err, MC_ERR_ARG, "--cors-origin: at most %d origins of fewer than %d characters", S_MAX_ORIGINS,
                           S_ORIGIN_LEN);
                mc_cors_destroy(&c);
                return NULL;
            }
            memcpy(c->origins[c->n], p, n);
            c->origins[c->n][n] = 0;
            if (!s_origin_ok(c->origins[c->n])) {
                mc_err_set(err, MC_ERR_ARG, "--cors-origin: '%s' is not an origin (scheme://host[:port], or *)",
                           c->origins[c->n]);
                mc_cors_destroy(&c);
                return NULL;
            }
            c->n++;
        }
        if (!end) break;
        p = end + 1;
    }
    if (!c->any && !c->n) {
        mc_err_set(err, MC_ERR_ARG, "--cors-origin: no origin given (a comma-separated list, or *)");
        mc_cors_destroy(&c);
    }
    return c;
}

void mc_cors_destroy(mc_cors_t **c) {
    if (!c || !*c) return;
    free(*c);
    *c = NULL;
}

const char *mc_cors_allow(const mc_cors_t *c, const char *origin) {
    if (!c || !origin || !origin[0]) return NULL;
    if (c->any) return "*";
    for (size_t i = 0; i < c->n; i++)
        if (!strcasecmp(c->origins[i], origin)) return origin;
    return NULL;
}

// A header name: RFC 9110's token characters.
static bool s_token_char(char ch) {
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || strchr("!#$%&'*+-.^_`|~", ch);
}

void mc_cors_allow_headers(const char *requested, char *out, size_t cap) {
    size_t at = (size_t)snprintf(out, cap, "Authorization, Content-Type");
    if (at >= cap) return;
    for (const char *p = requested; p && *p;) {
        while (*p == ' ' || *p == '\t' || *p == ',') p++;
        const char *h = p;
        while (*p && s_token_char(*p)) p++;
        const size_t n = (size_t)(p - h);
        if (*p && *p != ',' && *p != ' ' && *p != '\t') return; // not a list of names: keep the two
        if (!n || (n == 13 && !strncasecmp(h, "authorization", 13)) || (n == 12 && !strncasecmp(h, "content-type", 12)))
            continue;
        if (at + 2 + n + 1 > cap) return;
        at += (size_t)snprintf(out + at, cap - at, ", %.*s", (int)n, h);
    }
}
