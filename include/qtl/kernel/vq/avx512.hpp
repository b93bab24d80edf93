// qtl/kernel/vq/avx512.hpp — AVX-512 path of the vector-codebook lookup kernels.
//
// Layout: qtl/kernel/vq/layout.hpp (64-row tiles, handled as 4 groups of 16 rows, or as one
// zmm of 64 byte indices). Per token the Table strategy builds, one chunk of positions at a
// time, L[j][k] = codebook[k] . x[jD .. jD+D) (16 entries per vfmadd over the coordinate-major
// codebook) and then adds L[j][idx_rj] for every row:
//   8-bit indices, Avx512Vnni path on VBMI CPUs: byte-plane vpermi2b lookups, 64 rows at once
//            (tiles_table_bytes below)
//   <= 8 bits otherwise: the table row in registers, one vpermps (<= 4 bits) or a tree of
//            vpermi2ps + blends (lookup<Bits>), 16 rows at once
//   9..12 bits, or 16 rows of several sets: vgatherdps(L_j, idx + set offset)
// and the Decode strategy adds vgatherdps(cb + d, idx * D + set offset) * broadcast(x[jD + d]).
// Gathers were measured at ~26-39 cycles per zmm on this project's Ice Lake machines (the GDS
// microcode mitigation); the fp32 permute tree of 8-bit indices costs ~12 port-5 uops per 16
// rows and the byte planes ~17 per 64 rows (bench/vq_kernel_matrix_bench.cpp).
// The per-token table is the CPU trick of AQLM's Numba kernel for Kx8 codebooks (Vahe1994/AQLM,
// inference_lib, numba_kernels): a codebook of 2^8 entries makes a table of (positions x 256)
// dot products that is cheap to build and stays in cache; the in-register lookups follow T-MAC's
// (microsoft/T-MAC) table lookups with vpshufb, widened to 128-entry vpermi2b tables of fp32
// byte planes so that the result stays exact. For GEMM one loaded index vector feeds the
// lookups of up to 4 tokens.
//
// The gathers, the Decode strategy and the table building are the loops of
// qtl/kernel/vq/simd_body.inc, which the AVX2 path compiles for ymm; the in-register lookups,
// the byte planes and the E8P byte decoder are this path's own.
//
// The functions carry target attributes (see qtl/kernel/common/cpu_features.hpp): they compile in any
// translation unit and must only be called when path_supported(KernelPath::Avx512) says so
// (and the VBMI functions only when vq_cpu_has_vbmi() too).
#pragma once

#include "qtl/kernel/common/target.hpp"

#if defined(QTL_X86_64)
#define QTL_HAVE_X86_VQ_KERNELS 1

#include <immintrin.h>

#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <utility>

#include "qtl/kernel/common/prefetch.hpp"
#include "qtl/kernel/vq/layout.hpp"
#include "qtl/quant/e8p_grid.hpp"


