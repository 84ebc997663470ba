/*
 * kernel_avx2_k8: Q4_K's, Q5_K's and Q6_K's repacked 8-row products (kernel.h layouts), a
 * template that kernel_avx2.c includes twice like kernel_avx2_q32.h: with
 * S_K8_VNNI 0 (maddubs, then madd by the sub-block scales) and 1 (AVX-VNNI
 * vpdpbusd, then a 32-bit multiply by the scales). S_K8_FN, S_K8_INLINE and
 * S_K8_NAME(x) come from the includer.
 *
 * Register (c, k) holds bytes 32c + 4k .. + 3 of the 8 rows' quants: its low
 * nibbles meet activation bytes 64c + 4k.. broadcast, its high ones 64c +
 * 32 + 4k..; lane r then sums row r's sub-blocks 2c and 2c + 1 exactly
 * (Q5_K: the fifth bits from its qh registers or'ed in as 0x10 first). The
 * scales times those sums, the mins times the activation's bsums (madd: the
 * same integers as kernel.c's), then kernel.c's float steps in 8 lanes:
 * (d * yd) * isum - (dmin * yd) * summs added to the running sum.
 */

S_K8_INLINE void S_K8_NAME(tile_k4)(int64_t n, float *s, size_t stride, const uint8_t *x, const void *const *a,
                                    int na, bool five) {
    enum { YB = sizeof(mc_block_q8_k_t), YQ = offsetof(mc_block_q8_k_t, qs), YS = offsetof(mc_block_q8_k_t, bsums) };
    const int64_t nb = n / MC_QK_K;
    __m256 acc[4];
    for (int c = 0; c < na; c++) acc[c] = _mm256_setzero_ps();
    const __m256i m4 = _mm256_set1_epi8(0x0F), m3 = _mm256_set1_epi8(3);
    for (int64_t i = 0; i < nb; i++) {
        const size_t rec = five ? MC_Q5_KX8_BYTES : MC_Q4_KX8_BYTES;
        const uint8_t *xr = x + (size_t)i * rec;
        s_prefetch(xr, rec);
        // The 6-bit scales and mins, index 8j + r (kernel.h), as bytes.
        const __m256i lo0 = s_load(xr + 32), lo1 = s_load(xr + 64), hb = s_load(xr + 96);
        uint8_t scb[64], mnb[64];
        _mm256_storeu_si256((__m256i *)(void *)scb,
                            _mm256_or_si256(_mm256_and_si256(lo0, m4), _mm256_slli_epi16(_mm256_and_si256(hb, m3), 4)));
        _mm256_storeu_si256((__m256i *)(void *)(scb + 32),
                            _mm256_or_si256(_mm256_and_si256(lo1, m4),
                                            _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hb, 4), m3), 4)));
        _mm256_storeu_si256((__m256i *)(void *)mnb,
                            _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(lo0, 4), m4),
                                            _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hb, 2), m3), 4)));
        _mm256_storeu_si256((__m256i *)(void *)(mnb + 32),
                            _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(lo1, 4), m4),
                                            _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hb, 6), m3), 4)));
        // Per sub-block j, row r's scale (and min) in lane r: 32-bit for
        // VNNI's multiply, else in both 16-bit halves for madd.
        __m256i sc[8], mn[8];
#pragma GCC unroll 8
        for (int j = 0; j < 8; j++) {
            const __m256i sv = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(const void *)(scb + 8 * j)));
            const __m256i mv = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(const void *)(mnb + 8 * j)));
#if S_K8_VNNI
            sc[j] = sv;
#else
            sc[j] = _mm256_or_si256(sv, _mm256_slli_epi32(sv, 16));
#endif
            mn[j] = _mm256_or_si256(mv, _mm256_slli_epi32(mv, 16));
        }
        const __m256 dw = _mm256_cvtph_ps(s_load128(xr)), dmw = _mm256_cvtph_ps(s_load128(xr + 16));
        __m256i isum[4], summs[4];
        for (int c = 0; c < na; c++) isum[c] = summs[c] = _mm256_setzero_si256();
