// qtl/kernel/vq/portable.hpp — the portable path of the vector-codebook lookup kernels, over
// xsimd (qtl/kernel/common/portable_simd.hpp), and the same kernels in plain C++ (*_scalar).
//
// Same layout, loops and summation order as the x86 paths (qtl/kernel/vq/simd_body.inc): a
// 64-row tile is 64 / L row groups of one batch of L float lanes (L = 4 on SSE2 and NEON, 8 on
// AVX2, 16 on AVX-512); per row, the positions of a chunk alternate between two accumulators
// (even and odd jj), whose sum is added to the row's partial sum, chunk after chunk. Lane i of a
// batch is row i of its group with exactly the scalar order of additions, so:
//   Table   (tables built with mul_add, as the x86 paths' vfmadd) L[j][idx] by gather_f32 (vgatherdps
//           on AVX2 / AVX-512, a store and L loads elsewhere), or, for <= 4-bit indices and a
//           group of rows sharing one set, in registers by lookup16_f32 (vpermps, tbl)
//   Decode  gather_f32 of codebook coordinate d at idx * D + set offset, mul_add with x[jD + d]
//   E8P     per row as the x86 paths (one codeword of 8 weights at a time), see vq_tiles_e8p_portable
// On an arch with FMA (FMA3, AVX-512, NEON64) mul_add is fused as the x86 paths' vfmadd, so the
// Table and Decode results equal the AVX2 / AVX-512 ones to the bit there; without FMA (SSE2) the
// multiply and add are rounded apart. The *_scalar versions write a * b + c in plain C++, which
// the compiler may or may not contract: every VQ path is held to the error bounds of
// qtl/kernel/vq/kernel_matrix.hpp (tests/kernel/vq_kernel_matrix_test.cpp), not to each other's bits.
#pragma once

#include <algorithm>
#include <array>
#include <bit>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "qtl/kernel/common/portable_simd.hpp"
#include "qtl/kernel/common/separate.hpp"
#include "qtl/kernel/vq/e8p_codewords.hpp"
#include "qtl/kernel/vq/layout.hpp"