namespace qtl::kernel {
namespace detail_vq_avx512 {

#define QTL_VQ_WIDTH 512
#include "qtl/kernel/vq/simd_body.inc"  // undefines QTL_VQ_WIDTH

/// Entry v of the table row L (Kp = max(2^Bits, 16) floats) in every lane, from registers:
/// one vpermps (Bits <= 4) or 2^(Bits-5) vpermi2ps over 32-entry slices, then a blend tree on
/// index bits 5, 6, 7. Port-5 bound (~12 uops of p5 for 8 bits): several times the throughput of
/// vgatherdps on CPUs whose gathers run under the GDS ("Downfall") microcode mitigation.
template <int Bits>
QTL_TARGET_AVX512 inline __attribute__((always_inline)) __m512 lookup(const float* L, __m512i v) noexcept {
  if constexpr (Bits <= 4) {
    return _mm512_permutexvar_ps(v, _mm512_loadu_ps(L));
  } else {
    constexpr int kSlices = 1 << (Bits - 5);
    __m512 r[kSlices];
    #pragma GCC unroll 16
    for (int i = 0; i < kSlices; ++i) {
      r[i] = _mm512_permutex2var_ps(_mm512_loadu_ps(L + 32 * i), v, _mm512_loadu_ps(L + 32 * i + 16));
    }
#pragma GCC unroll 4
    for (int level = 0; level < Bits - 5; ++level) {  // index bit 5 + level halves the candidates
      const int n = kSlices >> level;
      const __mmask16 m = _mm512_test_epi32_mask(v, _mm512_set1_epi32(1 << (5 + level)));
      #pragma GCC unroll 16
      for (int i = 0; i < n / 2; ++i) r[i] = _mm512_mask_blend_ps(m, r[2 * i], r[2 * i + 1]);
    }
    return r[0];
  }
}

/// Table lookups with 8-bit or narrower indices: row groups whose 16 rows share one set use
/// lookup<Bits> (one table row for all lanes), groups straddling sets use the gathers.
template <int NT, int Bits>
QTL_TARGET_AVX512 void tiles_table_perm(const VQKernelView& w, const VQChunkTask& k, std::ptrdiff_t t0,
                                        std::ptrdiff_t t1) noexcept {
  const std::ptrdiff_t len = w.chunk_len(k.c), Kp = w.Kp;
  const std::uint8_t* idx = w.idx8 + w.chunk_offset(k.c);
  for (std::ptrdiff_t t = t0; t < t1; ++t) {
    for (int h = 0; h < kGroups; ++h) {
      const std::uint8_t* ip = idx + t * len * kVQTileRows + kLanes * h;
      const std::int32_t* ls = w.lane_set + t * kVQTileRows + kLanes * h;
      __m512 a0[NT], a1[NT];
      #pragma GCC unroll 16
      for (int n = 0; n < NT; ++n) a0[n] = a1[n] = _mm512_setzero_ps();
      const float* tab[NT];
      if (ls[0] == ls[kLanes - 1]) {
        #pragma GCC unroll 16
        for (int n = 0; n < NT; ++n) tab[n] = k.table + (n * k.nsets + ls[0] - k.s0) * len * Kp;
        std::ptrdiff_t jj = 0;
        for (; jj + 1 < len; jj += 2) {
          if (h == 0) prefetch_stream<2>(ip + jj * kVQTileRows);
          const __m512i v0 = load_idx(ip + jj * kVQTileRows);
          const __m512i v1 = load_idx(ip + (jj + 1) * kVQTileRows);
          #pragma GCC unroll 16
          for (int n = 0; n < NT; ++n) {
            a0[n] = _mm512_add_ps(a0[n], lookup<Bits>(tab[n] + jj * Kp, v0));
            a1[n] = _mm512_add_ps(a1[n], lookup<Bits>(tab[n] + (jj + 1) * Kp, v1));
          }
        }
        if (jj < len) {
          const __m512i v0 = load_idx(ip + jj * kVQTileRows);
          #pragma GCC unroll 16
          for (int n = 0; n < NT; ++n) a0[n] = _mm512_add_ps(a0[n], lookup<Bits>(tab[n] + jj * Kp, v0));
        }
      } else {
        #pragma GCC unroll 16
        for (int n = 0; n < NT; ++n) tab[n] = k.table + n * k.nsets * len * Kp;
        gather_lookups<NT>(ip, len, Kp, set_offsets(ls, static_cast<std::int32_t>(k.s0), static_cast<int>(len * Kp)),
                           tab, a0, a1);
      }
      finish<NT>(k, t, h, a0, a1);
    }
  }
}

}  // namespace detail_vq_avx512

/// Lookup tables of chunk k.c (see vq_build_table_portable), 16 entries per instruction.
QTL_TARGET_AVX512 inline void vq_build_table_avx512(const VQKernelView& w, const VQChunkTask& k, float* table) noexcept {
  detail_vq_avx512::build_table(w, k, table);
}

inline void vq_tiles_table_avx512(const VQKernelView& w, const VQChunkTask& k, std::ptrdiff_t t0, std::ptrdiff_t t1) noexcept {
  using namespace detail_vq_avx512;
  with_tokens(k.nt, [&](auto nt) {
    constexpr int NT = decltype(nt)::value;
    switch (w.bits) {
      case 1: case 2: case 3: case 4: tiles_table_perm<NT, 4>(w, k, t0, t1); break;
      case 5: tiles_table_perm<NT, 5>(w, k, t0, t1); break;
      case 6: tiles_table_perm<NT, 6>(w, k, t0, t1); break;
      case 7: tiles_table_perm<NT, 7>(w, k, t0, t1); break;
      case 8: tiles_table_perm<NT, 8>(w, k, t0, t1); break;
      default: tiles_table<NT, std::uint16_t>(w, k, t0, t1); break;
    }
  });
}

/// Decode strategy (see vq_tiles_decode_portable).
inline void vq_tiles_decode_avx512(const VQKernelView& w, const VQChunkTask& k, std::ptrdiff_t t0, std::ptrdiff_t t1) noexcept {
  detail_vq_avx512::tiles_decode_any(w, k, t0, t1);
}

// ---- byte-plane lookups for 8-bit indices (AVX512_VBMI) -------------------------------------
//
// A 256-entry fp32 table row split into its 4 byte planes (plane b = byte b of every entry,
// 256 bytes) is looked up for 64 rows at once: per plane two vpermi2b over 128 entries and a
// byte blend on index bit 7, then vpunpck{l,h}bw / vpunpck{l,h}wd reassemble the 4 bytes of
// each entry into 4 zmm of 16 fp32 values: exact, ~16 port-5 uops per 64 rows instead of ~48
// for four fp32 permute trees (lookup<8>). The unpacks work within 128-bit blocks, so
// accumulator k, block L holds rows 16 L + 4 k .. 16 L + 4 k + 3; the accumulators are summed
// in that order and transposed (8 vshuff32x4) once per tile and token. Tables are built in this
// plane format (vq_build_table_avx512vbmi).


/// Whether the CPU has AVX512_VBMI (detected once).
[[nodiscard]] inline bool vq_cpu_has_vbmi() noexcept {
  static const bool v = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512vbmi") != 0;
  }();
  return v;
}

