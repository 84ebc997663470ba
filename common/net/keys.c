/*
 * keys: key generation, key files and authorized-key lists.
 */
#include "keys.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zmq.h>

#include "file.h"

#define S_MAX_FILE (1u << 20)
#define S_MAX_KEYS 4096
// The first line moe-keygen writes into a secret key file. Any 32 bytes are
// a Curve25519 secret key, so the text alone cannot tell a public key given
// by mistake (NAME.pub as --secret-key) from a secret one: this line does.
#define S_SECRET_MARK "# moe-cluster CURVE secret key"

bool mc_keys_available(void) { return zmq_has("curve") != 0; }

mc_err_t mc_keys_generate(mc_keypair_t *kp, char *err) {
    if (!mc_keys_available()) return mc_err_set(err, MC_ERR_UNSUPPORTED, "this libzmq has no CURVE support");
    if (zmq_curve_keypair(kp->pub, kp->sec) != 0)
        return mc_err_set(err, MC_ERR_IO, "cannot make a key pair: %s", zmq_strerror(zmq_errno()));
    return MC_OK;
}

static mc_err_t s_write(const char *path, mode_t mode, const char *line, char *err) {
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
    if (fd < 0) return mc_err_set(err, MC_ERR_IO, "%s: %s", path, strerror(errno));
    size_t n = strlen(line);
    bool ok = write(fd, line, n) == (ssize_t)n;
    if (close(fd) != 0) ok = false;
    return ok ? MC_OK : mc_err_set(err, MC_ERR_IO, "%s: write failed", path);
}

mc_err_t mc_keys_write(const char *dir, const char *name, const mc_keypair_t *kp, char *err) {
    char path[4096], line[256];
    snprintf(path, sizeof path, "%s/%s.key", dir, name);
    snprintf(line, sizeof line, "%s of %s: keep it here, give nobody this file\n%s\n", S_SECRET_MARK, name, kp->sec);
    mc_err_t rc = s_write(path, 0600, line, err);
    if (rc) return rc;
    snprintf(path, sizeof path, "%s/%s.pub", dir, name);
    snprintf(line, sizeof line, "%s\n", kp->pub);
    return s_write(path, 0644, line, err);
}

mc_err_t mc_keys_parse(const char *text, size_t len, char out[MC_KEY_TEXT + 1], char *err) {
    while (len && (*text == ' ' || *text == '\t')) text++, len--;
    while (len && (text[len - 1] == ' ' || text[len - 1] == '\t' || text[len - 1] == '\r')) len--;
    if (len != MC_KEY_TEXT) return mc_err_set(err, MC_ERR_FORMAT, "a key is %d characters of Z85 text, not %zu", MC_KEY_TEXT, len);
    char z[MC_KEY_TEXT + 1];
    uint8_t bin[MC_KEY_BYTES];
    memcpy(z, text, MC_KEY_TEXT);
    z[MC_KEY_TEXT] = 0;
    if (!zmq_z85_decode(bin, z)) return mc_err_set(err, MC_ERR_FORMAT, "'%s' is not Z85 text", z);
    memcpy(out, z, MC_KEY_TEXT + 1);
    return MC_OK;
}

// Calls fn for every line that is not blank or a comment, with its number.
typedef mc_err_t (*s_line_fn)(void *ctx, const char *line, size_t len, size_t no, char *err);

static mc_err_t s_lines(const char *buf, size_t len, void *ctx, s_line_fn fn, char *err) {
    size_t no = 0;
    for (size_t at = 0; at < len;) {
        size_t end = at;
        while (end < len && buf[end] != '\n') end++;
        no++;
        const char *l = buf + at;
        size_t n = end - at, skip = 0;
        while (skip < n && (l[skip] == ' ' || l[skip] == '\t' || l[skip] == '\r')) skip++;
        if (skip < n && l[skip] != '#') {
            mc_err_t rc = fn(ctx, l, n, no, err);
            if (rc) return rc;
        }
        at = end + 1;
    }
    return MC_OK;
}

typedef struct {
    const char *what;
    mc_keypair_t *kp;
    bool found;
} s_secret_t;

static mc_err_t s_secret_line(void *ctx, const char *line, size_t len, size_t no, char *err) {
    s_secret_t *s = ctx;
    if (s->found) return MC_OK;
    char sub[MC_ERR_LEN];
    if (mc_keys_parse(line, len, s->kp->sec, sub)) return mc_err_set(err, MC_ERR_FORMAT, "%s:%zu: %s", s->what, no, sub);
    s->found = true;
    return MC_OK;
}

