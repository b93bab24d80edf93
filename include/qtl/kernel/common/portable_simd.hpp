// qtl/kernel/common/portable_simd.hpp — the vector type of the portable kernels, and the few
// operations xsimd 8.1 lacks or does not give in the form the kernels need.
//
// The portable kernels (qtl/kernel/<family>/portable.hpp) are written once over
// xsimd::batch<T, PortableArch>, PortableArch = xsimd::default_arch: the best instruction set the
// compiler may assume (SSE2 on a plain x86-64 build, AVX2 or AVX-512 under -march=..., NEON on
// AArch64). They need no CPU check: the program was compiled for at least that much. Every
// translation unit of a program sees the same flags, so these inline functions are the same
// everywhere (unlike the x86 paths, which carry target attributes: qtl/kernel/common/target.hpp).
//
// xsimd 8.1 has no widening integer multiply-add, no table lookup with run-time indices (byte or
// float), no gather on AVX-512 (its generic gather is a chain of scalar inserts), no fp16
// conversion and no widening load, and its fma is a separate multiply and add on every arch
// without an FMA3 tag (AVX-512 included). The helpers below are intrinsics per architecture,
// overloaded on xsimd's arch tag (an overload for a base arch serves its descendants, e.g. the
// SSE2 one serves SSE4.2, the AVX2 one FMA3+AVX2; AVX and AVX-512 do not descend from SSE), with
// a fallback for any other arch that computes the same values lane by lane:
//   madd_i16, lookup16, lookup16_f32, broadcast_table16   exact integer / table operations
//   fma_exact   a * b + c rounded once, on every arch (std::fma per lane where there is no FMA):
//               the LUT kernels promise the bits of std::fma
//   mul_add     fused where the arch has FMA (FMA3, AVX-512, NEON64: the rounding of the x86
//               paths' vfmadd), a multiply then an add elsewhere (SSE2): never a libm call
//   gather_f32, load_fp16, load_widen, load_halves   base[idx], fp16 -> fp32, uint8/uint16 ->
//               int32 lanes, two half-batches from two addresses
#pragma once

#include <bit>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include <xsimd/xsimd.hpp>

#include "qtl/detail/fp16.hpp"

