// qtl/kernel/uniform/avx512.hpp — AVX-512 paths of the uniform kernels: zmm, 16 rows per tile.
//
// One zmm register is one "operand" of the tile layout (qtl/kernel/uniform/layout.hpp): lane r
// holds 4 codes of row r. Per operand and token the 4 matching activations are broadcast to all
// lanes, so the products of 16 rows accumulate in 16 int32 lanes with no horizontal sums:
//   Avx512Vnni  S += vpdpbusd(codes_u8, acts_s8)                  (4 products per lane, exact)
//   Avx512      S += vpmaddwd(vpmaddubsw(codes_u8, acts_s8), 1)  (ggml's AVX2 recipe, on zmm)
// vpmaddubsw adds pairs of u8 x s8 products into int16 with saturation; codes < 16 keep every
// pair below 2 * 15 * 127 = 3810, so the 8 operands of a block are summed in int16 (<= 30480)
// before one vpmaddwd. Codes of 5, 6 and 8 bits would overflow it, so they use the signed form
// (q - 128) and the sign trick |w| * (a * sign(w)) (each pair <= 2 * 128 * 127 = 32512), and the
// zero point becomes z - 128.
// GEMV is the 1-token case (NT = 1) of the same tile kernel; GEMM runs NT = 8 tokens per call
// so one decoded operand feeds 8 dot products.
// A layout with a code map (uniform/layout.hpp) adds one vpshufb per operand; its mapped codes
// reach 255, so they take the 8-bit treatment (the sign trick without VNNI, no kScaled).
// For NT <= 2 with VNNI, 4- and 2-bit codes are not shifted down: operand t keeps its bit
// position (code << p), goes to its own accumulator, and the accumulator is shifted right by p
// at the end of the block. That is exact (every product of the accumulator is a multiple of 2^p,
// and the arithmetic shift of a multiple of 2^p divides exactly) and saves a shift per operand.
//
// The functions carry target attributes (see qtl/kernel/common/cpu_features.hpp): they compile in any
// translation unit and must only be called when path_supported() says so. The Avx512 (no VNNI)
// instantiations carry the VNNI attribute too, because an attribute cannot depend on a template
// argument; they execute no VNNI instruction (no integer dot-product loop is left for the
// compiler to auto-vectorize into one).
#pragma once

#include "qtl/kernel/common/target.hpp"

#if defined(QTL_X86_64)
#define QTL_HAVE_X86_KERNELS 1

#include <immintrin.h>

#include <cstddef>
#include <cstdint>
#include <cstring>

#include "qtl/kernel/common/prefetch.hpp"
#include "qtl/kernel/uniform/layout.hpp"
#include "qtl/kernel/uniform/quantize_activations.hpp"

#define QTL_KERNEL_INLINE inline __attribute__((always_inline))

