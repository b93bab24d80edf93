// qtl/quant/ggml_blocks.hpp — ggml's block formats as bytes, bit for bit equal to llama.cpp's
// ggml/src/ggml-quants.c:
//   dequantize_row            ggml's to_float, 16 types
//   quantize_row_reference    ggml_quantize_chunk without an importance matrix
//   quantize_row_importance   ggml_quantize_chunk with one (the types whose quantizer uses it)
//   rule::*, pack_* / unpack_*, sub_scale / set_sub_scale
//                             the per-block pieces qtl's quantizer policies are built from
//                             (qtl/quant/ggml_quantizers.hpp)
//
// Blocks are the structs of ggml-common.h, little-endian, fp16 fields as IEEE binary16 bits.
// A row of n weights is n / block_size blocks, back to back, no padding.
//
// Bit-exactness. ggml's reference code (libggml-base) is compiled without FMA, so every
// `a * b + c` in it is two roundings. GCC contracts such expressions into one FMA under -mfma
// (-march=native), even across statements and in ISO C++ mode; in the quantizers every product
// that is then added goes through detail::unfused(), which hides the product from the
// contraction pass, so the results are the same whatever -m or -ffp-contract flags compile this
// header (the decoders' products are exact, see there). Integer to float conversions, operand
// order and the order of accumulation follow ggml's source line by line (each function names
// the one it reproduces).
//
// Plain C++ (no Eigen): this header may be included by per-ISA code and by the GGUF reader.
#pragma once

#include <algorithm>
#include <array>
#include <bit>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <type_traits>

#include "qtl/core/error.hpp"
#include "qtl/detail/fp16.hpp"
#include "qtl/quant/ggml_types.hpp"

