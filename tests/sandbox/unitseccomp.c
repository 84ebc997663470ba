/*
 * unitseccomp: runs a program under the system-call filters a systemd unit
 * file asks for, installed the way systemd installs them, for the test of
 * deploy/systemd (units.sh) on machines where systemd is not PID 1 (CI
 * containers, this VM) and cannot start the units itself.
 *
 *   unitseccomp UNIT SETS -- PROGRAM [ARGS...]
 *
 * UNIT is read for the [Service] settings that become seccomp filters:
 *
 *   SystemCallFilter=         allow-list, or "~" deny-list; the lines merge as
 *                             systemd.exec(5) says: the first one decides the
 *                             default, later ones add to or take from its set
 *                             ("name:ERRNO" entries return that error); an
 *                             allow-list always takes the @default set too
 *   SystemCallErrorNumber=    what a filtered call gets (default: the process
 *                             is killed with SIGSYS, exit status 159)
 *   SystemCallArchitectures=  native (the only value emulated)
 *   RestrictAddressFamilies=  socket() of other families: EAFNOSUPPORT
 *   RestrictRealtime=         sched_setscheduler() to a realtime policy: EPERM
 *   RestrictNamespaces=       yes: unshare/clone with namespace flags and
 *                             setns EPERM, clone3 ENOSYS (glibc falls back)
 *   MemoryDenyWriteExecute=   writable+executable mmap, mprotect/pkey_mprotect
 *                             to executable, shmat(SHM_EXEC): EPERM
 *   LockPersonality=          personality() other than the current one: EPERM
 *
 * SETS is the output of `systemd-analyze syscall-filter`: systemd's own table
 * of the @groups (nested groups are expanded here), so the units are checked
 * against the system-call groups of the systemd that is installed rather than
 * a copy of them that would age. Names libseccomp does not know are skipped,
 * as systemd skips them. Each setting is its own filter, as systemd loads
 * them, and the kernel takes the strictest answer of all; SystemCallFilter=
 * goes last since it may forbid seccomp() itself.
 *
 * Not emulated: everything that is not a system-call filter (User=, the
 * file-system namespaces, capabilities), and RestrictSUIDSGID= (the binaries
 * never create setuid files). The filters stay on across execve, so PROGRAM
 * and everything it starts run under them. Exit status 2 on a unit this does
 * not understand, so a test cannot pass by ignoring a line.
 */
#include <errno.h>
#include <sched.h>
#include <seccomp.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/personality.h>
#include <sys/shm.h>
#include <sys/socket.h>
#include <unistd.h>

#define KILL_ERRNO (-2) // an entry's "error" meaning: kill the process (":kill", or the default)
#define NO_ERRNO (-1)   // an entry without its own error: the list's action applies

// --- what systemd knows by name --------------------------------------------------

typedef struct {
    const char *name;
    int value;
} named_t;

#define N(x) {#x, x}
static const named_t s_errnos[] = {
    N(EPERM),  N(ENOENT), N(ESRCH),  N(EINTR),     N(EIO),          N(ENXIO),   N(E2BIG),   N(ENOEXEC),
    N(EBADF),  N(ECHILD), N(EAGAIN), N(ENOMEM),    N(EACCES),       N(EFAULT),  N(EBUSY),   N(EEXIST),
    N(EXDEV),  N(ENODEV), N(ENOTDIR), N(EISDIR),   N(EINVAL),       N(ENFILE),  N(EMFILE),  N(ENOTTY),
    N(EFBIG),  N(ENOSPC), N(ESPIPE), N(EROFS),     N(EMLINK),       N(EPIPE),   N(EDOM),    N(ERANGE),
    N(ENOSYS), N(ENOTSUP), N(EOPNOTSUPP), N(EAFNOSUPPORT), N(EPROTONOSUPPORT), N(ECONNREFUSED),
    N(ENETUNREACH), N(ETIMEDOUT), N(EUCLEAN), N(ENOTCONN), {NULL, 0},
};
static const named_t s_families[] = {
    N(AF_UNIX),  N(AF_LOCAL),  N(AF_INET),   N(AF_INET6),     N(AF_NETLINK),  N(AF_PACKET),
    N(AF_AX25),  N(AF_IPX),    N(AF_APPLETALK), N(AF_X25),    N(AF_DECnet),   N(AF_KEY),
    N(AF_BRIDGE), N(AF_ROSE),  N(AF_NETROM), N(AF_ATMPVC),    N(AF_ATMSVC),   N(AF_RDS),
    N(AF_IRDA),  N(AF_PPPOX),  N(AF_LLC),    N(AF_IB),        N(AF_MPLS),     N(AF_CAN),
    N(AF_TIPC),  N(AF_BLUETOOTH), N(AF_IUCV), N(AF_RXRPC),    N(AF_ISDN),     N(AF_PHONET),
    N(AF_IEEE802154), N(AF_CAIF), N(AF_ALG), N(AF_NFC),       N(AF_VSOCK),    N(AF_KCM),
    N(AF_QIPCRTR), N(AF_SMC),  N(AF_XDP),    {NULL, 0},
};
#undef N