namespace qtl::kernel {
namespace detail_avx512 {

QTL_TARGET_AVX512VNNI QTL_KERNEL_INLINE __m512i bcast4(const std::int8_t* p) noexcept {
  std::int32_t v;
  std::memcpy(&v, p, 4);
  return _mm512_set1_epi32(v);
}

/// The raw 64-byte vectors of a tile block (Bits of them: Q2 2, Q3 3, Q4 4, Q5 5, Q6 6, Q8 8),
/// loaded once.
/// The empty asm keeps each in a register: otherwise GCC folds the load into every vpandd that
/// reads it (4 loads of the same vector per 2-bit block). Measured together with the two FMA
/// chains of tile_int8: in-cache 2-bit GEMV 122 -> 141 G weights/s on Zen 5.
template <int Bits>
struct RawBlock {
  __m512i v[Bits];
};
template <int Bits>
QTL_TARGET_AVX512VNNI QTL_KERNEL_INLINE RawBlock<Bits> load_block(const std::uint8_t* blk) noexcept {
  RawBlock<Bits> r;
#pragma GCC unroll 8
  for (int i = 0; i < Bits; ++i) {
    r.v[i] = _mm512_loadu_si512(blk + 64 * i);
    if constexpr (Bits != 8) __asm__("" : "+v"(r.v[i]));
  }
  return r;
}

/// Codes of operand t of a tile block, one byte each (shifted left by slot_shift<Bits>(t)
/// when kScaled).
template <int Bits, bool kScaled>
QTL_TARGET_AVX512VNNI QTL_KERNEL_INLINE __m512i operand(const RawBlock<Bits>& raw, int t) noexcept {
  if constexpr (Bits == 8) {
    return raw.v[t];
  } else if constexpr (Bits == 4) {
    const __m512i v = raw.v[t % 4];
    if constexpr (kScaled) return _mm512_and_si512(v, _mm512_set1_epi8(t < 4 ? 0x0F : char(0xF0)));
    const __m512i u = t < 4 ? v : _mm512_srli_epi16(v, 4);
    return _mm512_and_si512(u, _mm512_set1_epi8(0x0F));
  } else if constexpr (Bits == 2) {
    const __m512i v = raw.v[t % 2];
    const int s = 2 * (t / 2);
    if constexpr (kScaled) return _mm512_and_si512(v, _mm512_set1_epi8(static_cast<char>(3 << s)));
    return _mm512_and_si512(_mm512_srl_epi16(v, _mm_cvtsi32_si128(s)), _mm512_set1_epi8(3));
  } else if constexpr (Bits == 5 || Bits == 6) {
    const __m512i v = raw.v[t % 4];
    const __m512i lo = _mm512_and_si512(t < 4 ? v : _mm512_srli_epi16(v, 4), _mm512_set1_epi8(0x0F));
    if constexpr (Bits == 5) {  // bit t of the plane byte moved to bit 4, as for 6 bits below
      const __m512i v5 = raw.v[4];
      const __m512i moved = t < 4 ? _mm512_slli_epi16(v5, 4 - t) : t == 4 ? v5 : _mm512_srli_epi16(v5, t - 4);
      return _mm512_ternarylogic_epi32(moved, _mm512_set1_epi8(0x10), lo, 0xEA);  // (a & b) | c
    } else {
      // Bits 2s..2s+1 of the plane byte (s = t / 2) moved to bits 4..5 by one 16-bit shift; the
      // mask drops what the shift carried across the byte boundary, and one ternary-logic
      // instruction does (hi & 0x30) | lo.
      const __m512i v6 = raw.v[4 + t % 2];
      const int s = t / 2;
      const __m512i moved = s == 0 ? _mm512_slli_epi16(v6, 4) : s == 1 ? _mm512_slli_epi16(v6, 2)
                          : s == 2 ? v6 : _mm512_srli_epi16(v6, 2);
      return _mm512_ternarylogic_epi32(moved, _mm512_set1_epi8(0x30), lo, 0xEA);  // (a & b) | c
    }
  } else {
    static_assert(Bits == 3);
    const __m512i v = raw.v[t % 2];
    const __m512i lo = _mm512_and_si512(_mm512_srl_epi16(v, _mm_cvtsi32_si128(2 * (t / 2))),
                                        _mm512_set1_epi8(3));
    const __mmask64 hi = _mm512_test_epi8_mask(raw.v[2], _mm512_set1_epi8(static_cast<char>(1 << t)));
    return _mm512_mask_add_epi8(lo, hi, lo, _mm512_set1_epi8(4));
  }
}

template <int Bits>
constexpr int slot_of(int t) noexcept {
  return Bits == 4 ? t / 4 : Bits == 2 ? t / 2 : 0;
}
template <int Bits>
constexpr int slot_shift(int slot) noexcept {
  return Bits == 4 ? 4 * slot : Bits == 2 ? 2 * slot : 0;
}

/// Operand t read through the layout's code map when kMap (then every byte may be up to 255).
template <int Bits, bool kScaled, bool kMap>
QTL_TARGET_AVX512VNNI QTL_KERNEL_INLINE __m512i mapped_operand(const RawBlock<Bits>& raw, int t, __m512i map) noexcept {
  const __m512i c = operand<Bits, kScaled>(raw, t);
  if constexpr (kMap) return _mm512_shuffle_epi8(map, c);
  (void)map;
  return c;
}

/// The layout's code map in every 128-bit lane (zero when there is none).
QTL_TARGET_AVX512VNNI QTL_KERNEL_INLINE __m512i load_map(const UniformKernelView& w) noexcept {
  if (w.code_map == nullptr) return _mm512_setzero_si512();
  return _mm512_broadcast_i32x4(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w.code_map)));
}