namespace detail_vq_avx512 {

// Byte 16 b + i of the result = byte b of fp32 entry i (plane-major within the register).
QTL_TARGET_AVX512VBMI inline __m512i plane_order() noexcept {
  alignas(64) std::uint8_t o[64];
  #pragma GCC unroll 16
  for (int b = 0; b < 4; ++b) {
    for (int i = 0; i < 16; ++i) o[16 * b + i] = static_cast<std::uint8_t>(4 * i + b);
  }
  return _mm512_load_si512(o);
}

// Byte plane P (256 bytes) at the 64 indices v: two 128-entry vpermi2b, blended on bit 7.
QTL_TARGET_AVX512VBMI inline __attribute__((always_inline)) __m512i plane(const std::uint8_t* P, __m512i v,
                                                                           __mmask64 hi) noexcept {
  const __m512i lo = _mm512_permutex2var_epi8(_mm512_loadu_si512(P), v, _mm512_loadu_si512(P + 64));
  const __m512i up = _mm512_permutex2var_epi8(_mm512_loadu_si512(P + 128), v, _mm512_loadu_si512(P + 192));
  return _mm512_mask_blend_epi8(hi, lo, up);
}

QTL_TARGET_AVX512VBMI inline __attribute__((always_inline)) void lookup_bytes(const std::uint8_t* T, __m512i v,
                                                                                 __mmask64 hi, __m512* acc) noexcept {
  const __m512i r0 = plane(T, v, hi), r1 = plane(T + 256, v, hi), r2 = plane(T + 512, v, hi), r3 = plane(T + 768, v, hi);
  const __m512i w01l = _mm512_unpacklo_epi8(r0, r1), w01h = _mm512_unpackhi_epi8(r0, r1);
  const __m512i w23l = _mm512_unpacklo_epi8(r2, r3), w23h = _mm512_unpackhi_epi8(r2, r3);
  acc[0] = _mm512_add_ps(acc[0], _mm512_castsi512_ps(_mm512_unpacklo_epi16(w01l, w23l)));
  acc[1] = _mm512_add_ps(acc[1], _mm512_castsi512_ps(_mm512_unpackhi_epi16(w01l, w23l)));
  acc[2] = _mm512_add_ps(acc[2], _mm512_castsi512_ps(_mm512_unpacklo_epi16(w01h, w23h)));
  acc[3] = _mm512_add_ps(acc[3], _mm512_castsi512_ps(_mm512_unpackhi_epi16(w01h, w23h)));
}

QTL_TARGET_AVX512VBMI inline void tiles_table_bytes(const VQKernelView& w, const VQChunkTask& k, std::ptrdiff_t t0,
                                                       std::ptrdiff_t t1) noexcept {
  static_assert(kVQTileRows == 64, "the byte-plane lookups handle 64-row tiles");
  const std::ptrdiff_t len = w.chunk_len(k.c), Kp = w.Kp;
  const std::uint8_t* idx = w.idx8 + w.chunk_offset(k.c);
  for (std::ptrdiff_t t = t0; t < t1; ++t) {
    const std::int32_t* ls = w.lane_set + t * kVQTileRows;
    if (ls[0] != ls[kVQTileRows - 1]) {  // rows of several sets: one table row does not serve all lanes
      vq_tiles_decode_avx512(w, k, t, t + 1);
      continue;
    }
    const std::uint8_t* ip = idx + t * len * kVQTileRows;
    for (int n = 0; n < k.nt; ++n) {
      const float* tab = k.table + (n * k.nsets + ls[0] - k.s0) * len * Kp;
      __m512 a0[4], a1[4];
      #pragma GCC unroll 16
      for (int i = 0; i < 4; ++i) a0[i] = a1[i] = _mm512_setzero_ps();
      std::ptrdiff_t jj = 0;
      for (; jj + 1 < len; jj += 2) {
        prefetch_stream<2>(ip + jj * kVQTileRows);
        const __m512i v0 = _mm512_loadu_si512(ip + jj * kVQTileRows);
        lookup_bytes(reinterpret_cast<const std::uint8_t*>(tab + jj * Kp), v0, _mm512_movepi8_mask(v0), a0);
        const __m512i v1 = _mm512_loadu_si512(ip + (jj + 1) * kVQTileRows);
        lookup_bytes(reinterpret_cast<const std::uint8_t*>(tab + (jj + 1) * Kp), v1, _mm512_movepi8_mask(v1), a1);
      }
      if (jj < len) {
        const __m512i v0 = _mm512_loadu_si512(ip + jj * kVQTileRows);
        lookup_bytes(reinterpret_cast<const std::uint8_t*>(tab + jj * Kp), v0, _mm512_movepi8_mask(v0), a0);
      }
      // accumulator i, 128-bit block L holds rows 16 L + 4 i .. +3: transpose the 4 x 4 blocks
      __m512 d[4];
      #pragma GCC unroll 16
      for (int i = 0; i < 4; ++i) d[i] = _mm512_add_ps(a0[i], a1[i]);
      const __m512 u0 = _mm512_shuffle_f32x4(d[0], d[1], 0x44), u1 = _mm512_shuffle_f32x4(d[0], d[1], 0xEE);
      const __m512 u2 = _mm512_shuffle_f32x4(d[2], d[3], 0x44), u3 = _mm512_shuffle_f32x4(d[2], d[3], 0xEE);
      const __m512 rows[4] = {_mm512_shuffle_f32x4(u0, u2, 0x88), _mm512_shuffle_f32x4(u0, u2, 0xDD),
                              _mm512_shuffle_f32x4(u1, u3, 0x88), _mm512_shuffle_f32x4(u1, u3, 0xDD)};
      #pragma GCC unroll 16
      for (int i = 0; i < 4; ++i) {
        float* p = k.acc + (t * kVQMaxTokens + n) * kVQTileRows + 16 * i;
        _mm512_storeu_ps(p, k.first ? rows[i] : _mm512_add_ps(_mm512_loadu_ps(p), rows[i]));
      }
    }
  }
}

// ---- E8P decoded to int8 for 64 rows at once (AVX512_VBMI) -----------------------------------
//
// Every E8P weight is s/4 times an odd integer: 4 c_d = sigma_d 4 a_d + 4 t with 4 a_d in
// {2, 6, 10} and 4 t = +-1, so q_d = 4 c_d lies in [-11, 11] and is exact in int8. Per position
// the 64 rows' indices are split into their grid bytes g and sign/shift bytes h (two vpermi2b);
// per coordinate d the magnitude 4 a_d comes from a 256-byte plane by the same two-vpermi2b
// lookup as the VQ byte planes, is negated under the sign mask (bit d-1 of h; coordinate 0:
// the parity of h's 7 sign bits from a 128-byte vpermi2b table, the grid's own parity folded
// into plane 0) and gets the shift added; 16-row quarters are widened to fp32 and multiplied
// with x[8 j + d] by FMA, one chain per (16 rows, token) as in the decode kernels. The row's
// scale times 1/4 is applied once per chunk: s * (q / 4) is the weight the reference rounds,
// so the result meets the Decode bound of vq/kernel_matrix.hpp (+1 rounding for the product,
// inside the tests' margin). ~6 instructions per coordinate to decode 64 weights, against ~12
// per 8 weights for the codeword-at-a-time decoder (vq_tiles_e8p_avx2).

/// Byte tables of the E8P decoder: plane d = 4 |grid[g][d]| for every grid entry g, plane 0
/// negated where the grid entry's coordinate sum is odd; odd[i] = 0x80 iff popcount(i) is odd.
struct E8PByteTables {
  alignas(64) std::int8_t mag[8][256];
  alignas(64) std::uint8_t odd[128];
};

inline const E8PByteTables& e8p_byte_tables() {
  static const E8PByteTables tables = [] {
    E8PByteTables t{};
    const auto& grid = kE8PGrid.abs;
    const auto& parity = kE8PGrid.parity;
    for (std::size_t g = 0; g < 256; ++g) {
      for (std::size_t d = 0; d < 8; ++d) {
        const auto m = static_cast<int>(4.0f * grid[g * 8 + d]);  // 2, 6 or 10, exact
        t.mag[d][g] = static_cast<std::int8_t>(d == 0 && parity[g] != 0 ? -m : m);
      }
    }
    for (unsigned i = 0; i < 128; ++i) t.odd[i] = std::popcount(i) % 2 != 0 ? 0x80 : 0x00;
    return t;
  }();
  return tables;
}

template <int K>
QTL_TARGET_AVX512VBMI inline __attribute__((always_inline)) __m512 e8p_quarter(__m512i q) noexcept {
  return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm512_extracti32x4_epi32(q, K)));
}

