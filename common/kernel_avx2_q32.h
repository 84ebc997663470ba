/*
 * kernel_avx2_q32: the Q4_0, Q5_0, Q8_0 and MXFP4 dots (and Q4_0's and Q8_0's
 * repacked 8-row products) on prepared Q8_0 activation rows, a template that kernel_avx2.c includes twice: with S_Q32_VNNI 0
 * (byte products by maddubs and madd) and with S_Q32_VNNI 1 (one AVX-VNNI
 * vpdpbusd per block, which also starts from the Q4_0/Q5_0 offset
 * correction, so that costs nothing). S_Q32_FN, S_Q32_INLINE (function
 * attributes with the target) and S_Q32_NAME(x) (the name prefix) come from
 * the includer, as do the helpers it uses. Both give the scalar reference's
 * bits: the integer sums are exact either way, and the float steps are the
 * ones of kernel_avx2.c's 32-value blocks.
 */

// The reference's 8 lane sums of one block: weight bytes u (and signed w for
// Q8_0) against activation bytes y; nc: the block's offset correction.
S_Q32_INLINE __m256i S_Q32_NAME(partial)(mc_dtype_t t, const s_wblock_t *b, __m256i y, const uint8_t *nc) {
#if S_Q32_VNNI
    if (t == MC_DTYPE_Q8_0) return _mm256_dpbusd_avx_epi32(_mm256_setzero_si256(), b->u, _mm256_sign_epi8(y, b->w));
    return _mm256_dpbusd_avx_epi32(s_load(nc), b->u, y);
#else
    const __m256i ones = _mm256_set1_epi16(1);
    if (t == MC_DTYPE_Q8_0) return _mm256_madd_epi16(_mm256_maddubs_epi16(b->u, _mm256_sign_epi8(y, b->w)), ones);
    return _mm256_add_epi32(_mm256_madd_epi16(_mm256_maddubs_epi16(b->u, y), ones), s_load(nc));
#endif
}

// r (1..4) blocks starting at block i, for na prepared activation rows.
S_Q32_INLINE void S_Q32_NAME(group)(mc_dtype_t t, int r, int64_t i, const uint8_t *x, const s_prow_t *a, int na,
                                    const s_layout32_t *l, __m256 *acc) {
    const uint8_t *xg = x + (size_t)i * l->wb;
    s_wblock_t wb[4];
    const __m128 dx = s_wgroup32(t, r, xg, l, wb);
#pragma GCC unroll 4
    for (int c = 0; c < na; c++) {
        float d[4];
        const __m128 dy = r == 4 ? _mm_loadu_ps((const float *)(const void *)(a[c].d + (size_t)i * sizeof(float)))
                                 : s_floats(a[c].d + (size_t)i * sizeof(float), r);
        _mm_storeu_ps(d, _mm_mul_ps(dx, dy));
#pragma GCC unroll 4
        for (int b = 0; b < 4; b++) {
            if (b >= r) continue;
            const size_t blk = (size_t)i + (size_t)b;
            const __m256i y = s_load(a[c].q + blk * sizeof(mc_block_q8_0_t) + offsetof(mc_block_q8_0_t, qs));
            const __m256i p = S_Q32_NAME(partial)(t, &wb[b], y, a[c].nc + blk * 32);
            acc[c] = _mm256_add_ps(acc[c], _mm256_mul_ps(_mm256_cvtepi32_ps(p), _mm256_set1_ps(d[b])));
        }
    }
}

