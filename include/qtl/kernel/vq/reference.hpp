// qtl/kernel/vq/reference.hpp — scalar reference GEMV over packed vector-quantized matrices.
//
//   y[r] = sum_j sum_{d : j*D + d < cols} c_{s(r)}[index(r, j)][d] * x[j*D + d]
// accumulated in double. Two plain-data oracles for the vector-codebook lookup kernels:
//   gemv_vq_codebook_reference  KMeansVQ<D, B>: c = the set's fp16 codebook (kernel family 4)
//   gemv_e8p_reference          E8P: c = scale * codeword(index), the codeword decoded from
//                               E8P::abs_grid() and the index bits (qtl/quant/e8p.hpp)
//   gemv_e8p_int8_reference     E8P with int8 activations: x quantized per block of 32 columns
//                               by quantize_block_int8 (the uniform kernels' Int8 mode), then
//                               y[r] = s / 4 * sum_b d_b sum_{k in b} q_rk a_k, q = 4 c exact
// and a checked, quantizer-generic entry point gemv_vq_reference(packed, quantizer, x).
#pragma once

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "qtl/core/types.hpp"
#include "qtl/core/validate.hpp"
#include "qtl/detail/fp16.hpp"
#include "qtl/format/vq_packed.hpp"
#include "qtl/kernel/uniform/quantize_activations.hpp"
#include "qtl/quant/e8p.hpp"

namespace qtl::kernel {

/// KMeansVQ: params are codebooks of 2^bits x dim fp16 values per set.
inline void gemv_vq_codebook_reference(const PackedVQView& w, const float* x, float* y) noexcept {
  for (std::ptrdiff_t r = 0; r < w.rows; ++r) {
    const std::uint16_t* cb = w.params + (r / w.rows_per_set) * w.words_per_set;
    const std::uint8_t* row = w.indices + r * w.row_bytes;
    double acc = 0.0;
    for (std::ptrdiff_t j = 0; j < w.vectors_per_row; ++j) {
      const std::uint32_t idx = read_packed_index(row, j, w.bits);
      for (int d = 0; d < w.dim && j * w.dim + d < w.cols; ++d) {
        acc += static_cast<double>(detail::half_to_float(cb[idx * static_cast<std::uint32_t>(w.dim) + static_cast<std::uint32_t>(d)])) *
               x[j * w.dim + d];
      }
    }
    y[r] = static_cast<float>(acc);
  }
}

/// E8P: one fp16 scale per set; abs_grid = E8P::abs_grid().data(), parity = E8P::abs_parity().data().
inline void gemv_e8p_reference(const PackedVQView& w, const float* abs_grid, const std::uint8_t* parity,
                               const float* x, float* y) noexcept {
  for (std::ptrdiff_t r = 0; r < w.rows; ++r) {
    const float scale = detail::half_to_float(w.params[(r / w.rows_per_set) * w.words_per_set]);
    const std::uint8_t* row = w.indices + r * w.row_bytes;
    double acc = 0.0;
    for (std::ptrdiff_t j = 0; j < w.vectors_per_row; ++j) {
      const std::uint32_t idx = read_packed_index(row, j, 16);
      const std::uint32_t a = idx & 0xFFu, signs = (idx >> 8) & 0x7Fu;
      const float shift = (idx >> 15) & 1u ? 0.25f : -0.25f;
      const bool neg0 = ((std::popcount(signs) + parity[a]) & 1) != 0;
      for (int d = 0; d < 8 && j * 8 + d < w.cols; ++d) {
        const bool neg = d == 0 ? neg0 : ((signs >> (d - 1)) & 1u) != 0;
        const float v = abs_grid[a * 8 + static_cast<std::uint32_t>(d)];
        acc += static_cast<double>(scale * ((neg ? -v : v) + shift)) * x[j * 8 + d];
      }
    }
    y[r] = static_cast<float>(acc);
  }
}

/// E8P with int8 activations (VQKernelMatrix's Int8 mode), in double from the exact integers.
/// `bound` (optional, rows entries) receives s / 4 * sum_b d_b sum_k (|q_rk| + 22) |a_k|: the
/// magnitude the kernels' fp32 rounding is measured against (the offset form of
/// vq_tiles_e8p_int8_scalar adds 11 |a_k| twice at most).
inline void gemv_e8p_int8_reference(const PackedVQView& w, const float* abs_grid, const std::uint8_t* parity,
                                    const float* x, float* y, double* bound = nullptr) {
  const std::ptrdiff_t nb = (w.vectors_per_row * 8 + 31) / 32;
  std::vector<float> xp(static_cast<std::size_t>(nb * 32), 0.0f), d(static_cast<std::size_t>(nb));
  std::vector<std::int8_t> a(static_cast<std::size_t>(nb * 32));
  for (std::ptrdiff_t c = 0; c < w.cols; ++c) xp[static_cast<std::size_t>(c)] = x[c];
  for (std::ptrdiff_t b = 0; b < nb; ++b) quantize_block_int8(xp.data() + 32 * b, a.data() + 32 * b, d.data() + b);
  for (std::ptrdiff_t r = 0; r < w.rows; ++r) {
    const double scale = detail::half_to_float(w.params[(r / w.rows_per_set) * w.words_per_set]);
    const std::uint8_t* row = w.indices + r * w.row_bytes;
    double acc = 0.0, mag = 0.0;
    for (std::ptrdiff_t b = 0; b < nb; ++b) {
      std::int64_t dot = 0, abs_dot = 0;
      for (std::ptrdiff_t j = 4 * b; j < std::min(4 * b + 4, w.vectors_per_row); ++j) {
        const std::uint32_t idx = read_packed_index(row, j, 16);
        const std::uint32_t g = idx & 0xFFu, signs = (idx >> 8) & 0x7Fu;
        const bool neg0 = ((std::popcount(signs) + parity[g]) & 1) != 0;
        for (int k = 0; k < 8; ++k) {
          const bool neg = k == 0 ? neg0 : ((signs >> (k - 1)) & 1u) != 0;
          const auto m = static_cast<std::int64_t>(4.0f * abs_grid[g * 8 + static_cast<std::uint32_t>(k)]);
          const std::int64_t q = (neg ? -m : m) + ((idx >> 15) & 1u ? 1 : -1);
          const std::int64_t ak = a[static_cast<std::size_t>(j * 8 + k)];
          dot += q * ak;
          abs_dot += (std::abs(q) + 22) * std::abs(ak);
        }
      }
      acc += static_cast<double>(d[static_cast<std::size_t>(b)]) * static_cast<double>(dot);
      mag += static_cast<double>(d[static_cast<std::size_t>(b)]) * static_cast<double>(abs_dot);
    }
    y[r] = static_cast<float>(scale / 4.0 * acc);
    if (bound != nullptr) bound[r] = std::abs(scale) / 4.0 * mag;
  }
}

}  // namespace qtl::kernel

