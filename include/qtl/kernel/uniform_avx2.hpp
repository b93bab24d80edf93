// qtl/kernel/uniform_avx2.hpp — AVX2 path of the uniform kernels: ymm, 8 rows at a time.
//
// Bytes 0..31 of each 64-byte operand of the tile layout (qtl/kernel/layout_uniform.hpp) are
// rows 0..7, bytes 32..63 rows 8..15: this path runs the same tile as two 8-row halves. Integer
// products as in ggml's AVX2 code: S += vpmaddwd(vpmaddubsw(codes_u8, acts_s8), 1), the 8
// operands of a block summed in int16 first when codes < 16 (each pair <= 2 * 15 * 127 = 3810,
// the 8-operand sum <= 30480 < 2^15); 8-bit codes use the signed form q - 128 with the sign
// trick |w| * sign(a, w) (pairs <= 2 * 128 * 127 = 32512) and zero point z - 128; so do codes
// read through a layout's code map (one vpshufb per operand, values up to 255).
// Target attributes: see qtl/kernel/cpu_features.hpp. Call only when path_supported(Avx2).
#pragma once

#if (defined(__GNUC__) || defined(__clang__)) && defined(__x86_64__)

#include <immintrin.h>

#include <cstddef>
#include <cstdint>
#include <cstring>

#include "qtl/kernel/layout_uniform.hpp"
#include "qtl/kernel/prefetch.hpp"
#include "qtl/kernel/quantize_activations.hpp"

#define QTL_TARGET_AVX2 __attribute__((target("avx2,fma,f16c")))
#ifndef QTL_KERNEL_INLINE
#define QTL_KERNEL_INLINE inline __attribute__((always_inline))
#endif

namespace qtl::kernel {
namespace detail_avx2 {

QTL_TARGET_AVX2 QTL_KERNEL_INLINE __m256i bcast4(const std::int8_t* p) noexcept {
  std::int32_t v;
  std::memcpy(&v, p, 4);
  return _mm256_set1_epi32(v);
}

/// Codes of operand t, rows 8h..8h+7 (`half` = blk + 32 h), one byte each.
template <int Bits>
QTL_TARGET_AVX2 QTL_KERNEL_INLINE __m256i operand(const std::uint8_t* half, int t) noexcept {
  if constexpr (Bits == 8) {
    return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(half + 64 * t));
  } else if constexpr (Bits == 4) {
    const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(half + 64 * (t % 4)));
    const __m256i u = t < 4 ? v : _mm256_srli_epi16(v, 4);
    return _mm256_and_si256(u, _mm256_set1_epi8(0x0F));
  } else if constexpr (Bits == 2) {
    const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(half + 64 * (t % 2)));
    return _mm256_and_si256(_mm256_srl_epi16(v, _mm_cvtsi32_si128(2 * (t / 2))), _mm256_set1_epi8(3));
  } else {
    static_assert(Bits == 3);
    const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(half + 64 * (t % 2)));
    const __m256i lo = _mm256_and_si256(_mm256_srl_epi16(v, _mm_cvtsi32_si128(2 * (t / 2))),
                                        _mm256_set1_epi8(3));
    const __m256i qh = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(half + 128));
    const __m256i hb = _mm256_and_si256(_mm256_srl_epi16(qh, _mm_cvtsi32_si128(t)), _mm256_set1_epi8(1));
    return _mm256_or_si256(lo, _mm256_slli_epi16(hb, 2));  // hb <= 1: no carry across bytes
  }
}

/// Operand t read through the layout's code map when kMap (then every byte may be up to 255).
template <int Bits, bool kMap>
QTL_TARGET_AVX2 QTL_KERNEL_INLINE __m256i mapped_operand(const std::uint8_t* half, int t, __m256i map) noexcept {
  const __m256i c = operand<Bits>(half, t);
  if constexpr (kMap) return _mm256_shuffle_epi8(map, c);
  (void)map;
  return c;
}

/// The layout's code map in both 128-bit lanes (zero when there is none).
QTL_TARGET_AVX2 QTL_KERNEL_INLINE __m256i load_map(const UniformKernelView& w) noexcept {
  if (w.code_map == nullptr) return _mm256_setzero_si256();
  return _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w.code_map)));
}

