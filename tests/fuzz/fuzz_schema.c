/*
 * fuzz_schema: any bytes through the JSON Schema compiler and, when it
 * compiles, the rest through its automaton. The input is a schema, a NUL
 * byte, then a document. Every document the automaton accepts whole must be
 * exactly one JSON value to cJSON (the automaton lets through a subset of
 * JSON); a state's serialized form stays within its bound.
 */
#include <cjson/cJSON.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "jsonschema.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const uint8_t *nul = memchr(data, 0, size);
    const size_t slen = nul ? (size_t)(nul - data) : size;
    char err[MC_ERR_LEN];
    mc_jschema_t *s = mc_jschema_compile((const char *)data, slen, err);
    if (!s) return 0;
    static mc_jsm_state_t a, b;
    static uint8_t buf[sizeof(mc_jsm_state_t) + 8];
    const mc_jsm_t m = {s, NULL, 0, NULL, 0};
    mc_jsm_start(&m, &a);
    mc_jsm_state_t *cur = &a, *nx = &b;
    const uint8_t *doc = nul ? nul + 1 : data + size;
    const size_t dlen = nul ? size - slen - 1 : 0;
    size_t i = 0;
    for (; i < dlen; i++) {
        if (!mc_jsm_step(&m, cur, doc[i], nx)) break;
        mc_jsm_state_t *t = cur;
        cur = nx, nx = t;
        if (mc_jsm_serialize(cur, buf) > sizeof(mc_jsm_state_t)) abort();
    }
    if (i == dlen && mc_jsm_accepting(&m, cur)) {
        const char *end = NULL;
        cJSON *j = cJSON_ParseWithLengthOpts((const char *)doc, dlen, &end, false);
        if (!j || end != (const char *)doc + dlen) abort(); // accepted, but not one JSON value
        cJSON_Delete(j);
    }
    mc_jschema_destroy(&s);
    return 0;
}
