// qtl/kernel/vq/avx2.hpp — AVX2 path of the vector-codebook lookup kernels: 8 rows per ymm.
//
// Same layout, loops and summation order as qtl/kernel/vq/avx512.hpp; a 64-row tile is handled
// as eight 8-row groups, each gather vector holding 8 rows' indices of one position
// (_mm256_i32gather_ps): Table reads L_j at the indices, Decode the codebook entries. (A 256-entry
// table does not fit the ymm registers, so AVX2 has no in-register lookups.)
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

template <class I>
QTL_TARGET_AVX2_POPCNT inline __attribute__((always_inline)) __m256i load_idx(const I* p) noexcept {
  if constexpr (std::is_same_v<I, std::uint8_t>) {
    return _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)));
  } else {
    return _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  }
}

template <class I>
inline const I* indices(const VQKernelView& w) noexcept {
  if constexpr (std::is_same_v<I, std::uint8_t>) {
    return w.idx8;
  } else {
    return w.idx16;
  }
}

template <int NT>
QTL_TARGET_AVX2_POPCNT inline __attribute__((always_inline)) void finish(const VQChunkTask& k, std::ptrdiff_t t, int h,
                                                                       const __m256* a0, const __m256* a1) noexcept {
  #pragma GCC unroll 16
  for (int n = 0; n < NT; ++n) {
    float* p = k.acc + (t * kVQMaxTokens + n) * kVQTileRows + 8 * h;
    __m256 s = _mm256_add_ps(a0[n], a1[n]);
    if (!k.first) s = _mm256_add_ps(_mm256_loadu_ps(p), s);
    _mm256_storeu_ps(p, s);
  }
}

template <int NT, class I>
QTL_TARGET_AVX2_POPCNT void tiles_table(const VQKernelView& w, const VQChunkTask& k, std::ptrdiff_t t0,
                                    std::ptrdiff_t t1) noexcept {
  const std::ptrdiff_t len = w.chunk_len(k.c), Kp = w.Kp;
  const I* idx = indices<I>(w) + w.chunk_offset(k.c);
  const __m256i set_stride = _mm256_set1_epi32(static_cast<int>(len * Kp));
  const __m256i s0 = _mm256_set1_epi32(static_cast<int>(k.s0));
  const float* tab[NT];
  #pragma GCC unroll 16
  for (int n = 0; n < NT; ++n) tab[n] = k.table + n * k.nsets * len * Kp;
  for (std::ptrdiff_t t = t0; t < t1; ++t) {
    for (int h = 0; h < kVQTileRows / 8; ++h) {
      const I* ip = idx + t * len * kVQTileRows + 8 * h;
      const __m256i off = _mm256_mullo_epi32(
          _mm256_sub_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(w.lane_set + t * kVQTileRows + 8 * h)), s0),
          set_stride);
      __m256 a0[NT], a1[NT];
      #pragma GCC unroll 16
      for (int n = 0; n < NT; ++n) a0[n] = a1[n] = _mm256_setzero_ps();
      std::ptrdiff_t jj = 0;
      for (; jj + 1 < len; jj += 2) {
        const __m256i v0 = _mm256_add_epi32(load_idx(ip + jj * kVQTileRows), off);
        const __m256i v1 = _mm256_add_epi32(load_idx(ip + (jj + 1) * kVQTileRows), off);
        #pragma GCC unroll 16
        for (int n = 0; n < NT; ++n) {
          a0[n] = _mm256_add_ps(a0[n], _mm256_i32gather_ps(tab[n] + jj * Kp, v0, 4));
          a1[n] = _mm256_add_ps(a1[n], _mm256_i32gather_ps(tab[n] + (jj + 1) * Kp, v1, 4));
        }
      }
      if (jj < len) {
        const __m256i v0 = _mm256_add_epi32(load_idx(ip + jj * kVQTileRows), off);
        #pragma GCC unroll 16
        for (int n = 0; n < NT; ++n) a0[n] = _mm256_add_ps(a0[n], _mm256_i32gather_ps(tab[n] + jj * Kp, v0, 4));
      }
      finish<NT>(k, t, h, a0, a1);
    }
  }
}

template <int NT, int D, int kShift, class I>
QTL_TARGET_AVX2_POPCNT inline __attribute__((always_inline)) void decode_step(const I* ip, std::ptrdiff_t jj, __m256i off,
                                                                            const float* cb, const float* const* xs,
                                                                            __m256* acc) noexcept {
  const __m256i v = _mm256_add_epi32(_mm256_slli_epi32(load_idx(ip + jj * kVQTileRows), kShift), off);
  #pragma GCC unroll 16
  for (int d = 0; d < D; ++d) {
    const __m256 c = _mm256_i32gather_ps(cb + d, v, 4);
    #pragma GCC unroll 16
    for (int n = 0; n < NT; ++n) acc[n] = _mm256_fmadd_ps(c, _mm256_set1_ps(xs[n][jj * D + d]), acc[n]);
  }
}

