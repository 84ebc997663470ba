/*
 * fuzz_discovery: any bytes as a resolved announcement (discovery.h): two
 * bytes of port (big-endian), one byte of address length, the address
 * text, then the TXT records as DNS carries them (a length byte before
 * each). What parses must be sane (a name of [A-Za-z0-9._-], a key of 40
 * characters or none, the endpoint made of the address and port) and must
 * come back the same when the node's own records are made from it and
 * parsed again.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "discovery.h"
#include "fuzz_seed.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc, (void)argv;
    // A node's announcement, as a seed.
    char txt[MC_DISCOVERY_MAX_TXT][MC_DISCOVERY_TXT_LEN], err[MC_ERR_LEN];
    size_t n;
    if (mc_discovery_txt_make("pi-1", "rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7", true, txt, &n, err)) abort();
    uint8_t buf[1024];
    const char *addr = "10.0.0.11";
    size_t at = 0;
    buf[at++] = 5555 >> 8, buf[at++] = 5555 & 0xff, buf[at++] = (uint8_t)strlen(addr);
    memcpy(buf + at, addr, strlen(addr));
    at += strlen(addr);
    for (size_t i = 0; i < n; i++) {
        buf[at++] = (uint8_t)strlen(txt[i]);
        memcpy(buf + at, txt[i], strlen(txt[i]));
        at += strlen(txt[i]);
    }
    mc_fuzz_seed_write("announce", buf, at);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 3) return 0;
    const uint32_t port = (uint32_t)data[0] << 8 | data[1];
    const size_t alen = data[2];
    if (3 + alen > size) return 0;
    char addr[256];
    memcpy(addr, data + 3, alen);
    addr[alen] = 0;
    const uint8_t *recs[MC_DISCOVERY_MAX_TXT + 8];
    size_t lens[MC_DISCOVERY_MAX_TXT + 8], n = 0;
    for (size_t at = 3 + alen; at < size && n < MC_DISCOVERY_MAX_TXT + 8;) {
        const size_t l = data[at++];
        if (at + l > size) break;
        recs[n] = data + at, lens[n++] = l;
        at += l;
    }
    mc_discovery_node_t d;
    char err[MC_ERR_LEN];
    if (mc_discovery_node_parse(addr, port, recs, lens, n, &d, err)) return 0;
    const size_t nl = strlen(d.name), kl = strlen(d.public_key);
    if (!nl || nl > MC_CLUSTER_MAX_NAME || strspn(d.name, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") != nl)
        abort();
    if (kl != 0 && kl != MC_KEY_TEXT) abort();
    char want[MC_CLUSTER_MAX_ENDPOINT];
    snprintf(want, sizeof want, "tcp://%s:%u", addr, port);
    if (strcmp(d.endpoint, want) || d.port != port || strcmp(d.address, addr)) abort();
    // The node's own records for what was read: the same announcement.
    char txt[MC_DISCOVERY_MAX_TXT][MC_DISCOVERY_TXT_LEN];
    size_t m;
    if (mc_discovery_txt_make(d.name, d.public_key, d.cache, txt, &m, err)) abort();
    const uint8_t *r2[MC_DISCOVERY_MAX_TXT];
    size_t l2[MC_DISCOVERY_MAX_TXT];
    for (size_t i = 0; i < m; i++) r2[i] = (const uint8_t *)txt[i], l2[i] = strlen(txt[i]);
    mc_discovery_node_t back;
    if (mc_discovery_node_parse(addr, port, r2, l2, m, &back, err) || memcmp(&back, &d, sizeof d)) abort();
    return 0;
}