S_Q32_INLINE void S_Q32_NAME(dot32)(mc_dtype_t t, int64_t n, float *s, const uint8_t *x, const void *const *a,
                                    int na) {
    const s_layout32_t l = s_layout32(t);
    const int64_t nb = n / MC_QK;
    s_prow_t p[4];
    __m256 acc[4];
    for (int c = 0; c < 4; c++) acc[c] = _mm256_setzero_ps();
    for (int c = 0; c < na; c++) p[c] = s_prow(t, a[c], n);
    int64_t i = 0;
    for (; i + 4 <= nb; i += 4) S_Q32_NAME(group)(t, 4, i, x, p, na, &l, acc);
    if (i < nb) S_Q32_NAME(group)(t, (int)(nb - i), i, x, p, na, &l, acc);
    for (int c = 0; c < na; c++)
        s[c] = t == MC_DTYPE_Q8_0 && p[c].wide ? s_dot_q8_0_wide(nb, x, p[c].q) : s_fold8(acc[c]);
}

#define S_Q32_DOT(name, type)                                                                            \
    S_Q32_FN void S_Q32_NAME(dot_##name)(int64_t n, float *s, const void *w, const void *a) {              \
        const void *y[1] = {a};                                                                          \
        S_Q32_NAME(dot32)(type, n, s, w, y, 1);                                                          \
    }                                                                                                    \
    S_Q32_FN void S_Q32_NAME(dot4_##name)(int64_t n, float s[4], const void *w, const void *const a[4]) { \
        S_Q32_NAME(dot32)(type, n, s, w, a, 4);                                                          \
    }
S_Q32_DOT(q5_0, MC_DTYPE_Q5_0)
S_Q32_DOT(q8_0, MC_DTYPE_Q8_0)
#undef S_Q32_DOT

// --- Q4_0: whole-block sums (kernel.c's Q4_0 order) --------------------------------
//
// Raw rows: 4 blocks at a time, each block's 8 lane sums reduced to its
// exact block sum (hsum4 gives the 4 blocks' sums in 4 lanes), the offset
// correction added, one cvt and two multiplies for the 4 blocks, then the
// reference's block-after-block adds. Used for rows outside a full group of
// 8 and for matrices that were not repacked; the repacked dot8 below is the
// fast path.

// The block sum of unsigned nibbles u against activation bytes y, in lanes.
S_Q32_INLINE __m256i S_Q32_NAME(usum)(__m256i u, __m256i y) {
#if S_Q32_VNNI
    return _mm256_dpbusd_avx_epi32(_mm256_setzero_si256(), u, y);
#else
    return _mm256_madd_epi16(_mm256_maddubs_epi16(u, y), _mm256_set1_epi16(1));
#endif
}

// Blocks i..i+r of one weight row (u: its unsigned values, dx: its scales)
// against each activation row: the exact integer block sums plus the side
// data, one cvt and two multiplies, then the reference's adds into acc.
// Shared by Q4_0 and MXFP4, which differ only in how u and dx are made.
S_Q32_INLINE void S_Q32_NAME(cols)(const __m256i u[4], __m128 dx, int r, int64_t i, const s_prow_t *p, int na,
                                   float *acc) {
    enum { YB = sizeof(mc_block_q8_0_t) };
#pragma GCC unroll 4
    for (int c = 0; c < na; c++) {
        __m256i ps[4];
#pragma GCC unroll 4
        for (int b = 0; b < 4; b++)
            ps[b] = b < r ? S_Q32_NAME(usum)(u[b], s_load(p[c].q + (size_t)(i + b) * YB + offsetof(mc_block_q8_0_t, qs)))
                          : _mm256_setzero_si256();
        const __m128i is =
            _mm_add_epi32(s_hsum4(ps[0], ps[1], ps[2], ps[3]), s_ints(p[c].nc + (size_t)i * sizeof(int32_t), r));
        const __m128 dy = r == 4 ? _mm_loadu_ps((const float *)(const void *)(p[c].d + (size_t)i * sizeof(float)))
                                 : s_floats(p[c].d + (size_t)i * sizeof(float), r);
        acc[c] = s_accumulate(acc[c], _mm_mul_ps(_mm_cvtepi32_ps(is), _mm_mul_ps(dx, dy)), r);
    }
}

