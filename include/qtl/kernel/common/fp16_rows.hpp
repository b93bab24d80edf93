// qtl/kernel/common/fp16_rows.hpp — strided fp16 rows: conversion to and from fp32, and the two
// products of one token's attention over them.
//
// What a half-precision key/value cache needs (qtl/model/transformer.hpp, KvType::F16): each
// new token's keys and values rounded to fp16 once; a batch of tokens (a prompt) widens each
// head's rows back to fp32 and multiplies them as a matrix; one token (generation) reads them
// directly: scores s = q . K(s, :) (fp16_rows_dot) and the output sum_s p_s V(s, :)
// (fp16_rows_weighted_sum), widening the halves into FMAs, so the cache is read once at 2 bytes
// per value and nothing is written back. This is memory traffic more than arithmetic, so one
// ymm path serves every x86 path (F16C and FMA, part of all of them but the portable one:
// qtl/kernel/common/cpu_features.hpp). The portable path is xsimd code over PortableBatch
// (qtl/kernel/common/portable_simd.hpp: load_fp16 widens with vcvtph2ps / fcvtl where the build
// has them, with integer bit operations elsewhere), kept next to a plain C++ twin (*_scalar,
// over qtl/detail/fp16.hpp's scalar conversions) that the tests and bench/attention_bench.cpp
// compare it with. Every widening matches the scalar conversion bit for bit on every finite
// value and infinity (subnormal halves included; MXCSR's DAZ / FTZ, off by default, would flush
// them); NaN stays NaN (payloads may differ). Rounding to fp16 (one row per new token) is F16C
// on x86 and the scalar code on the portable path: round to nearest, ties to even, bit for bit.
// The products sum in another order on each path (lanes, then a reduction): they agree to float
// rounding, not bit for bit. The path is the caller's (the model passes default_kernel_path(),
// which QTL_KERNEL_PATH may force).
#pragma once

#include "qtl/kernel/common/target.hpp"

#include <cstddef>
#include <cstdint>

#include "qtl/detail/fp16.hpp"
#include "qtl/kernel/common/cpu_features.hpp"
#include "qtl/kernel/common/portable_simd.hpp"

#if defined(QTL_X86_64)
#include <immintrin.h>
#endif

