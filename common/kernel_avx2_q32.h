/*
 * kernel_avx2_q32: the Q4_0, Q5_0 and Q8_0 dots on prepared Q8_0 activation
 * rows, a template that kernel_avx2.c includes twice: with S_Q32_VNNI 0
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
S_Q32_DOT(q4_0, MC_DTYPE_Q4_0)
S_Q32_DOT(q5_0, MC_DTYPE_Q5_0)
S_Q32_DOT(q8_0, MC_DTYPE_Q8_0)
#undef S_Q32_DOT