#pragma GCC unroll 4
        for (int cc = 0; cc < 4; cc++) {
            __m256i ql[8], qh[8];
#pragma GCC unroll 8
            for (int k = 0; k < 8; k++) {
                const __m256i v = s_load(xr + 128 + 32 * (8 * cc + k));
                ql[k] = _mm256_and_si256(v, m4);
                qh[k] = _mm256_and_si256(_mm256_srli_epi16(v, 4), m4);
                if (five) { // bits 2cc, 2cc + 1 of the qh register as 0x10
                    const __m256i hb = _mm256_srli_epi16(s_load(xr + MC_Q4_KX8_BYTES + 32 * k), 2 * cc);
                    const __m256i one = _mm256_set1_epi8(1);
                    ql[k] = _mm256_or_si256(ql[k], _mm256_slli_epi16(_mm256_and_si256(hb, one), 4));
                    qh[k] = _mm256_or_si256(qh[k], _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hb, 1), one), 4));
                }
            }
#pragma GCC unroll 4
            for (int c = 0; c < na; c++) {
                const uint8_t *yq = (const uint8_t *)a[c] + (size_t)i * YB + YQ + 64 * cc;
#if S_K8_VNNI
                __m256i lo = _mm256_setzero_si256(), hi = _mm256_setzero_si256();
#pragma GCC unroll 8
                for (int k = 0; k < 8; k++) {
                    lo = _mm256_dpbusd_avx_epi32(lo, ql[k], s_bcast32(yq + 4 * k));
                    hi = _mm256_dpbusd_avx_epi32(hi, qh[k], s_bcast32(yq + 32 + 4 * k));
                }
                isum[c] = _mm256_add_epi32(isum[c], _mm256_add_epi32(_mm256_mullo_epi32(lo, sc[2 * cc]),
                                                                     _mm256_mullo_epi32(hi, sc[2 * cc + 1])));
#else
                // int16 pair sums: |8 * 2 * 15 * 128| = 30720, exact; with
                // Q5_K's 5-bit quants 4 at a time, |4 * 2 * 31 * 128| = 31744.
                const int per = five ? 4 : 8;
#pragma GCC unroll 2
                for (int k0 = 0; k0 < 8; k0 += per) {
                    __m256i lo = _mm256_setzero_si256(), hi = _mm256_setzero_si256();
#pragma GCC unroll 8
                    for (int k = k0; k < k0 + per; k++) {
                        lo = _mm256_add_epi16(lo, _mm256_maddubs_epi16(ql[k], s_bcast32(yq + 4 * k)));
                        hi = _mm256_add_epi16(hi, _mm256_maddubs_epi16(qh[k], s_bcast32(yq + 32 + 4 * k)));
                    }
                    isum[c] = _mm256_add_epi32(isum[c], _mm256_add_epi32(_mm256_madd_epi16(lo, sc[2 * cc]),
                                                                         _mm256_madd_epi16(hi, sc[2 * cc + 1])));
                }
#endif
            }
        }
#pragma GCC unroll 4
        for (int c = 0; c < na; c++) {
            const uint8_t *yk = (const uint8_t *)a[c] + (size_t)i * YB;
            // min j times bsums 2j and 2j + 1 (one 32-bit broadcast): exact.
#pragma GCC unroll 8
            for (int j = 0; j < 8; j++)
                summs[c] = _mm256_add_epi32(summs[c], _mm256_madd_epi16(mn[j], s_bcast32(yk + YS + 4 * j)));
            const __m256 yd = _mm256_castsi256_ps(s_bcast32(yk + offsetof(mc_block_q8_k_t, d)));
            const __m256 t = _mm256_mul_ps(_mm256_mul_ps(dw, yd), _mm256_cvtepi32_ps(isum[c]));
            const __m256 u = _mm256_mul_ps(_mm256_mul_ps(dmw, yd), _mm256_cvtepi32_ps(summs[c]));
            acc[c] = _mm256_add_ps(acc[c], _mm256_sub_ps(t, u));
        }
    }
    for (int c = 0; c < na; c++) _mm256_storeu_ps(s + (size_t)c * stride, acc[c]);
}