mc_err_t mc_keys_parse_secret(const char *buf, size_t len, const char *what, mc_keypair_t *kp, char *err) {
    if (!mc_keys_available()) return mc_err_set(err, MC_ERR_UNSUPPORTED, "this libzmq has no CURVE support");
    mc_keypair_t k;
    s_secret_t s = {what, &k, false};
    mc_err_t rc = s_lines(buf, len, &s, s_secret_line, err);
    if (rc) return rc;
    if (!s.found) return mc_err_set(err, MC_ERR_FORMAT, "%s: no key in it", what);
    const size_t mark = strlen(S_SECRET_MARK);
    bool marked = len >= mark && !memcmp(buf, S_SECRET_MARK, mark);
    for (size_t i = 0; !marked && i + 1 + mark <= len; i++)
        marked = buf[i] == '\n' && !memcmp(buf + i + 1, S_SECRET_MARK, mark);
    if (!marked)
        return mc_err_set(err, MC_ERR_FORMAT,
                          "%s: not a secret key file (moe-keygen writes NAME.key with a '" S_SECRET_MARK
                          "' line, and NAME.pub with the public key): is this a .pub file?",
                          what);
    if (zmq_curve_public(k.pub, k.sec) != 0) return mc_err_set(err, MC_ERR_FORMAT, "%s: not a secret key", what);
    *kp = k;
    return MC_OK;
}

mc_err_t mc_keys_load_secret(const char *path, mc_keypair_t *kp, char *err) {
    char *buf;
    size_t len;
    mc_err_t rc = mc_file_read(path, S_MAX_FILE, &buf, &len, err);
    if (rc) return rc;
    rc = mc_keys_parse_secret(buf, len, path, kp, err);
    free(buf);
    return rc;
}

typedef struct {
    const char *what;
    mc_keyring_t *r;
    size_t cap;
} s_ring_t;

static mc_err_t s_ring_line(void *ctx, const char *line, size_t len, size_t no, char *err) {
    s_ring_t *s = ctx;
    char z[MC_KEY_TEXT + 1], sub[MC_ERR_LEN];
    if (mc_keys_parse(line, len, z, sub)) return mc_err_set(err, MC_ERR_FORMAT, "%s:%zu: %s", s->what, no, sub);
    if (s->r->n == S_MAX_KEYS) return mc_err_set(err, MC_ERR_RANGE, "%s: more than %d keys", s->what, S_MAX_KEYS);
    if (s->r->n == s->cap) {
        size_t cap = s->cap ? 2 * s->cap : 8;
        void *k = realloc(s->r->keys, cap * MC_KEY_BYTES);
        if (!k) return mc_err_set(err, MC_ERR_NOMEM, "out of memory");
        s->r->keys = k, s->cap = cap;
    }
    zmq_z85_decode(s->r->keys[s->r->n++], z);
    return MC_OK;
}

mc_err_t mc_keyring_parse(const char *buf, size_t len, const char *what, mc_keyring_t *out, char *err) {
    mc_keyring_t r = {0};
    s_ring_t s = {what, &r, 0};
    mc_err_t rc = s_lines(buf, len, &s, s_ring_line, err);
    if (!rc && !r.n) rc = mc_err_set(err, MC_ERR_FORMAT, "%s: no keys in it", what);
    if (rc) {
        mc_keyring_free(&r);
        return rc;
    }
    *out = r;
    return MC_OK;
}

mc_err_t mc_keyring_load(const char *path, mc_keyring_t *out, char *err) {
    char *buf;
    size_t len;
    mc_err_t rc = mc_file_read(path, S_MAX_FILE, &buf, &len, err);
    if (rc) return rc;
    rc = mc_keyring_parse(buf, len, path, out, err);
    free(buf);
    return rc;
}

bool mc_keyring_has(const mc_keyring_t *r, const uint8_t key[MC_KEY_BYTES]) {
    for (size_t i = 0; i < r->n; i++)
        if (!memcmp(r->keys[i], key, MC_KEY_BYTES)) return true;
    return false;
}

void mc_keyring_free(mc_keyring_t *r) {
    free(r->keys);
    r->keys = NULL;
    r->n = 0;
}
