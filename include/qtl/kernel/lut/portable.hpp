// qtl/kernel/lut/portable.hpp — the portable path of the lookup-table kernels, over xsimd.
//
// The same lookups and the same arithmetic as the x86 paths (qtl/kernel/lut/simd_body.inc),
// written once over xsimd::batch<T, PortableArch> (qtl/kernel/common/portable_simd.hpp): a
// 64-byte unit of the layout (qtl/kernel/lut/layout.hpp) is 64 / B batches of B bytes (B = 16
// on SSE2 and NEON, 32 on AVX2, 64 on AVX-512), looked up with lookup16 in tables broadcast to
// every 16-byte lane. Everything below works within 16-byte lanes, as the x86 kernels' vpshufb,
// so a batch's float lanes hold consecutive result slots for every B, in the layout's slot order
// (batch h of result vector v: slots 16 v + B/4 h ..), and the parameters load contiguously.
// Per block, exact integer sums (the same as the x86 paths'):
//   low bytes   2 planes: the two bytes of a row (planes u, v) added as int16 (<= 8 * 510);
//               1 plane: raw 16-bit adds R = E + 256 O (mod 2^16) and the odd bytes O alone,
//               E = R - 256 O exactly (E <= 8 * 255)
//   high bytes  int8 adds (|sum| <= 16), added at 256 times their weight once per block
// S = lo + 256 hi (|S| <= 8 * 2 * 508) is split into int32 rows by shifts. The float steps are
// every path's, in the same order, with fused multiply-adds rounded once (fma_exact):
//   F_r   = fma(float(S_rb), d_b, F_r)                 over the blocks b of group g (F_r = 0 first)
//   acc_r = fma(c_rg, F_r, acc_r);  BinaryShift: acc_r = fma(m_rg, gsum_g, acc_r)
//   c = alpha (Binary), alpha * 0.5f (Ternary), (hi - lo) * 0.5f (BinaryShift); m = (hi + lo) * 0.5f
// so every path agrees to the bit. lut_tiles_scalar is the same computation one byte at a time
// in plain C++ (std::fma): the reference the tests and the benchmark compare the xsimd code with,
// and what lut_tiles_portable runs on archs without a byte shuffle or FMA (kLutPortableVector).
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <type_traits>

#include "qtl/detail/fp16.hpp"
#include "qtl/kernel/common/portable_simd.hpp"
#include "qtl/kernel/common/separate.hpp"
#include "qtl/kernel/lut/layout.hpp"