/// Int8 activations, one kernel block b: gf[n] += d_b * (the block's integer dot products).
/// blk: the block's codes; q, d: its NT x 32 int8 activations (chunk layout, see
/// ActivationView) and their NT scales.
/// kInit: the integer sums start from init[n] (the block's zero-point term, ActivationView::zsum)
/// instead of 0.
template <int Bits, int NT, bool kVnni, bool kMap, bool kInit = false>
QTL_TARGET_AVX512VNNI QTL_KERNEL_INLINE void block_int8(const std::uint8_t* blk, const std::int8_t* q, const float* d,
                                                    PrefetchDistance pf, __m512i map, __m512* gf,
                                                    const std::int32_t* init = nullptr) noexcept {
  constexpr bool kScaled = kVnni && NT <= 2 && (Bits == 2 || Bits == 4) && !kMap;
  constexpr int kSlots = kScaled ? (Bits == 4 ? 2 : 4) : 1;
  // Sign trick (codes as q - 128) where int16 sums of 8 operands could overflow: codes of 5 bits
  // and more, and mapped codes.
  constexpr bool kSigned8 = !kVnni && (Bits >= 5 || kMap);
  prefetch_stream_at<Bits>(blk, pf);
  const RawBlock<Bits> raw = load_block<Bits>(blk);
  __m512i acc[NT][kSlots];
  for (int n = 0; n < NT; ++n)
    for (int i = 0; i < kSlots; ++i) acc[n][i] = _mm512_setzero_si512();
  if constexpr (kInit) {  // slot 0 is the unshifted one
    static_assert(kVnni);
    for (int n = 0; n < NT; ++n) acc[n][0] = _mm512_set1_epi32(init[n]);
  }
#pragma GCC unroll 8
  for (int op = 0; op < 8; ++op) {
    const __m512i c = mapped_operand<Bits, kScaled, kMap>(raw, op, map);
    if constexpr (kVnni) {
      for (int n = 0; n < NT; ++n) {
        __m512i& r = acc[n][kScaled ? slot_of<Bits>(op) : 0];
        r = _mm512_dpbusd_epi32(r, c, bcast4(q + 4 * op * NT + 4 * n));
      }
    } else if constexpr (kSigned8) {
      const __m512i sw = _mm512_xor_si512(c, _mm512_set1_epi8(char(0x80)));
      const __mmask64 neg = _mm512_movepi8_mask(sw);
      const __m512i aw = _mm512_abs_epi8(sw);
      for (int n = 0; n < NT; ++n) {
        const __m512i x = bcast4(q + 4 * op * NT + 4 * n);
        const __m512i xs = _mm512_mask_sub_epi8(x, neg, _mm512_setzero_si512(), x);
        acc[n][0] = _mm512_add_epi32(
            acc[n][0], _mm512_madd_epi16(_mm512_maddubs_epi16(aw, xs), _mm512_set1_epi16(1)));
      }
    } else {  // int16 partial sums, widened once per block below
      for (int n = 0; n < NT; ++n) {
        acc[n][0] = _mm512_add_epi16(
            acc[n][0], _mm512_maddubs_epi16(c, bcast4(q + 4 * op * NT + 4 * n)));
      }
    }
  }
  for (int n = 0; n < NT; ++n) {
    __m512i sum = acc[n][0];
    if constexpr (!kVnni && !kSigned8) sum = _mm512_madd_epi16(sum, _mm512_set1_epi16(1));
    for (int i = 1; i < kSlots; ++i) {
      sum = _mm512_add_epi32(sum, _mm512_srai_epi32(acc[n][i], slot_shift<Bits>(i)));
    }
    gf[n] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sum), _mm512_set1_ps(d[n]), gf[n]);
  }
}

