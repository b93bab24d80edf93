// qtl/kernel/layout_table.hpp — the kernel layout of table-format weights (kernel family 2).
//
// The table format (qtl/format/table_packed.hpp) stores 32-code blocks per row; a weight is
// W(r, c) = T_p[code(r, c)] with a 16-entry table per parameter set p. The kernels decode 16
// codes at once with one permute through that table (vpermps: each 32-bit lane of the index
// vector selects a float of the table by its low 4 bits), so the layout puts, in one 64-byte
// vector, 16 lanes each holding the codes of one column position j = 0..15 for several
// consecutive 16-column "slices": lane j, bits [b*k, b*k + b) = code of column 16 k + j of the
// chunk. A right shift by b*k brings slice k's codes to the low bits; the permute ignores the
// rest when the table is replicated: the kernel table is T16[i] = T[i mod 2^b] (i = 0..15), so
// bits above the code's own are don't-cares and no mask is needed.
//
// Geometry (for every row alike):
//   Columns are grouped into the quantizer's parameter groups (one group for PerRow/PerTensor);
//   each group of width w_g takes ceil(w_g / 16) slices of 16 kernel columns (the last one
//   padded), so a slice lies inside one group and uses one table. Padded kernel columns hold
//   code 0 and meet activation 0 (the activation preparation writes 0 there).
//   Slices are stored in chunks of S = 32 / b slices (b = 1, 2, 4) or S = 32 (b = 3):
//     b = 1, 2, 4   64 bytes: uint32 lane j, bits [b k, b k + b) = code of slice k, column j
//     b = 3         192 bytes: two 64-byte "lo" vectors as b = 2 (vector k / 16, bits
//                   [2 (k % 16), 2 (k % 16) + 2) = the low 2 bits of slice k's code), then 64
//                   bytes "hi": uint32 lane j, bit k = bit 2 of slice k's code, column j (a rotate
//                   right by k - 2 brings it to bit 2 of the permute index; 3 bits per weight)
//   Rows are grouped into tiles of kTableTileRows = 4 (the last tile padded with rows whose
//   tables are 0). Tile t, chunk c, row i of the tile lives at
//     codes + (t * chunks + c) * 4 * chunk_bytes + i * chunk_bytes
//   so one GEMV streams each tile's codes in address order, 4 rows at a time (4 independent
//   FMA chains that share every activation load).
// Parameters, per tile t, group g, row i of the tile (p = (t * groups + g) * 4 + i):
//   ScaledShared  scales[p]: fp32 scale (exactly half_to_float of the stored fp16); the kernel
//                 table is scale * shared16 (the same float products as the reference).
//   PerSet        tables[(p << b) + k]: the 2^b fp16 entries, widened and replicated per use.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "qtl/detail/aligned_buffer.hpp"
#include "qtl/detail/fp16.hpp"
#include "qtl/format/table_packed.hpp"
#include "qtl/kernel/group_blocks.hpp"

namespace qtl::kernel {

inline constexpr int kTableTileRows = 4;
inline constexpr int kTableSliceCols = 16;

/// Slices per chunk for b-bit codes.
[[nodiscard]] constexpr int table_chunk_slices(int bits) noexcept { return bits == 3 ? 32 : 32 / bits; }
/// Bytes per chunk (of one row) for b-bit codes.
[[nodiscard]] constexpr std::ptrdiff_t table_chunk_bytes(int bits) noexcept { return bits == 3 ? 192 : 64; }

namespace detail_table {

/// 33 vectors of 16 equal uint32 shift counts (0..32), loaded as the count operand of
/// vpsrlvd / vprorvd (AVX2: vpsrlvd / vpsllvd) so that no count is built in a register per slice.
struct ShiftCounts {
  alignas(64) std::uint32_t v[33][16];
};
constexpr ShiftCounts make_shift_counts() noexcept {
  ShiftCounts c{};
  for (std::uint32_t k = 0; k < 33; ++k) {
    for (int j = 0; j < 16; ++j) c.v[k][j] = k;
  }
  return c;
}
inline constexpr ShiftCounts kShiftCounts = make_shift_counts();

}  // namespace detail_table

/// What a kernel sees: plain data, no ownership.
struct TableKernelView {
  const std::uint8_t* codes = nullptr;
  const float* scales = nullptr;          ///< ScaledShared: per (tile, group, row)
  const std::uint16_t* tables = nullptr;  ///< PerSet: 2^bits fp16 per (tile, group, row)
  const float* shared16 = nullptr;        ///< ScaledShared: 16 floats, T[i mod 2^bits]
  int bits = 4;
  TableForm form = TableForm::ScaledShared;
  std::ptrdiff_t rows = 0;
  std::ptrdiff_t cols = 0;
  std::ptrdiff_t tiles = 0;    ///< ceil(rows / 4)
  std::ptrdiff_t groups = 0;   ///< parameter groups per row (>= 1)
  std::ptrdiff_t slices = 0;   ///< kernel slices per row (after per-group padding)
  std::ptrdiff_t chunks = 0;   ///< ceil(slices / chunk_slices)
  const std::int32_t* group_slice_begin = nullptr;  ///< groups + 1 entries
  const std::int32_t* group_col_begin = nullptr;    ///< groups + 1 entries