S_K8_INLINE void S_K8_NAME(dot8_k4)(int64_t n, float *s, size_t stride, const void *w8, size_t rb,
                                    const void *const *a, int na, bool five) {
    if (rb) { // raw rows: one row at a time against the na tokens, the same bits
        const uint8_t *y[4] = {a[0], na > 1 ? a[1] : a[0], na > 2 ? a[2] : a[0], na > 3 ? a[3] : a[0]};
        for (int r = 0; r < 8; r++) {
            float t[4];
            s_dotk(five ? MC_DTYPE_Q5_K : MC_DTYPE_Q4_K, n, t, (const uint8_t *)w8 + (size_t)r * rb, y, na);
            for (int c = 0; c < na; c++) s[(size_t)c * stride + (size_t)r] = t[c];
        }
        return;
    }
    switch (na) {
    case 1: S_K8_NAME(tile_k4)(n, s, stride, w8, a, 1, five); break;
    case 2: S_K8_NAME(tile_k4)(n, s, stride, w8, a, 2, five); break;
    case 3: S_K8_NAME(tile_k4)(n, s, stride, w8, a, 3, five); break;
    default: S_K8_NAME(tile_k4)(n, s, stride, w8, a, 4, five); break;
    }
}

S_K8_FN void S_K8_NAME(dot8_q4_k)(int64_t n, float *s, size_t stride, const void *w8, size_t rb, const void *const *a,
                                  int na) {
    S_K8_NAME(dot8_k4)(n, s, stride, w8, rb, a, na, false);
}

S_K8_FN void S_K8_NAME(dot8_q5_k)(int64_t n, float *s, size_t stride, const void *w8, size_t rb, const void *const *a,
                                  int na) {
    S_K8_NAME(dot8_k4)(n, s, stride, w8, rb, a, na, true);
}

// Q6_K's repacked product. Per half h, quarter q and k (0..7), the 8 rows'
// 6-bit quants of values 32q + 4k .. + 3: ql register k (q = 0, 2) or k + 8
// (q = 1, 3), low (q < 2) or high nibbles, with bits 2q, 2q + 1 of qh
// register k on top; against the activation's bytes 128h + 32q + 4k..
// broadcast. Group G = 8h + 2q + g sums k = 4g .. 4g + 3 (AVX2: two int16
// pair sums of 2 maddubs each, |4 * 63 * 128| = 32256, then madd by the
// scale; AVX-VNNI: vpdpbusd, then a 32-bit multiply). isum = that sum minus
// 32 * sum over G of scale * bsums[G] (madd of scale pairs with bsums
// pairs): kernel.c's integer. Then its float steps in 8 lanes.
S_K8_INLINE __m256i S_K8_NAME(q6v)(const uint8_t *xr, int h, int q, int k) {
    const __m256i m4 = _mm256_set1_epi8(0x0F), m3 = _mm256_set1_epi8(3);
    const __m256i l = s_load(xr + 144 + 32 * (16 * h + k + 8 * (q % 2)));
    const __m256i hb = s_load(xr + 1168 + 32 * (8 * h + k));
    const __m256i lo = q < 2 ? _mm256_and_si256(l, m4) : _mm256_and_si256(_mm256_srli_epi16(l, 4), m4);
    const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(hb, 2 * q), m3);
    return _mm256_or_si256(lo, _mm256_slli_epi16(hi, 4));
}

S_K8_INLINE void S_K8_NAME(tile_q6_k)(int64_t n, float *s, size_t stride, const uint8_t *x, const void *const *a,
                                      int na) {
    enum { YB = sizeof(mc_block_q8_k_t), YQ = offsetof(mc_block_q8_k_t, qs), YS = offsetof(mc_block_q8_k_t, bsums) };
    const int64_t nb = n / MC_QK_K;
    __m256 acc[4];
    for (int c = 0; c < na; c++) acc[c] = _mm256_setzero_ps();
    for (int64_t i = 0; i < nb; i++) {
        const uint8_t *xr = x + (size_t)i * MC_Q6_KX8_BYTES;
        s_prefetch(xr, MC_Q6_KX8_BYTES);
        // Scale G of row r in lane r (signed): 32-bit for VNNI, else in
        // both 16-bit halves; pairs (2p, 2p + 1) for the bsums term.
        __m256i sc[16], sp[8];
#pragma GCC unroll 16
        for (int g = 0; g < 16; g++) {
            const __m256i v = _mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(const void *)(xr + 16 + 8 * g)));
            const __m256i lo16 = _mm256_and_si256(v, _mm256_set1_epi32(0xFFFF));
#if S_K8_VNNI
            sc[g] = v;
#else
            sc[g] = _mm256_or_si256(lo16, _mm256_slli_epi32(v, 16));
#endif
            if (g % 2 == 0) sp[g / 2] = lo16;
            else sp[g / 2] = _mm256_or_si256(sp[g / 2], _mm256_slli_epi32(v, 16));
        }
        const __m256 dw = _mm256_cvtph_ps(s_load128(xr));
        __m256i isum[4];
        for (int c = 0; c < na; c++) isum[c] = _mm256_setzero_si256();