/// block_int8 on the i-th block after (blk, q, d, zs): each next block is a constant offset away.
template <int Bits, int NT, bool kVnni, bool kMap, bool kZeroInSums>
QTL_TARGET_AVX512VNNI QTL_KERNEL_INLINE void block_at(std::ptrdiff_t i, const std::uint8_t* blk, const std::int8_t* q,
                                                  const float* d, const std::int32_t* zs, PrefetchDistance pf,
                                                  __m512i map, __m512* gf) noexcept {
  if constexpr (kZeroInSums) {
    block_int8<Bits, NT, kVnni, kMap, true>(blk + i * tile_block_bytes(Bits), q + i * kBlockCols * NT, d + i * NT, pf,
                                            map, gf, zs + i * NT);
  } else {
    block_int8<Bits, NT, kVnni, kMap>(blk + i * tile_block_bytes(Bits), q + i * kBlockCols * NT, d + i * NT, pf, map, gf);
  }
}

/// tile_int8 when every group is one kernel block (groups of <= 32 columns: ggml's block size,
/// the Q4_0 / Q8_0 / IQ4_NL pairs) and NT >= 4. Per token and group that leaves one block's
/// conversion, its activation scale, the zero-point term and the group scale: the general loop
/// below adds to them a second block chain (one more add) and keeps ybuf in memory (a load and
/// two stores, ybuf and its spilled copy). Here the NT running sums stay in registers.
/// kZeroInSums (VNNI, one zero point z for the whole matrix, a.zsum set): the integer sums start
/// from -z A (exact), so the float zero-point step goes: per token and block one conversion
/// and two multiply-adds, on the ports vpdpbusd needs too (a scratch loop of 8 vpdpbusd per
/// token and block on Zen 4: 2.62 G vpdpbusd/s with three, 2.85 with two, 3.43 with none).
/// Without it, the same float steps as the general loop (its second chain is +0 for one
/// block), so the same bits.
template <int Bits, int NT, bool kVnni, bool kMap, bool kZeroInSums>
QTL_TARGET_AVX512VNNI QTL_KERNEL_INLINE void tile_int8_block_groups(const UniformKernelView& w, std::ptrdiff_t t,
                                                                const ActivationView& a, float* ybuf) noexcept {
  constexpr bool kSigned8 = !kVnni && (Bits >= 5 || kMap);
  constexpr std::ptrdiff_t kCodeStep = tile_block_bytes(Bits), kActStep = kBlockCols * NT;
  const __m512i map = load_map(w);
  const PrefetchDistance pf = w.prefetch;
  const std::uint8_t* blk = w.block(t, 0);
  const std::int8_t* q = a.q;
  const float* d = a.d;
  const float* gs = a.gsum;
  const std::int32_t* zs = a.zsum;
  __m512 y[NT];
  for (int n = 0; n < NT; ++n) y[n] = _mm512_load_ps(ybuf + 16 * n);
  for (std::ptrdiff_t g = 0; g < w.groups; ++g, blk += kCodeStep, q += kActStep, d += NT, gs += NT) {
    __builtin_prefetch(w.scales(t, g + 16), 0, 3);  // as in tile_int8
    const __m512 s = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(w.scales(t, g))));
    __m512 gf[NT];
    for (int n = 0; n < NT; ++n) gf[n] = _mm512_setzero_ps();
    if constexpr (kZeroInSums) {
      block_int8<Bits, NT, kVnni, kMap, true>(blk, q, d, pf, map, gf, zs);
      zs += NT;
      for (int n = 0; n < NT; ++n) y[n] = _mm512_fmadd_ps(s, gf[n], y[n]);
    } else {
      __m512 z = _mm512_cvtepi32_ps(
          _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w.zeros(t, g)))));
      if constexpr (kSigned8) z = _mm512_sub_ps(z, _mm512_set1_ps(128.0f));
      block_int8<Bits, NT, kVnni, kMap>(blk, q, d, pf, map, gf);
      for (int n = 0; n < NT; ++n) y[n] = _mm512_fmadd_ps(s, _mm512_fnmadd_ps(z, _mm512_set1_ps(gs[n]), gf[n]), y[n]);
    }
  }
  for (int n = 0; n < NT; ++n) _mm512_store_ps(ybuf + 16 * n, y[n]);
}