// --- the unit ------------------------------------------------------------------------

typedef struct {
    int nr;    // libseccomp's number for this architecture
    int error; // NO_ERRNO, KILL_ERRNO or an errno value
} entry_t;

typedef struct {
    char name[64];
    char **members; // system calls and @groups, as systemd-analyze lists them
    size_t n, cap;
} group_t;

typedef struct {
    const char *path;
    int line;
    group_t *groups;
    size_t n_groups;
    // SystemCallFilter=
    bool filter_on, allow_list;
    entry_t *calls;
    size_t n_calls, cap_calls;
    int default_error; // SystemCallErrorNumber=
    // RestrictAddressFamilies=
    bool families_on, families_allow;
    bool family[AF_MAX];
    bool realtime, namespaces, mdwe, personality;
} unit_t;

static void s_die(const unit_t *u, const char *fmt, const char *arg) {
    fprintf(stderr, "unitseccomp: ");
    if (u && u->line) fprintf(stderr, "%s:%d: ", u->path, u->line);
    fprintf(stderr, fmt, arg);
    fputc('\n', stderr);
    exit(2);
}

static void *s_grow(void *p, size_t *cap, size_t need, size_t size) {
    if (need <= *cap) return p;
    *cap = need < 64 ? 64 : need * 2;
    p = realloc(p, *cap * size);
    if (!p) s_die(NULL, "%s", "out of memory");
    return p;
}

static int s_lookup(const named_t *t, const char *name) {
    for (; t->name; t++)
        if (!strcmp(t->name, name)) return t->value;
    return -1;
}

static bool s_yes(const unit_t *u, const char *v) {
    if (!strcmp(v, "yes") || !strcmp(v, "true") || !strcmp(v, "on") || !strcmp(v, "1")) return true;
    if (!strcmp(v, "no") || !strcmp(v, "false") || !strcmp(v, "off") || !strcmp(v, "0")) return false;
    s_die(u, "not a boolean: '%s'", v);
    return false;
}

// "EPERM", "13" or "kill", as after the ':' of a filter entry.
static int s_error(const unit_t *u, const char *v) {
    if (!strcmp(v, "kill")) return KILL_ERRNO;
    char *end;
    long num = strtol(v, &end, 10);
    if (*v && !*end && num >= 0 && num <= 4095) return (int)num;
    int e = s_lookup(s_errnos, v);
    if (e < 0) s_die(u, "unknown error name '%s' (add it to s_errnos)", v);
    return e;
}

// --- @groups, from `systemd-analyze syscall-filter` ---------------------------------

// "@name" at the start of a line opens a group; its members are the indented
// lines after it; "#" lines are comments (the group's description, the list
// of calls no group has).
static void s_read_groups(unit_t *u, const char *path) {
    FILE *f = fopen(path, "r");
    if (!f) s_die(NULL, "cannot read the groups file %s", path);
    char line[512];
    size_t cap = 0;
    group_t *g = NULL;
    while (fgets(line, sizeof line, f)) {
        line[strcspn(line, "\r\n")] = 0;
        char *w = line + strspn(line, " \t");
        if (!*w || *w == '#') continue;
        if (w == line) {
            if (*w != '@' || strlen(w) >= sizeof g->name) s_die(NULL, "groups file: unexpected line '%s'", line);
            u->groups = s_grow(u->groups, &cap, u->n_groups + 1, sizeof *u->groups);
            g = &u->groups[u->n_groups++];
            memset(g, 0, sizeof *g);
            strcpy(g->name, w);
        } else {
            if (!g) s_die(NULL, "groups file: member '%s' before any group", w);
            g->members = s_grow(g->members, &g->cap, g->n + 1, sizeof *g->members);
            if (!(g->members[g->n++] = strdup(w))) s_die(NULL, "%s", "out of memory");
        }
    }
    fclose(f);
    // Without these the file is not what systemd-analyze prints: refuse it
    // rather than filter with empty groups.
    bool service = false, dflt = false;
    for (size_t i = 0; i < u->n_groups; i++) {
        service |= !strcmp(u->groups[i].name, "@system-service");
        dflt |= !strcmp(u->groups[i].name, "@default");
    }
    if (!service || !dflt) s_die(NULL, "%s lists no @system-service or @default group: not systemd-analyze's output", path);
}