  /// Kernel columns per row (the prepared activations' length).
  [[nodiscard]] std::ptrdiff_t kernel_cols() const noexcept { return slices * kTableSliceCols; }
  /// Chunk c of row i of tile t.
  [[nodiscard]] const std::uint8_t* chunk(std::ptrdiff_t t, std::ptrdiff_t c, int i) const noexcept {
    const std::ptrdiff_t cb = table_chunk_bytes(bits);
    return codes + (t * chunks + c) * kTableTileRows * cb + i * cb;
  }
  [[nodiscard]] std::ptrdiff_t param_index(std::ptrdiff_t t, std::ptrdiff_t g, int i) const noexcept {
    return (t * groups + g) * kTableTileRows + i;
  }
};

/// The code of kernel column kc (slice kc / 16, lane kc % 16) of row i of tile t.
[[nodiscard]] inline int table_kernel_code(const TableKernelView& v, std::ptrdiff_t t, int i,
                                           std::ptrdiff_t kc) noexcept {
  const int sc = table_chunk_slices(v.bits);
  const std::ptrdiff_t s = kc / kTableSliceCols;
  const int j = static_cast<int>(kc % kTableSliceCols);
  const int k = static_cast<int>(s % sc);
  const std::uint8_t* ch = v.chunk(t, s / sc, i);
  auto lane = [&](std::ptrdiff_t off) {
    std::uint32_t u = 0;
    for (int b = 0; b < 4; ++b) u |= std::uint32_t{ch[off + 4 * j + b]} << (8 * b);
    return u;
  };
  if (v.bits != 3) return static_cast<int>((lane(0) >> (v.bits * k)) & ((1u << v.bits) - 1u));
  const std::uint32_t lo = (lane(64 * (k / 16)) >> (2 * (k % 16))) & 3u;
  return static_cast<int>(lo | ((lane(128) >> k) & 1u) << 2);
}

/// Owns a repacked table matrix.
class TableKernelLayout {
 public:
  TableKernelLayout() = default;

