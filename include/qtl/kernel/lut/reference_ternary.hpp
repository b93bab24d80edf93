// qtl/kernel/lut/reference_ternary.hpp — scalar reference GEMV / GEMM over base-3 packed ternary
// weights (qtl/format/ternary_packed.hpp):
//   y[r] = sum_c s_p * (t(r, c) - 1) * x[c],   accumulated in double.
// The oracle for SIMD ternary kernels. Plain data; validates nothing, never throws.
#pragma once

#include <cstddef>
#include <cstdint>

#include "qtl/core/types.hpp"
#include "qtl/core/validate.hpp"
#include "qtl/detail/fp16.hpp"
#include "qtl/format/ternary_packed.hpp"

namespace qtl::kernel {

[[nodiscard]] inline float ternary_weight(const PackedTernaryView& w, std::ptrdiff_t r, std::ptrdiff_t c) noexcept {
  const int t = trit_in_byte(w.codes[r * w.row_bytes + c / kTritsPerByte], static_cast<int>(c % kTritsPerByte));
  const std::ptrdiff_t p = w.groups_per_row == 0 ? 0 : r * w.groups_per_row + c / w.group_size;
  return detail::half_to_float(w.scales[p]) * static_cast<float>(t - 1);
}

inline void gemv_ternary_reference(const PackedTernaryView& w, const float* x, float* y) noexcept {
  for (std::ptrdiff_t r = 0; r < w.rows; ++r) {
    double acc = 0.0;
    for (std::ptrdiff_t c = 0; c < w.cols; ++c) acc += static_cast<double>(ternary_weight(w, r, c)) * x[c];
    y[r] = static_cast<float>(acc);
  }
}

inline void gemm_ternary_reference(const PackedTernaryView& w, const float* x, std::ptrdiff_t ldx, std::ptrdiff_t m,
                                   float* y, std::ptrdiff_t ldy) noexcept {
  for (std::ptrdiff_t t = 0; t < m; ++t) gemv_ternary_reference(w, x + t * ldx, y + t * ldy);
}

}  // namespace qtl::kernel

namespace qtl {

/// Checked y = W_hat x over a base-3 packed ternary matrix.
[[nodiscard]] inline VectorXf gemv_ternary_reference(const TernaryPackedMatrix& w, VectorRef x) {
  constexpr std::string_view kWhere = "gemv_ternary_reference";
  if (x.size() != w.cols()) fail(kWhere, ": x has ", x.size(), " entries but the matrix has ", w.cols(), " columns");
  require_finite(kWhere, "x", x);
  VectorXf y(w.rows());
  kernel::gemv_ternary_reference(w.view(), x.data(), y.data());
  return y;
}

}  // namespace qtl
