// ActQuant::kQ8 on AVX2 + AVX-VNNI (VEX vpdpbusd on ymm; CPUs with AVX-VNNI but no AVX-512:
// Alder Lake and later client cores, Sierra Forest). The kernels are matmul_q8_vnni_impl.h with
// one row per ymm in the GEMM, compiled here through a target pragma; matmul_cpu.cc calls in
// only when CPUID reports AVX-VNNI.
#include <immintrin.h>

#include <cstdint>
#include <cstring>
#include <utility>

#include "kernels/cpu/matmul_internal.h"
#include "kernels/cpu/matmul_q8.h"
#include "runtime/base/error.h"

#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,fma,f16c,avxvnni"))), apply_to = function)
#elif defined(__GNUC__)
#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c,avxvnni")
#endif

#include "kernels/cpu/decode_avx2.h"

#define PIPELM_VNNI_DP256(acc, u, s) _mm256_dpbusd_avx_epi32(acc, u, s)
#define PIPELM_VNNI_WIDE 0
#define PIPELM_VNNI_ENTRY matmul_q8_packed_avxvnni
#include "kernels/cpu/matmul_q8_vnni_impl.h"

#if defined(__clang__)
#pragma clang attribute pop
#elif defined(__GNUC__)
#pragma GCC pop_options
#endif
