// Host/device shim of the per-element code of the CUDA kernels: the same source compiles as
// device code (nvcc) and as plain host C++ (g++, for the GPU-free tests in tests/cuda/
// cuda_host_test.cc). On the device the functions below are the CUDA intrinsics; on the host
// they are software equivalents that give the device's bits, NaN included:
//   - arithmetic: IEEE binary32, round to nearest even, never contracted into an FMA (device:
//     __fmul_rn & co; host: plain operators in a translation unit compiled with
//     -ffp-contract=off, and x86-64 has no FMA without -mfma anyway); fma() is the fused one;
//     a NaN result is the GPU's canonical NaN 0x7fffffff (x86 would propagate the payload);
//   - fp16 <-> f32: cvt.f32.f16 (exact; NaN -> 0x7fffffff) and cvt.rn.f16.f32 (round to nearest
//     even, overflow to inf, NaN -> 0x7fff), as cuda_fp16.hpp's host fallbacks emulate them;
//   - bf16 -> f32 is a shift (exact, payload kept); f32 -> bf16 is cvt.rn.bf16.f32 (NaN -> 0x7fff);
//   - __byte_perm, rintf (round half to even), bit casts.
// No denormal flushing anywhere: the kernels are built with -ftz=false (kernels/cuda/cuda.cmake).
#pragma once
#include <cstdint>

#if defined(__CUDACC__)
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#define PIPELM_HD __host__ __device__ __forceinline__
#else
#define PIPELM_HD inline
#endif
#include <cmath>
#include <cstring>

// `#pragma unroll` for the device pass only (g++ -Wall warns about the pragma).
#if defined(__CUDA_ARCH__)
#define PIPELM_UNROLL _Pragma("unroll")
#else
#define PIPELM_UNROLL
#endif