template <int NT, int D, class I>
QTL_TARGET_AVX2_POPCNT void tiles_decode(const VQKernelView& w, const VQChunkTask& k, std::ptrdiff_t t0,
                                     std::ptrdiff_t t1) noexcept {
  constexpr int kShift = D == 2 ? 1 : D == 4 ? 2 : 3;
  const std::ptrdiff_t len = w.chunk_len(k.c);
  const I* idx = indices<I>(w) + w.chunk_offset(k.c);
  const __m256i set_stride = _mm256_set1_epi32(static_cast<int>(w.K * D));
  const float* xs[NT];
  #pragma GCC unroll 16
  for (int n = 0; n < NT; ++n) xs[n] = k.x + n * k.ldx + k.c * w.chunk * D;
  for (std::ptrdiff_t t = t0; t < t1; ++t) {
    for (int h = 0; h < kVQTileRows / 8; ++h) {
      const std::int32_t set0 = w.lane_set[t * kVQTileRows + 8 * h];
      const float* cb = w.cb + set0 * w.K * D;
      const I* ip = idx + t * len * kVQTileRows + 8 * h;
      const __m256i off = _mm256_mullo_epi32(
          _mm256_sub_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(w.lane_set + t * kVQTileRows + 8 * h)),
                           _mm256_set1_epi32(set0)),
          set_stride);
      __m256 a0[NT], a1[NT];
      #pragma GCC unroll 16
      for (int n = 0; n < NT; ++n) a0[n] = a1[n] = _mm256_setzero_ps();
      std::ptrdiff_t jj = 0;
      for (; jj + 1 < len; jj += 2) {
        decode_step<NT, D, kShift>(ip, jj, off, cb, xs, a0);
        decode_step<NT, D, kShift>(ip, jj + 1, off, cb, xs, a1);
      }
      if (jj < len) decode_step<NT, D, kShift>(ip, jj, off, cb, xs, a0);
      finish<NT>(k, t, h, a0, a1);
    }
  }
}

template <class F>
inline void with_tokens(int nt, F&& f) {
  switch (nt) {
    case 1: f(std::integral_constant<int, 1>{}); break;
    case 2: f(std::integral_constant<int, 2>{}); break;
    case 3: f(std::integral_constant<int, 3>{}); break;
    default: f(std::integral_constant<int, 4>{}); break;
  }
}

/// acc + (E8P codeword of index i, scaled) * x[0..8).
QTL_TARGET_AVX2_POPCNT inline __attribute__((always_inline)) __m256 e8p_step(const VQKernelView& w, const std::uint32_t* masks,
                                                                           std::uint32_t i, __m256 scale, const float* x,
                                                                           __m256 acc) noexcept {
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
  const std::ptrdiff_t len = w.chunk_len(k.c), Kp = w.Kp, D = w.dim;
  for (int n = 0; n < k.nt; ++n) {
    for (std::ptrdiff_t s = 0; s < k.nsets; ++s) {
      const float* cbt = w.cbt + (k.s0 + s) * D * Kp;
      for (std::ptrdiff_t jj = 0; jj < len; ++jj) {
        const float* xs = k.x + n * k.ldx + (k.c * w.chunk + jj) * D;
        float* out = table + ((n * k.nsets + s) * len + jj) * Kp;
        for (std::ptrdiff_t e = 0; e < Kp; e += 8) {
          __m256 v = _mm256_mul_ps(_mm256_loadu_ps(cbt + e), _mm256_set1_ps(xs[0]));
          for (std::ptrdiff_t d = 1; d < D; ++d) v = _mm256_fmadd_ps(_mm256_loadu_ps(cbt + d * Kp + e), _mm256_set1_ps(xs[d]), v);
          _mm256_storeu_ps(out + e, v);
        }
      }
    }
  }
}

inline void vq_tiles_table_avx2(const VQKernelView& w, const VQChunkTask& k, std::ptrdiff_t t0, std::ptrdiff_t t1) noexcept {
  using namespace detail_vq_avx2;
  with_tokens(k.nt, [&](auto nt) {
    if (w.idx8) {
      tiles_table<decltype(nt)::value, std::uint8_t>(w, k, t0, t1);
    } else {
      tiles_table<decltype(nt)::value, std::uint16_t>(w, k, t0, t1);
    }
  });
}

inline void vq_tiles_decode_avx2(const VQKernelView& w, const VQChunkTask& k, std::ptrdiff_t t0, std::ptrdiff_t t1) noexcept {
  using namespace detail_vq_avx2;
  with_tokens(k.nt, [&](auto nt) {
    constexpr int NT = decltype(nt)::value;
    auto run = [&]<class I>() {
      switch (w.dim) {
        case 2: tiles_decode<NT, 2, I>(w, k, t0, t1); break;
        case 4: tiles_decode<NT, 4, I>(w, k, t0, t1); break;
        default: tiles_decode<NT, 8, I>(w, k, t0, t1); break;
      }
    };
    if (w.idx8) {
      run.template operator()<std::uint8_t>();
    } else {
      run.template operator()<std::uint16_t>();
    }
  });
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