/// Int8 activations, any group geometry: ybuf[n][r] += the tile's rows for the NT tokens of
/// chunk a. kZeroInSums as in tile_int8_block_groups.
template <int Bits, int NT, bool kVnni, bool kMap, bool kZeroInSums>
QTL_TARGET_AVX512VNNI QTL_KERNEL_INLINE void tile_int8_groups(const UniformKernelView& w, std::ptrdiff_t t,
                                                          const ActivationView& a, float* ybuf) noexcept {
  constexpr bool kSigned8 = !kVnni && (Bits >= 5 || kMap);
  constexpr bool kZ = kZeroInSums;
  const __m512i map = load_map(w);
  const float* const gs = a.gsum;
  const PrefetchDistance pf = w.prefetch;
  for (std::ptrdiff_t g = 0; g < w.groups; ++g) {
    // The tile's parameters are a second, slower stream in front of its codes (5.3 KiB for
    // 112 groups): the weight-stream prefetch covers only its start. 16 groups (768 bytes, 512
    // when the tiles hold scales only) ahead took the 2-bit GEMV from 11.55 to 12.05 GB/s (1
    // thread, 4096 x 14336) and 22.3 to 23.2 (2 threads) on an Intel Xeon VM; 3- and 4-bit
    // unchanged. Past the last group it touches the tile's own codes: harmless.
    __builtin_prefetch(w.scales(t, g + 16), 0, 3);
    const __m512 s = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(w.scales(t, g))));
    __m512 z = _mm512_setzero_ps();
    if constexpr (!kZ) {
      z = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w.zeros(t, g)))));
      if constexpr (kSigned8) z = _mm512_sub_ps(z, _mm512_set1_ps(128.0f));
    }
    __m512 gf[NT], gf2[NT];  // even and odd blocks: two independent chains
    for (int n = 0; n < NT; ++n) gf[n] = gf2[n] = _mm512_setzero_ps();
    const std::ptrdiff_t b0 = w.group_block_begin[g], b1 = w.group_block_begin[g + 1];
    // Pointers to the group's first block and its activations; each next block is a constant
    // offset away (no per-block address arithmetic).
    constexpr std::ptrdiff_t kCodeStep = tile_block_bytes(Bits), kActStep = kBlockCols * NT;
    const std::uint8_t* blk = w.block(t, b0);
    const std::int8_t* q = a.q + b0 * kActStep;
    const float* d = a.d + b0 * NT;
    const std::int32_t* zs = kZ ? a.zsum + b0 * NT : nullptr;
    // Groups of 128 columns (the common case) as straight-line code: a 4-trip loop with
    // run-time bounds costs a quarter of the GEMV's time on 2-bit codes.
    if (b1 - b0 == 4) {
      block_at<Bits, NT, kVnni, kMap, kZ>(0, blk, q, d, zs, pf, map, gf);
      block_at<Bits, NT, kVnni, kMap, kZ>(1, blk, q, d, zs, pf, map, gf2);
      block_at<Bits, NT, kVnni, kMap, kZ>(2, blk, q, d, zs, pf, map, gf);
      block_at<Bits, NT, kVnni, kMap, kZ>(3, blk, q, d, zs, pf, map, gf2);
    } else {
      std::ptrdiff_t b = b0;
      for (; b + 1 < b1; b += 2, blk += 2 * kCodeStep, q += 2 * kActStep, d += 2 * NT) {
        block_at<Bits, NT, kVnni, kMap, kZ>(0, blk, q, d, zs, pf, map, gf);
        block_at<Bits, NT, kVnni, kMap, kZ>(1, blk, q, d, zs, pf, map, gf2);
        if constexpr (kZ) zs += 2 * NT;
      }
      if (b < b1) block_at<Bits, NT, kVnni, kMap, kZ>(0, blk, q, d, zs, pf, map, gf);
    }
    for (int n = 0; n < NT; ++n) {
      __m512 corr = _mm512_add_ps(gf[n], gf2[n]);
      if constexpr (!kZ) corr = _mm512_fnmadd_ps(z, _mm512_set1_ps(gs[g * NT + n]), corr);
      _mm512_store_ps(ybuf + 16 * n, _mm512_fmadd_ps(s, corr, _mm512_load_ps(ybuf + 16 * n)));
    }
  }
}

