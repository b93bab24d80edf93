// qtl/kernel/table/avx512.hpp — AVX-512 path of the table-decode kernels: one vpermps per 16 codes.
//
// Per 16-column slice s and row (qtl/kernel/table/layout.hpp for the layout):
//   idx = chunk_vector >> (b * k)          vpsrlvd (3-bit: two shifts/rotates + vpternlogd)
//   w   = vpermps(idx, T16)                the 16 weights, exact (T16 = the group's table)
//   acc = fma(w, x[16 s .. 16 s + 15], acc)
// GEMV: the 4 rows of a tile are decoded per slice (4 independent FMA chains sharing each
// activation load); 2..7 tokens run 4 at a time through the same loop (4 x 4 accumulators).
// GEMM (>= 8 tokens): a panel of 32 slices x 4 rows is decoded once into an 8 KiB buffer and
// multiplied with every token in 4 x 6 register blocks, so the decode costs 2 instructions per
// 16 weights per tile, whatever the number of tokens. ScaledShared tables are scale * shared
// (the float products of the reference), built once per row and group; PerSet tables are the
// stored fp16 entries widened with vcvtph2ps, replicated to 16 lanes. Each (row, token) is one
// fp32 chain over its slices, reduced once at the end of the row, so the result is the same
// for every token tiling and for any split of the tiles across threads.
// Decoding through a permute of a small table in registers follows the float "LUT" decoders
// of llama.cpp's IQ4_NL / NF4 CPU paths (vpshufb on int8) and T-MAC's table lookups.
//
// The functions carry target attributes (qtl/kernel/common/cpu_features.hpp): they compile in any
// translation unit and must only run when path_supported(KernelPath::Avx512) holds.
#pragma once

#include "qtl/kernel/common/target.hpp"

#if defined(QTL_X86_64)

#include <immintrin.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <algorithm>

#include "qtl/kernel/common/prefetch.hpp"
#include "qtl/kernel/table/layout.hpp"

#ifndef QTL_TABLE_INLINE
#define QTL_TABLE_INLINE inline __attribute__((always_inline))
#endif

namespace qtl::kernel {

namespace detail_table_avx512 {

template <int Bits, TableForm F>
QTL_TARGET_AVX512 QTL_TABLE_INLINE __m512 table16(const TableKernelView& w, __m512 shared,
                                                        std::ptrdiff_t q) noexcept {
  if constexpr (F == TableForm::ScaledShared) {
    return _mm512_mul_ps(shared, _mm512_set1_ps(w.scales[q]));
  } else {
    const std::uint16_t* h = w.tables + (q << Bits);
    __m256i v;
    if constexpr (Bits == 4) {
      v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(h));
    } else if constexpr (Bits == 3) {
      v = _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(h)));
    } else if constexpr (Bits == 2) {
      long long u;
      std::memcpy(&u, h, 8);
      v = _mm256_set1_epi64x(u);
    } else {
      int u;
      std::memcpy(&u, h, 4);
      v = _mm256_set1_epi32(u);
    }
    return _mm512_cvtph_ps(v);
  }
}

QTL_TARGET_AVX512 QTL_TABLE_INLINE __m512i counts(int k) noexcept {
  return _mm512_load_si512(detail_table::kShiftCounts.v[k]);
}

/// Permute indices of slice k of one row's chunk (low 4 bits valid, higher bits don't-care).
/// `v` is the chunk's first 64 bytes, already loaded (the same for every slice of the chunk).
template <int Bits>
QTL_TARGET_AVX512 QTL_TABLE_INLINE __m512i slice_index(__m512i v, const std::uint8_t* ch, int k) noexcept {
  if constexpr (Bits != 3) {
    (void)ch;
    return _mm512_srlv_epi32(v, counts(Bits * k));
  } else {
    const __m512i lo = _mm512_srlv_epi32(k < 16 ? v : _mm512_loadu_si512(ch + 64), counts(2 * (k & 15)));
    const __m512i hi = _mm512_rorv_epi32(_mm512_loadu_si512(ch + 128), counts((k - 2) & 31));
    return _mm512_ternarylogic_epi32(lo, hi, _mm512_set1_epi32(3), 0xE4);  // (lo & 3) | (hi & ~3)
  }
}

