// Record decoders of the VNNI kQ8 kernels (matmul_q8_vnni_impl.h): each packed record (matmul_q8.h)
// -> the factors of its 8 sub-blocks and 8 vectors of unsigned codes c = v + B (sub-block j in
// dword lane j), plus the -B Σ q starts of the accumulators. Included only by
// matmul_q8_vnni_impl.h, after its helpers (vn_load, static_for, ...), inside the including
// file's target region; internal linkage throughout.
#pragma once

namespace pipelm::kernels::detail {
namespace {

// ------------------------------------------------------------------ record decoders
// How S_b is formed from the accumulated X (see above).
enum class Mul { kOne, kLane, kSplit };

// Factors of one record, lane j = sub-block j: f (and mn for types with a min), the integer
// multipliers as floats, mlo (kLane, kSplit) and mhi (kSplit).
struct RG {
    __m256 f, mn;
    __m256 mlo, mhi;
};

alignas(16) constexpr uint8_t kIQ4Lut128[16] = {1, 24, 45, 63, 79, 93, 106, 118, 129, 141, 153, 166, 181, 197, 217, 241};

PIPELM_AI __m256 vn_fp16x8(const uint8_t* p) { return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))); }
PIPELM_AI RG rg_d(const uint8_t* rec) { return {vn_fp16x8(rec), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()}; }
PIPELM_AI RG rg_dm(const uint8_t* rec) { return {vn_fp16x8(rec), vn_fp16x8(rec + 16), _mm256_setzero_ps(), _mm256_setzero_ps()}; }
// Q4_K / Q5_K header: f = d, mn_j = -(dmin * m_j) (exact, as kquant_group), multipliers sc_j.
PIPELM_AI RG rg_kquant(const uint8_t* rec) {
    __m128i sc, m;
    kquant_sc_m(rec, sc, m);
    const __m256 ndmin = _mm256_xor_ps(bcast_fp16(rec + 2), _mm256_set1_ps(-0.0f));
    return {bcast_fp16(rec), _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(m)), ndmin),
            _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(sc)), _mm256_setzero_ps()};
}
PIPELM_AI void vn_lut128(__m256i* v) {
    const __m256i lut = _mm256_broadcastsi128_si256(_mm_load_si128(reinterpret_cast<const __m128i*>(kIQ4Lut128)));
    for (int k = 0; k < 8; ++k) v[k] = _mm256_shuffle_epi8(lut, v[k]);
}

