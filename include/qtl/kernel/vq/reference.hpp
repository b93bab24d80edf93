// qtl/kernel/vq/reference.hpp — scalar reference GEMV over packed vector-quantized matrices.
//
//   y[r] = sum_j sum_{d : j*D + d < cols} c_{s(r)}[index(r, j)][d] * x[j*D + d]
// accumulated in double. Two plain-data oracles for the vector-codebook lookup kernels:
//   gemv_vq_codebook_reference  KMeansVQ<D, B>: c = the set's fp16 codebook (kernel family 4)
//   gemv_e8p_reference          E8P: c = scale * codeword(index), the codeword decoded from
//                               E8P::abs_grid() and the index bits (qtl/quant/e8p.hpp)
// and a checked, quantizer-generic entry point gemv_vq_reference(packed, quantizer, x).
#pragma once

#include <bit>
#include <cstddef>
#include <cstdint>

#include "qtl/core/types.hpp"
#include "qtl/core/validate.hpp"
#include "qtl/detail/fp16.hpp"
#include "qtl/format/vq_packed.hpp"
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
