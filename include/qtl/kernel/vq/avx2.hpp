// qtl/kernel/vq/avx2.hpp — AVX2 path of the vector-codebook lookup kernels: 8 rows per ymm.
//
// Same layout, loops and summation order as qtl/kernel/vq/avx512.hpp: both compile the loops of
// qtl/kernel/vq/simd_body.inc, here with a 64-row tile handled as eight 8-row groups, each gather
// vector holding 8 rows' indices of one position (_mm256_i32gather_ps): Table reads L_j at the
// indices, Decode the codebook entries. (A 256-entry table does not fit the ymm registers, so
// AVX2 has no in-register lookups.) The E8P kernel below is AVX2's own (used by both paths).
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
#include <cstring>
#include <type_traits>

#include "qtl/kernel/vq/e8p_codewords.hpp"
#include "qtl/kernel/vq/layout.hpp"


namespace qtl::kernel {
namespace detail_vq_avx2 {

#define QTL_VQ_WIDTH 256
#include "qtl/kernel/vq/simd_body.inc"  // undefines QTL_VQ_WIDTH

/// acc + (E8P codeword of index i, scaled) * x[0..8): the codeword's 8 bytes u = 4 c + 11 from
/// the table of all 2^16 codewords (e8p_int8_codewords), widened, (u - 11) * (scale / 4), FMA.
/// (u - 11 and scale / 4 are exact, so the weight is scale * c rounded once, as the reference's.)
QTL_TARGET_AVX2 QTL_KERNEL_INLINE __m256 e8p_step(const E8PInt8Codewords& U, std::uint32_t i, __m256 scale4,
                                                 const float* x, __m256 acc) noexcept {
  const __m128i b = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(U.u[i]));
  const __m256 q = _mm256_sub_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(b)), _mm256_set1_ps(float(kE8PInt8Offset)));
  return _mm256_fmadd_ps(_mm256_mul_ps(q, scale4), _mm256_loadu_ps(x), acc);
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
/// codeword's bytes from the 512 KiB table of all codewords (one 8-byte load instead of a grid
/// row, a sign mask from the sign bits' popcount and the shift: a 4096 x 4096 GEMV, 1 thread,
/// 8.2 -> 1.9 ms measured on a Sapphire Rapids-class VM), then
/// scale * c exactly as the reference rounds it, FMA with x. Used by the AVX2 and the AVX-512
/// paths (a codeword is 8 floats: one ymm). The table is built by VQKernelMatrix's constructor.
QTL_TARGET_AVX2 inline void vq_tiles_e8p_avx2(const VQKernelView& w, const VQChunkTask& k, std::ptrdiff_t t0,
                                          std::ptrdiff_t t1) noexcept {
  const E8PInt8Codewords& U = e8p_int8_codewords(w.e8p_grid, w.e8p_parity);
  const std::ptrdiff_t len = w.chunk_len(k.c);
  for (std::ptrdiff_t t = t0; t < t1; ++t) {
    const std::ptrdiff_t base = w.chunk_offset(k.c) + t * len * kVQTileRows;
    for (int lane = 0; lane < kVQTileRows; ++lane) {
      const __m256 scale4 = _mm256_set1_ps(w.e8p_scale[w.lane_set[t * kVQTileRows + lane]] * 0.25f);
      for (int n = 0; n < k.nt; ++n) {
        const float* x = k.x + n * k.ldx + k.c * w.chunk * 8;
        const std::uint16_t* ip = w.idx16 + base + lane;
        __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
        std::ptrdiff_t jj = 0;
        for (; jj + 1 < len; jj += 2) {
          a0 = detail_vq_avx2::e8p_step(U, ip[jj * kVQTileRows], scale4, x + jj * 8, a0);
          a1 = detail_vq_avx2::e8p_step(U, ip[(jj + 1) * kVQTileRows], scale4, x + (jj + 1) * 8, a1);
        }
        if (jj < len) a0 = detail_vq_avx2::e8p_step(U, ip[jj * kVQTileRows], scale4, x + jj * 8, a0);
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

/// E8P with int8 activations (see vq_tiles_e8p_int8_scalar), one row at a time: a block's 4
/// codewords (4 x 8 bytes from the codeword table) against the block's 32 activation codes by
/// vpmaddubsw + vpmaddwd (pairs <= 2 x 22 x 127: no saturation), the 8 int32 lanes summed
/// exactly, then the same fp32 operations as the plain C++ kernel (same bits).
QTL_TARGET_AVX2 inline void vq_tiles_e8p_int8_avx2(const VQKernelView& w, const VQChunkTask& k, std::ptrdiff_t t0,
                                               std::ptrdiff_t t1) noexcept {
  const E8PInt8Codewords& U = e8p_int8_codewords(w.e8p_grid, w.e8p_parity);
  const std::ptrdiff_t len = w.chunk_len(k.c), p0 = k.c * w.chunk;
  const __m256i ones = _mm256_set1_epi16(1);
  for (std::ptrdiff_t t = t0; t < t1; ++t) {
    const std::ptrdiff_t base = w.chunk_offset(k.c) + t * len * kVQTileRows;
    for (int lane = 0; lane < kVQTileRows; ++lane) {
      const float sc = w.e8p_scale[w.lane_set[t * kVQTileRows + lane]] * 0.25f;
      const std::uint16_t* ip = w.idx16 + base + lane;
      for (int n = 0; n < k.nt; ++n) {
        const std::int8_t* a = k.q8 + n * k.ldq + p0 * 8;
        const float* d = k.d8 + n * k.ldd + p0 / 4;
        __m128 acc = _mm_setzero_ps();
        for (std::ptrdiff_t jb = 0; jb < len; jb += 4) {
          std::int64_t c[4] = {0, 0, 0, 0};  // positions past the row's end: weight 0 (their codes are 0 too)
          for (std::ptrdiff_t j = 0; j < 4 && jb + j < len; ++j) std::memcpy(&c[j], U.u[ip[(jb + j) * kVQTileRows]], 8);
          const __m256i wv = _mm256_set_epi64x(c[3], c[2], c[1], c[0]);
          const __m256i av = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a + jb * 8));
          const __m256i p = _mm256_madd_epi16(_mm256_maddubs_epi16(wv, av), ones);
          __m128i s4 = _mm_add_epi32(_mm256_castsi256_si128(p), _mm256_extracti128_si256(p, 1));
          s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0x4E));
          s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0xB1));
          acc = _mm_fmadd_ss(_mm_cvtepi32_ps(s4), _mm_set_ss(d[jb / 4]), acc);
        }
        const float r = (_mm_cvtss_f32(acc) - k.corr8[n * w.chunks + k.c]) * sc;
        float& y = k.acc[(t * kVQMaxTokens + n) * kVQTileRows + lane];
        y = k.first ? r : y + r;
      }
    }
  }
}

}  // namespace qtl::kernel

#endif
