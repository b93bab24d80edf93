// qtl/kernel/vq/e8p_codewords.hpp — every E8P codeword as 8 bytes, for the kernels that look a
// codeword up instead of decoding it (the plain C++ int8 kernel, the AVX2 E8P kernel).
//
// Index i (qtl/quant/e8p.hpp): grid entry g = i & 255, sign bits 1..7 = bits 8..14, sign 0 =
// parity(signs) ^ parity[g], shift +-1/4 by bit 15; coordinate d of the codeword is
// c_d = +-grid[g][d] + shift, an odd multiple of 1/4 in [-11/4, 11/4], stored as
// u = 4 c_d + kE8PInt8Offset in [0, 22]. 2^16 x 8 bytes = 512 KiB, built once per process on
// first use (VQKernelMatrix's constructor makes that first use for E8P matrices, where
// std::bad_alloc can propagate; the kernels themselves are noexcept).
#pragma once

#include <bit>
#include <cstdint>
#include <memory>

#include "qtl/kernel/vq/layout.hpp"

namespace qtl::kernel {

struct E8PInt8Codewords {
  alignas(64) std::uint8_t u[1 << 16][8];  ///< codeword of index i: u[i][d] = 4 c_d + kE8PInt8Offset
};

/// The table of every E8P codeword as int8 (see vq_tiles_e8p_int8_scalar); `grid`, `parity`:
/// E8P::abs_grid(), E8P::abs_parity() (the view's e8p_grid / e8p_parity).
inline const E8PInt8Codewords& e8p_int8_codewords(const float* grid, const std::uint8_t* parity) {
  static const std::unique_ptr<const E8PInt8Codewords> table = [&] {
    auto t = std::make_unique<E8PInt8Codewords>();
    for (std::uint32_t i = 0; i < (1u << 16); ++i) {
      const std::uint32_t g = i & 0xFFu, signs = (i >> 8) & 0x7Fu;
      const int shift = (i >> 15) & 1u ? 1 : -1;
      const std::uint32_t neg = signs << 1 | ((static_cast<std::uint32_t>(std::popcount(signs)) + parity[g]) & 1u);
      for (std::uint32_t d = 0; d < 8; ++d) {
        const int m = static_cast<int>(4.0f * grid[g * 8 + d]);  // 2, 6, 10
        t->u[i][d] = static_cast<std::uint8_t>((((neg >> d) & 1u) ? -m : m) + shift + kE8PInt8Offset);  // 0..22
      }
    }
    return std::unique_ptr<const E8PInt8Codewords>(std::move(t));
  }();
  return *table;
}

}  // namespace qtl::kernel
