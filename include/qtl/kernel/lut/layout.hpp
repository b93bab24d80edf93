// qtl/kernel/lut/layout.hpp — the bit-plane layout of the lookup-table kernels (kernel family 3)
// for 1-bit and ternary weights, and the per-token lookup tables of the activations.
//
// Idea (T-MAC, Wei et al., EuroSys'25, arXiv 2407.00088; bitnet.cpp TL1/TL2): write every weight
// as an affine function of sign planes s = 2b - 1 (b in {0, 1}); then for 4 consecutive columns
// the 4 bits of one row form a 4-bit index k, and sum_i s_i(k) a_i over those columns is one of
// 16 numbers that depend only on the activations. Precompute them once per token, and a single
// pshufb looks up 16 rows (one 128-bit lane) at once; the cost scales with the planes, not with
// multiplies.
//
// Weights (exact decompositions, c and m per row and parameter group):
//   Binary       w = alpha (2b - 1)                        1 plane   c = alpha
//   BinaryShift  w = lo + (hi - lo) b = m + c (2b - 1)     1 plane   c = (hi - lo) / 2, m = (hi + lo) / 2
//   Ternary      w = alpha t, t in {-1, 0, 1}:              2 planes  c = alpha / 2
//                u = [t >= 0], v = [t > 0], t = ((2u - 1) + (2v - 1)) / 2
// so y_r = sum_g [ c_rg sum_{b in g} d_b S_rb + m_rg gsum_g ] with the exact integer
//   S_rb = sum_{c in b} (sum over planes of s(r, c)) a_c     (a: int8 activations of block b).
//
// Geometry. As qtl/kernel/uniform/layout.hpp: every parameter group of width w_g is stored as
// ceil(w_g / 32) kernel blocks of 32 columns (padded columns hold bit 0 and meet activation 0,
// so they add nothing), rows are grouped into tiles (64 rows for 1 plane, 32 for 2 planes; the
// last tile is padded with rows whose parameters are 0). A tile is
//   [ params: groups x fields x tile_rows fp16, padded to 64 bytes ][ blocks x 256 bytes ]
// and both tile heights make one (tile, block) exactly 256 bytes = 4 units of 64 bytes.
//
// Unit u (0..3) of a (tile, block), byte j = 16 L + i (L = 128-bit lane 0..3, i = 0..15):
//   low nibble  = 4 bits of column group u     (block columns 4u .. 4u+3,       bit k = column 4u+k)
//   high nibble = 4 bits of column group u + 4 (block columns 16+4u .. 16+4u+3, bit k = column 16+4u+k)
//   1 plane:  row 16 L + i
//   2 planes: row 8 L + i / 2, plane i % 2 (0 = u, 1 = v): the two planes of one row sit in
//             adjacent bytes and use the same table, so one vpmaddubsw adds them.
// All 4 lanes of a unit use the same two tables (column groups u and u + 4), broadcast.
//
// Parameters are stored per (tile, group) in "slot" order, the order in which the SIMD kernels
// produce their 16-float result vectors (so no permutation is needed in the hot loop):
//   slot = 16 v + 4 L + q  (vector v, lane L, int32 element q):
//   1 plane:  row 16 L + 4 q + {0, 2, 1, 3}[v]      2 planes: row 8 L + 2 q + v
// Field 0 is alpha (Binary, Ternary) or lo (BinaryShift), field 1 is hi (BinaryShift only).
//
// Activation tables (per token, per kernel block b, per column group j = 0..7; 32 bytes):
//   L_k = sum_{i=0..3} (bit i of k ? +a : -a)_{32 b + 4 j + i},   |L_k| <= 4 * 127 = 508,
//   bytes 0..15 = L_k & 0xFF (unsigned), bytes 16..31 = L_k >> 8 (signed, in {-2, -1, 0, 1})
// so a lookup sum is exact: sum L = sum lo + 256 sum hi (T-MAC's split of a wide table into byte
// tables). int8 activations come from qtl/kernel/uniform/quantize_activations.hpp (per block of 32,
// scale d_b = max|x| / 127).
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

