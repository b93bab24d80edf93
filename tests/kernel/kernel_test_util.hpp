// Helpers shared by the kernel tests.
#pragma once

#include <qtl/core/types.hpp>
#include <qtl/kernel/layout_uniform.hpp>

#include <cstddef>
#include <vector>

namespace qtl::test {

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
