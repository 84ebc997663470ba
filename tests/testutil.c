/*
 * testutil: fixture discovery and small file helpers for tests.
 */
#include "testutil.h"

#include <stdarg.h>
#include <setjmp.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <ftw.h>
#include <unistd.h>

#include <cmocka.h>

#include "file.h"
#include "model.h"
#include "quant.h"

#ifndef MC_DEFAULT_FIXTURES
#define MC_DEFAULT_FIXTURES "../shared/fixtures"
#endif

const char *mc_test_fixture(const char *name, char *buf, size_t cap) {
    const char *dir = getenv("MC_FIXTURES");
    if (!dir || !*dir) dir = MC_DEFAULT_FIXTURES;
    struct stat st;
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
        const char *req = getenv("MC_REQUIRE_FIXTURES");
        if (req && !strcmp(req, "1")) fail_msg("fixtures folder '%s' is missing (MC_REQUIRE_FIXTURES=1)", dir);
        return NULL;
    }
    snprintf(buf, cap, "%s/%s", dir, name);
    return buf;
}

uint8_t *mc_test_read_file(const char *path, size_t *len) {
    char *buf;
    size_t n;
    if (mc_file_read(path, (size_t)1 << 30, &buf, &n, NULL)) return NULL;
    if (len) *len = n;
    return (uint8_t *)buf;
}

const char *mc_test_tmpdir(char *buf, size_t cap) {
    const char *base = getenv("TMPDIR");
    if (!base || !*base) base = "/tmp";
    snprintf(buf, cap, "%s/mc-test-XXXXXX", base);
    return mkdtemp(buf);
}

static int s_rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
    (void)st, (void)flag, (void)ftw;
    return remove(path);
}

void mc_test_rmtree(const char *path) {
    if (path && *path) nftw(path, s_rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

const char *mc_test_bin(const char *name, char *buf, size_t cap) {
    const char *bin = getenv("MC_BIN_DIR");
    snprintf(buf, cap, "%s/%s", bin && *bin ? bin : ".", name);
    return buf;
}

// --- a minimal HTTP/1.1 client (one request per connection) ---------------------

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>

int mc_test_http_connect(uint16_t port) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) return -1;
    struct timeval tv = {60, 0}; // a stuck server fails the test instead of hanging it
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

int mc_test_http_send(int fd, const char *method, const char *path, const char *headers, const char *body,
                      size_t body_len) {
    char head[2048];
    int n = snprintf(head, sizeof head, "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n%s", method, path,
                     headers ? headers : "");
    if (body) n += snprintf(head + n, sizeof head - (size_t)n, "Content-Type: application/json\r\nContent-Length: %zu\r\n",
                            body_len);
    n += snprintf(head + n, sizeof head - (size_t)n, "\r\n");
    if (send(fd, head, (size_t)n, MSG_NOSIGNAL) != n) return -1;
    for (size_t at = 0; body && at < body_len;) {
        ssize_t w = send(fd, body + at, body_len - at, MSG_NOSIGNAL);
        if (w <= 0) return -1;
        at += (size_t)w;
    }
    return 0;
}

// Undo chunked transfer coding in place; returns the decoded length.
static size_t s_unchunk(char *b, size_t len) {
    size_t in = 0, out = 0;
    while (in < len) {
        char *end;
        unsigned long n = strtoul(b + in, &end, 16);
        char *crlf = strstr(end, "\r\n");
        if (!crlf) break;
        in = (size_t)(crlf - b) + 2;
        if (n == 0 || in + n > len) break;
        memmove(b + out, b + in, n);
        out += n, in += n + 2;
    }
    b[out] = 0;
    return out;
}

int mc_test_http_read(int fd, mc_test_http_t *r) {
    size_t cap = 1 << 16, len = 0;
    char *buf = malloc(cap + 1);
    if (!buf) return -1;
    for (;;) {
        if (len == cap) {
            char *nb = realloc(buf, 2 * cap + 1);
            if (!nb) break;
            buf = nb, cap *= 2;
        }
        ssize_t n = recv(fd, buf + len, cap - len, 0);
        if (n <= 0) break;
        len += (size_t)n;
    }
    buf[len] = 0;
    memset(r, 0, sizeof *r);
    char *sep = strstr(buf, "\r\n\r\n");
    if (!sep || sscanf(buf, "HTTP/1.%*d %d", &r->status) != 1) {
        free(buf);
        return -1;
    }
    *sep = 0;
    r->headers = buf;
    r->body = sep + 4;
    r->body_len = len - (size_t)(r->body - buf);
    for (char *p = buf; *p; p++) *p = (char)(*p >= 'A' && *p <= 'Z' ? *p + 32 : *p); // header names: any case
    if (strstr(buf, "transfer-encoding: chunked")) r->body_len = s_unchunk(r->body, r->body_len);
    return 0;
}

int mc_test_http(uint16_t port, const char *method, const char *path, const char *headers, const char *body,
                 mc_test_http_t *r) {
    int fd = mc_test_http_connect(port);
    if (fd < 0) return -1;
    int rc = mc_test_http_send(fd, method, path, headers, body, body ? strlen(body) : 0);
    if (!rc) rc = mc_test_http_read(fd, r);
    close(fd);
    return rc;
}

void mc_test_http_free(mc_test_http_t *r) {
    free(r->headers);
    memset(r, 0, sizeof *r);
}

void mc_test_poison_mxfp4(const char *src, const char *dst) {
    char err[MC_ERR_LEN];
    mc_model_t *m = mc_model_open(src, err);
    if (!m) fail_msg("%s", err);
    size_t len = 0;
    uint8_t *buf = mc_test_read_file(src, &len);
    assert_non_null(buf);
    for (uint32_t e = 0; e < m->hp.n_expert; e++) {
        const mc_matrix_t *w = &m->layers[1].experts[e].up;
        assert_int_equal(w->type, MC_DTYPE_MXFP4);
        buf[(size_t)(w->data - mc_gguf_base(m->gguf)) + offsetof(mc_block_mxfp4_t, e)] = 0xFF;
    }
    mc_model_destroy(&m);
    FILE *f = fopen(dst, "wb");
    assert_true(f && fwrite(buf, 1, len, f) == len && fclose(f) == 0);
    free(buf);
}