template <int NT, int K>
QTL_TARGET_AVX512VBMI inline __attribute__((always_inline)) void e8p_fma(__m512i q, const float* const* xs,
                                                                            std::ptrdiff_t e, __m512 (*acc)[4]) noexcept {
  const __m512 wf = e8p_quarter<K>(q);
  #pragma GCC unroll 4
  for (int n = 0; n < NT; ++n) acc[n][K] = _mm512_fmadd_ps(wf, _mm512_set1_ps(xs[n][e]), acc[n][K]);
}

/// One position of a tile: its 64 rows' indices split into grid bytes and sign/shift bytes
/// (sel_g / sel_h pick each row's low / high byte, in the order the kernel wants its rows), the
/// masks derived from them, and the shift bytes (`down` where bit 15 is clear, else `up`).
struct E8PPosition {
  __m512i g, h, shift;
  __mmask64 g_hi, neg0;
};

QTL_TARGET_AVX512VBMI inline __attribute__((always_inline)) E8PPosition e8p_position(
    const std::uint16_t* ip, __m512i sel_g, __m512i sel_h, __m512i odd_lo, __m512i odd_hi, __m512i down,
    __m512i up) noexcept {
  const __m512i a = _mm512_loadu_si512(ip), b = _mm512_loadu_si512(ip + 32);
  E8PPosition p;
  p.g = _mm512_permutex2var_epi8(a, sel_g, b);
  p.h = _mm512_permutex2var_epi8(a, sel_h, b);
  p.g_hi = _mm512_movepi8_mask(p.g);
  p.neg0 = _mm512_movepi8_mask(_mm512_permutex2var_epi8(odd_lo, p.h, odd_hi));  // bit 7 of h unused
  p.shift = _mm512_mask_blend_epi8(_mm512_movepi8_mask(p.h), down, up);
  return p;
}

