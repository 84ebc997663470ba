/*
 * linkemu: an Ethernet link with delay, jitter and loss, emulated in user
 * space between two TAP devices, for the multi-host tests (multihost.sh).
 *
 * The kernels these tests run on may lack sch_netem (tc's netem qdisc), so
 * this does what netem would on each side of a link: every frame read from
 * one TAP is dropped with probability `loss`, else written to the other TAP
 * after `delay` +- `jitter` milliseconds (uniform; frames may overtake each
 * other, as with netem's jitter). TCP above sees real loss, delay and
 * reordering and recovers as it would on a bad network.
 *
 *   linkemu TAP_A TAP_B CLEAN IMPAIRED
 *
 * creates both TAP devices in the current network namespace (the script
 * then moves them where they belong: the file descriptors stay valid),
 * prints "ready", and forwards until SIGTERM. CLEAN and IMPAIRED are
 * "delay_ms,jitter_ms,loss" (e.g. "0,0,0" and "1,0.5,0.01"); SIGUSR1 switches
 * to IMPAIRED, SIGUSR2 back to CLEAN. A frame written to a TAP that is down
 * is lost, like a frame on a cut cable.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#define MAX_FRAME 65536
#define MAX_QUEUE 4096 // frames in flight per direction; more are dropped (a full link)

typedef struct {
    double delay_ms, jitter_ms, loss;
} params_t;

typedef struct {
    double due;   // ms, monotonic
    size_t len;
    uint8_t *data;
} frame_t;

typedef struct {
    int from, to;
    frame_t q[MAX_QUEUE]; // unordered; the earliest due is searched (queues are short)
    size_t n;
    uint64_t rng;
} dir_t;

// What the signal handlers set: the process's only mutable state outside main.
static volatile sig_atomic_t s_mode, s_stop; // s_mode 1: impaired

static void on_signal(int sig) {
    if (sig == SIGUSR1) s_mode = 1;
    else if (sig == SIGUSR2) s_mode = 0;
    else s_stop = 1;
}

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec * 1e-6;
}

static double uniform(uint64_t *s) { // xorshift64*, [0, 1)
    *s ^= *s >> 12, *s ^= *s << 25, *s ^= *s >> 27;
    return (double)((*s * 2685821657736338717ull) >> 11) / 9007199254740992.0;
}

static int tap_open(const char *name) {
    int fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) return -1;
    struct ifreq ifr = {0};
    ifr.ifr_flags = IFF_TAP | IFF_NO_PI;
    snprintf(ifr.ifr_name, IFNAMSIZ, "%s", name);
    if (ioctl(fd, TUNSETIFF, &ifr) < 0) {
        close(fd);
        return -1;
    }
    return fd;
}

static int parse(const char *s, params_t *p) {
    return sscanf(s, "%lf,%lf,%lf", &p->delay_ms, &p->jitter_ms, &p->loss) == 3 && p->delay_ms >= 0 &&
                   p->jitter_ms >= 0 && p->jitter_ms <= p->delay_ms && p->loss >= 0 && p->loss <= 1
               ? 0
               : -1;
}

// Read what d->from has, and queue or drop it.
static void take(dir_t *d, const params_t *p) {
    uint8_t buf[MAX_FRAME];
    for (;;) {
        ssize_t n = read(d->from, buf, sizeof buf);
        if (n <= 0) return;
        if (uniform(&d->rng) < p->loss || d->n == MAX_QUEUE) continue;
        frame_t *f = &d->q[d->n];
        f->data = malloc((size_t)n);
        if (!f->data) continue;
        memcpy(f->data, buf, (size_t)n);
        f->len = (size_t)n;
        f->due = now_ms() + p->delay_ms + (2 * uniform(&d->rng) - 1) * p->jitter_ms;
        d->n++;
    }
}

// Deliver what is due; returns ms until the next frame is (or -1).
static int give(dir_t *d) {
    const double now = now_ms();
    double next = -1;
    for (size_t i = 0; i < d->n;) {
        frame_t *f = &d->q[i];
        if (f->due <= now) {
            if (write(d->to, f->data, f->len) < 0 && errno != EAGAIN && errno != EIO) perror("linkemu: write");
            free(f->data);
            *f = d->q[--d->n];
            continue;
        }
        if (next < 0 || f->due < next) next = f->due;
        i++;
    }
    return next < 0 ? -1 : (int)(next - now) + 1;
}

int main(int argc, char **argv) {
    params_t modes[2];
    if (argc != 5 || parse(argv[3], &modes[0]) || parse(argv[4], &modes[1])) {
        fprintf(stderr, "usage: linkemu TAP_A TAP_B CLEAN IMPAIRED   (each delay_ms,jitter_ms,loss)\n");
        return 2;
    }
    int a = tap_open(argv[1]), b = tap_open(argv[2]);
    if (a < 0 || b < 0) {
        fprintf(stderr, "linkemu: cannot create %s / %s: %s\n", argv[1], argv[2], strerror(errno));
        return 1;
    }
    struct sigaction sa = {.sa_handler = on_signal};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGUSR1, &sa, NULL), sigaction(SIGUSR2, &sa, NULL), sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    static dir_t ab, ba;
    ab.from = a, ab.to = b, ba.from = b, ba.to = a;
    ab.rng = 0x9E3779B97F4A7C15ull ^ ((uint64_t)getpid() << 17), ba.rng = ab.rng * 31 + 7;
    printf("ready\n");
    fflush(stdout);
    while (!s_stop) {
        int t1 = give(&ab), t2 = give(&ba);
        int timeout = t1 < 0 ? t2 : t2 < 0 ? t1 : t1 < t2 ? t1 : t2;
        if (timeout < 0 || timeout > 100) timeout = 100;
        struct pollfd pf[2] = {{a, POLLIN, 0}, {b, POLLIN, 0}};
        if (poll(pf, 2, timeout) < 0 && errno != EINTR) break;
        const params_t *p = &modes[s_mode ? 1 : 0];
        if (pf[0].revents & POLLIN) take(&ab, p);
        if (pf[1].revents & POLLIN) take(&ba, p);
    }
    close(a), close(b);
    return 0;
}
