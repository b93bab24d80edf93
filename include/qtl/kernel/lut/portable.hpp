// qtl/kernel/lut/portable.hpp — the portable path of the lookup-table kernels (plain C++).
//
// The same lookups as the SIMD paths (qtl/kernel/lut/layout.hpp), one byte at a time: the
// integer sums S_rb are exact, and the float steps are the ones every path performs, in the
// same order and with fused multiply-adds (std::fma), so the paths agree to the bit:
//   F_r   = fma(float(S_rb), d_b, F_r)                 over the blocks b of group g (F_r = 0 first)
//   acc_r = fma(c_rg, F_r, acc_r);  BinaryShift: acc_r = fma(m_rg, gsum_g, acc_r)
//   c = alpha (Binary), alpha * 0.5f (Ternary), (hi - lo) * 0.5f (BinaryShift); m = (hi + lo) * 0.5f
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>

#include "qtl/detail/fp16.hpp"
#include "qtl/kernel/lut/layout.hpp"

namespace qtl::kernel {

/// Y[n * ldy + row] for the rows of tiles [t0, t1) and tokens [0, a.m).
inline void lut_tiles_portable(const LutKernelView& w, const LutActivationSet& a, float* y, std::ptrdiff_t ldy,
                               std::ptrdiff_t t0, std::ptrdiff_t t1) noexcept {
  const int tr = static_cast<int>(w.tile_rows);
  int byte_row[kLutUnitBytes];
  for (int j = 0; j < kLutUnitBytes; ++j) byte_row[j] = lut_byte_row(w.kind, j);
  int slot_row[64];
  for (int s = 0; s < tr; ++s) slot_row[s] = lut_slot_row(w.kind, s);
  float acc[64], f[64];
  int sum[64];
  for (std::ptrdiff_t t = t0; t < t1; ++t) {
    for (std::ptrdiff_t n = 0; n < a.m; ++n) {
      const std::uint8_t* tables = a.tables + n * a.blocks * kLutBlockTableBytes;
      const float* d = a.d + n * a.blocks;
      const float* gs = a.gsum + n * a.groups;
      for (int r = 0; r < tr; ++r) acc[r] = 0.0f;
      for (std::ptrdiff_t g = 0; g < w.groups; ++g) {
        for (int r = 0; r < tr; ++r) f[r] = 0.0f;
        for (std::ptrdiff_t b = w.group_block_begin[g]; b < w.group_block_begin[g + 1]; ++b) {
          for (int r = 0; r < tr; ++r) sum[r] = 0;
          const std::uint8_t* blk = w.block(t, b);
          const std::uint8_t* tb = tables + b * kLutBlockTableBytes;
          for (int u = 0; u < kLutUnitsPerBlock; ++u) {
            const std::uint8_t* unit = blk + u * kLutUnitBytes;
            const std::uint8_t* lo_table = tb + u * kLutTableBytes;
            const std::uint8_t* hi_table = tb + (u + 4) * kLutTableBytes;
            for (int j = 0; j < kLutUnitBytes; ++j) {
              sum[byte_row[j]] += lut_entry(lo_table, unit[j] & 15) + lut_entry(hi_table, unit[j] >> 4);
            }
          }
          for (int r = 0; r < tr; ++r) f[r] = std::fma(static_cast<float>(sum[r]), d[b], f[r]);
        }
        const std::uint16_t* p = w.params(t, g);
        for (int s = 0; s < tr; ++s) {
          const int r = slot_row[s];
          if (w.kind == LutWeights::BinaryShift) {
            const float lo = detail::half_to_float(p[s]), hi = detail::half_to_float(p[tr + s]);
            acc[r] = std::fma((hi - lo) * 0.5f, f[r], acc[r]);
            acc[r] = std::fma((hi + lo) * 0.5f, gs[g], acc[r]);
          } else {
            const float alpha = detail::half_to_float(p[s]);
            acc[r] = std::fma(w.kind == LutWeights::Ternary ? alpha * 0.5f : alpha, f[r], acc[r]);
          }
        }
      }
      const std::ptrdiff_t row0 = t * tr;
      for (int r = 0; r < tr && row0 + r < w.rows; ++r) y[n * ldy + row0 + r] = acc[r];
    }
  }
}

}  // namespace qtl::kernel