/// Reduces a 16-lane accumulator pairwise (8 + 8, 4 + 4, 2 + 2, 1 + 1), as the portable path.
QTL_TARGET_AVX512 QTL_TABLE_INLINE float reduce16(__m512 v) noexcept {
  const __m256 a8 = _mm256_add_ps(_mm512_castps512_ps256(v),
                                  _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)));
  const __m128 a4 = _mm_add_ps(_mm256_castps256_ps128(a8), _mm256_extractf128_ps(a8, 1));
  const __m128 a2 = _mm_add_ps(a4, _mm_movehl_ps(a4, a4));
  return _mm_cvtss_f32(_mm_add_ss(a2, _mm_movehdup_ps(a2)));
}

/// Rows i0 .. i0 + R - 1 of tile t times NT tokens.
template <int Bits, TableForm F, int NT, int R>
QTL_TARGET_AVX512 void tile(const TableKernelView& w, std::ptrdiff_t t, int i0, const float* xk,
                                  std::ptrdiff_t ldx, float* y, std::ptrdiff_t ldy) noexcept {
  constexpr int kSc = table_chunk_slices(Bits);
  constexpr std::ptrdiff_t kCb = table_chunk_bytes(Bits);
  __m512 acc[R][NT];
  for (int i = 0; i < R; ++i)
    for (int n = 0; n < NT; ++n) acc[i][n] = _mm512_setzero_ps();
  const __m512 shared = F == TableForm::ScaledShared ? _mm512_loadu_ps(w.shared16) : _mm512_setzero_ps();
  const std::uint8_t* codes = w.codes + t * w.chunks * kTableTileRows * kCb + i0 * kCb;
  for (std::ptrdiff_t g = 0; g < w.groups; ++g) {
    __m512 tab[R];
    for (int i = 0; i < R; ++i) tab[i] = table16<Bits, F>(w, shared, w.param_index(t, g, i0 + i));
    const std::ptrdiff_t s1 = w.group_slice_begin[g + 1];
    // The group's slices in runs that stay inside one chunk: the chunk vectors are loaded once
    // per run, the per-slice work is a shift, a permute and the FMAs.
    for (std::ptrdiff_t s = w.group_slice_begin[g]; s < s1;) {
      const std::ptrdiff_t c = s / kSc;
      const int k0 = static_cast<int>(s - c * kSc);
      const int k1 = s1 - s < kSc - k0 ? k0 + static_cast<int>(s1 - s) : kSc;
      const std::uint8_t* ch = codes + c * kTableTileRows * kCb;
      prefetch_stream<static_cast<int>((R * kCb + 63) / 64)>(ch);
      __m512i cv[R];
      for (int i = 0; i < R; ++i) cv[i] = _mm512_loadu_si512(ch + i * kCb);
      const float* xs = xk + kTableSliceCols * s;
      for (int k = k0; k < k1; ++k, xs += kTableSliceCols) {
        __m512 xv[NT];
        for (int n = 0; n < NT; ++n) xv[n] = _mm512_loadu_ps(xs + n * ldx);
        for (int i = 0; i < R; ++i) {
          const __m512 wv = _mm512_permutexvar_ps(slice_index<Bits>(cv[i], ch + i * kCb, k), tab[i]);
          for (int n = 0; n < NT; ++n) acc[i][n] = _mm512_fmadd_ps(wv, xv[n], acc[i][n]);
        }
      }
      s += k1 - k0;
    }
  }
  for (int i = 0; i < R; ++i) {
    const std::ptrdiff_t row = t * kTableTileRows + i0 + i;
    if (row >= w.rows) break;
    for (int n = 0; n < NT; ++n) y[n * ldy + row] = reduce16(acc[i][n]);
  }
}

inline constexpr int kPanelSlices = 32;  ///< GEMM: slices decoded per panel (4 x 512 floats, 8 KiB)
inline constexpr int kPanelTokens = 6;   ///< GEMM: tokens per register block (4 x 6 accumulators)
inline constexpr std::ptrdiff_t kGemmMinTokens = 8;  ///< from here on, GEMM decodes panels once
inline constexpr std::ptrdiff_t kGemmBlockTokens = 64;  ///< tokens per pass over a tile's panels