S_Q32_INLINE void S_Q32_NAME(rows_q4_0)(int64_t n, float *s, const uint8_t *x, const void *const *a, int na) {
    enum { WB = sizeof(mc_block_q4_0_t) };
    const int64_t nb = n / MC_QK;
    s_prow_t p[4];
    float acc[4] = {0.f, 0.f, 0.f, 0.f};
    for (int c = 0; c < na; c++) p[c] = s_prow(MC_DTYPE_Q4_0, a[c], n);
    for (int64_t i = 0; i < nb; i += 4) {
        const int r = nb - i < 4 ? (int)(nb - i) : 4;
        const uint8_t *xg = x + (size_t)i * WB;
        s_prefetch(xg, 4 * WB);
        __m256i u[4];
#pragma GCC unroll 4
        for (int b = 0; b < 4; b++)
            u[b] = b < r ? s_nibbles(S_AT(xg + (size_t)b * WB, mc_block_q4_0_t, qs)) : _mm256_setzero_si256();
        const __m128 dx = s_halves(xg, WB, r);
        S_Q32_NAME(cols)(u, dx, r, i, p, na, acc);
    }
    for (int c = 0; c < na; c++) s[c] = acc[c];
}

S_Q32_FN void S_Q32_NAME(dot_q4_0)(int64_t n, float *s, const void *w, const void *a) {
    const void *y[1] = {a};
    S_Q32_NAME(rows_q4_0)(n, s, w, y, 1);
}

S_Q32_FN void S_Q32_NAME(dot4_q4_0)(int64_t n, float s[4], const void *w, const void *const a[4]) {
    S_Q32_NAME(rows_q4_0)(n, s, w, a, 4);
}

// --- MXFP4: Q4_0's whole-block order with a table and power-of-two scales ----------
//
// The same steps as rows_q4_0: each nibble looks up its E2M1 value doubled,
// plus 12 (pshufb on a 16-entry table: unsigned 0..24, which maddubs and
// vpdpbusd take), the prepared side data holds -12 times the activation's
// block sums, so lane sums plus it are the reference's exact isum; the
// scales 2^(e - 128) as f32 times the activation's, then kernel.c's adds.
S_Q32_INLINE void S_Q32_NAME(rows_mxfp4)(int64_t n, float *s, const uint8_t *x, const void *const *a, int na) {
    enum { WB = sizeof(mc_block_mxfp4_t) };
    const int64_t nb = n / MC_QK;
    s_prow_t p[4];
    float acc[4] = {0.f, 0.f, 0.f, 0.f};
    for (int c = 0; c < na; c++) p[c] = s_prow(MC_DTYPE_MXFP4, a[c], n);
    const __m256i table = _mm256_broadcastsi128_si256(s_load128(s_mxfp4_u));
    for (int64_t i = 0; i < nb; i += 4) {
        const int r = nb - i < 4 ? (int)(nb - i) : 4;
        const uint8_t *xg = x + (size_t)i * WB;
        s_prefetch(xg, 4 * WB);
        __m256i u[4];
        float e[4] = {0.f, 0.f, 0.f, 0.f};
#pragma GCC unroll 4
        for (int b = 0; b < 4; b++)
            if (b < r) {
                u[b] = _mm256_shuffle_epi8(table, s_nibbles(S_AT(xg + (size_t)b * WB, mc_block_mxfp4_t, qs)));
                e[b] = mc_e8m0_to_fp32_half(xg[(size_t)b * WB + offsetof(mc_block_mxfp4_t, e)]);
            } else {
                u[b] = _mm256_setzero_si256();
            }
        const __m128 dx = _mm_loadu_ps(e);
        S_Q32_NAME(cols)(u, dx, r, i, p, na, acc);
    }
    for (int c = 0; c < na; c++) s[c] = acc[c];
}

