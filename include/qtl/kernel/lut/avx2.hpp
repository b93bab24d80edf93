// qtl/kernel/lut/avx2.hpp — AVX2 path of the lookup-table kernels (ymm vpshufb).
//
// The same arithmetic as qtl/kernel/lut/avx512.hpp on 256-bit vectors: bytes 0..31 and 32..63
// of each 64-byte unit (lanes 0-1 and 2-3 of the layout, qtl/kernel/lut/layout.hpp) are two
// halves processed side by side; half h produces result slots 16 v + 8 h + 0..7. Integer sums
// are exact and the float steps are those of qtl/kernel/lut/portable.hpp in the same order, so
// the result is bit-identical to the other paths.
// Target attributes: see qtl/kernel/common/cpu_features.hpp. Call only when path_supported(Avx2).
#pragma once

#include "qtl/kernel/common/target.hpp"

#if defined(QTL_X86_64)

#include <immintrin.h>

#include <cstddef>
#include <cstdint>

#include "qtl/kernel/common/prefetch.hpp"
#include "qtl/kernel/lut/layout.hpp"


namespace qtl::kernel {
namespace detail_lut_avx2 {

QTL_TARGET_AVX2 inline __attribute__((always_inline)) __m256i bcast_table(const std::uint8_t* p) noexcept {
  return _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}

/// One (tile, token): out[slot] for the tile's rows.
template <LutWeights K>
QTL_TARGET_AVX2 void tile_token(const LutKernelView& w, std::ptrdiff_t t, const std::uint8_t* tables,
                                    const float* d, const float* gs, float* out) noexcept {
  constexpr int kVecs = K == LutWeights::Ternary ? 2 : 4;
  constexpr int kTr = K == LutWeights::Ternary ? 32 : 64;
  const __m256i nib = _mm256_set1_epi8(0x0F);
  const __m256i ones8 = _mm256_set1_epi8(1);
  const __m256i sel_lo = _mm256_set1_epi32(0x00000001), sel_hi = _mm256_set1_epi32(0x00010000);
  __m256 acc[kVecs][2];
  for (int v = 0; v < kVecs; ++v) acc[v][0] = acc[v][1] = _mm256_setzero_ps();
  for (std::ptrdiff_t g = 0; g < w.groups; ++g) {
    __m256 f[kVecs][2];
    for (int v = 0; v < kVecs; ++v) f[v][0] = f[v][1] = _mm256_setzero_ps();
    for (std::ptrdiff_t b = w.group_block_begin[g]; b < w.group_block_begin[g + 1]; ++b) {
      const std::uint8_t* blk = w.block(t, b);
      prefetch_stream<kLutUnitsPerBlock>(blk);
      const std::uint8_t* tb = tables + b * kLutBlockTableBytes;
      __m256i lo[2], odd[2], hi[2];
      for (int h = 0; h < 2; ++h) lo[h] = odd[h] = hi[h] = _mm256_setzero_si256();
#pragma GCC unroll 4
      for (int u = 0; u < kLutUnitsPerBlock; ++u) {
        const std::uint8_t* t0 = tb + u * kLutTableBytes;
        const std::uint8_t* t1 = tb + (u + 4) * kLutTableBytes;
        const __m256i tl0 = bcast_table(t0), th0 = bcast_table(t0 + 16);
        const __m256i tl1 = bcast_table(t1), th1 = bcast_table(t1 + 16);
        for (int h = 0; h < 2; ++h) {
          const __m256i x = _mm256_load_si256(reinterpret_cast<const __m256i*>(blk + u * kLutUnitBytes + 32 * h));
          const __m256i il = _mm256_and_si256(x, nib);
          const __m256i ih = _mm256_and_si256(_mm256_srli_epi16(x, 4), nib);
          const __m256i l0 = _mm256_shuffle_epi8(tl0, il);
          const __m256i l1 = _mm256_shuffle_epi8(tl1, ih);
          hi[h] = _mm256_add_epi8(hi[h], _mm256_shuffle_epi8(th0, il));
          hi[h] = _mm256_add_epi8(hi[h], _mm256_shuffle_epi8(th1, ih));
          if constexpr (K == LutWeights::Ternary) {
            lo[h] = _mm256_add_epi16(lo[h], _mm256_maddubs_epi16(l0, ones8));
            lo[h] = _mm256_add_epi16(lo[h], _mm256_maddubs_epi16(l1, ones8));
          } else {
            lo[h] = _mm256_add_epi16(lo[h], _mm256_add_epi16(l0, l1));
            odd[h] = _mm256_add_epi16(odd[h], _mm256_add_epi16(_mm256_srli_epi16(l0, 8), _mm256_srli_epi16(l1, 8)));
          }
        }
      }
      const __m256 dv = _mm256_set1_ps(d[b]);
      for (int h = 0; h < 2; ++h) {
        if constexpr (K == LutWeights::Ternary) {
          const __m256i s = _mm256_add_epi16(lo[h], _mm256_slli_epi16(_mm256_maddubs_epi16(ones8, hi[h]), 8));
          f[0][h] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_madd_epi16(s, sel_lo)), dv, f[0][h]);
          f[1][h] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_madd_epi16(s, sel_hi)), dv, f[1][h]);
        } else {
          const __m256i even = _mm256_sub_epi16(lo[h], _mm256_slli_epi16(odd[h], 8));
          const __m256i hi_even = _mm256_srai_epi16(_mm256_slli_epi16(hi[h], 8), 8);
          const __m256i hi_odd = _mm256_srai_epi16(hi[h], 8);
          const __m256i se = _mm256_add_epi16(even, _mm256_slli_epi16(hi_even, 8));
          const __m256i so = _mm256_add_epi16(odd[h], _mm256_slli_epi16(hi_odd, 8));
          f[0][h] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_madd_epi16(se, sel_lo)), dv, f[0][h]);
          f[1][h] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_madd_epi16(se, sel_hi)), dv, f[1][h]);
          f[2][h] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_madd_epi16(so, sel_lo)), dv, f[2][h]);
          f[3][h] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_madd_epi16(so, sel_hi)), dv, f[3][h]);
        }
      }
    }
    const std::uint16_t* p = w.params(t, g);
    const __m256 half = _mm256_set1_ps(0.5f);
    for (int v = 0; v < kVecs; ++v) {
      for (int h = 0; h < 2; ++h) {
        const int s0 = 16 * v + 8 * h;
        const __m256 p0 = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p + s0)));
        if constexpr (K == LutWeights::BinaryShift) {
          const __m256 p1 = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p + kTr + s0)));
          acc[v][h] = _mm256_fmadd_ps(_mm256_mul_ps(_mm256_sub_ps(p1, p0), half), f[v][h], acc[v][h]);
          acc[v][h] = _mm256_fmadd_ps(_mm256_mul_ps(_mm256_add_ps(p1, p0), half), _mm256_set1_ps(gs[g]), acc[v][h]);
        } else if constexpr (K == LutWeights::Ternary) {
          acc[v][h] = _mm256_fmadd_ps(_mm256_mul_ps(p0, half), f[v][h], acc[v][h]);
        } else {
          acc[v][h] = _mm256_fmadd_ps(p0, f[v][h], acc[v][h]);
        }
      }
    }
  }
  for (int v = 0; v < kVecs; ++v) {
    for (int h = 0; h < 2; ++h) _mm256_storeu_ps(out + 16 * v + 8 * h, acc[v][h]);
  }
}

