// qtl/kernel/table/reference_partial_binary.hpp — the reference GEMV of a packed partial-binary
// matrix (qtl/format/partial_binary_packed.hpp): the table reference over the binary part plus
// the salient corrections, accumulated in double.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "qtl/core/types.hpp"
#include "qtl/detail/fp16.hpp"
#include "qtl/format/partial_binary_packed.hpp"
#include "qtl/kernel/table/reference.hpp"

namespace qtl {

/// Reference y = B x + C x straight from the packed form (accumulated in double per part).
[[nodiscard]] inline VectorXf gemv_partial_binary_reference(const PackedPartialBinary& p, VectorRef x) {
  check_packed_partial_binary("gemv_partial_binary_reference", p);
  VectorXf y = gemv_table_reference(p.binary, x);  // validates x
  const Index R = p.binary.rows();
  if (p.storage == SalientStorage::SparseList) {
    for (Index r = 0; r < R; ++r) {
      double acc = 0.0;
      for (std::uint32_t i = p.row_offsets[static_cast<std::size_t>(r)]; i < p.row_offsets[static_cast<std::size_t>(r) + 1]; ++i) {
        acc += static_cast<double>(detail::half_to_float(p.row_scales[static_cast<std::size_t>(r)]) * static_cast<float>(p.values[i])) *
               x[p.columns[i]];
      }
      y[r] += static_cast<float>(acc);
    }
  } else {
    std::vector<Index> ch;
    for (Index c = 0; c < p.binary.cols(); ++c) {
      if ((p.channel_mask[static_cast<std::size_t>(c / 8)] >> (c % 8)) & 1) ch.push_back(c);
    }
    for (Index r = 0; r < R; ++r) {
      double acc = 0.0;
      for (std::size_t j = 0; j < ch.size(); ++j) {
        acc += static_cast<double>(detail::half_to_float(p.row_scales[static_cast<std::size_t>(r)]) *
                                   static_cast<float>(p.values[static_cast<std::size_t>(r) * ch.size() + j])) *
               x[ch[j]];
      }
      y[r] += static_cast<float>(acc);
    }
  }
  return y;
}

}  // namespace qtl
