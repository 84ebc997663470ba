/*
 * kernel_impl: how per-ISA kernel files register with kernel.c.
 *
 * Each file (kernel_avx2.c, kernel_neon.c) is compiled on every target and
 * returns its table only where its instructions exist (compiled in with
 * function target attributes, so the rest of the program stays baseline);
 * elsewhere it returns NULL. kernel.c checks the CPU at run time before
 * handing out a table, and falls back to scalar for types a table lacks.
 */
#ifndef MC_KERNEL_IMPL_H
#define MC_KERNEL_IMPL_H

#include <stddef.h>

#include "kernel.h"

// Table of the AVX2+FMA+F16C kernels, or NULL when not built for x86-64.
const mc_kernel_t *mc_kernel_table_avx2(size_t *count);
// The same with the Q4_0, Q5_0 and Q8_0 dots on AVX-VNNI.
const mc_kernel_t *mc_kernel_table_avx_vnni(size_t *count);

// NEON tables (aarch64 only, else NULL): baseline, and with sdot/udot.
const mc_kernel_t *mc_kernel_table_neon(size_t *count);
const mc_kernel_t *mc_kernel_table_neon_dotprod(size_t *count);

// The attention loops of AVX2 and of NEON ({NULL, NULL} where not built).
mc_attn_fns_t mc_kernel_attn_avx2(void);
mc_attn_fns_t mc_kernel_attn_neon(void);

#endif
