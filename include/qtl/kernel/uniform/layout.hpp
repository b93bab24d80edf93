// qtl/kernel/uniform/layout.hpp — the kernel layout of uniform (integer-affine) weights.
//
// A PackedMatrix (qtl/format/packed_matrix.hpp) stores each row's codes in 32-code blocks; that
// is a storage format. The kernels want, for one instruction, the same 4 columns of 16 rows side
// by side, so that a 32-bit lane holds 4 codes of one row and a 16-lane int32 accumulator holds
// 16 rows (vpdpbusd multiplies 4 unsigned bytes by 4 signed bytes and adds them into one int32
// lane: with lane = row, no horizontal sums are ever needed; ggml's block_q4_0x8 and FBGEMM's
// packed B interleave rows for the same reason). This header defines that layout and repacks a
// PackedMatrix into it, once.
//
// Geometry. Rows are grouped into tiles of kTileRows = 16 (the last tile is padded with rows
// whose scale is 0). Columns are grouped into the quantizer's groups (one group per row for
// PerRow and PerTensor); each group of width w_g is stored as ceil(w_g / 32) kernel blocks of 32
// columns, the last one padded. So every kernel block lies inside exactly one group and has one
// scale and zero point per row; for group sizes that are multiples of 32 (or one group per row)
// the blocks are just the 32-column blocks of the row. A group of 7 columns takes a whole block:
// correct, and wasteful only for such unusual groupings. Padded columns hold code 0 and meet
// activation 0 (the activation preparation writes 0 there), so they add nothing.
//
// One tile, at tile_bytes * t from the start (64-byte aligned):
//   [ params[groups] ][ padding to 64 ][ blocks * TileBlockQ<bits> ]
// params[g] is a TileGroupParams (48 bytes): scale[r] = fp16 bits of row r's scale for the
// group, zero[r] = its integer zero point; W(row, c) = scale * (code - zero). When every row and
// group has the same zero point (symmetric matrices: 2^(bits-1); the table family's int8 mode),
// params[g] is the 32 bytes of scale[] alone and the zero point is stored once, outside the
// tiles (UniformKernelView::uniform_zero, shared_zeros): a 4-bit group-32 matrix then streams
// 4.5 bits per weight, as llama.cpp's Q4_0, instead of 4.75. Kernels read the parameters through
// UniformKernelView::scales(t, g) and zeros(t, g), which hide the difference.
//
// TileBlockQ<bits> (64 * bits bytes) holds the 16 x 32 codes of one kernel block. "Operand t"
// (t = 0..7) is the 64-byte vector whose byte 4r + i is the code of row r, column 4t + i of the
// block; lane r (an int32) thus holds the 4 codes of row r for columns 4t..4t+3. Stored as:
//   Q8  qs[t][4r+i] = code                                          (8 x 64 bytes)
//   Q4  qs[j][4r+i]: low nibble = operand t = j, high nibble = operand t = j + 4   (4 x 64)
//   Q2  qs[j][4r+i]: bits 2s..2s+1 = operand t = j + 2s, j = 0..1, s = 0..3       (2 x 64)
//   Q3  ql as Q2 for the low 2 bits; qh[4r+i] bit t = bit 2 of operand t's code   (3 x 64)
//   Q5  ql as Q4 for the low 4 bits; qh[4r+i] bit t = bit 4 of operand t's code   (5 x 64)
//   Q6  ql as Q4 for the low 4 bits; qh[2][64] as Q2 for bits 4..5                (6 x 64)
// Bytes 0..31 of every 64-byte vector are rows 0..7, bytes 32..63 rows 8..15, so a 256-bit path
// reads each half as its own 8-row tile.
//
// Code map. A layout may carry a 16-byte code map (the table family's int8-activation mode,
// qtl/kernel/table/kernel_matrix.hpp): each 2/3/4-bit code is read through it first (one
// vpshufb per operand), so W(row, c) = s * (map[code] - z) with map values up to 255; the
// kernels then treat the mapped codes as they treat 8-bit codes.
//
// Zero-point correction. With activations x_c ≈ d_b a_c (int8 a, one scale d_b per block b,
// qtl/kernel/uniform/quantize_activations.hpp) and weights s (q - z) for group g:
//   y_r = sum_g s_rg [ sum_{b in g} d_b S_rb  -  z_rg * sum_{b in g} d_b A_b ],
//   S_rb = sum_{c in b} q_rc a_c  (the integer dot product),  A_b = sum_{c in b} a_c.
// The cross term needs only the activation block sums A_b, which depend on neither the row nor
// the weights; they are computed once per token, so the inner loop is the bare integer product
// (gemmlowp's row/column-sum trick; the weights need no sums because activations have no zero
// point). The fp32-activation path is the same with d_b a_c replaced by x_c.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>

