// ActQuant::kQ8: scalar reference (activation quantization and the row-block kernel). Plain
// code that spells out the contract of kernels/matmul.h; the AVX2 kernels (matmul_q8_avx2.cc)
// give the same bits. Compiled with -ffp-contract=off: every float operation below is rounded
// exactly as written.
#include <algorithm>
#include <cmath>
#include <cstring>

#include "kernels/cpu/matmul_internal.h"
#include "kernels/cpu/matmul_q8.h"
#include "kernels/cpu/quant_blocks.h"
#include "runtime/base/error.h"

namespace pipelm::kernels::detail {
namespace {

using namespace blocks;

// One 32-value weight block in the integer form of the contract: w[i] = f * m[i] * v[i] + mn.
struct Sub {
    int v[32];
    int m[32];
    float f = 0.f;
    float mn = 0.f;  // min term coefficient (types with a min only)
};

int nib(const uint8_t* qs, int i) { return i < 16 ? (qs[i] & 0x0F) : (qs[i - 16] >> 4); }

// Sub-block j (0 for 32-value block types, 0..7 for 256-value ones) of block b.
void decode_sub(GgmlType type, const uint8_t* b, int j, Sub& s) {
    for (int i = 0; i < 32; ++i) s.m[i] = 1;
    s.mn = 0.f;
    switch (type) {
        case GgmlType::kQ8_0:
            s.f = load_fp16(b);
            for (int i = 0; i < 32; ++i) s.v[i] = static_cast<int8_t>(b[2 + i]);
            return;
        case GgmlType::kQ4_0:
            s.f = load_fp16(b);
            for (int i = 0; i < 32; ++i) s.v[i] = nib(b + 2, i) - 8;
            return;
        case GgmlType::kQ4_1:
            s.f = load_fp16(b);
            s.mn = load_fp16(b + 2);
            for (int i = 0; i < 32; ++i) s.v[i] = nib(b + 4, i);
            return;
        case GgmlType::kQ5_0:
        case GgmlType::kQ5_1: {
            const bool one = type == GgmlType::kQ5_1;
            s.f = load_fp16(b);
            if (one) s.mn = load_fp16(b + 2);
            uint32_t qh;
            std::memcpy(&qh, b + (one ? 4 : 2), 4);
            for (int i = 0; i < 32; ++i) s.v[i] = (nib(b + (one ? 8 : 6), i) | ((qh >> i) & 1) << 4) - (one ? 0 : 16);
            return;
        }
        case GgmlType::kIQ4_NL:
            s.f = load_fp16(b);
            for (int i = 0; i < 32; ++i) s.v[i] = kIQ4NL[nib(b + 2, i)];
            return;
        case GgmlType::kQ4_K:
        case GgmlType::kQ5_K: {
            const bool five = type == GgmlType::kQ5_K;
            uint8_t sc, mm;
            scale_min_k4(j, b + 4, &sc, &mm);
            s.f = load_fp16(b);
            s.mn = -(load_fp16(b + 2) * static_cast<float>(mm));  // exact product
            const uint8_t* qs = b + (five ? 48 : 16) + 32 * (j / 2);
            for (int i = 0; i < 32; ++i) {
                int q = (j % 2 == 0) ? (qs[i] & 0x0F) : (qs[i] >> 4);
                if (five) q |= ((b[16 + i] >> j) & 1) << 4;
                s.v[i] = q;
                s.m[i] = sc;
            }
            return;
        }
        case GgmlType::kQ6_K: {
            const int h = j / 4, g = j % 4;
            s.f = load_fp16(b + 208);
            for (int i = 0; i < 32; ++i) {
                const uint8_t ql = b[64 * h + 32 * (g & 1) + i];
                const int lo = g < 2 ? (ql & 0x0F) : (ql >> 4);
                const int hi = (b[128 + 32 * h + i] >> (2 * g)) & 3;
                s.v[i] = (lo | hi << 4) - 32;
                s.m[i] = static_cast<int8_t>(b[192 + 2 * j + i / 16]);
            }
            return;
        }
        case GgmlType::kIQ4_XS: {
            const int sh = b[2] | b[3] << 8;
            const int ls = ((b[4 + j / 2] >> (4 * (j % 2))) & 0x0F) | (((sh >> (2 * j)) & 3) << 4);
            s.f = load_fp16(b);
            for (int i = 0; i < 32; ++i) {
                s.v[i] = kIQ4NL[nib(b + 8 + 16 * j, i)];
                s.m[i] = ls - 32;
            }
            return;
        }
        default: break;
    }
}

bool has_min(GgmlType t) {
    return t == GgmlType::kQ4_1 || t == GgmlType::kQ5_1 || t == GgmlType::kQ4_K || t == GgmlType::kQ5_K;
}

}  // namespace

bool q8_type_supported(GgmlType t) {
    switch (t) {
        case GgmlType::kQ8_0:
        case GgmlType::kQ4_0:
        case GgmlType::kQ4_1:
        case GgmlType::kQ5_0:
        case GgmlType::kQ5_1:
        case GgmlType::kIQ4_NL:
        case GgmlType::kQ4_K:
        case GgmlType::kQ5_K:
        case GgmlType::kQ6_K:
        case GgmlType::kIQ4_XS: return true;
        default: return false;
    }
}

// int16 pair (lo, hi) of ActQ8::hs.
static int32_t half_pair(int lo, int hi) {
    return static_cast<int32_t>((static_cast<uint32_t>(hi) << 16) | (static_cast<uint32_t>(lo) & 0xFFFFu));
}

void quantize_act_q8_scalar(const float* x, int64_t K, int64_t ldd, int8_t* q, float* d, float* s, int32_t* hs) {
    const int64_t nb = K / 32;
    for (int64_t b = 0; b < nb; ++b) {
        const float* xb = x + 32 * b;
        float amax = 0.f;
        for (int i = 0; i < 32; ++i) {
            const float a = std::fabs(xb[i]);
            amax = amax > a ? amax : a;
        }
        const float db = amax / 127.f;
        int half[2] = {0, 0};
        for (int i = 0; i < 32; ++i) {
            int v = 0;
            if (db != 0.f) {
                float r = std::nearbyint(xb[i] / db);  // round half to even (default rounding mode)
                r = std::min(127.f, std::max(-127.f, r));
                v = static_cast<int>(r);
            }
            q[32 * b + i] = static_cast<int8_t>(v);
            half[i / 16] += v;
        }
        d[b] = db;
        s[b] = db * static_cast<float>(half[0] + half[1]);
        hs[b] = half_pair(half[0], half[1]);
    }
    for (int64_t b = nb; b < ldd; ++b) {
        d[b] = s[b] = 0.f;
        hs[b] = 0;
    }
}

// Every type with an integer kernel has a packed record form.
bool packable_type(GgmlType t) { return q8_type_supported(t); }

namespace {

// Byte offsets of a packed record (matmul_q8.h): factors, high bits (5- and 6-bit types), then
// the low nibble pairs P_0..P_3 (or Q8_0's 8 vectors of int8 values).
struct RecordLayout {
    int bytes = 0;
    int hi = -1;  // H (5-bit: 32 bytes; Q6_K: H_0, H_1, 64 bytes)
    int lo = 0;   // P_0..P_3 (128 bytes) or Q8_0's values (256 bytes)
};

RecordLayout record_layout(GgmlType t) {
    switch (t) {
        case GgmlType::kQ8_0: return {272, -1, 16};
        case GgmlType::kQ4_0:
        case GgmlType::kIQ4_NL: return {144, -1, 16};
        case GgmlType::kQ4_1: return {160, -1, 32};
        case GgmlType::kQ5_0: return {176, 16, 48};
        case GgmlType::kQ5_1: return {192, 32, 64};
        case GgmlType::kQ4_K: return {144, -1, 16};
        case GgmlType::kQ5_K: return {176, 16, 48};
        case GgmlType::kQ6_K: return {210, 18, 82};
        case GgmlType::kIQ4_XS: return {136, -1, 8};
        default: PIPELM_THROW(ErrorCode::kUnsupported, "packed weights: ", ggml_type_name(t), " is not packable");
    }
}

// The stored (unsigned) codes of the 32 values of sub-block j of block b: the nibble index for
// IQ4_*, the biased value for Q4_0 / Q5_0 / Q6_K (v + 8, v + 16, v + 32), the int8 byte for Q8_0.
inline __attribute__((always_inline)) void raw_codes(GgmlType type, const uint8_t* b, int j, uint8_t c[32]) {
    auto qh_bit = [&](int off, int i) {
        uint32_t qh;
        std::memcpy(&qh, b + off, 4);
        return static_cast<int>((qh >> i) & 1);
    };
    for (int i = 0; i < 32; ++i) {
        int v = 0;
        switch (type) {
            case GgmlType::kQ8_0: v = b[2 + i]; break;
            case GgmlType::kQ4_0:
            case GgmlType::kIQ4_NL: v = nib(b + 2, i); break;
            case GgmlType::kQ4_1: v = nib(b + 4, i); break;
            case GgmlType::kQ5_0: v = nib(b + 6, i) | qh_bit(2, i) << 4; break;
            case GgmlType::kQ5_1: v = nib(b + 8, i) | qh_bit(4, i) << 4; break;
            case GgmlType::kQ4_K:
            case GgmlType::kQ5_K: {
                const bool five = type == GgmlType::kQ5_K;
                const uint8_t q = b[(five ? 48 : 16) + 32 * (j / 2) + i];
                v = j % 2 == 0 ? (q & 0x0F) : (q >> 4);
                if (five) v |= ((b[16 + i] >> j) & 1) << 4;
                break;
            }
            case GgmlType::kQ6_K: {
                const int h = j / 4, g = j % 4;
                const uint8_t ql = b[64 * h + 32 * (g & 1) + i];
                v = (g < 2 ? (ql & 0x0F) : (ql >> 4)) | ((b[128 + 32 * h + i] >> (2 * g)) & 3) << 4;
                break;
            }
            case GgmlType::kIQ4_XS: v = nib(b + 8 + 16 * j, i); break;
            default: break;
        }
        c[i] = static_cast<uint8_t>(v);
    }
}

// The factor header of one record: per-block fp16 fields of the 32-value types in lanes, the
// 256-value types' block header (Q6_K: d, then its 16 int8 scales split into the multipliers
// of elements 0..15 and 16..31 of each sub-block).
inline __attribute__((always_inline)) void pack_header(GgmlType type, const uint8_t* blk, int j, uint8_t* rec) {
    switch (type) {
        case GgmlType::kQ4_1:
        case GgmlType::kQ5_1:
            std::memcpy(rec + 16 + 2 * j, blk + 2, 2);  // m
            [[fallthrough]];
        case GgmlType::kQ8_0:
        case GgmlType::kQ4_0:
        case GgmlType::kQ5_0:
        case GgmlType::kIQ4_NL: std::memcpy(rec + 2 * j, blk, 2); return;  // d
        case GgmlType::kQ4_K:
        case GgmlType::kQ5_K:
            if (j == 0) std::memcpy(rec, blk, 16);  // d, dmin, 12 scale bytes
            return;
        case GgmlType::kIQ4_XS:
            if (j == 0) std::memcpy(rec, blk, 8);  // d, scales_h, scales_l
            return;
        case GgmlType::kQ6_K:
            if (j == 0) std::memcpy(rec, blk + 208, 2);
            rec[2 + j] = blk[192 + 2 * j];
            rec[10 + j] = blk[193 + 2 * j];
            return;
        default: return;
    }
}

}  // namespace

int64_t packed_record_bytes(GgmlType t) { return record_layout(t).bytes; }

PackedWeight packed_layout(GgmlType type, int64_t rows, int64_t cols) {
    PackedWeight p;
    p.type = type;
    p.rows = rows;
    p.nb = cols / 32;
    p.ng = (p.nb + 7) / 8;
    p.rec_bytes = static_cast<size_t>(packed_record_bytes(type));
    p.row_bytes = p.rec_bytes * static_cast<size_t>(p.ng);
    p.bytes = p.row_bytes * static_cast<size_t>(rows);
    return p;
}

namespace {

// pack_rows for one type (a constant: the per-value switches of raw_codes fold away).
template <GgmlType kType>
void pack_rows_t(const WeightView& w, const PackedWeight& layout, uint8_t* out, int64_t r0, int64_t r1) {
    const RecordLayout L = record_layout(kType);
    const auto& ti = ggml_type_info(kType);
    const int per = static_cast<int>(ti.block / 32);  // sub-blocks per GGUF block
    const uint8_t* base = static_cast<const uint8_t*>(w.data);
    uint8_t c[32];
    for (int64_t r = r0; r < r1; ++r) {
        const uint8_t* src = base + r * w.row_bytes;
        uint8_t* dst = out + static_cast<size_t>(r) * layout.row_bytes;
        std::memset(dst, 0, layout.row_bytes);
        for (int64_t b = 0; b < layout.nb; ++b) {  // sub-block b = lane j of group b / 8
            const uint8_t* blk = src + (b / per) * ti.block_bytes;
            const int j = static_cast<int>(b % 8);
            uint8_t* rec = dst + layout.rec_bytes * (b / 8);
            pack_header(kType, blk, j, rec);  // (for 256-value blocks, j is the sub-block too)
            raw_codes(kType, blk, j, c);
            for (int e = 0; e < 4; ++e) {  // byte e of lane j: values 4k + e
                uint8_t* lane = rec + 4 * j + e;
                if (kType == GgmlType::kQ8_0) {
                    for (int k = 0; k < 8; ++k) lane[L.lo + 32 * k] = c[4 * k + e];
                    continue;
                }
                for (int k = 0; k < 4; ++k)
                    lane[L.lo + 32 * k] = static_cast<uint8_t>((c[4 * k + e] & 15) | (c[16 + 4 * k + e] & 15) << 4);
                if (kType == GgmlType::kQ6_K) {  // H_a: bits 2i, 2i+1 = bits 4, 5 of value 4(4a + i) + e
                    for (int a = 0; a < 2; ++a) {
                        int h = 0;
                        for (int i = 0; i < 4; ++i) h |= ((c[4 * (4 * a + i) + e] >> 4) & 3) << (2 * i);
                        lane[L.hi + 32 * a] = static_cast<uint8_t>(h);
                    }
                } else if (L.hi >= 0) {  // H: bit k = bit 4 of value 4k + e
                    int h = 0;
                    for (int k = 0; k < 8; ++k) h |= ((c[4 * k + e] >> 4) & 1) << k;
                    lane[L.hi] = static_cast<uint8_t>(h);
                }
            }
        }
    }
}

}  // namespace

void pack_rows(const WeightView& w, const PackedWeight& layout, uint8_t* out, int64_t r0, int64_t r1) {
    switch (layout.type) {
        case GgmlType::kQ8_0: return pack_rows_t<GgmlType::kQ8_0>(w, layout, out, r0, r1);
        case GgmlType::kQ4_0: return pack_rows_t<GgmlType::kQ4_0>(w, layout, out, r0, r1);
        case GgmlType::kQ4_1: return pack_rows_t<GgmlType::kQ4_1>(w, layout, out, r0, r1);
        case GgmlType::kQ5_0: return pack_rows_t<GgmlType::kQ5_0>(w, layout, out, r0, r1);
        case GgmlType::kQ5_1: return pack_rows_t<GgmlType::kQ5_1>(w, layout, out, r0, r1);
        case GgmlType::kIQ4_NL: return pack_rows_t<GgmlType::kIQ4_NL>(w, layout, out, r0, r1);
        case GgmlType::kQ4_K: return pack_rows_t<GgmlType::kQ4_K>(w, layout, out, r0, r1);
        case GgmlType::kQ5_K: return pack_rows_t<GgmlType::kQ5_K>(w, layout, out, r0, r1);
        case GgmlType::kQ6_K: return pack_rows_t<GgmlType::kQ6_K>(w, layout, out, r0, r1);
        case GgmlType::kIQ4_XS: return pack_rows_t<GgmlType::kIQ4_XS>(w, layout, out, r0, r1);
        default: PIPELM_THROW(ErrorCode::kUnsupported, "pack_rows: ", ggml_type_name(layout.type), " is not packable");
    }
}

void interleave_act_q8(const int8_t* q, int64_t K, int64_t ldd, int8_t* qi) {
    std::memset(qi, 0, static_cast<size_t>(ldd) * 32);
    for (int64_t b = 0; b < K / 32; ++b)
        for (int k = 0; k < 8; ++k) std::memcpy(qi + 256 * (b / 8) + 32 * k + 4 * (b % 8), q + 32 * b + 4 * k, 4);
}

void matmul_q8_block_scalar(const WeightView& w, int64_t r0, int64_t r1, const ActQ8& a, float* y, int64_t ldy,
                            int64_t n) {
    const auto& ti = ggml_type_info(w.type);
    const int per = static_cast<int>(ti.block / 32);  // 32-value sub-blocks per block
    const int64_t nb = a.nb, ngroups = (nb + 7) / 8;
    const bool mins = has_min(w.type);
    const uint8_t* base = static_cast<const uint8_t*>(w.data);
    Sub sub;
    for (int64_t r = r0; r < r1; ++r) {
        const uint8_t* row = base + r * w.row_bytes;
        for (int64_t t = 0; t < n; ++t) {
            const int8_t* qx = a.qi + t * a.ldq;
            const float* dx = a.d + t * a.ldd;
            const float* sx = a.s + t * a.ldd;
            float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
            for (int64_t g = 0; g < ngroups; ++g) {
                for (int j = 0; j < 8; ++j) {  // lane j = block 8g + j (missing blocks: all zero)
                    const int64_t b = 8 * g + j;
                    int32_t S = 0;
                    float f = 0.f, mn = 0.f;
                    if (b < nb) {
                        decode_sub(w.type, row + (b / per) * ti.block_bytes, static_cast<int>(b % per), sub);
                        f = sub.f;
                        mn = sub.mn;
                        for (int i = 0; i < 32; ++i)
                            S += sub.m[i] * sub.v[i] * qx[256 * g + 32 * (i / 4) + 4 * j + i % 4];
                    }
                    if (mins) acc[j] = std::fma(mn, sx[b], acc[j]);  // sx, dx are zero-padded to a.ldd
                    acc[j] = std::fma(static_cast<float>(S), f * dx[b], acc[j]);
                }
            }
            y[t * ldy + r] = reduce8(acc);
        }
    }
}

}  // namespace pipelm::kernels::detail