/// Coordinate d of the position's 64 codewords: +-4 |grid| + shift bytes.
template <int D>
QTL_TARGET_AVX512VBMI inline __attribute__((always_inline)) __m512i e8p_coordinate(const E8PByteTables& T,
                                                                                   const E8PPosition& p) noexcept {
  const std::int8_t* P = T.mag[D];
  const __m512i lo = _mm512_permutex2var_epi8(_mm512_load_si512(P), p.g, _mm512_load_si512(P + 64));
  const __m512i up = _mm512_permutex2var_epi8(_mm512_load_si512(P + 128), p.g, _mm512_load_si512(P + 192));
  constexpr int kSignBit = D > 0 ? D - 1 : 0;  // coordinate d >= 1: bit d - 1 of h
  const __mmask64 neg = D == 0 ? p.neg0 : _mm512_test_epi8_mask(p.h, _mm512_set1_epi8(static_cast<char>(1 << kSignBit)));
  const __m512i m = _mm512_mask_blend_epi8(p.g_hi, lo, up);
  return _mm512_add_epi8(_mm512_mask_sub_epi8(m, neg, _mm512_setzero_si512(), m), p.shift);
}

/// The tile's partial sums: (acc - corr_n) * scale / 4 per row, stored or added (kCorr false:
/// no subtraction).
template <int NT, bool kCorr>
QTL_TARGET_AVX512VBMI inline __attribute__((always_inline)) void e8p_finish(const VQKernelView& w, const VQChunkTask& k,
                                                                           std::ptrdiff_t t, const __m512 (*acc)[4],
                                                                           const float* corr) noexcept {
  #pragma GCC unroll 4
  for (int q = 0; q < 4; ++q) {
    const __m512i ls = _mm512_loadu_si512(w.lane_set + t * kVQTileRows + 16 * q);
    const __m512 sc = _mm512_mul_ps(_mm512_i32gather_ps(ls, w.e8p_scale, 4), _mm512_set1_ps(0.25f));
    #pragma GCC unroll 4
    for (int n = 0; n < NT; ++n) {
      float* p = k.acc + (t * kVQMaxTokens + n) * kVQTileRows + 16 * q;
      const __m512 a = kCorr ? _mm512_sub_ps(acc[n][q], _mm512_set1_ps(corr[n])) : acc[n][q];
      const __m512 r = _mm512_mul_ps(a, sc);
      _mm512_storeu_ps(p, k.first ? r : _mm512_add_ps(_mm512_loadu_ps(p), r));
    }
  }
}

// The 8 coordinates of a position, unrolled at compile time (e8p_coordinate takes d as a
// template argument). Target-attributed functions, not a lambda: a lambda does not inherit its
// enclosing function's target attribute, so without -march=native GCC and clang refuse to inline
// the AVX-512 helpers into it (CI's Release stage, scripts/test.sh, builds without it).

