// qtl/kernel/uniform/portable.hpp — the portable (plain C++) path of the uniform kernels.
//
// Same layout and the same arithmetic as the SIMD paths (qtl/kernel/uniform/layout.hpp):
//   Int8:  G_rg = sum_{b in g} d_b * float(S_rb),  S_rb = sum_c q_rc a_c exactly in int32,
//          y_r += s_rg * (G_rg - z_rg * gsum_g)
//   Fp32:  G_rg = sum_{c in g} float(q_rc) * x_c,   y_r += s_rg * (G_rg - z_rg * gsum_g)
// With a code map (uniform/layout.hpp) q_rc is code_map[code]. It always exists, needs no CPU
// feature, and passes every test the SIMD paths pass.
#pragma once

#include <cstddef>
#include <cstdint>

#include "qtl/detail/fp16.hpp"
#include "qtl/kernel/uniform/layout.hpp"
#include "qtl/kernel/uniform/quantize_activations.hpp"

namespace qtl::kernel {

namespace detail_portable {

/// Decodes one tile block into codes[r][k] (row r, column k of the block), through the code
/// map when there is one.
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
inline void uniform_tiles_portable(const UniformKernelView& w, const ActivationSet& set, float* y,
                                   std::ptrdiff_t ldy, std::ptrdiff_t tile_begin,
                                   std::ptrdiff_t tile_end) noexcept {
  std::uint8_t codes[kTileRows][kBlockCols];
  for (std::ptrdiff_t t = tile_begin; t < tile_end; ++t) {
    const TileGroupParams* params = w.params(t);
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
            const float s = qtl::detail::half_to_float(params[g].scale[r]);
            const float z = static_cast<float>(params[g].zero[r]);
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