#pragma GCC unroll 2
        for (int h = 0; h < 2; h++)
#pragma GCC unroll 4
            for (int q = 0; q < 4; q++)
#pragma GCC unroll 2
                for (int g = 0; g < 2; g++) {
                    __m256i v[4];
#pragma GCC unroll 4
                    for (int kk = 0; kk < 4; kk++) v[kk] = S_K8_NAME(q6v)(xr, h, q, 4 * g + kk);
                    const int G = 8 * h + 2 * q + g;
#pragma GCC unroll 4
                    for (int c = 0; c < na; c++) {
                        const uint8_t *yq = (const uint8_t *)a[c] + (size_t)i * YB + YQ + 128 * h + 32 * q + 16 * g;
#if S_K8_VNNI
                        __m256i sg = _mm256_setzero_si256();
#pragma GCC unroll 4
                        for (int kk = 0; kk < 4; kk++) sg = _mm256_dpbusd_avx_epi32(sg, v[kk], s_bcast32(yq + 4 * kk));
                        isum[c] = _mm256_add_epi32(isum[c], _mm256_mullo_epi32(sg, sc[G]));
#else
                        const __m256i p0 = _mm256_add_epi16(_mm256_maddubs_epi16(v[0], s_bcast32(yq)),
                                                            _mm256_maddubs_epi16(v[1], s_bcast32(yq + 4)));
                        const __m256i p1 = _mm256_add_epi16(_mm256_maddubs_epi16(v[2], s_bcast32(yq + 8)),
                                                            _mm256_maddubs_epi16(v[3], s_bcast32(yq + 12)));
                        isum[c] = _mm256_add_epi32(isum[c], _mm256_add_epi32(_mm256_madd_epi16(p0, sc[G]),
                                                                             _mm256_madd_epi16(p1, sc[G])));
#endif
                    }
                }
#pragma GCC unroll 4
        for (int c = 0; c < na; c++) {
            const uint8_t *yk = (const uint8_t *)a[c] + (size_t)i * YB;
            __m256i corr = _mm256_setzero_si256();
#pragma GCC unroll 8
            for (int p = 0; p < 8; p++)
                corr = _mm256_add_epi32(corr, _mm256_madd_epi16(sp[p], s_bcast32(yk + YS + 4 * p)));
            const __m256i is = _mm256_sub_epi32(isum[c], _mm256_slli_epi32(corr, 5));
            const __m256 d = _mm256_mul_ps(dw, _mm256_castsi256_ps(s_bcast32(yk + offsetof(mc_block_q8_k_t, d))));
            acc[c] = _mm256_add_ps(acc[c], _mm256_mul_ps(d, _mm256_cvtepi32_ps(is)));
        }
    }
    for (int c = 0; c < na; c++) _mm256_storeu_ps(s + (size_t)c * stride, acc[c]);
}

S_K8_FN void S_K8_NAME(dot8_q6_k)(int64_t n, float *s, size_t stride, const void *w8, size_t rb, const void *const *a,
                                  int na) {
    if (rb) { // raw rows: one row at a time against the na tokens, the same bits
        const uint8_t *y[4] = {a[0], na > 1 ? a[1] : a[0], na > 2 ? a[2] : a[0], na > 3 ? a[3] : a[0]};
        for (int r = 0; r < 8; r++) {
            float t[4];
            s_dotk(MC_DTYPE_Q6_K, n, t, (const uint8_t *)w8 + (size_t)r * rb, y, na);
            for (int c = 0; c < na; c++) s[(size_t)c * stride + (size_t)r] = t[c];
        }
        return;
    }
    switch (na) {
    case 1: S_K8_NAME(tile_q6_k)(n, s, stride, w8, a, 1); break;
    case 2: S_K8_NAME(tile_q6_k)(n, s, stride, w8, a, 2); break;
    case 3: S_K8_NAME(tile_q6_k)(n, s, stride, w8, a, 3); break;
    default: S_K8_NAME(tile_q6_k)(n, s, stride, w8, a, 4); break;
    }
}
