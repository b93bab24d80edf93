// qtl/format/blocks.hpp — bit-packed code blocks of 32 codes, for 2, 3, 4, 5, 6 and 8 bits.
//
// A block holds the codes of 32 consecutive weights of one row (weights i = 0..31). The layouts
// put codes that SIMD code wants side by side into the same bit positions of consecutive bytes,
// so one shift and one mask unpack a whole vector of codes (ggml's q4_0 does the same for 4 bits).
//
//   BlockQ2 (8 bytes)  code i lives in qs[i % 8], bits 2*(i/8) .. 2*(i/8)+1
//                      (byte j holds codes j, j+8, j+16, j+24 from its low bits up)
//   BlockQ3 (12 bytes) low 2 bits of code i as in BlockQ2, in ql[8];
//                      high bit of code i in qh[i % 4], bit i/4
//   BlockQ4 (16 bytes) code i < 16 in the low nibble of qs[i], code i >= 16 in the high nibble
//                      of qs[i - 16]
//   BlockQ5 (20 bytes) low 4 bits of code i as in BlockQ4, in ql[16];
//                      bit 4 of code i in qh[i % 4], bit i/4 (as BlockQ3's high bit)
//   BlockQ6 (24 bytes) low 4 bits of code i as in BlockQ4, in ql[16];
//                      bits 4..5 of code i in qh[8] as BlockQ2 stores a 2-bit code
//   BlockQ8 (32 bytes) code i is qs[i]
// 5 and 6 bits are the 4-bit block plus high-bit planes (ggml's q5_0 and q6_K split their codes
// the same way), so one 4-bit unpack and one plane unpack give a vector of codes.
//
// Everything here is plain data and plain C++: kernel code includes it, so no Eigen.
#pragma once

#include <cstddef>
#include <cstdint>
#include <type_traits>

