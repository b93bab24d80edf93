// qtl/kernel/vq_avx512.hpp — AVX-512 path of the vector-codebook lookup kernels: 16 rows per zmm.
//
// Layout: qtl/kernel/layout_vq.hpp. One zmm lane is one row of a 16-row tile, so the 16 indices
// of position j (one 16-byte or 32-byte load, widened with vpmovzx) form one gather vector:
//   Table   acc += vgatherdps(L_j, idx + set offset)           (1 gather per 16 rows x D weights)
//   Decode  acc += vgatherdps(cb + d, idx * D + set offset) * broadcast(x[jD + d]), d < D
// This is the CPU trick of AQLM's Numba kernel for Kx8 codebooks (Vahe1994/AQLM,
// inference_lib/.../numba_kernels): a codebook of 2^8 entries makes a per-token table of
// (positions x 256) dot products that is cheap to build and stays in cache; here the table is
// built one chunk of positions at a time so that it stays in L1. Tables are built 16 entries at
// a time (vfmadd over the coordinate-major codebook). For GEMM one loaded index vector feeds the
// gathers (Table) or the decoded entries feed the FMAs (Decode) of up to 4 tokens.
//
// The functions carry target attributes (see qtl/kernel/cpu_features.hpp): they compile in any
// translation unit and must only be called when path_supported(KernelPath::Avx512) says so.
#pragma once

#if (defined(__GNUC__) || defined(__clang__)) && defined(__x86_64__)
#define QTL_HAVE_X86_VQ_KERNELS 1

#include <immintrin.h>

#include <cstddef>
#include <cstdint>
#include <type_traits>

#include "qtl/kernel/layout_vq.hpp"

#define QTL_VQ_TARGET_AVX512 __attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq")))

