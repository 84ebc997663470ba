/*
 * dtype: tensor element types (ggml type ids as stored in GGUF), their block
 * geometry, and exact fp16 / bf16 <-> fp32 conversions.
 *
 * Every quantized type packs `block_elems` values into `block_bytes` bytes;
 * a row of n values is n / block_elems blocks. Type ids are the on-disk
 * numbers, so an unknown id read from a file is detected with
 * mc_dtype_traits() returning NULL.
 */
#ifndef MC_DTYPE_H
#define MC_DTYPE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

typedef enum {
    MC_DTYPE_F32 = 0,
    MC_DTYPE_F16 = 1,
    MC_DTYPE_Q4_0 = 2,
    MC_DTYPE_Q4_1 = 3,
    MC_DTYPE_Q5_0 = 6,
    MC_DTYPE_Q5_1 = 7,
    MC_DTYPE_Q8_0 = 8,
    MC_DTYPE_Q8_1 = 9,  // activations only
    MC_DTYPE_Q2_K = 10,
    MC_DTYPE_Q3_K = 11,
    MC_DTYPE_Q4_K = 12,
    MC_DTYPE_Q5_K = 13,
    MC_DTYPE_Q6_K = 14,
    MC_DTYPE_Q8_K = 15, // activations only
    MC_DTYPE_BF16 = 30,
    MC_DTYPE_MXFP4 = 39, // OCP microscaling FP4 (GPT-OSS experts): E2M1 values, one E8M0 scale per 32
} mc_dtype_t;

// Every type id is below this: tables indexed by type id have this many entries.
#define MC_DTYPE_ID_LIMIT 40

typedef struct {
    const char *name;     // "Q4_K", as llama.cpp spells it
    uint32_t block_elems; // values per block (1 for float types)
    uint32_t block_bytes; // bytes per block
    bool weight;          // may appear as a weight tensor in a GGUF file
    uint32_t file_type;   // general.file_type of a model of such weights (weight types only)
} mc_dtype_traits_t;

// Traits of a type id, or NULL when the id is not one we know.
const mc_dtype_traits_t *mc_dtype_traits(uint32_t type);

// Name of a type id ("F32", "Q6_K"), or "?" when unknown.
const char *mc_dtype_name(uint32_t type);

// Type id from a name (case-insensitive); returns false when unknown.
bool mc_dtype_from_name(const char *name, mc_dtype_t *out);

// general.file_type (llama.cpp's `llama_ftype`) of a model whose matrices are all
// `type`. A K-quant maps to its _M mix, as llama.cpp's loader guesses the file type
// from the dominant type when the key is missing: one number whichever tool wrote the
// file. False for types no weight is stored in (Q8_1, Q8_K) and unknown ids.
bool mc_dtype_file_type(uint32_t type, uint32_t *out);

// Bytes of a row of n values; 0 when n is not a multiple of the block size
// or the type is unknown (callers validate n first).
size_t mc_dtype_row_bytes(uint32_t type, uint64_t n);

// --- exact conversions (round to nearest even, NaN/Inf/subnormals kept) ---

static inline uint32_t mc_f32_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static inline float mc_f32_from_bits(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static inline float mc_fp16_to_fp32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1Fu;
    uint32_t mant = h & 0x3FFu;
    if (exp == 0x1F) return mc_f32_from_bits(sign | 0x7F800000u | (mant << 13));
    if (exp == 0) {
        if (mant == 0) return mc_f32_from_bits(sign);
        // Subnormal: value = mant * 2^-24, exact in f32.
        float v = (float)mant * 5.9604644775390625e-8f;
        return sign ? -v : v;
    }
    return mc_f32_from_bits(sign | ((exp + 112u) << 23) | (mant << 13));
}

static inline uint16_t mc_fp32_to_fp16(float f) {
    uint32_t x = mc_f32_bits(f);
    uint16_t sign = (uint16_t)((x >> 16) & 0x8000u);
    uint32_t ax = x & 0x7FFFFFFFu;
    if (ax >= 0x7F800000u) // Inf or NaN (NaN stays quiet NaN)
        return (uint16_t)(sign | 0x7C00u | (ax > 0x7F800000u ? 0x200u : 0u));
    if (ax >= 0x477FF000u) return (uint16_t)(sign | 0x7C00u); // rounds to >= 65520: Inf
    if (ax < 0x38800000u) { // below the smallest normal half: subnormal or zero
        if (ax < 0x33000000u) return sign; // < 2^-25 rounds to zero
        uint32_t e = ax >> 23;
        uint32_t m = (ax & 0x7FFFFFu) | 0x800000u;
        uint32_t shift = 126u - e; // 14..24
        uint32_t q = m >> shift;
        uint32_t rem = m & ((1u << shift) - 1u);
        uint32_t half = 1u << (shift - 1u);
        if (rem > half || (rem == half && (q & 1u))) q++;
        return (uint16_t)(sign | q);
    }
    uint32_t r = ax + 0xFFFu + ((ax >> 13) & 1u); // round mantissa to 10 bits, ties to even
    return (uint16_t)(sign | ((r - 0x38000000u) >> 13));
}

// An E8M0 scale byte x (2^(x - 127)) halved, as f32: 2^(x - 128), which multiplies
// MXFP4's doubled E2M1 values (quant.h). Exact for every byte: x = 0 and 1 give the
// subnormals 2^-128 and 2^-127; 0xFF (E8M0's NaN) gives 2^127 here, and the model
// loader refuses blocks holding it (ggml's ggml_e8m0_to_fp32_half computes the same).
static inline float mc_e8m0_to_fp32_half(uint8_t x) {
    return mc_f32_from_bits(x < 2 ? 0x00200000u << x : (uint32_t)(x - 1) << 23);
}

// The E8M0 byte that means NaN: no finite scale, refused in a weight.
#define MC_E8M0_NAN 0xFFu

static inline float mc_bf16_to_fp32(uint16_t h) {
    return mc_f32_from_bits((uint32_t)h << 16);
}

static inline uint16_t mc_fp32_to_bf16(float f) {
    uint32_t x = mc_f32_bits(f);
    if ((x & 0x7FFFFFFFu) > 0x7F800000u) return (uint16_t)((x >> 16) | 0x40u); // quiet NaN
    return (uint16_t)((x + 0x7FFFu + ((x >> 16) & 1u)) >> 16);
}

#endif
