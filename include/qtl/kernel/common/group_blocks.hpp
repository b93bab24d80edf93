// qtl/kernel/common/group_blocks.hpp — the column geometry the kernel layouts share.
//
// A row's columns are split into parameter groups; each group is stored as whole blocks of
// `block_cols` columns (its last block padded), so every block lies inside exactly one group and
// has one set of parameters per row. Group g covers columns [col_begin[g], col_begin[g + 1]) and
// blocks [block_begin[g], block_begin[g + 1]). Used by the uniform (32-column blocks), table
// (16-column slices) and bit-plane LUT (32-column blocks) layouts.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace qtl::kernel {

struct GroupBlocks {
  std::vector<std::int32_t> col_begin;    ///< groups + 1 entries
  std::vector<std::int32_t> block_begin;  ///< groups + 1 entries
  std::ptrdiff_t groups = 0;
  std::ptrdiff_t blocks = 0;

  GroupBlocks() = default;

  /// `groups` >= 1 groups of `group_size` columns (one group: all `cols`; the last group takes
  /// what is left), each in blocks of `block_cols`.
  GroupBlocks(std::ptrdiff_t cols, std::ptrdiff_t groups_, std::ptrdiff_t group_size, std::ptrdiff_t block_cols)
      : groups(groups_) {
    const std::ptrdiff_t gsize = groups == 1 ? cols : group_size;
    col_begin.resize(static_cast<std::size_t>(groups + 1));
    block_begin.resize(static_cast<std::size_t>(groups + 1));
    std::ptrdiff_t nb = 0;
    for (std::ptrdiff_t g = 0; g < groups; ++g) {
      const std::ptrdiff_t c0 = g * gsize;
      const std::ptrdiff_t c1 = g + 1 == groups ? cols : c0 + gsize;
      col_begin[static_cast<std::size_t>(g)] = static_cast<std::int32_t>(c0);
      block_begin[static_cast<std::size_t>(g)] = static_cast<std::int32_t>(nb);
      nb += (c1 - c0 + block_cols - 1) / block_cols;
    }
    col_begin[static_cast<std::size_t>(groups)] = static_cast<std::int32_t>(cols);
    block_begin[static_cast<std::size_t>(groups)] = static_cast<std::int32_t>(nb);
    blocks = nb;
  }

  [[nodiscard]] std::ptrdiff_t col0(std::ptrdiff_t g) const noexcept { return col_begin[static_cast<std::size_t>(g)]; }
  [[nodiscard]] std::ptrdiff_t col1(std::ptrdiff_t g) const noexcept { return col_begin[static_cast<std::size_t>(g + 1)]; }
  [[nodiscard]] std::ptrdiff_t block0(std::ptrdiff_t g) const noexcept { return block_begin[static_cast<std::size_t>(g)]; }
};

}  // namespace qtl::kernel