/// u[d] = e8p_coordinate<d>(T, pos) for d = 0 .. 7.
template <int... D>
QTL_TARGET_AVX512VBMI inline __attribute__((always_inline)) void e8p_coordinates(
    const E8PByteTables& T, const E8PPosition& pos, __m512i* u, std::integer_sequence<int, D...>) noexcept {
  ((u[D] = e8p_coordinate<D>(T, pos)), ...);
}

/// Coordinate D of position jj decoded (4 c_d, in [-11, 11]) and multiplied into the fp32 sums.
template <int D, int NT>
QTL_TARGET_AVX512VBMI inline __attribute__((always_inline)) void e8p_coordinate_fma(
    const E8PByteTables& T, const E8PPosition& pos, const float* const* xs, std::ptrdiff_t jj,
    __m512 (&acc)[NT][4]) noexcept {
  const __m512i q = e8p_coordinate<D>(T, pos);
  const std::ptrdiff_t e = jj * 8 + D;
  e8p_fma<NT, 0>(q, xs, e, acc);
  e8p_fma<NT, 1>(q, xs, e, acc);
  e8p_fma<NT, 2>(q, xs, e, acc);
  e8p_fma<NT, 3>(q, xs, e, acc);
}

/// e8p_coordinate_fma for D = 0 .. 7.
template <int NT, int... D>
QTL_TARGET_AVX512VBMI inline __attribute__((always_inline)) void e8p_position_fma(
    const E8PByteTables& T, const E8PPosition& pos, const float* const* xs, std::ptrdiff_t jj, __m512 (&acc)[NT][4],
    std::integer_sequence<int, D...>) noexcept {
  (e8p_coordinate_fma<D, NT>(T, pos, xs, jj, acc), ...);
}

template <int NT>
QTL_TARGET_AVX512VBMI void tiles_e8p_bytes(const VQKernelView& w, const VQChunkTask& k, std::ptrdiff_t t0,
                                              std::ptrdiff_t t1) noexcept {
  const E8PByteTables& T = e8p_byte_tables();
  const std::ptrdiff_t len = w.chunk_len(k.c);
  alignas(64) std::uint8_t sel[2][64];
  for (int i = 0; i < 64; ++i) {
    sel[0][i] = static_cast<std::uint8_t>(2 * i);      // low byte of index i: the grid entry
    sel[1][i] = static_cast<std::uint8_t>(2 * i + 1);  // high byte: 7 sign bits, shift bit
  }
  const __m512i sel_g = _mm512_load_si512(sel[0]), sel_h = _mm512_load_si512(sel[1]);
  const __m512i odd_lo = _mm512_load_si512(T.odd), odd_hi = _mm512_load_si512(T.odd + 64);
  const __m512i plus1 = _mm512_set1_epi8(1), minus1 = _mm512_set1_epi8(-1);
  const float* xs[NT];
  #pragma GCC unroll 4
  for (int n = 0; n < NT; ++n) xs[n] = k.x + n * k.ldx + k.c * w.chunk * 8;
  for (std::ptrdiff_t t = t0; t < t1; ++t) {
    const std::uint16_t* idx = w.idx16 + w.chunk_offset(k.c) + t * len * kVQTileRows;
    __m512 acc[NT][4];
    #pragma GCC unroll 4
    for (int n = 0; n < NT; ++n) acc[n][0] = acc[n][1] = acc[n][2] = acc[n][3] = _mm512_setzero_ps();
    for (std::ptrdiff_t jj = 0; jj < len; ++jj) {
      const std::uint16_t* ip = idx + jj * kVQTileRows;
      prefetch_stream<2>(ip);
      const E8PPosition pos = e8p_position(ip, sel_g, sel_h, odd_lo, odd_hi, minus1, plus1);
      e8p_position_fma<NT>(T, pos, xs, jj, acc, std::make_integer_sequence<int, 8>{});
    }
    e8p_finish<NT, false>(w, k, t, acc, nullptr);
  }
}

// ---- E8P with int8 activations (AVX512_VBMI + AVX512_VNNI) ----------------------------------
//
// The same byte-plane decoder, with the shift bytes offset by kE8PInt8Offset so each coordinate
// comes out as u = 4 c + 11 in [0, 22]; then the 8 coordinate vectors (byte lane = row) are
// transposed by 12 unpacks into 8 vectors of 16 rows x 4 consecutive coordinates (dword lane =
// row), the operand layout of vpdpbusd against 4 activation codes broadcast: 8 vpdpbusd per
// position and token for 64 rows, against 32 widenings and 32 FMAs in the fp32 kernel above.
// The unpacks work inside 128-bit lanes, so rows come out interleaved; the index split takes the
// rows in the order that makes them come out in order (e8p_int8_selectors). Block sums are exact
// int32, scaled as vq_tiles_e8p_int8_scalar does (same operations and order, same bits).