namespace qtl::kernel {

using PortableArch = xsimd::default_arch;
template <class T>
using PortableBatch = xsimd::batch<T, PortableArch>;

/// The batch types every portable kernel uses, and one load they share; a kernel's detail
/// namespace takes them with `using namespace portable_batches;`.
namespace portable_batches {
using U8 = PortableBatch<std::uint8_t>;
using U16 = PortableBatch<std::uint16_t>;
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


// broadcast16: the 16 bytes at p in every 16-byte lane.
template <class A>
xsimd::batch<std::uint8_t, A> broadcast16(const std::uint8_t* p, requires_arch<xsimd::generic>) noexcept {
  using U8 = xsimd::batch<std::uint8_t, A>;
  alignas(64) std::uint8_t t[U8::size];
  for (std::size_t k = 0; k < U8::size; ++k) t[k] = p[k % 16];
  return U8::load_unaligned(t);
}
#if XSIMD_WITH_SSE2
template <class A>
xsimd::batch<std::uint8_t, A> broadcast16(const std::uint8_t* p, requires_arch<xsimd::sse2>) noexcept {
  return _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
}
#endif
#if XSIMD_WITH_AVX2
template <class A>
xsimd::batch<std::uint8_t, A> broadcast16(const std::uint8_t* p, requires_arch<xsimd::avx2>) noexcept {
  return _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}
#endif
#if XSIMD_WITH_AVX512F
template <class A>
xsimd::batch<std::uint8_t, A> broadcast16(const std::uint8_t* p, requires_arch<xsimd::avx512f>) noexcept {
  return _mm512_broadcast_i32x4(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}
#endif
#if XSIMD_WITH_NEON64
template <class A>
xsimd::batch<std::uint8_t, A> broadcast16(const std::uint8_t* p, requires_arch<xsimd::neon64>) noexcept {
  return vld1q_u8(p);
}
#endif

// fma_exact: x * y + z rounded once. Without FMA hardware std::fma per lane (correct, slow).
template <class A>
xsimd::batch<float, A> fma_exact(const xsimd::batch<float, A>& x, const xsimd::batch<float, A>& y,
                                 const xsimd::batch<float, A>& z, requires_arch<xsimd::generic>) noexcept {
  using F32 = xsimd::batch<float, A>;
  alignas(64) float a[F32::size], b[F32::size], c[F32::size];
  x.store_aligned(a);
  y.store_aligned(b);
  z.store_aligned(c);
  for (std::size_t k = 0; k < F32::size; ++k) c[k] = std::fma(a[k], b[k], c[k]);
  return F32::load_aligned(c);
}
#if XSIMD_WITH_FMA3_SSE
template <class A>
xsimd::batch<float, A> fma_exact(const xsimd::batch<float, A>& x, const xsimd::batch<float, A>& y,
                                 const xsimd::batch<float, A>& z, requires_arch<xsimd::fma3<xsimd::sse4_2>>) noexcept {
  return _mm_fmadd_ps(x, y, z);
}
#endif
#if XSIMD_WITH_FMA3_AVX2
template <class A>
xsimd::batch<float, A> fma_exact(const xsimd::batch<float, A>& x, const xsimd::batch<float, A>& y,
                                 const xsimd::batch<float, A>& z, requires_arch<xsimd::fma3<xsimd::avx2>>) noexcept {
  return _mm256_fmadd_ps(x, y, z);
}
#endif
#if XSIMD_WITH_AVX512F
template <class A>
xsimd::batch<float, A> fma_exact(const xsimd::batch<float, A>& x, const xsimd::batch<float, A>& y,
                                 const xsimd::batch<float, A>& z, requires_arch<xsimd::avx512f>) noexcept {
  return _mm512_fmadd_ps(x, y, z);
}
#endif
#if XSIMD_WITH_NEON64
template <class A>
xsimd::batch<float, A> fma_exact(const xsimd::batch<float, A>& x, const xsimd::batch<float, A>& y,
                                 const xsimd::batch<float, A>& z, requires_arch<xsimd::neon64>) noexcept {
  return vfmaq_f32(z, x, y);
}
#endif

// mul_add: fused where the arch has FMA, else a multiply and an add (SSE2 etc.: no libm call).
template <class A>
xsimd::batch<float, A> mul_add(const xsimd::batch<float, A>& x, const xsimd::batch<float, A>& y,
                               const xsimd::batch<float, A>& z, requires_arch<xsimd::generic>) noexcept {
  return x * y + z;
}
#if XSIMD_WITH_FMA3_SSE
template <class A>
xsimd::batch<float, A> mul_add(const xsimd::batch<float, A>& x, const xsimd::batch<float, A>& y,
                               const xsimd::batch<float, A>& z, requires_arch<xsimd::fma3<xsimd::sse4_2>>) noexcept {
  return _mm_fmadd_ps(x, y, z);
}
#endif
#if XSIMD_WITH_FMA3_AVX2
template <class A>
xsimd::batch<float, A> mul_add(const xsimd::batch<float, A>& x, const xsimd::batch<float, A>& y,
                               const xsimd::batch<float, A>& z, requires_arch<xsimd::fma3<xsimd::avx2>>) noexcept {
  return _mm256_fmadd_ps(x, y, z);
}
#endif
#if XSIMD_WITH_AVX512F
template <class A>
xsimd::batch<float, A> mul_add(const xsimd::batch<float, A>& x, const xsimd::batch<float, A>& y,
                               const xsimd::batch<float, A>& z, requires_arch<xsimd::avx512f>) noexcept {
  return _mm512_fmadd_ps(x, y, z);
}
#endif
#if XSIMD_WITH_NEON64
template <class A>
xsimd::batch<float, A> mul_add(const xsimd::batch<float, A>& x, const xsimd::batch<float, A>& y,
                               const xsimd::batch<float, A>& z, requires_arch<xsimd::neon64>) noexcept {
  return vfmaq_f32(z, x, y);
}
#endif

// gather_f32: lane i = base[idx[i]].
template <class A>
xsimd::batch<float, A> gather_f32(const float* base, const xsimd::batch<std::int32_t, A>& idx,
                                  requires_arch<xsimd::generic>) noexcept {
  using F32 = xsimd::batch<float, A>;
  alignas(64) std::int32_t i[F32::size];
  alignas(64) float out[F32::size];
  idx.store_aligned(i);
  for (std::size_t k = 0; k < F32::size; ++k) out[k] = base[i[k]];
  return F32::load_aligned(out);
}
#if XSIMD_WITH_AVX2
template <class A>
xsimd::batch<float, A> gather_f32(const float* base, const xsimd::batch<std::int32_t, A>& idx,
                                  requires_arch<xsimd::avx2>) noexcept {
  return _mm256_i32gather_ps(base, idx, 4);
}
#endif
#if XSIMD_WITH_AVX512F
template <class A>
xsimd::batch<float, A> gather_f32(const float* base, const xsimd::batch<std::int32_t, A>& idx,
                                  requires_arch<xsimd::avx512f>) noexcept {
  return _mm512_i32gather_ps(idx, base, 4);
}
#endif

// load_fp16 on archs with a conversion instruction (the generic one is below load_widen).
#if XSIMD_WITH_SSE2 && defined(__F16C__)
template <class A>
xsimd::batch<float, A> load_fp16(const std::uint16_t* p, requires_arch<xsimd::sse2>) noexcept {
  return _mm_cvtph_ps(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)));
}
#endif
#if XSIMD_WITH_AVX2 && defined(__F16C__)
template <class A>
xsimd::batch<float, A> load_fp16(const std::uint16_t* p, requires_arch<xsimd::avx2>) noexcept {
  return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}
#endif
#if XSIMD_WITH_AVX512F
template <class A>
xsimd::batch<float, A> load_fp16(const std::uint16_t* p, requires_arch<xsimd::avx512f>) noexcept {
  return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
}
#endif
#if XSIMD_WITH_NEON64
template <class A>
xsimd::batch<float, A> load_fp16(const std::uint16_t* p, requires_arch<xsimd::neon64>) noexcept {
  return vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(p)));
}
#endif

