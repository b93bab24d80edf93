// qtl/format/ternary_packed.hpp — ternary weights packed base-3: 5 trits per byte (1.6 bits).
//
// (The 2-bit form of ternary weights is the table format: pack_table(QuantizedMatrix<Ternary>)
// in qtl/format/table_packed.hpp, codes 0/1/2 in BlockQ2 and alpha x {-1, 0, +1, 0}.)
//
//   W(r, c) = half_to_float(scales[p]) * (t(r, c) - 1),   t in {0, 1, 2} = the Ternary code
// Bytes: row r at r * row_bytes, row_bytes = ceil(cols / 5); byte j of a row holds the trits of
// columns 5j .. 5j+4 (t_0 .. t_4), padding trits past `cols` are 1 (weight 0). With
//   v = t_0 3^4 + t_1 3^3 + t_2 3^2 + t_3 3 + t_4   (0 <= v <= 242)
// the byte is q = ceil(v * 256 / 243), and trit i decodes with one multiply, no division:
//   t_i = ((q * 3^i mod 256) * 3) >> 8
// (q / 256 is v / 243 rounded up, so multiplying by 3^i shifts the base-3 digits left and the
// top digit of the fraction is t_i; rounding up by less than 1/256 never crosses a digit since
// 3^5 = 243 <= 256). This is the fixed-point trick of llama.cpp's TQ1_0, which makes the decode a
// vector multiply and a shift. Scales are fp16, one per parameter set (GroupLayout order).
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "qtl/core/error.hpp"
#include "qtl/core/validate.hpp"
#include "qtl/detail/fp16.hpp"
#include "qtl/quant/quantize_matrix.hpp"
#include "qtl/quant/ternary.hpp"

namespace qtl {

inline constexpr int kTritsPerByte = 5;

/// Packs 5 trits (each 0, 1 or 2) into one byte.
[[nodiscard]] constexpr std::uint8_t pack_trits(const std::uint8_t* t) noexcept {
  unsigned v = 0;
  for (int i = 0; i < kTritsPerByte; ++i) v = v * 3 + t[i];
  return static_cast<std::uint8_t>((v * 256 + 242) / 243);
}

/// Trit i (0..4) of a packed byte.
[[nodiscard]] constexpr std::uint8_t trit_in_byte(std::uint8_t q, int i) noexcept {
  constexpr unsigned kPow3[5] = {1, 3, 9, 27, 81};
  const unsigned m = (static_cast<unsigned>(q) * kPow3[i]) & 0xFFu;
  return static_cast<std::uint8_t>((m * 3) >> 8);
}

/// Plain view of a base-3 packed ternary matrix.
struct PackedTernaryView {
  const std::uint8_t* codes = nullptr;
  const std::uint16_t* scales = nullptr;
  std::ptrdiff_t rows = 0;
  std::ptrdiff_t cols = 0;
  std::ptrdiff_t row_bytes = 0;
  std::ptrdiff_t group_size = 0;
  std::ptrdiff_t groups_per_row = 0;  ///< 0: one scale for the whole matrix
};

class TernaryPackedMatrix {
 public:
  [[nodiscard]] const GroupLayout& layout() const noexcept { return layout_; }
  [[nodiscard]] Index rows() const noexcept { return layout_.rows; }
  [[nodiscard]] Index cols() const noexcept { return layout_.cols; }
  [[nodiscard]] Index row_bytes() const noexcept { return (layout_.cols + kTritsPerByte - 1) / kTritsPerByte; }
  [[nodiscard]] const std::vector<std::uint8_t>& bytes() const noexcept { return bytes_; }
  [[nodiscard]] const std::vector<std::uint16_t>& scales() const noexcept { return scales_; }
  [[nodiscard]] std::uint8_t code(Index r, Index c) const noexcept {
    return trit_in_byte(bytes_[static_cast<std::size_t>(r * row_bytes() + c / kTritsPerByte)],
                        static_cast<int>(c % kTritsPerByte));
  }
  /// Every byte stored (trit bytes with padding, fp16 scales), per weight.
  [[nodiscard]] double storage_bits_per_weight() const noexcept {
    return 8.0 * (static_cast<double>(bytes_.size()) + 2.0 * static_cast<double>(scales_.size())) /
           (static_cast<double>(rows()) * static_cast<double>(cols()));
  }
  [[nodiscard]] PackedTernaryView view() const noexcept {
    return {bytes_.data(), scales_.data(), layout_.rows, layout_.cols, row_bytes(), layout_.group_size,
            layout_.per_tensor ? 0 : layout_.groups_per_row()};
  }

  friend TernaryPackedMatrix pack_ternary_base3(const QuantizedMatrix<Ternary>& q);

 private:
  GroupLayout layout_{};
  std::vector<std::uint8_t> bytes_;
  std::vector<std::uint16_t> scales_;
};

/// Packs ternary codes 5 per byte; throws qtl::Error on an inconsistent matrix, a code of 3 or
/// a scale that is not an fp16 value.
[[nodiscard]] inline TernaryPackedMatrix pack_ternary_base3(const QuantizedMatrix<Ternary>& q) {
  constexpr std::string_view kWhere = "pack_ternary_base3";
  require_nonempty(kWhere, "quantized matrix", q.rows(), q.cols());
  TernaryPackedMatrix out;
  out.layout_ = q.layout;
  const Index n_sets = q.layout.num_param_sets();
  if (static_cast<Index>(q.params.size()) != n_sets || static_cast<Index>(q.codes.size()) != q.rows() * q.cols()) {
    fail(kWhere, ": quantized matrix is inconsistent: ", q.params.size(), " parameter sets (expected ", n_sets,
         "), ", q.codes.size(), " codes (expected ", q.rows() * q.cols(), ")");
  }
  for (const auto& p : q.params) {
    const std::uint16_t h = detail::float_to_half(p.scale);
    if (detail::half_to_float(h) != p.scale) fail(kWhere, ": scale ", p.scale, " is not an fp16 value");
    out.scales_.push_back(h);
  }
  const Index rb = out.row_bytes();
  out.bytes_.resize(static_cast<std::size_t>(q.rows() * rb));
  for (Index r = 0; r < q.rows(); ++r) {
    for (Index j = 0; j < rb; ++j) {
      std::uint8_t t[kTritsPerByte];
      for (int i = 0; i < kTritsPerByte; ++i) {
        const Index c = j * kTritsPerByte + i;
        t[i] = c < q.cols() ? q.code(r, c) : 1;
        if (t[i] > 2) fail(kWhere, ": code ", int(t[i]), " at (", r, ", ", c, ") is not a trit");
      }
      out.bytes_[static_cast<std::size_t>(r * rb + j)] = pack_trits(t);
    }
  }
  return out;
}

/// Recovers the exact QuantizedMatrix<Ternary> (the rule only affects fitting).
[[nodiscard]] inline QuantizedMatrix<Ternary> unpack_ternary_base3(const TernaryPackedMatrix& p,
                                                                   const Ternary& quantizer = Ternary{}) {
  QuantizedMatrix<Ternary> q;
  q.quantizer = quantizer;
  q.layout = p.layout();
  q.codes.resize(static_cast<std::size_t>(p.rows() * p.cols()));
  for (Index r = 0; r < p.rows(); ++r) {
    for (Index c = 0; c < p.cols(); ++c) q.codes[static_cast<std::size_t>(r * p.cols() + c)] = p.code(r, c);
  }
  for (auto h : p.scales()) q.params.push_back(Ternary::Params{detail::half_to_float(h)});
  return q;
}

}  // namespace qtl
