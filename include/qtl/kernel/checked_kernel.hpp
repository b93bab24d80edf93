// qtl/kernel/checked_kernel.hpp — the checked Eigen entry points every kernel matrix shares.
//
// Each kernel matrix (UniformKernelMatrix, TableKernelMatrix, LutKernelMatrix, VQKernelMatrix)
// has unchecked raw-pointer entry points that never throw, and these checked overloads that
// validate shapes, finiteness and the thread count first and throw qtl::Error naming the value:
//
//   class MyKernel : public CheckedKernel<MyKernel> {
//    public:
//     static constexpr std::string_view kName = "MyKernel";
//     using CheckedKernel<MyKernel>::gemv;   // the raw overloads below would hide them
//     using CheckedKernel<MyKernel>::gemm;
//     Index rows() const; Index cols() const;
//     void gemv(const float* x, float* y, int threads) const;
//     void gemm(const float* x, Index ldx, Index m, float* y, Index ldy, int threads) const;
//   };
#pragma once

#include <string>
#include <string_view>

#include "qtl/core/error.hpp"
#include "qtl/core/types.hpp"
#include "qtl/core/validate.hpp"
#include "qtl/kernel/cpu_features.hpp"

namespace qtl::kernel {

template <class Derived>
class CheckedKernel {
 public:
  /// Checked: y = W_hat x.
  [[nodiscard]] VectorXf gemv(VectorRef x, int threads = 1) const {
    const std::string where = str_cat(Derived::kName, "::gemv");
    require_size(where, "x", x.size(), self().cols());
    require_finite(where, "x", x);
    require_threads(where, threads);
    VectorXf y(self().rows());
    self().gemv(x.data(), y.data(), threads);
    return y;
  }

  /// Checked: Y = X W_hat^T for activations X [tokens x cols].
  [[nodiscard]] RowMatrixXf gemm(MatrixRef x, int threads = 1) const {
    const std::string where = str_cat(Derived::kName, "::gemm");
    require_nonempty(where, "activations", x.rows(), x.cols());
    if (x.cols() != self().cols()) {
      fail(where, ": activations have ", x.cols(), " columns but the matrix has ", self().cols());
    }
    require_finite(where, "activations", x);
    require_threads(where, threads);
    RowMatrixXf y(x.rows(), self().rows());
    self().gemm(x.data(), x.outerStride(), x.rows(), y.data(), y.outerStride(), threads);
    return y;
  }

 protected:
  static void require_threads(std::string_view where, int threads) {
    if (threads < 1) fail(where, ": threads must be >= 1, got ", threads);
  }
  /// Throws unless `path` can run on this CPU.
  static void require_path(KernelPath path) {
    if (!path_supported(path)) {
      fail(Derived::kName, ": path ", to_string(path), " is not supported on this CPU (best: ",
           to_string(best_kernel_path()), ")");
    }
  }

 private:
  [[nodiscard]] const Derived& self() const noexcept { return static_cast<const Derived&>(*this); }
};

}  // namespace qtl::kernel