// load_halves: lanes [0, size/2) from a, [size/2, size) from b.
template <class A>
xsimd::batch<float, A> load_halves(const float* a, const float* b, requires_arch<xsimd::generic>) noexcept {
  using F32 = xsimd::batch<float, A>;
  alignas(64) float t[F32::size];
  std::memcpy(t, a, sizeof(float) * F32::size / 2);
  std::memcpy(t + F32::size / 2, b, sizeof(float) * F32::size / 2);
  return F32::load_aligned(t);
}
#if XSIMD_WITH_AVX512F
template <class A>
xsimd::batch<float, A> load_halves(const float* a, const float* b, requires_arch<xsimd::avx512f>) noexcept {
  const __m512d lo = _mm512_castpd256_pd512(_mm256_castps_pd(_mm256_loadu_ps(a)));
  return _mm512_castpd_ps(_mm512_insertf64x4(lo, _mm256_castps_pd(_mm256_loadu_ps(b)), 1));
}
#endif

// load_widen: batch-size unsigned indices (uint8 or uint16) at p as int32 lanes.
template <class A, class T>
xsimd::batch<std::int32_t, A> load_widen(const T* p, requires_arch<xsimd::generic>) noexcept {
  using I32 = xsimd::batch<std::int32_t, A>;
  alignas(64) std::int32_t out[I32::size];
  for (std::size_t k = 0; k < I32::size; ++k) out[k] = static_cast<std::int32_t>(p[k]);
  return I32::load_aligned(out);
}
#if XSIMD_WITH_SSE2
template <class A>
xsimd::batch<std::int32_t, A> load_widen(const std::uint8_t* p, requires_arch<xsimd::sse2>) noexcept {
  std::int32_t v;
  std::memcpy(&v, p, 4);
  const __m128i z = _mm_setzero_si128();
  return _mm_unpacklo_epi16(_mm_unpacklo_epi8(_mm_cvtsi32_si128(v), z), z);
}
template <class A>
xsimd::batch<std::int32_t, A> load_widen(const std::uint16_t* p, requires_arch<xsimd::sse2>) noexcept {
  return _mm_unpacklo_epi16(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)), _mm_setzero_si128());
}
#endif
#if XSIMD_WITH_AVX2
template <class A>
xsimd::batch<std::int32_t, A> load_widen(const std::uint8_t* p, requires_arch<xsimd::avx2>) noexcept {
  return _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)));
}
template <class A>
xsimd::batch<std::int32_t, A> load_widen(const std::uint16_t* p, requires_arch<xsimd::avx2>) noexcept {
  return _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}
#endif
#if XSIMD_WITH_AVX512F
template <class A>
xsimd::batch<std::int32_t, A> load_widen(const std::uint8_t* p, requires_arch<xsimd::avx512f>) noexcept {
  return _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}