/// Byte position p = 16 L + 4 Q + i of the decoded vectors holds row 16 Q + 4 L + i: after
/// unpacklo/hi_epi8 and unpacklo/hi_epi16 the dword lane 4 L + i of quad vector Q is that row.
inline const std::uint8_t (&e8p_int8_selectors())[2][64] {
  static const auto sel = [] {
    struct S { alignas(64) std::uint8_t v[2][64]; } r{};
    for (int p = 0; p < 64; ++p) {
      const int L = p / 16, Q = p % 16 / 4, i = p % 4, row = 16 * Q + 4 * L + i;
      r.v[0][p] = static_cast<std::uint8_t>(2 * row);      // low byte of the row's index: grid entry
      r.v[1][p] = static_cast<std::uint8_t>(2 * row + 1);  // high byte: 7 sign bits, shift bit
    }
    return r;
  }();
  return sel.v;
}

template <int NT>
QTL_TARGET_AVX512VNNI_VBMI void tiles_e8p_int8(const VQKernelView& w, const VQChunkTask& k, std::ptrdiff_t t0,
                                               std::ptrdiff_t t1) noexcept {
  const E8PByteTables& T = e8p_byte_tables();
  const std::ptrdiff_t len = w.chunk_len(k.c), p0 = k.c * w.chunk;
  const auto& sel = e8p_int8_selectors();
  const __m512i sel_g = _mm512_load_si512(sel[0]), sel_h = _mm512_load_si512(sel[1]);
  const __m512i odd_lo = _mm512_load_si512(T.odd), odd_hi = _mm512_load_si512(T.odd + 64);
  const __m512i up1 = _mm512_set1_epi8(kE8PInt8Offset + 1), down1 = _mm512_set1_epi8(kE8PInt8Offset - 1);
  const __m512i zero = _mm512_setzero_si512();
  const std::int8_t* xq[NT];
  const float* xd[NT];
  float corr[NT];
  #pragma GCC unroll 4
  for (int n = 0; n < NT; ++n) {
    xq[n] = k.q8 + n * k.ldq + p0 * 8;
    xd[n] = k.d8 + n * k.ldd + p0 / 4;
    corr[n] = k.corr8[n * w.chunks + k.c];
  }
  for (std::ptrdiff_t t = t0; t < t1; ++t) {
    const std::uint16_t* idx = w.idx16 + w.chunk_offset(k.c) + t * len * kVQTileRows;
    __m512 accf[NT][4];
    #pragma GCC unroll 4
    for (int n = 0; n < NT; ++n) accf[n][0] = accf[n][1] = accf[n][2] = accf[n][3] = _mm512_setzero_ps();
    for (std::ptrdiff_t jb = 0; jb < len; jb += 4) {
      __m512i acci[NT][4];
      #pragma GCC unroll 4
      for (int n = 0; n < NT; ++n) acci[n][0] = acci[n][1] = acci[n][2] = acci[n][3] = zero;
      const std::ptrdiff_t jend = jb + 4 < len ? jb + 4 : len;
      for (std::ptrdiff_t jj = jb; jj < jend; ++jj) {
        const std::uint16_t* ip = idx + jj * kVQTileRows;
        prefetch_stream<2>(ip);
        const E8PPosition pos = e8p_position(ip, sel_g, sel_h, odd_lo, odd_hi, down1, up1);
        __m512i u[8];
        e8p_coordinates(T, pos, u, std::make_integer_sequence<int, 8>{});  // 4 c_d + 11, in [0, 22]
        __m512i quad[2][4];  // [coordinates 0-3 / 4-7][rows 16 Q .. 16 Q + 15]
        #pragma GCC unroll 2
        for (int half = 0; half < 2; ++half) {
          const __m512i* v = u + 4 * half;
          const __m512i p01l = _mm512_unpacklo_epi8(v[0], v[1]), p01h = _mm512_unpackhi_epi8(v[0], v[1]);
          const __m512i p23l = _mm512_unpacklo_epi8(v[2], v[3]), p23h = _mm512_unpackhi_epi8(v[2], v[3]);
          quad[half][0] = _mm512_unpacklo_epi16(p01l, p23l);
          quad[half][1] = _mm512_unpackhi_epi16(p01l, p23l);
          quad[half][2] = _mm512_unpacklo_epi16(p01h, p23h);
          quad[half][3] = _mm512_unpackhi_epi16(p01h, p23h);
        }
        #pragma GCC unroll 4
        for (int n = 0; n < NT; ++n) {
          std::int32_t x0, x1;
          std::memcpy(&x0, xq[n] + jj * 8, 4);
          std::memcpy(&x1, xq[n] + jj * 8 + 4, 4);
          const __m512i a0 = _mm512_set1_epi32(x0), a1 = _mm512_set1_epi32(x1);
          #pragma GCC unroll 4
          for (int q = 0; q < 4; ++q) {
            acci[n][q] = _mm512_dpbusd_epi32(acci[n][q], quad[0][q], a0);
            acci[n][q] = _mm512_dpbusd_epi32(acci[n][q], quad[1][q], a1);
          }
        }
      }
      #pragma GCC unroll 4
      for (int n = 0; n < NT; ++n) {
        const __m512 db = _mm512_set1_ps(xd[n][jb / 4]);
        #pragma GCC unroll 4
        for (int q = 0; q < 4; ++q) accf[n][q] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(acci[n][q]), db, accf[n][q]);
      }
    }
    e8p_finish<NT, true>(w, k, t, accf, corr);
  }
}

}  // namespace detail_vq_avx512

