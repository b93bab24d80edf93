// qtl/kernel/common/checked_kernel.hpp — what every kernel matrix shares: the checked Eigen entry
// points, the ISA path, and the minimum work per thread.
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
//    private:
//     friend class CheckedKernel<MyKernel>;
//     void select_path(KernelPath path);    // set_path's hook: pick the path's functions
//   };
// The raw gemm splits its work units (the kernel's own: tiles x blocks x tokens, ...) over
// thread_count(work, threads, default) threads: never fewer than set_min_work_per_thread's
// units each, or the kernel's default for them until it is set.
#pragma once

#include <algorithm>
#include <cstddef>
#include <limits>
#include <string>
#include <string_view>

#include "qtl/core/error.hpp"
#include "qtl/core/types.hpp"
#include "qtl/core/validate.hpp"
#include "qtl/kernel/common/cpu_features.hpp"

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

 /// The ISA path the raw entry points run.
  [[nodiscard]] KernelPath path() const noexcept { return path_; }
  /// Switches the ISA path (no repacking: every path reads the same layout). Throws qtl::Error
  /// unless `path` can run on this CPU.
  void set_path(KernelPath path) {
    require_path(path);
    static_cast<Derived&>(*this).select_path(path);
    path_ = path;
  }
  /// The least work (in the kernel's own units, see its class) one thread is given; fewer
  /// threads than asked run below it, since starting them would cost more than they save.
  void set_min_work_per_thread(std::ptrdiff_t units) noexcept { min_work_per_thread_ = std::max<std::ptrdiff_t>(units, 1); }

 protected:
  /// Threads for `work` units: at most `threads` and `cap` (e.g. the number of row tiles), at
  /// least 1, and no fewer than the minimum work per thread each (`default_min_work` until
  /// set_min_work_per_thread is called).
  [[nodiscard]] int thread_count(std::ptrdiff_t work, int threads, std::ptrdiff_t default_min_work,
                                 std::ptrdiff_t cap = std::numeric_limits<std::ptrdiff_t>::max()) const noexcept {
    const std::ptrdiff_t unit = min_work_per_thread_ > 0 ? min_work_per_thread_ : std::max<std::ptrdiff_t>(default_min_work, 1);
    return static_cast<int>(std::clamp<std::ptrdiff_t>(std::min(work / unit, cap), 1, std::max(threads, 1)));
  }

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

  KernelPath path_ = KernelPath::Portable;
  std::ptrdiff_t min_work_per_thread_ = 0;  // 0: the kernel's default
};

}  // namespace qtl::kernel