namespace qtl::kernel {

namespace detail_fp16 {

inline void to_float_rows_scalar(const std::uint16_t* src, std::ptrdiff_t src_stride, float* dst,
                                 std::ptrdiff_t dst_stride, std::ptrdiff_t rows, std::ptrdiff_t cols) noexcept {
  for (std::ptrdiff_t r = 0; r < rows; ++r) {
    for (std::ptrdiff_t c = 0; c < cols; ++c) dst[r * dst_stride + c] = qtl::detail::half_to_float(src[r * src_stride + c]);
  }
}

inline void to_half_rows_scalar(const float* src, std::ptrdiff_t src_stride, std::uint16_t* dst,
                                std::ptrdiff_t dst_stride, std::ptrdiff_t rows, std::ptrdiff_t cols) noexcept {
  for (std::ptrdiff_t r = 0; r < rows; ++r) {
    for (std::ptrdiff_t c = 0; c < cols; ++c) dst[r * dst_stride + c] = qtl::detail::float_to_half(src[r * src_stride + c]);
  }
}

inline void dot_scalar(const float* q, const std::uint16_t* k, std::ptrdiff_t stride, std::ptrdiff_t rows,
                       std::ptrdiff_t cols, float* scores) noexcept {
  for (std::ptrdiff_t r = 0; r < rows; ++r) {
    float acc = 0.0f;
    for (std::ptrdiff_t c = 0; c < cols; ++c) acc += q[c] * qtl::detail::half_to_float(k[r * stride + c]);
    scores[r] = acc;
  }
}

inline void weighted_sum_scalar(const float* p, const std::uint16_t* v, std::ptrdiff_t stride, std::ptrdiff_t rows,
                                std::ptrdiff_t cols, float* out) noexcept {
  for (std::ptrdiff_t c = 0; c < cols; ++c) out[c] = 0.0f;
  for (std::ptrdiff_t r = 0; r < rows; ++r) {
    for (std::ptrdiff_t c = 0; c < cols; ++c) out[c] += p[r] * qtl::detail::half_to_float(v[r * stride + c]);
  }
}

// The portable path: the same loops over PortableBatch<float> (xsimd), tails in scalar code.
inline void to_float_rows_portable(const std::uint16_t* src, std::ptrdiff_t src_stride, float* dst,
                                   std::ptrdiff_t dst_stride, std::ptrdiff_t rows, std::ptrdiff_t cols) noexcept {
  using F32 = PortableBatch<float>;
  constexpr auto kL = static_cast<std::ptrdiff_t>(F32::size);
  for (std::ptrdiff_t r = 0; r < rows; ++r) {
    const std::uint16_t* s = src + r * src_stride;
    float* d = dst + r * dst_stride;
    std::ptrdiff_t c = 0;
    for (; c + kL <= cols; c += kL) load_fp16(s + c).store_unaligned(d + c);
    for (; c < cols; ++c) d[c] = qtl::detail::half_to_float(s[c]);
  }
}

/// Two rows at a time (two independent chains), each row's lanes reduced at its end.
inline void dot_portable(const float* q, const std::uint16_t* k, std::ptrdiff_t stride, std::ptrdiff_t rows,
                         std::ptrdiff_t cols, float* scores) noexcept {
  using F32 = PortableBatch<float>;
  constexpr auto kL = static_cast<std::ptrdiff_t>(F32::size);
  const std::ptrdiff_t cl = cols / kL * kL;
  std::ptrdiff_t r = 0;
  for (; r + 2 <= rows; r += 2) {
    const std::uint16_t* k0 = k + r * stride;
    const std::uint16_t* k1 = k0 + stride;
    F32 a0(0.0f), a1(0.0f);
    for (std::ptrdiff_t c = 0; c < cl; c += kL) {
      const F32 qv = F32::load_unaligned(q + c);
      a0 = mul_add(qv, load_fp16(k0 + c), a0);
      a1 = mul_add(qv, load_fp16(k1 + c), a1);
    }
    float s0 = xsimd::hadd(a0), s1 = xsimd::hadd(a1);
    for (std::ptrdiff_t c = cl; c < cols; ++c) {
      s0 += q[c] * qtl::detail::half_to_float(k0[c]);
      s1 += q[c] * qtl::detail::half_to_float(k1[c]);
    }
    scores[r] = s0;
    scores[r + 1] = s1;
  }
  for (; r < rows; ++r) {
    const std::uint16_t* k0 = k + r * stride;
    F32 a0(0.0f);
    for (std::ptrdiff_t c = 0; c < cl; c += kL) a0 = mul_add(F32::load_unaligned(q + c), load_fp16(k0 + c), a0);
    float s0 = xsimd::hadd(a0);
    for (std::ptrdiff_t c = cl; c < cols; ++c) s0 += q[c] * qtl::detail::half_to_float(k0[c]);
    scores[r] = s0;
  }
}

/// Columns in blocks of 4 batches (4 accumulators over every row), then one batch, then scalar.
inline void weighted_sum_portable(const float* p, const std::uint16_t* v, std::ptrdiff_t stride, std::ptrdiff_t rows,
                                  std::ptrdiff_t cols, float* out) noexcept {
  using F32 = PortableBatch<float>;
  constexpr auto kL = static_cast<std::ptrdiff_t>(F32::size);
  std::ptrdiff_t c = 0;
  for (; c + 4 * kL <= cols; c += 4 * kL) {
    F32 acc[4] = {F32(0.0f), F32(0.0f), F32(0.0f), F32(0.0f)};
    for (std::ptrdiff_t r = 0; r < rows; ++r) {
      const F32 pv(p[r]);
      const std::uint16_t* vr = v + r * stride + c;
      for (int i = 0; i < 4; ++i) acc[i] = mul_add(pv, load_fp16(vr + kL * i), acc[i]);
    }
    for (int i = 0; i < 4; ++i) acc[i].store_unaligned(out + c + kL * i);
  }
  for (; c + kL <= cols; c += kL) {
    F32 acc(0.0f);
    for (std::ptrdiff_t r = 0; r < rows; ++r) acc = mul_add(F32(p[r]), load_fp16(v + r * stride + c), acc);
    acc.store_unaligned(out + c);
  }
  if (c < cols) weighted_sum_scalar(p, v + c, stride, rows, cols - c, out + c);
}

#if defined(QTL_X86_64)
QTL_TARGET_AVX2 QTL_KERNEL_INLINE __m256 widen8(const std::uint16_t* h) noexcept {
  return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(h)));
}

QTL_TARGET_AVX2 QTL_KERNEL_INLINE float sum8(__m256 v) noexcept {
  __m128 x = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  x = _mm_add_ps(x, _mm_movehl_ps(x, x));
  x = _mm_add_ss(x, _mm_movehdup_ps(x));
  return _mm_cvtss_f32(x);
}