namespace qtl {

/// Checked y = W_hat x for any vector quantizer, decoding through v.decode.
template <VectorQuantizer V>
[[nodiscard]] VectorXf gemv_vq_reference(const VQPackedMatrix& w, const V& v, VectorRef x) {
  constexpr std::string_view kWhere = "gemv_vq_reference";
  if (x.size() != w.cols()) fail(kWhere, ": x has ", x.size(), " entries but the matrix has ", w.cols(), " columns");
  require_finite(kWhere, "x", x);
  if (w.layout().dim != V::kDim || w.bits() != V::kBits || w.param_words_per_set() != V::kParamWords) {
    fail(kWhere, ": the packed matrix was not made by ", v.name());
  }
  const VQLayout& L = w.layout();
  VectorXf y(L.rows);
  float buf[V::kDim];
  for (Index s = 0; s < L.num_sets(); ++s) {
    const auto p = v.deserialize(w.param_words().data() + static_cast<std::size_t>(s) * V::kParamWords);
    for (Index r = s * L.rows_per_set; r < std::min(L.rows, (s + 1) * L.rows_per_set); ++r) {
      double acc = 0.0;
      for (Index j = 0; j < L.vectors_per_row(); ++j) {
        v.decode(p, w.index(r, j), buf);
        for (int d = 0; d < V::kDim && j * V::kDim + d < L.cols; ++d) acc += static_cast<double>(buf[d]) * x[j * V::kDim + d];
      }
      y[r] = static_cast<float>(acc);
    }
  }
  return y;
}

}  // namespace qtl