S_Q32_FN void S_Q32_NAME(dot_mxfp4)(int64_t n, float *s, const void *w, const void *a) {
    const void *y[1] = {a};
    S_Q32_NAME(rows_mxfp4)(n, s, w, y, 1);
}

S_Q32_FN void S_Q32_NAME(dot4_mxfp4)(int64_t n, float s[4], const void *w, const void *const a[4]) {
    S_Q32_NAME(rows_mxfp4)(n, s, w, a, 4);
}

// Repacked groups of 8 rows (kernel.h): per block, 4 loads give the 8 rows'
// 128 quant bytes as 4 registers of 4 bytes per row; their low nibbles meet
// activation bytes 4k..4k+3 broadcast to every lane, the high ones bytes
// 16+4k..16+4k+3. Lane r then sums row r's block exactly: 8 vpdpbusd from
// the offset correction (AVX-VNNI), or 8 maddubs added in int16 (|sum| <=
// 8 * 2 * 15 * 128 = 30720, exact) and one madd. Then per activation row one
// cvt, the 8 rows' scales times the activation's, one multiply, one add:
// kernel.c's steps in 8 lanes. The unpacked weights serve up to 4
// activation rows (the prompt tile: 8 rows x na tokens).
//
// Raw rows (row_bytes != 0) give the same registers by a transpose: block
// i's 16 quant bytes of rows r and r + 4 side by side, then 32-bit and
// 64-bit unpacks put dword k of rows 0..7 in one register (dwords of rows
// 0-3 in the low half, 4-7 in the high one, as the repacked record holds
// them); the 8 scales are gathered as 16-bit values.
S_Q32_INLINE void S_Q32_NAME(raw8)(const uint8_t *x, size_t rb, int64_t i, __m256i v[4], __m128i *d) {
    enum { WB = sizeof(mc_block_q4_0_t) };
    const uint8_t *b = x + (size_t)i * WB;
    __m256i y[4];
#pragma GCC unroll 4
    for (int r = 0; r < 4; r++)
        y[r] = _mm256_inserti128_si256(_mm256_castsi128_si256(s_load128(b + (size_t)r * rb + 2)),
                                       s_load128(b + (size_t)(r + 4) * rb + 2), 1);
    const __m256i t01l = _mm256_unpacklo_epi32(y[0], y[1]), t01h = _mm256_unpackhi_epi32(y[0], y[1]);
    const __m256i t23l = _mm256_unpacklo_epi32(y[2], y[3]), t23h = _mm256_unpackhi_epi32(y[2], y[3]);
    v[0] = _mm256_unpacklo_epi64(t01l, t23l);
    v[1] = _mm256_unpackhi_epi64(t01l, t23l);
    v[2] = _mm256_unpacklo_epi64(t01h, t23h);
    v[3] = _mm256_unpackhi_epi64(t01h, t23h);
    uint16_t h[8];
    for (int r = 0; r < 8; r++) memcpy(&h[r], b + (size_t)r * rb, sizeof h[r]);
    *d = _mm_loadu_si128((const __m128i *)(const void *)h);
}

