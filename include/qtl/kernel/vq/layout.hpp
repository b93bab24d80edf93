// qtl/kernel/vq/layout.hpp — the kernel layout of k-means vector-quantized weights (family 4).
//
// A VQPackedMatrix (qtl/format/vq_packed.hpp) stores each row's indices as an LSB-first bit
// stream and each set's codebook in fp16; that is a storage format. The lookup kernels
// (qtl/kernel/vq/kernel_matrix.hpp) want, for one lookup instruction, the indices of the same
// vector position j of many rows side by side, already widened to whole bytes. This header
// defines that layout as the plain view the kernels read (VQKernelView, no ownership, no Eigen:
// the per-ISA kernels include it); qtl/kernel/vq/repack.hpp repacks a VQPackedMatrix of
// KMeansVQ<D, B> (or E8P) into it, once.
//
// Geometry. Rows are grouped into tiles of kVQTileRows = 64 (the last tile is padded with rows
// whose indices are 0 and whose results are dropped): 64 one-byte indices are one zmm for the
// byte-plane lookups, and 4 (8) consecutive groups of 16 (8) rows are the gather / permute
// vectors of the other AVX-512 (AVX2) kernels. The P = ceil(cols / D) vector positions of a row
// are cut into chunks of `chunk` positions (the last one shorter) so that the lookup table of one
// chunk (chunk x Kp fp32 values per set, Kp = max(2^bits, 16)) stays in L1; every kernel streams
// the weights chunk by chunk. Indices are stored chunk-major:
//   element (c, t, jj, lane) at  c * chunk * tiles * 64 + t * len(c) * 64 + jj * 64 + lane
// (len(c) = positions of chunk c), one byte each for bits <= 8 and two bytes for 9..12 bits.
// Whole bytes cost at most 2x the storage bits for 4-bit indices and nothing at 8 bits; the
// benchmark formats (D = 2 and D = 4 with 8-bit indices) stream exactly their storage bits.
//
// Codebooks are decoded to fp32 twice: `cb` entry-major (set s, entry k, coordinate d at
// (s * K + k) * D + d, read by the decode-and-FMA gathers) and `cbt` coordinate-major padded
// to Kp entries ((s * D + d) * Kp + k, zeros beyond K; read 16 entries at a time to build the
// lookup tables). `lane_set[t * 64 + lane]` is the set of row t * 64 + lane (of the last row
// for padding rows), so a tile may straddle sets (rows_per_set need not divide 64 or rows).
//
// E8P matrices (qtl/quant/e8p.hpp: D = 8, 16-bit indices, one fp16 scale per set) use the same
// index layout (two bytes each), no codebook, and `e8p_scale` (fp32) per set; the kernels decode
// each codeword from the absolute-vector grid (qtl/quant/e8p_grid.hpp: 256 x 8 fp32, or byte
// planes of it), the sign bits and the shift bit.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>

namespace qtl::kernel {

inline constexpr int kVQTileRows = 64;

/// How a matrix computes y = W x (chosen per matrix at construction, see vq_choose_strategy).
enum class VQStrategy {
  Table,   ///< per token, L[j][k] = codebook[k] . x[jD .. jD+D), then y_r = sum_j L[j][idx_rj]
  Decode,  ///< gather codebook[idx_rj][d] and FMA with x[jD + d] (no table)
};

[[nodiscard]] constexpr const char* to_string(VQStrategy s) noexcept {
  return s == VQStrategy::Table ? "table" : "decode";
}

/// Plain view of a VQKernelLayout, passed to the kernels.
struct VQKernelView {
  const std::uint8_t* idx8 = nullptr;    ///< bits <= 8 (else nullptr)
  const std::uint16_t* idx16 = nullptr;  ///< bits 9..12 (else nullptr)
  const float* cb = nullptr;             ///< sets x K x D
  const float* cbt = nullptr;            ///< sets x D x Kp
  const std::int32_t* lane_set = nullptr;
  bool e8p = false;                      ///< E8P: 16-bit indices, one scale per set, no codebook
  const float* e8p_grid = nullptr;       ///< E8P::abs_grid() (kE8PGrid.abs), 256 x 8
  const std::uint8_t* e8p_parity = nullptr;  ///< E8P::abs_parity() (kE8PGrid.parity)
  const float* e8p_scale = nullptr;      ///< one fp32 scale per set
  int dim = 0;
  int bits = 0;
  std::ptrdiff_t K = 0;
  std::ptrdiff_t Kp = 0;
  std::ptrdiff_t rows = 0;
  std::ptrdiff_t cols = 0;
  std::ptrdiff_t positions = 0;  ///< P = ceil(cols / D)
  std::ptrdiff_t rows_per_set = 0;
  std::ptrdiff_t sets = 0;
  std::ptrdiff_t tiles = 0;
  std::ptrdiff_t chunk = 0;   ///< positions per chunk
  std::ptrdiff_t chunks = 0;