  /// Repacks a table-packed matrix (the caller has validated it: non-empty, bits 1..4).
  explicit TableKernelLayout(const PackedTableView& w) {
    bits_ = w.bits;
    form_ = w.form;
    rows_ = w.rows;
    cols_ = w.cols;
    geo_ = GroupBlocks(w.cols, w.groups_per_row <= 1 ? 1 : w.groups_per_row, w.group_size, kTableSliceCols);
    groups_ = geo_.groups;
    slices_ = geo_.blocks;
    const std::ptrdiff_t ns = slices_;
    const int sc = table_chunk_slices(bits_);
    chunks_ = (ns + sc - 1) / sc;
    tiles_ = (w.rows + kTableTileRows - 1) / kTableTileRows;
    const std::ptrdiff_t cb = table_chunk_bytes(bits_);
    codes_ = detail::AlignedBuffer(static_cast<std::size_t>(tiles_ * chunks_ * kTableTileRows * cb));
    const std::ptrdiff_t n_params = tiles_ * groups_ * kTableTileRows;
    const int n = 1 << bits_;
    if (form_ == TableForm::ScaledShared) {
      scales_.assign(static_cast<std::size_t>(n_params), 0.0f);
      for (int k = 0; k < 16; ++k) shared16_[static_cast<std::size_t>(k)] = w.shared_table[k % n];
    } else {
      tables_.assign(static_cast<std::size_t>(n_params << bits_), 0);
    }

    const std::ptrdiff_t src_block_bytes = static_cast<std::ptrdiff_t>(table_block_bytes(bits_));
    for (std::ptrdiff_t row = 0; row < w.rows; ++row) {
      const std::ptrdiff_t t = row / kTableTileRows;
      const int i = static_cast<int>(row % kTableTileRows);
      const std::uint8_t* src_row = w.codes + row * w.row_bytes;
      for (std::ptrdiff_t g = 0; g < groups_; ++g) {
        const std::ptrdiff_t p = w.groups_per_row == 0 ? 0 : row * w.groups_per_row + g;
        const std::ptrdiff_t q = (t * groups_ + g) * kTableTileRows + i;
        if (form_ == TableForm::ScaledShared) {
          scales_[static_cast<std::size_t>(q)] = detail::half_to_float(w.scales[p]);
        } else {
          for (int k = 0; k < n; ++k) tables_[static_cast<std::size_t>((q << bits_) + k)] = w.tables[(p << bits_) + k];
        }
        const std::ptrdiff_t c0 = geo_.col0(g), c1 = geo_.col1(g);
        for (std::ptrdiff_t c = c0; c < c1; ++c) {
          const int code = table_code_in_block(bits_, src_row + (c / kCodesPerBlock) * src_block_bytes,
                                               static_cast<int>(c % kCodesPerBlock));
          set_code(t, i, geo_.block0(g) * kTableSliceCols + (c - c0), code);
        }
      }
    }
  }

  [[nodiscard]] TableKernelView view() const noexcept {
    TableKernelView v;
    v.codes = codes_.data();
    v.scales = scales_.data();
    v.tables = tables_.data();
    v.shared16 = shared16_.data();
    v.bits = bits_;
    v.form = form_;
    v.rows = rows_;
    v.cols = cols_;
    v.tiles = tiles_;
    v.groups = groups_;
    v.slices = slices_;
    v.chunks = chunks_;
    v.group_slice_begin = geo_.block_begin.data();
    v.group_col_begin = geo_.col_begin.data();
    return v;
  }

  /// Bytes a GEMV reads: codes (padding included) and parameters.
  [[nodiscard]] std::size_t bytes() const noexcept {
    return codes_.size() + scales_.size() * sizeof(float) + tables_.size() * sizeof(std::uint16_t) +
           (form_ == TableForm::ScaledShared ? sizeof(shared16_) : 0);
  }

 private:
  void set_code(std::ptrdiff_t t, int i, std::ptrdiff_t kc, int code) noexcept {
    const int sc = table_chunk_slices(bits_);
    const std::ptrdiff_t cb = table_chunk_bytes(bits_);
    const std::ptrdiff_t s = kc / kTableSliceCols;
    const int j = static_cast<int>(kc % kTableSliceCols);
    const int k = static_cast<int>(s % sc);
    std::uint8_t* ch = codes_.data() + (t * chunks_ + s / sc) * kTableTileRows * cb + i * cb;
    const auto u = static_cast<std::uint32_t>(code);
    auto or_lane = [&](std::ptrdiff_t off, std::uint32_t bits) {
      for (int b = 0; b < 4; ++b) ch[off + 4 * j + b] = static_cast<std::uint8_t>(ch[off + 4 * j + b] | (bits >> (8 * b)));
    };
    if (bits_ != 3) {
      or_lane(0, (u & ((1u << bits_) - 1u)) << (bits_ * k));
    } else {
      or_lane(64 * (k / 16), (u & 3u) << (2 * (k % 16)));
      or_lane(128, ((u >> 2) & 1u) << k);
    }
  }

  int bits_ = 0;
  TableForm form_ = TableForm::ScaledShared;
  std::ptrdiff_t rows_ = 0, cols_ = 0, tiles_ = 0, groups_ = 0, slices_ = 0, chunks_ = 0;
  GroupBlocks geo_;  // blocks = 16-column slices
  detail::AlignedBuffer codes_;
  std::vector<float> scales_;
  std::vector<std::uint16_t> tables_;
  std::array<float, 16> shared16_{};
};

}  // namespace qtl::kernel