namespace qtl::ggml {

static_assert(std::endian::native == std::endian::little,
              "ggml blocks are little-endian; qtl reads them with memcpy on a little-endian host");

// ---- block layouts (ggml-common.h) ---------------------------------------------------------
//
// Legacy blocks of 32 (element j of the block):
//   q4_0   d:fp16 | qs[16]          q = qs[j%16] >> 4*(j/16) & 15,            x = (q - 8) * d
//   q4_1   d:fp16 m:fp16 | qs[16]   q as q4_0,                                 x = q * d + m
//   q5_0   d | qh[4] | qs[16]       q = low nibble as q4_0 | bit j of qh (u32) << 4,  x = (q - 16) * d
//   q5_1   d m | qh[4] | qs[16]     q as q5_0,                                 x = q * d + m
//   q8_0   d | qs[32] (int8)        x = qs[j] * d
//   iq4_nl d | qs[16]               q as q4_0,                                 x = d * kIq4nlValues[q]
// Super-blocks of 256 (QK_K):
//   q2_K   scales[16] | qs[64] | d dmin       16 sub-blocks of 16; scales[s] = sc | mn << 4;
//          x = d*sc * q - dmin*mn, q 2 bits: element 128h + 32k + l (l < 32) is
//          qs[32h + l] >> 2k & 3, its sub-block 8h + 2k + l/16
//   q3_K   hmask[32] | qs[64] | scales[12] | d     16 sub-blocks of 16, 6-bit signed scales
//          (low 4 bits in scales[0..7] nibbles, high 2 bits in scales[8..11]);
//          q = (2 low bits as q2_K) - (bit 4h+k of hmask[32h... l] clear ? 4 : 0), x = d*(sc-32) * q
//   q4_K   d dmin | scales[12] | qs[128]      8 sub-blocks of 32, 6-bit scale and min
//          (get_scale_min_k4); element 64k + l: qs[32k + l%32] nibble l/32, x = d*sc * q - dmin*mn
//   q5_K   d dmin | scales[12] | qh[32] | qs[128]   as q4_K plus bit 2k + l/32 of qh[l%32] as +16
//   q6_K   ql[128] | qh[64] | scales[16] (int8) | d  16 sub-blocks of 16, x = d * sc * (q - 32)
//   tq1_0  qs[48] | qh[4] | d   ternary, 5 (qs) or 4 (qh) base-3 digits per byte, x = (t - 1) * d
//   tq2_0  qs[64] | d           ternary, 2 bits each: element 128h + 32k + m is qs[32h + m] >> 2k & 3

struct BlockQ4_0 {
  std::uint16_t d;
  std::uint8_t qs[16];
};
struct BlockQ4_1 {
  std::uint16_t d;
  std::uint16_t m;
  std::uint8_t qs[16];
};
struct BlockQ5_0 {
  std::uint16_t d;
  std::uint8_t qh[4];
  std::uint8_t qs[16];
};
struct BlockQ5_1 {
  std::uint16_t d;
  std::uint16_t m;
  std::uint8_t qh[4];
  std::uint8_t qs[16];
};
struct BlockQ8_0 {
  std::uint16_t d;
  std::int8_t qs[32];
};
struct BlockIQ4_NL {
  std::uint16_t d;
  std::uint8_t qs[16];
};
struct BlockQ2_K {
  std::uint8_t scales[16];
  std::uint8_t qs[64];
  std::uint16_t d;
  std::uint16_t dmin;
};
struct BlockQ3_K {
  std::uint8_t hmask[32];
  std::uint8_t qs[64];
  std::uint8_t scales[12];
  std::uint16_t d;
};
struct BlockQ4_K {
  std::uint16_t d;
  std::uint16_t dmin;
  std::uint8_t scales[12];
  std::uint8_t qs[128];
};
struct BlockQ5_K {
  std::uint16_t d;
  std::uint16_t dmin;
  std::uint8_t scales[12];
  std::uint8_t qh[32];
  std::uint8_t qs[128];
};
struct BlockQ6_K {
  std::uint8_t ql[128];
  std::uint8_t qh[64];
  std::int8_t scales[16];
  std::uint16_t d;
};
struct BlockTQ1_0 {
  std::uint8_t qs[48];
  std::uint8_t qh[4];
  std::uint16_t d;
};
struct BlockTQ2_0 {
  std::uint8_t qs[64];
  std::uint16_t d;
};

namespace detail {
template <class B>
constexpr bool kPlainBlock = std::is_trivially_copyable_v<B> && std::is_standard_layout_v<B>;
}  // namespace detail

static_assert(sizeof(BlockQ4_0) == 18 && sizeof(BlockQ4_1) == 20 && sizeof(BlockQ5_0) == 22 &&
                  sizeof(BlockQ5_1) == 24 && sizeof(BlockQ8_0) == 34 && sizeof(BlockIQ4_NL) == 18,
              "ggml legacy block sizes (ggml-common.h)");
static_assert(sizeof(BlockQ2_K) == 84 && sizeof(BlockQ3_K) == 110 && sizeof(BlockQ4_K) == 144 &&
                  sizeof(BlockQ5_K) == 176 && sizeof(BlockQ6_K) == 210 && sizeof(BlockTQ1_0) == 54 &&
                  sizeof(BlockTQ2_0) == 66,
              "ggml super-block sizes (ggml-common.h)");
static_assert(detail::kPlainBlock<BlockQ4_0> && detail::kPlainBlock<BlockQ4_1> &&
              detail::kPlainBlock<BlockQ5_0> && detail::kPlainBlock<BlockQ5_1> &&
              detail::kPlainBlock<BlockQ8_0> && detail::kPlainBlock<BlockIQ4_NL> &&
              detail::kPlainBlock<BlockQ2_K> && detail::kPlainBlock<BlockQ3_K> &&
              detail::kPlainBlock<BlockQ4_K> && detail::kPlainBlock<BlockQ5_K> &&
              detail::kPlainBlock<BlockQ6_K> && detail::kPlainBlock<BlockTQ1_0> &&
              detail::kPlainBlock<BlockTQ2_0>);

/// IQ4_NL's 16 levels (ggml-common.h kvalues_iq4nl), ascending.
inline constexpr std::array<std::int8_t, 16> kIq4nlValues = {-127, -104, -83, -65, -49, -35, -22, -10,
                                                              1,    13,   25,  38,  53,  69,  89,  113};

namespace detail {

/// x, unchanged, with how it was computed hidden from the compiler: `unfused(a * b) + c` is
/// two roundings under any -ffp-contract / -mfma setting, as in ggml's FMA-free reference build.
[[nodiscard]] inline float unfused(float x) noexcept {
#if defined(__GNUC__) && (defined(__x86_64__) || (defined(__i386__) && defined(__SSE2__)))
  __asm__("" : "+x"(x));
#elif defined(__GNUC__) && defined(__aarch64__)
  __asm__("" : "+w"(x));
#else
  volatile float v = x;
  x = v;
#endif
  return x;
}

[[nodiscard]] inline float fp16(std::uint16_t h) noexcept { return qtl::detail::half_to_float(h); }
[[nodiscard]] inline std::uint16_t to_fp16(float f) noexcept { return qtl::detail::float_to_half(f); }

/// ggml's nearest_int: round half to even through the 1.5 * 2^23 trick; valid for
/// |x| <= 4194303, reproduced bit for bit (also outside that range) because the K-quant
/// reference relies on it.
[[nodiscard]] inline int nearest_int(float x) noexcept {
  const float v = unfused(x) + 12582912.0f;  // x is often a product: round it first, as ggml does
  const auto i = std::bit_cast<std::int32_t>(v);
  return (i & 0x007fffff) - 0x00400000;
}

/// ggml's best_index_int8: the index of the level nearest to x in an ascending table
/// (ties to the upper level, as its final comparison is strict).
[[nodiscard]] inline int best_index_iq4nl(float x) noexcept {
  const auto& v = kIq4nlValues;
  if (x <= v[0]) return 0;
  if (x >= v[15]) return 15;
  int lo = 0, hi = 15;
  while (hi - lo > 1) {
    const int mid = (lo + hi) / 2;
    if (x < v[static_cast<std::size_t>(mid)]) {
      hi = mid;
    } else {
      lo = mid;
    }
  }
  return x - v[static_cast<std::size_t>(hi - 1)] < v[static_cast<std::size_t>(hi)] - x ? hi - 1 : hi;
}

/// get_scale_min_k4: the 6-bit scale and min of sub-block j (0..7) of a q4_K / q5_K block.
inline void scale_min_k4(int j, const std::uint8_t* q, std::uint8_t& sc, std::uint8_t& mn) noexcept {
  if (j < 4) {
    sc = q[j] & 63;
    mn = q[j + 4] & 63;
  } else {
    sc = static_cast<std::uint8_t>((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4));
    mn = static_cast<std::uint8_t>((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
  }
}

/// The 6-bit scale of sub-block j (0..15) of a q3_K block, in [-32, 31].
[[nodiscard]] inline int scale_q3_k(const std::uint8_t* s, int j) noexcept {
  const int lo = j < 8 ? (s[j] & 0xF) : (s[j - 8] >> 4);
  const int hi = (s[8 + j % 4] >> (2 * (j / 4))) & 3;
  return (lo | (hi << 4)) - 32;
}

// ---- block decoders: dequantize_row_<type> of ggml-quants.c, one block each -----------------
//
// The products here need no unfused(): each multiplies an fp16 value (11 significant bits), or
// an fp16 value times a 4- or 6-bit scale, by a quant of at most 6 bits, so it is exact in
// float and an FMA rounds `d * q + m` exactly as the two-step sum does (q6_K's d * sc * q may
// be inexact but is not added to anything). The loops therefore vectorize.

inline void decode_block(const BlockQ4_0& b, float* y) noexcept {
  const float d = fp16(b.d);
  for (int j = 0; j < 16; ++j) {
    const int x0 = (b.qs[j] & 0x0F) - 8;
    const int x1 = (b.qs[j] >> 4) - 8;
    y[j] = static_cast<float>(x0) * d;
    y[j + 16] = static_cast<float>(x1) * d;
  }
}
inline void decode_block(const BlockQ4_1& b, float* y) noexcept {
  const float d = fp16(b.d), m = fp16(b.m);
  for (int j = 0; j < 16; ++j) {
    y[j] = static_cast<float>(b.qs[j] & 0x0F) * d + m;
    y[j + 16] = static_cast<float>(b.qs[j] >> 4) * d + m;
  }
}
inline std::uint32_t load_u32(const std::uint8_t* p) noexcept {
  std::uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}
inline void decode_block(const BlockQ5_0& b, float* y) noexcept {
  const float d = fp16(b.d);
  const std::uint32_t qh = load_u32(b.qh);
  for (int j = 0; j < 16; ++j) {
    const int h0 = static_cast<int>(((qh >> j) << 4) & 0x10);
    const int h1 = static_cast<int>((qh >> (j + 12)) & 0x10);
    y[j] = static_cast<float>(((b.qs[j] & 0x0F) | h0) - 16) * d;
    y[j + 16] = static_cast<float>(((b.qs[j] >> 4) | h1) - 16) * d;
  }
}
inline void decode_block(const BlockQ5_1& b, float* y) noexcept {
  const float d = fp16(b.d), m = fp16(b.m);
  const std::uint32_t qh = load_u32(b.qh);
  for (int j = 0; j < 16; ++j) {
    const int h0 = static_cast<int>(((qh >> j) << 4) & 0x10);
    const int h1 = static_cast<int>((qh >> (j + 12)) & 0x10);
    y[j] = static_cast<float>((b.qs[j] & 0x0F) | h0) * d + m;
    y[j + 16] = static_cast<float>((b.qs[j] >> 4) | h1) * d + m;
  }
}
inline void decode_block(const BlockQ8_0& b, float* y) noexcept {
  const float d = fp16(b.d);
  for (int j = 0; j < 32; ++j) y[j] = static_cast<float>(b.qs[j]) * d;
}
inline void decode_block(const BlockIQ4_NL& b, float* y) noexcept {
  const float d = fp16(b.d);
  for (int j = 0; j < 16; ++j) {
    y[j] = d * static_cast<float>(kIq4nlValues[b.qs[j] & 0xF]);
    y[j + 16] = d * static_cast<float>(kIq4nlValues[b.qs[j] >> 4]);
  }
}
inline void decode_block(const BlockQ2_K& b, float* y) noexcept {
  const float d = fp16(b.d), mn = fp16(b.dmin);
  const std::uint8_t* q = b.qs;
  int is = 0;
  for (int n = 0; n < 256; n += 128) {
    for (int shift = 0; shift < 8; shift += 2) {
      for (int half = 0; half < 2; ++half) {
        const std::uint8_t sc = b.scales[is++];
        const float dl = d * static_cast<float>(sc & 0xF);
        const float ml = mn * static_cast<float>(sc >> 4);
        for (int l = 0; l < 16; ++l) {
          *y++ = dl * static_cast<float>((q[l + 16 * half] >> shift) & 3) - ml;
        }
      }
    }
    q += 32;
  }
}
inline void decode_block(const BlockQ3_K& b, float* y) noexcept {
  const float d_all = fp16(b.d);
  const std::uint8_t* q = b.qs;
  std::uint8_t m = 1;
  int is = 0;
  for (int n = 0; n < 256; n += 128) {
    for (int shift = 0; shift < 8; shift += 2) {
      for (int half = 0; half < 2; ++half) {
        const float dl = d_all * static_cast<float>(scale_q3_k(b.scales, is++));
        for (int l = 0; l < 16; ++l) {
          const int k = l + 16 * half;
          const int v = ((q[k] >> shift) & 3) - ((b.hmask[k] & m) ? 0 : 4);
          *y++ = dl * static_cast<float>(v);
        }
      }
      m = static_cast<std::uint8_t>(m << 1);
    }
    q += 32;
  }
}
inline void decode_block(const BlockQ4_K& b, float* y) noexcept {
  const float d = fp16(b.d), mn = fp16(b.dmin);
  const std::uint8_t* q = b.qs;
  for (int is = 0; is < 8; is += 2) {
    std::uint8_t sc, m;
    scale_min_k4(is, b.scales, sc, m);
    const float d1 = d * static_cast<float>(sc), m1 = mn * static_cast<float>(m);
    scale_min_k4(is + 1, b.scales, sc, m);
    const float d2 = d * static_cast<float>(sc), m2 = mn * static_cast<float>(m);
    for (int l = 0; l < 32; ++l) *y++ = d1 * static_cast<float>(q[l] & 0xF) - m1;
    for (int l = 0; l < 32; ++l) *y++ = d2 * static_cast<float>(q[l] >> 4) - m2;
    q += 32;
  }
}
inline void decode_block(const BlockQ5_K& b, float* y) noexcept {
  const float d = fp16(b.d), mn = fp16(b.dmin);
  const std::uint8_t* ql = b.qs;
  std::uint8_t u1 = 1, u2 = 2;
  for (int is = 0; is < 8; is += 2) {
    std::uint8_t sc, m;
    scale_min_k4(is, b.scales, sc, m);
    const float d1 = d * static_cast<float>(sc), m1 = mn * static_cast<float>(m);
    scale_min_k4(is + 1, b.scales, sc, m);
    const float d2 = d * static_cast<float>(sc), m2 = mn * static_cast<float>(m);
    for (int l = 0; l < 32; ++l) {
      *y++ = d1 * static_cast<float>((ql[l] & 0xF) + ((b.qh[l] & u1) ? 16 : 0)) - m1;
    }
    for (int l = 0; l < 32; ++l) {
      *y++ = d2 * static_cast<float>((ql[l] >> 4) + ((b.qh[l] & u2) ? 16 : 0)) - m2;
    }
    ql += 32;
    u1 = static_cast<std::uint8_t>(u1 << 2);
    u2 = static_cast<std::uint8_t>(u2 << 2);
  }
}
inline void decode_block(const BlockQ6_K& b, float* y) noexcept {
  const float d = fp16(b.d);
  const std::uint8_t* ql = b.ql;
  const std::uint8_t* qh = b.qh;
  const std::int8_t* sc = b.scales;
  for (int n = 0; n < 256; n += 128) {
    for (int l = 0; l < 32; ++l) {
      const int is = l / 16;
      const int q1 = ((ql[l] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32;
      const int q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
      const int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
      const int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
      y[l] = d * static_cast<float>(sc[is]) * static_cast<float>(q1);
      y[l + 32] = d * static_cast<float>(sc[is + 2]) * static_cast<float>(q2);
      y[l + 64] = d * static_cast<float>(sc[is + 4]) * static_cast<float>(q3);
      y[l + 96] = d * static_cast<float>(sc[is + 6]) * static_cast<float>(q4);
    }
    y += 128;
    ql += 64;
    qh += 32;
    sc += 8;
  }
}
/// The base-3 digit n (most significant first) of a tq1_0 byte: the byte holds
/// ceil(v * 256 / 243) for the 5-digit (or 4-digit, shifted by one digit) number v.
[[nodiscard]] inline int trit(std::uint8_t byte, int n) noexcept {
  static constexpr std::uint8_t kPow3[6] = {1, 3, 9, 27, 81, 243};
  const auto q = static_cast<std::uint8_t>(byte * kPow3[n]);
  return (static_cast<std::uint16_t>(q) * 3) >> 8;
}
inline void decode_block(const BlockTQ1_0& b, float* y) noexcept {
  const float d = fp16(b.d);
  for (int n = 0; n < 5; ++n) {
    for (int m = 0; m < 32; ++m) *y++ = static_cast<float>(trit(b.qs[m], n) - 1) * d;
  }
  for (int n = 0; n < 5; ++n) {
    for (int m = 0; m < 16; ++m) *y++ = static_cast<float>(trit(b.qs[32 + m], n) - 1) * d;
  }
  for (int n = 0; n < 4; ++n) {
    for (int j = 0; j < 4; ++j) *y++ = static_cast<float>(trit(b.qh[j], n) - 1) * d;
  }
}
inline void decode_block(const BlockTQ2_0& b, float* y) noexcept {
  const float d = fp16(b.d);
  for (int j = 0; j < 64; j += 32) {
    for (int l = 0; l < 4; ++l) {
      for (int m = 0; m < 32; ++m) *y++ = static_cast<float>(((b.qs[j + m] >> (2 * l)) & 3) - 1) * d;
    }
  }
}

template <class Block>
void decode_blocks(std::span<const std::byte> src, std::span<float> dst, std::int64_t block_size) {
  const std::size_t nb = dst.size() / static_cast<std::size_t>(block_size);
  for (std::size_t i = 0; i < nb; ++i) {
    Block b;
    std::memcpy(&b, src.data() + i * sizeof(Block), sizeof(Block));
    decode_block(b, dst.data() + i * static_cast<std::size_t>(block_size));
  }
}

/// fp16 -> fp32 as ggml's ggml_compute_fp16_to_fp32 (and x86's F16C): a signaling NaN comes out
/// quiet (its payload otherwise kept), because ggml's conversion passes NaNs through a multiply.
[[nodiscard]] inline float fp16_to_fp32_ggml(std::uint16_t h) noexcept {
  float f = fp16(h);
  if ((h & 0x7C00u) == 0x7C00u && (h & 0x03FFu) != 0) {
    f = std::bit_cast<float>(std::bit_cast<std::uint32_t>(f) | 0x00400000u);
  }
  return f;
}

inline TypeInfo checked_row(std::string_view where, Type type, std::size_t n,
                                          std::size_t bytes, std::string_view bytes_name) {
  const TypeInfo info = type_info(type);
  const auto bs = static_cast<std::size_t>(info.block_size);
  if (n % bs != 0) {
    fail(where, ": a ", info.name, " row holds a multiple of ", bs, " values, got ", n);
  }
  const std::size_t want = n / bs * static_cast<std::size_t>(info.type_size);
  if (bytes != want) {
    fail(where, ": ", n, " values of ", info.name, " take ", want, " bytes, but ", bytes_name,
         " has ", bytes);
  }
  return info;
}

}  // namespace detail

/// True for the types dequantize_row decodes.
[[nodiscard]] constexpr bool can_dequantize(Type t) noexcept {
  switch (t) {
    case Type::F32: case Type::F16: case Type::BF16: case Type::Q4_0: case Type::Q4_1:
    case Type::Q5_0: case Type::Q5_1: case Type::Q8_0: case Type::IQ4_NL: case Type::Q2_K:
    case Type::Q3_K: case Type::Q4_K: case Type::Q5_K: case Type::Q6_K: case Type::TQ1_0:
    case Type::TQ2_0:
      return true;
    default:
      return false;
  }
}

/// ggml's to_float for one row (or several rows back to back): dst.size() values decoded from
/// src, which must hold exactly dst.size() / block_size blocks. Bit for bit equal to libggml's
/// type_traits[type].to_float (F32: a copy). Throws qtl::Error for a type it does not decode,
/// a length that is not a multiple of the block size, or a src of the wrong size.
inline void dequantize_row(Type type, std::span<const std::byte> src, std::span<float> dst) {
  constexpr std::string_view kWhere = "ggml::dequantize_row";
  if (!can_dequantize(type)) fail(kWhere, ": type ", type_name(type), " is not supported");
  const TypeInfo info = detail::checked_row(kWhere, type, dst.size(), src.size(), "src");
  const std::int64_t bs = info.block_size;
  switch (type) {
    case Type::F32:
      if (!dst.empty()) std::memcpy(dst.data(), src.data(), src.size());
      return;
    case Type::F16:
      for (std::size_t i = 0; i < dst.size(); ++i) {
        std::uint16_t h;
        std::memcpy(&h, src.data() + 2 * i, 2);
        dst[i] = detail::fp16_to_fp32_ggml(h);
      }
      return;
    case Type::BF16:
      for (std::size_t i = 0; i < dst.size(); ++i) {
        std::uint16_t h;
        std::memcpy(&h, src.data() + 2 * i, 2);
        dst[i] = std::bit_cast<float>(static_cast<std::uint32_t>(h) << 16);
      }
      return;
    case Type::Q4_0: return detail::decode_blocks<BlockQ4_0>(src, dst, bs);
    case Type::Q4_1: return detail::decode_blocks<BlockQ4_1>(src, dst, bs);
    case Type::Q5_0: return detail::decode_blocks<BlockQ5_0>(src, dst, bs);
    case Type::Q5_1: return detail::decode_blocks<BlockQ5_1>(src, dst, bs);
    case Type::Q8_0: return detail::decode_blocks<BlockQ8_0>(src, dst, bs);
    case Type::IQ4_NL: return detail::decode_blocks<BlockIQ4_NL>(src, dst, bs);
    case Type::Q2_K: return detail::decode_blocks<BlockQ2_K>(src, dst, bs);
    case Type::Q3_K: return detail::decode_blocks<BlockQ3_K>(src, dst, bs);
    case Type::Q4_K: return detail::decode_blocks<BlockQ4_K>(src, dst, bs);
    case Type::Q5_K: return detail::decode_blocks<BlockQ5_K>(src, dst, bs);
    case Type::Q6_K: return detail::decode_blocks<BlockQ6_K>(src, dst, bs);
    case Type::TQ1_0: return detail::decode_blocks<BlockTQ1_0>(src, dst, bs);
    case Type::TQ2_0: return detail::decode_blocks<BlockTQ2_0>(src, dst, bs);
    default: fail(kWhere, ": type ", type_name(type), " is not supported");
  }
}

// ---- the round-to-nearest rules of ggml's reference quantizers, per block ------------------
//
// ggml fits a scale d per block, stores fp16(d), but encodes with id = 1/d of the *unrounded* d
// (0 when d = 0); decoding uses the fp16 value. The rules below are that encoder; they also take
// any float (clamping to the code range) so that a solver can re-encode moved values with the
// same parameters. Codes are unsigned: q4_0 / iq4_nl 0..15, q5_0 0..31, q4_1 0..15, q5_1 0..31,
// q8_0 q + 128 in 0..255 (ggml's int8 q).

/// The scale of a legacy block before fp16 rounding, with ggml's id = 1/d (0 for d = 0), and
/// for q4_1 / q5_1 the block minimum (the offset before fp16 rounding).
struct BlockScale {
  float d = 0.0f;
  float id = 0.0f;
  float min = 0.0f;
};

namespace rule {

/// quantize_row_q4_0_ref / q5_0_ref: d = max / -2^(b-1), max the value of largest magnitude
/// (the first one on ties).
[[nodiscard]] inline BlockScale symmetric(std::span<const float> x, float divisor) noexcept {
  float amax = 0.0f, max = 0.0f;
  for (float v : x) {
    if (amax < std::fabs(v)) {
      amax = std::fabs(v);
      max = v;
    }
  }
  BlockScale s;
  s.d = max / divisor;
  s.id = s.d != 0.0f ? 1.0f / s.d : 0.0f;
  return s;
}
[[nodiscard]] inline BlockScale q4_0(std::span<const float> x) noexcept { return symmetric(x, -8.0f); }
[[nodiscard]] inline BlockScale q5_0(std::span<const float> x) noexcept { return symmetric(x, -16.0f); }

/// quantize_row_q8_0_ref: d = absmax / 127.
[[nodiscard]] inline BlockScale q8_0(std::span<const float> x) noexcept {
  float amax = 0.0f;
  for (float v : x) amax = std::max(amax, std::fabs(v));
  BlockScale s;
  s.d = amax / 127.0f;
  s.id = s.d != 0.0f ? 1.0f / s.d : 0.0f;
  return s;
}

/// quantize_row_q4_1_ref / q5_1_ref: d = (max - min) / (2^b - 1), offset min.
[[nodiscard]] inline BlockScale affine(std::span<const float> x, float levels) noexcept {
  float min = 3.402823466e+38f, max = -3.402823466e+38f;
  for (float v : x) {
    if (v < min) min = v;
    if (v > max) max = v;
  }
  BlockScale s;
  s.d = (max - min) / levels;
  s.id = s.d != 0.0f ? 1.0f / s.d : 0.0f;
  s.min = min;
  return s;
}
[[nodiscard]] inline BlockScale q4_1(std::span<const float> x) noexcept { return affine(x, 15.0f); }
[[nodiscard]] inline BlockScale q5_1(std::span<const float> x) noexcept { return affine(x, 31.0f); }

/// floor(t) clamped to [0, hi]: ggml's (int8_t)(t) truncation then MIN(hi, .) for t >= 0, and
/// the nearest end of the range for any other float (NaN gives 0).
[[nodiscard]] inline std::uint8_t truncate_clamped(float t, int hi) noexcept {
  if (!(t >= 0.0f)) return 0;
  if (t >= static_cast<float>(hi)) return static_cast<std::uint8_t>(hi);
  return static_cast<std::uint8_t>(static_cast<int>(t));
}
/// q4_0: MIN(15, (int8_t)(x * id + 8.5f)).
[[nodiscard]] inline std::uint8_t code_q4_0(float x, float id) noexcept {
  return truncate_clamped(detail::unfused(x * id) + 8.5f, 15);
}
/// q5_0: MIN(31, (int8_t)(x * id + 16.5f)).
[[nodiscard]] inline std::uint8_t code_q5_0(float x, float id) noexcept {
  return truncate_clamped(detail::unfused(x * id) + 16.5f, 31);
}
/// q4_1: MIN(15, (int8_t)((x - min) * id + 0.5f)).
[[nodiscard]] inline std::uint8_t code_q4_1(float x, float min, float id) noexcept {
  return truncate_clamped(detail::unfused((x - min) * id) + 0.5f, 15);
}
/// q5_1: (uint8_t)((x - min) * id + 0.5f), within 0..31 for in-range x.
[[nodiscard]] inline std::uint8_t code_q5_1(float x, float min, float id) noexcept {
  return truncate_clamped(detail::unfused((x - min) * id) + 0.5f, 31);
}
/// q8_0: roundf(x * id) (half away from zero) clamped to [-128, 127], plus 128.
[[nodiscard]] inline std::uint8_t code_q8_0(float x, float id) noexcept {
  const float r = std::round(x * id);
  if (!(r >= -128.0f)) return 0;
  if (r >= 127.0f) return 255;
  return static_cast<std::uint8_t>(static_cast<int>(r) + 128);
}
/// iq4_nl: the nearest of the 16 levels to x * id (best_index_int8).
[[nodiscard]] inline std::uint8_t code_iq4_nl(float x, float id) noexcept {
  return static_cast<std::uint8_t>(detail::best_index_iq4nl(x * id));
}

/// IQ4_NL's scale search for one block of 32 (quantize_row_iq4_nl_impl with super-block =
/// block = 32 and ntry = 7, as ggml_quantize_chunk runs it): weights w = x^2 without an
/// importance matrix, else qw * sqrt(sigma2 + x^2) with sigma2 = 2 * mean(x^2) over the block;
/// d = the weighted least-squares scale of the best of 15 trial grids. Returns {d, 1/d}
/// (d = 0 for a block whose absmax is below 1e-15). x holds at most 32 values; qw is empty or
/// one weight per value.
[[nodiscard]] inline BlockScale iq4_nl(std::span<const float> x, std::span<const float> qw) {
  const std::size_t n = x.size();
  if (n > 32 || (!qw.empty() && qw.size() != n)) {
    fail("ggml::rule::iq4_nl: a block of at most 32 values and as many weights, got ", n, " values and ",
         qw.size(), " weights");
  }
  float sigma2 = 0.0f;
  for (float v : x) sigma2 = sigma2 + detail::unfused(v * v);
  sigma2 *= 2.0f / static_cast<float>(n);
  std::array<float, 32> wbuf{};
  float* weight = wbuf.data();
  for (std::size_t j = 0; j < n; ++j) {
    weight[j] = qw.empty() ? x[j] * x[j] : qw[j] * std::sqrt(sigma2 + detail::unfused(x[j] * x[j]));
  }
  float amax = 0.0f, max = 0.0f;
  for (float v : x) {
    const float ax = std::fabs(v);
    if (ax > amax) {
      amax = ax;
      max = v;
    }
  }
  BlockScale s;
  if (amax < 1e-15f) return s;
  const auto v0 = static_cast<float>(kIq4nlValues[0]);
  float d = -max / v0;
  float id = 1.0f / d;
  float sumqx = 0.0f, sumq2 = 0.0f;
  auto accumulate = [&](float idt) {
    sumqx = 0.0f;
    sumq2 = 0.0f;
    for (std::size_t j = 0; j < n; ++j) {
      const float al = idt * x[j];
      const auto q = static_cast<float>(kIq4nlValues[static_cast<std::size_t>(detail::best_index_iq4nl(al))]);
      const float w = weight[j];
      sumqx = sumqx + detail::unfused(w * q * x[j]);
      sumq2 = sumq2 + detail::unfused(w * q * q);
    }
  };
  accumulate(id);
  d = sumq2 > 0.0f ? sumqx / sumq2 : 0.0f;
  float best = d * sumqx;
  for (int itry = -7; itry <= 7; ++itry) {
    id = static_cast<float>(itry + kIq4nlValues[0]) / max;
    accumulate(id);
    if (sumq2 > 0.0f && sumqx * sumqx > best * sumq2) {
      d = sumqx / sumq2;
      best = d * sumqx;
    }
  }
  s.d = d;
  s.id = d != 0.0f ? 1.0f / d : 0.0f;
  return s;
}

}  // namespace rule

// ---- packing one legacy block -----------------------------------------------------------------

/// Writes one block of a 32-wide type from its fp16 scale `d`, fp16 offset `m` (q4_1 / q5_1;
/// ignored otherwise) and 32 codes in the ranges above. `dst` must be type_size bytes.
inline void pack_block32(Type type, float d, float m, std::span<const std::uint8_t> codes,
                         std::span<std::byte> dst) {
  constexpr std::string_view kWhere = "ggml::pack_block32";
  const TypeInfo info = type_info(type);
  if (info.block_size != 32 || type == Type::Q8_1) fail(kWhere, ": ", info.name, " is not a 32-wide block type qtl packs");
  if (codes.size() != 32) fail(kWhere, ": a block holds 32 codes, got ", codes.size());
  if (dst.size() != static_cast<std::size_t>(info.type_size)) {
    fail(kWhere, ": a ", info.name, " block is ", info.type_size, " bytes, dst has ", dst.size());
  }
  const std::uint16_t hd = detail::to_fp16(d), hm = detail::to_fp16(m);
  auto nibbles = [&](std::uint8_t* qs) {
    for (std::size_t j = 0; j < 16; ++j) qs[j] = static_cast<std::uint8_t>((codes[j] & 0xF) | ((codes[j + 16] & 0xF) << 4));
  };
  auto high_bits = [&](std::uint8_t* qh) {
    std::uint32_t h = 0;
    for (std::size_t j = 0; j < 32; ++j) h |= static_cast<std::uint32_t>((codes[j] >> 4) & 1) << j;
    std::memcpy(qh, &h, 4);
  };
  auto store = [&](const auto& b) { std::memcpy(dst.data(), &b, sizeof(b)); };
  switch (type) {
    case Type::Q4_0: { BlockQ4_0 b{hd, {}}; nibbles(b.qs); store(b); return; }
    case Type::IQ4_NL: { BlockIQ4_NL b{hd, {}}; nibbles(b.qs); store(b); return; }
    case Type::Q4_1: { BlockQ4_1 b{hd, hm, {}}; nibbles(b.qs); store(b); return; }
    case Type::Q5_0: { BlockQ5_0 b{hd, {}, {}}; nibbles(b.qs); high_bits(b.qh); store(b); return; }
    case Type::Q5_1: { BlockQ5_1 b{hd, hm, {}, {}}; nibbles(b.qs); high_bits(b.qh); store(b); return; }
    case Type::Q8_0: {
      BlockQ8_0 b{hd, {}};
      for (std::size_t j = 0; j < 32; ++j) b.qs[j] = static_cast<std::int8_t>(codes[j] - 128);
      store(b);
      return;
    }
    default: fail(kWhere, ": ", info.name, " is not a 32-wide block type qtl packs");
  }
}

/// The inverse of pack_block32: fp16 scale and offset (0 for the types without one) as floats,
/// and the 32 codes.
inline void unpack_block32(Type type, std::span<const std::byte> src, float& d, float& m,
                           std::span<std::uint8_t> codes) {
  constexpr std::string_view kWhere = "ggml::unpack_block32";
  const TypeInfo info = type_info(type);
  if (codes.size() != 32) fail(kWhere, ": a block holds 32 codes, got ", codes.size());
  if (src.size() != static_cast<std::size_t>(info.type_size)) {
    fail(kWhere, ": a ", info.name, " block is ", info.type_size, " bytes, src has ", src.size());
  }
  auto load = [&](auto& b) { std::memcpy(&b, src.data(), sizeof(b)); };
  auto nibbles = [&](const std::uint8_t* qs) {
    for (std::size_t j = 0; j < 16; ++j) {
      codes[j] = qs[j] & 0xF;
      codes[j + 16] = static_cast<std::uint8_t>(qs[j] >> 4);
    }
  };
  auto high_bits = [&](const std::uint8_t* qh) {
    const std::uint32_t h = detail::load_u32(qh);
    for (std::size_t j = 0; j < 32; ++j) codes[j] = static_cast<std::uint8_t>(codes[j] | (((h >> j) & 1) << 4));
  };
  m = 0.0f;
  switch (type) {
    case Type::Q4_0: { BlockQ4_0 b; load(b); d = detail::fp16(b.d); nibbles(b.qs); return; }
    case Type::IQ4_NL: { BlockIQ4_NL b; load(b); d = detail::fp16(b.d); nibbles(b.qs); return; }
    case Type::Q4_1: { BlockQ4_1 b; load(b); d = detail::fp16(b.d); m = detail::fp16(b.m); nibbles(b.qs); return; }
    case Type::Q5_0: { BlockQ5_0 b; load(b); d = detail::fp16(b.d); nibbles(b.qs); high_bits(b.qh); return; }
    case Type::Q5_1: {
      BlockQ5_1 b;
      load(b);
      d = detail::fp16(b.d);
      m = detail::fp16(b.m);
      nibbles(b.qs);
      high_bits(b.qh);
      return;
    }
    case Type::Q8_0: {
      BlockQ8_0 b;
      load(b);
      d = detail::fp16(b.d);
      for (std::size_t j = 0; j < 32; ++j) codes[j] = static_cast<std::uint8_t>(b.qs[j] + 128);
      return;
    }
    default: fail(kWhere, ": ", info.name, " is not a 32-wide block type qtl packs");
  }
}

// ---- ternary blocks ---------------------------------------------------------------------------

namespace rule {
/// tq1_0 / tq2_0: lroundf(x * id) + 1 (half away from zero), clamped to {0, 1, 2}.
[[nodiscard]] inline std::uint8_t code_ternary(float x, float id) noexcept {
  const float r = std::round(x * id);
  if (!(r > -1.0f)) return 0;
  return r >= 1.0f ? 2 : 1;
}
}  // namespace rule

/// Writes one tq1_0 or tq2_0 block from its fp16 scale d and 256 codes in {0, 1, 2}
/// (x = (code - 1) * d). tq2_0: element 128h + 32k + m at bits 2k of qs[32h + m]. tq1_0: base-3
/// numbers, most significant digit first, stored as ceil(v * 256 / 243): qs[m] holds elements
/// m + 32n (n < 5), qs[32 + m] elements 160 + m + 16n, qh[j] elements 240 + j + 4n (n < 4, times 3).
inline void pack_ternary(Type type, float d, std::span<const std::uint8_t> codes, std::span<std::byte> dst) {
  constexpr std::string_view kWhere = "ggml::pack_ternary";
  if (type != Type::TQ1_0 && type != Type::TQ2_0) fail(kWhere, ": ", type_name(type), " is not a ternary type");
  if (codes.size() != 256) fail(kWhere, ": a block holds 256 codes, got ", codes.size());
  if (dst.size() != static_cast<std::size_t>(type_info(type).type_size)) {
    fail(kWhere, ": a ", type_name(type), " block is ", type_info(type).type_size, " bytes, dst has ", dst.size());
  }
  auto t = [&](int j) { return static_cast<int>(codes[static_cast<std::size_t>(j)]); };
  if (type == Type::TQ2_0) {
    BlockTQ2_0 b{{}, detail::to_fp16(d)};
    for (int j = 0; j < 64; j += 32) {
      for (int m = 0; m < 32; ++m) {
        int q = 0;
        for (int n = 0; n < 4; ++n) q += (t(4 * j + m + 32 * n) & 3) << (2 * n);
        b.qs[j + m] = static_cast<std::uint8_t>(q);
      }
    }
    std::memcpy(dst.data(), &b, sizeof b);
    return;
  }
  BlockTQ1_0 b{{}, {}, detail::to_fp16(d)};
  auto ceil_div = [](std::uint8_t q) {
    return static_cast<std::uint8_t>((static_cast<std::uint16_t>(q) * 256 + 242) / 243);
  };
  auto pack5 = [&](int base, int stride) {
    std::uint8_t q = 0;
    for (int n = 0; n < 5; ++n) q = static_cast<std::uint8_t>(q * 3 + t(base + n * stride));
    return ceil_div(q);
  };
  for (int m = 0; m < 32; ++m) b.qs[m] = pack5(m, 32);
  for (int m = 0; m < 16; ++m) b.qs[32 + m] = pack5(160 + m, 16);
  for (int j = 0; j < 4; ++j) {
    std::uint8_t q = 0;
    for (int m = 0; m < 4; ++m) q = static_cast<std::uint8_t>(q * 3 + t(240 + j + 4 * m));
    b.qh[j] = ceil_div(static_cast<std::uint8_t>(q * 3));
  }
  std::memcpy(dst.data(), &b, sizeof b);
}

/// The inverse of pack_ternary: the fp16 scale as a float and the 256 codes.
inline void unpack_ternary(Type type, std::span<const std::byte> src, float& d, std::span<std::uint8_t> codes) {
  constexpr std::string_view kWhere = "ggml::unpack_ternary";
  if (type != Type::TQ1_0 && type != Type::TQ2_0) fail(kWhere, ": ", type_name(type), " is not a ternary type");
  if (codes.size() != 256) fail(kWhere, ": a block holds 256 codes, got ", codes.size());
  if (src.size() != static_cast<std::size_t>(type_info(type).type_size)) {
    fail(kWhere, ": a ", type_name(type), " block is ", type_info(type).type_size, " bytes, src has ", src.size());
  }
  auto put = [&](int j, int v) { codes[static_cast<std::size_t>(j)] = static_cast<std::uint8_t>(v); };
  if (type == Type::TQ2_0) {
    BlockTQ2_0 b;
    std::memcpy(&b, src.data(), sizeof b);
    d = detail::fp16(b.d);
    for (int j = 0; j < 64; j += 32) {
      for (int m = 0; m < 32; ++m) {
        for (int n = 0; n < 4; ++n) put(4 * j + m + 32 * n, (b.qs[j + m] >> (2 * n)) & 3);
      }
    }
    return;
  }
  BlockTQ1_0 b;
  std::memcpy(&b, src.data(), sizeof b);
  d = detail::fp16(b.d);
  for (int n = 0; n < 5; ++n) {
    for (int m = 0; m < 32; ++m) put(m + 32 * n, detail::trit(b.qs[m], n));
    for (int m = 0; m < 16; ++m) put(160 + m + 16 * n, detail::trit(b.qs[32 + m], n));
  }
  for (int n = 0; n < 4; ++n) {
    for (int j = 0; j < 4; ++j) put(240 + j + 4 * n, detail::trit(b.qh[j], n));
  }
}

// ---- reference row quantizers -----------------------------------------------------------------

namespace detail {

inline void quantize_blocks32(Type type, std::span<const float> src, std::span<std::byte> dst) {
  const std::size_t bytes = static_cast<std::size_t>(type_info(type).type_size);
  std::array<std::uint8_t, 32> codes{};
  for (std::size_t i = 0; i < src.size() / 32; ++i) {
    const std::span<const float> x = src.subspan(i * 32, 32);
    BlockScale s;
    switch (type) {
      case Type::Q4_0: s = rule::q4_0(x); break;
      case Type::Q5_0: s = rule::q5_0(x); break;
      case Type::Q8_0: s = rule::q8_0(x); break;
      case Type::Q4_1: s = rule::q4_1(x); break;
      case Type::Q5_1: s = rule::q5_1(x); break;
      default: s = rule::iq4_nl(x, {}); break;
    }
    for (std::size_t j = 0; j < 32; ++j) {
      switch (type) {
        case Type::Q4_0: codes[j] = rule::code_q4_0(x[j], s.id); break;
        case Type::Q5_0: codes[j] = rule::code_q5_0(x[j], s.id); break;
        case Type::Q8_0: codes[j] = rule::code_q8_0(x[j], s.id); break;
        case Type::Q4_1: codes[j] = rule::code_q4_1(x[j], s.min, s.id); break;
        case Type::Q5_1: codes[j] = rule::code_q5_1(x[j], s.min, s.id); break;
        default: codes[j] = rule::code_iq4_nl(x[j], s.id); break;
      }
    }
    pack_block32(type, s.d, s.min, codes, dst.subspan(i * bytes, bytes));
  }
}

/// quantize_row_tq1_0_ref / tq2_0_ref: d = absmax of the 256 values, t = lroundf(x / d) + 1.
inline void quantize_ternary(Type type, std::span<const float> src, std::span<std::byte> dst) {
  const std::size_t bytes = static_cast<std::size_t>(type_info(type).type_size);
  std::array<std::uint8_t, 256> codes{};
  for (std::size_t i = 0; i < src.size() / 256; ++i) {
    const float* x = src.data() + i * 256;
    float amax = 0.0f;
    for (int j = 0; j < 256; ++j) amax = std::max(amax, std::fabs(x[j]));
    const float id = amax != 0.0f ? 1.0f / amax : 0.0f;
    for (std::size_t j = 0; j < 256; ++j) codes[j] = rule::code_ternary(x[j], id);
    pack_ternary(type, amax, codes, dst.subspan(i * bytes, bytes));
  }
}

}  // namespace detail

// ---- K-quant reference quantizers (quantize_row_q{2,3,4,5,6}_K_ref) --------------------------

namespace detail {

/// make_qkx2_quants: an affine fit x ~ scale * L - the_min of n values, L in [0, nmax], by a
/// grid of nstep + 1 trial scales each refitted by weighted least squares; error |.| (use_mad)
/// or squared. Returns the scale, the_min >= 0 as the offset subtracted.
inline float make_qkx2_quants(int n, int nmax, const float* x, const float* weights, std::uint8_t* L,
                              float* the_min, std::uint8_t* Laux, float rmin, float rdelta, int nstep,
                              bool use_mad) noexcept {
  float min = x[0], max = x[0];
  float sum_w = weights[0];
  float sum_x = sum_w * x[0];
  for (int i = 1; i < n; ++i) {
    if (x[i] < min) min = x[i];
    if (x[i] > max) max = x[i];
    const float w = weights[i];
    sum_w += w;
    sum_x = sum_x + unfused(w * x[i]);
  }
  if (min > 0) min = 0;
  if (max == min) {
    for (int i = 0; i < n; ++i) L[i] = 0;
    *the_min = -min;
    return 0.0f;
  }
  auto error_of = [&](float scale, float mn, const std::uint8_t* q) {
    float err = 0.0f;
    for (int i = 0; i < n; ++i) {
      float diff = unfused(scale * static_cast<float>(q[i])) + mn - x[i];
      diff = use_mad ? std::fabs(diff) : unfused(diff * diff);
      err = err + unfused(weights[i] * diff);
    }
    return err;
  };
  float iscale = static_cast<float>(nmax) / (max - min);
  float scale = 1.0f / iscale;
  for (int i = 0; i < n; ++i) {
    const int l = nearest_int(iscale * (x[i] - min));
    L[i] = static_cast<std::uint8_t>(std::max(0, std::min(nmax, l)));
  }
  float best_error = error_of(scale, min, L);
  if (nstep < 1) {
    *the_min = -min;
    return scale;
  }
  for (int is = 0; is <= nstep; ++is) {
    iscale = (rmin + unfused(rdelta * static_cast<float>(is)) + static_cast<float>(nmax)) / (max - min);
    float sum_l = 0.0f, sum_l2 = 0.0f, sum_xl = 0.0f;
    for (int i = 0; i < n; ++i) {
      int l = nearest_int(iscale * (x[i] - min));
      l = std::max(0, std::min(nmax, l));
      Laux[i] = static_cast<std::uint8_t>(l);
      const float w = weights[i];
      const auto fl = static_cast<float>(l);
      sum_l = sum_l + unfused(w * fl);
      sum_l2 = sum_l2 + unfused(w * fl * fl);
      sum_xl = sum_xl + unfused(w * fl * x[i]);
    }
    const float D = unfused(sum_w * sum_l2) - unfused(sum_l * sum_l);
    if (D > 0) {
      float this_scale = (unfused(sum_w * sum_xl) - unfused(sum_x * sum_l)) / D;
      float this_min = (unfused(sum_l2 * sum_x) - unfused(sum_l * sum_xl)) / D;
      if (this_min > 0) {
        this_min = 0;
        this_scale = sum_xl / sum_l2;
      }
      const float cur_error = error_of(this_scale, this_min, Laux);
      if (cur_error < best_error) {
        for (int i = 0; i < n; ++i) L[i] = Laux[i];
        best_error = cur_error;
        scale = this_scale;
        min = this_min;
      }
    }
  }
  *the_min = -min;
  return scale;
}

/// make_qx_quants with rmse_type 1: a symmetric fit x ~ scale * (L - nmax), weights qw (x^2
/// when null), trial scales -(nmax + 0.1 is) / max for is in [-9, 9].
inline float make_qx_quants(int n, int nmax, const float* x, std::int8_t* L, const float* qw = nullptr) noexcept {
  float max = 0.0f, amax = 0.0f;
  for (int i = 0; i < n; ++i) {
    const float ax = std::fabs(x[i]);
    if (ax > amax) {
      amax = ax;
      max = x[i];
    }
  }
  if (amax < 1e-15f) {
    for (int i = 0; i < n; ++i) L[i] = 0;
    return 0.0f;
  }
  auto sums = [&](float iscale, float& sumlx, float& suml2, bool store) {
    sumlx = 0.0f;
    suml2 = 0.0f;
    for (int i = 0; i < n; ++i) {
      int l = nearest_int(iscale * x[i]);
      l = std::max(-nmax, std::min(nmax - 1, l));
      if (store) L[i] = static_cast<std::int8_t>(l + nmax);
      const float w = qw != nullptr ? qw[i] : x[i] * x[i];
      const auto fl = static_cast<float>(l);
      sumlx = sumlx + unfused(w * x[i] * fl);
      suml2 = suml2 + unfused(w * fl * fl);
    }
  };
  float sumlx = 0.0f, suml2 = 0.0f;
  sums(static_cast<float>(-nmax) / max, sumlx, suml2, true);
  float scale = suml2 != 0.0f ? sumlx / suml2 : 0.0f;
  float best = scale * sumlx;
  for (int is = -9; is <= 9; ++is) {
    if (is == 0) continue;
    const float iscale = -(static_cast<float>(nmax) + unfused(0.1f * static_cast<float>(is))) / max;
    sums(iscale, sumlx, suml2, false);
    if (suml2 > 0 && sumlx * sumlx > best * suml2) {
      for (int i = 0; i < n; ++i) {
        const int l = nearest_int(iscale * x[i]);
        L[i] = static_cast<std::int8_t>(nmax + std::max(-nmax, std::min(nmax - 1, l)));
      }
      scale = sumlx / suml2;
      best = scale * sumlx;
    }
  }
  return scale;
}

/// make_q3_quants with do_rmse: a symmetric fit refined one value at a time (weights x^2).
inline float make_q3_quants(int n, int nmax, const float* x, std::int8_t* L) noexcept {
  float max = 0.0f, amax = 0.0f;
  for (int i = 0; i < n; ++i) {
    const float ax = std::fabs(x[i]);
    if (ax > amax) {
      amax = ax;
      max = x[i];
    }
  }
  if (amax < 1e-15f) {
    for (int i = 0; i < n; ++i) L[i] = 0;
    return 0.0f;
  }
  const float iscale = static_cast<float>(-nmax) / max;
  float sumlx = 0.0f, suml2 = 0.0f;
  for (int i = 0; i < n; ++i) {
    int l = nearest_int(iscale * x[i]);
    l = std::max(-nmax, std::min(nmax - 1, l));
    L[i] = static_cast<std::int8_t>(l);
    const float w = x[i] * x[i];
    const auto fl = static_cast<float>(l);
    sumlx = sumlx + unfused(w * x[i] * fl);
    suml2 = suml2 + unfused(w * fl * fl);
  }
  for (int itry = 0; itry < 5; ++itry) {
    int n_changed = 0;
    for (int i = 0; i < n; ++i) {
      const float w = x[i] * x[i];
      const auto li = static_cast<float>(L[i]);
      float slx = sumlx - unfused(w * x[i] * li);
      if (slx > 0) {
        float sl2 = suml2 - unfused(w * li * li);
        int new_l = nearest_int(x[i] * sl2 / slx);
        new_l = std::max(-nmax, std::min(nmax - 1, new_l));
        if (new_l != L[i]) {
          const auto fl = static_cast<float>(new_l);
          slx = slx + unfused(w * x[i] * fl);
          sl2 = sl2 + unfused(w * fl * fl);
          if (sl2 > 0 && slx * slx * suml2 > sumlx * sumlx * sl2) {
            L[i] = static_cast<std::int8_t>(new_l);
            sumlx = slx;
            suml2 = sl2;
            ++n_changed;
          }
        }
      }
    }
    if (!n_changed) break;
  }
  for (int i = 0; i < n; ++i) L[i] = static_cast<std::int8_t>(L[i] + nmax);
  return suml2 > 0.0f ? sumlx / suml2 : 0.0f;
}

/// 2-bit values L[0..255] into qs[64]: element 128h + 32k + l at bits 2k of qs[32h + l].
inline void pack_2bit(const std::uint8_t* L, std::uint8_t* qs) noexcept {
  for (int j = 0; j < 256; j += 128) {
    for (int l = 0; l < 32; ++l) {
      qs[j / 4 + l] = static_cast<std::uint8_t>(L[j + l] | (L[j + l + 32] << 2) | (L[j + l + 64] << 4) |
                                                (L[j + l + 96] << 6));
    }
  }
}
inline void unpack_2bit(const std::uint8_t* qs, std::uint8_t* L) noexcept {
  for (int j = 0; j < 256; j += 128) {
    for (int l = 0; l < 32; ++l) {
      for (int k = 0; k < 4; ++k) L[j + l + 32 * k] = (qs[j / 4 + l] >> (2 * k)) & 3;
    }
  }
}

}  // namespace detail

// ---- K-quant blocks: quants and sub-block scales as integers -------------------------------
//
// pack_quants / unpack_quants move the 256 unsigned quants L of a super-block in and out of its
// bit fields (q2_K 0..3, q3_K 0..7 = q + 4, q4_K 0..15, q5_K 0..31, q6_K 0..63 = q + 32);
// sub_scale / set_sub_scale read and write sub-block j's stored scale and min integers
// (q2_K 4 + 4 bits; q3_K a signed 6-bit scale in [-32, 31]; q4_K / q5_K 6 + 6 bits; q6_K an
// int8 scale; min = 0 where there is none).

struct SubScale {
  int sc = 0;
  int m = 0;
  friend bool operator==(const SubScale&, const SubScale&) = default;
};

inline void pack_quants(BlockQ2_K& b, const std::uint8_t* L) noexcept { detail::pack_2bit(L, b.qs); }
inline void unpack_quants(const BlockQ2_K& b, std::uint8_t* L) noexcept { detail::unpack_2bit(b.qs, L); }

/// q3_K: bit 2 of quant j goes to bit j / 32 of hmask[j % 32], the low 2 bits as q2_K.
inline void pack_quants(BlockQ3_K& b, const std::uint8_t* L) noexcept {
  std::uint8_t low[256];
  std::memset(b.hmask, 0, sizeof b.hmask);
  for (int j = 0; j < 256; ++j) {
    if (L[j] > 3) b.hmask[j % 32] = static_cast<std::uint8_t>(b.hmask[j % 32] | (1 << (j / 32)));
    low[j] = L[j] & 3;
  }
  detail::pack_2bit(low, b.qs);
}
inline void unpack_quants(const BlockQ3_K& b, std::uint8_t* L) noexcept {
  detail::unpack_2bit(b.qs, L);
  for (int j = 0; j < 256; ++j) L[j] = static_cast<std::uint8_t>(L[j] | (((b.hmask[j % 32] >> (j / 32)) & 1) << 2));
}

/// q4_K: element 64k + l is nibble l / 32 of qs[32k + l % 32].
inline void pack_quants(BlockQ4_K& b, const std::uint8_t* L) noexcept {
  for (int j = 0; j < 256; j += 64) {
    for (int l = 0; l < 32; ++l) b.qs[j / 2 + l] = static_cast<std::uint8_t>(L[j + l] | (L[j + l + 32] << 4));
  }
}
inline void unpack_quants(const BlockQ4_K& b, std::uint8_t* L) noexcept {
  for (int j = 0; j < 256; j += 64) {
    for (int l = 0; l < 32; ++l) {
      L[j + l] = b.qs[j / 2 + l] & 0xF;
      L[j + l + 32] = static_cast<std::uint8_t>(b.qs[j / 2 + l] >> 4);
    }
  }
}

/// q5_K: the low 4 bits as q4_K; bit 4 of element 64k + l at bit 2k + l / 32 of qh[l % 32].
inline void pack_quants(BlockQ5_K& b, const std::uint8_t* L) noexcept {
  std::memset(b.qh, 0, sizeof b.qh);
  for (int n = 0, k = 0; n < 256; n += 64, ++k) {
    for (int j = 0; j < 32; ++j) {
      const int l1 = L[n + j], l2 = L[n + j + 32];
      b.qh[j] = static_cast<std::uint8_t>(b.qh[j] | ((l1 >> 4) << (2 * k)) | ((l2 >> 4) << (2 * k + 1)));
      b.qs[n / 2 + j] = static_cast<std::uint8_t>((l1 & 0xF) | ((l2 & 0xF) << 4));
    }
  }
}
inline void unpack_quants(const BlockQ5_K& b, std::uint8_t* L) noexcept {
  for (int n = 0, k = 0; n < 256; n += 64, ++k) {
    for (int j = 0; j < 32; ++j) {
      L[n + j] = static_cast<std::uint8_t>((b.qs[n / 2 + j] & 0xF) | (((b.qh[j] >> (2 * k)) & 1) << 4));
      L[n + j + 32] = static_cast<std::uint8_t>((b.qs[n / 2 + j] >> 4) | (((b.qh[j] >> (2 * k + 1)) & 1) << 4));
    }
  }
}

/// q6_K: per half h (128 values), element 128h + 32k + l: low nibble in ql[64h + l + 32 (k & 1)]
/// (high nibble of that byte for k >= 2), top 2 bits at bits 2k of qh[32h + l].
inline void pack_quants(BlockQ6_K& b, const std::uint8_t* L) noexcept {
  for (int j = 0; j < 256; j += 128) {
    std::uint8_t* ql = b.ql + j / 2;
    std::uint8_t* qh = b.qh + j / 4;
    for (int l = 0; l < 32; ++l) {
      const int a = L[j + l], c1 = L[j + l + 32], c2 = L[j + l + 64], e = L[j + l + 96];
      ql[l] = static_cast<std::uint8_t>((a & 0xF) | ((c2 & 0xF) << 4));
      ql[l + 32] = static_cast<std::uint8_t>((c1 & 0xF) | ((e & 0xF) << 4));
      qh[l] = static_cast<std::uint8_t>((a >> 4) | ((c1 >> 4) << 2) | ((c2 >> 4) << 4) | ((e >> 4) << 6));
    }
  }
}
inline void unpack_quants(const BlockQ6_K& b, std::uint8_t* L) noexcept {
  for (int j = 0; j < 256; j += 128) {
    const std::uint8_t* ql = b.ql + j / 2;
    const std::uint8_t* qh = b.qh + j / 4;
    for (int l = 0; l < 32; ++l) {
      L[j + l] = static_cast<std::uint8_t>((ql[l] & 0xF) | (((qh[l] >> 0) & 3) << 4));
      L[j + l + 32] = static_cast<std::uint8_t>((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4));
      L[j + l + 64] = static_cast<std::uint8_t>((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4));
      L[j + l + 96] = static_cast<std::uint8_t>((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4));
    }
  }
}

[[nodiscard]] inline SubScale sub_scale(const BlockQ2_K& b, int j) noexcept {
  return {b.scales[j] & 0xF, b.scales[j] >> 4};
}
inline void set_sub_scale(BlockQ2_K& b, int j, SubScale s) noexcept {
  b.scales[j] = static_cast<std::uint8_t>((s.sc & 0xF) | ((s.m & 0xF) << 4));
}
[[nodiscard]] inline SubScale sub_scale(const BlockQ3_K& b, int j) noexcept { return {detail::scale_q3_k(b.scales, j), 0}; }
inline void set_sub_scale(BlockQ3_K& b, int j, SubScale s) noexcept {
  const int v = s.sc + 32;  // 0..63
  if (j < 8) {
    b.scales[j] = static_cast<std::uint8_t>((b.scales[j] & 0xF0) | (v & 0xF));
  } else {
    b.scales[j - 8] = static_cast<std::uint8_t>((b.scales[j - 8] & 0x0F) | ((v & 0xF) << 4));
  }
  const int shift = 2 * (j / 4);
  b.scales[8 + j % 4] = static_cast<std::uint8_t>((b.scales[8 + j % 4] & ~(3 << shift)) | ((v >> 4) << shift));
}
template <class Block>
[[nodiscard]] SubScale sub_scale_k4(const Block& b, int j) noexcept {
  std::uint8_t sc, m;
  detail::scale_min_k4(j, b.scales, sc, m);
  return {sc, m};
}
template <class Block>
void set_sub_scale_k4(Block& b, int j, SubScale s) noexcept {
  std::uint8_t* q = b.scales;
  if (j < 4) {
    q[j] = static_cast<std::uint8_t>((q[j] & 0xC0) | s.sc);
    q[j + 4] = static_cast<std::uint8_t>((q[j + 4] & 0xC0) | s.m);
  } else {
    q[j + 4] = static_cast<std::uint8_t>((s.sc & 0xF) | ((s.m & 0xF) << 4));
    q[j - 4] = static_cast<std::uint8_t>((q[j - 4] & 0x3F) | ((s.sc >> 4) << 6));
    q[j] = static_cast<std::uint8_t>((q[j] & 0x3F) | ((s.m >> 4) << 6));
  }
}
[[nodiscard]] inline SubScale sub_scale(const BlockQ4_K& b, int j) noexcept { return sub_scale_k4(b, j); }
inline void set_sub_scale(BlockQ4_K& b, int j, SubScale s) noexcept { set_sub_scale_k4(b, j, s); }
[[nodiscard]] inline SubScale sub_scale(const BlockQ5_K& b, int j) noexcept { return sub_scale_k4(b, j); }
inline void set_sub_scale(BlockQ5_K& b, int j, SubScale s) noexcept { set_sub_scale_k4(b, j, s); }
[[nodiscard]] inline SubScale sub_scale(const BlockQ6_K& b, int j) noexcept { return {b.scales[j], 0}; }
inline void set_sub_scale(BlockQ6_K& b, int j, SubScale s) noexcept { b.scales[j] = static_cast<std::int8_t>(s.sc); }

namespace detail {

inline BlockQ2_K quantize_q2_k(const float* x) noexcept {
  BlockQ2_K y{};
  std::uint8_t L[256], Laux[16];
  float weights[16], mins[16], scales[16];
  constexpr float q4scale = 15.0f;
  float max_scale = 0.0f, max_min = 0.0f;
  for (int j = 0; j < 16; ++j) {
    for (int l = 0; l < 16; ++l) weights[l] = std::fabs(x[16 * j + l]);
    scales[j] = make_qkx2_quants(16, 3, x + 16 * j, weights, L + 16 * j, &mins[j], Laux, -0.5f, 0.1f, 15, true);
    if (scales[j] > max_scale) max_scale = scales[j];
    if (mins[j] > max_min) max_min = mins[j];
  }
  if (max_scale > 0) {
    const float iscale = q4scale / max_scale;
    for (int j = 0; j < 16; ++j) y.scales[j] = static_cast<std::uint8_t>(nearest_int(iscale * scales[j]));
    y.d = to_fp16(max_scale / q4scale);
  } else {
    y.d = to_fp16(0.0f);
  }
  if (max_min > 0) {
    const float iscale = q4scale / max_min;
    for (int j = 0; j < 16; ++j) {
      y.scales[j] = static_cast<std::uint8_t>(y.scales[j] | (nearest_int(iscale * mins[j]) << 4));
    }
    y.dmin = to_fp16(max_min / q4scale);
  } else {
    y.dmin = to_fp16(0.0f);
  }
  for (int j = 0; j < 16; ++j) {
    const float d = fp16(y.d) * static_cast<float>(y.scales[j] & 0xF);
    if (d == 0.0f) continue;
    const float dm = fp16(y.dmin) * static_cast<float>(y.scales[j] >> 4);
    for (int ii = 0; ii < 16; ++ii) {
      const int l = nearest_int((x[16 * j + ii] + dm) / d);
      L[16 * j + ii] = static_cast<std::uint8_t>(std::max(0, std::min(3, l)));
    }
  }
  pack_quants(y, L);
  return y;
}

inline BlockQ3_K quantize_q3_k(const float* x) noexcept {
  BlockQ3_K y{};
  std::int8_t L[256];
  float scales[16];
  float max_scale = 0.0f, amax = 0.0f;
  for (int j = 0; j < 16; ++j) {
    scales[j] = make_q3_quants(16, 4, x + 16 * j, L + 16 * j);
    const float scale = std::fabs(scales[j]);
    if (scale > amax) {
      amax = scale;
      max_scale = scales[j];
    }
  }
  if (max_scale != 0.0f) {
    const float iscale = -32.0f / max_scale;
    for (int j = 0; j < 16; ++j) {
      auto l = static_cast<std::int8_t>(nearest_int(iscale * scales[j]));
      l = static_cast<std::int8_t>(std::max<int>(-32, std::min<int>(31, l)) + 32);
      if (j < 8) {
        y.scales[j] = static_cast<std::uint8_t>(l & 0xF);
      } else {
        y.scales[j - 8] = static_cast<std::uint8_t>(y.scales[j - 8] | ((l & 0xF) << 4));
      }
      l = static_cast<std::int8_t>(l >> 4);
      y.scales[j % 4 + 8] = static_cast<std::uint8_t>(y.scales[j % 4 + 8] | (l << (2 * (j / 4))));
    }
    y.d = to_fp16(1.0f / iscale);
  } else {
    y.d = to_fp16(0.0f);
  }
  for (int j = 0; j < 16; ++j) {
    const float d = fp16(y.d) * static_cast<float>(scale_q3_k(y.scales, j));
    if (d == 0.0f) continue;
    for (int ii = 0; ii < 16; ++ii) {
      const int l = nearest_int(x[16 * j + ii] / d);
      L[16 * j + ii] = static_cast<std::int8_t>(std::max(-4, std::min(3, l)) + 4);
    }
  }
  std::uint8_t U[256];
  for (int j = 0; j < 256; ++j) U[j] = static_cast<std::uint8_t>(L[j]);
  pack_quants(y, U);
  return y;
}

/// The 6-bit scales and mins of q4_K / q5_K: sub-blocks 0..3 in the low 6 bits of bytes 0..3
/// (scales) and 4..7 (mins); 4..7 as nibbles of bytes 8..11 with their top 2 bits in the high
/// bits of bytes 0..7.
inline void pack_scales_k4(const float* scales, const float* mins, float max_scale, float max_min,
                           std::uint8_t* out) noexcept {
  const float inv_scale = max_scale > 0 ? 63.0f / max_scale : 0.0f;
  const float inv_min = max_min > 0 ? 63.0f / max_min : 0.0f;
  for (int j = 0; j < 8; ++j) {
    auto ls = static_cast<std::uint8_t>(nearest_int(inv_scale * scales[j]));
    auto lm = static_cast<std::uint8_t>(nearest_int(inv_min * mins[j]));
    ls = std::min<std::uint8_t>(63, ls);
    lm = std::min<std::uint8_t>(63, lm);
    if (j < 4) {
      out[j] = ls;
      out[j + 4] = lm;
    } else {
      out[j + 4] = static_cast<std::uint8_t>((ls & 0xF) | ((lm & 0xF) << 4));
      out[j - 4] = static_cast<std::uint8_t>(out[j - 4] | ((ls >> 4) << 6));
      out[j] = static_cast<std::uint8_t>(out[j] | ((lm >> 4) << 6));
    }
  }
}

/// The shared part of q4_K / q5_K: sub-block fits, packed scales, d, dmin and the requantized
/// values L (0..nmax).
template <class Block>
void fit_k4(const float* x, int nmax, float rmin, int nstep, Block& y, std::uint8_t* L) noexcept {
  std::uint8_t Laux[32];
  float weights[32], mins[8], scales[8];
  float max_scale = 0.0f, max_min = 0.0f;
  for (int j = 0; j < 8; ++j) {
    float sum_x2 = 0.0f;
    for (int l = 0; l < 32; ++l) sum_x2 = sum_x2 + unfused(x[32 * j + l] * x[32 * j + l]);
    const float av_x = std::sqrt(sum_x2 / 32.0f);
    for (int l = 0; l < 32; ++l) weights[l] = av_x + std::fabs(x[32 * j + l]);
    scales[j] = make_qkx2_quants(32, nmax, x + 32 * j, weights, L + 32 * j, &mins[j], Laux, rmin, 0.1f, nstep, false);
    if (scales[j] > max_scale) max_scale = scales[j];
    if (mins[j] > max_min) max_min = mins[j];
  }
  pack_scales_k4(scales, mins, max_scale, max_min, y.scales);
  y.d = to_fp16(max_scale / 63.0f);
  y.dmin = to_fp16(max_min / 63.0f);
  for (int j = 0; j < 8; ++j) {
    std::uint8_t sc, m;
    scale_min_k4(j, y.scales, sc, m);
    const float d = fp16(y.d) * static_cast<float>(sc);
    if (d == 0.0f) continue;
    const float dm = fp16(y.dmin) * static_cast<float>(m);
    for (int ii = 0; ii < 32; ++ii) {
      const int l = nearest_int((x[32 * j + ii] + dm) / d);
      L[32 * j + ii] = static_cast<std::uint8_t>(std::max(0, std::min(nmax, l)));
    }
  }
}

inline BlockQ4_K quantize_q4_k(const float* x) noexcept {
  BlockQ4_K y{};
  std::uint8_t L[256];
  fit_k4(x, 15, -1.0f, 20, y, L);
  pack_quants(y, L);
  return y;
}

inline BlockQ5_K quantize_q5_k(const float* x) noexcept {
  BlockQ5_K y{};
  std::uint8_t L[256];
  fit_k4(x, 31, -0.5f, 15, y, L);
  pack_quants(y, L);
  return y;
}

inline BlockQ6_K quantize_q6_k(const float* x) noexcept {
  BlockQ6_K y{};
  std::int8_t L[256];
  float scales[16];
  float max_scale = 0.0f, max_abs_scale = 0.0f;
  for (int ib = 0; ib < 16; ++ib) {
    scales[ib] = make_qx_quants(16, 32, x + 16 * ib, L + 16 * ib);
    const float abs_scale = std::fabs(scales[ib]);
    if (abs_scale > max_abs_scale) {
      max_abs_scale = abs_scale;
      max_scale = scales[ib];
    }
  }
  if (max_abs_scale < 1e-15f) {
    y.d = to_fp16(0.0f);
    return y;
  }
  const float iscale = -128.0f / max_scale;
  y.d = to_fp16(1.0f / iscale);
  for (int ib = 0; ib < 16; ++ib) {
    y.scales[ib] = static_cast<std::int8_t>(std::min(127, nearest_int(iscale * scales[ib])));
  }
  for (int j = 0; j < 16; ++j) {
    const float d = fp16(y.d) * static_cast<float>(y.scales[j]);
    if (d == 0.0f) continue;
    for (int ii = 0; ii < 16; ++ii) {
      const int l = nearest_int(x[16 * j + ii] / d);
      L[16 * j + ii] = static_cast<std::int8_t>(std::max(-32, std::min(31, l)) + 32);
    }
  }
  std::uint8_t U[256];
  for (int j = 0; j < 256; ++j) U[j] = static_cast<std::uint8_t>(L[j]);
  pack_quants(y, U);
  return y;
}

/// make_qp_quants: non-negative values x (sub-block scales or mins) as scale * L, L in
/// [0, nmax], weights qw: a grid of 9 trial scales, then one-at-a-time refinement.
inline float make_qp_quants(int n, int nmax, const float* x, std::uint8_t* L, const float* qw) noexcept {
  float max = 0.0f;
  for (int i = 0; i < n; ++i) max = std::max(max, x[i]);
  if (max < 1e-15f) {
    for (int i = 0; i < n; ++i) L[i] = 0;
    return 0.0f;
  }
  float iscale = static_cast<float>(nmax) / max;
  for (int i = 0; i < n; ++i) L[i] = static_cast<std::uint8_t>(nearest_int(iscale * x[i]));
  const float scale = 1.0f / iscale;
  float best_mse = 0.0f;
  for (int i = 0; i < n; ++i) {
    const float diff = x[i] - unfused(scale * static_cast<float>(L[i]));
    best_mse = best_mse + unfused(qw[i] * diff * diff);
  }
  for (int is = -4; is <= 4; ++is) {
    if (is == 0) continue;
    const float iscale_is = (unfused(0.1f * static_cast<float>(is)) + static_cast<float>(nmax)) / max;
    const float scale_is = 1.0f / iscale_is;
    float mse = 0.0f;
    for (int i = 0; i < n; ++i) {
      const int l = std::min(nmax, nearest_int(iscale_is * x[i]));
      const float diff = x[i] - unfused(scale_is * static_cast<float>(l));
      mse = mse + unfused(qw[i] * diff * diff);
    }
    if (mse < best_mse) {
      best_mse = mse;
      iscale = iscale_is;
    }
  }
  float sumlx = 0.0f, suml2 = 0.0f;
  for (int i = 0; i < n; ++i) {
    const int l = std::min(nmax, nearest_int(iscale * x[i]));
    L[i] = static_cast<std::uint8_t>(l);
    const auto fl = static_cast<float>(l);
    sumlx = sumlx + unfused(qw[i] * x[i] * fl);
    suml2 = suml2 + unfused(qw[i] * fl * fl);
  }
  for (int itry = 0; itry < 5; ++itry) {
    int n_changed = 0;
    for (int i = 0; i < n; ++i) {
      const float w = qw[i];
      const auto li = static_cast<float>(L[i]);
      float slx = sumlx - unfused(w * x[i] * li);
      float sl2 = suml2 - unfused(w * li * li);
      if (slx > 0 && sl2 > 0) {
        const int new_l = std::min(nmax, nearest_int(x[i] * sl2 / slx));
        if (new_l != L[i]) {
          const auto fl = static_cast<float>(new_l);
          slx = slx + unfused(w * x[i] * fl);
          sl2 = sl2 + unfused(w * fl * fl);
          if (slx * slx * suml2 > sumlx * sumlx * sl2) {
            L[i] = static_cast<std::uint8_t>(new_l);
            sumlx = slx;
            suml2 = sl2;
            ++n_changed;
          }
        }
      }
    }
    if (!n_changed) break;
  }
  return suml2 > 0.0f ? sumlx / suml2 : 0.0f;
}

/// sum x^2 over the super-block, accumulated in order.
inline float sum_squares_256(const float* x) noexcept {
  float s = 0.0f;
  for (int l = 0; l < 256; ++l) s = s + unfused(x[l] * x[l]);
  return s;
}

// quantize_row_q*_K_impl with an importance matrix qw (one weight per value of the super-block).

inline BlockQ2_K quantize_q2_k_imatrix(const float* x, const float* qw) noexcept {
  BlockQ2_K y{};
  std::uint8_t L[256], Laux[16], Ls[16], Lm[16];
  float mins[16], scales[16], sw[16], weight[16];
  const float sigma2 = sum_squares_256(x) / 256.0f;
  for (int j = 0; j < 16; ++j) {
    for (int l = 0; l < 16; ++l) weight[l] = qw[16 * j + l] * std::sqrt(sigma2 + unfused(x[16 * j + l] * x[16 * j + l]));
    sw[j] = 0.0f;
    for (int l = 0; l < 16; ++l) sw[j] += weight[l];
    scales[j] = make_qkx2_quants(16, 3, x + 16 * j, weight, L + 16 * j, &mins[j], Laux, -0.9f, 0.05f, 36, false);
  }
  const float dm = make_qp_quants(16, 15, scales, Ls, sw);
  const float mm = make_qp_quants(16, 15, mins, Lm, sw);
  y.d = to_fp16(dm);
  y.dmin = to_fp16(mm);
  for (int j = 0; j < 16; ++j) y.scales[j] = static_cast<std::uint8_t>(Ls[j] | (Lm[j] << 4));
  for (int j = 0; j < 16; ++j) {
    const float d = fp16(y.d) * static_cast<float>(y.scales[j] & 0xF);
    if (d == 0.0f) continue;
    const float m = fp16(y.dmin) * static_cast<float>(y.scales[j] >> 4);
    for (int ii = 0; ii < 16; ++ii) {
      const int l = nearest_int((x[16 * j + ii] + m) / d);
      L[16 * j + ii] = static_cast<std::uint8_t>(std::max(0, std::min(3, l)));
    }
  }
  pack_quants(y, L);
  return y;
}

inline BlockQ3_K quantize_q3_k_imatrix(const float* x, const float* qw) noexcept {
  BlockQ3_K y{};
  std::int8_t L[256], Ls[16];
  float scales[16], weight[16], sw[16];
  const float sigma2 = 2.0f * sum_squares_256(x) / 256.0f;
  for (int j = 0; j < 16; ++j) {
    for (int l = 0; l < 16; ++l) weight[l] = qw[16 * j + l] * std::sqrt(sigma2 + unfused(x[16 * j + l] * x[16 * j + l]));
    float sumw = 0.0f;
    for (int l = 0; l < 16; ++l) sumw += weight[l];
    sw[j] = sumw;
    scales[j] = make_qx_quants(16, 4, x + 16 * j, L + 16 * j, weight);
  }
  const float d_block = make_qx_quants(16, 32, scales, Ls, sw);
  for (int j = 0; j < 16; ++j) {
    int l = Ls[j];
    if (j < 8) {
      y.scales[j] = static_cast<std::uint8_t>(l & 0xF);
    } else {
      y.scales[j - 8] = static_cast<std::uint8_t>(y.scales[j - 8] | ((l & 0xF) << 4));
    }
    l >>= 4;
    y.scales[j % 4 + 8] = static_cast<std::uint8_t>(y.scales[j % 4 + 8] | (l << (2 * (j / 4))));
  }
  y.d = to_fp16(d_block);
  for (int j = 0; j < 16; ++j) {
    const float d = fp16(y.d) * static_cast<float>(scale_q3_k(y.scales, j));
    if (d == 0.0f) continue;
    for (int ii = 0; ii < 16; ++ii) {
      const int l = nearest_int(x[16 * j + ii] / d);
      L[16 * j + ii] = static_cast<std::int8_t>(std::max(-4, std::min(3, l)) + 4);
    }
  }
  std::uint8_t U[256];
  for (int j = 0; j < 256; ++j) U[j] = static_cast<std::uint8_t>(L[j]);
  pack_quants(y, U);
  return y;
}

template <class Block>
void fit_k4_imatrix(const float* x, const float* qw, int nmax, Block& y, std::uint8_t* L) noexcept {
  std::uint8_t Laux[32], Ls[8], Lm[8];
  float weights[32], sw[8], mins[8], scales[8];
  const float sigma2 = 2.0f * sum_squares_256(x) / 256.0f;
  for (int j = 0; j < 8; ++j) {
    for (int l = 0; l < 32; ++l) weights[l] = qw[32 * j + l] * std::sqrt(sigma2 + unfused(x[32 * j + l] * x[32 * j + l]));
    float sumw = 0.0f;
    for (int l = 0; l < 32; ++l) sumw += weights[l];
    sw[j] = sumw;
    scales[j] = make_qkx2_quants(32, nmax, x + 32 * j, weights, L + 32 * j, &mins[j], Laux, -0.9f, 0.05f, 36, false);
  }
  const float d_block = make_qp_quants(8, 63, scales, Ls, sw);
  const float m_block = make_qp_quants(8, 63, mins, Lm, sw);
  for (int j = 0; j < 8; ++j) {
    const std::uint8_t ls = std::min<std::uint8_t>(63, Ls[j]), lm = std::min<std::uint8_t>(63, Lm[j]);
    if (j < 4) {
      y.scales[j] = ls;
      y.scales[j + 4] = lm;
    } else {
      y.scales[j + 4] = static_cast<std::uint8_t>((ls & 0xF) | ((lm & 0xF) << 4));
      y.scales[j - 4] = static_cast<std::uint8_t>(y.scales[j - 4] | ((ls >> 4) << 6));
      y.scales[j] = static_cast<std::uint8_t>(y.scales[j] | ((lm >> 4) << 6));
    }
  }
  y.d = to_fp16(d_block);
  y.dmin = to_fp16(m_block);
  for (int j = 0; j < 8; ++j) {
    std::uint8_t sc, m;
    scale_min_k4(j, y.scales, sc, m);
    const float d = fp16(y.d) * static_cast<float>(sc);
    if (d == 0.0f) continue;
    const float dm = fp16(y.dmin) * static_cast<float>(m);
    for (int ii = 0; ii < 32; ++ii) {
      const int l = nearest_int((x[32 * j + ii] + dm) / d);
      L[32 * j + ii] = static_cast<std::uint8_t>(std::max(0, std::min(nmax, l)));
    }
  }
}

inline BlockQ4_K quantize_q4_k_imatrix(const float* x, const float* qw) noexcept {
  BlockQ4_K y{};
  std::uint8_t L[256];
  fit_k4_imatrix(x, qw, 15, y, L);
  pack_quants(y, L);
  return y;
}

inline BlockQ5_K quantize_q5_k_imatrix(const float* x, const float* qw) noexcept {
  BlockQ5_K y{};
  std::uint8_t L[256];
  fit_k4_imatrix(x, qw, 31, y, L);
  pack_quants(y, L);
  return y;
}

/// q6_K's importance path passes qw itself (not qw * sqrt(sigma2 + x^2)) as the weights.
inline BlockQ6_K quantize_q6_k_imatrix(const float* x, const float* qw) noexcept {
  BlockQ6_K y{};
  std::int8_t L[256];
  float scales[16];
  float max_scale = 0.0f, max_abs_scale = 0.0f;
  for (int ib = 0; ib < 16; ++ib) {
    scales[ib] = make_qx_quants(16, 32, x + 16 * ib, L + 16 * ib, qw + 16 * ib);
    const float abs_scale = std::fabs(scales[ib]);
    if (abs_scale > max_abs_scale) {
      max_abs_scale = abs_scale;
      max_scale = scales[ib];
    }
  }
  if (max_abs_scale < 1e-15f) {
    y.d = to_fp16(0.0f);
    return y;
  }
  const float iscale = -128.0f / max_scale;
  y.d = to_fp16(1.0f / iscale);
  for (int ib = 0; ib < 16; ++ib) {
    y.scales[ib] = static_cast<std::int8_t>(std::min(127, nearest_int(iscale * scales[ib])));
  }
  for (int j = 0; j < 16; ++j) {
    const float d = fp16(y.d) * static_cast<float>(y.scales[j]);
    if (d == 0.0f) continue;
    for (int ii = 0; ii < 16; ++ii) {
      const int l = nearest_int(x[16 * j + ii] / d);
      L[16 * j + ii] = static_cast<std::int8_t>(std::max(-32, std::min(31, l)) + 32);
    }
  }
  std::uint8_t U[256];
  for (int j = 0; j < 256; ++j) U[j] = static_cast<std::uint8_t>(L[j]);
  pack_quants(y, U);
  return y;
}

template <class Block, Block (*Quantize)(const float*) noexcept>
void quantize_super_blocks(std::span<const float> src, std::span<std::byte> dst) {
  for (std::size_t i = 0; i < src.size() / 256; ++i) {
    const Block b = Quantize(src.data() + i * 256);
    std::memcpy(dst.data() + i * sizeof(Block), &b, sizeof(Block));
  }
}

}  // namespace detail

/// True for the types quantize_row_reference writes.
[[nodiscard]] constexpr bool can_quantize_reference(Type t) noexcept {
  switch (t) {
    case Type::F32: case Type::F16: case Type::BF16: case Type::Q4_0: case Type::Q4_1:
    case Type::Q5_0: case Type::Q5_1: case Type::Q8_0: case Type::IQ4_NL: case Type::Q2_K:
    case Type::Q3_K: case Type::Q4_K: case Type::Q5_K: case Type::Q6_K: case Type::TQ1_0:
    case Type::TQ2_0:
      return true;
    default:
      return false;
  }
}

/// llama.cpp's quantization without an importance matrix (ggml_quantize_chunk(type, src, dst, 0,
/// nrows, n_per_row, nullptr)) of src.size() values, byte for byte: the *_ref row quantizers of
/// ggml-quants.c (K-quants included), and for iq4_nl quantize_iq4_nl's scale search. Throws qtl::Error for a type it
/// does not write, a length that is not a multiple of the block size, a dst of the wrong size,
/// or a value that is NaN or infinite.
inline void quantize_row_reference(Type type, std::span<const float> src, std::span<std::byte> dst) {
  constexpr std::string_view kWhere = "ggml::quantize_row_reference";
  if (!can_quantize_reference(type)) fail(kWhere, ": type ", type_name(type), " is not supported");
  detail::checked_row(kWhere, type, src.size(), dst.size(), "dst");
  for (std::size_t i = 0; i < src.size(); ++i) {
    if (!std::isfinite(src[i])) fail(kWhere, ": value ", i, " is not finite: ", src[i]);
  }
  switch (type) {
    case Type::F32:
      if (!src.empty()) std::memcpy(dst.data(), src.data(), dst.size());
      return;
    case Type::F16:
      for (std::size_t i = 0; i < src.size(); ++i) {
        const std::uint16_t h = detail::to_fp16(src[i]);
        std::memcpy(dst.data() + 2 * i, &h, 2);
      }
      return;
    case Type::BF16:  // ggml_compute_fp32_to_bf16: round to nearest even (finite input)
      for (std::size_t i = 0; i < src.size(); ++i) {
        const auto u = std::bit_cast<std::uint32_t>(src[i]);
        const auto h = static_cast<std::uint16_t>((u + (0x7FFFu + ((u >> 16) & 1u))) >> 16);
        std::memcpy(dst.data() + 2 * i, &h, 2);
      }
      return;
    case Type::TQ1_0:
    case Type::TQ2_0:
      return detail::quantize_ternary(type, src, dst);
    case Type::Q2_K: return detail::quantize_super_blocks<BlockQ2_K, detail::quantize_q2_k>(src, dst);
    case Type::Q3_K: return detail::quantize_super_blocks<BlockQ3_K, detail::quantize_q3_k>(src, dst);
    case Type::Q4_K: return detail::quantize_super_blocks<BlockQ4_K, detail::quantize_q4_k>(src, dst);
    case Type::Q5_K: return detail::quantize_super_blocks<BlockQ5_K, detail::quantize_q5_k>(src, dst);
    case Type::Q6_K: return detail::quantize_super_blocks<BlockQ6_K, detail::quantize_q6_k>(src, dst);
    default:
      return detail::quantize_blocks32(type, src, dst);
  }
}

namespace detail {

/// quantize_row_q4_0/q4_1/q5_0/q5_1_impl with quant_weights: weights qw * sqrt(sigma2 + x^2),
/// sigma2 = mean of x^2 over the whole row; q4_0 / q5_0 by make_qx_quants (the codes of its best
/// trial, not requantized with the fp16 scale), q4_1 / q5_1 by make_qkx3_quants.
inline void quantize_legacy_imatrix(Type type, std::span<const float> src, std::span<const float> importance,
                                    std::span<std::byte> dst) {
  const std::size_t n = src.size();
  float sum_x2 = 0.0f;
  for (std::size_t j = 0; j < n; ++j) sum_x2 = sum_x2 + unfused(src[j] * src[j]);
  const float sigma2 = sum_x2 / static_cast<float>(n);
  const auto bytes = static_cast<std::size_t>(type_info(type).type_size);
  const bool affine = type == Type::Q4_1 || type == Type::Q5_1;
  const int nmax = type == Type::Q4_0 ? 8 : type == Type::Q5_0 ? 16 : type == Type::Q4_1 ? 15 : 31;
  float weight[32];
  std::array<std::uint8_t, 32> codes{};
  for (std::size_t ib = 0; ib < n / 32; ++ib) {
    const float* xb = src.data() + 32 * ib;
    const float* qw = importance.data() + 32 * ib;
    for (int j = 0; j < 32; ++j) weight[j] = qw[j] * std::sqrt(sigma2 + unfused(xb[j] * xb[j]));
    float d = 0.0f, m = 0.0f;
    if (affine) {
      std::uint8_t L[32], Laux[32];
      float min = 0.0f;
      d = make_qkx2_quants(32, nmax, xb, weight, L, &min, Laux, -0.9f, 0.05f, 36, false);
      m = -min;
      for (std::size_t j = 0; j < 32; ++j) codes[j] = L[j];
    } else {
      std::int8_t L[32];
      d = make_qx_quants(32, nmax, xb, L, weight);
      for (std::size_t j = 0; j < 32; ++j) codes[j] = static_cast<std::uint8_t>(L[j]);
    }
    pack_block32(type, d, m, codes, dst.subspan(ib * bytes, bytes));
  }
}

}  // namespace detail

/// llama.cpp's quantization of one row with an importance matrix (ggml_quantize_chunk(type, src,
/// dst, 0, 1, n, importance)), byte for byte, for the types whose quantizer uses it: q4_0, q4_1,
/// q5_0, q5_1 (quantize_row_q*_impl: weights qw * sqrt(mean over the row of x^2 + x^2), which
/// is why the per-block policies cannot reproduce them), q2_K .. q6_K (quantize_row_q*_K_impl)
/// and iq4_nl. `importance` holds one weight >= 0 per value (llama.cpp's imatrix entry of each
/// column). Throws qtl::Error for another type, bad sizes, or a value or weight that is not
/// finite (or a negative weight).
inline void quantize_row_importance(Type type, std::span<const float> src, std::span<const float> importance,
                                    std::span<std::byte> dst) {
  constexpr std::string_view kWhere = "ggml::quantize_row_importance";
  switch (type) {
    case Type::Q4_0: case Type::Q4_1: case Type::Q5_0: case Type::Q5_1: case Type::Q2_K: case Type::Q3_K:
    case Type::Q4_K: case Type::Q5_K: case Type::Q6_K: case Type::IQ4_NL: break;
    default: fail(kWhere, ": type ", type_name(type), " does not take an importance matrix here");
  }
  detail::checked_row(kWhere, type, src.size(), dst.size(), "dst");
  if (importance.size() != src.size()) {
    fail(kWhere, ": importance has ", importance.size(), " weights for ", src.size(), " values");
  }
  for (std::size_t i = 0; i < src.size(); ++i) {
    if (!std::isfinite(src[i])) fail(kWhere, ": value ", i, " is not finite: ", src[i]);
    if (!(importance[i] >= 0.0f) || !std::isfinite(importance[i])) {
      fail(kWhere, ": importance ", i, " must be finite and >= 0, got ", importance[i]);
    }
  }
  const auto bytes = static_cast<std::size_t>(type_info(type).type_size);
  const auto bs = static_cast<std::size_t>(type_info(type).block_size);
  if (type == Type::Q4_0 || type == Type::Q4_1 || type == Type::Q5_0 || type == Type::Q5_1) {
    return detail::quantize_legacy_imatrix(type, src, importance, dst);
  }
  for (std::size_t i = 0; i < src.size() / bs; ++i) {
    const float* x = src.data() + i * bs;
    const float* qw = importance.data() + i * bs;
    std::byte* out = dst.data() + i * bytes;
    auto store = [&](const auto& b) { std::memcpy(out, &b, sizeof b); };
    switch (type) {
      case Type::Q2_K: store(detail::quantize_q2_k_imatrix(x, qw)); break;
      case Type::Q3_K: store(detail::quantize_q3_k_imatrix(x, qw)); break;
      case Type::Q4_K: store(detail::quantize_q4_k_imatrix(x, qw)); break;
      case Type::Q5_K: store(detail::quantize_q5_k_imatrix(x, qw)); break;
      case Type::Q6_K: store(detail::quantize_q6_k_imatrix(x, qw)); break;
      default: {
        const std::span<const float> xb(x, 32);
        const BlockScale s = rule::iq4_nl(xb, std::span<const float>(qw, 32));
        std::array<std::uint8_t, 32> codes{};
        for (std::size_t j = 0; j < 32; ++j) codes[j] = rule::code_iq4_nl(xb[j], s.id);
        pack_block32(type, s.d, 0.0f, codes, std::span<std::byte>(out, bytes));
      }
    }
  }
}

}  // namespace qtl::ggml