namespace qtl::kernel {

/// Y[n * ldy + row] for the rows of tiles [t0, t1) and tokens [0, a.m), one byte at a time.
inline void lut_tiles_scalar(const LutKernelView& w, const LutActivationSet& a, float* y, std::ptrdiff_t ldy,
                               std::ptrdiff_t t0, std::ptrdiff_t t1) noexcept {
  const int tr = static_cast<int>(w.tile_rows);
  int byte_row[kLutUnitBytes];
  for (int j = 0; j < kLutUnitBytes; ++j) byte_row[j] = lut_byte_row(w.kind, j);
  int slot_row[64];
  for (int s = 0; s < tr; ++s) slot_row[s] = lut_slot_row(w.kind, s);
  float acc[64], f[64];
  int sum[64];
  for (std::ptrdiff_t t = t0; t < t1; ++t) {
    for (std::ptrdiff_t n = 0; n < a.m; ++n) {
      const std::uint8_t* tables = a.tables + n * a.blocks * kLutBlockTableBytes;
      const float* d = a.d + n * a.blocks;
      const float* gs = a.gsum + n * a.groups;
      for (int r = 0; r < tr; ++r) acc[r] = 0.0f;
      for (std::ptrdiff_t g = 0; g < w.groups; ++g) {
        for (int r = 0; r < tr; ++r) f[r] = 0.0f;
        for (std::ptrdiff_t b = w.group_block_begin[g]; b < w.group_block_begin[g + 1]; ++b) {
          for (int r = 0; r < tr; ++r) sum[r] = 0;
          const std::uint8_t* blk = w.block(t, b);
          const std::uint8_t* tb = tables + b * kLutBlockTableBytes;
          for (int u = 0; u < kLutUnitsPerBlock; ++u) {
            const std::uint8_t* unit = blk + u * kLutUnitBytes;
            const std::uint8_t* lo_table = tb + u * kLutTableBytes;
            const std::uint8_t* hi_table = tb + (u + 4) * kLutTableBytes;
            for (int j = 0; j < kLutUnitBytes; ++j) {
              sum[byte_row[j]] += lut_entry(lo_table, unit[j] & 15) + lut_entry(hi_table, unit[j] >> 4);
            }
          }
          for (int r = 0; r < tr; ++r) f[r] = std::fma(static_cast<float>(sum[r]), d[b], f[r]);
        }
        const std::uint16_t* p = w.params(t, g);
        for (int s = 0; s < tr; ++s) {
          const int r = slot_row[s];
          if (w.kind == LutWeights::BinaryShift) {
            const float lo = detail::half_to_float(p[s]), hi = detail::half_to_float(p[tr + s]);
            acc[r] = std::fma((hi - lo) * 0.5f, f[r], acc[r]);
            acc[r] = std::fma((hi + lo) * 0.5f, gs[g], acc[r]);
          } else {
            const float alpha = detail::half_to_float(p[s]);
            acc[r] = std::fma(w.kind == LutWeights::Ternary ? alpha * 0.5f : alpha, f[r], acc[r]);
          }
        }
      }
      const std::ptrdiff_t row0 = t * tr;
      for (int r = 0; r < tr && row0 + r < w.rows; ++r) y[n * ldy + row0 + r] = acc[r];
    }
  }
}

namespace detail_lut_portable {

using namespace portable_batches;
inline constexpr int kBytes = static_cast<int>(U8::size);   ///< bytes per batch
inline constexpr int kHalves = kLutUnitBytes / kBytes;      ///< batches per 64-byte unit
inline constexpr int kLanes = static_cast<int>(F32::size);  ///< result slots per batch
static_assert(kLutUnitBytes % kBytes == 0 && kBytes % 16 == 0, "a batch must be whole 16-byte lanes of a unit");

/// One (tile, token), groups [g0, g1): adds them to out[slot] for the tile's rows (layout.hpp's
/// slot order), which starts from 0 unless resume.
template <LutWeights K>
inline void tile_token(const LutKernelView& w, std::ptrdiff_t t, const std::uint8_t* tables, const float* d,
                       const float* gs, std::ptrdiff_t g0, std::ptrdiff_t g1, float* out, bool resume) noexcept {
  constexpr int kVecs = K == LutWeights::Ternary ? 2 : 4;  // 16-slot result vectors per tile
  constexpr int kTr = K == LutWeights::Ternary ? 32 : 64;
  const U8 nib(std::uint8_t{0x0F});
  const U16 low_byte(std::uint16_t{0x00FF}), high_byte(std::uint16_t{0xFF00});
  F32 acc[kVecs][kHalves];
  for (int v = 0; v < kVecs; ++v) {
    for (int h = 0; h < kHalves; ++h) acc[v][h] = resume ? F32::load_unaligned(out + 16 * v + kLanes * h) : F32(0.0f);
  }
  for (std::ptrdiff_t g = g0; g < g1; ++g) {
    F32 f[kVecs][kHalves];
    for (int v = 0; v < kVecs; ++v)
      for (int h = 0; h < kHalves; ++h) f[v][h] = F32(0.0f);
    for (std::ptrdiff_t b = w.group_block_begin[g]; b < w.group_block_begin[g + 1]; ++b) {
      const std::uint8_t* blk = w.block(t, b);
      const std::uint8_t* tb = tables + b * kLutBlockTableBytes;
      U16 lo[kHalves], odd[kHalves];
      U8 hi[kHalves];
      for (int h = 0; h < kHalves; ++h) {
        lo[h] = odd[h] = U16(std::uint16_t{0});
        hi[h] = U8(std::uint8_t{0});
      }
#pragma GCC unroll 4
      for (int u = 0; u < kLutUnitsPerBlock; ++u) {
        const std::uint8_t* t0 = tb + u * kLutTableBytes;
        const std::uint8_t* t1 = tb + (u + 4) * kLutTableBytes;
        const U8 tl0 = broadcast_table16(t0), th0 = broadcast_table16(t0 + 16);
        const U8 tl1 = broadcast_table16(t1), th1 = broadcast_table16(t1 + 16);
        for (int h = 0; h < kHalves; ++h) {
          const U8 x = U8::load_unaligned(blk + u * kLutUnitBytes + kBytes * h);
          const U8 il = x & nib;
          const U8 ih = xsimd::bitwise_cast<U8>(xsimd::bitwise_cast<U16>(x) >> 4) & nib;
          const U16 w0 = xsimd::bitwise_cast<U16>(lookup16(tl0, il));
          const U16 w1 = xsimd::bitwise_cast<U16>(lookup16(tl1, ih));
          hi[h] += lookup16(th0, il) + lookup16(th1, ih);
          if constexpr (K == LutWeights::Ternary) {
            lo[h] += ((w0 & low_byte) + (w0 >> 8)) + ((w1 & low_byte) + (w1 >> 8));
          } else {
            lo[h] += w0 + w1;
            odd[h] += (w0 >> 8) + (w1 >> 8);
          }
        }
      }
      const F32 dv(d[b]);
      for (int h = 0; h < kHalves; ++h) {
        // 256 * (high byte sums), mod 2^16: the even byte's shifted up, the odd byte's in place
        const U16 hw = xsimd::bitwise_cast<U16>(hi[h]);
        const U16 hi_even = hw << 8, hi_odd = hw & high_byte;
        if constexpr (K == LutWeights::Ternary) {
          const I32 s = xsimd::bitwise_cast<I32>(lo[h] + hi_even + hi_odd);  // one int16 per row
          f[0][h] = fma_exact(xsimd::batch_cast<float>((s << 16) >> 16), dv, f[0][h]);
          f[1][h] = fma_exact(xsimd::batch_cast<float>(s >> 16), dv, f[1][h]);
        } else {
          const I32 se = xsimd::bitwise_cast<I32>(lo[h] - (odd[h] << 8) + hi_even);  // even bytes' rows
          const I32 so = xsimd::bitwise_cast<I32>(odd[h] + hi_odd);                  // odd bytes' rows
          f[0][h] = fma_exact(xsimd::batch_cast<float>((se << 16) >> 16), dv, f[0][h]);
          f[1][h] = fma_exact(xsimd::batch_cast<float>(se >> 16), dv, f[1][h]);
          f[2][h] = fma_exact(xsimd::batch_cast<float>((so << 16) >> 16), dv, f[2][h]);
          f[3][h] = fma_exact(xsimd::batch_cast<float>(so >> 16), dv, f[3][h]);
        }
      }
    }
    const std::uint16_t* p = w.params(t, g);
    const F32 half(0.5f);
    for (int v = 0; v < kVecs; ++v) {
      for (int h = 0; h < kHalves; ++h) {
        const int s0 = 16 * v + kLanes * h;
        const F32 p0 = load_fp16(p + s0);
        if constexpr (K == LutWeights::BinaryShift) {
          const F32 p1 = load_fp16(p + kTr + s0);
          acc[v][h] = fma_exact((p1 - p0) * half, f[v][h], acc[v][h]);
          acc[v][h] = fma_exact((p1 + p0) * half, F32(gs[g]), acc[v][h]);
        } else if constexpr (K == LutWeights::Ternary) {
          acc[v][h] = fma_exact(p0 * half, f[v][h], acc[v][h]);
        } else {
          acc[v][h] = fma_exact(p0, f[v][h], acc[v][h]);
        }
      }
    }
  }
  for (int v = 0; v < kVecs; ++v)
    for (int h = 0; h < kHalves; ++h) acc[v][h].store_unaligned(out + 16 * v + kLanes * h);
}

template <LutWeights K>
inline void run_tiles(const LutKernelView& w, const LutActivationSet& a, float* y, std::ptrdiff_t ldy,
                      std::ptrdiff_t t0, std::ptrdiff_t t1) noexcept {
  lut_run_tiles<K>(w, a.m, y, ldy, t0, t1,
                   [&](std::ptrdiff_t t, std::ptrdiff_t n, std::ptrdiff_t g0, std::ptrdiff_t g1, float* acc, bool resume) {
                     tile_token<K>(w, t, a.tables + n * a.blocks * kLutBlockTableBytes, a.d + n * a.blocks,
                                   a.gsum + n * a.groups, g0, g1, acc, resume);
                   });
}

}  // namespace detail_lut_portable

/// Whether the portable arch has the byte shuffle (lookup16) and the FMA (fma_exact) the xsimd
/// code needs in hardware: SSSE3 + FMA3, AVX2 + FMA3, AVX-512BW, NEON64. Without them each is
/// emulated lane by lane and the xsimd code is slower than the scalar one (SSE2, 4096 x 4096,
/// one token: 0.42-0.47x; bench/lut_kernel_matrix_bench.cpp), so lut_tiles_portable runs
/// lut_tiles_scalar there.
inline constexpr bool kLutPortableVector = std::is_base_of_v<xsimd::fma3<xsimd::sse4_2>, PortableArch> ||
                                           std::is_base_of_v<xsimd::fma3<xsimd::avx2>, PortableArch> ||
                                           std::is_base_of_v<xsimd::avx512bw, PortableArch> ||
                                           std::is_base_of_v<xsimd::neon64, PortableArch>;

/// Y[n * ldy + row] for the rows of tiles [t0, t1) and tokens [0, a.m), over xsimd batches
/// (lut_tiles_scalar where !kLutPortableVector).
#if defined(QTL_KERNELS_DECLARE_ONLY_LUT)
// Compiled in the program's kernels TU (qtl/kernel/common/separate.hpp).
void lut_tiles_portable(const LutKernelView& w, const LutActivationSet& a, float* y, std::ptrdiff_t ldy,
                        std::ptrdiff_t t0, std::ptrdiff_t t1) noexcept;
#else
QTL_KERNEL_ENTRY void lut_tiles_portable(const LutKernelView& w, const LutActivationSet& a, float* y, std::ptrdiff_t ldy,
                                         std::ptrdiff_t t0, std::ptrdiff_t t1) noexcept {
  if constexpr (!kLutPortableVector) {
    lut_tiles_scalar(w, a, y, ldy, t0, t1);
  } else {
    switch (w.kind) {
      case LutWeights::Binary: detail_lut_portable::run_tiles<LutWeights::Binary>(w, a, y, ldy, t0, t1); break;
      case LutWeights::BinaryShift: detail_lut_portable::run_tiles<LutWeights::BinaryShift>(w, a, y, ldy, t0, t1); break;
      case LutWeights::Ternary: detail_lut_portable::run_tiles<LutWeights::Ternary>(w, a, y, ldy, t0, t1); break;
    }
  }
}
#endif

}  // namespace qtl::kernel
