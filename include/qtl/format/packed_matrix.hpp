// qtl/format/packed_matrix.hpp — a uniform-quantized matrix bit-packed for storage and kernels.
//
// Layout (all little-endian, plain bytes):
//   codes   rows x blocks_per_row blocks (qtl/format/blocks.hpp), row r at r * row_bytes,
//           blocks_per_row = ceil(cols / 32); 64-byte aligned storage.
//   scales  fp16 bits, one per parameter set (GroupLayout order: row-major (row, group), or a
//           single one for PerTensor).
//   zeros   uint8, one per parameter set; absent in symmetric mode (the zero is 2^(bits-1)).
// Padding: a row's codes past `cols` (up to the next multiple of 32) hold the zero point of
// that row's last group, so they decode to exactly 0 and a kernel may run over whole blocks.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <string_view>
#include <vector>

#include "qtl/core/error.hpp"
#include "qtl/detail/aligned_buffer.hpp"
#include "qtl/detail/fp16.hpp"
#include "qtl/format/blocks.hpp"
#include "qtl/quant/quantize_matrix.hpp"
#include "qtl/quant/uniform.hpp"

namespace qtl {

class PackedMatrix {
 public:
  PackedMatrix() = default;

  [[nodiscard]] int bits() const noexcept { return bits_; }
  [[nodiscard]] bool symmetric() const noexcept { return symmetric_; }
  [[nodiscard]] const GroupLayout& layout() const noexcept { return layout_; }
  [[nodiscard]] Index rows() const noexcept { return layout_.rows; }
  [[nodiscard]] Index cols() const noexcept { return layout_.cols; }
  [[nodiscard]] Index blocks_per_row() const noexcept {
    return (layout_.cols + kCodesPerBlock - 1) / kCodesPerBlock;
  }
  [[nodiscard]] Index row_bytes() const noexcept {
    return blocks_per_row() * static_cast<Index>(code_block_bytes(bits_));
  }
  [[nodiscard]] const std::uint8_t* code_data() const noexcept { return codes_.data(); }
  [[nodiscard]] const std::vector<std::uint16_t>& scales() const noexcept { return scales_; }
  [[nodiscard]] const std::vector<std::uint8_t>& zeros() const noexcept { return zeros_; }

  /// Every byte stored (codes with their padding, scales, zeros), per weight.
  [[nodiscard]] double storage_bits_per_weight() const noexcept {
    const double bytes = static_cast<double>(rows() * row_bytes()) +
                         2.0 * static_cast<double>(scales_.size()) +
                         static_cast<double>(zeros_.size());
    return 8.0 * bytes / (static_cast<double>(rows()) * static_cast<double>(cols()));
  }

  [[nodiscard]] std::uint8_t code(Index r, Index c) const noexcept {
    const std::uint8_t* block = codes_.data() + r * row_bytes() +
                                (c / kCodesPerBlock) * static_cast<Index>(code_block_bytes(bits_));
    return code_in_block(bits_, block, static_cast<int>(c % kCodesPerBlock));
  }

  [[nodiscard]] PackedUniformView view() const noexcept {
    PackedUniformView v;
    v.codes = codes_.data();
    v.scales = scales_.data();
    v.zeros = symmetric_ ? nullptr : zeros_.data();
    v.bits = bits_;
    v.symmetric_zero = 1 << (bits_ - 1);
    v.rows = layout_.rows;
    v.cols = layout_.cols;
    v.row_bytes = row_bytes();
    v.group_size = layout_.group_size;
    v.groups_per_row = layout_.per_tensor ? 0 : layout_.groups_per_row();
    return v;
  }

  template <int B, Mode M>
    requires(is_packable_bits(B))
  friend PackedMatrix pack(const QuantizedMatrix<Uniform<B, M>>& q);

  /// A packed matrix from its stored parts (what a deserializer read). Checks every size against
  /// `layout`, that scales are finite fp16, zero points below 2^bits (none when symmetric), and
  /// that padding codes hold their row's last zero point; throws qtl::Error naming the first
  /// bad value, so no byte sequence yields a matrix the kernels would misread.
  [[nodiscard]] static PackedMatrix from_parts(int bits, bool symmetric, const GroupLayout& layout,
                                               const std::uint8_t* codes, std::size_t code_bytes,
                                               std::vector<std::uint16_t> scales, std::vector<std::uint8_t> zeros) {
    constexpr std::string_view kWhere = "PackedMatrix::from_parts";
    if (!is_packable_bits(bits)) fail(kWhere, ": bits must be 2, 3, 4, 5, 6 or 8, got ", bits);
    PackedMatrix out;
    out.bits_ = bits;
    out.symmetric_ = symmetric;
    out.layout_ = checked_stored_layout(kWhere, layout);
    const auto n_sets = static_cast<std::size_t>(out.layout_.num_param_sets());
    const auto want_codes = static_cast<std::size_t>(layout.rows * out.row_bytes());
    if (code_bytes != want_codes) fail(kWhere, ": ", code_bytes, " code bytes, expected ", want_codes);
    if (scales.size() != n_sets) fail(kWhere, ": ", scales.size(), " scales, expected ", n_sets);
    if (zeros.size() != (symmetric ? 0 : n_sets)) {
      fail(kWhere, ": ", zeros.size(), " zero points, expected ", symmetric ? 0 : n_sets);
    }
    for (std::size_t i = 0; i < n_sets; ++i) {
      if (!std::isfinite(detail::half_to_float(scales[i]))) fail(kWhere, ": scale ", i, " is not finite");
      if (!symmetric && zeros[i] >= (1 << bits)) fail(kWhere, ": zero point ", int(zeros[i]), " of set ", i, " exceeds ", (1 << bits) - 1);
    }
    out.scales_ = std::move(scales);
    out.zeros_ = std::move(zeros);
    out.codes_ = detail::AlignedBuffer(want_codes);
    std::memcpy(out.codes_.data(), codes, want_codes);
    const int sym_zero = 1 << (bits - 1);
    for (Index r = 0; r < layout.rows; ++r) {
      const int pad = symmetric ? sym_zero : out.zeros_[static_cast<std::size_t>(out.layout_.param_index(r, layout.cols - 1))];
      for (Index c = layout.cols; c < out.blocks_per_row() * kCodesPerBlock; ++c) {
        if (out.code(r, c) != pad) fail(kWhere, ": padding code ", int(out.code(r, c)), " at (", r, ", ", c, "), expected ", pad);
      }
    }
    return out;
  }

