// qtl/kernel/table/layout.hpp — the kernel layout of table-format weights (kernel family 2).
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
//   Slices are stored in chunks of S = floor(32 / b) slices (32, 16, 10, 8 for b = 1..4), 64
//   bytes per row: uint32 lane j, bits [b k, b k + b) = code of slice k, column j. For b = 3 the
//   lane's top 2 bits are 0 (3.2 bits per weight): one shift per slice decodes it, as for the
//   other widths, where splitting the code into a 2-bit plane and a 1-bit plane (exactly 3 bits
//   per weight, the layout before this one) took three vector operations per slice (shift,
//   rotate, merge), and the fp32 table GEMV is bound by those operations, not by bandwidth: on a
//   2-core AMD EPYC (Zen 4) VM, log2 3-bit, 4096 x 14336, it read 19-35% of the read bandwidth.
//   There a cache-resident 256 x 4096 GEMV went from 4.3 to 2.1 cycles per 16 weights (AVX-512)
//   and 8.0 to 3.4 (AVX2), and the streamed 4096 x 14336 one from 4.3-4.9 to 3.0-3.2 ms (1 thread)
//   and 2.2-3.0 to 1.6-1.8 ms (2 threads; table_kernel_matrix_bench, old and new binaries
//   alternated twice): 6.7% more bytes for half the work.
//   Rows are grouped into tiles of kTableTileRows = 4 (the last tile padded with rows whose
//   tables are 0). Tile t, chunk c, row i of the tile lives at
//     codes + (t * chunks + c) * 4 * chunk_bytes + i * chunk_bytes
//   so one GEMV streams each tile's codes in address order, 4 rows at a time (4 independent
//   FMA chains that share every activation load).
// Parameters, per tile t, group g, row i of the tile (p = (t * groups + g) * 4 + i):
//   ScaledShared  scales[p]: fp32 scale (exactly half_to_float of the stored fp16); the kernel
//                 table is scale * shared16 (the same float products as the reference).
//   PerSet        tables[(p << b) + k]: the 2^b fp16 entries, widened and replicated per use.
//
// This header is the plain view the kernels read (TableKernelView, no ownership, no Eigen: the
// per-ISA kernels include it); qtl/kernel/table/repack.hpp builds it from a table-packed matrix.
#pragma once

#include <cstddef>
#include <cstdint>

#include "qtl/quant/table_form.hpp"

namespace qtl::kernel {

inline constexpr int kTableTileRows = 4;
inline constexpr int kTableSliceCols = 16;

/// Slices per chunk for b-bit codes.
[[nodiscard]] constexpr int table_chunk_slices(int bits) noexcept { return 32 / bits; }
/// Bytes per chunk (of one row) for b-bit codes.
[[nodiscard]] constexpr std::ptrdiff_t table_chunk_bytes(int /*bits*/) noexcept { return 64; }

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
  std::uint32_t lane = 0;
  for (int b = 0; b < 4; ++b) lane |= std::uint32_t{ch[4 * j + b]} << (8 * b);
  return static_cast<int>((lane >> (v.bits * k)) & ((1u << v.bits) - 1u));
}

}  // namespace qtl::kernel
