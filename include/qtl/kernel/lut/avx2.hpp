// qtl/kernel/lut/avx2.hpp — AVX2 path of the lookup-table kernels (ymm vpshufb).
//
// The same arithmetic as qtl/kernel/lut/avx512.hpp on 256-bit vectors, from the same text
// (qtl/kernel/lut/simd_body.inc): bytes 0..31 and 32..63 of each 64-byte unit (lanes 0-1 and
// 2-3 of the layout, qtl/kernel/lut/layout.hpp) are two halves processed side by side; half h
// produces result slots 16 v + 8 h + 0..7. Integer sums are exact and the float steps are those
// of qtl/kernel/lut/portable.hpp in the same order, so the result is bit-identical to the other
// paths. The table builder below is AVX2's own.
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
#define QTL_LUT_WIDTH 256
#include "qtl/kernel/lut/simd_body.inc"  // undefines QTL_LUT_WIDTH
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
  detail_lut_avx2::lut_tiles(w, a, y, ldy, t0, t1);
}

}  // namespace qtl::kernel

#endif
