// qtl/kernel/uniform/matmul.hpp — checked entry points for y = W_hat x over packed matrices.
//
// These validate shapes and finiteness, then call a kernel (today the scalar reference; the
// SIMD kernels plug in behind the same functions). Kernels themselves never throw.
#pragma once

#include "qtl/core/types.hpp"
#include "qtl/core/validate.hpp"
#include "qtl/format/packed_matrix.hpp"
#include "qtl/kernel/uniform/reference.hpp"

namespace qtl {

/// y = W_hat x for one activation vector x (size = W.cols()).
[[nodiscard]] inline VectorXf gemv_reference(const PackedMatrix& w, VectorRef x) {
  constexpr std::string_view kWhere = "gemv_reference";
  if (x.size() != w.cols()) {
    fail(kWhere, ": x has ", x.size(), " entries but the matrix has ", w.cols(), " columns");
  }
  require_finite(kWhere, "x", x);
  VectorXf y(w.rows());
  kernel::gemv_uniform_reference(w.view(), x.data(), y.data());
  return y;
}

/// Y = X W_hat^T for activations X [tokens x W.cols()]; Y is [tokens x W.rows()].
[[nodiscard]] inline RowMatrixXf gemm_reference(const PackedMatrix& w, MatrixRef x) {
  constexpr std::string_view kWhere = "gemm_reference";
  require_nonempty(kWhere, "activations", x.rows(), x.cols());
  if (x.cols() != w.cols()) {
    fail(kWhere, ": activations have ", x.cols(), " columns but the matrix has ", w.cols());
  }
  require_finite(kWhere, "activations", x);
  RowMatrixXf y(x.rows(), w.rows());
  kernel::gemm_uniform_reference(w.view(), x.data(), x.outerStride(), x.rows(), y.data(),
                                 y.outerStride());
  return y;
}

}  // namespace qtl