template <LutWeights K>
QTL_TARGET_AVX2 void run_tiles(const LutKernelView& w, const LutActivationSet& a, float* y, std::ptrdiff_t ldy,
                                   std::ptrdiff_t t0, std::ptrdiff_t t1) noexcept {
  constexpr int kTr = K == LutWeights::Ternary ? 32 : 64;
  int slot_row[kTr];
  for (int s = 0; s < kTr; ++s) slot_row[s] = lut_slot_row(K, s);
  alignas(32) float out[kTr];
  for (std::ptrdiff_t t = t0; t < t1; ++t) {
    const std::ptrdiff_t row0 = t * kTr;
    for (std::ptrdiff_t n = 0; n < a.m; ++n) {
      tile_token<K>(w, t, a.tables + n * a.blocks * kLutBlockTableBytes, a.d + n * a.blocks, a.gsum + n * a.groups,
                    out);
      float* yn = y + n * ldy + row0;
      for (int s = 0; s < kTr; ++s) {
        if (row0 + slot_row[s] < w.rows) yn[slot_row[s]] = out[s];
      }
    }
  }
}

}  // namespace detail_lut_avx2

/// build_lut_group (qtl/kernel/lut/layout.hpp) with AVX2, bit-identical: the 16 entries as
/// int16 lanes L_k = sum_i sign(a_i, s_i(k)); the little-endian bytes of L_k are exactly its low
/// byte and its high byte (L_k >> 8), so one byte shuffle splits them into the two tables.
QTL_TARGET_AVX2 inline void build_lut_group_avx2(const std::int8_t* a, std::uint8_t* out) noexcept {
  std::int32_t a4;
  __builtin_memcpy(&a4, a, 4);
  const __m256i v = _mm256_cvtepi8_epi16(_mm_set1_epi32(a4));  // a0 a1 a2 a3 repeated, int16
  __m256i l = _mm256_setzero_si256();
  for (int i = 0; i < 4; ++i) {
    const __m256i bc = _mm256_shuffle_epi8(v, _mm256_set1_epi16(static_cast<short>((2 * i) | (2 * i + 1) << 8)));
    // lane k: +1 where bit i of k is set, else -1
    alignas(32) std::int16_t sgn[16];
    for (int k = 0; k < 16; ++k) sgn[k] = ((k >> i) & 1) ? 1 : -1;
    l = _mm256_add_epi16(l, _mm256_sign_epi16(bc, _mm256_load_si256(reinterpret_cast<const __m256i*>(sgn))));
  }
  const __m256i split = _mm256_shuffle_epi8(
      l, _mm256_setr_epi8(0, 2, 4, 6, 8, 10, 12, 14, 1, 3, 5, 7, 9, 11, 13, 15, 0, 2, 4, 6, 8, 10, 12, 14, 1, 3, 5, 7,
                          9, 11, 13, 15));
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(out), _mm256_permute4x64_epi64(split, 0xD8));
}

/// Y[n * ldy + row] for the rows of tiles [t0, t1) and tokens [0, a.m). Requires
/// path_supported(KernelPath::Avx2).
inline void lut_tiles_avx2(const LutKernelView& w, const LutActivationSet& a, float* y, std::ptrdiff_t ldy,
                           std::ptrdiff_t t0, std::ptrdiff_t t1) noexcept {
  using namespace detail_lut_avx2;
  switch (w.kind) {
    case LutWeights::Binary: run_tiles<LutWeights::Binary>(w, a, y, ldy, t0, t1); break;
    case LutWeights::BinaryShift: run_tiles<LutWeights::BinaryShift>(w, a, y, ldy, t0, t1); break;
    case LutWeights::Ternary: run_tiles<LutWeights::Ternary>(w, a, y, ldy, t0, t1); break;
  }
}

}  // namespace qtl::kernel

#endif