template <class A>
xsimd::batch<std::int32_t, A> load_widen(const std::uint16_t* p, requires_arch<xsimd::avx512f>) noexcept {
  return _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
}
#endif
#if XSIMD_WITH_NEON64
template <class A>
xsimd::batch<std::int32_t, A> load_widen(const std::uint8_t* p, requires_arch<xsimd::neon64>) noexcept {
  std::uint32_t v;
  std::memcpy(&v, p, 4);
  const uint16x8_t h = vmovl_u8(vreinterpret_u8_u32(vdup_n_u32(v)));
  return vreinterpretq_s32_u32(vmovl_u16(vget_low_u16(h)));
}
template <class A>
xsimd::batch<std::int32_t, A> load_widen(const std::uint16_t* p, requires_arch<xsimd::neon64>) noexcept {
  return vreinterpretq_s32_u32(vmovl_u16(vld1_u16(p)));
}
#endif

// load_fp16: batch-size fp16 values at p as floats, exactly (qtl::detail::half_to_float).
// Any arch without a conversion instruction (SSE2 without F16C): integer bit operations, no
// branches (F. Giesen's "half to float" with a magic-number renormalization): exponent and
// mantissa shifted into place and the exponent rebiased by 127 - 15; infinities and NaN rebiased
// once more to 255; subnormals and zeros built as 2^-14 (1 + m / 1024) and 2^-14 subtracted, which
// leaves m 2^-24 exactly. NaN payloads are kept as the scalar conversion keeps them.
template <class A>
xsimd::batch<float, A> load_fp16(const std::uint16_t* p, requires_arch<xsimd::generic>) noexcept {
  using F32 = xsimd::batch<float, A>;
  using U32 = xsimd::batch<std::uint32_t, A>;
  const U32 h = xsimd::bitwise_cast<U32>(load_widen<A>(p, A{}));
  const U32 exp_mask(0x7C00u << 13);
  const U32 em = (h & U32(0x7FFFu)) << 13;  // exponent and mantissa at float's positions
  const U32 e = em & exp_mask;
  const U32 normal = em + U32(112u << 23);  // 127 - 15
  const U32 special = normal + U32(112u << 23);  // exponent 31 -> 255
  const F32 small = xsimd::bitwise_cast<F32>(normal + U32(1u << 23)) - F32(std::bit_cast<float>(113u << 23));
  U32 bits = xsimd::select(e == exp_mask, special, normal);
  bits = xsimd::select(e == U32(0u), xsimd::bitwise_cast<U32>(small), bits);
  return xsimd::bitwise_cast<F32>(bits | ((h & U32(0x8000u)) << 16));
}

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
  return detail_simd::broadcast16<A>(p, A{});
}

/// x * y + z rounded once per lane, on every arch (bit-identical to std::fma).
template <class A>
[[nodiscard]] inline xsimd::batch<float, A> fma_exact(const xsimd::batch<float, A>& x, const xsimd::batch<float, A>& y,
                                                      const xsimd::batch<float, A>& z) noexcept {
  return detail_simd::fma_exact(x, y, z, A{});
}

/// x * y + z: fused on archs with FMA (as the x86 paths' vfmadd), multiply then add elsewhere.
template <class A>
[[nodiscard]] inline xsimd::batch<float, A> mul_add(const xsimd::batch<float, A>& x, const xsimd::batch<float, A>& y,
                                                    const xsimd::batch<float, A>& z) noexcept {
  return detail_simd::mul_add(x, y, z, A{});
}

/// Lane i = base[idx[i]].
template <class A>
[[nodiscard]] inline xsimd::batch<float, A> gather_f32(const float* base, const xsimd::batch<std::int32_t, A>& idx) noexcept {
  return detail_simd::gather_f32(base, idx, A{});
}

/// PortableBatch<float>::size fp16 values at p, converted exactly (any alignment).
template <class A = PortableArch>
[[nodiscard]] inline xsimd::batch<float, A> load_fp16(const std::uint16_t* p) noexcept {
  return detail_simd::load_fp16<A>(p, A{});
}

/// Lanes [0, size/2) from a, [size/2, size) from b (any alignment).
template <class A = PortableArch>
[[nodiscard]] inline xsimd::batch<float, A> load_halves(const float* a, const float* b) noexcept {
  return detail_simd::load_halves<A>(a, b, A{});
}

/// PortableBatch<std::int32_t>::size unsigned indices at p (uint8 or uint16) as int32 lanes.
template <class A = PortableArch, class T>
[[nodiscard]] inline xsimd::batch<std::int32_t, A> load_widen(const T* p) noexcept {
  static_assert(std::is_same_v<T, std::uint8_t> || std::is_same_v<T, std::uint16_t>);
  return detail_simd::load_widen<A>(p, A{});
}

}  // namespace qtl::kernel
