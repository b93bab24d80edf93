// qtl/kernel/lut/avx512vnni.hpp — the lookup-table family's GEMM on AVX-512 VNNI: the bit planes
// decoded to bytes and multiplied with vpdpbusd instead of looked up.
//
// Why: a lookup serves one token. With 4 or more tokens the table kernels (simd_body.inc) read
// 256 table bytes per token and block, 8 vpshufb per unit and token plus the widening steps; on
// Zen 4 the ternary GEMM ran at ~0.33 of the vpdpbusd peak, no faster than ggml's TQ2_0. Here
// each unit of weights is decoded once into vpdpbusd operands and reused by 8 tokens held in
// registers, the uniform int8 kernels' scheme (qtl/kernel/uniform/avx512.hpp).
//
// Decoding a unit (qtl/kernel/lut/layout.hpp: byte j = 16 L + i of a 64-byte unit holds 4 columns
// of one row and plane in each nibble). Result vector v of a tile has int32 lane 4 L + q for the
// row of slot 16 v + 4 L + q, whose plane bytes lie in the same 128-bit lane L:
//   Ternary (2 planes): row 8 L + 2 q + v, bytes 16 L + 4 q + 2 v (u) and + 1 (v);
//   Binary / BinaryShift: row 16 L + 4 q + {0, 2, 1, 3}[v], byte 16 L + 4 q + {0, 2, 1, 3}[v].
// One vpshufb per plane copies the row's byte into the 4 bytes of its lane; vptestmb against
// (1, 2, 4, 8) (low nibble: columns 4u..4u+3) or (16, 32, 64, 128) (high nibble: columns
// 16+4u..) gives one mask bit per weight, and masked byte moves / adds turn them into the unsigned
// vpdpbusd operand:
//   Ternary  2 (u + v) = 2 (t + 1) in {0, 2, 4}:  P = sum 2 (t + 1) a,  S = 2 sum t a = P - 2 A_b
//   Binary   2 b in {0, 2}:                       P = sum 2 b a,        S = sum (2 b - 1) a = P - A_b
// with A_b = sum of the block's int8 activations, so every vpdpbusd chain starts from -2 A_b or
// -A_b (prepared once per token and block, LutActivationSet::init) and ends at S. The integers
// are the table kernels' S_rb exactly and the float steps are theirs, in the same order
// (F = fma(float(S), d_b, F) per block, acc = fma(c, F, acc) per group), so results are
// bit-identical to every other path (tests/kernel/lut_kernel_matrix_test.cpp compares them bit
// for bit).
// Per unit and vector: 1 (binary) or 2 (ternary) vpshufb, 2 or 4 vptestmb, 2 or 4 masked moves,
// then 2 vpdpbusd per token: 64 weights per vpdpbusd, as the uniform 2-bit kernel.
// The function carries target attributes (qtl/kernel/common/cpu_features.hpp) and must only be
// called when path_supported(KernelPath::Avx512Vnni) says so.
#pragma once

#include "qtl/kernel/common/target.hpp"

#if defined(QTL_X86_64)

#include <immintrin.h>

#include <cstddef>
#include <cstdint>
#include <cstring>

#include "qtl/kernel/lut/avx512.hpp"
#include "qtl/kernel/lut/layout.hpp"

