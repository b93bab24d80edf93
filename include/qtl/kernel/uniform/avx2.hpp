// qtl/kernel/uniform/avx2.hpp — AVX2 path of the uniform kernels: ymm, 8 rows at a time.
//
// Bytes 0..31 of each 64-byte operand of the tile layout (qtl/kernel/uniform/layout.hpp) are
// rows 0..7, bytes 32..63 rows 8..15: this path runs the same tile as two 8-row halves. Integer
// products as in ggml's AVX2 code: S += vpmaddwd(vpmaddubsw(codes_u8, acts_s8), 1), the 8
// operands of a block summed in int16 first when codes < 16 (each pair <= 2 * 15 * 127 = 3810,
// the 8-operand sum <= 30480 < 2^15); 5-, 6- and 8-bit codes use the signed form q - 128 with the sign
// trick |w| * sign(a, w) (pairs <= 2 * 128 * 127 = 32512) and zero point z - 128; so do codes
// read through a layout's code map (one vpshufb per operand, values up to 255).
// The AvxVnni path is the same code with S += vpdpbusd(codes_u8, acts_s8) (VEX-encoded
// AVX-VNNI): exact for every code width, so neither the int16 stage nor the sign trick.
// The kernels live in uniform/avx2_body.inc, compiled once per target (see there).
// Target attributes: see qtl/kernel/common/cpu_features.hpp. Call only when path_supported(Avx2)
// (resp. AvxVnni).
#pragma once

#include "qtl/kernel/common/target.hpp"

#if defined(QTL_X86_64)

#include <immintrin.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "qtl/kernel/common/prefetch.hpp"
#include "qtl/kernel/uniform/layout.hpp"
#include "qtl/kernel/uniform/quantize_activations.hpp"

#ifndef QTL_KERNEL_INLINE
#define QTL_KERNEL_INLINE inline __attribute__((always_inline))
#endif

namespace qtl::kernel {

namespace detail_avx2 {
#define QTL_U2_TARGET QTL_TARGET_AVX2
#define QTL_U2_VNNI 0
#include "qtl/kernel/uniform/avx2_body.inc"
#undef QTL_U2_TARGET
#undef QTL_U2_VNNI
}  // namespace detail_avx2

namespace detail_avxvnni {
#define QTL_U2_TARGET QTL_TARGET_AVXVNNI
#define QTL_U2_VNNI 1
#include "qtl/kernel/uniform/avx2_body.inc"
#undef QTL_U2_TARGET
#undef QTL_U2_VNNI
}  // namespace detail_avxvnni

namespace detail_avx2 {
/// run_tiles<Bits, kMap> of namespace NS (detail_avx2 or detail_avxvnni) for w's bits.
template <class Tiles>
inline void dispatch_bits(const UniformKernelView& w, Tiles&& tiles) noexcept {
  if (w.code_map != nullptr) {  // the table family's int8 mode (2..4-bit tiles only)
    switch (w.bits) {
      case 2: tiles(std::integral_constant<int, 2>{}, std::true_type{}); break;
      case 3: tiles(std::integral_constant<int, 3>{}, std::true_type{}); break;
      case 4: tiles(std::integral_constant<int, 4>{}, std::true_type{}); break;
      default: break;
    }
    return;
  }
  switch (w.bits) {
    case 2: tiles(std::integral_constant<int, 2>{}, std::false_type{}); break;
    case 3: tiles(std::integral_constant<int, 3>{}, std::false_type{}); break;
    case 4: tiles(std::integral_constant<int, 4>{}, std::false_type{}); break;
    case 5: tiles(std::integral_constant<int, 5>{}, std::false_type{}); break;
    case 6: tiles(std::integral_constant<int, 6>{}, std::false_type{}); break;
    case 8: tiles(std::integral_constant<int, 8>{}, std::false_type{}); break;
    default: break;
  }
}
}  // namespace detail_avx2

/// Y[n * ldy + row] for the rows of tiles [t0, t1) and tokens [0, m). Requires
/// path_supported(Avx2).
inline void uniform_tiles_avx2(const UniformKernelView& w, const ActivationSet& a,
                               float* y, std::ptrdiff_t ldy, std::ptrdiff_t t0, std::ptrdiff_t t1) noexcept {
  detail_avx2::dispatch_bits(w, [&](auto bits, auto map) {
    detail_avx2::run_tiles<decltype(bits)::value, decltype(map)::value>(w, a, y, ldy, t0, t1);
  });
}

/// The same with AVX-VNNI's ymm vpdpbusd for the int8 products (Alder Lake and later, Zen 5):
/// every code (2..8-bit, or mapped through a code map) times its int8 activation, 4 per lane,
/// exact in int32, with no int16 stage and no sign trick. Requires path_supported(AvxVnni).
inline void uniform_tiles_avxvnni(const UniformKernelView& w, const ActivationSet& a,
                                  float* y, std::ptrdiff_t ldy, std::ptrdiff_t t0, std::ptrdiff_t t1) noexcept {
  detail_avx2::dispatch_bits(w, [&](auto bits, auto map) {
    detail_avxvnni::run_tiles<decltype(bits)::value, decltype(map)::value>(w, a, y, ldy, t0, t1);
  });
}

}  // namespace qtl::kernel

#endif