#include "qtl/detail/aligned_buffer.hpp"
#include "qtl/kernel/common/group_blocks.hpp"

namespace qtl::kernel {

enum class LutWeights { Binary, BinaryShift, Ternary };

inline constexpr int kLutBlockCols = 32;
inline constexpr int kLutUnitBytes = 64;
inline constexpr int kLutUnitsPerBlock = 4;
inline constexpr int kLutBlockBytes = kLutUnitBytes * kLutUnitsPerBlock;  ///< per (tile, block)
inline constexpr int kLutGroupsPerBlock = 8;                               ///< 4-column groups
inline constexpr int kLutTableBytes = 32;                                  ///< per column group
inline constexpr int kLutBlockTableBytes = kLutGroupsPerBlock * kLutTableBytes;

[[nodiscard]] constexpr int lut_planes(LutWeights k) noexcept { return k == LutWeights::Ternary ? 2 : 1; }
[[nodiscard]] constexpr int lut_tile_rows(LutWeights k) noexcept { return k == LutWeights::Ternary ? 32 : 64; }
[[nodiscard]] constexpr int lut_param_fields(LutWeights k) noexcept { return k == LutWeights::BinaryShift ? 2 : 1; }

/// Row (within the tile) of parameter / result slot s.
[[nodiscard]] constexpr int lut_slot_row(LutWeights k, int s) noexcept {
  const int v = s / 16, lane = (s % 16) / 4, q = s % 4;
  if (k == LutWeights::Ternary) return 8 * lane + 2 * q + v;
  constexpr int kOff[4] = {0, 2, 1, 3};
  return 16 * lane + 4 * q + kOff[v];
}

/// Byte of a unit holding row r (within the tile), plane e.
[[nodiscard]] constexpr int lut_unit_byte(LutWeights k, int r, int e) noexcept {
  return k == LutWeights::Ternary ? 16 * (r / 8) + 2 * (r % 8) + e : r;
}

/// Row (within the tile) whose bits byte j of a unit holds (both planes' bytes give the same row).
[[nodiscard]] constexpr int lut_byte_row(LutWeights k, int j) noexcept {
  return k == LutWeights::Ternary ? 8 * (j / 16) + (j % 16) / 2 : j;
}

/// What a kernel sees: plain data, no ownership.
struct LutKernelView {
  const std::uint8_t* data = nullptr;
  LutWeights kind = LutWeights::Binary;
  std::ptrdiff_t rows = 0, cols = 0;
  std::ptrdiff_t tile_rows = 64;
  std::ptrdiff_t tiles = 0;
  std::ptrdiff_t groups = 0;        ///< parameter groups per row (>= 1)
  std::ptrdiff_t blocks = 0;        ///< kernel blocks per row (after per-group padding)
  std::ptrdiff_t params_bytes = 0;  ///< offset of the first block inside a tile
  std::ptrdiff_t tile_bytes = 0;
  const std::int32_t* group_block_begin = nullptr;  ///< groups + 1 entries
  const std::int32_t* group_col_begin = nullptr;    ///< groups + 1 entries

  [[nodiscard]] const std::uint8_t* tile(std::ptrdiff_t t) const noexcept { return data + t * tile_bytes; }
  /// fp16 parameters of (tile t, group g): fields x tile_rows, slot order.
  [[nodiscard]] const std::uint16_t* params(std::ptrdiff_t t, std::ptrdiff_t g) const noexcept {
    return reinterpret_cast<const std::uint16_t*>(tile(t)) + g * lut_param_fields(kind) * tile_rows;
  }
  [[nodiscard]] const std::uint8_t* block(std::ptrdiff_t t, std::ptrdiff_t b) const noexcept {
    return tile(t) + params_bytes + b * kLutBlockBytes;
  }
};

/// Owns a repacked matrix. Built from a source with
///   int  src.bits(r, c)      the plane bits of W(r, c): bit 0 = first plane, bit 1 = second
///   std::uint16_t src.param(r, g, field)   fp16 parameter `field` of row r, group g
/// (the caller has validated the source; see qtl/kernel/lut/kernel_matrix.hpp).
class LutKernelLayout {
 public:
  LutKernelLayout() = default;