#include "qtl/detail/aligned_buffer.hpp"
#include "qtl/detail/fp16.hpp"
#include "qtl/format/blocks.hpp"
#include "qtl/kernel/common/group_blocks.hpp"
#include "qtl/kernel/common/prefetch.hpp"

namespace qtl::kernel {

inline constexpr int kTileRows = 16;
inline constexpr int kBlockCols = 32;

struct TileGroupParams {
  std::uint16_t scale[kTileRows];  ///< fp16 bits
  std::uint8_t zero[kTileRows];
};
static_assert(sizeof(TileGroupParams) == 48 && std::is_trivially_copyable_v<TileGroupParams>);

template <int Bits>
struct TileBlockQ;
template <>
struct TileBlockQ<2> {
  std::uint8_t qs[2][64];
};
template <>
struct TileBlockQ<3> {
  std::uint8_t ql[2][64];
  std::uint8_t qh[64];
};
template <>
struct TileBlockQ<4> {
  std::uint8_t qs[4][64];
};
template <>
struct TileBlockQ<5> {
  std::uint8_t ql[4][64];
  std::uint8_t qh[64];
};
template <>
struct TileBlockQ<6> {
  std::uint8_t ql[4][64];
  std::uint8_t qh[2][64];
};
template <>
struct TileBlockQ<8> {
  std::uint8_t qs[8][64];
};
static_assert(sizeof(TileBlockQ<2>) == 128 && sizeof(TileBlockQ<3>) == 192 &&
              sizeof(TileBlockQ<4>) == 256 && sizeof(TileBlockQ<5>) == 320 &&
              sizeof(TileBlockQ<6>) == 384 && sizeof(TileBlockQ<8>) == 512);

[[nodiscard]] constexpr std::ptrdiff_t tile_block_bytes(int bits) noexcept { return 64 * bits; }

/// The code of row r (0..15), column k (0..31) of a tile block: the documented bit order.
[[nodiscard]] inline int tile_code(int bits, const std::uint8_t* block, int r, int k) noexcept {
  const int t = k / 4;
  const int byte = 4 * r + k % 4;
  switch (bits) {
    case 8: return block[64 * t + byte];
    case 4: return (block[64 * (t % 4) + byte] >> (4 * (t / 4))) & 15;
    case 2: return (block[64 * (t % 2) + byte] >> (2 * (t / 2))) & 3;
    case 3:
      return ((block[64 * (t % 2) + byte] >> (2 * (t / 2))) & 3) |
             (((block[128 + byte] >> t) & 1) << 2);
    case 5: return tile_code(4, block, r, k) | (((block[256 + byte] >> t) & 1) << 4);
    case 6: return tile_code(4, block, r, k) | (tile_code(2, block + 256, r, k) << 4);
    default: return 0;
  }
}

/// Writes the code of row r, column k into a zero-initialized tile block (inverse of tile_code).
inline void set_tile_code(int bits, std::uint8_t* block, int r, int k, int code) noexcept {
  const int t = k / 4;
  const int byte = 4 * r + k % 4;
  const auto u = static_cast<unsigned>(code);
  auto orb = [](std::uint8_t& b, unsigned v) { b = static_cast<std::uint8_t>(b | v); };
  switch (bits) {
    case 8: block[64 * t + byte] = static_cast<std::uint8_t>(u); break;
    case 4: orb(block[64 * (t % 4) + byte], (u & 15u) << (4 * (t / 4))); break;
    case 2: orb(block[64 * (t % 2) + byte], (u & 3u) << (2 * (t / 2))); break;
    case 3:
      orb(block[64 * (t % 2) + byte], (u & 3u) << (2 * (t / 2)));
      orb(block[128 + byte], ((u >> 2) & 1u) << t);
      break;
    case 5:
      set_tile_code(4, block, r, k, static_cast<int>(u & 15u));
      orb(block[256 + byte], ((u >> 4) & 1u) << t);
      break;
    case 6:
      set_tile_code(4, block, r, k, static_cast<int>(u & 15u));
      set_tile_code(2, block + 256, r, k, static_cast<int>((u >> 4) & 3u));
      break;
    default: break;
  }
}

/// What a kernel sees: plain data, no ownership.
struct UniformKernelView {
  const std::uint8_t* data = nullptr;
  int bits = 4;
  std::ptrdiff_t rows = 0;
  std::ptrdiff_t cols = 0;
  std::ptrdiff_t tiles = 0;         ///< ceil(rows / 16)
  std::ptrdiff_t groups = 0;        ///< parameter groups per row (>= 1)
  std::ptrdiff_t blocks = 0;        ///< kernel blocks per row (after per-group padding)
  std::ptrdiff_t params_bytes = 0;  ///< offset of the first code block inside a tile
  std::ptrdiff_t group_params_bytes = 48;  ///< 48 (TileGroupParams) or 32 (scales only, one zero point)
  std::ptrdiff_t tile_bytes = 0;    ///< distance between tiles
  const std::int32_t* group_block_begin = nullptr;  ///< groups + 1 entries: group g = blocks [gb[g], gb[g+1])
  const std::int32_t* group_col_begin = nullptr;    ///< groups + 1 entries: group g = columns [cb[g], cb[g+1])
  /// Null, or 16 bytes every code is read through before the product (code < 16): the weight
  /// is then scale * (code_map[code] - zero). Set only by the table family's int8 mode.
  const std::uint8_t* code_map = nullptr;
  /// How far ahead of the block being read the kernels prefetch the weight stream.
  PrefetchDistance prefetch;
  /// The zero point of every row and group when they all share one (0..255: symmetric
  /// matrices, the table family's int8 mode), else -1. Int8 activations then carry
  /// -zero * (block sum of the codes) per block (ActivationView::zsum), which the AVX-512 VNNI
  /// GEMM starts its integer sums from instead of subtracting zero * gsum in float.
  int uniform_zero = -1;
  /// 16 copies of uniform_zero when the tiles hold scales only (group_params_bytes 32), else null.
  const std::uint8_t* shared_zeros = nullptr;

