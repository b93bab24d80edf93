// qtl/kernel/uniform/portable.hpp — the portable path of the uniform kernels, over xsimd batches.
//
// Same layout and the same arithmetic as the x86 paths (qtl/kernel/uniform/layout.hpp):
//   Int8:  G_rg = sum_{b in g} d_b * float(S_rb),  S_rb = sum_c q_rc a_c exactly in int32,
//          y_r += s_rg * (G_rg - z_rg * gsum_g)
//   Fp32:  G_rg = sum_{c in g} float(q_rc) * x_c,   y_r += s_rg * (G_rg - z_rg * gsum_g)
// With a code map (uniform/layout.hpp) q_rc is code_map[code]. Written once over
// xsimd::batch<T, PortableArch> (qtl/kernel/common/portable_simd.hpp): vector code on every CPU
// the program was compiled for (SSE2 on baseline x86-64, NEON on AArch64), no CPU check.
//
// One 32-bit lane = one row: an operand's lane r holds that row's 4 codes of columns 4t..4t+3,
// so a batch of L int32 lanes covers L rows and a 16-row operand takes 16 / L batches. The int8
// product splits the 4 codes into the even and odd bytes of each lane (int16 lanes, codes up to
// 255) and the 4 int8 activations likewise, and adds two madd_i16 (int16 pairs -> int32):
//   S_lane += q0 a0 + q2 a2  +  q1 a1 + q3 a3,   each product |q a| <= 255 * 127,
// exact in int32 for every code width and for mapped codes. uniform_tiles_scalar is the same
// computation one value at a time: the baseline the benchmark compares with.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "qtl/detail/fp16.hpp"
#include "qtl/kernel/common/portable_simd.hpp"
#include "qtl/kernel/common/prefetch.hpp"
#include "qtl/kernel/common/separate.hpp"
#include "qtl/kernel/uniform/layout.hpp"
#include "qtl/kernel/uniform/quantize_activations.hpp"