/// Int8 activations: ybuf[n][r] += the tile's rows for the NT tokens of chunk a. With one zero
/// point for the whole matrix (a.zsum set) the VNNI kernels take it into their integer sums.
template <int Bits, int NT, bool kVnni, bool kMap>
QTL_TARGET_AVX512VNNI void tile_int8(const UniformKernelView& w, std::ptrdiff_t t,
                                 const ActivationView& a, float* ybuf) noexcept {
  const bool one_block_groups = NT >= 4 && w.blocks == w.groups;
  if constexpr (kVnni) {
    if (a.zsum != nullptr) {
      if (one_block_groups) return tile_int8_block_groups<Bits, NT, kVnni, kMap, true>(w, t, a, ybuf);
      return tile_int8_groups<Bits, NT, kVnni, kMap, true>(w, t, a, ybuf);
    }
  }
  if (one_block_groups) return tile_int8_block_groups<Bits, NT, kVnni, kMap, false>(w, t, a, ybuf);
  tile_int8_groups<Bits, NT, kVnni, kMap, false>(w, t, a, ybuf);
}

/// Fp32 activations: products in fp32 FMA, the 4 codes of a lane expanded one byte at a time.
template <int Bits, int NT, bool kMap>
QTL_TARGET_AVX512VNNI void tile_fp32(const UniformKernelView& w, std::ptrdiff_t t,
                                 const ActivationView& a, float* ybuf) noexcept {
  constexpr int kChains = NT >= 8 ? 1 : 8 / NT;  // independent FMA chains per token
  const __m512i map = load_map(w);
  const float* const x = a.x;  // chunk layout: see ActivationView
  const float* const gs = a.gsum;
  const __m512i byte_mask = _mm512_set1_epi32(0xFF);
  for (std::ptrdiff_t g = 0; g < w.groups; ++g) {
    const __m512 s = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(w.scales(t, g))));
    const __m512 z = _mm512_cvtepi32_ps(
        _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w.zeros(t, g)))));
    __m512 acc[NT][kChains];
    for (int n = 0; n < NT; ++n)
      for (int i = 0; i < kChains; ++i) acc[n][i] = _mm512_setzero_ps();
    for (std::ptrdiff_t b = w.group_block_begin[g]; b < w.group_block_begin[g + 1]; ++b) {
      const std::uint8_t* blk = w.block(t, b);
      prefetch_stream_at<Bits>(blk, w.prefetch);
      const RawBlock<Bits> raw = load_block<Bits>(blk);
#pragma GCC unroll 8
      for (int op = 0; op < 8; ++op) {
        const __m512i c = mapped_operand<Bits, false, kMap>(raw, op, map);
        const __m512 wv[4] = {
            _mm512_cvtepi32_ps(_mm512_and_si512(c, byte_mask)),
            _mm512_cvtepi32_ps(_mm512_and_si512(_mm512_srli_epi32(c, 8), byte_mask)),
            _mm512_cvtepi32_ps(_mm512_and_si512(_mm512_srli_epi32(c, 16), byte_mask)),
            _mm512_cvtepi32_ps(_mm512_srli_epi32(c, 24))};
        for (int i = 0; i < 4; ++i) {
          for (int n = 0; n < NT; ++n) {
            __m512& r = acc[n][(4 * op + i) % kChains];
            r = _mm512_fmadd_ps(wv[i], _mm512_set1_ps(x[(b * kBlockCols + 4 * op + i) * NT + n]), r);
          }
        }
      }
    }
    for (int n = 0; n < NT; ++n) {
      __m512 sum = acc[n][0];
      for (int i = 1; i < kChains; ++i) sum = _mm512_add_ps(sum, acc[n][i]);
      const __m512 corr = _mm512_fnmadd_ps(z, _mm512_set1_ps(gs[g * NT + n]), sum);
      _mm512_store_ps(ybuf + 16 * n, _mm512_fmadd_ps(s, corr, _mm512_load_ps(ybuf + 16 * n)));
    }
  }
}

