// Helpers shared by the kernel tests.
#pragma once

#include <qtl/core/types.hpp>
#include <qtl/kernel/layout_uniform.hpp>
#include <qtl/quant/granularity.hpp>

#include <cstddef>
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

}  // namespace qtl::test