namespace qtl::kernel {

/// Lookup tables of chunk k.c for sets [k.s0, k.s0 + k.nsets) and k.nt tokens into `table`:
///   L[n][s][jj][e] = sum_d cb_s[e][d] * x_n[(c * chunk + jj) * D + d]   (entries e >= K: 0)
inline void vq_build_table_scalar(const VQKernelView& w, const VQChunkTask& k, float* table) noexcept {
  const std::ptrdiff_t len = w.chunk_len(k.c), Kp = w.Kp, D = w.dim;
  for (int n = 0; n < k.nt; ++n) {
    for (std::ptrdiff_t s = 0; s < k.nsets; ++s) {
      const float* cbt = w.cbt + (k.s0 + s) * D * Kp;
      for (std::ptrdiff_t jj = 0; jj < len; ++jj) {
        const float* xs = k.x + n * k.ldx + (k.c * w.chunk + jj) * D;
        float* out = table + ((n * k.nsets + s) * len + jj) * Kp;
        for (std::ptrdiff_t e = 0; e < Kp; ++e) out[e] = cbt[e] * xs[0];
        for (std::ptrdiff_t d = 1; d < D; ++d) {
          for (std::ptrdiff_t e = 0; e < Kp; ++e) out[e] += cbt[d * Kp + e] * xs[d];
        }
      }
    }
  }
}

namespace detail_vq_scalar {
inline std::uint32_t index_at(const VQKernelView& w, std::ptrdiff_t e) noexcept {
  return w.idx8 ? w.idx8[e] : w.idx16[e];
}
inline void finish(const VQChunkTask& k, std::ptrdiff_t t, int n, int lane, float a0, float a1) noexcept {
  float& p = k.acc[(t * kVQMaxTokens + n) * kVQTileRows + lane];
  p = k.first ? a0 + a1 : p + (a0 + a1);
}
}  // namespace detail_vq_scalar

/// Table strategy: partial sums of tiles [t0, t1) over chunk k.c from the tables in k.table.
inline void vq_tiles_table_scalar(const VQKernelView& w, const VQChunkTask& k, std::ptrdiff_t t0,
                                    std::ptrdiff_t t1) noexcept {
  using namespace detail_vq_scalar;
  const std::ptrdiff_t len = w.chunk_len(k.c), Kp = w.Kp;
  for (std::ptrdiff_t t = t0; t < t1; ++t) {
    const std::ptrdiff_t base = w.chunk_offset(k.c) + t * len * kVQTileRows;
    for (int lane = 0; lane < kVQTileRows; ++lane) {
      const std::ptrdiff_t s = w.lane_set[t * kVQTileRows + lane] - k.s0;
      for (int n = 0; n < k.nt; ++n) {
        const float* tab = k.table + (n * k.nsets + s) * len * Kp;
        float a[2] = {0.0f, 0.0f};
        for (std::ptrdiff_t jj = 0; jj < len; ++jj) {
          a[jj & 1] += tab[jj * Kp + index_at(w, base + jj * kVQTileRows + lane)];
        }
        finish(k, t, n, lane, a[0], a[1]);
      }
    }
  }
}

/// Decode strategy: partial sums of tiles [t0, t1) over chunk k.c, codebook entries times x.
inline void vq_tiles_decode_scalar(const VQKernelView& w, const VQChunkTask& k, std::ptrdiff_t t0,
                                     std::ptrdiff_t t1) noexcept {
  using namespace detail_vq_scalar;
  const std::ptrdiff_t len = w.chunk_len(k.c), D = w.dim;
  for (std::ptrdiff_t t = t0; t < t1; ++t) {
    const std::ptrdiff_t base = w.chunk_offset(k.c) + t * len * kVQTileRows;
    for (int lane = 0; lane < kVQTileRows; ++lane) {
      const float* cb = w.cb + w.lane_set[t * kVQTileRows + lane] * w.K * D;
      for (int n = 0; n < k.nt; ++n) {
        const float* x = k.x + n * k.ldx + k.c * w.chunk * D;
        float a[2] = {0.0f, 0.0f};
        for (std::ptrdiff_t jj = 0; jj < len; ++jj) {
          const float* c = cb + index_at(w, base + jj * kVQTileRows + lane) * D;
          float& acc = a[jj & 1];
          for (std::ptrdiff_t d = 0; d < D; ++d) acc += c[d] * x[jj * D + d];
        }
        finish(k, t, n, lane, a[0], a[1]);
      }
    }
  }
}

/// E8P: partial sums of tiles [t0, t1) over chunk k.c. Codeword of index i (qtl/quant/e8p.hpp):
/// a = i & 255, sign bits 1..7 = bits 8..14, sign 0 = parity(signs) ^ parity[a], shift = +-1/4
/// by bit 15; weight = scale * (+-grid[a][d] + shift), computed as the reference does.
inline void vq_tiles_e8p_scalar(const VQKernelView& w, const VQChunkTask& k, std::ptrdiff_t t0,
                                  std::ptrdiff_t t1) noexcept {
  using namespace detail_vq_scalar;
  const std::ptrdiff_t len = w.chunk_len(k.c);
  for (std::ptrdiff_t t = t0; t < t1; ++t) {
    const std::ptrdiff_t base = w.chunk_offset(k.c) + t * len * kVQTileRows;
    for (int lane = 0; lane < kVQTileRows; ++lane) {
      const float scale = w.e8p_scale[w.lane_set[t * kVQTileRows + lane]];
      for (int n = 0; n < k.nt; ++n) {
        const float* x = k.x + n * k.ldx + k.c * w.chunk * 8;
        float a[2] = {0.0f, 0.0f};
        for (std::ptrdiff_t jj = 0; jj < len; ++jj) {
          const std::uint32_t i = w.idx16[base + jj * kVQTileRows + lane];
          const std::uint32_t g = i & 0xFFu, signs = (i >> 8) & 0x7Fu;
          const float shift = (i >> 15) & 1u ? 0.25f : -0.25f;
          const std::uint32_t neg = signs << 1 | ((static_cast<std::uint32_t>(std::popcount(signs)) + w.e8p_parity[g]) & 1u);
          float& acc = a[jj & 1];
          for (int d = 0; d < 8; ++d) {
            const float v = w.e8p_grid[g * 8 + static_cast<std::uint32_t>(d)];
            acc += scale * ((((neg >> d) & 1u) ? -v : v) + shift) * x[jj * 8 + d];
          }
        }
        finish(k, t, n, lane, a[0], a[1]);
      }
    }
  }
}

/// E8P with int8 activations: partial sums of tiles [t0, t1) over chunk k.c. Every E8P weight
/// is s/4 times an odd integer q = 4 c in [-11, 11], so with int8 activations a_k (per block of
/// 32 columns = 4 positions, scale d_b: the uniform kernels' quantize_block_int8) the product is
///   y_r = s_r / 4 * (sum_b d_b D_rb - corr),  D_rb = sum_{k in b} (q_rk + 11) a_k  (exact int32),
///   corr = 11 * sum_b d_b A_b  (A_b = sum_{k in b} a_k; the offset makes every factor unsigned
///                               for vpdpbusd and costs one subtraction per token and chunk).
/// Per row: acc = fma(float(D_rb), d_b, acc) block after block, then (acc - corr) * (s / 4) is
/// the chunk's partial sum. The AVX-512 VBMI kernel (vq_tiles_e8p_int8_avx512vbmi) does the same
/// operations in the same order, so both give the same bits; the other SIMD paths call this one.
/// Each 16-bit index is looked up in a table of all 2^16 codewords' 8 bytes u = q + 11 (512 KiB,
/// built once from the grid on first use): one 8-byte load per codeword instead of its decode,
/// ~3x faster than decoding here.
inline void vq_tiles_e8p_int8_scalar(const VQKernelView& w, const VQChunkTask& k, std::ptrdiff_t t0,
                                     std::ptrdiff_t t1) noexcept {
  const E8PInt8Codewords& U = e8p_int8_codewords(w.e8p_grid, w.e8p_parity);
  const std::ptrdiff_t len = w.chunk_len(k.c), p0 = k.c * w.chunk;
  for (std::ptrdiff_t t = t0; t < t1; ++t) {
    const std::ptrdiff_t base = w.chunk_offset(k.c) + t * len * kVQTileRows;
    for (int lane = 0; lane < kVQTileRows; ++lane) {
      const float sc = w.e8p_scale[w.lane_set[t * kVQTileRows + lane]] * 0.25f;
      for (int n = 0; n < k.nt; ++n) {
        const std::int8_t* a = k.q8 + n * k.ldq + p0 * 8;
        float acc = 0.0f;
        for (std::ptrdiff_t jb = 0; jb < len; jb += 4) {
          std::int32_t D = 0;
          for (std::ptrdiff_t jj = jb; jj < std::min(jb + 4, len); ++jj) {
            const std::uint8_t* u = U.u[w.idx16[base + jj * kVQTileRows + lane]];
            for (int d = 0; d < 8; ++d) D += static_cast<std::int32_t>(u[d]) * a[jj * 8 + d];
          }
          acc = std::fma(static_cast<float>(D), k.d8[n * k.ldd + (p0 + jb) / 4], acc);
        }
        const float r = (acc - k.corr8[n * w.chunks + k.c]) * sc;
        float& p = k.acc[(t * kVQMaxTokens + n) * kVQTileRows + lane];
        p = k.first ? r : p + r;
      }
    }
  }
}

namespace detail_vq_portable {

using namespace portable_batches;
inline constexpr int kLanes = static_cast<int>(F32::size);  ///< rows per batch
inline constexpr int kGroups = kVQTileRows / kLanes;         ///< row groups (batches) per tile
static_assert(kVQTileRows % kLanes == 0, "a batch must hold a divisor of the 64 tile rows");
static_assert(kLanes == 4 || kLanes == 8 || kLanes == 16, "E8P handles batches of 4, 8 or 16 floats");

/// Row group h of tile t, token n: its partial sums (+)= a0 + a1.
inline void finish(const VQChunkTask& k, std::ptrdiff_t t, int n, int h, const F32& a0, const F32& a1) noexcept {
  float* p = k.acc + (t * kVQMaxTokens + n) * kVQTileRows + kLanes * h;
  F32 s = a0 + a1;
  if (!k.first) s = F32::load_unaligned(p) + s;
  s.store_unaligned(p);
}

/// Table lookups of one row group in the token's tables `tab` (len positions of Kp entries per
/// set), the lanes' table offsets `off`; if every lane's offset is `shared` (>= 0) and Kp = 16
/// (<= 4-bit indices), in registers.
template <class I>
inline void table_lookups(const I* ip, std::ptrdiff_t len, std::ptrdiff_t Kp, const float* tab, const I32& off,
                          std::ptrdiff_t shared, F32& a0, F32& a1) noexcept {
  if (shared >= 0 && Kp == 16) {  // every lane reads the same 16-entry row: no gather
    const float* row = tab + shared;
    std::ptrdiff_t jj = 0;
    for (; jj + 1 < len; jj += 2) {
      a0 += lookup16_f32(row + jj * Kp, xsimd::bitwise_cast<U32>(load_widen(ip + jj * kVQTileRows)));
      a1 += lookup16_f32(row + (jj + 1) * Kp, xsimd::bitwise_cast<U32>(load_widen(ip + (jj + 1) * kVQTileRows)));
    }
    if (jj < len) a0 += lookup16_f32(row + jj * Kp, xsimd::bitwise_cast<U32>(load_widen(ip + jj * kVQTileRows)));
    return;
  }
  std::ptrdiff_t jj = 0;
  for (; jj + 1 < len; jj += 2) {
    a0 += gather_f32(tab + jj * Kp, load_widen(ip + jj * kVQTileRows) + off);
    a1 += gather_f32(tab + (jj + 1) * Kp, load_widen(ip + (jj + 1) * kVQTileRows) + off);
  }
  if (jj < len) a0 += gather_f32(tab + jj * Kp, load_widen(ip + jj * kVQTileRows) + off);
}

template <class I>
inline void tiles_table(const VQKernelView& w, const VQChunkTask& k, const I* idx, std::ptrdiff_t t0,
                        std::ptrdiff_t t1) noexcept {
  const std::ptrdiff_t len = w.chunk_len(k.c), Kp = w.Kp;
  idx += w.chunk_offset(k.c);
  for (std::ptrdiff_t t = t0; t < t1; ++t) {
    for (int h = 0; h < kGroups; ++h) {
      const I* ip = idx + t * len * kVQTileRows + kLanes * h;
      const std::int32_t* ls = w.lane_set + t * kVQTileRows + kLanes * h;
      const I32 off = (I32::load_unaligned(ls) - I32(static_cast<std::int32_t>(k.s0))) * I32(static_cast<std::int32_t>(len * Kp));
      const std::ptrdiff_t shared = ls[0] == ls[kLanes - 1] ? (ls[0] - k.s0) * len * Kp : -1;
      for (int n = 0; n < k.nt; ++n) {
        F32 a0(0.0f), a1(0.0f);
        table_lookups(ip, len, Kp, k.table + n * k.nsets * len * Kp, off, shared, a0, a1);
        finish(k, t, n, h, a0, a1);
      }
    }
  }
}

/// Decode: a row group's codebook pointer is the set of its first lane, the others offsets from it.
template <int D, class I>
inline void tiles_decode(const VQKernelView& w, const VQChunkTask& k, const I* idx, std::ptrdiff_t t0,
                         std::ptrdiff_t t1) noexcept {
  constexpr int kShift = D == 2 ? 1 : D == 4 ? 2 : 3;
  static_assert(D == 1 << kShift, "decode kernels for D = 2, 4, 8");
  const std::ptrdiff_t len = w.chunk_len(k.c);
  idx += w.chunk_offset(k.c);
  for (std::ptrdiff_t t = t0; t < t1; ++t) {
    for (int h = 0; h < kGroups; ++h) {
      const std::int32_t* ls = w.lane_set + t * kVQTileRows + kLanes * h;
      const float* cb = w.cb + ls[0] * w.K * D;
      const I* ip = idx + t * len * kVQTileRows + kLanes * h;
      const I32 off = (I32::load_unaligned(ls) - I32(ls[0])) * I32(static_cast<std::int32_t>(w.K * D));
      for (int n = 0; n < k.nt; ++n) {
        const float* x = k.x + n * k.ldx + k.c * w.chunk * D;
        F32 a[2] = {F32(0.0f), F32(0.0f)};
        for (std::ptrdiff_t jj = 0; jj < len; ++jj) {
          const I32 v = (load_widen(ip + jj * kVQTileRows) << kShift) + off;
          F32& acc = a[jj & 1];
#pragma GCC unroll 8
          for (int d = 0; d < D; ++d) acc = mul_add(gather_f32(cb + d, v), F32(x[jj * D + d]), acc);
        }
        finish(k, t, n, h, a[0], a[1]);
      }
    }
  }
}

/// 16 floats = a pair of codewords: batch b of the pair is lanes [b L, b L + L) of [a | b8].
inline F32 pair_batch(const float* a8, const float* b8, int b) noexcept {
  if constexpr (kLanes <= 8) {
    const int lo = kLanes * b;
    return F32::load_unaligned(lo < 8 ? a8 + lo : b8 + (lo - 8));
  } else {  // 16 lanes: the pair is one batch
    (void)b;
    return load_halves(a8, b8);
  }
}

/// The E8P codeword of index i before scaling, as the x86 paths make it: grid row, sign mask, shift.
struct E8PWord {
  const float* grid;
  const float* sign;   ///< 8 floats: -0.0f where the weight is negated, else +0.0f
  const float* shift;  ///< 8 floats, all +1/4 or all -1/4
};

}  // namespace detail_vq_portable

/// Lookup tables of chunk k.c (see vq_build_table_scalar), a batch of entries per mul_add.
#if defined(QTL_KERNELS_DECLARE_ONLY_VQ)
// Compiled in the program's kernels TU (qtl/kernel/common/separate.hpp).
void vq_build_table_portable(const VQKernelView& w, const VQChunkTask& k, float* table) noexcept;
#else
QTL_KERNEL_ENTRY void vq_build_table_portable(const VQKernelView& w, const VQChunkTask& k, float* table) noexcept {
  using detail_vq_portable::F32;
  const std::ptrdiff_t len = w.chunk_len(k.c), Kp = w.Kp, D = w.dim;
  for (int n = 0; n < k.nt; ++n) {
    for (std::ptrdiff_t s = 0; s < k.nsets; ++s) {
      const float* cbt = w.cbt + (k.s0 + s) * D * Kp;
      for (std::ptrdiff_t jj = 0; jj < len; ++jj) {
        const float* xs = k.x + n * k.ldx + (k.c * w.chunk + jj) * D;
        float* out = table + ((n * k.nsets + s) * len + jj) * Kp;
        for (std::ptrdiff_t e = 0; e < Kp; e += detail_vq_portable::kLanes) {
          F32 v = F32::load_unaligned(cbt + e) * F32(xs[0]);
          for (std::ptrdiff_t d = 1; d < D; ++d) v = mul_add(F32::load_unaligned(cbt + d * Kp + e), F32(xs[d]), v);
          v.store_unaligned(out + e);
        }
      }
    }
  }
}
#endif

/// Table strategy over xsimd batches (see vq_tiles_table_scalar).
#if defined(QTL_KERNELS_DECLARE_ONLY_VQ)
// Compiled in the program's kernels TU (qtl/kernel/common/separate.hpp).
void vq_tiles_table_portable(const VQKernelView& w, const VQChunkTask& k, std::ptrdiff_t t0,
                             std::ptrdiff_t t1) noexcept;
#else
QTL_KERNEL_ENTRY void vq_tiles_table_portable(const VQKernelView& w, const VQChunkTask& k, std::ptrdiff_t t0,
                                              std::ptrdiff_t t1) noexcept {
  if (w.idx8) {
    detail_vq_portable::tiles_table(w, k, w.idx8, t0, t1);
  } else {
    detail_vq_portable::tiles_table(w, k, w.idx16, t0, t1);
  }
}
#endif

/// Decode strategy over xsimd batches (see vq_tiles_decode_scalar).
#if defined(QTL_KERNELS_DECLARE_ONLY_VQ)
// Compiled in the program's kernels TU (qtl/kernel/common/separate.hpp).
void vq_tiles_decode_portable(const VQKernelView& w, const VQChunkTask& k, std::ptrdiff_t t0,
                              std::ptrdiff_t t1) noexcept;
#else
QTL_KERNEL_ENTRY void vq_tiles_decode_portable(const VQKernelView& w, const VQChunkTask& k, std::ptrdiff_t t0,
                                               std::ptrdiff_t t1) noexcept {
  auto run = [&](const auto* idx) {
    switch (w.dim) {
      case 2: detail_vq_portable::tiles_decode<2>(w, k, idx, t0, t1); break;
      case 4: detail_vq_portable::tiles_decode<4>(w, k, idx, t0, t1); break;
      default: detail_vq_portable::tiles_decode<8>(w, k, idx, t0, t1); break;
    }
  };
  if (w.idx8) {
    run(w.idx8);
  } else {
    run(w.idx16);
  }
}
#endif

/// E8P over xsimd batches, one row at a time as vq_tiles_e8p_avx2: per position the row's
/// codeword scale * (grid row ^ sign mask + shift) (8 floats) mul_add x[8 j .. 8 j + 8), even
/// positions in lanes 0..7 of a 16-float pair, odd ones in 8..15 (the two accumulators), then
/// the 16 lanes added as the AVX2 path adds its two ymm: 8 + 8, 4 + 4, 2 + 2, 1 + 1.
#if defined(QTL_KERNELS_DECLARE_ONLY_VQ)
// Compiled in the program's kernels TU (qtl/kernel/common/separate.hpp).
void vq_tiles_e8p_portable(const VQKernelView& w, const VQChunkTask& k, std::ptrdiff_t t0,
                           std::ptrdiff_t t1) noexcept;
#else
QTL_KERNEL_ENTRY void vq_tiles_e8p_portable(const VQKernelView& w, const VQChunkTask& k, std::ptrdiff_t t0,
                                            std::ptrdiff_t t1) noexcept {
  using namespace detail_vq_portable;
  constexpr int kPair = 16 / kLanes;  // batches per pair of codewords
  alignas(64) static const std::array<float, 256 * 8> signs = [] {
    std::array<float, 256 * 8> m{};
    for (std::size_t i = 0; i < 256; ++i) {
      for (std::size_t d = 0; d < 8; ++d) m[i * 8 + d] = (i >> d) & 1u ? -0.0f : 0.0f;
    }
    return m;
  }();
  alignas(64) static constexpr float kShift[3][8] = {{-0.25f, -0.25f, -0.25f, -0.25f, -0.25f, -0.25f, -0.25f, -0.25f},
                                                     {0.25f, 0.25f, 0.25f, 0.25f, 0.25f, 0.25f, 0.25f, 0.25f},
                                                     {}};
  alignas(64) static constexpr float kZero[8] = {};
  auto word = [&](std::uint32_t i) {
    const std::uint32_t g = i & 0xFFu, sg = (i >> 8) & 0x7Fu;
    const std::uint32_t neg = sg << 1 | ((static_cast<std::uint32_t>(std::popcount(sg)) + w.e8p_parity[g]) & 1u);
    return E8PWord{w.e8p_grid + g * 8, signs.data() + neg * 8, kShift[(i >> 15) & 1u]};
  };
  const E8PWord none{kZero, kZero, kShift[2]};  // the missing odd codeword of an odd-length chunk: 0
  const std::ptrdiff_t len = w.chunk_len(k.c);
  for (std::ptrdiff_t t = t0; t < t1; ++t) {
    const std::ptrdiff_t base = w.chunk_offset(k.c) + t * len * kVQTileRows;
    for (int lane = 0; lane < kVQTileRows; ++lane) {
      const F32 scale(w.e8p_scale[w.lane_set[t * kVQTileRows + lane]]);
      const std::uint16_t* ip = w.idx16 + base + lane;
      for (int n = 0; n < k.nt; ++n) {
        const float* x = k.x + n * k.ldx + k.c * w.chunk * 8;
        F32 acc[kPair];
        for (int b = 0; b < kPair; ++b) acc[b] = F32(0.0f);
        for (std::ptrdiff_t jj = 0; jj < len; jj += 2) {
          const E8PWord e = word(ip[jj * kVQTileRows]);
          const E8PWord o = jj + 1 < len ? word(ip[(jj + 1) * kVQTileRows]) : none;
#pragma GCC unroll 4
          for (int b = 0; b < kPair; ++b) {
            if (kLanes <= 8 && jj + 1 >= len && b >= kPair / 2) break;  // no odd codeword
            const F32 v = pair_batch(e.grid, o.grid, b) ^ pair_batch(e.sign, o.sign, b);
            const F32 wv = scale * (v + pair_batch(e.shift, o.shift, b));
            acc[b] = mul_add(wv, F32::load_unaligned(x + jj * 8 + kLanes * b), acc[b]);
          }
        }
        alignas(64) float l[16];
        for (int b = 0; b < kPair; ++b) acc[b].store_aligned(l + kLanes * b);
        for (int i = 0; i < 8; ++i) l[i] += l[i + 8];
        for (int h = 4; h >= 1; h /= 2) {
          for (int i = 0; i < h; ++i) l[i] += l[i + h];
        }
        float& p = k.acc[(t * kVQMaxTokens + n) * kVQTileRows + lane];
        p = k.first ? l[0] : p + l[0];
      }
    }
  }
}
#endif

}  // namespace qtl::kernel