static const group_t *s_group(const unit_t *u, const char *name) {
    for (size_t i = 0; i < u->n_groups; i++)
        if (!strcmp(u->groups[i].name, name)) return &u->groups[i];
    return NULL;
}

// --- SystemCallFilter= ---------------------------------------------------------------

static void s_put(unit_t *u, int nr, int error) {
    for (size_t i = 0; i < u->n_calls; i++)
        if (u->calls[i].nr == nr) {
            u->calls[i].error = error;
            return;
        }
    u->calls = s_grow(u->calls, &u->cap_calls, u->n_calls + 1, sizeof *u->calls);
    u->calls[u->n_calls++] = (entry_t){nr, error};
}

static void s_remove(unit_t *u, int nr) {
    for (size_t i = 0; i < u->n_calls; i++)
        if (u->calls[i].nr == nr) {
            u->calls[i] = u->calls[--u->n_calls];
            return;
        }
}

// One name or @group of a line: whether it joins or leaves the set follows
// systemd: a line of the list's own kind adds, the other kind removes,
// except that a "~name:ERRNO" in an allow-list adds the call with its error.
static void s_filter_item(unit_t *u, const char *name, bool invert, int error, int depth) {
    if (depth > 16) s_die(u, "groups nested too deep at %s", name);
    if (name[0] == '@') {
        const group_t *g = s_group(u, name);
        if (!g) s_die(u, "unknown system call group %s", name);
        for (size_t i = 0; i < g->n; i++) s_filter_item(u, g->members[i], invert, error, depth + 1);
        return;
    }
    int nr = seccomp_syscall_resolve_name(name);
    if (nr == __NR_SCMP_ERROR) return; // unknown to libseccomp: systemd skips it too
    if (invert != u->allow_list || (invert && u->allow_list && error != NO_ERRNO)) s_put(u, nr, error);
    else s_remove(u, nr);
}

static void s_system_call_filter(unit_t *u, char *v) {
    if (!*v) { // an empty assignment resets the filter
        u->filter_on = false;
        u->n_calls = 0;
        return;
    }
    bool invert = *v == '~';
    if (invert) v++;
    if (!u->filter_on) {
        u->filter_on = true;
        u->allow_list = !invert;
        if (u->allow_list) s_filter_item(u, "@default", false, NO_ERRNO, 0);
    }
    for (char *save, *w = strtok_r(v, " \t", &save); w; w = strtok_r(NULL, " \t", &save)) {
        int error = NO_ERRNO;
        char *colon = strchr(w, ':');
        if (colon) {
            *colon = 0;
            if (!invert) s_die(u, "an error number only goes with a ~ list: %s", w);
            error = s_error(u, colon + 1);
        }
        s_filter_item(u, w, invert, error, 0);
    }
}

// --- RestrictAddressFamilies= ------------------------------------------------------

static void s_address_families(unit_t *u, char *v) {
    if (!*v) { // reset: every family
        u->families_on = false;
        memset(u->family, 0, sizeof u->family);
        return;
    }
    if (!strcmp(v, "none")) {
        u->families_on = u->families_allow = true;
        memset(u->family, 0, sizeof u->family);
        return;
    }
    bool invert = *v == '~';
    if (invert) v++;
    if (!u->families_on) {
        u->families_on = true;
        u->families_allow = !invert;
    }
    for (char *save, *w = strtok_r(v, " \t", &save); w; w = strtok_r(NULL, " \t", &save)) {
        int af = s_lookup(s_families, w);
        if (af < 0 || af >= AF_MAX) s_die(u, "unknown address family %s (add it to s_families)", w);
        u->family[af] = invert != u->families_allow;
    }
}

// --- the unit file ---------------------------------------------------------------------

static void s_setting(unit_t *u, const char *key, char *v) {
    if (!strcmp(key, "SystemCallFilter")) s_system_call_filter(u, v);
    else if (!strcmp(key, "SystemCallErrorNumber")) u->default_error = *v ? s_error(u, v) : KILL_ERRNO;
    else if (!strcmp(key, "SystemCallArchitectures")) {
        // libseccomp's filters hold the native architecture alone and kill
        // calls of any other: what "native" asks for.
        if (strcmp(v, "native") && *v) s_die(u, "SystemCallArchitectures=%s is not emulated (only native)", v);
    } else if (!strcmp(key, "RestrictAddressFamilies")) s_address_families(u, v);
    else if (!strcmp(key, "RestrictRealtime")) u->realtime = s_yes(u, v);
    else if (!strcmp(key, "MemoryDenyWriteExecute")) u->mdwe = s_yes(u, v);
    else if (!strcmp(key, "LockPersonality")) u->personality = s_yes(u, v);
    else if (!strcmp(key, "RestrictNamespaces")) {
        if (!strcmp(v, "yes") || !strcmp(v, "true")) u->namespaces = true;
        else if (!strcmp(v, "no") || !strcmp(v, "false") || !*v) u->namespaces = false;
        else s_die(u, "RestrictNamespaces=%s is not emulated (only yes or no)", v);
    } else if (!strncmp(key, "SystemCall", 10))
        s_die(u, "%s= is not emulated", key); // SystemCallLog= and whatever comes next
}

