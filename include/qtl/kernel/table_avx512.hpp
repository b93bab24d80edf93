// qtl/kernel/table_avx512.hpp — AVX-512 path of the table-decode kernels: one vpermps per 16 codes.
//
// Per 16-column slice s and row (qtl/kernel/layout_table.hpp for the layout):
//   idx = chunk_vector >> (b * k)          vpsrlvd (3-bit: two shifts/rotates + vpternlogd)
//   w   = vpermps(idx, T16)                the 16 weights, exact (T16 = the group's table)
//   acc = fma(w, x[16 s .. 16 s + 15], acc)
// 4 rows of a tile are decoded per slice (4 independent FMA chains sharing each activation
// load); for a GEMM, NT = 4 tokens reuse every decoded slice (4 x 4 accumulators), so the
// decode costs 2 instructions per 16 x 4 multiply-adds. ScaledShared tables are scale * shared
// (the float products of the reference), built once per row and group; PerSet tables are the
// stored fp16 entries widened with vcvtph2ps, replicated to 16 lanes. Each (row, token) is one
// fp32 chain over its slices, reduced once at the end of the row, so the result is the same
// for NT = 1 and NT = 4 and for any split of the tiles across threads.
// Decoding through a permute of a small table in registers follows the float "LUT" decoders
// of llama.cpp's IQ4_NL / NF4 CPU paths (vpshufb on int8) and T-MAC's table lookups.
//
// The functions carry target attributes (qtl/kernel/cpu_features.hpp): they compile in any
// translation unit and must only run when path_supported(KernelPath::Avx512) holds.
#pragma once

#if (defined(__GNUC__) || defined(__clang__)) && defined(__x86_64__)

#include <immintrin.h>

#include <cstddef>
#include <cstdint>
#include <cstring>

#include "qtl/kernel/layout_table.hpp"

#define QTL_TARGET_TABLE_AVX512 __attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq")))
#ifndef QTL_TABLE_INLINE
#define QTL_TABLE_INLINE inline __attribute__((always_inline))
#endif

namespace qtl::kernel {

namespace detail_table_avx512 {

template <int Bits, TableForm F>
QTL_TARGET_TABLE_AVX512 QTL_TABLE_INLINE __m512 table16(const TableKernelView& w, __m512 shared,
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

QTL_TARGET_TABLE_AVX512 QTL_TABLE_INLINE __m512i counts(int k) noexcept {
  return _mm512_load_si512(detail_table::kShiftCounts.v[k]);
}

/// Permute indices of slice k of one row's chunk (low 4 bits valid, higher bits don't-care).
template <int Bits>
QTL_TARGET_TABLE_AVX512 QTL_TABLE_INLINE __m512i slice_index(const std::uint8_t* ch, int k) noexcept {
  if constexpr (Bits != 3) {
    return _mm512_srlv_epi32(_mm512_loadu_si512(ch), counts(Bits * k));
  } else {
    const __m512i lo = _mm512_srlv_epi32(_mm512_loadu_si512(ch + 64 * (k >> 4)), counts(2 * (k & 15)));
    const __m512i hi = _mm512_rorv_epi32(_mm512_loadu_si512(ch + 128), counts((k - 2) & 31));
    return _mm512_ternarylogic_epi32(lo, hi, _mm512_set1_epi32(3), 0xE4);  // (lo & 3) | (hi & ~3)
  }
}

template <int Bits, TableForm F, int NT>
QTL_TARGET_TABLE_AVX512 void tile(const TableKernelView& w, std::ptrdiff_t t, const float* xk, std::ptrdiff_t ldx,
                                  float* y, std::ptrdiff_t ldy) noexcept {
  constexpr int R = kTableTileRows;
  constexpr int kSc = table_chunk_slices(Bits);
  constexpr std::ptrdiff_t kCb = table_chunk_bytes(Bits);
  __m512 acc[R][NT];
  for (int i = 0; i < R; ++i)
    for (int n = 0; n < NT; ++n) acc[i][n] = _mm512_setzero_ps();
  const __m512 shared = F == TableForm::ScaledShared ? _mm512_loadu_ps(w.shared16) : _mm512_setzero_ps();
  const std::uint8_t* codes = w.codes + t * w.chunks * R * kCb;
  for (std::ptrdiff_t g = 0; g < w.groups; ++g) {
    __m512 tab[R];
    for (int i = 0; i < R; ++i) tab[i] = table16<Bits, F>(w, shared, w.param_index(t, g, i));
    const std::ptrdiff_t s1 = w.group_slice_begin[g + 1];
    for (std::ptrdiff_t s = w.group_slice_begin[g]; s < s1; ++s) {
      const std::uint8_t* ch = codes + (s / kSc) * R * kCb;
      const int k = static_cast<int>(s % kSc);
      __m512 xv[NT];
      for (int n = 0; n < NT; ++n) xv[n] = _mm512_loadu_ps(xk + n * ldx + kTableSliceCols * s);
      for (int i = 0; i < R; ++i) {
        const __m512 wv = _mm512_permutexvar_ps(slice_index<Bits>(ch + i * kCb, k), tab[i]);
        for (int n = 0; n < NT; ++n) acc[i][n] = _mm512_fmadd_ps(wv, xv[n], acc[i][n]);
      }
    }
  }
  for (int i = 0; i < R; ++i) {
    const std::ptrdiff_t row = t * R + i;
    if (row >= w.rows) break;
    for (int n = 0; n < NT; ++n) {
      // Pairwise (8 + 8, 4 + 4, 2 + 2, 1 + 1), as the portable path.
      const __m256 a8 = _mm256_add_ps(_mm512_castps512_ps256(acc[i][n]),
                                      _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(acc[i][n]), 1)));
      const __m128 a4 = _mm_add_ps(_mm256_castps256_ps128(a8), _mm256_extractf128_ps(a8, 1));
      const __m128 a2 = _mm_add_ps(a4, _mm_movehl_ps(a4, a4));
      const __m128 a1 = _mm_add_ss(a2, _mm_movehdup_ps(a2));
      y[n * ldy + row] = _mm_cvtss_f32(a1);
    }
  }
}

template <int Bits, TableForm F>
QTL_TARGET_TABLE_AVX512 void tiles(const TableKernelView& w, const float* xk, std::ptrdiff_t ldx, std::ptrdiff_t m,
                                   float* y, std::ptrdiff_t ldy, std::ptrdiff_t t0, std::ptrdiff_t t1) noexcept {
  for (std::ptrdiff_t t = t0; t < t1; ++t) {
    std::ptrdiff_t n = 0;
    for (; n + 4 <= m; n += 4) tile<Bits, F, 4>(w, t, xk + n * ldx, ldx, y + n * ldy, ldy);
    for (; n < m; ++n) tile<Bits, F, 1>(w, t, xk + n * ldx, ldx, y + n * ldy, ldy);
  }
}

template <int Bits>
QTL_TARGET_TABLE_AVX512 void tiles_form(const TableKernelView& w, const float* xk, std::ptrdiff_t ldx,
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
