// qtl/kernel/table/avx2.hpp — AVX2 path of the table-decode kernels.
//
// A 16-column slice (qtl/kernel/table/layout.hpp) is two ymm halves (lanes 0..7 = bytes 0..31
// of a 64-byte vector, lanes 8..15 = bytes 32..63). vpermps on ymm selects among 8 floats by
// the index's low 3 bits, so a 4-bit code takes two permutes (table entries 0..7 and 8..15) and
// a blend on bit 3 of the index (moved to the sign bit by a shift, vblendvps's selector); for
// 1..3-bit codes the replicated table has entries 8..15 equal to 0..7 and one permute suffices.
// GEMV: 2 rows per pass (4 independent FMA chains); 4..7 tokens: 4 at a time, 1 row per pass
// (the 16 ymm registers hold 4 x 2 accumulators). GEMM (>= 8 tokens): 32-slice panels of a
// tile's 4 rows decoded once into an L1 buffer, then 2 rows x 3 tokens x 2 halves per block.
// Per (row, token) two fp32 chains (the halves), added at the end of the row, so results depend
// on neither the token tiling nor the split of tiles across threads. The loops are those of
// qtl/kernel/table/simd_body.inc (shared with the AVX-512 path); this header holds the decoder.
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

namespace qtl::kernel {
namespace detail_table_avx2 {

/// The 16-entry kernel table of one row and group: entries 0..7, 8..15.
struct Table16 {
  __m256 lo, hi;
};

using ChunkRow = const std::uint8_t*;  ///< read slice by slice from memory

QTL_TARGET_AVX2 QTL_KERNEL_INLINE __m256i counts8(int k) noexcept {
  return _mm256_load_si256(reinterpret_cast<const __m256i*>(detail_table::kShiftCounts.v[k]));
}

template <TableForm F>
QTL_TARGET_AVX2 QTL_KERNEL_INLINE Table16 load_shared(const TableKernelView& w) noexcept {
  if constexpr (F == TableForm::ScaledShared) {
    return {_mm256_loadu_ps(w.shared16), _mm256_loadu_ps(w.shared16 + 8)};
  } else {
    return {_mm256_setzero_ps(), _mm256_setzero_ps()};
  }
}

/// The 2^Bits fp16 entries of a PerSet table at h, repeated to fill 16 (a 1..3-bit table's
/// entries 2^Bits .. 15 repeat 0 ..): what vcvtph2ps widens. Read by the AVX-512 decoder too.
template <int Bits>
QTL_TARGET_AVX2 QTL_KERNEL_INLINE __m256i fp16_entries(const std::uint16_t* h) noexcept {
  if constexpr (Bits == 4) {
    return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(h));
  } else if constexpr (Bits == 3) {
    return _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(h)));
  } else if constexpr (Bits == 2) {
    long long u;
    std::memcpy(&u, h, 8);
    return _mm256_set1_epi64x(u);
  } else {
    int u;
    std::memcpy(&u, h, 4);
    return _mm256_set1_epi32(u);
  }
}

/// The table of slot q: scale * shared, or the stored fp16 entries (for 1..3 bits, entries
/// 8..15 repeat 0..7).
template <int Bits, TableForm F>
QTL_TARGET_AVX2 QTL_KERNEL_INLINE Table16 table16(const TableKernelView& w, const Table16& shared,
                                                  std::ptrdiff_t q) noexcept {
  if constexpr (F == TableForm::ScaledShared) {
    const __m256 s = _mm256_set1_ps(w.scales[q]);
    return {_mm256_mul_ps(shared.lo, s), _mm256_mul_ps(shared.hi, s)};
  } else {
    const __m256i v = fp16_entries<Bits>(w.tables + (q << Bits));
    const __m256 lo = _mm256_cvtph_ps(_mm256_castsi256_si128(v));
    return {lo, Bits == 4 ? _mm256_cvtph_ps(_mm256_extracti128_si256(v, 1)) : lo};
  }
}

template <int Bits>
QTL_TARGET_AVX2 QTL_KERNEL_INLINE ChunkRow chunk_row(const std::uint8_t* ch) noexcept {
  return ch;
}

/// Permute indices of half h of slice k of one row's chunk.
template <int Bits>
QTL_TARGET_AVX2 QTL_KERNEL_INLINE __m256i slice_index(const std::uint8_t* ch, int k, int h) noexcept {
  return _mm256_srlv_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(ch + 32 * h)), counts8(Bits * k));
}

/// The 8 weights of half h of slice k: a permute of entries 0..7, and for 4 bits one of 8..15
/// blended in on index bit 3.
template <int Bits>
QTL_TARGET_AVX2 QTL_KERNEL_INLINE __m256 decode(const Table16& T, ChunkRow c, int k, int h) noexcept {
  const __m256i idx = slice_index<Bits>(c, k, h);
  __m256 wv = _mm256_permutevar8x32_ps(T.lo, idx);
  if constexpr (Bits == 4) {
    wv = _mm256_blendv_ps(wv, _mm256_permutevar8x32_ps(T.hi, idx), _mm256_castsi256_ps(_mm256_slli_epi32(idx, 28)));
  }
  return wv;
}

/// The 8 lanes of a8 summed pairwise (4 + 4, 2 + 2, 1 + 1), as the portable path; the AVX-512
/// reduction ends in it too.
QTL_TARGET_AVX2 QTL_KERNEL_INLINE float reduce8(__m256 a8) noexcept {
  const __m128 a4 = _mm_add_ps(_mm256_castps256_ps128(a8), _mm256_extractf128_ps(a8, 1));
  const __m128 a2 = _mm_add_ps(a4, _mm_movehl_ps(a4, a4));
  return _mm_cvtss_f32(_mm_add_ss(a2, _mm_movehdup_ps(a2)));
}

/// The two halves' chains of a (row, token) added (8 + 8), then reduced.
QTL_TARGET_AVX2 QTL_KERNEL_INLINE float reduce(const __m256* a) noexcept {
  return reduce8(_mm256_add_ps(a[0], a[1]));
}

#define QTL_TABLE_WIDTH 256
#include "qtl/kernel/table/simd_body.inc"  // undefines QTL_TABLE_WIDTH

}  // namespace detail_table_avx2

/// Y[n * ldy + row] for the rows of tiles [t0, t1) and tokens [0, m), on AVX2 (the entry point
/// of table/simd_body.inc compiled for it). Requires path_supported(KernelPath::Avx2).
inline constexpr auto& table_tiles_avx2 = detail_table_avx2::table_tiles;

}  // namespace qtl::kernel

#endif