namespace qtl::kernel {
namespace detail_lut_vnni {

/// vpshufb index: every byte of int32 lane q (of each 128-bit lane) takes byte 4 q + off.
QTL_TARGET_AVX512VNNI QTL_KERNEL_INLINE __m512i spread_index(int off) noexcept {
  alignas(64) std::int8_t idx[64];
  for (int j = 0; j < 64; ++j) idx[j] = static_cast<std::int8_t>(4 * ((j % 16) / 4) + off);
  return _mm512_load_si512(idx);
}

QTL_TARGET_AVX512VNNI QTL_KERNEL_INLINE std::int32_t load_i32(const std::int8_t* p) noexcept {
  std::int32_t v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

/// Groups [g0, g1) of result vector v of tile t for NT tokens: token j's accumulators at
/// out[j * kTr + 16 v .. + 16) (slot order), from out's values if resume, else from 0.
template <LutWeights K, int NT>
QTL_TARGET_AVX512VNNI void vector_tokens(const LutKernelView& w, const LutActivationSet& a, std::ptrdiff_t t, int v,
                                         std::ptrdiff_t n0, std::ptrdiff_t g0, std::ptrdiff_t g1, float* out,
                                         bool resume) noexcept {
  constexpr int kTr = lut_tile_rows(K);
  constexpr bool kTernary = K == LutWeights::Ternary;
  constexpr int kOff[4] = {0, 2, 1, 3};
  const __m512i idx_u = spread_index(kTernary ? 2 * v : kOff[v]);
  const __m512i idx_v = spread_index(2 * v + 1);  // ternary only
  const __m512i pat_lo = _mm512_set1_epi32(0x08040201);
  const __m512i pat_hi = _mm512_set1_epi32(static_cast<int>(0x80402010u));
  const __m512i two = _mm512_set1_epi8(2);
  const __m512 half = _mm512_set1_ps(0.5f);
  __m512 acc[NT];
  for (int j = 0; j < NT; ++j) acc[j] = resume ? _mm512_loadu_ps(out + j * kTr + 16 * v) : _mm512_setzero_ps();
  for (std::ptrdiff_t g = g0; g < g1; ++g) {
    __m512 f[NT];
    for (int j = 0; j < NT; ++j) f[j] = _mm512_setzero_ps();
    for (std::ptrdiff_t b = w.group_block_begin[g]; b < w.group_block_begin[g + 1]; ++b) {
      const std::uint8_t* blk = w.block(t, b);
      const std::int8_t* q = a.q + (n0 * a.blocks + b) * kLutBlockCols;
      const std::ptrdiff_t qs = a.blocks * kLutBlockCols;  // one token's codes
      __m512i s[NT];
      for (int j = 0; j < NT; ++j) s[j] = _mm512_set1_epi32(a.init[(n0 + j) * a.blocks + b]);
#pragma GCC unroll 4
      for (int u = 0; u < kLutUnitsPerBlock; ++u) {
        const __m512i x = _mm512_load_si512(blk + u * kLutUnitBytes);
        const __m512i xu = _mm512_shuffle_epi8(x, idx_u);
        __m512i wlo = _mm512_maskz_mov_epi8(_mm512_test_epi8_mask(xu, pat_lo), two);
        __m512i whi = _mm512_maskz_mov_epi8(_mm512_test_epi8_mask(xu, pat_hi), two);
        if constexpr (kTernary) {
          const __m512i xv = _mm512_shuffle_epi8(x, idx_v);
          wlo = _mm512_mask_add_epi8(wlo, _mm512_test_epi8_mask(xv, pat_lo), wlo, two);
          whi = _mm512_mask_add_epi8(whi, _mm512_test_epi8_mask(xv, pat_hi), whi, two);
        }
        for (int j = 0; j < NT; ++j) {
          s[j] = _mm512_dpbusd_epi32(s[j], wlo, _mm512_set1_epi32(load_i32(q + j * qs + 4 * u)));
          s[j] = _mm512_dpbusd_epi32(s[j], whi, _mm512_set1_epi32(load_i32(q + j * qs + 16 + 4 * u)));
        }
      }
      for (int j = 0; j < NT; ++j) {
        const float d = a.d[(n0 + j) * a.blocks + b];
        f[j] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s[j]), _mm512_set1_ps(d), f[j]);
      }
    }
    const std::uint16_t* p = w.params(t, g) + 16 * v;
    const __m512 p0 = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
    if constexpr (K == LutWeights::BinaryShift) {
      const __m512 p1 = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + kTr)));
      const __m512 c = _mm512_mul_ps(_mm512_sub_ps(p1, p0), half), mid = _mm512_mul_ps(_mm512_add_ps(p1, p0), half);
      for (int j = 0; j < NT; ++j) {
        acc[j] = _mm512_fmadd_ps(c, f[j], acc[j]);
        acc[j] = _mm512_fmadd_ps(mid, _mm512_set1_ps(a.gsum[(n0 + j) * a.groups + g]), acc[j]);
      }
    } else {
      const __m512 c = kTernary ? _mm512_mul_ps(p0, half) : p0;
      for (int j = 0; j < NT; ++j) acc[j] = _mm512_fmadd_ps(c, f[j], acc[j]);
    }
  }
  for (int j = 0; j < NT; ++j) _mm512_storeu_ps(out + j * kTr + 16 * v, acc[j]);
}