static void s_read_unit(unit_t *u) {
    FILE *f = fopen(u->path, "r");
    if (!f) s_die(NULL, "cannot read the unit %s", u->path);
    char line[4096], logical[16384];
    size_t len = 0;
    bool service = false;
    int line_no = 0;
    while (fgets(line, sizeof line, f)) {
        line_no++;
        line[strcspn(line, "\r\n")] = 0;
        char *w = line + strspn(line, " \t");
        if (len == 0) u->line = line_no;
        // Comments are skipped, also between the lines of a continued setting
        // (systemd.syntax(7)).
        if (*w == '#' || *w == ';') continue;
        // A trailing backslash continues the setting on the next line.
        size_t n = strlen(w);
        bool more = n && w[n - 1] == '\\';
        if (more) w[--n] = 0;
        if (len + n + 2 > sizeof logical) s_die(u, "%s", "line too long");
        if (len) logical[len++] = ' ';
        memcpy(logical + len, w, n + 1);
        len += n;
        if (more) continue;
        len = 0;
        char *s = logical;
        if (*s == '[') {
            service = !strncmp(s, "[Service]", 9);
            continue;
        }
        char *eq = strchr(s, '=');
        if (!service || !eq) continue;
        *eq = 0;
        char *v = eq + 1;
        for (char *e = eq; e > s && (e[-1] == ' ' || e[-1] == '\t');) *--e = 0;
        v += strspn(v, " \t");
        for (char *e = v + strlen(v); e > v && (e[-1] == ' ' || e[-1] == '\t');) *--e = 0;
        s_setting(u, s, v);
    }
    fclose(f);
    u->line = 0;
}

// --- the filters -----------------------------------------------------------------------

static uint32_t s_action(int error) { return error == KILL_ERRNO ? SCMP_ACT_KILL_PROCESS : SCMP_ACT_ERRNO((uint32_t)error); }

static void s_check(int rc, const char *what) {
    if (rc < 0) {
        errno = -rc;
        perror(what);
        exit(2);
    }
}

// One seccomp filter allowing everything but the rules `add` puts in it.
static void s_load(void (*add)(scmp_filter_ctx, const unit_t *), const unit_t *u, const char *what) {
    scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_ALLOW);
    if (!ctx) s_die(NULL, "seccomp_init failed for %s", what);
    add(ctx, u);
    s_check(seccomp_load(ctx), what);
    seccomp_release(ctx);
}

static void s_rule(scmp_filter_ctx ctx, uint32_t action, int nr, unsigned n, const struct scmp_arg_cmp *cmp) {
    s_check(seccomp_rule_add_exact_array(ctx, action, nr, n, cmp), "seccomp_rule_add");
}

static void s_add_families(scmp_filter_ctx ctx, const unit_t *u) {
    for (int af = 0; af < AF_MAX; af++)
        if (u->family[af] != u->families_allow)
            s_rule(ctx, SCMP_ACT_ERRNO(EAFNOSUPPORT), SCMP_SYS(socket), 1, &SCMP_A0(SCMP_CMP_EQ, (scmp_datum_t)af));
    if (u->families_allow) s_rule(ctx, SCMP_ACT_ERRNO(EAFNOSUPPORT), SCMP_SYS(socket), 1, &SCMP_A0(SCMP_CMP_GE, AF_MAX));
}

static void s_add_realtime(scmp_filter_ctx ctx, const unit_t *u) {
    (void)u;
    // Allowed: SCHED_OTHER, SCHED_BATCH and SCHED_IDLE (5), the highest.
    for (int p = 0; p < SCHED_IDLE; p++)
        if (p != SCHED_OTHER && p != SCHED_BATCH)
            s_rule(ctx, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(sched_setscheduler), 1, &SCMP_A1(SCMP_CMP_EQ, (scmp_datum_t)p));
    s_rule(ctx, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(sched_setscheduler), 1, &SCMP_A1(SCMP_CMP_GT, SCHED_IDLE));
}

