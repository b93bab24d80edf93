// qtl/format/table_packed.hpp — the packed "table format" of every scalar quantizer of <= 4 bits
// (log2, power grid, NF4, FP4, k-means codebooks, binary, residual binary, ternary).
//
// A weight decodes through its group's 16-entry table (qtl/quant/decode_table.hpp):
//   W(r, c) = T_p[code(r, c)],   p = r * groups_per_row + c / group_size  (p = 0 per tensor)
//   ScaledShared: T_p[k] = half_to_float(scales[p]) * shared_table[k]   (float product)
//   PerSet:       T_p[k] = half_to_float(tables[p * 2^bits + k])
//
// Layout (all little-endian, plain bytes):
//   codes   rows x ceil(cols / 32) blocks of 32 codes, row r at r * row_bytes, 64-byte aligned.
//           bits = 2, 3, 4 use BlockQ2 / BlockQ3 / BlockQ4 (qtl/format/blocks.hpp); bits = 1 uses
//           BlockQ1 below: code i lives in qs[i % 4], bit i / 4 (the same bit order as the high
//           plane of BlockQ3, so byte j holds codes j, j+4, ..., j+28 from its low bit up).
//           Codes past `cols` are 0: their table entry need not be 0, so a kernel that runs over
//           whole blocks must treat activations past `cols` as zero.
//   scales  ScaledShared: fp16 bits, one per parameter set (GroupLayout order).
//   shared  ScaledShared: 16 floats (entries >= 2^bits are 0). Stored once per matrix.
//   tables  PerSet: fp16 bits, 2^bits per parameter set.
// storage_bits_per_weight() counts every byte above (the 64-byte shared table included).
#pragma once

#include <array>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string_view>
#include <type_traits>
#include <vector>

#include "qtl/core/error.hpp"
#include "qtl/core/validate.hpp"
#include "qtl/detail/aligned_buffer.hpp"
#include "qtl/detail/fp16.hpp"
#include "qtl/format/blocks.hpp"
#include "qtl/quant/decode_table.hpp"
#include "qtl/quant/quantize_matrix.hpp"

namespace qtl {

struct BlockQ1 {
  std::uint8_t qs[4];
};
static_assert(sizeof(BlockQ1) == 4 && std::is_trivially_copyable_v<BlockQ1>);

/// Bytes of one 32-code block of 1..4-bit codes (0 for another width).
[[nodiscard]] constexpr std::size_t table_block_bytes(int bits) noexcept {
  return bits == 1 ? sizeof(BlockQ1) : (bits >= 2 && bits <= 4 ? code_block_bytes(bits) : 0);
}

/// Writes 32 codes of 1..4 bits into one block.
inline void pack_table_block(int bits, const std::uint8_t* codes, std::uint8_t* dst) noexcept {
  if (bits == 1) {
    for (int j = 0; j < 4; ++j) {
      std::uint8_t b = 0;
      for (int k = 0; k < 8; ++k) b = static_cast<std::uint8_t>(b | (codes[j + 4 * k] & 1) << k);
      dst[j] = b;
    }
    return;
  }
  pack_code_block(bits, codes, dst);
}

/// Reads code i (0..31) of a block of 1..4-bit codes.
[[nodiscard]] inline std::uint8_t table_code_in_block(int bits, const std::uint8_t* src, int i) noexcept {
  if (bits == 1) return static_cast<std::uint8_t>((src[i % 4] >> (i / 4)) & 1);
  return code_in_block(bits, src, i);
}

/// Plain view of a table-packed matrix: all a kernel sees.
struct PackedTableView {
  const std::uint8_t* codes = nullptr;
  int bits = 4;
  TableForm form = TableForm::ScaledShared;
  const std::uint16_t* scales = nullptr;  ///< ScaledShared: fp16 per parameter set
  const float* shared_table = nullptr;    ///< ScaledShared: 16 floats
  const std::uint16_t* tables = nullptr;  ///< PerSet: fp16, 2^bits per parameter set
  std::ptrdiff_t rows = 0;
  std::ptrdiff_t cols = 0;
  std::ptrdiff_t row_bytes = 0;
  std::ptrdiff_t group_size = 0;
  std::ptrdiff_t groups_per_row = 0;  ///< 0: one parameter set for the whole matrix
};

class TablePackedMatrix {
 public:
  TablePackedMatrix() = default;

