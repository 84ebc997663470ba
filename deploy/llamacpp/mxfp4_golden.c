/*
 * mxfp4-golden: llama.cpp's own MXFP4 bytes and values for test_quant.
 *
 * A one-off generator, never part of our build: compiled by hand against a
 * llama.cpp build beside the project (the command is in
 * tests/fixtures/README.md) and run once to write tests/fixtures/mxfp4_golden.txt.
 * For 64 blocks of 32 inputs in several shapes (Gaussian at magnitudes from
 * 2^-20 to 2^20, zeros, values on and between the E2M1 grid points, one
 * dominant value, subnormals) it prints, one block per line: the inputs' f32
 * bits, the 17 bytes of ggml's quantize_row_mxfp4_ref, and the 32 f32 bits
 * that ggml's dequantize_row_mxfp4 makes of those bytes. Then 16 lines of
 * 17 arbitrary bytes (every scale byte but 0xFF reachable) and their values.
 *
 * usage: mxfp4-golden > mxfp4_golden.txt
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "ggml.h"

static uint64_t s_state = 0x243F6A8885A308D3ull;

static uint64_t s_next(void) {
    s_state ^= s_state << 13;
    s_state ^= s_state >> 7;
    s_state ^= s_state << 17;
    return s_state * 0x2545F4914F6CDD1Dull;
}

static float s_uniform(void) { return ((float)(s_next() >> 40) + 0.5f) / 16777216.0f; }

static float s_gauss(void) {
    const float u = s_uniform(), v = s_uniform();
    return sqrtf(-2.f * logf(u)) * cosf(6.2831853f * v);
}

static uint32_t s_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static void s_line(const char *tag, const float *x, const uint8_t *q, const float *y) {
    printf("%s", tag);
    if (x)
        for (int j = 0; j < 32; j++) printf(" %08x", s_bits(x[j]));
    printf(" |");
    for (int j = 0; j < 17; j++) printf(" %02x", q[j]);
    printf(" |");
    for (int j = 0; j < 32; j++) printf(" %08x", s_bits(y[j]));
    printf("\n");
}

int main(void) {
    const struct ggml_type_traits *t = ggml_get_type_traits(GGML_TYPE_MXFP4);
    if (!t || t->blck_size != 32 || t->type_size != 17) return 1;
    static const float grid[8] = {0.f, 0.5f, 1.f, 1.5f, 2.f, 3.f, 4.f, 6.f};
    printf("# MXFP4 golden blocks from llama.cpp (ggml quantize_row_mxfp4_ref / dequantize_row_mxfp4),\n");
    printf("# written by deploy/llamacpp/mxfp4_golden.c. q: inputs (f32 bits) | block bytes | values (f32 bits)\n");
    for (int b = 0; b < 64; b++) {
        float x[32], y[32];
        uint8_t q[17];
        const int shape = b % 8;
        const float scale = ldexpf(1.f, (int)(s_next() % 41) - 20);
        for (int j = 0; j < 32; j++) {
            const float sign = s_next() & 1 ? -1.f : 1.f;
            switch (shape) {
            case 0: x[j] = s_gauss() * scale; break;
            case 1: x[j] = 0.f; break;
            case 2: x[j] = sign * grid[s_next() % 8] * scale; break; // on the grid
            case 3: { // halfway between neighbouring grid points: the ties
                const int k = (int)(s_next() % 7);
                x[j] = sign * 0.5f * (grid[k] + grid[k + 1]) * scale;
                break;
            }
            case 4: x[j] = j == 7 ? -50.f * scale : s_gauss() * scale; break; // one dominant value
            case 5: x[j] = sign * ldexpf(s_uniform(), -130 + (int)(s_next() % 8)); break; // tiny, subnormal
            case 6: x[j] = (float)((int)(s_next() % 25) - 12) * 0.25f * scale; break;
            default: x[j] = s_gauss() * ldexpf(1.f, (int)(s_next() % 16) - 8); break; // mixed magnitudes
            }
        }
        t->from_float_ref(x, q, 32);
        t->to_float(q, y, 32);
        s_line("q", x, q, y);
    }
    for (int b = 0; b < 16; b++) {
        uint8_t q[17];
        float y[32];
        for (int j = 0; j < 17; j++) q[j] = (uint8_t)s_next();
        if (b < 4) q[0] = (uint8_t)b; // the subnormal scales 0, 1 and the first normal ones
        if (b == 4) q[0] = 0xFE;      // the largest number
        if (q[0] == 0xFF) q[0] = 0x7F;
        t->to_float(q, y, 32);
        s_line("d", NULL, q, y);
    }
    return 0;
}
