// qtl/kernel/lut/avx512.hpp — AVX-512BW path of the lookup-table kernels (zmm vpshufb).
//
// Per unit of 64 bytes (qtl/kernel/lut/layout.hpp): the low and high nibbles are two index
// vectors; each is looked up in the low-byte and the high-byte table of its column group
// (tables broadcast to the 4 lanes with vbroadcasti32x4), 4 vpshufb per unit. Exact integer
// accumulation over the 4 units of a block (8 lookups per byte):
//   low bytes (0..255)   2 planes: vpmaddubsw(lo, 1) adds the u and v bytes of a row -> int16
//                                  (<= 8 * 510 = 4080);
//                        1 plane:  raw 16-bit adds of the lookup words, R = E + 256 O (mod 2^16),
//                                  and O (the odd bytes, vpsrlw 8) summed on its own; then
//                                  E = R - 256 O exactly, since E <= 8 * 255 < 2^16.
//   high bytes (-2..1)   summed as int8 (|sum| <= 16), widened once per block.
// S = lo + 256 hi fits int16 (|S| <= 8 * 2 * 508). vpmaddwd with (1, 0) / (0, 1) splits it
// into int32 rows, then F = fma(float(S), d_b, F) and, per group, acc = fma(c, F, acc) (+ the
// mean term), the float steps of qtl/kernel/lut/portable.hpp in the same order: bit-identical.
// The kernels are the text of qtl/kernel/lut/simd_body.inc compiled for zmm (the AVX2 path
// compiles it for ymm). The functions carry target attributes
// (qtl/kernel/common/cpu_features.hpp) and must only be called when
// path_supported(KernelPath::Avx512) says so.
#pragma once

#include "qtl/kernel/common/target.hpp"

#if defined(QTL_X86_64)
#define QTL_HAVE_X86_LUT_KERNELS 1

#include <immintrin.h>

#include <cstddef>
#include <cstdint>

#include "qtl/kernel/common/prefetch.hpp"
#include "qtl/kernel/lut/layout.hpp"


namespace qtl::kernel {
namespace detail_lut_avx512 {
#define QTL_LUT_WIDTH 512
#include "qtl/kernel/lut/simd_body.inc"  // undefines QTL_LUT_WIDTH
}  // namespace detail_lut_avx512

/// Y[n * ldy + row] for the rows of tiles [t0, t1) and tokens [0, a.m). Requires
/// path_supported(KernelPath::Avx512).
inline void lut_tiles_avx512(const LutKernelView& w, const LutActivationSet& a, float* y, std::ptrdiff_t ldy,
                             std::ptrdiff_t t0, std::ptrdiff_t t1) noexcept {
  detail_lut_avx512::lut_tiles(w, a, y, ldy, t0, t1);
}

}  // namespace qtl::kernel

#endif
