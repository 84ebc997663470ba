/*
 * file: reading a whole file, bounded (see file.h).
 */
#include "file.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

mc_err_t mc_file_read(const char *path, size_t max_bytes, char **buf, size_t *len, char *err) {
    if (!path || !buf || !len || max_bytes >= SIZE_MAX - 1) return mc_err_set(err, MC_ERR_ARG, "mc_file_read: bad arguments");
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return mc_err_set(err, MC_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    mc_err_t rc = MC_OK;
    if (fstat(fd, &st) != 0) rc = mc_err_set(err, MC_ERR_IO, "%s: cannot stat: %s", path, strerror(errno));
    else if (S_ISDIR(st.st_mode)) rc = mc_err_set(err, MC_ERR_IO, "%s: not a readable regular file (a directory)", path);
    // A regular file's size says early what reading would find late; others
    // (pipes, /proc) report 0 and are measured as they are read.
    else if (S_ISREG(st.st_mode) && (uint64_t)st.st_size > max_bytes)
        rc = mc_err_set(err, MC_ERR_FORMAT, "%s: the file is larger than %zu bytes", path, max_bytes);
    if (rc) {
        close(fd);
        return rc;
    }
    // Room for the size seen plus one byte, so that a file which grew meanwhile
    // is noticed; at most max_bytes + 1, the first byte too many.
    size_t cap = S_ISREG(st.st_mode) && st.st_size > 0 ? (size_t)st.st_size + 1 : 1 << 16;
    if (cap > max_bytes + 1) cap = max_bytes + 1;
    size_t n = 0;
    char *b = malloc(cap + 1);
    while (b) {
        if (n == cap) {
            if (cap == max_bytes + 1) break;
            size_t nc = cap > (max_bytes + 1) / 2 ? max_bytes + 1 : 2 * cap;
            char *nb = realloc(b, nc + 1);
            if (!nb) {
                free(b);
                b = NULL;
                break;
            }
            b = nb;
            cap = nc;
        }
        ssize_t r = read(fd, b + n, cap - n);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) rc = mc_err_set(err, MC_ERR_IO, "%s: read failed: %s", path, strerror(errno));
        if (r <= 0) break;
        n += (size_t)r;
    }
    close(fd);
    if (!b) return mc_err_set(err, MC_ERR_NOMEM, "%s: out of memory", path);
    if (!rc && n > max_bytes) rc = mc_err_set(err, MC_ERR_FORMAT, "%s: the file is larger than %zu bytes", path, max_bytes);
    if (rc) {
        free(b);
        return rc;
    }
    b[n] = 0;
    *buf = b;
    *len = n;
    return MC_OK;
}