  [[nodiscard]] int bits() const noexcept { return bits_; }
  [[nodiscard]] TableForm form() const noexcept { return form_; }
  [[nodiscard]] const GroupLayout& layout() const noexcept { return layout_; }
  [[nodiscard]] Index rows() const noexcept { return layout_.rows; }
  [[nodiscard]] Index cols() const noexcept { return layout_.cols; }
  [[nodiscard]] Index blocks_per_row() const noexcept {
    return (layout_.cols + kCodesPerBlock - 1) / kCodesPerBlock;
  }
  [[nodiscard]] Index row_bytes() const noexcept {
    return blocks_per_row() * static_cast<Index>(table_block_bytes(bits_));
  }
  [[nodiscard]] const std::uint8_t* code_data() const noexcept { return codes_.data(); }
  [[nodiscard]] const std::vector<std::uint16_t>& scales() const noexcept { return scales_; }
  [[nodiscard]] const DecodeTable& shared_table() const noexcept { return shared_; }
  [[nodiscard]] const std::vector<std::uint16_t>& tables() const noexcept { return tables_; }

  [[nodiscard]] std::uint8_t code(Index r, Index c) const noexcept {
    const std::uint8_t* block = codes_.data() + r * row_bytes() +
                                (c / kCodesPerBlock) * static_cast<Index>(table_block_bytes(bits_));
    return table_code_in_block(bits_, block, static_cast<int>(c % kCodesPerBlock));
  }

  /// Every byte stored (codes with padding, scales or tables, the shared table), per weight.
  [[nodiscard]] double storage_bits_per_weight() const noexcept {
    double bytes = static_cast<double>(rows() * row_bytes()) + 2.0 * static_cast<double>(scales_.size()) +
                   2.0 * static_cast<double>(tables_.size());
    if (form_ == TableForm::ScaledShared) bytes += sizeof(DecodeTable);
    return 8.0 * bytes / (static_cast<double>(rows()) * static_cast<double>(cols()));
  }

  [[nodiscard]] PackedTableView view() const noexcept {
    PackedTableView v;
    v.codes = codes_.data();
    v.bits = bits_;
    v.form = form_;
    v.scales = scales_.data();
    v.shared_table = shared_.data();
    v.tables = tables_.data();
    v.rows = layout_.rows;
    v.cols = layout_.cols;
    v.row_bytes = row_bytes();
    v.group_size = layout_.group_size;
    v.groups_per_row = layout_.per_tensor ? 0 : layout_.groups_per_row();
    return v;
  }

  template <TableQuantizer Q>
  friend TablePackedMatrix pack_table(const QuantizedMatrix<Q>& q);