namespace pipelm::kernels::cuda::hd {

PIPELM_HD float as_float(uint32_t u) {
#if defined(__CUDA_ARCH__)
    return __uint_as_float(u);
#else
    float f;
    std::memcpy(&f, &u, 4);
    return f;
#endif
}

PIPELM_HD uint32_t as_bits(float f) {
#if defined(__CUDA_ARCH__)
    return __float_as_uint(f);
#else
    uint32_t u;
    std::memcpy(&u, &f, 4);
    return u;
#endif
}

constexpr uint32_t kCanonicalNan = 0x7fffffffu;  // what GPU arithmetic returns for any NaN result

#if !defined(__CUDA_ARCH__)
// Host only: a NaN result as the GPU writes it.
inline float canonical(float r) { return r != r ? as_float(kCanonicalNan) : r; }
#endif

PIPELM_HD float mul(float a, float b) {
#if defined(__CUDA_ARCH__)
    return __fmul_rn(a, b);
#else
    return canonical(a * b);
#endif
}
PIPELM_HD float add(float a, float b) {
#if defined(__CUDA_ARCH__)
    return __fadd_rn(a, b);
#else
    return canonical(a + b);
#endif
}
PIPELM_HD float sub(float a, float b) {
#if defined(__CUDA_ARCH__)
    return __fsub_rn(a, b);
#else
    return canonical(a - b);
#endif
}
PIPELM_HD float div(float a, float b) {
#if defined(__CUDA_ARCH__)
    return __fdiv_rn(a, b);
#else
    return canonical(a / b);
#endif
}
PIPELM_HD float fma(float a, float b, float c) {  // a * b + c, rounded once
#if defined(__CUDA_ARCH__)
    return __fmaf_rn(a, b, c);
#else
    return canonical(std::fma(a, b, c));
#endif
}
// Nearest integer, ties to even (the CPU's std::nearbyint in the default rounding mode).
PIPELM_HD float rint(float x) {
#if defined(__CUDA_ARCH__)
    return rintf(x);
#else
    return canonical(std::nearbyint(x));
#endif
}

// ---- 16-bit floats ---------------------------------------------------------------------------

// binary16 bits -> binary32, exact (subnormals, ±inf); NaN -> 0x7fffffff.
PIPELM_HD float f16_to_f32(uint16_t h) {
#if defined(__CUDA_ARCH__)
    return __half2float(__ushort_as_half(h));
#else
    const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16, exp = (h >> 10) & 0x1fu, mant = h & 0x3ffu;
    if (exp == 0x1f) return as_float(mant ? kCanonicalNan : sign | 0x7f800000u);
    // The f16 exponent and mantissa fields placed in an f32 give 2^-112 times the value, a
    // subnormal f16 a subnormal f32: one exact multiply by 2^112 rescales both.
    return as_float(sign | as_bits(as_float(exp << 23 | mant << 13) * 0x1p112f));
#endif
}

// binary32 -> binary16 bits, round to nearest even; |f| >= 65520 -> ±inf; NaN -> 0x7fff.
PIPELM_HD uint16_t f32_to_f16(float f) {
#if defined(__CUDA_ARCH__)
    return __half_as_ushort(__float2half_rn(f));
#else
    const uint32_t x = as_bits(f), sign = (x >> 16) & 0x8000u, a = x & 0x7fffffffu;
    if (a > 0x7f800000u) return 0x7fff;
    if (a >= 0x477ff000u) return static_cast<uint16_t>(sign | 0x7c00u);  // inf, or rounds to it
    // Below 2^-14 the f16 grid is 2^-24 everywhere: adding and removing 2^-1 (f32 grid 2^-24
    // there) rounds to it exactly once, ties to even. Above, keep 11 significant bits.
    if (a < 0x38800000u) return static_cast<uint16_t>(sign | (as_bits(as_float(a) + 0.5f) - 0x3f000000u));
    const uint32_t r = a + 0x0fffu + ((a >> 13) & 1u);  // round the 13 dropped bits, ties to even
    return static_cast<uint16_t>(sign | ((r - 0x38000000u) >> 13));
#endif
}

PIPELM_HD float bf16_to_f32(uint16_t h) { return as_float(static_cast<uint32_t>(h) << 16); }

// binary32 -> bfloat16 bits, round to nearest even; NaN -> 0x7fff.
PIPELM_HD uint16_t f32_to_bf16(float f) {
#if defined(__CUDA_ARCH__)
    return __bfloat16_as_ushort(__float2bfloat16_rn(f));
#else
    const uint32_t x = as_bits(f);
    if ((x & 0x7fffffffu) > 0x7f800000u) return 0x7fff;
    return static_cast<uint16_t>((x + 0x7fffu + ((x >> 16) & 1u)) >> 16);
#endif
}

// ---- bytes -----------------------------------------------------------------------------------

// __byte_perm(x, y, s) in its default mode: byte i of the result is byte (s >> 4i) & 7 of the
// eight bytes y:x (x holds bytes 0-3).
PIPELM_HD uint32_t byte_perm(uint32_t x, uint32_t y, uint32_t s) {
#if defined(__CUDA_ARCH__)
    return __byte_perm(x, y, s);
#else
    const uint64_t v = static_cast<uint64_t>(y) << 32 | x;
    uint32_t r = 0;
    for (int i = 0; i < 4; ++i) r |= static_cast<uint32_t>((v >> (8 * ((s >> (4 * i)) & 7u))) & 0xffu) << (8 * i);
    return r;
#endif
}

// Two little-endian 32-bit words (8 bytes of a block).
struct Words2 {
    uint32_t x, y;
};

// Loads from block data; p aligned as each name says (the decoders guarantee it on the device).
PIPELM_HD uint16_t u16_at(const uint8_t* p) {
#if defined(__CUDA_ARCH__)
    return *reinterpret_cast<const uint16_t*>(p);
#else
    uint16_t v;
    std::memcpy(&v, p, 2);
    return v;
#endif
}
PIPELM_HD float f32_at(const uint8_t* p) {  // p 4-byte aligned
#if defined(__CUDA_ARCH__)
    return *reinterpret_cast<const float*>(p);
#else
    float v;
    std::memcpy(&v, p, 4);
    return v;
#endif
}
PIPELM_HD uint32_t u32_at2(const uint8_t* p) {  // p 2-byte aligned
    return static_cast<uint32_t>(u16_at(p)) | static_cast<uint32_t>(u16_at(p + 2)) << 16;
}
PIPELM_HD Words2 u64_at2(const uint8_t* p) { return Words2{u32_at2(p), u32_at2(p + 4)}; }  // 2-byte aligned
PIPELM_HD Words2 u64_at8(const uint8_t* p) {                                                // 8-byte aligned
#if defined(__CUDA_ARCH__)
    const uint2 v = *reinterpret_cast<const uint2*>(p);
    return Words2{v.x, v.y};
#else
    Words2 v;
    std::memcpy(&v.x, p, 4);
    std::memcpy(&v.y, p + 4, 4);
    return v;
#endif
}

// Byte k (0..7) of 8 little-endian bytes held in two words.
PIPELM_HD uint32_t byte_of(const Words2& v, int k) { return ((k < 4 ? v.x : v.y) >> (8 * (k & 3))) & 0xffu; }

}  // namespace pipelm::kernels::cuda::hd
