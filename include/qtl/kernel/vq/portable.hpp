// qtl/kernel/vq/portable.hpp — plain C++ path of the vector-codebook lookup kernels.
//
// Same loops and the same summation order as the SIMD paths (qtl/kernel/vq/avx512.hpp), one
// lane at a time: per row, positions of a chunk alternate between two accumulators (even and
// odd jj), their sum is added to the row's partial sum, chunk after chunk.
#pragma once

#include <bit>
#include <cstddef>
#include <cstdint>

#include "qtl/kernel/vq/layout.hpp"

namespace qtl::kernel {

/// Lookup tables of chunk k.c for sets [k.s0, k.s0 + k.nsets) and k.nt tokens into `table`:
///   L[n][s][jj][e] = sum_d cb_s[e][d] * x_n[(c * chunk + jj) * D + d]   (entries e >= K: 0)
inline void vq_build_table_portable(const VQKernelView& w, const VQChunkTask& k, float* table) noexcept {
  const std::ptrdiff_t len = w.chunk_len(k.c), Kp = w.Kp, D = w.dim;
  for (int n = 0; n < k.nt; ++n) {
    for (std::ptrdiff_t s = 0; s < k.nsets; ++s) {
      const float* cbt = w.cbt + (k.s0 + s) * D * Kp;
      for (std::ptrdiff_t jj = 0; jj < len; ++jj) {
        const float* xs = k.x + n * k.ldx + (k.c * w.chunk + jj) * D;
        float* out = table + ((n * k.nsets + s) * len + jj) * Kp;
        for (std::ptrdiff_t e = 0; e < Kp; ++e) out[e] = cbt[e] * xs[0];
        for (std::ptrdiff_t d = 1; d < D; ++d) {
          for (std::ptrdiff_t e = 0; e < Kp; ++e) out[e] += cbt[d * Kp + e] * xs[d];
        }
      }
    }
  }
}

namespace detail_vq_portable {
inline std::uint32_t index_at(const VQKernelView& w, std::ptrdiff_t e) noexcept {
  return w.idx8 ? w.idx8[e] : w.idx16[e];
}
inline void finish(const VQChunkTask& k, std::ptrdiff_t t, int n, int lane, float a0, float a1) noexcept {
  float& p = k.acc[(t * kVQMaxTokens + n) * kVQTileRows + lane];
  p = k.first ? a0 + a1 : p + (a0 + a1);
}
}  // namespace detail_vq_portable

/// Table strategy: partial sums of tiles [t0, t1) over chunk k.c from the tables in k.table.
inline void vq_tiles_table_portable(const VQKernelView& w, const VQChunkTask& k, std::ptrdiff_t t0,
                                    std::ptrdiff_t t1) noexcept {
  using namespace detail_vq_portable;
  const std::ptrdiff_t len = w.chunk_len(k.c), Kp = w.Kp;
  for (std::ptrdiff_t t = t0; t < t1; ++t) {
    const std::ptrdiff_t base = w.chunk_offset(k.c) + t * len * kVQTileRows;
    for (int lane = 0; lane < kVQTileRows; ++lane) {
      const std::ptrdiff_t s = w.lane_set[t * kVQTileRows + lane] - k.s0;
      for (int n = 0; n < k.nt; ++n) {
        const float* tab = k.table + (n * k.nsets + s) * len * Kp;
        float a[2] = {0.0f, 0.0f};
        for (std::ptrdiff_t jj = 0; jj < len; ++jj) {
          a[jj & 1] += tab[jj * Kp + index_at(w, base + jj * kVQTileRows + lane)];
        }
        finish(k, t, n, lane, a[0], a[1]);
      }
    }
  }
}

/// Decode strategy: partial sums of tiles [t0, t1) over chunk k.c, codebook entries times x.
inline void vq_tiles_decode_portable(const VQKernelView& w, const VQChunkTask& k, std::ptrdiff_t t0,
                                     std::ptrdiff_t t1) noexcept {
  using namespace detail_vq_portable;
  const std::ptrdiff_t len = w.chunk_len(k.c), D = w.dim;
  for (std::ptrdiff_t t = t0; t < t1; ++t) {
    const std::ptrdiff_t base = w.chunk_offset(k.c) + t * len * kVQTileRows;
    for (int lane = 0; lane < kVQTileRows; ++lane) {
      const float* cb = w.cb + w.lane_set[t * kVQTileRows + lane] * w.K * D;
      for (int n = 0; n < k.nt; ++n) {
        const float* x = k.x + n * k.ldx + k.c * w.chunk * D;
        float a[2] = {0.0f, 0.0f};
        for (std::ptrdiff_t jj = 0; jj < len; ++jj) {
          const float* c = cb + index_at(w, base + jj * kVQTileRows + lane) * D;
          float& acc = a[jj & 1];
          for (std::ptrdiff_t d = 0; d < D; ++d) acc += c[d] * x[jj * D + d];
        }
        finish(k, t, n, lane, a[0], a[1]);
      }
    }
  }
}

/// E8P: partial sums of tiles [t0, t1) over chunk k.c. Codeword of index i (qtl/quant/e8p.hpp):
/// a = i & 255, sign bits 1..7 = bits 8..14, sign 0 = parity(signs) ^ parity[a], shift = +-1/4
/// by bit 15; weight = scale * (+-grid[a][d] + shift), computed as the reference does.
inline void vq_tiles_e8p_portable(const VQKernelView& w, const VQChunkTask& k, std::ptrdiff_t t0,
                                  std::ptrdiff_t t1) noexcept {
  using namespace detail_vq_portable;
  const std::ptrdiff_t len = w.chunk_len(k.c);
  for (std::ptrdiff_t t = t0; t < t1; ++t) {
    const std::ptrdiff_t base = w.chunk_offset(k.c) + t * len * kVQTileRows;
    for (int lane = 0; lane < kVQTileRows; ++lane) {
      const float scale = w.e8p_scale[w.lane_set[t * kVQTileRows + lane]];
      for (int n = 0; n < k.nt; ++n) {
        const float* x = k.x + n * k.ldx + k.c * w.chunk * 8;
        float a[2] = {0.0f, 0.0f};
        for (std::ptrdiff_t jj = 0; jj < len; ++jj) {
          const std::uint32_t i = w.idx16[base + jj * kVQTileRows + lane];
          const std::uint32_t g = i & 0xFFu, signs = (i >> 8) & 0x7Fu;
          const float shift = (i >> 15) & 1u ? 0.25f : -0.25f;
          const std::uint32_t neg = signs << 1 | ((static_cast<std::uint32_t>(std::popcount(signs)) + w.e8p_parity[g]) & 1u);
          float& acc = a[jj & 1];
          for (int d = 0; d < 8; ++d) {
            const float v = w.e8p_grid[g * 8 + static_cast<std::uint32_t>(d)];
            acc += scale * ((((neg >> d) & 1u) ? -v : v) + shift) * x[jj * 8 + d];
          }
        }
        finish(k, t, n, lane, a[0], a[1]);
      }
    }
  }
}

}  // namespace qtl::kernel