  /// A table matrix from its stored parts (what a deserializer read): checks every size against
  /// `layout`, that scales, shared entries and tables are finite, shared entries past 2^bits are
  /// 0 and padding codes are 0; throws qtl::Error naming the first bad value.
  [[nodiscard]] static TablePackedMatrix from_parts(int bits, TableForm form, const GroupLayout& layout,
                                                    const std::uint8_t* codes, std::size_t code_bytes,
                                                    std::vector<std::uint16_t> scales, const DecodeTable& shared,
                                                    std::vector<std::uint16_t> tables) {
    constexpr std::string_view kWhere = "TablePackedMatrix::from_parts";
    if (bits < 1 || bits > 4) fail(kWhere, ": bits must be 1 to 4, got ", bits);
    TablePackedMatrix out;
    out.bits_ = bits;
    out.form_ = form;
    out.layout_ = checked_stored_layout(kWhere, layout);
    const auto n_sets = static_cast<std::size_t>(out.layout_.num_param_sets());
    const auto want_codes = static_cast<std::size_t>(layout.rows * out.row_bytes());
    if (code_bytes != want_codes) fail(kWhere, ": ", code_bytes, " code bytes, expected ", want_codes);
    const bool shared_form = form == TableForm::ScaledShared;
    if (scales.size() != (shared_form ? n_sets : 0)) fail(kWhere, ": ", scales.size(), " scales for ", n_sets, " sets");
    if (tables.size() != (shared_form ? 0 : n_sets << bits)) fail(kWhere, ": ", tables.size(), " table entries for ", n_sets, " sets");
    for (std::size_t i = 0; i < scales.size(); ++i) {
      if (!std::isfinite(detail::half_to_float(scales[i]))) fail(kWhere, ": scale ", i, " is not finite");
    }
    for (std::size_t i = 0; i < tables.size(); ++i) {
      if (!std::isfinite(detail::half_to_float(tables[i]))) fail(kWhere, ": table entry ", i, " is not finite");
    }
    if (shared_form) {
      for (int k = 0; k < kDecodeTableSize; ++k) {
        const float v = shared[static_cast<std::size_t>(k)];
        if (!std::isfinite(v) || (k >= (1 << bits) && v != 0.0f)) fail(kWhere, ": shared table entry ", k, " is ", v);
      }
      out.shared_ = shared;
    }
    out.scales_ = std::move(scales);
    out.tables_ = std::move(tables);
    out.codes_ = detail::AlignedBuffer(want_codes);
    std::memcpy(out.codes_.data(), codes, want_codes);
    for (Index r = 0; r < layout.rows; ++r) {
      for (Index c = layout.cols; c < out.blocks_per_row() * kCodesPerBlock; ++c) {
        if (out.code(r, c) != 0) fail(kWhere, ": padding code ", int(out.code(r, c)), " at (", r, ", ", c, "), expected 0");
      }
    }
    return out;
  }

