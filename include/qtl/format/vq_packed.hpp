// qtl/format/vq_packed.hpp — packed vector-quantized matrices (k-means VQ, residual VQ, E8P).
//
// Layout (all little-endian, plain bytes):
//   indices  row r at r * row_bytes, row_bytes = ceil(vectors_per_row * bits / 8); index j of a
//            row occupies bits [j * bits, (j + 1) * bits) of the row, least significant bit
//            first (bit b of the row is bit b % 8 of byte b / 8). Each row starts on a byte.
//            Vectors are ceil(cols / dim) per row; the last one may cover padding columns
//            (see qtl/quant/vector.hpp): their decoded values are ignored.
//   params   num_sets * V::kParamWords 16-bit words (V::serialize): for KMeansVQ<D, B> the
//            fp16 codebook, entry k at words [k * D, (k + 1) * D) of its set; for E8P one fp16
//            scale; for ResidualVQ the first stage's words, then the second's.
// Set s covers rows [s * rows_per_set, (s + 1) * rows_per_set).
// storage_bits_per_weight() counts every byte above over the real rows * cols weights; it
// equals bits_per_weight(VQMatrix) up to the byte rounding of each row.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "qtl/core/error.hpp"
#include "qtl/core/validate.hpp"
#include "qtl/quant/vector.hpp"

namespace qtl {

/// Reads the `bits`-bit index j from a row of packed indices.
[[nodiscard]] inline std::uint32_t read_packed_index(const std::uint8_t* row, std::ptrdiff_t j, int bits) noexcept {
  std::uint32_t v = 0;
  const std::ptrdiff_t first = j * bits;
  for (int b = 0; b < bits; ++b) {
    const std::ptrdiff_t bit = first + b;
    v |= static_cast<std::uint32_t>((row[bit / 8] >> (bit % 8)) & 1) << b;
  }
  return v;
}

inline void write_packed_index(std::uint8_t* row, std::ptrdiff_t j, int bits, std::uint32_t v) noexcept {
  const std::ptrdiff_t first = j * bits;
  for (int b = 0; b < bits; ++b) {
    const std::ptrdiff_t bit = first + b;
    if ((v >> b) & 1u) row[bit / 8] = static_cast<std::uint8_t>(row[bit / 8] | (1u << (bit % 8)));
  }
}

class VQPackedMatrix {
 public:
  [[nodiscard]] const VQLayout& layout() const noexcept { return layout_; }
  [[nodiscard]] int bits() const noexcept { return bits_; }
  [[nodiscard]] std::size_t param_words_per_set() const noexcept { return words_per_set_; }
  [[nodiscard]] Index rows() const noexcept { return layout_.rows; }
  [[nodiscard]] Index cols() const noexcept { return layout_.cols; }
  [[nodiscard]] Index row_bytes() const noexcept { return (layout_.vectors_per_row() * bits_ + 7) / 8; }
  [[nodiscard]] const std::vector<std::uint8_t>& index_bytes() const noexcept { return indices_; }
  [[nodiscard]] const std::vector<std::uint16_t>& param_words() const noexcept { return words_; }
  [[nodiscard]] std::uint32_t index(Index r, Index j) const noexcept {
    return read_packed_index(indices_.data() + r * row_bytes(), j, bits_);
  }
  [[nodiscard]] double storage_bits_per_weight() const noexcept {
    return 8.0 * (static_cast<double>(indices_.size()) + 2.0 * static_cast<double>(words_.size())) /
           (static_cast<double>(rows()) * static_cast<double>(cols()));
  }

  template <VectorQuantizer V>
  friend VQPackedMatrix pack_vq(const VQMatrix<V>& m);

