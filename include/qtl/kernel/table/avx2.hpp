// qtl/kernel/table/avx2.hpp — AVX2 path of the table-decode kernels.
//
// A 16-column slice (qtl/kernel/table/layout.hpp) is two ymm halves (lanes 0..7 = bytes 0..31
// of a 64-byte vector, lanes 8..15 = bytes 32..63). vpermps on ymm selects among 8 floats by
// the index's low 3 bits, so a 4-bit code takes two permutes (table entries 0..7 and 8..15) and
// a blend on bit 3 of the index (moved to the sign bit by a shift, vblendvps's selector); for
// 1..3-bit codes the replicated table has entries 8..15 equal to 0..7 and one permute suffices.
// GEMV: 2 rows per pass (4 independent FMA chains); 4..7 tokens: 4 at a time, 1 row per pass
// (the 16 ymm registers hold 4 x 2 accumulators). GEMM (>= 8 tokens): 32-slice panels of a
// tile's 4 rows decoded once into an L1 buffer, then 2 rows x 3 tokens x 2 halves per block. Per (row, token) two fp32 chains (the halves),
// added at the end of the row, so results depend on neither the token tiling nor the split of
// tiles across threads.
//
// Functions carry target attributes; they must only run when path_supported(KernelPath::Avx2).
#pragma once

#include "qtl/kernel/common/target.hpp"

#if defined(QTL_X86_64)

#include <immintrin.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "qtl/kernel/common/prefetch.hpp"
#include "qtl/kernel/table/layout.hpp"

#ifndef QTL_TABLE_INLINE
#define QTL_TABLE_INLINE inline __attribute__((always_inline))
#endif