 private:
  int bits_ = 0;
  TableForm form_ = TableForm::ScaledShared;
  GroupLayout layout_{};
  detail::AlignedBuffer codes_;
  std::vector<std::uint16_t> scales_;
  DecodeTable shared_{};
  std::vector<std::uint16_t> tables_;
};

namespace detail {
inline std::uint16_t checked_half(float v, std::string_view what, Index set) {
  const std::uint16_t h = float_to_half(v);
  if (half_to_float(h) != v && !(v == 0.0f && half_to_float(h) == 0.0f)) {
    fail("pack_table: ", what, " ", v, " of parameter set ", set, " is not an fp16 value");
  }
  return h;
}
}  // namespace detail

/// Packs a quantized matrix of any table quantizer (<= 4 bits).
template <TableQuantizer Q>
[[nodiscard]] TablePackedMatrix pack_table(const QuantizedMatrix<Q>& q) {
  constexpr int B = Q::kBits;
  require_nonempty("pack_table", "quantized matrix", q.rows(), q.cols());
  TablePackedMatrix out;
  out.bits_ = B;
  out.form_ = Q::kTableForm;
  out.layout_ = q.layout;
  const Index n_sets = q.layout.num_param_sets();
  if (static_cast<Index>(q.params.size()) != n_sets ||
      static_cast<Index>(q.codes.size()) != q.rows() * q.cols()) {
    fail("pack_table: quantized matrix is inconsistent: ", q.params.size(), " parameter sets (expected ",
         n_sets, "), ", q.codes.size(), " codes (expected ", q.rows() * q.cols(), ")");
  }
  if constexpr (Q::kTableForm == TableForm::ScaledShared) {
    out.shared_ = q.quantizer.shared_table();
    out.scales_.resize(static_cast<std::size_t>(n_sets));
    for (Index i = 0; i < n_sets; ++i) {
      out.scales_[static_cast<std::size_t>(i)] = detail::checked_half(q.params[static_cast<std::size_t>(i)].scale, "scale", i);
    }
  } else {
    out.tables_.resize(static_cast<std::size_t>(n_sets << B));
    for (Index i = 0; i < n_sets; ++i) {
      const DecodeTable t = q.quantizer.table_levels(q.params[static_cast<std::size_t>(i)]);
      for (int k = 0; k < (1 << B); ++k) {
        out.tables_[static_cast<std::size_t>((i << B) + k)] = detail::checked_half(t[static_cast<std::size_t>(k)], "table entry", i);
      }
    }
  }
  const Index bpr = out.blocks_per_row();
  const auto block_bytes = static_cast<Index>(table_block_bytes(B));
  out.codes_ = detail::AlignedBuffer(static_cast<std::size_t>(q.rows() * out.row_bytes()));
  std::uint8_t tmp[kCodesPerBlock];
  for (Index r = 0; r < q.rows(); ++r) {
    for (Index b = 0; b < bpr; ++b) {
      for (int i = 0; i < kCodesPerBlock; ++i) {
        const Index c = b * kCodesPerBlock + i;
        tmp[i] = c < q.cols() ? q.code(r, c) : 0;
        if (tmp[i] >= (1 << B)) fail("pack_table: code ", int(tmp[i]), " at (", r, ", ", c, ") exceeds ", (1 << B) - 1);
      }
      pack_table_block(B, tmp, out.codes_.data() + r * out.row_bytes() + b * block_bytes);
    }
  }
  return out;
}

/// Recovers the exact QuantizedMatrix from its packed form. `quantizer` supplies what the format
/// does not store (a power grid's gamma, a k-means quantizer's options); throws qtl::Error if the
/// packed matrix was made by a quantizer of another bit width, table form or shared table.
template <TableQuantizer Q>
[[nodiscard]] QuantizedMatrix<Q> unpack_table(const TablePackedMatrix& p, const Q& quantizer = Q{}) {
  if (p.bits() != Q::kBits || p.form() != Q::kTableForm) {
    fail("unpack_table: packed matrix is ", p.bits(), "-bit ",
         p.form() == TableForm::PerSet ? "per-set" : "scaled-shared", ", requested ", quantizer.name());
  }
  QuantizedMatrix<Q> q;
  q.quantizer = quantizer;
  q.layout = p.layout();
  if constexpr (Q::kTableForm == TableForm::ScaledShared) {
    if (quantizer.shared_table() != p.shared_table()) {
      fail("unpack_table: the packed shared table differs from ", quantizer.name(), "'s");
    }
  }
  q.codes.resize(static_cast<std::size_t>(p.rows() * p.cols()));
  for (Index r = 0; r < p.rows(); ++r) {
    for (Index c = 0; c < p.cols(); ++c) q.codes[static_cast<std::size_t>(r * p.cols() + c)] = p.code(r, c);
  }
  const Index n_sets = p.layout().num_param_sets();
  q.params.reserve(static_cast<std::size_t>(n_sets));
  for (Index i = 0; i < n_sets; ++i) {
    if constexpr (Q::kTableForm == TableForm::ScaledShared) {
      q.params.push_back(quantizer.params_from_scale(detail::half_to_float(p.scales()[static_cast<std::size_t>(i)])));
    } else {
      DecodeTable t{};
      for (int k = 0; k < (1 << Q::kBits); ++k) {
        t[static_cast<std::size_t>(k)] = detail::half_to_float(p.tables()[static_cast<std::size_t>((i << Q::kBits) + k)]);
      }
      q.params.push_back(quantizer.params_from_levels(t));
    }
  }
  return q;
}

}  // namespace qtl