S_Q32_INLINE void S_Q32_NAME(tile_q4_0)(int64_t n, float *s, size_t stride, const uint8_t *x, size_t rb,
                                        const void *const *a, int na) {
    enum { YB = sizeof(mc_block_q8_0_t), YQ = offsetof(mc_block_q8_0_t, qs) };
    const int64_t nb = n / MC_QK;
    s_prow_t p[4];
    __m256 acc[4];
    for (int c = 0; c < na; c++) {
        p[c] = s_prow(MC_DTYPE_Q4_0, a[c], n);
        acc[c] = _mm256_setzero_ps();
    }
    const __m256i m4 = _mm256_set1_epi8(0x0F);
    for (int64_t i = 0; i < nb; i++) {
        __m256i v[4];
        __m128i dh;
        if (rb) {
            S_Q32_NAME(raw8)(x, rb, i, v, &dh);
        } else {
            const uint8_t *xr = x + (size_t)i * MC_Q4_0X8_BYTES;
            s_prefetch(xr, MC_Q4_0X8_BYTES);
            dh = s_load128(xr);
#pragma GCC unroll 4
            for (int k = 0; k < 4; k++) v[k] = s_load(xr + 16 + 32 * k);
        }
        const __m256 dw = _mm256_cvtph_ps(dh);
        __m256i lo[4], hi[4];
#pragma GCC unroll 4
        for (int k = 0; k < 4; k++) {
            lo[k] = _mm256_and_si256(v[k], m4);
            hi[k] = _mm256_and_si256(_mm256_srli_epi16(v[k], 4), m4);
        }
#pragma GCC unroll 4
        for (int c = 0; c < na; c++) {
            // Broadcasts straight from the activation row (one load each).
            const uint8_t *yq = p[c].q + (size_t)i * YB + YQ;
            const __m256i nc = s_bcast32(p[c].nc + (size_t)i * sizeof(int32_t));
#if S_Q32_VNNI
            // Two chains (low and high nibbles): vpdpbusd's latency is
            // several times its issue interval.
            __m256i il = nc, ih = _mm256_setzero_si256();
#pragma GCC unroll 4
            for (int k = 0; k < 4; k++) {
                il = _mm256_dpbusd_avx_epi32(il, lo[k], s_bcast32(yq + 4 * k));
                ih = _mm256_dpbusd_avx_epi32(ih, hi[k], s_bcast32(yq + 16 + 4 * k));
            }
            const __m256i is = _mm256_add_epi32(il, ih);
#else
            __m256i s16 = _mm256_setzero_si256();
#pragma GCC unroll 4
            for (int k = 0; k < 4; k++) {
                s16 = _mm256_add_epi16(s16, _mm256_maddubs_epi16(lo[k], s_bcast32(yq + 4 * k)));
                s16 = _mm256_add_epi16(s16, _mm256_maddubs_epi16(hi[k], s_bcast32(yq + 16 + 4 * k)));
            }
            const __m256i is = _mm256_add_epi32(_mm256_madd_epi16(s16, _mm256_set1_epi16(1)), nc);
#endif
            const __m256 d = _mm256_mul_ps(dw, _mm256_castsi256_ps(s_bcast32(p[c].d + (size_t)i * sizeof(float))));
            acc[c] = _mm256_add_ps(acc[c], _mm256_mul_ps(_mm256_cvtepi32_ps(is), d));
        }
    }
    for (int c = 0; c < na; c++) _mm256_storeu_ps(s + (size_t)c * stride, acc[c]);
}

// The tile for each row count, so every loop over activation rows unrolls.
S_Q32_FN void S_Q32_NAME(dot8_q4_0)(int64_t n, float *s, size_t stride, const void *w8, size_t rb,
                                    const void *const *a, int na) {
    switch (na) {
    case 1: S_Q32_NAME(tile_q4_0)(n, s, stride, w8, rb, a, 1); break;
    case 2: S_Q32_NAME(tile_q4_0)(n, s, stride, w8, rb, a, 2); break;
    case 3: S_Q32_NAME(tile_q4_0)(n, s, stride, w8, rb, a, 3); break;
    default: S_Q32_NAME(tile_q4_0)(n, s, stride, w8, rb, a, 4); break;
    }
}

