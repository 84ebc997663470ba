/*
 * fuzz_cluster_config: any bytes as a cluster file (YAML), checked against a
 * model of 4 layers and 8 experts when they parse; and as an expert-set or
 * layer-set string, and as key files (authorized keys, a secret key).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cluster_config.h"
#include "keys.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char err[512];
    mc_cluster_config_t *c = mc_cluster_config_parse((const char *)data, size, "fuzz.yaml", err);
    if (c) {
        (void)mc_cluster_config_check(c, 4, 8, err);
        mc_cluster_config_destroy(&c);
    }
    char *text = malloc(size + 1);
    if (!text) abort();
    memcpy(text, data, size);
    text[size] = '\0';
    mc_expert_set_t es;
    if (mc_expert_set_parse(text, &es, err) == MC_OK) {
        char buf[512];
        (void)mc_expert_set_format(&es, buf, sizeof buf);
    }
    mc_layer_set_t ls;
    if (mc_layer_set_parse(text, &ls, err) == MC_OK) {
        char buf[512];
        (void)mc_layer_set_format(&ls, buf, sizeof buf);
    }
    free(text);
    // The same bytes as key files: authorized keys, a secret key.
    mc_keyring_t ring;
    if (mc_keyring_parse((const char *)data, size, "fuzz.keys", &ring, err) == MC_OK) mc_keyring_free(&ring);
    mc_keypair_t kp;
    (void)mc_keys_parse_secret((const char *)data, size, "fuzz.key", &kp, err);
    return 0;
}
