// qtl/kernel/lut/avx512.hpp — AVX-512BW path of the lookup-table kernels (zmm vpshufb).
//
// Per unit of 64 bytes (qtl/kernel/lut/layout.hpp): the low and high nibbles are two index
// vectors; each is looked up in the low-byte and the high-byte table of its column group
// (tables broadcast to the 4 lanes with vbroadcasti32x4), 4 vpshufb per unit. Exact integer
// accumulation over the 4 units of a block (8 lookups per byte):
//   low bytes (0..255)   2 planes: vpmaddubsw(lo, 1) adds the u and v bytes of a row -> int16
//                                  (<= 8 * 510 = 4080);
//                        1 plane:  raw 16-bit adds of the lookup words, R = E + 256 O (mod 2^16),
//                                  and O (the odd bytes, vpsrlw 8) summed on its own; then
//                                  E = R - 256 O exactly, since E <= 8 * 255 < 2^16.
//   high bytes (-2..1)   summed as int8 (|sum| <= 16), widened once per block.
// S = lo + 256 hi fits int16 (|S| <= 8 * 2 * 508). vpmaddwd with (1, 0) / (0, 1) splits it
// into int32 rows, then F = fma(float(S), d_b, F) and, per group, acc = fma(c, F, acc) (+ the
// mean term), the float steps of qtl/kernel/lut/portable.hpp in the same order: bit-identical.
// The functions carry target attributes (qtl/kernel/common/cpu_features.hpp) and must only be called
// when path_supported(KernelPath::Avx512) says so.
#pragma once

#include "qtl/kernel/common/target.hpp"

#if defined(QTL_X86_64)
#define QTL_HAVE_X86_LUT_KERNELS 1

#include <immintrin.h>

#include <cstddef>
#include <cstdint>

#include "qtl/kernel/common/prefetch.hpp"
#include "qtl/kernel/lut/layout.hpp"


namespace qtl::kernel {
namespace detail_lut_avx512 {

QTL_TARGET_AVX512 inline __attribute__((always_inline)) __m512i bcast_table(const std::uint8_t* p) noexcept {
  return _mm512_broadcast_i32x4(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}

/// One (tile, token): out[slot] for the tile's rows (qtl/kernel/lut/layout.hpp slot order).
template <LutWeights K>
QTL_TARGET_AVX512 void tile_token(const LutKernelView& w, std::ptrdiff_t t, const std::uint8_t* tables,
                                      const float* d, const float* gs, float* out) noexcept {
  constexpr int kVecs = K == LutWeights::Ternary ? 2 : 4;  // 16-float result vectors per tile
  constexpr int kTr = K == LutWeights::Ternary ? 32 : 64;
  const __m512i nib = _mm512_set1_epi8(0x0F);
  const __m512i ones8 = _mm512_set1_epi8(1);
  const __m512i sel_lo = _mm512_set1_epi32(0x00000001), sel_hi = _mm512_set1_epi32(0x00010000);
  __m512 acc[kVecs];
  for (int v = 0; v < kVecs; ++v) acc[v] = _mm512_setzero_ps();
  for (std::ptrdiff_t g = 0; g < w.groups; ++g) {
    __m512 f[kVecs];
    for (int v = 0; v < kVecs; ++v) f[v] = _mm512_setzero_ps();
    for (std::ptrdiff_t b = w.group_block_begin[g]; b < w.group_block_begin[g + 1]; ++b) {
      const std::uint8_t* blk = w.block(t, b);
      prefetch_stream<kLutUnitsPerBlock>(blk);
      const std::uint8_t* tb = tables + b * kLutBlockTableBytes;
      __m512i lo = _mm512_setzero_si512(), odd = _mm512_setzero_si512(), hi = _mm512_setzero_si512();
#pragma GCC unroll 4
      for (int u = 0; u < kLutUnitsPerBlock; ++u) {
        const __m512i x = _mm512_load_si512(blk + u * kLutUnitBytes);
        const __m512i il = _mm512_and_si512(x, nib);
        const __m512i ih = _mm512_and_si512(_mm512_srli_epi16(x, 4), nib);
        const std::uint8_t* t0 = tb + u * kLutTableBytes;
        const std::uint8_t* t1 = tb + (u + 4) * kLutTableBytes;
        const __m512i l0 = _mm512_shuffle_epi8(bcast_table(t0), il);
        const __m512i l1 = _mm512_shuffle_epi8(bcast_table(t1), ih);
        hi = _mm512_add_epi8(hi, _mm512_shuffle_epi8(bcast_table(t0 + 16), il));
        hi = _mm512_add_epi8(hi, _mm512_shuffle_epi8(bcast_table(t1 + 16), ih));
        if constexpr (K == LutWeights::Ternary) {
          lo = _mm512_add_epi16(lo, _mm512_maddubs_epi16(l0, ones8));
          lo = _mm512_add_epi16(lo, _mm512_maddubs_epi16(l1, ones8));
        } else {
          lo = _mm512_add_epi16(lo, _mm512_add_epi16(l0, l1));
          odd = _mm512_add_epi16(odd, _mm512_add_epi16(_mm512_srli_epi16(l0, 8), _mm512_srli_epi16(l1, 8)));
        }
      }
      const __m512 dv = _mm512_set1_ps(d[b]);
      if constexpr (K == LutWeights::Ternary) {
        const __m512i s = _mm512_add_epi16(lo, _mm512_slli_epi16(_mm512_maddubs_epi16(ones8, hi), 8));
        f[0] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_madd_epi16(s, sel_lo)), dv, f[0]);
        f[1] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_madd_epi16(s, sel_hi)), dv, f[1]);
      } else {
        const __m512i even = _mm512_sub_epi16(lo, _mm512_slli_epi16(odd, 8));
        const __m512i hi_even = _mm512_srai_epi16(_mm512_slli_epi16(hi, 8), 8);
        const __m512i hi_odd = _mm512_srai_epi16(hi, 8);
        const __m512i se = _mm512_add_epi16(even, _mm512_slli_epi16(hi_even, 8));
        const __m512i so = _mm512_add_epi16(odd, _mm512_slli_epi16(hi_odd, 8));
        f[0] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_madd_epi16(se, sel_lo)), dv, f[0]);
        f[1] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_madd_epi16(se, sel_hi)), dv, f[1]);
        f[2] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_madd_epi16(so, sel_lo)), dv, f[2]);
        f[3] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_madd_epi16(so, sel_hi)), dv, f[3]);
      }
    }
    const std::uint16_t* p = w.params(t, g);
    const __m512 half = _mm512_set1_ps(0.5f);
    for (int v = 0; v < kVecs; ++v) {
      const __m512 p0 = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + 16 * v)));
      if constexpr (K == LutWeights::BinaryShift) {
        const __m512 p1 = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + kTr + 16 * v)));
        acc[v] = _mm512_fmadd_ps(_mm512_mul_ps(_mm512_sub_ps(p1, p0), half), f[v], acc[v]);
        acc[v] = _mm512_fmadd_ps(_mm512_mul_ps(_mm512_add_ps(p1, p0), half), _mm512_set1_ps(gs[g]), acc[v]);
      } else if constexpr (K == LutWeights::Ternary) {
        acc[v] = _mm512_fmadd_ps(_mm512_mul_ps(p0, half), f[v], acc[v]);
      } else {
        acc[v] = _mm512_fmadd_ps(p0, f[v], acc[v]);
      }
    }
  }
  for (int v = 0; v < kVecs; ++v) _mm512_storeu_ps(out + 16 * v, acc[v]);
}