namespace qtl::kernel {

namespace detail_portable {

using namespace portable_batches;

/// Rows per batch (int32 lanes) and batches per 16-row operand.
inline constexpr int kLanes = static_cast<int>(U32::size);
inline constexpr int kVecs = kTileRows / kLanes;
static_assert(kTileRows % kLanes == 0, "a batch must hold a divisor of the 16 tile rows");

/// The codes of operand t (columns 4t..4t+3) of the rows of `rows` (the block + 4 * kLanes * v),
/// one byte each, as in layout.hpp's bit order; through the code map when kMap.
template <int Bits, bool kMap>
inline U32 operand(const std::uint8_t* rows, int t, const U8& map) noexcept {
  U32 c;
  if constexpr (Bits == 8) {
    c = load_u32(rows + 64 * t);
  } else if constexpr (Bits == 4) {
    const U32 v = load_u32(rows + 64 * (t % 4));
    c = (t < 4 ? v : v >> 4) & U32(0x0F0F0F0Fu);
  } else if constexpr (Bits == 5 || Bits == 6) {
    const U32 v = load_u32(rows + 64 * (t % 4));
    const U32 lo = (t < 4 ? v : v >> 4) & U32(0x0F0F0F0Fu);
    const U32 hi = Bits == 5 ? (load_u32(rows + 256) >> t) & U32(0x01010101u)
                             : (load_u32(rows + 256 + 64 * (t % 2)) >> (2 * (t / 2))) & U32(0x03030303u);
    c = lo | (hi << 4);  // hi <= 3 per byte: no carry across bytes
  } else if constexpr (Bits == 2) {
    c = (load_u32(rows + 64 * (t % 2)) >> (2 * (t / 2))) & U32(0x03030303u);
  } else {
    static_assert(Bits == 3);
    const U32 lo = (load_u32(rows + 64 * (t % 2)) >> (2 * (t / 2))) & U32(0x03030303u);
    const U32 hi = (load_u32(rows + 128) >> t) & U32(0x01010101u);
    c = lo | (hi << 2);  // hi <= 1 per byte: no carry across bytes
  }
  if constexpr (kMap) return xsimd::bitwise_cast<U32>(lookup16(map, xsimd::bitwise_cast<U8>(c)));
  (void)map;
  return c;
}

/// Scale and zero point of the kLanes rows of batch v, group g, as floats.
inline void load_params(const std::uint16_t* scale, const std::uint8_t* zero, int v, F32& s, F32& z) noexcept {
  alignas(64) float sb[kLanes], zb[kLanes];
  for (int l = 0; l < kLanes; ++l) {
    sb[l] = qtl::detail::half_to_float(scale[kLanes * v + l]);
    zb[l] = static_cast<float>(zero[kLanes * v + l]);
  }
  s = F32::load_unaligned(sb);
  z = F32::load_unaligned(zb);
}

/// ybuf[16 n + kLanes v + lane] += this tile's rows of batch v, int8 activations.
template <int Bits, int NT, bool kMap>
void tile_int8(const UniformKernelView& w, std::ptrdiff_t t, int v, const ActivationView& a, const U8& map,
               float* ybuf) noexcept {
  const std::int8_t* const q = a.q;  // chunk layout: see ActivationView
  const U32 even_bytes(0x00FF00FFu);
  for (std::ptrdiff_t g = 0; g < w.groups; ++g) {
    F32 s, z;
    load_params(w.scales(t, g), w.zeros(t, g), v, s, z);
    F32 gf[NT];
    for (int n = 0; n < NT; ++n) gf[n] = F32(0.0f);
    for (std::ptrdiff_t b = w.group_block_begin[g]; b < w.group_block_begin[g + 1]; ++b) {
      const std::uint8_t* rows = w.block(t, b) + 4 * kLanes * v;
      if (v == 0) prefetch_stream_at<Bits>(w.block(t, b), w.prefetch);
      I32 acc[NT];
      for (int n = 0; n < NT; ++n) acc[n] = I32(0);
#pragma GCC unroll 8
      for (int op = 0; op < 8; ++op) {
        const U32 c = operand<Bits, kMap>(rows, op, map);
        const I16 ce = xsimd::bitwise_cast<I16>(c & even_bytes);          // q0, q2 of each lane
        const I16 co = xsimd::bitwise_cast<I16>((c >> 8) & even_bytes);   // q1, q3
        for (int n = 0; n < NT; ++n) {
          std::int32_t a4;  // a0..a3 of token n, columns 4 op .. 4 op + 3
          std::memcpy(&a4, q + b * kBlockCols * NT + 4 * op * NT + 4 * n, 4);
          const I16 av = xsimd::bitwise_cast<I16>(I32(a4));
          const I16 ae = (av << 8) >> 8;  // a0, a2 sign-extended to int16
          const I16 ao = av >> 8;         // a1, a3
          acc[n] += madd_i16(ce, ae) + madd_i16(co, ao);
        }
      }
      for (int n = 0; n < NT; ++n) gf[n] = xsimd::fma(xsimd::batch_cast<float>(acc[n]), F32(a.d[b * NT + n]), gf[n]);
    }
    for (int n = 0; n < NT; ++n) {
      float* yb = ybuf + kTileRows * n + kLanes * v;
      const F32 corr = xsimd::fnma(z, F32(a.gsum[g * NT + n]), gf[n]);
      xsimd::fma(s, corr, F32::load_aligned(yb)).store_aligned(yb);
    }
  }
}

/// The same with fp32 activations: every code converted to float and multiplied by x_c.
template <int Bits, int NT, bool kMap>
void tile_fp32(const UniformKernelView& w, std::ptrdiff_t t, int v, const ActivationView& a, const U8& map,
               float* ybuf) noexcept {
  constexpr int kChains = NT >= 8 ? 1 : 8 / NT;  // independent FMA chains per token
  const float* const x = a.x;  // chunk layout: see ActivationView
  const U32 byte_mask(0xFFu);
  for (std::ptrdiff_t g = 0; g < w.groups; ++g) {
    F32 s, z;
    load_params(w.scales(t, g), w.zeros(t, g), v, s, z);
    F32 acc[NT][kChains];
    for (int n = 0; n < NT; ++n)
      for (int i = 0; i < kChains; ++i) acc[n][i] = F32(0.0f);
    for (std::ptrdiff_t b = w.group_block_begin[g]; b < w.group_block_begin[g + 1]; ++b) {
      const std::uint8_t* rows = w.block(t, b) + 4 * kLanes * v;
      if (v == 0) prefetch_stream_at<Bits>(w.block(t, b), w.prefetch);
#pragma GCC unroll 8
      for (int op = 0; op < 8; ++op) {
        const U32 c = operand<Bits, kMap>(rows, op, map);
        const F32 wv[4] = {xsimd::batch_cast<float>(xsimd::bitwise_cast<I32>(c & byte_mask)),
                           xsimd::batch_cast<float>(xsimd::bitwise_cast<I32>((c >> 8) & byte_mask)),
                           xsimd::batch_cast<float>(xsimd::bitwise_cast<I32>((c >> 16) & byte_mask)),
                           xsimd::batch_cast<float>(xsimd::bitwise_cast<I32>(c >> 24))};
        for (int i = 0; i < 4; ++i) {
          for (int n = 0; n < NT; ++n) {
            F32& r = acc[n][(4 * op + i) % kChains];
            r = xsimd::fma(wv[i], F32(x[(b * kBlockCols + 4 * op + i) * NT + n]), r);
          }
        }
      }
    }
    for (int n = 0; n < NT; ++n) {
      F32 sum = acc[n][0];
      for (int i = 1; i < kChains; ++i) sum += acc[n][i];
      float* yb = ybuf + kTileRows * n + kLanes * v;
      const F32 corr = xsimd::fnma(z, F32(a.gsum[g * NT + n]), sum);
      xsimd::fma(s, corr, F32::load_aligned(yb)).store_aligned(yb);
    }
  }
}

template <int Bits, int NT, bool kMap>
void run_tile(const UniformKernelView& w, std::ptrdiff_t t, const ActivationSet& set, std::ptrdiff_t n0,
              float* y, std::ptrdiff_t ldy) noexcept {
  const ActivationView a = set.chunk(n0);
  const U8 map = kMap ? broadcast_table16(w.code_map) : U8(std::uint8_t{0});
  alignas(64) float ybuf[NT * kTileRows] = {};
  const std::ptrdiff_t row0 = t * kTileRows;
  const std::ptrdiff_t valid = w.rows - row0 < kTileRows ? w.rows - row0 : kTileRows;
  for (int v = 0; v < kVecs && kLanes * v < valid; ++v) {
    if (a.q != nullptr) {
      tile_int8<Bits, NT, kMap>(w, t, v, a, map, ybuf);
    } else {
      tile_fp32<Bits, NT, kMap>(w, t, v, a, map, ybuf);
    }
  }
  for (int n = 0; n < NT; ++n) {
    std::memcpy(y + (n0 + n) * ldy + row0, ybuf + kTileRows * n, static_cast<std::size_t>(valid) * sizeof(float));
  }
}

template <int Bits, bool kMap>
void run_tiles(const UniformKernelView& w, const ActivationSet& a, float* y, std::ptrdiff_t ldy,
               std::ptrdiff_t t0, std::ptrdiff_t t1) noexcept {
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

/// Decodes one tile block into codes[r][k] (row r, column k of the block), through the code
/// map when there is one (the scalar baseline's decoder).
inline void decode_tile_block(int bits, const std::uint8_t* block, const std::uint8_t* code_map,
                              std::uint8_t (&codes)[kTileRows][kBlockCols]) noexcept {
  for (int r = 0; r < kTileRows; ++r) {
    for (int k = 0; k < kBlockCols; ++k) {
      const int code = tile_code(bits, block, r, k);
      codes[r][k] = code_map != nullptr ? code_map[code & 15] : static_cast<std::uint8_t>(code);
    }
  }
}

}  // namespace detail_portable

/// Y[n * ldy + row] for the rows of tiles [tile_begin, tile_end) and every token of `set`.
#if defined(QTL_KERNELS_DECLARE_ONLY_UNIFORM)
// Compiled in the program's kernels TU (qtl/kernel/common/separate.hpp).
void uniform_tiles_portable(const UniformKernelView& w, const ActivationSet& set, float* y,
                            std::ptrdiff_t ldy, std::ptrdiff_t tile_begin,
                            std::ptrdiff_t tile_end) noexcept;
#else
QTL_KERNEL_ENTRY void uniform_tiles_portable(const UniformKernelView& w, const ActivationSet& set, float* y,
                                             std::ptrdiff_t ldy, std::ptrdiff_t tile_begin,
                                             std::ptrdiff_t tile_end) noexcept {
  using std::integral_constant;
  auto run = [&](auto bits, auto map) {
    detail_portable::run_tiles<decltype(bits)::value, decltype(map)::value>(w, set, y, ldy, tile_begin, tile_end);
  };
  if (w.code_map != nullptr) {  // the table family's int8 mode (2..4-bit tiles only)
    switch (w.bits) {
      case 2: run(integral_constant<int, 2>{}, std::true_type{}); break;
      case 3: run(integral_constant<int, 3>{}, std::true_type{}); break;
      case 4: run(integral_constant<int, 4>{}, std::true_type{}); break;
      default: break;
    }
    return;
  }
  switch (w.bits) {
    case 2: run(integral_constant<int, 2>{}, std::false_type{}); break;
    case 3: run(integral_constant<int, 3>{}, std::false_type{}); break;
    case 4: run(integral_constant<int, 4>{}, std::false_type{}); break;
    case 5: run(integral_constant<int, 5>{}, std::false_type{}); break;
    case 6: run(integral_constant<int, 6>{}, std::false_type{}); break;
    case 8: run(integral_constant<int, 8>{}, std::false_type{}); break;
    default: break;
  }
}
#endif

/// The same one value at a time, in plain C++: the baseline uniform_tiles_portable is measured
/// against (bench/uniform_kernel_matrix_bench.cpp) and tested with.
inline void uniform_tiles_scalar(const UniformKernelView& w, const ActivationSet& set, float* y,
                                 std::ptrdiff_t ldy, std::ptrdiff_t tile_begin,
                                 std::ptrdiff_t tile_end) noexcept {
  std::uint8_t codes[kTileRows][kBlockCols];
  for (std::ptrdiff_t t = tile_begin; t < tile_end; ++t) {
    const int valid = static_cast<int>(w.rows - t * kTileRows < kTileRows ? w.rows - t * kTileRows : kTileRows);
    for (std::ptrdiff_t n0 = 0; n0 < set.m;) {
      const ActivationView a = set.chunk(n0);
      const int nt = a.width;  // chunk layout: see ActivationView
      float acc[8][kTileRows] = {};
      for (std::ptrdiff_t g = 0; g < w.groups; ++g) {
        float gf[8][kTileRows] = {};
        for (std::ptrdiff_t b = w.group_block_begin[g]; b < w.group_block_begin[g + 1]; ++b) {
          detail_portable::decode_tile_block(w.bits, w.block(t, b), w.code_map, codes);
          for (int n = 0; n < nt; ++n) {
            for (int r = 0; r < kTileRows; ++r) {
              if (a.q != nullptr) {
                std::int32_t s = 0;
                for (int k = 0; k < kBlockCols; ++k) {
                  s += static_cast<std::int32_t>(codes[r][k]) *
                       a.q[b * kBlockCols * nt + 4 * (k / 4) * nt + 4 * n + k % 4];
                }
                gf[n][r] += a.d[b * nt + n] * static_cast<float>(s);
              } else {
                float s = 0.0f;
                for (int k = 0; k < kBlockCols; ++k) {
                  s += static_cast<float>(codes[r][k]) * a.x[(b * kBlockCols + k) * nt + n];
                }
                gf[n][r] += s;
              }
            }
          }
        }
        for (int n = 0; n < nt; ++n) {
          const float gs = a.gsum[g * nt + n];
          for (int r = 0; r < kTileRows; ++r) {
            const float s = qtl::detail::half_to_float(w.scales(t, g)[r]);
            const float z = static_cast<float>(w.zeros(t, g)[r]);
            acc[n][r] += s * (gf[n][r] - z * gs);
          }
        }
      }
      for (int n = 0; n < nt; ++n) {
        for (int r = 0; r < valid; ++r) y[(n0 + n) * ldy + t * kTileRows + r] = acc[n][r];
      }
      n0 += nt;
    }
  }
}

}  // namespace qtl::kernel