// --- Q8_0: the repacked 8-row product (kernel.c's 8-lane order) ---------------------
//
// Register l of a record (kernel.h) holds bytes 4l..4l+3 of the 8 rows:
// against activation bytes 4l..4l+3 broadcast, lane r gets row r's lane sum
// p[l]. Eight accumulators, one per reference lane l, hold the 8 rows in
// their vector lanes: acc[l] + (float)p[l] * d, block after block, then
// kernel.c's fold across the eight, lane-wise. AVX-VNNI multiplies w + 128
// (w xor 0x80) by y from the prepared -128 * (lane sum of y): exact for
// every byte. AVX2 multiplies |w| by y carrying w's sign, exact unless y
// holds -128 (such rows take s_dot8_q8_0_exact). One activation row at a
// time: the group (8 rows) stays in cache for the next.
S_Q32_INLINE void S_Q32_NAME(tile_q8_0)(int64_t n, float *s, const uint8_t *x, const void *a) {
    enum { YB = sizeof(mc_block_q8_0_t), YQ = offsetof(mc_block_q8_0_t, qs) };
    const int64_t nb = n / MC_QK;
    const s_prow_t p = s_prow(MC_DTYPE_Q8_0, a, n);
#if !S_Q32_VNNI
    if (p.wide) {
        s_dot8_q8_0_exact(n, s, x, a);
        return;
    }
#endif
    __m256 acc[8];
#pragma GCC unroll 8
    for (int l = 0; l < 8; l++) acc[l] = _mm256_setzero_ps();
    for (int64_t i = 0; i < nb; i++) {
        const uint8_t *xr = x + (size_t)i * MC_Q8_0X8_BYTES, *yq = p.q + (size_t)i * YB + YQ;
        s_prefetch(xr, MC_Q8_0X8_BYTES);
        const __m256 d =
            _mm256_mul_ps(_mm256_cvtph_ps(s_load128(xr)), _mm256_castsi256_ps(s_bcast32(p.d + (size_t)i * sizeof(float))));
#pragma GCC unroll 8
        for (int l = 0; l < 8; l++) {
            const __m256i w = s_load(xr + 16 + 32 * l);
#if S_Q32_VNNI
            const __m256i pl = _mm256_dpbusd_avx_epi32(s_bcast32(p.nc + (size_t)i * 32 + 4 * (size_t)l),
                                                       _mm256_xor_si256(w, _mm256_set1_epi8((char)0x80)),
                                                       s_bcast32(yq + 4 * l));
#else
            const __m256i pl = _mm256_madd_epi16(
                _mm256_maddubs_epi16(_mm256_sign_epi8(w, w), _mm256_sign_epi8(s_bcast32(yq + 4 * l), w)),
                _mm256_set1_epi16(1));
#endif
            acc[l] = _mm256_add_ps(acc[l], _mm256_mul_ps(_mm256_cvtepi32_ps(pl), d));
        }
    }
    const __m256 x0 = _mm256_add_ps(acc[0], acc[4]), x1 = _mm256_add_ps(acc[1], acc[5]);
    const __m256 x2 = _mm256_add_ps(acc[2], acc[6]), x3 = _mm256_add_ps(acc[3], acc[7]);
    _mm256_storeu_ps(s, _mm256_add_ps(_mm256_add_ps(x0, x2), _mm256_add_ps(x1, x3)));
}

S_Q32_FN void S_Q32_NAME(dot8_q8_0)(int64_t n, float *s, size_t stride, const void *w8, size_t rb,
                                    const void *const *a, int na) {
    if (rb) { // raw rows: one row at a time against the na tokens, the same bits
        for (int r = 0; r < 8; r++) {
            float t[4];
            const uint8_t *x = (const uint8_t *)w8 + (size_t)r * rb;
            if (na == 4) // whole tiles: the 4-row body, as dot4
                S_Q32_NAME(dot32)(MC_DTYPE_Q8_0, n, t, x, a, 4);
            else
                for (int c = 0; c < na; c++) S_Q32_NAME(dot32)(MC_DTYPE_Q8_0, n, &t[c], x, &a[c], 1);
            for (int c = 0; c < na; c++) s[(size_t)c * stride + (size_t)r] = t[c];
        }
        return;
    }
    for (int c = 0; c < na; c++) S_Q32_NAME(tile_q8_0)(n, s + (size_t)c * stride, w8, a[c]);
}