namespace qtl::kernel {
namespace detail_table_avx2 {

QTL_TARGET_AVX2 QTL_TABLE_INLINE __m256i counts8(int k) noexcept {
  return _mm256_load_si256(reinterpret_cast<const __m256i*>(detail_table::kShiftCounts.v[k]));
}

/// The 16-entry kernel table of slot q as two ymm (entries 0..7, 8..15).
template <int Bits, TableForm F>
QTL_TARGET_AVX2 QTL_TABLE_INLINE void table16(const TableKernelView& w, std::ptrdiff_t q, __m256& lo,
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
QTL_TARGET_AVX2 QTL_TABLE_INLINE __m256i slice_index(const std::uint8_t* ch, int k, int h) noexcept {
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

/// Rows i0 .. i0 + R - 1 of tile t times NT tokens.
template <int Bits, TableForm F, int NT, int R>
QTL_TARGET_AVX2 void rows_tile(const TableKernelView& w, std::ptrdiff_t t, int i0, const float* xk,
                                     std::ptrdiff_t ldx, float* y, std::ptrdiff_t ldy) noexcept {
  constexpr int kSc = table_chunk_slices(Bits);
  constexpr std::ptrdiff_t kCb = table_chunk_bytes(Bits);
  __m256 acc[R][NT][2];
  for (int i = 0; i < R; ++i)
    for (int n = 0; n < NT; ++n) acc[i][n][0] = acc[i][n][1] = _mm256_setzero_ps();
  const std::uint8_t* codes = w.codes + t * w.chunks * kTableTileRows * kCb + i0 * kCb;
  for (std::ptrdiff_t g = 0; g < w.groups; ++g) {
    __m256 tlo[R], thi[R];
    for (int i = 0; i < R; ++i) table16<Bits, F>(w, w.param_index(t, g, i0 + i), tlo[i], thi[i]);
    (void)thi;  // 1..3 bits: entries 8..15 repeat 0..7
    const std::ptrdiff_t s1 = w.group_slice_begin[g + 1];
    for (std::ptrdiff_t s = w.group_slice_begin[g]; s < s1;) {  // runs inside one chunk
      const std::ptrdiff_t c = s / kSc;
      const int k0 = static_cast<int>(s - c * kSc);
      const int k1 = s1 - s < kSc - k0 ? k0 + static_cast<int>(s1 - s) : kSc;
      const std::uint8_t* ch = codes + c * kTableTileRows * kCb;
      prefetch_stream<static_cast<int>((R * kCb + 63) / 64)>(ch);
      const float* xs = xk + kTableSliceCols * s;
      for (int k = k0; k < k1; ++k, xs += kTableSliceCols) {
        for (int h = 0; h < 2; ++h) {
          for (int i = 0; i < R; ++i) {
            const __m256i idx = slice_index<Bits>(ch + i * kCb, k, h);
            __m256 wv = _mm256_permutevar8x32_ps(tlo[i], idx);
            if constexpr (Bits == 4) {
              wv = _mm256_blendv_ps(wv, _mm256_permutevar8x32_ps(thi[i], idx),
                                    _mm256_castsi256_ps(_mm256_slli_epi32(idx, 28)));
            }
            for (int n = 0; n < NT; ++n) {
              acc[i][n][h] = _mm256_fmadd_ps(wv, _mm256_loadu_ps(xs + n * ldx + 8 * h), acc[i][n][h]);
            }
          }
        }
      }
      s += k1 - k0;
    }
  }
  for (int i = 0; i < R; ++i) {
    const std::ptrdiff_t row = t * kTableTileRows + i0 + i;
    if (row >= w.rows) break;
    for (int n = 0; n < NT; ++n) {
      const __m256 a8 = _mm256_add_ps(acc[i][n][0], acc[i][n][1]);
      const __m128 a4 = _mm_add_ps(_mm256_castps256_ps128(a8), _mm256_extractf128_ps(a8, 1));
      const __m128 a2 = _mm_add_ps(a4, _mm_movehl_ps(a4, a4));
      const __m128 a1 = _mm_add_ss(a2, _mm_movehdup_ps(a2));
      y[n * ldy + row] = _mm_cvtss_f32(a1);
    }
  }
}

inline constexpr int kPanelSlices2 = 32;             ///< GEMM: slices decoded per panel (8 KiB)
inline constexpr std::ptrdiff_t kGemmMinTokens2 = 8;  ///< from here on, GEMM decodes panels once
inline constexpr std::ptrdiff_t kGemmBlockTokens2 = 64;

/// Decodes slices [ps, pe) of the 4 rows of tile t into wbuf[(i * kPanelSlices2 + s - ps) * 16].
template <int Bits, TableForm F>
QTL_TARGET_AVX2 void decode_panel(const TableKernelView& w, std::ptrdiff_t t, std::ptrdiff_t ps,
                                        std::ptrdiff_t pe, std::ptrdiff_t& g, float* wbuf) noexcept {
  constexpr int R = kTableTileRows;
  constexpr int kSc = table_chunk_slices(Bits);
  constexpr std::ptrdiff_t kCb = table_chunk_bytes(Bits);
  const std::uint8_t* codes = w.codes + t * w.chunks * R * kCb;
  for (std::ptrdiff_t s = ps; s < pe;) {
    while (s >= w.group_slice_begin[g + 1]) ++g;
    const std::ptrdiff_t c = s / kSc;
    const int k0 = static_cast<int>(s - c * kSc);
    const std::ptrdiff_t end = std::min(std::min<std::ptrdiff_t>(pe, w.group_slice_begin[g + 1]), (c + 1) * kSc);
    const int k1 = k0 + static_cast<int>(end - s);
    const std::uint8_t* ch = codes + c * R * kCb;
    for (int i = 0; i < R; ++i) {
      __m256 tlo, thi;
      table16<Bits, F>(w, w.param_index(t, g, i), tlo, thi);
      (void)thi;
      float* dst = wbuf + (i * kPanelSlices2 + (s - ps)) * kTableSliceCols;
      for (int k = k0; k < k1; ++k, dst += kTableSliceCols) {
        for (int h = 0; h < 2; ++h) {
          const __m256i idx = slice_index<Bits>(ch + i * kCb, k, h);
          __m256 wv = _mm256_permutevar8x32_ps(tlo, idx);
          if constexpr (Bits == 4) {
            wv = _mm256_blendv_ps(wv, _mm256_permutevar8x32_ps(thi, idx), _mm256_castsi256_ps(_mm256_slli_epi32(idx, 28)));
          }
          _mm256_store_ps(dst + 8 * h, wv);
        }
      }
    }
    s = end;
  }
}

/// accbuf[(n * 4 + i) * 16 + 8 h ..] += the decoded panel rows i0, i0 + 1 (ns slices) times
/// tokens n of xp (stride ldx): 2 rows x NT tokens x 2 halves of accumulators.
template <int NT>
QTL_TARGET_AVX2 void panel_fma(const float* wbuf, int i0, std::ptrdiff_t ns, const float* xp,
                                     std::ptrdiff_t ldx, float* accbuf) noexcept {
  constexpr int R = 2;
  __m256 acc[R][NT][2];
  for (int i = 0; i < R; ++i)
    for (int n = 0; n < NT; ++n)
      for (int h = 0; h < 2; ++h)
        acc[i][n][h] = _mm256_load_ps(accbuf + (n * kTableTileRows + i0 + i) * kTableSliceCols + 8 * h);
  for (std::ptrdiff_t s = 0; s < ns; ++s) {
    for (int h = 0; h < 2; ++h) {
      __m256 wv[R];
      for (int i = 0; i < R; ++i) wv[i] = _mm256_load_ps(wbuf + ((i0 + i) * kPanelSlices2 + s) * kTableSliceCols + 8 * h);
      for (int n = 0; n < NT; ++n) {
        const __m256 xv = _mm256_loadu_ps(xp + n * ldx + s * kTableSliceCols + 8 * h);
        for (int i = 0; i < R; ++i) acc[i][n][h] = _mm256_fmadd_ps(wv[i], xv, acc[i][n][h]);
      }
    }
  }
  for (int i = 0; i < R; ++i)
    for (int n = 0; n < NT; ++n)
      for (int h = 0; h < 2; ++h)
        _mm256_store_ps(accbuf + (n * kTableTileRows + i0 + i) * kTableSliceCols + 8 * h, acc[i][n][h]);
}

/// GEMM of tile t for m <= kGemmBlockTokens2 tokens: each 32-slice panel of the tile's rows is
/// decoded once, then multiplied with every token; each (row, token) keeps the two chains of
/// rows_tile(), in the same order: the same bits.
template <int Bits, TableForm F>
QTL_TARGET_AVX2 void gemm_tile(const TableKernelView& w, std::ptrdiff_t t, const float* xk, std::ptrdiff_t ldx,
                                     std::ptrdiff_t m, float* y, std::ptrdiff_t ldy, float* wbuf,
                                     float* accbuf) noexcept {
  constexpr int R = kTableTileRows;
  for (std::ptrdiff_t j = 0; j < m * R * kTableSliceCols; j += 8) _mm256_store_ps(accbuf + j, _mm256_setzero_ps());
  std::ptrdiff_t g = 0;
  for (std::ptrdiff_t ps = 0; ps < w.slices; ps += kPanelSlices2) {
    const std::ptrdiff_t pe = std::min<std::ptrdiff_t>(ps + kPanelSlices2, w.slices);
    decode_panel<Bits, F>(w, t, ps, pe, g, wbuf);
    const float* xp = xk + ps * kTableSliceCols;
    for (int i0 = 0; i0 < R; i0 += 2) {
      std::ptrdiff_t n = 0;
      for (; n + 3 <= m; n += 3) panel_fma<3>(wbuf, i0, pe - ps, xp + n * ldx, ldx, accbuf + n * R * kTableSliceCols);
      for (; n < m; ++n) panel_fma<1>(wbuf, i0, pe - ps, xp + n * ldx, ldx, accbuf + n * R * kTableSliceCols);
    }
  }
  for (int i = 0; i < R; ++i) {
    const std::ptrdiff_t row = t * R + i;
    if (row >= w.rows) break;
    for (std::ptrdiff_t n = 0; n < m; ++n) {
      const float* a = accbuf + (n * R + i) * kTableSliceCols;
      const __m256 a8 = _mm256_add_ps(_mm256_load_ps(a), _mm256_load_ps(a + 8));
      const __m128 a4 = _mm_add_ps(_mm256_castps256_ps128(a8), _mm256_extractf128_ps(a8, 1));
      const __m128 a2 = _mm_add_ps(a4, _mm_movehl_ps(a4, a4));
      y[n * ldy + row] = _mm_cvtss_f32(_mm_add_ss(a2, _mm_movehdup_ps(a2)));
    }
  }
}

template <int Bits, TableForm F>
QTL_TARGET_AVX2 void tiles(const TableKernelView& w, const float* xk, std::ptrdiff_t ldx, std::ptrdiff_t m,
                                 float* y, std::ptrdiff_t ldy, std::ptrdiff_t t0, std::ptrdiff_t t1) noexcept {
  if (m >= kGemmMinTokens2) {
    alignas(64) float wbuf[kTableTileRows * kPanelSlices2 * kTableSliceCols];
    alignas(64) float accbuf[kGemmBlockTokens2 * kTableTileRows * kTableSliceCols];
    for (std::ptrdiff_t t = t0; t < t1; ++t) {
      for (std::ptrdiff_t n = 0; n < m; n += kGemmBlockTokens2) {
        gemm_tile<Bits, F>(w, t, xk + n * ldx, ldx, std::min(kGemmBlockTokens2, m - n), y + n * ldy, ldy, wbuf, accbuf);
      }
    }
    return;
  }
  for (std::ptrdiff_t t = t0; t < t1; ++t) {
    std::ptrdiff_t n = 0;
    for (; n + 4 <= m; n += 4) {
      for (int i = 0; i < kTableTileRows && t * kTableTileRows + i < w.rows; ++i) {
        rows_tile<Bits, F, 4, 1>(w, t, i, xk + n * ldx, ldx, y + n * ldy, ldy);
      }
    }
    for (; n < m; ++n) {
      for (int i = 0; i < kTableTileRows && t * kTableTileRows + i < w.rows; i += 2) {
        rows_tile<Bits, F, 1, 2>(w, t, i, xk + n * ldx, ldx, y + n * ldy, ldy);
      }
    }
  }
}

template <int Bits>
QTL_TARGET_AVX2 void tiles_form(const TableKernelView& w, const float* xk, std::ptrdiff_t ldx, std::ptrdiff_t m,
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
