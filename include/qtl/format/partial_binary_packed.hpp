// qtl/format/partial_binary_packed.hpp — the packed form of a partial-binary matrix
// (qtl/quant/partial_binary.hpp): the binary part B in the table format (1-bit codes, one alpha
// per group), the salient corrections as stored, with fp16 row scales and the channel mask as
// bits.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string_view>
#include <vector>

#include "qtl/core/error.hpp"
#include "qtl/core/types.hpp"
#include "qtl/detail/fp16.hpp"
#include "qtl/format/table_packed.hpp"
#include "qtl/quant/binary.hpp"
#include "qtl/quant/partial_binary.hpp"

namespace qtl {

/// Packed form: B in the table format (1-bit BlockQ1 codes, alpha x {-1, +1}); the correction
/// arrays as they are, with the row scales as fp16 bits and the channel mask as a bit array
/// (bit c % 8 of byte c / 8 set <=> channel c is salient).
struct PackedPartialBinary {
  TablePackedMatrix binary;
  SalientStorage storage = SalientStorage::SparseList;
  std::vector<std::uint16_t> row_scales;
  std::vector<std::uint32_t> row_offsets;
  std::vector<std::uint16_t> columns;
  std::vector<std::int8_t> values;
  std::vector<std::uint8_t> channel_mask;  ///< ChannelMask: ceil(cols / 8) bytes

  [[nodiscard]] double storage_bits_per_weight() const noexcept {
    const double n = static_cast<double>(binary.rows()) * static_cast<double>(binary.cols());
    return binary.storage_bits_per_weight() +
           8.0 * (2.0 * static_cast<double>(row_scales.size()) + 4.0 * static_cast<double>(row_offsets.size()) +
                  2.0 * static_cast<double>(columns.size()) + static_cast<double>(values.size()) +
                  static_cast<double>(channel_mask.size())) / n;
  }
};

[[nodiscard]] inline PackedPartialBinary pack_partial_binary(const PartialBinaryMatrix& m) {
  check_partial_binary("pack_partial_binary", m);
  PackedPartialBinary p;
  p.binary = pack_table(m.binary);
  p.storage = m.storage;
  for (float s : m.row_scales) p.row_scales.push_back(detail::float_to_half(s));
  p.row_offsets = m.row_offsets;
  p.columns = m.columns;
  p.values = m.values;
  if (m.storage == SalientStorage::ChannelMask) {
    p.channel_mask.assign(static_cast<std::size_t>((m.cols() + 7) / 8), 0);
    for (auto c : m.channels) p.channel_mask[c / 8u] = static_cast<std::uint8_t>(p.channel_mask[c / 8u] | 1u << (c % 8u));
  }
  return p;
}

/// Throws qtl::Error naming the first inconsistency of a packed partial-binary matrix (the
/// lists as check_partial_binary; the channel mask ceil(cols / 8) bytes with no bit at or past
/// cols; the row scales finite fp16 values >= 0).
inline void check_packed_partial_binary(std::string_view where, const PackedPartialBinary& p) {
  const Index rows = p.binary.rows(), cols = p.binary.cols();
  if (rows <= 0 || cols <= 0) fail(where, ": the binary part is empty (", rows, "x", cols, ")");
  std::size_t n_channels = 0;
  if (p.storage == SalientStorage::ChannelMask) {
    const auto bytes = static_cast<std::size_t>((cols + 7) / 8);
    if (p.channel_mask.size() != bytes) {
      fail(where, ": channel mask of ", p.channel_mask.size(), " bytes for ", cols, " columns (expected ", bytes, ")");
    }
    for (std::size_t c = 0; c < bytes * 8; ++c) {
      if (!((p.channel_mask[c / 8] >> (c % 8)) & 1)) continue;
      if (c >= static_cast<std::size_t>(cols)) fail(where, ": channel mask bit ", c, " is set past the ", cols, " columns");
      ++n_channels;
    }
  } else if (!p.channel_mask.empty()) {
    fail(where, ": a sparse-list matrix has no channel mask, got ", p.channel_mask.size(), " bytes");
  }
  detail::check_partial_binary_lists(where, rows, cols, p.storage, p.row_scales.size(), p.row_offsets, p.columns,
                                     p.values.size(), n_channels);
  for (std::size_t r = 0; r < p.row_scales.size(); ++r) {
    const float d = detail::half_to_float(p.row_scales[r]);
    if (!std::isfinite(d) || d < 0.0f) fail(where, ": row scale ", d, " of row ", r, " is not a finite value >= 0");
  }
}

[[nodiscard]] inline PartialBinaryMatrix unpack_partial_binary(const PackedPartialBinary& p) {
  check_packed_partial_binary("unpack_partial_binary", p);
  PartialBinaryMatrix m;
  m.binary = unpack_table<Binary<>>(p.binary);
  m.storage = p.storage;
  for (auto h : p.row_scales) m.row_scales.push_back(detail::half_to_float(h));
  m.row_offsets = p.row_offsets;
  m.columns = p.columns;
  m.values = p.values;
  for (std::size_t c = 0; c < p.channel_mask.size() * 8; ++c) {
    if ((p.channel_mask[c / 8] >> (c % 8)) & 1) m.channels.push_back(static_cast<std::uint16_t>(c));
  }
  return m;
}

}  // namespace qtl