 private:
  int bits_ = 0;
  bool symmetric_ = false;
  GroupLayout layout_{};
  detail::AlignedBuffer codes_;
  std::vector<std::uint16_t> scales_;
  std::vector<std::uint8_t> zeros_;
};

/// Packs a uniform QuantizedMatrix. Bit widths 2, 3, 4, 5, 6 and 8 have block layouts.
/// (A constraint, not a static_assert, so generic code can ask `requires { pack(q); }`.)
template <int B, Mode M>
  requires(is_packable_bits(B))
[[nodiscard]] PackedMatrix pack(const QuantizedMatrix<Uniform<B, M>>& q) {
  using U = Uniform<B, M>;
  PackedMatrix out;
  out.bits_ = B;
  out.symmetric_ = U::kSymmetric;
  out.layout_ = q.layout;
  const Index n_sets = q.layout.num_param_sets();
  if (static_cast<Index>(q.params.size()) != n_sets ||
      static_cast<Index>(q.codes.size()) != q.rows() * q.cols()) {
    fail("pack: quantized matrix is inconsistent: ", q.params.size(), " parameter sets (expected ",
         n_sets, "), ", q.codes.size(), " codes (expected ", q.rows() * q.cols(), ")");
  }
  out.scales_.resize(static_cast<std::size_t>(n_sets));
  if (!U::kSymmetric) out.zeros_.resize(static_cast<std::size_t>(n_sets));
  for (Index i = 0; i < n_sets; ++i) {
    const auto& p = q.params[static_cast<std::size_t>(i)];
    out.scales_[static_cast<std::size_t>(i)] = detail::float_to_half(p.scale);
    if (detail::half_to_float(out.scales_[static_cast<std::size_t>(i)]) != p.scale) {
      fail("pack: scale ", p.scale, " of parameter set ", i, " is not an fp16 value");
    }
    if (U::kSymmetric) {
      if (p.zero != static_cast<float>(U::kSymmetricZero)) {
        fail("pack: symmetric zero point must be ", U::kSymmetricZero, ", got ", p.zero);
      }
    } else {
      if (!(p.zero >= 0.0f && p.zero <= static_cast<float>(U::kMaxCode)) ||
          p.zero != static_cast<float>(static_cast<int>(p.zero))) {
        fail("pack: zero point ", p.zero, " of parameter set ", i, " is not an integer in [0, ",
             U::kMaxCode, "]");
      }
      out.zeros_[static_cast<std::size_t>(i)] = static_cast<std::uint8_t>(p.zero);
    }
  }
  const Index bpr = out.blocks_per_row();
  const auto block_bytes = static_cast<Index>(code_block_bytes(B));
  out.codes_ = detail::AlignedBuffer(static_cast<std::size_t>(q.rows() * out.row_bytes()));
  std::uint8_t tmp[kCodesPerBlock];
  for (Index r = 0; r < q.rows(); ++r) {
    const auto& last = q.params_at(r, q.cols() - 1);
    const auto pad = static_cast<std::uint8_t>(last.zero);
    for (Index b = 0; b < bpr; ++b) {
      for (int i = 0; i < kCodesPerBlock; ++i) {
        const Index c = b * kCodesPerBlock + i;
        tmp[i] = c < q.cols() ? q.code(r, c) : pad;
        if (tmp[i] > U::kMaxCode) fail("pack: code ", int(tmp[i]), " at (", r, ", ", c, ") exceeds ", U::kMaxCode);
      }
      pack_code_block(B, tmp, out.codes_.data() + r * out.row_bytes() + b * block_bytes);
    }
  }
  return out;
}

/// Recovers the exact QuantizedMatrix from its packed form; throws if the format differs.
template <int B, Mode M>
[[nodiscard]] QuantizedMatrix<Uniform<B, M>> unpack(const PackedMatrix& p) {
  using U = Uniform<B, M>;
  if (p.bits() != B || p.symmetric() != U::kSymmetric) {
    fail("unpack: packed matrix is ", p.bits(), "-bit ", p.symmetric() ? "symmetric" : "asymmetric",
         ", requested ", B, "-bit ", U::kSymmetric ? "symmetric" : "asymmetric");
  }
  QuantizedMatrix<U> q;
  q.layout = p.layout();
  q.codes.resize(static_cast<std::size_t>(p.rows() * p.cols()));
  for (Index r = 0; r < p.rows(); ++r) {
    for (Index c = 0; c < p.cols(); ++c) q.codes[static_cast<std::size_t>(r * p.cols() + c)] = p.code(r, c);
  }
  q.params.resize(p.scales().size());
  for (std::size_t i = 0; i < q.params.size(); ++i) {
    q.params[i].scale = detail::half_to_float(p.scales()[i]);
    q.params[i].zero = U::kSymmetric ? static_cast<float>(U::kSymmetricZero) : static_cast<float>(p.zeros()[i]);
  }
  return q;
}

}  // namespace qtl