/// Tokens [n0, n1) of tile t, groups [g0, g1): 8 tokens at a time, then 4, 2, 1.
template <LutWeights K>
QTL_TARGET_AVX512VNNI void tile_tokens(const LutKernelView& w, const LutActivationSet& a, std::ptrdiff_t t,
                                       std::ptrdiff_t n0, std::ptrdiff_t n1, std::ptrdiff_t g0, std::ptrdiff_t g1,
                                       float* out, bool resume) noexcept {
  constexpr int kTr = lut_tile_rows(K), kVecs = kTr / 16;
  for (int v = 0; v < kVecs; ++v) {
    std::ptrdiff_t n = n0;
    for (; n + 8 <= n1; n += 8) vector_tokens<K, 8>(w, a, t, v, n, g0, g1, out + (n - n0) * kTr, resume);
    if (n + 4 <= n1) {
      vector_tokens<K, 4>(w, a, t, v, n, g0, g1, out + (n - n0) * kTr, resume);
      n += 4;
    }
    if (n + 2 <= n1) {
      vector_tokens<K, 2>(w, a, t, v, n, g0, g1, out + (n - n0) * kTr, resume);
      n += 2;
    }
    if (n < n1) vector_tokens<K, 1>(w, a, t, v, n, g0, g1, out + (n - n0) * kTr, resume);
  }
}

template <LutWeights K>
QTL_TARGET_AVX512VNNI void run_tiles(const LutKernelView& w, const LutActivationSet& a, float* y, std::ptrdiff_t ldy,
                                     std::ptrdiff_t t0, std::ptrdiff_t t1) noexcept {
  lut_run_tile_ranges<K>(w, a.m, y, ldy, t0, t1,
                         [&](std::ptrdiff_t t, std::ptrdiff_t n0, std::ptrdiff_t n1, std::ptrdiff_t g0,
                             std::ptrdiff_t g1, float* acc, bool resume) {
                           tile_tokens<K>(w, a, t, n0, n1, g0, g1, acc, resume);
                         });
}

}  // namespace detail_lut_vnni

/// Y[n * ldy + row] for the rows of tiles [t0, t1) and tokens [0, a.m): activations in the codes
/// form run the vpdpbusd kernel above, in the tables form the AVX-512 lookups. Requires
/// path_supported(KernelPath::Avx512Vnni).
inline void lut_tiles_avx512vnni(const LutKernelView& w, const LutActivationSet& a, float* y, std::ptrdiff_t ldy,
                                 std::ptrdiff_t t0, std::ptrdiff_t t1) noexcept {
  if (a.q == nullptr) {
    lut_tiles_avx512(w, a, y, ldy, t0, t1);
    return;
  }
  switch (w.kind) {
    case LutWeights::Binary: detail_lut_vnni::run_tiles<LutWeights::Binary>(w, a, y, ldy, t0, t1); break;
    case LutWeights::BinaryShift: detail_lut_vnni::run_tiles<LutWeights::BinaryShift>(w, a, y, ldy, t0, t1); break;
    case LutWeights::Ternary: detail_lut_vnni::run_tiles<LutWeights::Ternary>(w, a, y, ldy, t0, t1); break;
  }
}

}  // namespace qtl::kernel

#endif
