/*
 * dtype: the table of known ggml types and row-size arithmetic.
 */
#include "dtype.h"

#include <ctype.h>

// The last column is llama.cpp's llama_ftype numbering (llama.h): ALL_F32 0, MOSTLY_F16 1,
// Q4_0 2, Q4_1 3, Q8_0 7, Q5_0 8, Q5_1 9, Q2_K 10, Q3_K_M 12, Q4_K_M 15, Q5_K_M 17, Q6_K 18,
// BF16 32, MOSTLY_MXFP4_MOE 38 (experts MXFP4, the rest another type); not the ggml type ids of the first.
static const struct {
    uint32_t id;
    mc_dtype_traits_t t;
} s_types[] = {
    {MC_DTYPE_F32, {"F32", 1, 4, true, 0}},       {MC_DTYPE_F16, {"F16", 1, 2, true, 1}},
    {MC_DTYPE_Q4_0, {"Q4_0", 32, 18, true, 2}},   {MC_DTYPE_Q4_1, {"Q4_1", 32, 20, true, 3}},
    {MC_DTYPE_Q5_0, {"Q5_0", 32, 22, true, 8}},   {MC_DTYPE_Q5_1, {"Q5_1", 32, 24, true, 9}},
    {MC_DTYPE_Q8_0, {"Q8_0", 32, 34, true, 7}},   {MC_DTYPE_Q8_1, {"Q8_1", 32, 36, false, 0}},
    {MC_DTYPE_Q2_K, {"Q2_K", 256, 84, true, 10}}, {MC_DTYPE_Q3_K, {"Q3_K", 256, 110, true, 12}},
    {MC_DTYPE_Q4_K, {"Q4_K", 256, 144, true, 15}}, {MC_DTYPE_Q5_K, {"Q5_K", 256, 176, true, 17}},
    {MC_DTYPE_Q6_K, {"Q6_K", 256, 210, true, 18}}, {MC_DTYPE_Q8_K, {"Q8_K", 256, 292, false, 0}},
    {MC_DTYPE_BF16, {"BF16", 1, 2, true, 32}},    {MC_DTYPE_MXFP4, {"MXFP4", 32, 17, true, 38}},
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

bool mc_dtype_file_type(uint32_t type, uint32_t *out) {
    const mc_dtype_traits_t *t = mc_dtype_traits(type);
    if (!t || !t->weight) return false;
    *out = t->file_type;
    return true;
}

size_t mc_dtype_row_bytes(uint32_t type, uint64_t n) {
    const mc_dtype_traits_t *t = mc_dtype_traits(type);
    if (!t || n % t->block_elems) return 0;
    return (size_t)(n / t->block_elems) * t->block_bytes;
}