/// Two rows at a time (two independent FMA chains), each row's 8 lanes reduced at its end.
QTL_TARGET_AVX2 inline void dot_f16c(const float* q, const std::uint16_t* k, std::ptrdiff_t stride,
                                     std::ptrdiff_t rows, std::ptrdiff_t cols, float* scores) noexcept {
  const std::ptrdiff_t c8 = cols / 8 * 8;
  std::ptrdiff_t r = 0;
  for (; r + 2 <= rows; r += 2) {
    const std::uint16_t* k0 = k + r * stride;
    const std::uint16_t* k1 = k0 + stride;
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
    for (std::ptrdiff_t c = 0; c < c8; c += 8) {
      const __m256 qv = _mm256_loadu_ps(q + c);
      a0 = _mm256_fmadd_ps(qv, widen8(k0 + c), a0);
      a1 = _mm256_fmadd_ps(qv, widen8(k1 + c), a1);
    }
    float s0 = sum8(a0), s1 = sum8(a1);
    for (std::ptrdiff_t c = c8; c < cols; ++c) {
      s0 += q[c] * qtl::detail::half_to_float(k0[c]);
      s1 += q[c] * qtl::detail::half_to_float(k1[c]);
    }
    scores[r] = s0;
    scores[r + 1] = s1;
  }
  for (; r < rows; ++r) {
    const std::uint16_t* k0 = k + r * stride;
    __m256 a0 = _mm256_setzero_ps();
    for (std::ptrdiff_t c = 0; c < c8; c += 8) a0 = _mm256_fmadd_ps(_mm256_loadu_ps(q + c), widen8(k0 + c), a0);
    float s0 = sum8(a0);
    for (std::ptrdiff_t c = c8; c < cols; ++c) s0 += q[c] * qtl::detail::half_to_float(k0[c]);
    scores[r] = s0;
  }
}

/// Columns in blocks of 64 (8 ymm accumulators over every row), then 8 at a time, then scalar.
QTL_TARGET_AVX2 inline void weighted_sum_f16c(const float* p, const std::uint16_t* v, std::ptrdiff_t stride,
                                              std::ptrdiff_t rows, std::ptrdiff_t cols, float* out) noexcept {
  std::ptrdiff_t c = 0;
  for (; c + 64 <= cols; c += 64) {
    __m256 acc[8];
    for (int i = 0; i < 8; ++i) acc[i] = _mm256_setzero_ps();
    for (std::ptrdiff_t r = 0; r < rows; ++r) {
      const __m256 pv = _mm256_set1_ps(p[r]);
      const std::uint16_t* vr = v + r * stride + c;
      for (int i = 0; i < 8; ++i) acc[i] = _mm256_fmadd_ps(pv, widen8(vr + 8 * i), acc[i]);
    }
    for (int i = 0; i < 8; ++i) _mm256_storeu_ps(out + c + 8 * i, acc[i]);
  }
  for (; c + 8 <= cols; c += 8) {
    __m256 acc = _mm256_setzero_ps();
    for (std::ptrdiff_t r = 0; r < rows; ++r) acc = _mm256_fmadd_ps(_mm256_set1_ps(p[r]), widen8(v + r * stride + c), acc);
    _mm256_storeu_ps(out + c, acc);
  }
  if (c < cols) weighted_sum_scalar(p, v + c, stride, rows, cols - c, out + c);
}

QTL_TARGET_AVX2 inline void to_float_rows_f16c(const std::uint16_t* src, std::ptrdiff_t src_stride, float* dst,
                                               std::ptrdiff_t dst_stride, std::ptrdiff_t rows,
                                               std::ptrdiff_t cols) noexcept {
  for (std::ptrdiff_t r = 0; r < rows; ++r) {
    const std::uint16_t* s = src + r * src_stride;
    float* d = dst + r * dst_stride;
    std::ptrdiff_t c = 0;
    for (; c + 8 <= cols; c += 8) {
      _mm256_storeu_ps(d + c, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(s + c))));
    }
    for (; c < cols; ++c) d[c] = qtl::detail::half_to_float(s[c]);
  }
}