  template <class Source>
  LutKernelLayout(LutWeights kind, std::ptrdiff_t rows, std::ptrdiff_t cols, std::ptrdiff_t group_size,
                  const Source& src)
      : kind_(kind), rows_(rows), cols_(cols) {
    geo_ = GroupBlocks(cols, group_size <= 0 || group_size >= cols ? 1 : (cols + group_size - 1) / group_size,
                       group_size, kLutBlockCols);
    const std::ptrdiff_t groups = geo_.groups, nb = geo_.blocks;
    const int tr = lut_tile_rows(kind), fields = lut_param_fields(kind), planes = lut_planes(kind);
    tiles_ = (rows + tr - 1) / tr;
    params_bytes_ = (groups * fields * tr * 2 + 63) / 64 * 64;
    tile_bytes_ = params_bytes_ + nb * kLutBlockBytes;
    buffer_ = detail::AlignedBuffer(static_cast<std::size_t>(tiles_ * tile_bytes_));
    std::memset(buffer_.data(), 0, buffer_.size());
    for (std::ptrdiff_t t = 0; t < tiles_; ++t) {
      std::uint8_t* tile = buffer_.data() + t * tile_bytes_;
      auto* params = reinterpret_cast<std::uint16_t*>(tile);
      for (int s = 0; s < tr; ++s) {
        const std::ptrdiff_t row = t * tr + lut_slot_row(kind, s);
        if (row >= rows) continue;  // padding rows: parameters 0
        for (std::ptrdiff_t g = 0; g < groups; ++g) {
          for (int f = 0; f < fields; ++f) params[(g * fields + f) * tr + s] = src.param(row, g, f);
        }
      }
      for (int r = 0; r < tr; ++r) {
        const std::ptrdiff_t row = t * tr + r;
        if (row >= rows) break;  // padding rows: bits 0
        for (std::ptrdiff_t g = 0; g < groups; ++g) {
          const std::ptrdiff_t c0 = geo_.col0(g), c1 = geo_.col1(g);
          for (std::ptrdiff_t c = c0; c < c1; ++c) {
            const std::ptrdiff_t b = geo_.block0(g) + (c - c0) / kLutBlockCols;
            const int k = static_cast<int>((c - c0) % kLutBlockCols);
            const int unit = (k % 16) / 4, shift = 4 * (k / 16) + k % 4;
            std::uint8_t* u = tile + params_bytes_ + b * kLutBlockBytes + unit * kLutUnitBytes;
            const int bits = src.bits(row, c);
            for (int e = 0; e < planes; ++e) {
              if ((bits >> e) & 1) u[lut_unit_byte(kind, r, e)] |= static_cast<std::uint8_t>(1u << shift);
            }
          }
        }
      }
    }
  }

  [[nodiscard]] LutKernelView view() const noexcept {
    LutKernelView v;
    v.data = buffer_.data();
    v.kind = kind_;
    v.rows = rows_;
    v.cols = cols_;
    v.tile_rows = lut_tile_rows(kind_);
    v.tiles = tiles_;
    v.groups = geo_.groups;
    v.blocks = geo_.blocks;
    v.params_bytes = params_bytes_;
    v.tile_bytes = tile_bytes_;
    v.group_block_begin = geo_.block_begin.data();
    v.group_col_begin = geo_.col_begin.data();
    return v;
  }

  /// Bytes a GEMV reads from this layout (every tile, padding included).
  [[nodiscard]] std::size_t bytes() const noexcept { return buffer_.size(); }