 private:
  VQLayout layout_{};
  int bits_ = 0;
  std::size_t words_per_set_ = 0;
  std::vector<std::uint8_t> indices_;
  std::vector<std::uint16_t> words_;
};

/// Packs a VQ matrix; throws qtl::Error if it is inconsistent or an index does not fit kBits.
template <VectorQuantizer V>
[[nodiscard]] VQPackedMatrix pack_vq(const VQMatrix<V>& m) {
  constexpr std::string_view kWhere = "pack_vq";
  require_nonempty(kWhere, "quantized matrix", m.rows(), m.cols());
  const VQLayout& L = m.layout;
  if (L.dim != V::kDim || static_cast<Index>(m.params.size()) != L.num_sets() ||
      static_cast<Index>(m.indices.size()) != L.rows * L.vectors_per_row()) {
    fail(kWhere, ": VQ matrix is inconsistent: dim ", L.dim, " (expected ", V::kDim, "), ", m.params.size(),
         " parameter sets (expected ", L.num_sets(), "), ", m.indices.size(), " indices (expected ",
         L.rows * L.vectors_per_row(), ")");
  }
  VQPackedMatrix out;
  out.layout_ = L;
  out.bits_ = V::kBits;
  out.words_per_set_ = V::kParamWords;
  for (const auto& p : m.params) m.quantizer.serialize(p, out.words_);
  if (out.words_.size() != V::kParamWords * m.params.size()) {
    fail(kWhere, ": ", m.quantizer.name(), " serialized ", out.words_.size(), " words for ", m.params.size(),
         " parameter sets of ", V::kParamWords);
  }
  out.indices_.assign(static_cast<std::size_t>(L.rows * out.row_bytes()), 0);
  for (Index r = 0; r < L.rows; ++r) {
    for (Index j = 0; j < L.vectors_per_row(); ++j) {
      const std::uint32_t v = m.index(r, j);
      if (V::kBits < 32 && v >> V::kBits) fail(kWhere, ": index ", v, " at (", r, ", ", j, ") exceeds ", V::kBits, " bits");
      write_packed_index(out.indices_.data() + r * out.row_bytes(), j, V::kBits, v);
    }
  }
  return out;
}

/// Recovers the exact VQMatrix; `v` supplies what the format does not store (the quantizer's
/// options). Throws qtl::Error if the packed matrix was made by a quantizer of another shape.
template <VectorQuantizer V>
[[nodiscard]] VQMatrix<V> unpack_vq(const VQPackedMatrix& p, const V& v = V{}) {
  if (p.layout().dim != V::kDim || p.bits() != V::kBits || p.param_words_per_set() != V::kParamWords) {
    fail("unpack_vq: packed matrix has dim ", p.layout().dim, ", ", p.bits(), "-bit indices and ",
         p.param_words_per_set(), " words per set; ", v.name(), " has ", V::kDim, ", ", V::kBits, " and ",
         V::kParamWords);
  }
  VQMatrix<V> m;
  m.quantizer = v;
  m.layout = p.layout();
  for (Index s = 0; s < m.layout.num_sets(); ++s) {
    m.params.push_back(v.deserialize(p.param_words().data() + static_cast<std::size_t>(s) * V::kParamWords));
  }
  m.indices.resize(static_cast<std::size_t>(m.layout.rows * m.layout.vectors_per_row()));
  for (Index r = 0; r < m.layout.rows; ++r) {
    for (Index j = 0; j < m.layout.vectors_per_row(); ++j) {
      m.indices[static_cast<std::size_t>(r * m.layout.vectors_per_row() + j)] = p.index(r, j);
    }
  }
  return m;
}

/// Plain view of a packed KMeansVQ matrix (or E8P: `codebooks` then holds one fp16 scale per set).
struct PackedVQView {
  const std::uint8_t* indices = nullptr;
  const std::uint16_t* params = nullptr;  ///< fp16 words, words_per_set per set
  int bits = 0;
  int dim = 0;
  std::ptrdiff_t rows = 0;
  std::ptrdiff_t cols = 0;
  std::ptrdiff_t vectors_per_row = 0;
  std::ptrdiff_t row_bytes = 0;
  std::ptrdiff_t rows_per_set = 0;
  std::ptrdiff_t words_per_set = 0;
};

[[nodiscard]] inline PackedVQView view(const VQPackedMatrix& p) noexcept {
  PackedVQView v;
  v.indices = p.index_bytes().data();
  v.params = p.param_words().data();
  v.bits = p.bits();
  v.dim = p.layout().dim;
  v.rows = p.rows();
  v.cols = p.cols();
  v.vectors_per_row = p.layout().vectors_per_row();
  v.row_bytes = p.row_bytes();
  v.rows_per_set = p.layout().rows_per_set;
  v.words_per_set = static_cast<std::ptrdiff_t>(p.param_words_per_set());
  return v;
}

}  // namespace qtl