  [[nodiscard]] const std::uint8_t* tile(std::ptrdiff_t t) const noexcept { return data + t * tile_bytes; }
  /// fp16 bits of the 16 rows' scales of tile t, group g.
  [[nodiscard]] const std::uint16_t* scales(std::ptrdiff_t t, std::ptrdiff_t g) const noexcept {
    return reinterpret_cast<const std::uint16_t*>(tile(t) + g * group_params_bytes);
  }
  /// The 16 rows' zero points of tile t, group g.
  [[nodiscard]] const std::uint8_t* zeros(std::ptrdiff_t t, std::ptrdiff_t g) const noexcept {
    return shared_zeros != nullptr ? shared_zeros : tile(t) + g * group_params_bytes + offsetof(TileGroupParams, zero);
  }
  [[nodiscard]] const std::uint8_t* block(std::ptrdiff_t t, std::ptrdiff_t b) const noexcept {
    return tile(t) + params_bytes + b * tile_block_bytes(bits);
  }
};

/// Owns a repacked matrix: the tiles and the group geometry.
class UniformKernelLayout {
 public:
  UniformKernelLayout() = default;

  /// Repacks a packed uniform matrix (bits 2, 3, 4, 5, 6 or 8; the caller has validated it).
  explicit UniformKernelLayout(const PackedUniformView& w) {
    const std::ptrdiff_t block_bytes = static_cast<std::ptrdiff_t>(code_block_bytes(w.bits));
    build(w.bits, w.rows, w.cols, w.group_size, w.groups_per_row,
          [&](std::ptrdiff_t row, std::ptrdiff_t c) {
            return code_in_block(w.bits, w.codes + row * w.row_bytes + (c / kCodesPerBlock) * block_bytes,
                                 static_cast<int>(c % kCodesPerBlock));
          },
          [&](std::ptrdiff_t p) {
            return ParamPair{w.scales[p], static_cast<std::uint8_t>(w.zeros ? w.zeros[p] : w.symmetric_zero)};
          });
  }

