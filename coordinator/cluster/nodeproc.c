/*
 * nodeproc: fork/exec of moe-expert with its stdout on a pipe, endpoint
 * discovery from the "listening on" line, and bounded shutdown.
 */
#include "nodeproc.h"

#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
void mc_nodeproc_sibling(const char *name, char *buf, size_t cap) {
    char self[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    char *slash = n > 0 ? (self[n] = 0, strrchr(self, '/')) : NULL;
    if (!slash) {
        snprintf(buf, cap, "%s", name); // let $PATH find it
        return;
    }
    *slash = 0;
    if ((size_t)snprintf(buf, cap, "%s/%s", self, name) >= cap) snprintf(buf, cap, "%s", name);
}

// Read the first stdout line and take the word after "listening on ".
static mc_err_t s_read_endpoint(mc_nodeproc_t *p, int timeout_ms, char *err) {
    char line[1024];
    size_t len = 0;
    double deadline = mc_clock_ms() + timeout_ms;
    for (;;) {
        struct pollfd pf = {p->out, POLLIN, 0};
        int left = (int)(deadline - mc_clock_ms());
        if (left <= 0 || poll(&pf, 1, left) <= 0)
            return mc_err_set(err, MC_ERR_TIMEOUT, "the node did not start listening within %d ms", timeout_ms);
        ssize_t r = read(p->out, line + len, 1);
        if (r <= 0) return mc_err_set(err, MC_ERR_IO, "the node exited before listening (see its messages above)");
        if (line[len] == '\n' || len + 2 >= sizeof line) break;
        len++;
    }
    line[len] = 0;
    const char *at = strstr(line, "listening on ");
    size_t n = at ? strcspn(at + 13, " ") : 0;
    if (!n || n >= sizeof p->endpoint) return mc_err_set(err, MC_ERR_FORMAT, "unexpected first line from the node: %s", line);
    memcpy(p->endpoint, at + 13, n);
    p->endpoint[n] = 0;
    return MC_OK;
}

mc_nodeproc_params_t mc_nodeproc_params_default(void) {
    return (mc_nodeproc_params_t){.listen = "tcp://127.0.0.1:*", .threads = 1, .timeout_ms = 20000};
}

mc_err_t mc_nodeproc_start(const mc_nodeproc_params_t *params, mc_nodeproc_t *p, char *err) {
    const char *exe = params->exe, *name = params->name ? params->name : "node";
    // A NULL here would end argv early and start the node with the wrong flags.
    const char *listen = params->listen ? params->listen : "tcp://127.0.0.1:*";
    int fds[2];
    *p = (mc_nodeproc_t){0};
    p->out = -1;
    if (pipe(fds) != 0) return mc_err_set(err, MC_ERR_IO, "pipe: %s", strerror(errno));
    char th[16], lease[16], chunk[16], cap[16], mem[16];
    snprintf(cap, sizeof cap, "%u", params->cache_mb);
    snprintf(th, sizeof th, "%d", params->threads);
    snprintf(mem, sizeof mem, "%u", params->mem_limit_mb);
    snprintf(lease, sizeof lease, "%u", params->lease_ms);
    snprintf(chunk, sizeof chunk, "%u", params->fetch_chunk_kib);
    char *argv[22] = {(char *)exe,
                      params->cache_dir ? "--cache-dir" : "--model",
                      (char *)(params->cache_dir ? params->cache_dir : params->model),
                      "--listen",
                      (char *)listen,
                      "--name",
                      (char *)name,
                      "--threads",
                      th};
    int argc = 9;
    if (params->cache_dir && params->fetch_chunk_kib) argv[argc++] = "--fetch-chunk-kib", argv[argc++] = chunk;
    if (params->cache_dir && params->cache_mb) argv[argc++] = "--cache-mb", argv[argc++] = cap;
    if (params->lease_ms) argv[argc++] = "--lease-ms", argv[argc++] = lease;
    if (params->mem_limit_mb) argv[argc++] = "--mem-limit", argv[argc++] = mem;
    if (params->secret_key) {
        argv[argc++] = "--secret-key", argv[argc++] = (char *)params->secret_key;
        argv[argc++] = "--authorized-keys", argv[argc++] = (char *)params->authorized_keys;
    }
    argv[argc] = NULL;
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid == 0) {
        // Only async-signal-safe calls here (the parent may have threads).
        // The node gets SIGTERM when its parent dies, however it dies, so an
        // interrupted demo or test never leaves nodes behind.
        if (prctl(PR_SET_PDEATHSIG, SIGTERM) != 0 || getppid() != parent) _exit(127);
        // Its own process group: Ctrl-C at the terminal (SIGINT to the
        // foreground group) stops the coordinator's answer, not its nodes.
        if (setpgid(0, 0) != 0) _exit(127);
        if (dup2(fds[1], STDOUT_FILENO) < 0) _exit(127);
        close(fds[0]);
        close(fds[1]);
        execv(exe, argv);
        _exit(127);
    }
    close(fds[1]);
    if (pid < 0) {
        close(fds[0]);
        return mc_err_set(err, MC_ERR_IO, "cannot start %s: %s", exe, strerror(errno));
    }
    p->pid = pid;
    p->out = fds[0];
    char sub[MC_ERR_LEN];
    if (s_read_endpoint(p, params->timeout_ms, sub) != MC_OK) {
        mc_nodeproc_stop(p, 1);
        return mc_err_set(err, MC_ERR_IO, "node %s (%s): %s", name, exe, sub);
    }
    return MC_OK;
}

void mc_nodeproc_stop(mc_nodeproc_t *procs, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (procs[i].pid > 0) kill(procs[i].pid, SIGTERM);
    double deadline = mc_clock_ms() + 2000;
    for (size_t i = 0; i < n; i++) {
        if (procs[i].pid > 0) {
            while (waitpid(procs[i].pid, NULL, WNOHANG) == 0) {
                if (mc_clock_ms() > deadline) {
                    kill(procs[i].pid, SIGKILL);
                    waitpid(procs[i].pid, NULL, 0);
                    break;
                }
                struct timespec ts = {0, 5 * 1000 * 1000};
                nanosleep(&ts, NULL);
            }
            procs[i].pid = 0;
        }
        if (procs[i].out >= 0) close(procs[i].out);
        procs[i].out = -1;
    }
}