  [[nodiscard]] std::ptrdiff_t chunk_len(std::ptrdiff_t c) const noexcept {
    return std::min(chunk, positions - c * chunk);
  }
  /// Element offset of chunk c's first index.
  [[nodiscard]] std::ptrdiff_t chunk_offset(std::ptrdiff_t c) const noexcept {
    return c * chunk * tiles * kVQTileRows;
  }
  [[nodiscard]] std::ptrdiff_t set_of_row(std::ptrdiff_t r) const noexcept {
    return std::min(r, rows - 1) / rows_per_set;
  }
};

/// Lookup-table floats per set per chunk position: Kp. Positions per chunk so that one set's
/// table chunk is about 16 KiB (L1 holds it next to the streamed indices).
[[nodiscard]] inline std::ptrdiff_t vq_chunk_positions(std::ptrdiff_t kp, std::ptrdiff_t positions) noexcept {
  return std::clamp<std::ptrdiff_t>(4096 / kp, 1, std::max<std::ptrdiff_t>(positions, 1));
}

/// E8P with int8 activations: decoded weights enter the integer dot products as u = 4 c + 11 in
/// [0, 22] (unsigned, as vpdpbusd wants its first operand); the offset's share, 11 * sum_k a_k per
/// block, does not depend on the row and is taken out once per token and chunk (corr8).
inline constexpr int kE8PInt8Offset = 11;

/// Tokens one kernel call handles (GEMM runs token blocks of this size over the same indices).
inline constexpr int kVQMaxTokens = 4;

/// One kernel call: chunk c of tiles [t0, t1) for nt tokens.
struct VQChunkTask {
  const float* x = nullptr;       ///< padded activations: token n at x + n * ldx, P * D floats (0 past cols)
  std::ptrdiff_t ldx = 0;
  int nt = 1;                     ///< 1 .. kVQMaxTokens
  const float* table = nullptr;   ///< Table strategy: value [n][s - s0][jj][k] at ((n * nsets + s - s0) * len + jj) * Kp + k
  std::ptrdiff_t s0 = 0;
  std::ptrdiff_t nsets = 0;
  std::ptrdiff_t c = 0;           ///< chunk
  float* acc = nullptr;           ///< partial sums of tile t, token n, lane at ((t * kVQMaxTokens + n) * 64 + lane)
  // E8P with int8 activations (VQKernelMatrix's Int8 mode, see vq_tiles_e8p_int8_scalar): token
  // n's codes of padded column e at q8[n * ldq + e], the scale of its block of 32 columns
  // (positions 4b .. 4b+3) at d8[n * ldd + b], and corr8[n * chunks + c] = kE8PInt8Offset *
  // sum over chunk c's blocks of d_b * (sum of the block's codes).
  const std::int8_t* q8 = nullptr;
  std::ptrdiff_t ldq = 0;
  const float* d8 = nullptr;
  std::ptrdiff_t ldd = 0;
  const float* corr8 = nullptr;
  bool first = true;              ///< chunk 0: the partial sums start at 0 (else they are added to)
};

}  // namespace qtl::kernel
