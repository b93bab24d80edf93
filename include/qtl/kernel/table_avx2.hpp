// qtl/kernel/table_avx2.hpp — AVX2 path of the table-decode kernels.
//
// A 16-column slice (qtl/kernel/layout_table.hpp) is two ymm halves (lanes 0..7 = bytes 0..31
// of a 64-byte vector, lanes 8..15 = bytes 32..63). vpermps on ymm selects among 8 floats by
// the index's low 3 bits, so a 4-bit code takes two permutes (table entries 0..7 and 8..15) and
// a blend on bit 3 of the index (moved to the sign bit by a shift, vblendvps's selector); for
// 1..3-bit codes the replicated table has entries 8..15 equal to 0..7 and one permute suffices.
// One row at a time with NT = 1 or 4 tokens sharing each decoded slice; per (row, token) two
// fp32 chains (the halves) added at the end of the row, so results do not depend on NT or on
// the split of tiles across threads.
//
// Functions carry target attributes; they must only run when path_supported(KernelPath::Avx2).
#pragma once

#if (defined(__GNUC__) || defined(__clang__)) && defined(__x86_64__)

#include <immintrin.h>

#include <cstddef>
#include <cstdint>
#include <cstring>

#include "qtl/kernel/layout_table.hpp"

#define QTL_TARGET_TABLE_AVX2 __attribute__((target("avx2,fma,f16c")))
#ifndef QTL_TABLE_INLINE
#define QTL_TABLE_INLINE inline __attribute__((always_inline))
#endif

namespace qtl::kernel {
namespace detail_table_avx2 {

QTL_TARGET_TABLE_AVX2 QTL_TABLE_INLINE __m256i counts8(int k) noexcept {
  return _mm256_load_si256(reinterpret_cast<const __m256i*>(detail_table::kShiftCounts.v[k]));
}

/// The 16-entry kernel table of slot q as two ymm (entries 0..7, 8..15).
template <int Bits, TableForm F>
QTL_TARGET_TABLE_AVX2 QTL_TABLE_INLINE void table16(const TableKernelView& w, std::ptrdiff_t q, __m256& lo,
                                                    __m256& hi) noexcept {
  if constexpr (F == TableForm::ScaledShared) {
    const __m256 s = _mm256_set1_ps(w.scales[q]);
    lo = _mm256_mul_ps(_mm256_loadu_ps(w.shared16), s);
    hi = _mm256_mul_ps(_mm256_loadu_ps(w.shared16 + 8), s);
  } else {
    const std::uint16_t* h = w.tables + (q << Bits);
    if constexpr (Bits == 4) {
      lo = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(h)));
      hi = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(h + 8)));
    } else {
      __m128i v;
      if constexpr (Bits == 3) {
        v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(h));
      } else if constexpr (Bits == 2) {
        long long u;
        std::memcpy(&u, h, 8);
        v = _mm_set1_epi64x(u);
      } else {
        int u;
        std::memcpy(&u, h, 4);
        v = _mm_set1_epi32(u);
      }
      lo = _mm256_cvtph_ps(v);
      hi = lo;
    }
  }
}

/// Permute indices of half h of slice k of one row's chunk.
template <int Bits>
QTL_TARGET_TABLE_AVX2 QTL_TABLE_INLINE __m256i slice_index(const std::uint8_t* ch, int k, int h) noexcept {
  if constexpr (Bits != 3) {
    return _mm256_srlv_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(ch + 32 * h)), counts8(Bits * k));
  } else {
    const __m256i lo = _mm256_srlv_epi32(
        _mm256_loadu_si256(reinterpret_cast<const __m256i*>(ch + 64 * (k >> 4) + 32 * h)), counts8(2 * (k & 15)));
    const __m256i hv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(ch + 128 + 32 * h));
    const int r = (k - 2) & 31;  // rotate right by r: bit k to bit 2
    const __m256i hi = _mm256_or_si256(_mm256_srlv_epi32(hv, counts8(r)), _mm256_sllv_epi32(hv, counts8(32 - r)));
    const __m256i three = _mm256_set1_epi32(3);
    return _mm256_or_si256(_mm256_and_si256(lo, three), _mm256_andnot_si256(three, hi));
  }
}