QTL_TARGET_AVX2 inline void to_half_rows_f16c(const float* src, std::ptrdiff_t src_stride, std::uint16_t* dst,
                                              std::ptrdiff_t dst_stride, std::ptrdiff_t rows,
                                              std::ptrdiff_t cols) noexcept {
  for (std::ptrdiff_t r = 0; r < rows; ++r) {
    const float* s = src + r * src_stride;
    std::uint16_t* d = dst + r * dst_stride;
    std::ptrdiff_t c = 0;
    for (; c + 8 <= cols; c += 8) {
      _mm_storeu_si128(reinterpret_cast<__m128i*>(d + c),
                       _mm256_cvtps_ph(_mm256_loadu_ps(s + c), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
    }
    for (; c < cols; ++c) d[c] = qtl::detail::float_to_half(s[c]);
  }
}
#endif

}  // namespace detail_fp16

/// dst[r * dst_stride + c] = the float of the fp16 bits src[r * src_stride + c], for r < rows,
/// c < cols, on `path` (F16C on every x86 path but Portable). Requires path_supported(path).
inline void fp16_rows_to_float(KernelPath path, const std::uint16_t* src, std::ptrdiff_t src_stride, float* dst,
                               std::ptrdiff_t dst_stride, std::ptrdiff_t rows, std::ptrdiff_t cols) noexcept {
#if defined(QTL_X86_64)
  if (path != KernelPath::Portable) {
    detail_fp16::to_float_rows_f16c(src, src_stride, dst, dst_stride, rows, cols);
    return;
  }
#endif
  (void)path;
  detail_fp16::to_float_rows_portable(src, src_stride, dst, dst_stride, rows, cols);
}

/// scores[r] = sum_c q[c] * K(r, c) for r < rows, K(r, c) = the float of the fp16 bits
/// k[r * stride + c], c < cols, on `path`. Requires path_supported(path).
inline void fp16_rows_dot(KernelPath path, const float* q, const std::uint16_t* k, std::ptrdiff_t stride,
                          std::ptrdiff_t rows, std::ptrdiff_t cols, float* scores) noexcept {
#if defined(QTL_X86_64)
  if (path != KernelPath::Portable) {
    detail_fp16::dot_f16c(q, k, stride, rows, cols, scores);
    return;
  }
#endif
  (void)path;
  detail_fp16::dot_portable(q, k, stride, rows, cols, scores);
}

/// out[c] = sum_r p[r] * V(r, c) for c < cols (out overwritten), V(r, c) = the float of the fp16
/// bits v[r * stride + c], r < rows, on `path`. Requires path_supported(path).
inline void fp16_rows_weighted_sum(KernelPath path, const float* p, const std::uint16_t* v, std::ptrdiff_t stride,
                                   std::ptrdiff_t rows, std::ptrdiff_t cols, float* out) noexcept {
#if defined(QTL_X86_64)
  if (path != KernelPath::Portable) {
    detail_fp16::weighted_sum_f16c(p, v, stride, rows, cols, out);
    return;
  }
#endif
  (void)path;
  detail_fp16::weighted_sum_portable(p, v, stride, rows, cols, out);
}

/// dst[r * dst_stride + c] = the fp16 bits nearest to src[r * src_stride + c] (ties to even),
/// for r < rows, c < cols, on `path`. Requires path_supported(path).
inline void float_rows_to_fp16(KernelPath path, const float* src, std::ptrdiff_t src_stride, std::uint16_t* dst,
                               std::ptrdiff_t dst_stride, std::ptrdiff_t rows, std::ptrdiff_t cols) noexcept {
#if defined(QTL_X86_64)
  if (path != KernelPath::Portable) {
    detail_fp16::to_half_rows_f16c(src, src_stride, dst, dst_stride, rows, cols);
    return;
  }
#endif
  (void)path;
  detail_fp16::to_half_rows_scalar(src, src_stride, dst, dst_stride, rows, cols);
}

/// The portable path's plain C++ twins (one value at a time, one sum per output), which the
/// tests and the benchmark compare it with.
inline void fp16_rows_to_float_scalar(const std::uint16_t* src, std::ptrdiff_t src_stride, float* dst,
                                      std::ptrdiff_t dst_stride, std::ptrdiff_t rows, std::ptrdiff_t cols) noexcept {
  detail_fp16::to_float_rows_scalar(src, src_stride, dst, dst_stride, rows, cols);
}
inline void fp16_rows_dot_scalar(const float* q, const std::uint16_t* k, std::ptrdiff_t stride, std::ptrdiff_t rows,
                                 std::ptrdiff_t cols, float* scores) noexcept {
  detail_fp16::dot_scalar(q, k, stride, rows, cols, scores);
}
inline void fp16_rows_weighted_sum_scalar(const float* p, const std::uint16_t* v, std::ptrdiff_t stride,
                                          std::ptrdiff_t rows, std::ptrdiff_t cols, float* out) noexcept {
  detail_fp16::weighted_sum_scalar(p, v, stride, rows, cols, out);
}

}  // namespace qtl::kernel
