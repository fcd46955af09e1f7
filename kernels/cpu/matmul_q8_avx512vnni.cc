// ActQuant::kQ8 on AVX-512-VNNI (with F, DQ, BW, VL): vpdpbusd on zmm for the prefill GEMM
// (two rows per register) and on ymm (EVEX form) for decode. The kernels are
// matmul_q8_vnni_impl.h, compiled here for this instruction set through a target pragma (not
// -march for the whole build); matmul_cpu.cc calls in only when CPUID reports it.
#include <immintrin.h>

#include <cstdint>
#include <cstring>
#include <type_traits>
#include <utility>

#include "kernels/cpu/matmul_internal.h"
#include "kernels/cpu/matmul_q8.h"
#include "runtime/base/error.h"

#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,fma,f16c,avx512f,avx512dq,avx512bw,avx512vl,avx512vnni"))), \
                             apply_to = function)
#elif defined(__GNUC__)
#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c,avx512f,avx512dq,avx512bw,avx512vl,avx512vnni")
// GCC 12's AVX-512 intrinsics start from _mm512_undefined_*(), which -W(maybe-)uninitialized
// reports at every inlined use (GCC bug 105593, fixed in GCC 13).
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif

#include "kernels/cpu/decode_avx2.h"

#define PIPELM_VNNI_DP256(acc, u, s) _mm256_dpbusd_epi32(acc, u, s)
#define PIPELM_VNNI_WIDE 1
#define PIPELM_VNNI_ENTRY matmul_q8_packed_avx512vnni
#include "kernels/cpu/matmul_q8_vnni_impl.h"

#if defined(__clang__)
#pragma clang attribute pop
#elif defined(__GNUC__)
#pragma GCC diagnostic pop
#pragma GCC pop_options
#endif