template <int Bits, TableForm F, int NT>
QTL_TARGET_TABLE_AVX2 void row_tile(const TableKernelView& w, std::ptrdiff_t t, int i, const float* xk,
                                    std::ptrdiff_t ldx, float* y, std::ptrdiff_t ldy) noexcept {
  constexpr int kSc = table_chunk_slices(Bits);
  __m256 acc[NT][2];
  for (int n = 0; n < NT; ++n) acc[n][0] = acc[n][1] = _mm256_setzero_ps();
  for (std::ptrdiff_t g = 0; g < w.groups; ++g) {
    __m256 tlo, thi;
    table16<Bits, F>(w, w.param_index(t, g, i), tlo, thi);
    (void)thi;  // 1..3 bits: entries 8..15 repeat 0..7
    const std::ptrdiff_t s1 = w.group_slice_begin[g + 1];
    for (std::ptrdiff_t s = w.group_slice_begin[g]; s < s1; ++s) {
      const std::uint8_t* ch = w.chunk(t, s / kSc, i);
      const int k = static_cast<int>(s % kSc);
      for (int h = 0; h < 2; ++h) {
        const __m256i idx = slice_index<Bits>(ch, k, h);
        __m256 wv = _mm256_permutevar8x32_ps(tlo, idx);
        if constexpr (Bits == 4) {
          wv = _mm256_blendv_ps(wv, _mm256_permutevar8x32_ps(thi, idx), _mm256_castsi256_ps(_mm256_slli_epi32(idx, 28)));
        }
        for (int n = 0; n < NT; ++n) {
          acc[n][h] = _mm256_fmadd_ps(wv, _mm256_loadu_ps(xk + n * ldx + kTableSliceCols * s + 8 * h), acc[n][h]);
        }
      }
    }
  }
  const std::ptrdiff_t row = t * kTableTileRows + i;
  for (int n = 0; n < NT; ++n) {
    const __m256 a8 = _mm256_add_ps(acc[n][0], acc[n][1]);
    const __m128 a4 = _mm_add_ps(_mm256_castps256_ps128(a8), _mm256_extractf128_ps(a8, 1));
    const __m128 a2 = _mm_add_ps(a4, _mm_movehl_ps(a4, a4));
    const __m128 a1 = _mm_add_ss(a2, _mm_movehdup_ps(a2));
    y[n * ldy + row] = _mm_cvtss_f32(a1);
  }
}

template <int Bits, TableForm F>
QTL_TARGET_TABLE_AVX2 void tiles(const TableKernelView& w, const float* xk, std::ptrdiff_t ldx, std::ptrdiff_t m,
                                 float* y, std::ptrdiff_t ldy, std::ptrdiff_t t0, std::ptrdiff_t t1) noexcept {
  for (std::ptrdiff_t t = t0; t < t1; ++t) {
    for (int i = 0; i < kTableTileRows; ++i) {
      if (t * kTableTileRows + i >= w.rows) break;
      std::ptrdiff_t n = 0;
      for (; n + 4 <= m; n += 4) row_tile<Bits, F, 4>(w, t, i, xk + n * ldx, ldx, y + n * ldy, ldy);
      for (; n < m; ++n) row_tile<Bits, F, 1>(w, t, i, xk + n * ldx, ldx, y + n * ldy, ldy);
    }
  }
}

template <int Bits>
QTL_TARGET_TABLE_AVX2 void tiles_form(const TableKernelView& w, const float* xk, std::ptrdiff_t ldx, std::ptrdiff_t m,
                                      float* y, std::ptrdiff_t ldy, std::ptrdiff_t t0, std::ptrdiff_t t1) noexcept {
  if (w.form == TableForm::ScaledShared) {
    tiles<Bits, TableForm::ScaledShared>(w, xk, ldx, m, y, ldy, t0, t1);
  } else {
    tiles<Bits, TableForm::PerSet>(w, xk, ldx, m, y, ldy, t0, t1);
  }
}

}  // namespace detail_table_avx2

/// Y[n * ldy + row] for the rows of tiles [t0, t1) and tokens [0, m): AVX2.
/// Requires path_supported(KernelPath::Avx2).
inline void table_tiles_avx2(const TableKernelView& w, const float* xk, std::ptrdiff_t ldx, std::ptrdiff_t m,
                             float* y, std::ptrdiff_t ldy, std::ptrdiff_t t0, std::ptrdiff_t t1) noexcept {
  using namespace detail_table_avx2;
  switch (w.bits) {
    case 1: tiles_form<1>(w, xk, ldx, m, y, ldy, t0, t1); break;
    case 2: tiles_form<2>(w, xk, ldx, m, y, ldy, t0, t1); break;
    case 3: tiles_form<3>(w, xk, ldx, m, y, ldy, t0, t1); break;
    case 4: tiles_form<4>(w, xk, ldx, m, y, ldy, t0, t1); break;
    default: break;
  }
}

}  // namespace qtl::kernel

#endif