 private:
  LutWeights kind_ = LutWeights::Binary;
  std::ptrdiff_t rows_ = 0, cols_ = 0, tiles_ = 0;
  std::ptrdiff_t params_bytes_ = 0, tile_bytes_ = 0;
  GroupBlocks geo_;
  detail::AlignedBuffer buffer_;
};

/// What PreparedLutActivations holds per token and block: the lookup tables (every path) or the
/// int8 codes and the start of their sums (the AVX-512 VNNI GEMM, qtl/kernel/lut/avx512vnni.hpp).
enum class LutActivationForm { Tables, Codes };

/// Plain view of the prepared activations of m tokens (token n at offset n * per-token size).
struct LutActivationSet {
  const std::uint8_t* tables = nullptr;  ///< blocks * kLutBlockTableBytes per token
  const float* d = nullptr;              ///< blocks per token: int8 block scales
  const float* gsum = nullptr;           ///< groups per token: sum_{b in g} d_b A_b
  std::ptrdiff_t m = 0, blocks = 0, groups = 0;
  /// Codes form (LutActivationForm::Codes; tables is then null): the int8 activations,
  /// kLutBlockCols per block (padding 0), and per block -A_b (ternary: -2 A_b), A_b = their sum.
  const std::int8_t* q = nullptr;
  const std::int32_t* init = nullptr;
};

// The order in which every path (portable, AVX2, AVX-512) visits (tile, token) pairs, shared so
// that it cannot differ between them. One (tile, token) reads as many table bytes as weight
// bytes (256 each per kernel block), so the plain order, tile by tile and every token inside,
// streams all tokens' tables once per tile: 114 KB per token for 14336 columns, 58 MB for 512
// tokens, read again for each of the 128 tiles of 4096 ternary rows. With several tokens the
// loop is blocked instead: kLutChunkTokens tokens x kLutChunkRows rows x whole parameter groups
// of about kLutChunkBlocks blocks, so that the chunk's tables (16 x 32 x 256 = 128 KB) and
// weights (128 KB) stay in L2 and each weight byte is reused by 16 tokens from L1. A (tile,
// token)'s running sum is kept in a small buffer between group chunks and the groups are visited
// in the same order, so the float steps, and so the results, are those of the plain order. The
// AVX-512 VNNI GEMM (codes form, qtl/kernel/lut/avx512vnni.hpp) visits the same chunks, taking
// the chunk's tokens of one tile together, 8 at a time in registers.
inline constexpr std::ptrdiff_t kLutChunkTokens = 16;
inline constexpr std::ptrdiff_t kLutChunkRows = 512;
inline constexpr std::ptrdiff_t kLutChunkBlocks = 32;
inline constexpr std::ptrdiff_t kLutBlockedMinTokens = 4;  ///< fewer tokens: the plain order

/// Runs tile_tokens(t, n0, n1, g0, g1, acc, resume) for tiles [t0, t1) x tokens [0, m) and writes
/// Y. tile_tokens adds groups [g0, g1) of tile t for tokens [n0, n1) to acc (token n0's tile rows
/// at acc[0 .. tile rows), slot order, the next token's kTr floats further; starting from acc's
/// values if resume, else from 0). In the plain order (m < kLutBlockedMinTokens) it gets one token
/// at a time.
template <LutWeights K, class TileTokens>
inline void lut_run_tile_ranges(const LutKernelView& w, std::ptrdiff_t m, float* y, std::ptrdiff_t ldy,
                                std::ptrdiff_t t0, std::ptrdiff_t t1, TileTokens&& tile_tokens) noexcept {
  constexpr int kTr = lut_tile_rows(K);
  int slot_row[kTr];
  for (int s = 0; s < kTr; ++s) slot_row[s] = lut_slot_row(K, s);
  auto store = [&](std::ptrdiff_t t, std::ptrdiff_t n, const float* acc) {
    const std::ptrdiff_t row0 = t * kTr;
    float* yn = y + n * ldy + row0;
    if (row0 + kTr <= w.rows) {
      for (int s = 0; s < kTr; ++s) yn[slot_row[s]] = acc[s];
    } else {
      for (int s = 0; s < kTr; ++s) {
        if (row0 + slot_row[s] < w.rows) yn[slot_row[s]] = acc[s];
      }
    }
  };
  if (m < kLutBlockedMinTokens) {
    alignas(64) float acc[kTr];
    for (std::ptrdiff_t t = t0; t < t1; ++t) {
      for (std::ptrdiff_t n = 0; n < m; ++n) {
        tile_tokens(t, n, n + 1, std::ptrdiff_t{0}, w.groups, acc, false);
        store(t, n, acc);
      }
    }
    return;
  }
  constexpr std::ptrdiff_t kTiles = kLutChunkRows / kTr;
  alignas(64) float acc[kTiles * kLutChunkTokens * kTr];
  for (std::ptrdiff_t n0 = 0; n0 < m; n0 += kLutChunkTokens) {
    const std::ptrdiff_t n1 = n0 + kLutChunkTokens < m ? n0 + kLutChunkTokens : m, nt = n1 - n0;
    for (std::ptrdiff_t tc = t0; tc < t1; tc += kTiles) {
      const std::ptrdiff_t tc1 = tc + kTiles < t1 ? tc + kTiles : t1;
      for (std::ptrdiff_t g0 = 0, g1 = 0; g0 < w.groups; g0 = g1) {
        g1 = g0 + 1;  // whole groups, at least one, up to kLutChunkBlocks blocks
        while (g1 < w.groups && w.group_block_begin[g1 + 1] - w.group_block_begin[g0] <= kLutChunkBlocks) ++g1;
        for (std::ptrdiff_t t = tc; t < tc1; ++t) tile_tokens(t, n0, n1, g0, g1, acc + (t - tc) * nt * kTr, g0 > 0);
      }
      for (std::ptrdiff_t t = tc; t < tc1; ++t) {
        for (std::ptrdiff_t n = n0; n < n1; ++n) store(t, n, acc + ((t - tc) * nt + (n - n0)) * kTr);
      }
    }
  }
}

/// lut_run_tile_ranges with a kernel of one token at a time: tile_token(t, n, g0, g1, acc, resume).
template <LutWeights K, class TileToken>
inline void lut_run_tiles(const LutKernelView& w, std::ptrdiff_t m, float* y, std::ptrdiff_t ldy, std::ptrdiff_t t0,
                          std::ptrdiff_t t1, TileToken&& tile_token) noexcept {
  constexpr int kTr = lut_tile_rows(K);
  lut_run_tile_ranges<K>(w, m, y, ldy, t0, t1,
                         [&](std::ptrdiff_t t, std::ptrdiff_t n0, std::ptrdiff_t n1, std::ptrdiff_t g0,
                             std::ptrdiff_t g1, float* acc, bool resume) {
                           for (std::ptrdiff_t n = n0; n < n1; ++n) tile_token(t, n, g0, g1, acc + (n - n0) * kTr, resume);
                         });
}

/// The 32-byte table of 4 int8 activations (see the header comment).
inline void build_lut_group(const std::int8_t* a, std::uint8_t* out) noexcept {
  for (int k = 0; k < 16; ++k) {
    int v = 0;
    for (int i = 0; i < 4; ++i) v += ((k >> i) & 1) ? a[i] : -a[i];
    out[k] = static_cast<std::uint8_t>(v & 0xFF);
    out[16 + k] = static_cast<std::uint8_t>(static_cast<std::int8_t>(v >> 8));
  }
}

/// The 16-bit table entry k of a 32-byte table.
[[nodiscard]] inline int lut_entry(const std::uint8_t* table, int k) noexcept {
  return static_cast<int>(table[k]) + 256 * static_cast<int>(static_cast<std::int8_t>(table[16 + k]));
}

}  // namespace qtl::kernel
