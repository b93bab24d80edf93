// qtl/kernel/table/reference.hpp — scalar reference GEMV / GEMM over the table format.
//
//   y[r] = sum_c T_p[code(r, c)] * x[c]      (qtl/format/table_packed.hpp for T_p)
// decoded one weight at a time, accumulated in double: the oracle every table-decode SIMD kernel
// is tested against. Plain data only; validates nothing and never throws (see
// gemv_table_reference(const TablePackedMatrix&, ...) below for the checked entry point).
#pragma once

#include <cstddef>
#include <cstdint>

#include "qtl/core/types.hpp"
#include "qtl/core/validate.hpp"
#include "qtl/detail/fp16.hpp"
#include "qtl/format/table_packed.hpp"

namespace qtl::kernel {

/// The 16-entry decode table of parameter set p (entries >= 2^bits are 0).
inline void table_for_set(const PackedTableView& w, std::ptrdiff_t p, float* t) noexcept {
  const int n = 1 << w.bits;
  for (int k = 0; k < 16; ++k) {
    if (k >= n) {
      t[k] = 0.0f;
    } else if (w.form == TableForm::ScaledShared) {
      t[k] = detail::half_to_float(w.scales[p]) * w.shared_table[k];
    } else {
      t[k] = detail::half_to_float(w.tables[p * n + k]);
    }
  }
}

/// The dequantized weight W(r, c).
[[nodiscard]] inline float table_weight(const PackedTableView& w, std::ptrdiff_t r, std::ptrdiff_t c) noexcept {
  const std::uint8_t* block = w.codes + r * w.row_bytes +
                              (c / kCodesPerBlock) * static_cast<std::ptrdiff_t>(table_block_bytes(w.bits));
  const int code = table_code_in_block(w.bits, block, static_cast<int>(c % kCodesPerBlock));
  const std::ptrdiff_t p = w.groups_per_row == 0 ? 0 : r * w.groups_per_row + c / w.group_size;
  if (w.form == TableForm::ScaledShared) return detail::half_to_float(w.scales[p]) * w.shared_table[code];
  return detail::half_to_float(w.tables[(p << w.bits) + code]);
}

/// y[0..rows) = W x.
inline void gemv_table_reference(const PackedTableView& w, const float* x, float* y) noexcept {
  for (std::ptrdiff_t r = 0; r < w.rows; ++r) {
    double acc = 0.0;
    for (std::ptrdiff_t c = 0; c < w.cols; ++c) {
      acc += static_cast<double>(table_weight(w, r, c)) * static_cast<double>(x[c]);
    }
    y[r] = static_cast<float>(acc);
  }
}

/// Y = X W^T: X is [m x cols] (row stride ldx), Y is [m x rows] (row stride ldy).
inline void gemm_table_reference(const PackedTableView& w, const float* x, std::ptrdiff_t ldx,
                                 std::ptrdiff_t m, float* y, std::ptrdiff_t ldy) noexcept {
  for (std::ptrdiff_t t = 0; t < m; ++t) gemv_table_reference(w, x + t * ldx, y + t * ldy);
}

}  // namespace qtl::kernel

namespace qtl {

/// Checked y = W_hat x over a table-packed matrix.
[[nodiscard]] inline VectorXf gemv_table_reference(const TablePackedMatrix& w, VectorRef x) {
  constexpr std::string_view kWhere = "gemv_table_reference";
  if (x.size() != w.cols()) fail(kWhere, ": x has ", x.size(), " entries but the matrix has ", w.cols(), " columns");
  require_finite(kWhere, "x", x);
  VectorXf y(w.rows());
  kernel::gemv_table_reference(w.view(), x.data(), y.data());
  return y;
}

/// Checked Y = X W_hat^T for activations X [tokens x cols].
[[nodiscard]] inline RowMatrixXf gemm_table_reference(const TablePackedMatrix& w, MatrixRef x) {
  constexpr std::string_view kWhere = "gemm_table_reference";
  require_nonempty(kWhere, "activations", x.rows(), x.cols());
  if (x.cols() != w.cols()) fail(kWhere, ": activations have ", x.cols(), " columns but the matrix has ", w.cols());
  require_finite(kWhere, "activations", x);
  RowMatrixXf y(x.rows(), w.rows());
  kernel::gemm_table_reference(w.view(), x.data(), x.outerStride(), x.rows(), y.data(), y.outerStride());
  return y;
}

}  // namespace qtl