namespace qtl::kernel {
namespace detail_vq_avx512 {

template <class I>
QTL_VQ_TARGET_AVX512 inline __attribute__((always_inline)) __m512i load_idx(const I* p) noexcept {
  if constexpr (std::is_same_v<I, std::uint8_t>) {
    return _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  } else {
    return _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
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
QTL_VQ_TARGET_AVX512 inline __attribute__((always_inline)) void finish(const VQChunkTask& k, std::ptrdiff_t t,
                                                                         const __m512* a0, const __m512* a1) noexcept {
  for (int n = 0; n < NT; ++n) {
    float* p = k.acc + (t * kVQMaxTokens + n) * kVQTileRows;
    __m512 s = _mm512_add_ps(a0[n], a1[n]);
    if (!k.first) s = _mm512_add_ps(_mm512_loadu_ps(p), s);
    _mm512_storeu_ps(p, s);
  }
}

template <int NT, class I>
QTL_VQ_TARGET_AVX512 void tiles_table(const VQKernelView& w, const VQChunkTask& k, std::ptrdiff_t t0,
                                      std::ptrdiff_t t1) noexcept {
  const std::ptrdiff_t len = w.chunk_len(k.c), Kp = w.Kp;
  const I* idx = indices<I>(w) + w.chunk_offset(k.c);
  const __m512i set_stride = _mm512_set1_epi32(static_cast<int>(len * Kp));
  const __m512i s0 = _mm512_set1_epi32(static_cast<int>(k.s0));
  const float* tab[NT];
  for (int n = 0; n < NT; ++n) tab[n] = k.table + n * k.nsets * len * Kp;
  for (std::ptrdiff_t t = t0; t < t1; ++t) {
    const I* ip = idx + t * len * kVQTileRows;
    const __m512i off = _mm512_mullo_epi32(
        _mm512_sub_epi32(_mm512_loadu_si512(w.lane_set + t * kVQTileRows), s0), set_stride);
    __m512 a0[NT], a1[NT];
    for (int n = 0; n < NT; ++n) a0[n] = a1[n] = _mm512_setzero_ps();
    std::ptrdiff_t jj = 0;
    for (; jj + 1 < len; jj += 2) {
      const __m512i v0 = _mm512_add_epi32(load_idx(ip + jj * kVQTileRows), off);
      const __m512i v1 = _mm512_add_epi32(load_idx(ip + (jj + 1) * kVQTileRows), off);
      for (int n = 0; n < NT; ++n) {
        a0[n] = _mm512_add_ps(a0[n], _mm512_i32gather_ps(v0, tab[n] + jj * Kp, 4));
        a1[n] = _mm512_add_ps(a1[n], _mm512_i32gather_ps(v1, tab[n] + (jj + 1) * Kp, 4));
      }
    }
    if (jj < len) {
      const __m512i v0 = _mm512_add_epi32(load_idx(ip + jj * kVQTileRows), off);
      for (int n = 0; n < NT; ++n) a0[n] = _mm512_add_ps(a0[n], _mm512_i32gather_ps(v0, tab[n] + jj * Kp, 4));
    }
    finish<NT>(k, t, a0, a1);
  }
}

template <int NT, int D, int kShift, class I>
QTL_VQ_TARGET_AVX512 inline __attribute__((always_inline)) void decode_step(const I* ip, std::ptrdiff_t jj, __m512i off,
                                                                              const float* cb, const float* const* xs,
                                                                              __m512* acc) noexcept {
  const __m512i v = _mm512_add_epi32(_mm512_slli_epi32(load_idx(ip + jj * kVQTileRows), kShift), off);
  for (int d = 0; d < D; ++d) {
    const __m512 c = _mm512_i32gather_ps(v, cb + d, 4);
    for (int n = 0; n < NT; ++n) acc[n] = _mm512_fmadd_ps(c, _mm512_set1_ps(xs[n][jj * D + d]), acc[n]);
  }
}

template <int NT, int D, class I>
QTL_VQ_TARGET_AVX512 void tiles_decode(const VQKernelView& w, const VQChunkTask& k, std::ptrdiff_t t0,
                                       std::ptrdiff_t t1) noexcept {
  constexpr int kShift = D == 2 ? 1 : D == 4 ? 2 : 3;
  const std::ptrdiff_t len = w.chunk_len(k.c);
  const I* idx = indices<I>(w) + w.chunk_offset(k.c);
  const __m512i set_stride = _mm512_set1_epi32(static_cast<int>(w.K * D));
  const float* xs[NT];
  for (int n = 0; n < NT; ++n) xs[n] = k.x + n * k.ldx + k.c * w.chunk * D;
  for (std::ptrdiff_t t = t0; t < t1; ++t) {
    const I* ip = idx + t * len * kVQTileRows;
    const std::int32_t set0 = w.lane_set[t * kVQTileRows];
    const __m512i off = _mm512_mullo_epi32(
        _mm512_sub_epi32(_mm512_loadu_si512(w.lane_set + t * kVQTileRows), _mm512_set1_epi32(set0)), set_stride);
    const float* cb = w.cb + set0 * w.K * D;
    __m512 a0[NT], a1[NT];
    for (int n = 0; n < NT; ++n) a0[n] = a1[n] = _mm512_setzero_ps();
    std::ptrdiff_t jj = 0;
    for (; jj + 1 < len; jj += 2) {
      decode_step<NT, D, kShift>(ip, jj, off, cb, xs, a0);
      decode_step<NT, D, kShift>(ip, jj + 1, off, cb, xs, a1);
    }
    if (jj < len) decode_step<NT, D, kShift>(ip, jj, off, cb, xs, a0);
    finish<NT>(k, t, a0, a1);
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

}  // namespace detail_vq_avx512

/// Lookup tables of chunk k.c (see vq_build_table_portable), 16 entries per instruction.
QTL_VQ_TARGET_AVX512 inline void vq_build_table_avx512(const VQKernelView& w, const VQChunkTask& k, float* table) noexcept {
  const std::ptrdiff_t len = w.chunk_len(k.c), Kp = w.Kp, D = w.dim;
  for (int n = 0; n < k.nt; ++n) {
    for (std::ptrdiff_t s = 0; s < k.nsets; ++s) {
      const float* cbt = w.cbt + (k.s0 + s) * D * Kp;
      for (std::ptrdiff_t jj = 0; jj < len; ++jj) {
        const float* xs = k.x + n * k.ldx + (k.c * w.chunk + jj) * D;
        float* out = table + ((n * k.nsets + s) * len + jj) * Kp;
        for (std::ptrdiff_t e = 0; e < Kp; e += 16) {
          __m512 v = _mm512_mul_ps(_mm512_loadu_ps(cbt + e), _mm512_set1_ps(xs[0]));
          for (std::ptrdiff_t d = 1; d < D; ++d) v = _mm512_fmadd_ps(_mm512_loadu_ps(cbt + d * Kp + e), _mm512_set1_ps(xs[d]), v);
          _mm512_storeu_ps(out + e, v);
        }
      }
    }
  }
}

inline void vq_tiles_table_avx512(const VQKernelView& w, const VQChunkTask& k, std::ptrdiff_t t0, std::ptrdiff_t t1) noexcept {
  using namespace detail_vq_avx512;
  with_tokens(k.nt, [&](auto nt) {
    if (w.idx8) {
      tiles_table<decltype(nt)::value, std::uint8_t>(w, k, t0, t1);
    } else {
      tiles_table<decltype(nt)::value, std::uint16_t>(w, k, t0, t1);
    }
  });
}

inline void vq_tiles_decode_avx512(const VQKernelView& w, const VQChunkTask& k, std::ptrdiff_t t0, std::ptrdiff_t t1) noexcept {
  using namespace detail_vq_avx512;
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

}  // namespace qtl::kernel

#endif