// Interface: REC (record bytes), BIAS (power of 2 or 0), MIN, MUL; RG prep(rec); codes(rec, v[8]).
struct VQ8_0 {
    static constexpr int REC = 272, BIAS = 128;
    static constexpr bool MIN = false;
    static constexpr Mul MUL = Mul::kOne;
    static PIPELM_AI RG prep(const uint8_t* rec) { return rg_d(rec); }
    static PIPELM_AI void codes(const uint8_t* rec, __m256i* v) {
        for (int k = 0; k < 8; ++k) v[k] = _mm256_xor_si256(load256(rec + 16 + 32 * k), _mm256_set1_epi8(-128));
    }
};
struct VQ4_0 {
    static constexpr int REC = 144, BIAS = 8;
    static constexpr bool MIN = false;
    static constexpr Mul MUL = Mul::kOne;
    static PIPELM_AI RG prep(const uint8_t* rec) { return rg_d(rec); }
    static PIPELM_AI void codes(const uint8_t* rec, __m256i* v) { nibble_vectors(rec + 16, v); }
};
struct VQ4_1 {
    static constexpr int REC = 160, BIAS = 0;
    static constexpr bool MIN = true;
    static constexpr Mul MUL = Mul::kOne;
    static PIPELM_AI RG prep(const uint8_t* rec) { return rg_dm(rec); }
    static PIPELM_AI void codes(const uint8_t* rec, __m256i* v) { nibble_vectors(rec + 32, v); }
};
struct VQ5_0 {
    static constexpr int REC = 176, BIAS = 16;
    static constexpr bool MIN = false;
    static constexpr Mul MUL = Mul::kOne;
    static PIPELM_AI RG prep(const uint8_t* rec) { return rg_d(rec); }
    static PIPELM_AI void codes(const uint8_t* rec, __m256i* v) {
        nibble_vectors(rec + 48, v);
        add_bit4(rec + 16, v);
    }
};
struct VQ5_1 {
    static constexpr int REC = 192, BIAS = 0;
    static constexpr bool MIN = true;
    static constexpr Mul MUL = Mul::kOne;
    static PIPELM_AI RG prep(const uint8_t* rec) { return rg_dm(rec); }
    static PIPELM_AI void codes(const uint8_t* rec, __m256i* v) {
        nibble_vectors(rec + 64, v);
        add_bit4(rec + 32, v);
    }
};
struct VIQ4_NL {
    static constexpr int REC = 144, BIAS = 128;
    static constexpr bool MIN = false;
    static constexpr Mul MUL = Mul::kOne;
    static PIPELM_AI RG prep(const uint8_t* rec) { return rg_d(rec); }
    static PIPELM_AI void codes(const uint8_t* rec, __m256i* v) {
        nibble_vectors(rec + 16, v);
        vn_lut128(v);
    }
};
struct VQ4_K {
    static constexpr int REC = 144, BIAS = 0;
    static constexpr bool MIN = true;
    static constexpr Mul MUL = Mul::kLane;
    static PIPELM_AI RG prep(const uint8_t* rec) { return rg_kquant(rec); }
    static PIPELM_AI void codes(const uint8_t* rec, __m256i* v) { nibble_vectors(rec + 16, v); }
};
struct VQ5_K {
    static constexpr int REC = 176, BIAS = 0;
    static constexpr bool MIN = true;
    static constexpr Mul MUL = Mul::kLane;
    static PIPELM_AI RG prep(const uint8_t* rec) { return rg_kquant(rec); }
    static PIPELM_AI void codes(const uint8_t* rec, __m256i* v) {
        nibble_vectors(rec + 48, v);
        add_bit4(rec + 16, v);
    }
};
struct VQ6_K {
    static constexpr int REC = 210, BIAS = 32;
    static constexpr bool MIN = false;
    static constexpr Mul MUL = Mul::kSplit;
    static PIPELM_AI RG prep(const uint8_t* rec) {
        return {bcast_fp16(rec), _mm256_setzero_ps(),
                _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(rec + 2)))),
                _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(rec + 10))))};
    }
    static PIPELM_AI void codes(const uint8_t* rec, __m256i* v) {
        q6k_codes(rec, v);
    }
};
struct VIQ4_XS {
    static constexpr int REC = 136, BIAS = 128;
    static constexpr bool MIN = false;
    static constexpr Mul MUL = Mul::kLane;
    static PIPELM_AI RG prep(const uint8_t* rec) {
        return {bcast_fp16(rec), _mm256_setzero_ps(), _mm256_cvtepi32_ps(iq4xs_scales(rec)), _mm256_setzero_ps()};
    }
    static PIPELM_AI void codes(const uint8_t* rec, __m256i* v) {
        nibble_vectors(rec + 8, v);
        vn_lut128(v);
    }
};

// -B Σ q of token t's group g (8 int32 lanes) for the whole block (half = 0) or for elements
// 0..15 (half = 1) / 16..31 (half = 2) of each block, from the int16 half sums of ActQ8::hs.
template <int BIAS>
PIPELM_AI __m256i vn_bias(const ActQ8& a, int64_t t, int64_t g, int half) {
    if constexpr (BIAS == 0) {
        return _mm256_setzero_si256();
    } else {
        constexpr int sh = __builtin_ctz(BIAS);
        const __m256i hs = load256(a.hs + t * a.ldd + 8 * g);
        __m256i sum;
        if (half == 0)
            sum = _mm256_madd_epi16(hs, _mm256_set1_epi16(1));
        else if (half == 1)
            sum = _mm256_srai_epi32(_mm256_slli_epi32(hs, 16), 16);
        else
            sum = _mm256_srai_epi32(hs, 16);
        return _mm256_sub_epi32(_mm256_setzero_si256(), _mm256_slli_epi32(sum, sh));
    }
}

}  // namespace
}  // namespace pipelm::kernels::detail