/// E8P with int8 activations on the decoder above (requires vq_cpu_has_vbmi() and AVX512_VNNI).
inline void vq_tiles_e8p_int8_avx512vbmi(const VQKernelView& w, const VQChunkTask& k, std::ptrdiff_t t0,
                                         std::ptrdiff_t t1) noexcept {
  detail_vq_avx512::with_tokens(k.nt, [&](auto nt) { detail_vq_avx512::tiles_e8p_int8<decltype(nt)::value>(w, k, t0, t1); });
}

/// E8P on the byte-plane decoder above (requires vq_cpu_has_vbmi()).
inline void vq_tiles_e8p_avx512vbmi(const VQKernelView& w, const VQChunkTask& k, std::ptrdiff_t t0, std::ptrdiff_t t1) noexcept {
  detail_vq_avx512::with_tokens(k.nt, [&](auto nt) { detail_vq_avx512::tiles_e8p_bytes<decltype(nt)::value>(w, k, t0, t1); });
}

/// Tables as vq_build_table_avx512, but for 8-bit indices each table row (256 fp32 = 1 KiB) is
/// stored as 4 byte planes of 256 bytes (see lookup_bytes).
QTL_TARGET_AVX512VBMI inline void vq_build_table_avx512vbmi(const VQKernelView& w, const VQChunkTask& k, float* table) noexcept {
  if (w.bits != 8) {
    vq_build_table_avx512(w, k, table);
    return;
  }
  const std::ptrdiff_t len = w.chunk_len(k.c), Kp = w.Kp, D = w.dim;
  const __m512i order = detail_vq_avx512::plane_order();
  for (int n = 0; n < k.nt; ++n) {
    for (std::ptrdiff_t s = 0; s < k.nsets; ++s) {
      const float* cbt = w.cbt + (k.s0 + s) * D * Kp;
      for (std::ptrdiff_t jj = 0; jj < len; ++jj) {
        const float* xs = k.x + n * k.ldx + (k.c * w.chunk + jj) * D;
        auto* out = reinterpret_cast<std::uint8_t*>(table + ((n * k.nsets + s) * len + jj) * Kp);
        for (std::ptrdiff_t e = 0; e < Kp; e += 16) {
          __m512 v = _mm512_mul_ps(_mm512_loadu_ps(cbt + e), _mm512_set1_ps(xs[0]));
          for (std::ptrdiff_t d = 1; d < D; ++d) v = _mm512_fmadd_ps(_mm512_loadu_ps(cbt + d * Kp + e), _mm512_set1_ps(xs[d]), v);
          const __m512i z = _mm512_permutexvar_epi8(order, _mm512_castps_si512(v));
          _mm_storeu_si128(reinterpret_cast<__m128i*>(out + e), _mm512_castsi512_si128(z));
          _mm_storeu_si128(reinterpret_cast<__m128i*>(out + 256 + e), _mm512_extracti32x4_epi32(z, 1));
          _mm_storeu_si128(reinterpret_cast<__m128i*>(out + 512 + e), _mm512_extracti32x4_epi32(z, 2));
          _mm_storeu_si128(reinterpret_cast<__m128i*>(out + 768 + e), _mm512_extracti32x4_epi32(z, 3));
        }
      }
    }
  }
}

inline void vq_tiles_table_avx512vbmi(const VQKernelView& w, const VQChunkTask& k, std::ptrdiff_t t0, std::ptrdiff_t t1) noexcept {
  if (w.bits != 8) {
    vq_tiles_table_avx512(w, k, t0, t1);
  } else {
    detail_vq_avx512::tiles_table_bytes(w, k, t0, t1);
  }
}

}  // namespace qtl::kernel

#endif