template <LutWeights K>
QTL_TARGET_AVX512 void run_tiles(const LutKernelView& w, const LutActivationSet& a, float* y,
                                     std::ptrdiff_t ldy, std::ptrdiff_t t0, std::ptrdiff_t t1) noexcept {
  constexpr int kTr = K == LutWeights::Ternary ? 32 : 64;
  int slot_row[kTr];
  for (int s = 0; s < kTr; ++s) slot_row[s] = lut_slot_row(K, s);
  alignas(64) float out[kTr];
  for (std::ptrdiff_t t = t0; t < t1; ++t) {
    const std::ptrdiff_t row0 = t * kTr;
    for (std::ptrdiff_t n = 0; n < a.m; ++n) {
      tile_token<K>(w, t, a.tables + n * a.blocks * kLutBlockTableBytes, a.d + n * a.blocks, a.gsum + n * a.groups,
                    out);
      float* yn = y + n * ldy + row0;
      if (row0 + kTr <= w.rows) {
        for (int s = 0; s < kTr; ++s) yn[slot_row[s]] = out[s];
      } else {
        for (int s = 0; s < kTr; ++s) {
          if (row0 + slot_row[s] < w.rows) yn[slot_row[s]] = out[s];
        }
      }
    }
  }
}

}  // namespace detail_lut_avx512

/// Y[n * ldy + row] for the rows of tiles [t0, t1) and tokens [0, a.m). Requires
/// path_supported(KernelPath::Avx512).
inline void lut_tiles_avx512(const LutKernelView& w, const LutActivationSet& a, float* y, std::ptrdiff_t ldy,
                             std::ptrdiff_t t0, std::ptrdiff_t t1) noexcept {
  using namespace detail_lut_avx512;
  switch (w.kind) {
    case LutWeights::Binary: run_tiles<LutWeights::Binary>(w, a, y, ldy, t0, t1); break;
    case LutWeights::BinaryShift: run_tiles<LutWeights::BinaryShift>(w, a, y, ldy, t0, t1); break;
    case LutWeights::Ternary: run_tiles<LutWeights::Ternary>(w, a, y, ldy, t0, t1); break;
  }
}

}  // namespace qtl::kernel

#endif