template <int Bits, int NT, bool kVnni, bool kMap>
QTL_TARGET_AVX512VNNI void run_tile(const UniformKernelView& w, std::ptrdiff_t t, const ActivationSet& set,
                                std::ptrdiff_t n0, float* y, std::ptrdiff_t ldy) noexcept {
  const ActivationView a = set.chunk(n0);
  alignas(64) float ybuf[NT * kTileRows];
  for (int i = 0; i < NT; ++i) _mm512_store_ps(ybuf + 16 * i, _mm512_setzero_ps());
  if (a.q != nullptr) {
    tile_int8<Bits, NT, kVnni, kMap>(w, t, a, ybuf);
  } else {
    tile_fp32<Bits, NT, kMap>(w, t, a, ybuf);
  }
  const std::ptrdiff_t row0 = t * kTileRows;
  const std::ptrdiff_t valid = w.rows - row0 < kTileRows ? w.rows - row0 : kTileRows;
  const __mmask16 mask = static_cast<__mmask16>((1u << valid) - 1u);
  for (int n = 0; n < NT; ++n) _mm512_mask_storeu_ps(y + (n0 + n) * ldy + row0, mask, _mm512_load_ps(ybuf + 16 * n));
}

template <int Bits, bool kVnni, bool kMap = false>
QTL_TARGET_AVX512VNNI void run_tiles(const UniformKernelView& w, const ActivationSet& a,
                                 float* y, std::ptrdiff_t ldy, std::ptrdiff_t t0, std::ptrdiff_t t1) noexcept {
  for (std::ptrdiff_t t = t0; t < t1; ++t) {
    for (std::ptrdiff_t n0 = 0; n0 < a.m;) {
      const int width = token_chunk(a.m, n0).width;
      switch (width) {
        case 8: run_tile<Bits, 8, kVnni, kMap>(w, t, a, n0, y, ldy); break;
        case 4: run_tile<Bits, 4, kVnni, kMap>(w, t, a, n0, y, ldy); break;
        case 2: run_tile<Bits, 2, kVnni, kMap>(w, t, a, n0, y, ldy); break;
        default: run_tile<Bits, 1, kVnni, kMap>(w, t, a, n0, y, ldy); break;
      }
      n0 += width;
    }
  }
}

}  // namespace detail_avx512

/// Y[n * ldy + row] for the rows of tiles [t0, t1) and tokens [0, m): AVX-512 (vnni: vpdpbusd,
/// else vpmaddubsw). Requires path_supported(Avx512Vnni) resp. (Avx512).
inline void uniform_tiles_avx512(const UniformKernelView& w, const ActivationSet& a,
                                 float* y, std::ptrdiff_t ldy, std::ptrdiff_t t0, std::ptrdiff_t t1,
                                 bool vnni) noexcept {
  using namespace detail_avx512;
  if (w.code_map != nullptr) {  // the table family's int8 mode (2..4-bit tiles only)
    switch (w.bits * 2 + (vnni ? 1 : 0)) {
      case 4: run_tiles<2, false, true>(w, a, y, ldy, t0, t1); break;
      case 5: run_tiles<2, true, true>(w, a, y, ldy, t0, t1); break;
      case 6: run_tiles<3, false, true>(w, a, y, ldy, t0, t1); break;
      case 7: run_tiles<3, true, true>(w, a, y, ldy, t0, t1); break;
      case 8: run_tiles<4, false, true>(w, a, y, ldy, t0, t1); break;
      case 9: run_tiles<4, true, true>(w, a, y, ldy, t0, t1); break;
      default: break;
    }
    return;
  }
  switch (w.bits * 2 + (vnni ? 1 : 0)) {
    case 4: run_tiles<2, false>(w, a, y, ldy, t0, t1); break;
    case 5: run_tiles<2, true>(w, a, y, ldy, t0, t1); break;
    case 6: run_tiles<3, false>(w, a, y, ldy, t0, t1); break;
    case 7: run_tiles<3, true>(w, a, y, ldy, t0, t1); break;
    case 8: run_tiles<4, false>(w, a, y, ldy, t0, t1); break;
    case 9: run_tiles<4, true>(w, a, y, ldy, t0, t1); break;
    case 10: run_tiles<5, false>(w, a, y, ldy, t0, t1); break;
    case 11: run_tiles<5, true>(w, a, y, ldy, t0, t1); break;
    case 12: run_tiles<6, false>(w, a, y, ldy, t0, t1); break;
    case 13: run_tiles<6, true>(w, a, y, ldy, t0, t1); break;
    case 16: run_tiles<8, false>(w, a, y, ldy, t0, t1); break;
    case 17: run_tiles<8, true>(w, a, y, ldy, t0, t1); break;
    default: break;
  }
}

}  // namespace qtl::kernel

#endif