namespace qtl {

inline constexpr int kCodesPerBlock = 32;

struct BlockQ2 {
  std::uint8_t qs[8];
};
struct BlockQ3 {
  std::uint8_t ql[8];
  std::uint8_t qh[4];
};
struct BlockQ4 {
  std::uint8_t qs[16];
};
struct BlockQ5 {
  std::uint8_t ql[16];
  std::uint8_t qh[4];
};
struct BlockQ6 {
  std::uint8_t ql[16];
  std::uint8_t qh[8];
};
struct BlockQ8 {
  std::uint8_t qs[32];
};
static_assert(sizeof(BlockQ2) == 8 && std::is_trivially_copyable_v<BlockQ2>);
static_assert(sizeof(BlockQ3) == 12 && std::is_trivially_copyable_v<BlockQ3>);
static_assert(sizeof(BlockQ4) == 16 && std::is_trivially_copyable_v<BlockQ4>);
static_assert(sizeof(BlockQ5) == 20 && std::is_trivially_copyable_v<BlockQ5>);
static_assert(sizeof(BlockQ6) == 24 && std::is_trivially_copyable_v<BlockQ6>);
static_assert(sizeof(BlockQ8) == 32 && std::is_trivially_copyable_v<BlockQ8>);

/// Bytes of one 32-code block of `bits`-bit codes (0 for an unsupported width).
[[nodiscard]] constexpr std::size_t code_block_bytes(int bits) noexcept {
  switch (bits) {
    case 2: return sizeof(BlockQ2);
    case 3: return sizeof(BlockQ3);
    case 4: return sizeof(BlockQ4);
    case 5: return sizeof(BlockQ5);
    case 6: return sizeof(BlockQ6);
    case 8: return sizeof(BlockQ8);
    default: return 0;
  }
}

[[nodiscard]] constexpr bool is_packable_bits(int bits) noexcept {
  return code_block_bytes(bits) != 0;
}

/// Writes 32 codes (each < 2^bits) into the block at `dst` (code_block_bytes(bits) bytes).
inline void pack_code_block(int bits, const std::uint8_t* codes, std::uint8_t* dst) noexcept {
  switch (bits) {
    case 2:
      for (int j = 0; j < 8; ++j) {
        dst[j] = static_cast<std::uint8_t>((codes[j] & 3) | (codes[j + 8] & 3) << 2 |
                                           (codes[j + 16] & 3) << 4 | (codes[j + 24] & 3) << 6);
      }
      break;
    case 3:
      for (int j = 0; j < 8; ++j) {
        dst[j] = static_cast<std::uint8_t>((codes[j] & 3) | (codes[j + 8] & 3) << 2 |
                                           (codes[j + 16] & 3) << 4 | (codes[j + 24] & 3) << 6);
      }
      for (int j = 0; j < 4; ++j) {
        std::uint8_t h = 0;
        for (int k = 0; k < 8; ++k) h = static_cast<std::uint8_t>(h | ((codes[j + 4 * k] >> 2) & 1) << k);
        dst[8 + j] = h;
      }
      break;
    case 4:
      for (int j = 0; j < 16; ++j) {
        dst[j] = static_cast<std::uint8_t>((codes[j] & 15) | (codes[j + 16] & 15) << 4);
      }
      break;
    case 5:
    case 6: {
      pack_code_block(4, codes, dst);  // the low nibbles (the 4-bit block masks each code)
      if (bits == 5) {  // bit 4 of code j + 4k is bit k of qh[j]
        for (int j = 0; j < 4; ++j) {
          std::uint8_t h = 0;
          for (int k = 0; k < 8; ++k) h = static_cast<std::uint8_t>(h | ((codes[j + 4 * k] >> 4) & 1) << k);
          dst[16 + j] = h;
        }
      } else {  // bits 4..5 as a BlockQ2
        std::uint8_t high[32];
        for (int i = 0; i < 32; ++i) high[i] = static_cast<std::uint8_t>(codes[i] >> 4);
        pack_code_block(2, high, dst + 16);
      }
      break;
    }
    case 8:
      for (int j = 0; j < 32; ++j) dst[j] = codes[j];
      break;
    default:
      break;
  }
}

/// Reads code i (0..31) of the block at `src`.
[[nodiscard]] inline std::uint8_t code_in_block(int bits, const std::uint8_t* src, int i) noexcept {
  switch (bits) {
    case 2: return static_cast<std::uint8_t>((src[i % 8] >> (2 * (i / 8))) & 3);
    case 3:
      return static_cast<std::uint8_t>(((src[i % 8] >> (2 * (i / 8))) & 3) |
                                       ((src[8 + i % 4] >> (i / 4)) & 1) << 2);
    case 4: return static_cast<std::uint8_t>(i < 16 ? (src[i] & 15) : (src[i - 16] >> 4));
    case 5: return static_cast<std::uint8_t>(code_in_block(4, src, i) | ((src[16 + i % 4] >> (i / 4)) & 1) << 4);
    case 6: return static_cast<std::uint8_t>(code_in_block(4, src, i) | code_in_block(2, src + 16, i) << 4);
    case 8: return src[i];
    default: return 0;
  }
}

/// Plain view of a packed uniform matrix: all a kernel sees.
///   W(r, c) = half_to_float(scales[p]) * (code(r, c) - zero(p)),  p = param set of (r, c)
/// where zero(p) = zeros[p], or symmetric_zero when zeros is null.
struct PackedUniformView {
  const std::uint8_t* codes = nullptr;   ///< rows * row_bytes bytes of blocks
  const std::uint16_t* scales = nullptr; ///< fp16 bits, one per parameter set
  const std::uint8_t* zeros = nullptr;   ///< one per parameter set, or null (symmetric)
  int bits = 4;
  int symmetric_zero = 0;
  std::ptrdiff_t rows = 0;
  std::ptrdiff_t cols = 0;
  std::ptrdiff_t row_bytes = 0;       ///< blocks_per_row * code_block_bytes(bits)
  std::ptrdiff_t group_size = 0;      ///< columns per parameter set within a row
  std::ptrdiff_t groups_per_row = 0;  ///< 0 means one parameter set for the whole matrix
};

}  // namespace qtl