static void s_add_namespaces(scmp_filter_ctx ctx, const unit_t *u) {
    (void)u;
    static const unsigned long flags[] = {CLONE_NEWCGROUP, CLONE_NEWIPC,  CLONE_NEWNET, CLONE_NEWNS,
                                          CLONE_NEWPID,    CLONE_NEWUSER, CLONE_NEWUTS};
    // clone3 passes its flags in memory a filter cannot read: ENOSYS makes
    // glibc fall back to clone, whose flags it can.
    s_rule(ctx, SCMP_ACT_ERRNO(ENOSYS), SCMP_SYS(clone3), 0, NULL);
    s_rule(ctx, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(setns), 0, NULL);
    for (size_t i = 0; i < sizeof flags / sizeof *flags; i++) {
        struct scmp_arg_cmp has = SCMP_A0(SCMP_CMP_MASKED_EQ, flags[i], flags[i]);
        s_rule(ctx, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(unshare), 1, &has);
        s_rule(ctx, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(clone), 1, &has);
    }
}

static void s_add_mdwe(scmp_filter_ctx ctx, const unit_t *u) {
    (void)u;
    s_rule(ctx, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(mmap), 1, &SCMP_A2(SCMP_CMP_MASKED_EQ, PROT_EXEC | PROT_WRITE, PROT_EXEC | PROT_WRITE));
    s_rule(ctx, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(mprotect), 1, &SCMP_A2(SCMP_CMP_MASKED_EQ, PROT_EXEC, PROT_EXEC));
    s_rule(ctx, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(pkey_mprotect), 1, &SCMP_A2(SCMP_CMP_MASKED_EQ, PROT_EXEC, PROT_EXEC));
    s_rule(ctx, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(shmat), 1, &SCMP_A2(SCMP_CMP_MASKED_EQ, SHM_EXEC, SHM_EXEC));
}

static void s_add_personality(scmp_filter_ctx ctx, const unit_t *u) {
    (void)u;
    // The personality systemd locks when the unit names none: Linux, or its
    // 32-bit variant when that is what runs.
    int now = personality(0xffffffff);
    unsigned long keep = now >= 0 && (now & PER_MASK) == PER_LINUX32 ? PER_LINUX32 : PER_LINUX;
    s_rule(ctx, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(personality), 1, &SCMP_A0(SCMP_CMP_NE, keep));
}

static void s_load_system_call_filter(const unit_t *u) {
    uint32_t refuse = s_action(u->default_error);
    scmp_filter_ctx ctx = seccomp_init(u->allow_list ? refuse : SCMP_ACT_ALLOW);
    if (!ctx) s_die(NULL, "%s", "seccomp_init failed");
    for (size_t i = 0; i < u->n_calls; i++) {
        const entry_t *e = &u->calls[i];
        uint32_t a = e->error != NO_ERRNO ? s_action(e->error) : u->allow_list ? SCMP_ACT_ALLOW : refuse;
        if (a == (u->allow_list ? refuse : SCMP_ACT_ALLOW)) continue; // the default already
        int rc = seccomp_rule_add_exact(ctx, a, e->nr, 0);
        if (rc == -EDOM) continue; // not a call of this architecture
        s_check(rc, "seccomp_rule_add");
    }
    s_check(seccomp_load(ctx), "seccomp_load (SystemCallFilter=)");
    seccomp_release(ctx);
}

int main(int argc, char **argv) {
    if (argc < 5 || strcmp(argv[3], "--")) {
        fprintf(stderr, "usage: unitseccomp UNIT SETS -- PROGRAM [ARGS...]\n"
                        "  SETS: the output of `systemd-analyze syscall-filter`\n");
        return 2;
    }
    unit_t u = {.path = argv[1], .default_error = KILL_ERRNO};
    s_read_groups(&u, argv[2]);
    s_read_unit(&u);

    if (u.families_on) s_load(s_add_families, &u, "seccomp_load (RestrictAddressFamilies=)");
    if (u.realtime) s_load(s_add_realtime, &u, "seccomp_load (RestrictRealtime=)");
    if (u.namespaces) s_load(s_add_namespaces, &u, "seccomp_load (RestrictNamespaces=)");
    if (u.mdwe) s_load(s_add_mdwe, &u, "seccomp_load (MemoryDenyWriteExecute=)");
    if (u.personality) s_load(s_add_personality, &u, "seccomp_load (LockPersonality=)");
    if (u.filter_on) s_load_system_call_filter(&u);

    execvp(argv[4], argv + 4);
    perror(argv[4]);
    return 127;
}
