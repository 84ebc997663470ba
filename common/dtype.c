/*
 * dtype: the table of known ggml types and row-size arithmetic.
 */
#include "dtype.h"

#include <ctype.h>

static const struct {
    uint32_t id;
    mc_dtype_traits_t t;
} s_types[] = {
    {MC_DTYPE_F32, {"F32", 1, 4, true}},      {MC_DTYPE_F16, {"F16", 1, 2, true}},
    {MC_DTYPE_Q4_0, {"Q4_0", 32, 18, true}},  {MC_DTYPE_Q4_1, {"Q4_1", 32, 20, true}},
    {MC_DTYPE_Q5_0, {"Q5_0", 32, 22, true}},  {MC_DTYPE_Q5_1, {"Q5_1", 32, 24, true}},
    {MC_DTYPE_Q8_0, {"Q8_0", 32, 34, true}},  {MC_DTYPE_Q8_1, {"Q8_1", 32, 36, false}},
    {MC_DTYPE_Q2_K, {"Q2_K", 256, 84, true}}, {MC_DTYPE_Q3_K, {"Q3_K", 256, 110, true}},
    {MC_DTYPE_Q4_K, {"Q4_K", 256, 144, true}}, {MC_DTYPE_Q5_K, {"Q5_K", 256, 176, true}},
    {MC_DTYPE_Q6_K, {"Q6_K", 256, 210, true}}, {MC_DTYPE_Q8_K, {"Q8_K", 256, 292, false}},
    {MC_DTYPE_BF16, {"BF16", 1, 2, true}},
};

const mc_dtype_traits_t *mc_dtype_traits(uint32_t type) {
    for (size_t i = 0; i < sizeof s_types / sizeof s_types[0]; i++)
        if (s_types[i].id == type) return &s_types[i].t;
    return NULL;
}

const char *mc_dtype_name(uint32_t type) {
    const mc_dtype_traits_t *t = mc_dtype_traits(type);
    return t ? t->name : "?";
}

bool mc_dtype_from_name(const char *name, mc_dtype_t *out) {
    for (size_t i = 0; i < sizeof s_types / sizeof s_types[0]; i++) {
        const char *a = s_types[i].t.name, *b = name;
        while (*a && *b && toupper((unsigned char)*a) == toupper((unsigned char)*b)) a++, b++;
        if (!*a && !*b) {
            *out = (mc_dtype_t)s_types[i].id;
            return true;
        }
    }
    return false;
}

size_t mc_dtype_row_bytes(uint32_t type, uint64_t n) {
    const mc_dtype_traits_t *t = mc_dtype_traits(type);
    if (!t || n % t->block_elems) return 0;
    return (size_t)(n / t->block_elems) * t->block_bytes;
}