  /// Repacks codes read through a 16-entry code map (the table family's int8-activation mode,
  /// qtl/kernel/table/kernel_matrix.hpp): W(row, c) = scale(p) * (code_map[code(row, c)] - zero),
  /// p = row * groups_per_row + c / group_size (0 when groups_per_row is 0). `code(row, c)`
  /// returns codes < 16; `scale(p)` fp16 bits; tile_bits (2, 3 or 4) must hold every code.
  template <class CodeFn, class ScaleFn>
  UniformKernelLayout(int tile_bits, std::ptrdiff_t rows, std::ptrdiff_t cols, std::ptrdiff_t group_size,
                      std::ptrdiff_t groups_per_row, CodeFn code, ScaleFn scale, std::uint8_t zero,
                      const std::uint8_t (&code_map)[16]) {
    build(tile_bits, rows, cols, group_size, groups_per_row, code,
          [&](std::ptrdiff_t p) { return ParamPair{scale(p), zero}; });
    std::memcpy(code_map_, code_map, sizeof(code_map_));
    has_code_map_ = true;
  }

  [[nodiscard]] UniformKernelView view() const noexcept {
    UniformKernelView v;
    v.data = buffer_.data();
    v.bits = bits_;
    v.rows = rows_;
    v.cols = cols_;
    v.tiles = tiles_;
    v.groups = geo_.groups;
    v.blocks = geo_.blocks;
    v.params_bytes = params_bytes_;
    v.tile_bytes = tile_bytes_;
    v.group_block_begin = geo_.block_begin.data();
    v.group_col_begin = geo_.col_begin.data();
    v.code_map = has_code_map_ ? code_map_ : nullptr;
    v.prefetch = uniform_prefetch(bits_);
    v.uniform_zero = uniform_zero_;
    v.group_params_bytes = group_params_bytes_;
    v.shared_zeros = group_params_bytes_ == kScalesOnlyBytes ? shared_zeros_ : nullptr;
    return v;
  }

  /// Bytes a GEMV reads from this layout (every tile, padding included).
  [[nodiscard]] std::size_t bytes() const noexcept { return buffer_.size(); }

  /// True when one parameter set serves every row (a per-tensor source): its copies in the
  /// tiles must stay equal.
  [[nodiscard]] bool shared_params() const noexcept { return shared_params_; }

  /// Multiplies the scale of row r's group g by m[r * groups + g] and rounds it to fp16 again
  /// (the stored form). Unchecked: m holds rows x groups finite factors, the caller checks the
  /// products stay finite.
  void multiply_scales(const float* m) noexcept {
    const std::ptrdiff_t groups = geo_.groups;
    for (std::ptrdiff_t t = 0; t < tiles_; ++t) {
      for (int r = 0; r < kTileRows && t * kTileRows + r < rows_; ++r) {
        const float* f = m + (t * kTileRows + r) * groups;
        for (std::ptrdiff_t g = 0; g < groups; ++g) {
          std::uint16_t& s = scale_at(t, g)[r];
          s = qtl::detail::float_to_half(qtl::detail::half_to_float(s) * f[g]);
        }
      }
    }
  }

 private:
  struct ParamPair {
    std::uint16_t scale;
    std::uint8_t zero;
  };