/// Decodes slices [ps, pe) of the 4 rows of tile t into wbuf[(i * kPanelSlices + s - ps) * 16].
/// g: the group of slice ps (a cursor carried from panel to panel).
template <int Bits, TableForm F>
QTL_TARGET_AVX512 void decode_panel(const TableKernelView& w, std::ptrdiff_t t, std::ptrdiff_t ps,
                                          std::ptrdiff_t pe, std::ptrdiff_t& g, float* wbuf) noexcept {
  constexpr int R = kTableTileRows;
  constexpr int kSc = table_chunk_slices(Bits);
  constexpr std::ptrdiff_t kCb = table_chunk_bytes(Bits);
  const __m512 shared = F == TableForm::ScaledShared ? _mm512_loadu_ps(w.shared16) : _mm512_setzero_ps();
  const std::uint8_t* codes = w.codes + t * w.chunks * R * kCb;
  for (std::ptrdiff_t s = ps; s < pe;) {
    while (s >= w.group_slice_begin[g + 1]) ++g;
    __m512 tab[R];
    for (int i = 0; i < R; ++i) tab[i] = table16<Bits, F>(w, shared, w.param_index(t, g, i));
    const std::ptrdiff_t c = s / kSc;
    const int k0 = static_cast<int>(s - c * kSc);
    const std::ptrdiff_t end = std::min(std::min<std::ptrdiff_t>(pe, w.group_slice_begin[g + 1]), (c + 1) * kSc);
    const int k1 = k0 + static_cast<int>(end - s);
    const std::uint8_t* ch = codes + c * R * kCb;
    for (int i = 0; i < R; ++i) {
      const __m512i cv = _mm512_loadu_si512(ch + i * kCb);
      float* dst = wbuf + (i * kPanelSlices + (s - ps)) * kTableSliceCols;
      for (int k = k0; k < k1; ++k, dst += kTableSliceCols) {
        _mm512_store_ps(dst, _mm512_permutexvar_ps(slice_index<Bits>(cv, ch + i * kCb, k), tab[i]));
      }
    }
    s = end;
  }
}

/// accbuf[(n * 4 + i) * 16 ..] += the decoded panel (ns slices) times tokens n of xp (stride ldx).
template <int NT>
QTL_TARGET_AVX512 void panel_fma(const float* wbuf, std::ptrdiff_t ns, const float* xp, std::ptrdiff_t ldx,
                                       float* accbuf) noexcept {
  constexpr int R = kTableTileRows;
  __m512 acc[R][NT];
  for (int n = 0; n < NT; ++n)
    for (int i = 0; i < R; ++i) acc[i][n] = _mm512_load_ps(accbuf + (n * R + i) * kTableSliceCols);
  for (std::ptrdiff_t s = 0; s < ns; ++s) {
    __m512 wv[R];
    for (int i = 0; i < R; ++i) wv[i] = _mm512_load_ps(wbuf + (i * kPanelSlices + s) * kTableSliceCols);
    for (int n = 0; n < NT; ++n) {
      const __m512 xv = _mm512_loadu_ps(xp + n * ldx + s * kTableSliceCols);
      for (int i = 0; i < R; ++i) acc[i][n] = _mm512_fmadd_ps(wv[i], xv, acc[i][n]);
    }
  }
  for (int n = 0; n < NT; ++n)
    for (int i = 0; i < R; ++i) _mm512_store_ps(accbuf + (n * R + i) * kTableSliceCols, acc[i][n]);
}

