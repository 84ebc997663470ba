/*
 * test_discovery: the announcement's TXT records made and read back, every
 * hostile record refused (an announcement is anyone's bytes), and
 * browsing without a daemon refused with a message. The daemon's side
 * (announcing, browsing, joining a serving cluster) runs across network
 * namespaces in tests/net/discover.sh.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>

#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "discovery.h"
#include "testutil.h"

static const char *s_key = "rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7";

// Parse the NUL-terminated records recs[0..n).
static mc_err_t s_parse(const char *address, uint32_t port, const char *const *recs, size_t n, mc_discovery_node_t *d,
                        char *err) {
    const uint8_t *txt[MC_DISCOVERY_MAX_TXT + 2];
    size_t len[MC_DISCOVERY_MAX_TXT + 2];
    for (size_t i = 0; i < n; i++) txt[i] = (const uint8_t *)recs[i], len[i] = strlen(recs[i]);
    return mc_discovery_node_parse(address, port, txt, len, n, d, err);
}

static void s_refused(const char *address, uint32_t port, const char *const *recs, size_t n, const char *want) {
    char err[MC_ERR_LEN];
    mc_discovery_node_t d;
    memset(&d, 0x5a, sizeof d);
    const mc_discovery_node_t before = d;
    assert_int_equal(s_parse(address, port, recs, n, &d, err), MC_ERR_FORMAT);
    if (!strstr(err, want)) fail_msg("got '%s', want '%s'", err, want);
    assert_memory_equal(&d, &before, sizeof d); // untouched on failure
}

static void test_round_trip(void **state) {
    (void)state;
    char err[MC_ERR_LEN], txt[MC_DISCOVERY_MAX_TXT][MC_DISCOVERY_TXT_LEN];
    size_t n;
    assert_int_equal(mc_discovery_txt_make("pi-1", s_key, true, txt, &n, err), MC_OK);
    assert_int_equal(n, 4);
    assert_string_equal(txt[0], "v=1");
    assert_string_equal(txt[1], "name=pi-1");
    assert_string_equal(txt[3], "cache=1");
    const char *recs[4] = {txt[0], txt[1], txt[2], txt[3]};
    mc_discovery_node_t d;
    assert_int_equal(s_parse("10.0.0.11", 5555, recs, n, &d, err), MC_OK);
    assert_string_equal(d.name, "pi-1");
    assert_string_equal(d.public_key, s_key);
    assert_string_equal(d.address, "10.0.0.11");
    assert_int_equal(d.port, 5555);
    assert_string_equal(d.endpoint, "tcp://10.0.0.11:5555");
    assert_true(d.cache);
    // Without a key or cache: two records; the key is "" after parsing.
    assert_int_equal(mc_discovery_txt_make("n.2_x", NULL, false, txt, &n, err), MC_OK);
    assert_int_equal(n, 2);
    assert_int_equal(s_parse("192.168.1.2", 65535, recs, n, &d, err), MC_OK);
    assert_string_equal(d.name, "n.2_x");
    assert_string_equal(d.public_key, "");
    assert_false(d.cache);
    // Unknown records are skipped; the order does not matter.
    const char *more[] = {"future=whatever", "name=pi-3", "", "cache=0", "v=1", "=x", "noequals"};
    assert_int_equal(s_parse("10.1.2.3", 1, more, 7, &d, err), MC_OK);
    assert_string_equal(d.name, "pi-3");
    // What a node cannot announce.
    assert_int_equal(mc_discovery_txt_make("a b", NULL, false, txt, &n, err), MC_ERR_ARG);
    assert_int_equal(mc_discovery_txt_make("", NULL, false, txt, &n, err), MC_ERR_ARG);
    assert_int_equal(mc_discovery_txt_make("a", "short", false, txt, &n, err), MC_ERR_ARG);
    char longname[MC_CLUSTER_MAX_NAME + 2];
    memset(longname, 'x', sizeof longname - 1);
    longname[sizeof longname - 1] = 0;
    assert_int_equal(mc_discovery_txt_make(longname, NULL, false, txt, &n, err), MC_ERR_ARG);
    longname[MC_CLUSTER_MAX_NAME] = 0;
    assert_int_equal(mc_discovery_txt_make(longname, NULL, false, txt, &n, err), MC_OK);
}

static void test_hostile(void **state) {
    (void)state;
    char key_rec[64], name65[80], long_rec[MC_DISCOVERY_TXT_LEN + 8];
    snprintf(key_rec, sizeof key_rec, "key=%s", s_key);
    const char *ok[] = {"v=1", "name=a", key_rec};
    // Address and port.
    s_refused("fe80::1", 5555, ok, 3, "not an IPv4 address");
    s_refused("10.0.0.1:80", 5555, ok, 3, "not an IPv4 address");
    s_refused("", 5555, ok, 3, "not an IPv4 address");
    s_refused(NULL, 5555, ok, 3, "not an IPv4 address");
    s_refused("10.0.0.256", 5555, ok, 3, "not an IPv4 address");
    s_refused("10.0.0.1", 0, ok, 3, "port 0 is outside 1..65535");
    s_refused("10.0.0.1", 65536, ok, 3, "port 65536 is outside 1..65535");
    // Version and name.
    s_refused("10.0.0.1", 1, (const char *[]){"name=a"}, 1, "no 'v' record");
    s_refused("10.0.0.1", 1, (const char *[]){"v=1"}, 1, "no 'name' record");
    s_refused("10.0.0.1", 1, (const char *[]){"v=2", "name=a"}, 2, "version '2'");
    s_refused("10.0.0.1", 1, (const char *[]){"v=", "name=a"}, 2, "version ''");
    s_refused("10.0.0.1", 1, (const char *[]){"v=1", "v=1", "name=a"}, 3, "two 'v' records");
    s_refused("10.0.0.1", 1, (const char *[]){"v=1", "name=a", "name=b"}, 3, "two 'name' records");
    s_refused("10.0.0.1", 1, (const char *[]){"v=1", "name="}, 2, "the name is not");
    s_refused("10.0.0.1", 1, (const char *[]){"v=1", "name=a b"}, 2, "the name is not");
    s_refused("10.0.0.1", 1, (const char *[]){"v=1", "name=a/../b"}, 2, "the name is not");
    s_refused("10.0.0.1", 1, (const char *[]){"v=1", "name=\x1b[2J"}, 2, "the name is not");
    snprintf(name65, sizeof name65, "name=%065d", 0);
    s_refused("10.0.0.1", 1, (const char *[]){"v=1", name65}, 2, "the name is not");
    // Key and cache.
    s_refused("10.0.0.1", 1, (const char *[]){"v=1", "name=a", "key=short"}, 3, "the key is not");
    s_refused("10.0.0.1", 1, (const char *[]){"v=1", "name=a", "key=rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7 "}, 3,
              "the key is not");
    s_refused("10.0.0.1", 1, (const char *[]){"v=1", "name=a", "key=rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf\""}, 3,
              "the key is not");
    s_refused("10.0.0.1", 1, (const char *[]){"v=1", "name=a", key_rec, key_rec}, 4, "two 'key' records");
    s_refused("10.0.0.1", 1, (const char *[]){"v=1", "name=a", "cache=yes"}, 3, "'cache' is not 0 or 1");
    s_refused("10.0.0.1", 1, (const char *[]){"v=1", "name=a", "cache=1", "cache=0"}, 4, "two 'cache' records");
    // Sizes: a record longer than DNS allows, too many records, a NUL inside.
    memset(long_rec, 'a', sizeof long_rec - 1);
    long_rec[sizeof long_rec - 1] = 0;
    s_refused("10.0.0.1", 1, (const char *[]){"v=1", "name=a", long_rec}, 3, "bytes");
    const char *many[MC_DISCOVERY_MAX_TXT + 1];
    for (size_t i = 0; i < MC_DISCOVERY_MAX_TXT + 1; i++) many[i] = i == 0 ? "v=1" : i == 1 ? "name=a" : "x=1";
    s_refused("10.0.0.1", 1, many, MC_DISCOVERY_MAX_TXT + 1, "TXT records (at most");
    char err[MC_ERR_LEN];
    mc_discovery_node_t d;
    assert_int_equal(s_parse("10.0.0.1", 1, many, MC_DISCOVERY_MAX_TXT, &d, err), MC_OK);
    const uint8_t nul[] = {'n', 'a', 'm', 'e', '=', 'a', 0, 'b'};
    const uint8_t *txt[] = {(const uint8_t *)"v=1", nul};
    const size_t len[] = {3, sizeof nul};
    assert_int_equal(mc_discovery_node_parse("10.0.0.1", 1, txt, len, 2, &d, err), MC_ERR_FORMAT);
    assert_non_null(strstr(err, "NUL byte"));
    // Not NUL-terminated: only len bytes are read.
    const uint8_t name_ab[] = {'n', 'a', 'm', 'e', '=', 'a', 'b', 'X'};
    const uint8_t *txt2[] = {(const uint8_t *)"v=1", name_ab};
    const size_t len2[] = {3, 7};
    assert_int_equal(mc_discovery_node_parse("10.0.0.1", 1, txt2, len2, 2, &d, err), MC_OK);
    assert_string_equal(d.name, "ab");
}

// No daemon to talk to (the bus itself is absent): browsing for --discover
// is refused with a message, not a hang.
static void test_no_daemon(void **state) {
    (void)state;
    char err[MC_ERR_LEN];
    setenv("DBUS_SYSTEM_BUS_ADDRESS", "unix:path=/nonexistent/moe-cluster-test-bus", 1);
    mc_browse_t *b = mc_browse_new(NULL, false, err);
    assert_null(b);
    assert_non_null(strstr(err, "cannot reach the Avahi daemon"));
    FILE *out = tmpfile();
    assert_non_null(out);
    assert_int_equal(mc_discovery_list(100, out, NULL, err), MC_ERR_NET);
    assert_int_equal(ftell(out), 0);
    fclose(out);
    mc_browse_destroy(&b); // NULL: a no-op
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_hostile),
        cmocka_unit_test(test_no_daemon),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
