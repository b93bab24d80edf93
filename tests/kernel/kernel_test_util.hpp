// Helpers shared by the kernel tests.
#pragma once

#include <qtl/core/error.hpp>
#include <qtl/core/types.hpp>
#include <qtl/kernel/uniform/layout.hpp>
#include <qtl/quant/granularity.hpp>

#include <gtest/gtest.h>

#include <cmath>
#include <cstddef>
#include <cstring>
#include <limits>
#include <string_view>
#include <vector>

namespace qtl::test {

/// u = 2^-24, fp32's unit roundoff: the kernel tests' error bounds are multiples of it.
inline constexpr double kUnit = 1.0 / 16777216.0;

/// One test shape: the matrix size and how its parameters are grouped.
struct Case {
  Index rows, cols;
  Granularity g;
};

/// Kernel column of matrix column c in a uniform tile layout (the per-group block padding).
inline std::vector<Index> kernel_columns(const kernel::UniformKernelView& v) {
  std::vector<Index> k(static_cast<std::size_t>(v.cols));
  for (Index g = 0; g < v.groups; ++g) {
    for (Index c = v.group_col_begin[g]; c < v.group_col_begin[g + 1]; ++c) {
      k[static_cast<std::size_t>(c)] = Index{v.group_block_begin[g]} * 32 + (c - v.group_col_begin[g]);
    }
  }
  return k;
}

/// The checks every kernel's checked gemv/gemm share, on a kernel of `rows` x `cols` (cols >= 6):
/// wrong widths, NaN and infinite activations, zero threads, no tokens are qtl::Error.
template <class K>
void expect_checked_entry_points_reject_bad_input(const K& k, Index rows, Index cols) {
  EXPECT_EQ(k.rows(), rows);
  EXPECT_EQ(k.cols(), cols);
  EXPECT_THROW((void)k.gemv(VectorXf::Zero(cols - 1)), Error);
  VectorXf bad = VectorXf::Zero(cols);
  bad(5) = std::nanf("");
  EXPECT_THROW((void)k.gemv(bad), Error);
  EXPECT_THROW((void)k.gemv(VectorXf::Zero(cols), 0), Error);
  EXPECT_THROW((void)k.gemm(RowMatrixXf::Zero(3, cols + 1)), Error);
  EXPECT_THROW((void)k.gemm(RowMatrixXf::Zero(0, cols)), Error);
  EXPECT_THROW((void)k.gemm(RowMatrixXf::Zero(2, cols), 0), Error);
  RowMatrixXf inf = RowMatrixXf::Zero(2, cols);
  inf(1, 2) = std::numeric_limits<float>::infinity();
  EXPECT_THROW((void)k.gemm(inf), Error);
  inf(1, 2) = -std::numeric_limits<float>::infinity();
  EXPECT_THROW((void)k.gemm(inf), Error);
}

/// Results are bit-identical for any thread count: gemm of x and gemv of its first token with
/// 2, 3 and 7 threads equal 1 thread's byte for byte, and gemv equals the one-token gemm. The
/// kernel is split across every thread asked for, however small the matrix.
template <class K>
void expect_thread_count_independent(K& k, const RowMatrixXf& x, std::string_view label) {
  const auto same = [](const float* a, const float* b, Index n) {
    return std::memcmp(a, b, sizeof(float) * static_cast<std::size_t>(n)) == 0;
  };
  k.set_min_work_per_thread(1);
  const RowMatrixXf y1 = k.gemm(x, 1);
  const VectorXf x0 = x.row(0).transpose();
  const VectorXf v1 = k.gemv(x0, 1);
  for (int threads : {2, 3, 7}) {
    const RowMatrixXf yt = k.gemm(x, threads);
    EXPECT_TRUE(same(y1.data(), yt.data(), y1.size())) << label << ": gemm, threads " << threads;
    const VectorXf vt = k.gemv(x0, threads);
    EXPECT_TRUE(same(v1.data(), vt.data(), v1.size())) << label << ": gemv, threads " << threads;
  }
  const RowMatrixXf y_one = k.gemm(x.topRows(1), 1);
  EXPECT_TRUE(same(y_one.data(), v1.data(), v1.size())) << label << ": gemv != one-token gemm";
}

}  // namespace qtl::test