/// GEMM of tile t for all m tokens: each panel of 32 slices of the tile's 4 rows is decoded once
/// into an L1 buffer, then multiplied with every token (4 rows x 6 tokens of accumulators). Each
/// (row, token) is the same FMA chain over the same decoded weights as in tile(): the same bits.
template <int Bits, TableForm F>
QTL_TARGET_AVX512 void gemm_tile(const TableKernelView& w, std::ptrdiff_t t, const float* xk,
                                       std::ptrdiff_t ldx, std::ptrdiff_t m, float* y, std::ptrdiff_t ldy,
                                       float* wbuf, float* accbuf) noexcept {
  constexpr int R = kTableTileRows;
  for (std::ptrdiff_t j = 0; j < m * R * kTableSliceCols; j += 16) _mm512_store_ps(accbuf + j, _mm512_setzero_ps());
  std::ptrdiff_t g = 0;
  for (std::ptrdiff_t ps = 0; ps < w.slices; ps += kPanelSlices) {
    const std::ptrdiff_t pe = std::min<std::ptrdiff_t>(ps + kPanelSlices, w.slices);
    decode_panel<Bits, F>(w, t, ps, pe, g, wbuf);
    const float* xp = xk + ps * kTableSliceCols;
    std::ptrdiff_t n = 0;
    for (; n + kPanelTokens <= m; n += kPanelTokens) {
      panel_fma<kPanelTokens>(wbuf, pe - ps, xp + n * ldx, ldx, accbuf + n * R * kTableSliceCols);
    }
    for (; n < m; ++n) panel_fma<1>(wbuf, pe - ps, xp + n * ldx, ldx, accbuf + n * R * kTableSliceCols);
  }
  for (int i = 0; i < R; ++i) {
    const std::ptrdiff_t row = t * R + i;
    if (row >= w.rows) break;
    for (std::ptrdiff_t n = 0; n < m; ++n) y[n * ldy + row] = reduce16(_mm512_load_ps(accbuf + (n * R + i) * kTableSliceCols));
  }
}

template <int Bits, TableForm F>
QTL_TARGET_AVX512 void tiles(const TableKernelView& w, const float* xk, std::ptrdiff_t ldx, std::ptrdiff_t m,
                                   float* y, std::ptrdiff_t ldy, std::ptrdiff_t t0, std::ptrdiff_t t1) noexcept {
  if (m >= kGemmMinTokens) {
    // Scratch on the stack (24 KiB): the decoded panel and the accumulators of one tile for up
    // to kGemmBlockTokens tokens; more tokens run in blocks (each panel decoded once per block).
    alignas(64) float wbuf[kTableTileRows * kPanelSlices * kTableSliceCols];
    alignas(64) float accbuf[kGemmBlockTokens * kTableTileRows * kTableSliceCols];
    for (std::ptrdiff_t t = t0; t < t1; ++t) {
      for (std::ptrdiff_t n = 0; n < m; n += kGemmBlockTokens) {
        gemm_tile<Bits, F>(w, t, xk + n * ldx, ldx, std::min(kGemmBlockTokens, m - n), y + n * ldy, ldy, wbuf, accbuf);
      }
    }
    return;
  }
  for (std::ptrdiff_t t = t0; t < t1; ++t) {
    std::ptrdiff_t n = 0;
    for (; n + 4 <= m; n += 4) tile<Bits, F, 4, 4>(w, t, 0, xk + n * ldx, ldx, y + n * ldy, ldy);
    for (; n < m; ++n) tile<Bits, F, 1, 4>(w, t, 0, xk + n * ldx, ldx, y + n * ldy, ldy);
  }
}

template <int Bits>
QTL_TARGET_AVX512 void tiles_form(const TableKernelView& w, const float* xk, std::ptrdiff_t ldx,
                                        std::ptrdiff_t m, float* y, std::ptrdiff_t ldy, std::ptrdiff_t t0,
                                        std::ptrdiff_t t1) noexcept {
  if (w.form == TableForm::ScaledShared) {
    tiles<Bits, TableForm::ScaledShared>(w, xk, ldx, m, y, ldy, t0, t1);
  } else {
    tiles<Bits, TableForm::PerSet>(w, xk, ldx, m, y, ldy, t0, t1);
  }
}

}  // namespace detail_table_avx512

/// Y[n * ldy + row] for the rows of tiles [t0, t1) and tokens [0, m): AVX-512.
/// Requires path_supported(KernelPath::Avx512).
inline void table_tiles_avx512(const TableKernelView& w, const float* xk, std::ptrdiff_t ldx, std::ptrdiff_t m,
                               float* y, std::ptrdiff_t ldy, std::ptrdiff_t t0, std::ptrdiff_t t1) noexcept {
  using namespace detail_table_avx512;
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