  // The tile geometry and the repacking, from any source of codes and parameters.
  template <class CodeFn, class ParamFn>
  void build(int bits, std::ptrdiff_t rows, std::ptrdiff_t cols, std::ptrdiff_t group_size,
             std::ptrdiff_t groups_per_row, CodeFn code, ParamFn param) {
    bits_ = bits;
    rows_ = rows;
    cols_ = cols;
    shared_params_ = groups_per_row == 0;
    geo_ = GroupBlocks(cols, groups_per_row <= 1 ? 1 : groups_per_row, group_size, kBlockCols);
    const std::ptrdiff_t groups = geo_.groups, nb = geo_.blocks;
    tiles_ = (rows + kTileRows - 1) / kTileRows;
    // One zero point for every real row and group? (Padding rows have scale 0: their zero
    // point never matters.) Then the tiles hold scales only.
    int zero = -1;
    bool same = true;
    for (std::ptrdiff_t row = 0; row < rows && same; ++row) {
      for (std::ptrdiff_t g = 0; g < groups && same; ++g) {
        const int z = param(groups_per_row == 0 ? 0 : row * groups_per_row + g).zero;
        if (zero < 0) zero = z;
        same = z == zero;
      }
    }
    same = same && zero >= 0;
    uniform_zero_ = same ? zero : -1;
    group_params_bytes_ = same ? kScalesOnlyBytes : static_cast<std::ptrdiff_t>(sizeof(TileGroupParams));
    std::memset(shared_zeros_, same ? zero : 0, sizeof(shared_zeros_));  // 0..255
    params_bytes_ = (groups * group_params_bytes_ + 63) / 64 * 64;
    tile_bytes_ = params_bytes_ + nb * tile_block_bytes(bits_);
    buffer_ = detail::AlignedBuffer(static_cast<std::size_t>(tiles_ * tile_bytes_));

    for (std::ptrdiff_t t = 0; t < tiles_; ++t) {
      std::uint8_t* tile = buffer_.data() + t * tile_bytes_;
      for (int r = 0; r < kTileRows; ++r) {
        const std::ptrdiff_t row = t * kTileRows + r;
        if (row >= rows) break;  // padding rows: scale 0, codes 0 (zero 0 in the tiles)
        for (std::ptrdiff_t g = 0; g < groups; ++g) {
          const ParamPair p = param(groups_per_row == 0 ? 0 : row * groups_per_row + g);
          scale_at(t, g)[r] = p.scale;
          if (!same) tile[g * group_params_bytes_ + static_cast<std::ptrdiff_t>(offsetof(TileGroupParams, zero)) + r] = p.zero;
          const std::ptrdiff_t c0 = geo_.col0(g), c1 = geo_.col1(g);
          for (std::ptrdiff_t c = c0; c < c1; ++c) {
            const std::ptrdiff_t b = geo_.block0(g) + (c - c0) / kBlockCols;
            set_tile_code(bits_, tile + params_bytes_ + b * tile_block_bytes(bits_), r,
                          static_cast<int>((c - c0) % kBlockCols), code(row, c));
          }
        }
      }
    }
  }

  static constexpr std::ptrdiff_t kScalesOnlyBytes = 2 * kTileRows;

  std::uint16_t* scale_at(std::ptrdiff_t t, std::ptrdiff_t g) noexcept {
    return reinterpret_cast<std::uint16_t*>(buffer_.data() + t * tile_bytes_ + g * group_params_bytes_);
  }

  int bits_ = 0;
  int uniform_zero_ = -1;
  std::ptrdiff_t rows_ = 0, cols_ = 0, tiles_ = 0;
  std::ptrdiff_t params_bytes_ = 0, tile_bytes_ = 0, group_params_bytes_ = 48;
  GroupBlocks geo_;
  detail::AlignedBuffer buffer_;
  alignas(16) std::uint8_t code_map_[16] = {};
  alignas(16) std::uint8_t shared_zeros_[kTileRows] = {};
  bool has_code_map_ = false;
  bool shared_params_ = false;
};

}  // namespace qtl::kernel