template <int Bits, int NT, bool kMap>
QTL_TARGET_AVX2 void tile_int8(const UniformKernelView& w, std::ptrdiff_t t, int h,
                               const ActivationView& a, float* ybuf) noexcept {
  constexpr bool kSigned8 = Bits == 8 || kMap;
  const __m256i map = load_map(w);
  const TileGroupParams* params = w.params(t);
  const std::int8_t* const q = a.q;  // chunk layout: see ActivationView
  const float* const d = a.d;
  const float* const gs = a.gsum;
  const __m256i ones = _mm256_set1_epi16(1);
  for (std::ptrdiff_t g = 0; g < w.groups; ++g) {
    const __m256 s = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(params[g].scale + 8 * h)));
    std::int64_t z8;
    std::memcpy(&z8, params[g].zero + 8 * h, 8);
    __m256 z = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_cvtsi64_si128(z8)));
    if constexpr (kSigned8) z = _mm256_sub_ps(z, _mm256_set1_ps(128.0f));
    __m256 gf[NT];
    for (int n = 0; n < NT; ++n) gf[n] = _mm256_setzero_ps();
    for (std::ptrdiff_t b = w.group_block_begin[g]; b < w.group_block_begin[g + 1]; ++b) {
      const std::uint8_t* half = w.block(t, b) + 32 * h;
      prefetch_stream<Bits>(half);
      __m256i acc[NT];
      for (int n = 0; n < NT; ++n) acc[n] = _mm256_setzero_si256();
#pragma GCC unroll 8
      for (int op = 0; op < 8; ++op) {
        const __m256i c = mapped_operand<Bits, kMap>(half, op, map);
        if constexpr (kSigned8) {
          const __m256i sw = _mm256_xor_si256(c, _mm256_set1_epi8(char(0x80)));
          const __m256i aw = _mm256_abs_epi8(sw);
          for (int n = 0; n < NT; ++n) {
            const __m256i xs = _mm256_sign_epi8(bcast4(q + b * kBlockCols * NT + 4 * op * NT + 4 * n), sw);
            acc[n] = _mm256_add_epi32(acc[n], _mm256_madd_epi16(_mm256_maddubs_epi16(aw, xs), ones));
          }
        } else {
          for (int n = 0; n < NT; ++n) {
            acc[n] = _mm256_add_epi16(acc[n], _mm256_maddubs_epi16(c, bcast4(q + b * kBlockCols * NT + 4 * op * NT + 4 * n)));
          }
        }
      }
      for (int n = 0; n < NT; ++n) {
        const __m256i sum = kSigned8 ? acc[n] : _mm256_madd_epi16(acc[n], ones);
        gf[n] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sum), _mm256_set1_ps(d[b * NT + n]), gf[n]);
      }
    }
    for (int n = 0; n < NT; ++n) {
      float* yb = ybuf + 16 * n + 8 * h;
      const __m256 corr = _mm256_fnmadd_ps(z, _mm256_set1_ps(gs[g * NT + n]), gf[n]);
      _mm256_store_ps(yb, _mm256_fmadd_ps(s, corr, _mm256_load_ps(yb)));
    }
  }
}

template <int Bits, int NT, bool kMap>
QTL_TARGET_AVX2 void tile_fp32(const UniformKernelView& w, std::ptrdiff_t t, int h,
                               const ActivationView& a, float* ybuf) noexcept {
  constexpr int kChains = NT >= 8 ? 1 : 8 / NT;
  const __m256i map = load_map(w);
  const TileGroupParams* params = w.params(t);
  const float* const x = a.x;  // chunk layout: see ActivationView
  const float* const gs = a.gsum;
  const __m256i byte_mask = _mm256_set1_epi32(0xFF);
  for (std::ptrdiff_t g = 0; g < w.groups; ++g) {
    const __m256 s = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(params[g].scale + 8 * h)));
    std::int64_t z8;
    std::memcpy(&z8, params[g].zero + 8 * h, 8);
    const __m256 z = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_cvtsi64_si128(z8)));
    __m256 acc[NT][kChains];
    for (int n = 0; n < NT; ++n)
      for (int i = 0; i < kChains; ++i) acc[n][i] = _mm256_setzero_ps();
    for (std::ptrdiff_t b = w.group_block_begin[g]; b < w.group_block_begin[g + 1]; ++b) {
      const std::uint8_t* half = w.block(t, b) + 32 * h;
      prefetch_stream<Bits>(half);
#pragma GCC unroll 8
      for (int op = 0; op < 8; ++op) {
        const __m256i c = mapped_operand<Bits, kMap>(half, op, map);
        const __m256 wv[4] = {
            _mm256_cvtepi32_ps(_mm256_and_si256(c, byte_mask)),
            _mm256_cvtepi32_ps(_mm256_and_si256(_mm256_srli_epi32(c, 8), byte_mask)),
            _mm256_cvtepi32_ps(_mm256_and_si256(_mm256_srli_epi32(c, 16), byte_mask)),
            _mm256_cvtepi32_ps(_mm256_srli_epi32(c, 24))};
        for (int i = 0; i < 4; ++i) {
          for (int n = 0; n < NT; ++n) {
            __m256& r = acc[n][(4 * op + i) % kChains];
            r = _mm256_fmadd_ps(wv[i], _mm256_set1_ps(x[(b * kBlockCols + 4 * op + i) * NT + n]), r);
          }
        }
      }
    }
    for (int n = 0; n < NT; ++n) {
      __m256 sum = acc[n][0];
      for (int i = 1; i < kChains; ++i) sum = _mm256_add_ps(sum, acc[n][i]);
      float* yb = ybuf + 16 * n + 8 * h;
      const __m256 corr = _mm256_fnmadd_ps(z, _mm256_set1_ps(gs[g * NT + n]), sum);
      _mm256_store_ps(yb, _mm256_fmadd_ps(s, corr, _mm256_load_ps(yb)));
    }
  }
}

