// qtl/kernel/table/avx512.hpp — AVX-512 path of the table-decode kernels: one vpermps per 16 codes.
//
// Per 16-column slice s and row (qtl/kernel/table/layout.hpp for the layout):
//   idx = chunk_vector >> (b * k)          vpsrlvd
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
// What bounds it (2-core AMD EPYC Zen 4 VM, 2026-12-06, a cache-resident loop of 4 rows x 8 slices
// per chunk as below): shift + permute + FMA ran 1.8-1.95 cycles per 16 weights, permute + FMA
// without the shift 1.2, the FMA alone 1.16. Replacing the shift of even 4-bit slices by a load
// at byte offset k / 2 (no shift) measured slower (1.9-2.1: three of four such loads cross a
// cache line), and byte shuffles (vpshufb, vpalignr) instead of shifts slower still (2.5-2.7:
// they share the permute's port). So the 4-bit decode keeps one shift per slice.
// The loops (GEMV rows, GEMM panels, token and tile blocking) are those of
// qtl/kernel/table/simd_body.inc, shared with the AVX2 path; this header holds the decoder.
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
#include "qtl/kernel/table/avx2.hpp"  // detail_table_avx2::fp16_entries, reduce8
#include "qtl/kernel/table/layout.hpp"

namespace qtl::kernel {

namespace detail_table_avx512 {

using Table16 = __m512;  ///< the 16-entry kernel table of one row and group

using ChunkRow = __m512i;  ///< one row's 64-byte chunk, loaded once per run of slices

template <TableForm F>
QTL_TARGET_AVX512 QTL_KERNEL_INLINE __m512 load_shared(const TableKernelView& w) noexcept {
  return F == TableForm::ScaledShared ? _mm512_loadu_ps(w.shared16) : _mm512_setzero_ps();
}

/// The table of slot q: scale * shared, or the stored fp16 entries widened and replicated.
template <int Bits, TableForm F>
QTL_TARGET_AVX512 QTL_KERNEL_INLINE __m512 table16(const TableKernelView& w, __m512 shared, std::ptrdiff_t q) noexcept {
  if constexpr (F == TableForm::ScaledShared) {
    return _mm512_mul_ps(shared, _mm512_set1_ps(w.scales[q]));
  } else {
    return _mm512_cvtph_ps(detail_table_avx2::fp16_entries<Bits>(w.tables + (q << Bits)));
  }
}

QTL_TARGET_AVX512 QTL_KERNEL_INLINE __m512i counts(int k) noexcept {
  return _mm512_load_si512(detail_table::kShiftCounts.v[k]);
}

/// Permute indices of slice k of one row's chunk (low 4 bits valid, higher bits don't-care).
/// `v` is the chunk's 64 bytes, already loaded (the same for every slice of the chunk).
template <int Bits>
QTL_TARGET_AVX512 QTL_KERNEL_INLINE __m512i slice_index(__m512i v, int k) noexcept {
  return _mm512_srlv_epi32(v, counts(Bits * k));
}

template <int Bits>
QTL_TARGET_AVX512 QTL_KERNEL_INLINE ChunkRow chunk_row(const std::uint8_t* ch) noexcept {
  return _mm512_loadu_si512(ch);
}

/// The 16 weights of slice k: one vpermps of the table.
template <int Bits>
QTL_TARGET_AVX512 QTL_KERNEL_INLINE __m512 decode(__m512 T, const ChunkRow& c, int k, int /*h*/) noexcept {
  return _mm512_permutexvar_ps(slice_index<Bits>(c, k), T);
}

/// Reduces a 16-lane accumulator pairwise (8 + 8, 4 + 4, 2 + 2, 1 + 1), as the portable path.
QTL_TARGET_AVX512 QTL_KERNEL_INLINE float reduce(const __m512* a) noexcept {
  const __m512 v = a[0];
  const __m256 a8 = _mm256_add_ps(_mm512_castps512_ps256(v),
                                  _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)));
  return detail_table_avx2::reduce8(a8);
}

#define QTL_TABLE_WIDTH 512
#include "qtl/kernel/table/simd_body.inc"  // undefines QTL_TABLE_WIDTH

}  // namespace detail_table_avx512

/// Y[n * ldy + row] for the rows of tiles [t0, t1) and tokens [0, m), on AVX-512 (the entry point
/// of table/simd_body.inc compiled for it). Requires path_supported(KernelPath::Avx512).
inline constexpr auto& table_tiles_avx512 = detail_table_avx512::table_tiles;

}  // namespace qtl::kernel

#endif
