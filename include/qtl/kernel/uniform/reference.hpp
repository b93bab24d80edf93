// qtl/kernel/uniform/reference.hpp — scalar reference GEMV / GEMM straight from packed uniform codes.
//
//   y[r] = sum_c W(r, c) * x[c],   W(r, c) = s_p * (code(r, c) - z_p)
// decoded on the fly, one weight at a time, accumulated in double. These are the oracles that
// every SIMD kernel is tested against: simple and obviously right, not fast. Plain data only
// (no Eigen); they validate nothing and never throw — see qtl/kernel/uniform/matmul.hpp for the
// checked entry points.
#pragma once

#include <cstddef>
#include <cstdint>

#include "qtl/detail/fp16.hpp"
#include "qtl/format/blocks.hpp"

namespace qtl::kernel {

/// The dequantized weight W(r, c) of a packed uniform matrix.
[[nodiscard]] inline float uniform_weight(const PackedUniformView& w, std::ptrdiff_t r,
                                          std::ptrdiff_t c) noexcept {
  const std::uint8_t* block = w.codes + r * w.row_bytes +
                              (c / kCodesPerBlock) * static_cast<std::ptrdiff_t>(code_block_bytes(w.bits));
  const int code = code_in_block(w.bits, block, static_cast<int>(c % kCodesPerBlock));
  const std::ptrdiff_t p = w.groups_per_row == 0 ? 0 : r * w.groups_per_row + c / w.group_size;
  const float scale = detail::half_to_float(w.scales[p]);
  const int zero = w.zeros ? w.zeros[p] : w.symmetric_zero;
  return scale * static_cast<float>(code - zero);
}

/// y[0..rows) = W x, x has cols entries.
inline void gemv_uniform_reference(const PackedUniformView& w, const float* x, float* y) noexcept {
  for (std::ptrdiff_t r = 0; r < w.rows; ++r) {
    double acc = 0.0;
    for (std::ptrdiff_t c = 0; c < w.cols; ++c) {
      acc += static_cast<double>(uniform_weight(w, r, c)) * static_cast<double>(x[c]);
    }
    y[r] = static_cast<float>(acc);
  }
}

/// Y = X W^T: X is [m x cols] with row stride ldx, Y is [m x rows] with row stride ldy
/// (one token per row, as activations are stored).
inline void gemm_uniform_reference(const PackedUniformView& w, const float* x, std::ptrdiff_t ldx,
                                   std::ptrdiff_t m, float* y, std::ptrdiff_t ldy) noexcept {
  for (std::ptrdiff_t t = 0; t < m; ++t) gemv_uniform_reference(w, x + t * ldx, y + t * ldy);
}

}  // namespace qtl::kernel
