// qtl/kernel/common/portable_simd.hpp — the vector type of the portable kernels, and the two
// integer operations xsimd 8.1 lacks.
//
// The portable kernels (qtl/kernel/<family>/portable.hpp) are written once over
// xsimd::batch<T, PortableArch>, PortableArch = xsimd::default_arch: the best instruction set the
// compiler may assume (SSE2 on a plain x86-64 build, AVX2 or AVX-512 under -march=..., NEON on
// AArch64). They need no CPU check: the program was compiled for at least that much. Every
// translation unit of a program sees the same flags, so these inline functions are the same
// everywhere (unlike the x86 paths, which carry target attributes: qtl/kernel/common/target.hpp).
//
// xsimd 8.1 has no widening integer multiply-add and no table lookup with run-time indices
// (byte or float); the three below are intrinsics per architecture, overloaded on xsimd's arch tag (an overload for a base arch
// serves its descendants, e.g. the SSE2 one serves SSE4.2, the AVX2 one FMA3+AVX2), with a
// fallback for any other arch. Both are exact; every version returns the same values.
#pragma once

#include <cstddef>
#include <cstdint>

#include <xsimd/xsimd.hpp>

namespace qtl::kernel {

using PortableArch = xsimd::default_arch;
template <class T>
using PortableBatch = xsimd::batch<T, PortableArch>;

/// The batch types every portable kernel uses, and one load they share; a kernel's detail
/// namespace takes them with `using namespace portable_batches;`.
namespace portable_batches {
using U8 = PortableBatch<std::uint8_t>;
using U32 = PortableBatch<std::uint32_t>;
using I16 = PortableBatch<std::int16_t>;
using I32 = PortableBatch<std::int32_t>;
using F32 = PortableBatch<float>;
/// 4 * U32::size bytes at p (any alignment) as U32 lanes, byte 0 lowest.
inline U32 load_u32(const std::uint8_t* p) noexcept { return xsimd::bitwise_cast<U32>(U8::load_unaligned(p)); }
}  // namespace portable_batches

namespace detail_simd {

using xsimd::kernel::requires_arch;

// madd_i16: lane j of the int32 result = a[2j] b[2j] + a[2j+1] b[2j+1] (x86's pmaddwd), with
// a, b read as int16 lanes. Exact unless all four factors are -32768.
template <class A>
xsimd::batch<std::int32_t, A> madd_i16(const xsimd::batch<std::int16_t, A>& a, const xsimd::batch<std::int16_t, A>& b,
                                       requires_arch<xsimd::generic>) noexcept {
  // Any arch: the int16 halves of each int32 lane, sign-extended in place, multiplied in int32.
  using I32 = xsimd::batch<std::int32_t, A>;
  const I32 a32 = xsimd::bitwise_cast<I32>(a), b32 = xsimd::bitwise_cast<I32>(b);
  return ((a32 << 16) >> 16) * ((b32 << 16) >> 16) + (a32 >> 16) * (b32 >> 16);
}
#if XSIMD_WITH_SSE2
template <class A>
xsimd::batch<std::int32_t, A> madd_i16(const xsimd::batch<std::int16_t, A>& a, const xsimd::batch<std::int16_t, A>& b,
                                       requires_arch<xsimd::sse2>) noexcept {
  return _mm_madd_epi16(a, b);
}
#endif
#if XSIMD_WITH_AVX2
template <class A>
xsimd::batch<std::int32_t, A> madd_i16(const xsimd::batch<std::int16_t, A>& a, const xsimd::batch<std::int16_t, A>& b,
                                       requires_arch<xsimd::avx2>) noexcept {
  return _mm256_madd_epi16(a, b);
}
#endif
#if XSIMD_WITH_AVX512BW
template <class A>
xsimd::batch<std::int32_t, A> madd_i16(const xsimd::batch<std::int16_t, A>& a, const xsimd::batch<std::int16_t, A>& b,
                                       requires_arch<xsimd::avx512bw>) noexcept {
  return _mm512_madd_epi16(a, b);
}
#endif
#if XSIMD_WITH_NEON64
template <class A>
xsimd::batch<std::int32_t, A> madd_i16(const xsimd::batch<std::int16_t, A>& a, const xsimd::batch<std::int16_t, A>& b,
                                       requires_arch<xsimd::neon64>) noexcept {
  const int16x8_t va = a, vb = b;
  // Products of lanes 0..3 and 4..7 widened to int32, then adjacent pairs added in order.
  return vpaddq_s32(vmull_s16(vget_low_s16(va), vget_low_s16(vb)), vmull_high_s16(va, vb));
}
#endif

// lookup16: lane i of the result = table[idx[i]], idx[i] < 16, where `table` holds the same 16
// bytes in every 16-byte lane (see broadcast_table16).
template <class A>
xsimd::batch<std::uint8_t, A> lookup16(const xsimd::batch<std::uint8_t, A>& table, const xsimd::batch<std::uint8_t, A>& idx,
                                       requires_arch<xsimd::generic>) noexcept {
  using U8 = xsimd::batch<std::uint8_t, A>;
  alignas(64) std::uint8_t t[U8::size], i[U8::size];
  table.store_unaligned(t);
  idx.store_unaligned(i);
  for (std::size_t k = 0; k < U8::size; ++k) i[k] = t[i[k] & 15];
  return U8::load_unaligned(i);
}
#if XSIMD_WITH_SSSE3
template <class A>
xsimd::batch<std::uint8_t, A> lookup16(const xsimd::batch<std::uint8_t, A>& table, const xsimd::batch<std::uint8_t, A>& idx,
                                       requires_arch<xsimd::ssse3>) noexcept {
  return _mm_shuffle_epi8(table, idx);
}
#endif
#if XSIMD_WITH_AVX2
template <class A>
xsimd::batch<std::uint8_t, A> lookup16(const xsimd::batch<std::uint8_t, A>& table, const xsimd::batch<std::uint8_t, A>& idx,
                                       requires_arch<xsimd::avx2>) noexcept {
  return _mm256_shuffle_epi8(table, idx);  // per 128-bit lane: hence the table in every lane
}
#endif
#if XSIMD_WITH_AVX512BW
template <class A>
xsimd::batch<std::uint8_t, A> lookup16(const xsimd::batch<std::uint8_t, A>& table, const xsimd::batch<std::uint8_t, A>& idx,
                                       requires_arch<xsimd::avx512bw>) noexcept {
  return _mm512_shuffle_epi8(table, idx);
}
#endif
#if XSIMD_WITH_NEON64
template <class A>
xsimd::batch<std::uint8_t, A> lookup16(const xsimd::batch<std::uint8_t, A>& table, const xsimd::batch<std::uint8_t, A>& idx,
                                       requires_arch<xsimd::neon64>) noexcept {
  return vqtbl1q_u8(table, idx);
}
#endif

// lookup16_f32: lane i of the result = t16[idx[i]], idx[i] < 16 (16 floats at t16).
template <class A>
xsimd::batch<float, A> lookup16_f32(const float* t16, const xsimd::batch<std::uint32_t, A>& idx,
                                    requires_arch<xsimd::generic>) noexcept {
  using U32 = xsimd::batch<std::uint32_t, A>;
  alignas(64) std::uint32_t i[U32::size];
  alignas(64) float out[U32::size];
  idx.store_unaligned(i);
  for (std::size_t k = 0; k < U32::size; ++k) out[k] = t16[i[k] & 15];
  return xsimd::batch<float, A>::load_unaligned(out);
}
#if XSIMD_WITH_AVX2
template <class A>
xsimd::batch<float, A> lookup16_f32(const float* t16, const xsimd::batch<std::uint32_t, A>& idx,
                                    requires_arch<xsimd::avx2>) noexcept {
  const __m256i i = idx;
  const __m256 lo = _mm256_permutevar8x32_ps(_mm256_loadu_ps(t16), i);
  const __m256 hi = _mm256_permutevar8x32_ps(_mm256_loadu_ps(t16 + 8), i);
  return _mm256_blendv_ps(lo, hi, _mm256_castsi256_ps(_mm256_slli_epi32(i, 28)));  // bit 3 picks
}
#endif
#if XSIMD_WITH_AVX512F
template <class A>
xsimd::batch<float, A> lookup16_f32(const float* t16, const xsimd::batch<std::uint32_t, A>& idx,
                                    requires_arch<xsimd::avx512f>) noexcept {
  return _mm512_permutexvar_ps(idx, _mm512_loadu_ps(t16));
}
#endif
#if XSIMD_WITH_NEON64
template <class A>
xsimd::batch<float, A> lookup16_f32(const float* t16, const xsimd::batch<std::uint32_t, A>& idx,
                                    requires_arch<xsimd::neon64>) noexcept {
  // A byte lookup in the table's 64 bytes: float idx is bytes 4 idx .. 4 idx + 3.
  const uint8x16x4_t table = vld1q_u8_x4(reinterpret_cast<const std::uint8_t*>(t16));
  const uint32x4_t bytes = vmlaq_n_u32(vdupq_n_u32(0x03020100u), idx, 0x04040404u);
  return vreinterpretq_f32_u8(vqtbl4q_u8(table, vreinterpretq_u8_u32(bytes)));
}
#endif

}  // namespace detail_simd

/// int32 lane j = a[2j] b[2j] + a[2j+1] b[2j+1] over int16 lanes (exact; see detail_simd).
template <class A>
[[nodiscard]] inline xsimd::batch<std::int32_t, A> madd_i16(const xsimd::batch<std::int16_t, A>& a,
                                                            const xsimd::batch<std::int16_t, A>& b) noexcept {
  return detail_simd::madd_i16(a, b, A{});
}

/// Byte i = table[idx[i]] for indices < 16; `table` from broadcast_table16.
template <class A>
[[nodiscard]] inline xsimd::batch<std::uint8_t, A> lookup16(const xsimd::batch<std::uint8_t, A>& table,
                                                            const xsimd::batch<std::uint8_t, A>& idx) noexcept {
  return detail_simd::lookup16(table, idx, A{});
}

/// Lane i = t16[idx[i]] for indices < 16 (16 floats at t16).
template <class A>
[[nodiscard]] inline xsimd::batch<float, A> lookup16_f32(const float* t16, const xsimd::batch<std::uint32_t, A>& idx) noexcept {
  return detail_simd::lookup16_f32(t16, idx, A{});
}

/// The 16 bytes at `p` repeated in every 16-byte lane (what lookup16 reads).
template <class A = PortableArch>
[[nodiscard]] inline xsimd::batch<std::uint8_t, A> broadcast_table16(const std::uint8_t* p) noexcept {
  using U8 = xsimd::batch<std::uint8_t, A>;
  alignas(64) std::uint8_t t[U8::size];
  for (std::size_t k = 0; k < U8::size; ++k) t[k] = p[k % 16];
  return U8::load_unaligned(t);
}

}  // namespace qtl::kernel
