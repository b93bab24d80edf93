// qtl/kernel/vq/avx2.hpp — AVX2 path of the vector-codebook lookup kernels: 8 rows per ymm.
//
// Same layout, loops and summation order as qtl/kernel/vq/avx512.hpp: both compile the loops of
// qtl/kernel/vq/simd_body.inc, here with a 64-row tile handled as eight 8-row groups, each gather
// vector holding 8 rows' indices of one position (_mm256_i32gather_ps): Table reads L_j at the
// indices, Decode the codebook entries. (A 256-entry table does not fit the ymm registers, so
// AVX2 has no in-register lookups.) The E8P decoder below is AVX2's own (used by both paths).
//
// The functions carry target attributes (see qtl/kernel/common/cpu_features.hpp): they compile in any
// translation unit and must only be called when path_supported(KernelPath::Avx2) says so.
#pragma once

#include "qtl/kernel/common/target.hpp"

#if defined(QTL_X86_64)
#define QTL_HAVE_X86_VQ_KERNELS 1

#include <immintrin.h>

#include <array>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <type_traits>

#include "qtl/kernel/vq/layout.hpp"


namespace qtl::kernel {
namespace detail_vq_avx2 {

#define QTL_VQ_WIDTH 256
#include "qtl/kernel/vq/simd_body.inc"  // undefines QTL_VQ_WIDTH

/// acc + (E8P codeword of index i, scaled) * x[0..8).
QTL_TARGET_AVX2_POPCNT QTL_KERNEL_INLINE __m256 e8p_step(const VQKernelView& w, const std::uint32_t* masks, std::uint32_t i,
                                                        __m256 scale, const float* x, __m256 acc) noexcept {
  const std::uint32_t g = i & 0xFFu, signs = (i >> 8) & 0x7Fu;
  const std::uint32_t neg = signs << 1 | ((static_cast<std::uint32_t>(std::popcount(signs)) + w.e8p_parity[g]) & 1u);
  __m256 v = _mm256_xor_ps(_mm256_loadu_ps(w.e8p_grid + g * 8),
                           _mm256_castsi256_ps(_mm256_load_si256(reinterpret_cast<const __m256i*>(masks + neg * 8))));
  v = _mm256_mul_ps(scale, _mm256_add_ps(v, _mm256_set1_ps((i >> 15) & 1u ? 0.25f : -0.25f)));
  return _mm256_fmadd_ps(v, _mm256_loadu_ps(x), acc);
}

}  // namespace detail_vq_avx2

/// Lookup tables of chunk k.c (see vq_build_table_portable), 8 entries per instruction.
QTL_TARGET_AVX2_POPCNT inline void vq_build_table_avx2(const VQKernelView& w, const VQChunkTask& k, float* table) noexcept {
  detail_vq_avx2::build_table(w, k, table);
}

/// Table strategy, by gathers (see vq_tiles_table_portable).
inline void vq_tiles_table_avx2(const VQKernelView& w, const VQChunkTask& k, std::ptrdiff_t t0, std::ptrdiff_t t1) noexcept {
  detail_vq_avx2::tiles_table_any(w, k, t0, t1);
}

/// Decode strategy (see vq_tiles_decode_portable).
inline void vq_tiles_decode_avx2(const VQKernelView& w, const VQChunkTask& k, std::ptrdiff_t t0, std::ptrdiff_t t1) noexcept {
  detail_vq_avx2::tiles_decode_any(w, k, t0, t1);
}

/// E8P (see vq_tiles_e8p_portable), one row at a time with its 8-weight codewords in a ymm: the
/// grid row (1 load from an 8 KiB table), the 8 sign bits as a sign mask (1 load from an 8 KiB
/// table of masks) and the shift, then scale * (+-g + shift) exactly as the reference rounds it,
/// FMA with x. Used by the AVX2 and the AVX-512 paths (a codeword is 8 floats: one ymm).
QTL_TARGET_AVX2_POPCNT inline void vq_tiles_e8p_avx2(const VQKernelView& w, const VQChunkTask& k, std::ptrdiff_t t0,
                                                 std::ptrdiff_t t1) noexcept {
  alignas(64) static const std::array<std::uint32_t, 256 * 8> masks = [] {
    std::array<std::uint32_t, 256 * 8> m{};
    for (std::size_t i = 0; i < 256; ++i) {
      for (std::size_t d = 0; d < 8; ++d) m[i * 8 + d] = (i >> d) & 1u ? 0x80000000u : 0u;
    }
    return m;
  }();
  const std::ptrdiff_t len = w.chunk_len(k.c);
  for (std::ptrdiff_t t = t0; t < t1; ++t) {
    const std::ptrdiff_t base = w.chunk_offset(k.c) + t * len * kVQTileRows;
    for (int lane = 0; lane < kVQTileRows; ++lane) {
      const __m256 scale = _mm256_set1_ps(w.e8p_scale[w.lane_set[t * kVQTileRows + lane]]);
      for (int n = 0; n < k.nt; ++n) {
        const float* x = k.x + n * k.ldx + k.c * w.chunk * 8;
        const std::uint16_t* ip = w.idx16 + base + lane;
        __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
        std::ptrdiff_t jj = 0;
        for (; jj + 1 < len; jj += 2) {
          a0 = detail_vq_avx2::e8p_step(w, masks.data(), ip[jj * kVQTileRows], scale, x + jj * 8, a0);
          a1 = detail_vq_avx2::e8p_step(w, masks.data(), ip[(jj + 1) * kVQTileRows], scale, x + (jj + 1) * 8, a1);
        }
        if (jj < len) a0 = detail_vq_avx2::e8p_step(w, masks.data(), ip[jj * kVQTileRows], scale, x + jj * 8, a0);
        const __m256 s8 = _mm256_add_ps(a0, a1);
        const __m128 s4 = _mm_add_ps(_mm256_castps256_ps128(s8), _mm256_extractf128_ps(s8, 1));
        const __m128 s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
        const float sum = _mm_cvtss_f32(_mm_add_ss(s2, _mm_movehdup_ps(s2)));
        float& p = k.acc[(t * kVQMaxTokens + n) * kVQTileRows + lane];
        p = k.first ? sum : p + sum;
      }
    }
  }
}

}  // namespace qtl::kernel

#endif
