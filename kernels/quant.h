// GGUF/ggml block formats: dequantization (bit-exact with ggml's dequantize_row_*) and
// pipelm's own round-to-nearest quantizers (used by `pipelm mkmodel`).
#pragma once
#include <cstdint>

#include "runtime/base/ggml_types.h"

namespace pipelm::kernels {

// dst[0..n) = the values stored in src. n must be a multiple of the type's block size.
// Supported: f32, f16, bf16, q4_0, q4_1, q5_0, q5_1, q8_0, iq4_nl, q4_K, q5_K, q6_K, iq4_xs.
void dequantize_row(GgmlType type, const void* src, float* dst, int64_t n);

// Writes n values (multiple of the block size) of src to dst in `type`
// (ggml_row_bytes(type, n) bytes). Round-to-nearest quantizers, not llama.cpp's search.
void quantize_row(GgmlType type, const float* src, void* dst, int64_t n);

// True for the types listed above (the ones dequantize_row, quantize_row and matmul accept).
bool quant_type_supported(GgmlType type);

// Throws pipelm::Error (kUnsupported / kInvalidArgument) unless `type` is supported and n is a
// non-negative multiple of its block size.
void check_row_length(GgmlType type, int64_t n);

}  // namespace pipelm::kernels