template <int Bits, int NT, bool kMap>
QTL_TARGET_AVX2 void run_tile(const UniformKernelView& w, std::ptrdiff_t t, const ActivationSet& set,
                              std::ptrdiff_t n0, float* y, std::ptrdiff_t ldy) noexcept {
  const ActivationView a = set.chunk(n0);
  alignas(32) float ybuf[NT * kTileRows];
  for (int i = 0; i < 2 * NT; ++i) _mm256_store_ps(ybuf + 8 * i, _mm256_setzero_ps());
  const std::ptrdiff_t row0 = t * kTileRows;
  const std::ptrdiff_t valid = w.rows - row0 < kTileRows ? w.rows - row0 : kTileRows;
  for (int h = 0; h < 2 && 8 * h < valid; ++h) {
    if (a.q != nullptr) {
      tile_int8<Bits, NT, kMap>(w, t, h, a, ybuf);
    } else {
      tile_fp32<Bits, NT, kMap>(w, t, h, a, ybuf);
    }
  }
  for (int n = 0; n < NT; ++n) {
    std::memcpy(y + (n0 + n) * ldy + row0, ybuf + 16 * n, static_cast<std::size_t>(valid) * sizeof(float));
  }
}

template <int Bits, bool kMap = false>
QTL_TARGET_AVX2 void run_tiles(const UniformKernelView& w, const ActivationSet& a,
                               float* y, std::ptrdiff_t ldy, std::ptrdiff_t t0, std::ptrdiff_t t1) noexcept {
  for (std::ptrdiff_t t = t0; t < t1; ++t) {
    for (std::ptrdiff_t n0 = 0; n0 < a.m;) {
      const int width = token_chunk(a.m, n0).width;
      switch (width) {
        case 8: run_tile<Bits, 8, kMap>(w, t, a, n0, y, ldy); break;
        case 4: run_tile<Bits, 4, kMap>(w, t, a, n0, y, ldy); break;
        case 2: run_tile<Bits, 2, kMap>(w, t, a, n0, y, ldy); break;
        default: run_tile<Bits, 1, kMap>(w, t, a, n0, y, ldy); break;
      }
      n0 += width;
    }
  }
}

}  // namespace detail_avx2

/// Y[n * ldy + row] for the rows of tiles [t0, t1) and tokens [0, m). Requires
/// path_supported(Avx2).
inline void uniform_tiles_avx2(const UniformKernelView& w, const ActivationSet& a,
                               float* y, std::ptrdiff_t ldy, std::ptrdiff_t t0, std::ptrdiff_t t1) noexcept {
  if (w.code_map != nullptr) {  // the table family's int8 mode (2..4-bit tiles only)
    switch (w.bits) {
      case 2: detail_avx2::run_tiles<2, true>(w, a, y, ldy, t0, t1); break;
      case 3: detail_avx2::run_tiles<3, true>(w, a, y, ldy, t0, t1); break;
      case 4: detail_avx2::run_tiles<4, true>(w, a, y, ldy, t0, t1); break;
      default: break;
    }
    return;
  }
  switch (w.bits) {
    case 2: detail_avx2::run_tiles<2>(w, a, y, ldy, t0, t1); break;
    case 3: detail_avx2::run_tiles<3>(w, a, y, ldy, t0, t1); break;
    case 4: detail_avx2::run_tiles<4>(w, a, y, ldy, t0, t1); break;
    case 8: detail_avx2::run_tiles<8>(w, a, y, ldy, t0, t1); break;
    default: break;
  }
}

}  // namespace qtl::kernel

#endif
