#include <gtest/gtest.h>
#include <qtl/kernels.hpp>

#include <cstdint>
#include <random>

#include "test_util.hpp"

namespace {

TEST(CodeBlocks, EveryCodeInEveryPositionRoundTrips) {
  for (int bits : {2, 3, 4, 5, 6, 8}) {
    std::mt19937 rng(static_cast<unsigned>(bits));
    for (int trial = 0; trial < 200; ++trial) {
      std::uint8_t codes[32], block[32] = {};
      for (auto& c : codes) c = static_cast<std::uint8_t>(rng() & ((1u << bits) - 1));
      qtl::pack_code_block(bits, codes, block);
      for (int i = 0; i < 32; ++i) ASSERT_EQ(qtl::code_in_block(bits, block, i), codes[i]) << bits << " bits, code " << i;
    }
  }
}

TEST(CodeBlocks, DocumentedBitOrder) {
  // A reader can decode a block by hand from the comment in blocks.hpp.
  std::uint8_t codes[32] = {}, block[32] = {};
  codes[9] = 3;   // 2-bit: byte 9 % 8 = 1, bits 2*(9/8) = 2..3
  qtl::pack_code_block(2, codes, block);
  EXPECT_EQ(block[1], 0b00001100);
  codes[9] = 5;   // 3-bit: low bits 01 at byte 1 bits 2..3; high bit at qh[9 % 4 = 1] bit 9/4 = 2
  qtl::pack_code_block(3, codes, block);
  EXPECT_EQ(block[1], 0b00000100);
  EXPECT_EQ(block[8 + 1], 0b00000100);
  codes[9] = 0;
  codes[20] = 0xA;  // 4-bit: high nibble of byte 4
  qtl::pack_code_block(4, codes, block);
  EXPECT_EQ(block[4], 0xA0);
  codes[20] = 0x1A;  // 5-bit: low nibble as 4-bit; bit 4 at qh[20 % 4 = 0] bit 20/4 = 5
  qtl::pack_code_block(5, codes, block);
  EXPECT_EQ(block[4], 0xA0);
  EXPECT_EQ(block[16 + 0], 0b00100000);
  codes[20] = 0x2A;  // 6-bit: bits 4..5 (10) as the 2-bit code 20 of a BlockQ2 at byte 16
  qtl::pack_code_block(6, codes, block);
  EXPECT_EQ(block[4], 0xA0);
  EXPECT_EQ(block[16 + 20 % 8], 0b00100000);  // byte 4 of the plane, bits 2*(20/8) = 4..5
}

template <int B, qtl::Mode M>
void round_trip(qtl::Index rows, qtl::Index cols, const qtl::Granularity& g, unsigned seed) {
  const auto w = qtl::test::gaussian(rows, cols, seed);
  const auto q = qtl::quantize_matrix(qtl::Uniform<B, M>{}, g, w);
  const auto p = qtl::pack(q);
  EXPECT_EQ(reinterpret_cast<std::uintptr_t>(p.code_data()) % 64, 0u);
  const auto back = qtl::unpack<B, M>(p);
  ASSERT_EQ(back.codes, q.codes) << B << " bits " << rows << "x" << cols << " " << qtl::to_string(g);
  ASSERT_EQ(back.params, q.params);
  ASSERT_EQ(back.layout, q.layout);
  // padding past the last column decodes to exactly zero
  const auto v = p.view();
  for (qtl::Index r = 0; r < rows; ++r) {
    for (qtl::Index c = cols; c < p.blocks_per_row() * 32; ++c) {
      const auto* block = p.code_data() + r * p.row_bytes() + (c / 32) * static_cast<qtl::Index>(qtl::code_block_bytes(B));
      const int code = qtl::code_in_block(B, block, static_cast<int>(c % 32));
      const auto& last = q.params_at(r, cols - 1);
      ASSERT_EQ(last.scale * (static_cast<float>(code) - last.zero), 0.0f);
    }
  }
  (void)v;
}

template <int B, qtl::Mode M>
void round_trips_for_bits() {
  unsigned seed = 0;
  for (auto [rows, cols] : {std::pair<qtl::Index, qtl::Index>{1, 1}, {1, 7}, {3, 1}, {5, 33}, {4, 172}, {17, 64}, {2, 100}}) {
    for (const qtl::Granularity& g : {qtl::Granularity{qtl::PerTensor{}}, qtl::Granularity{qtl::PerRow{}},
                                      qtl::Granularity{qtl::PerGroup{32}}, qtl::Granularity{qtl::PerGroup{64}},
                                      qtl::Granularity{qtl::PerGroup{7}}}) {
      round_trip<B, M>(rows, cols, g, ++seed);
    }
  }
}

TEST(PackedMatrix, RoundTripsBitExactlyForEveryWidthAndShape) {
  round_trips_for_bits<2, qtl::Mode::Asymmetric>();
  round_trips_for_bits<3, qtl::Mode::Asymmetric>();
  round_trips_for_bits<4, qtl::Mode::Asymmetric>();
  round_trips_for_bits<5, qtl::Mode::Asymmetric>();
  round_trips_for_bits<6, qtl::Mode::Asymmetric>();
  round_trips_for_bits<8, qtl::Mode::Asymmetric>();
  round_trips_for_bits<2, qtl::Mode::Symmetric>();
  round_trips_for_bits<3, qtl::Mode::Symmetric>();
  round_trips_for_bits<4, qtl::Mode::Symmetric>();
  round_trips_for_bits<5, qtl::Mode::Symmetric>();
  round_trips_for_bits<6, qtl::Mode::Symmetric>();
  round_trips_for_bits<8, qtl::Mode::Symmetric>();
}

TEST(PackedMatrix, StorageBitsPerWeightCountsEveryByte) {
  const auto w = qtl::test::gaussian(4, 64, 1);
  const auto p = qtl::pack(qtl::quantize_matrix(qtl::Uniform<4, qtl::Mode::Symmetric>{}, qtl::PerGroup{32}, w));
  EXPECT_DOUBLE_EQ(p.storage_bits_per_weight(), 4.5);  // as llama.cpp's q4_0
  const auto w2 = qtl::test::gaussian(4, 172, 1);      // 172 codes take 6 blocks = 192
  const auto p2 = qtl::pack(qtl::quantize_matrix(qtl::Uniform<2>{}, qtl::PerRow{}, w2));
  EXPECT_DOUBLE_EQ(p2.storage_bits_per_weight(), (4.0 * (6 * 8) * 8 + 4 * 24) / (4.0 * 172));
}

TEST(PackedMatrix, UnpackWithWrongFormatThrows) {
  const auto w = qtl::test::gaussian(2, 40, 1);
  const auto p = qtl::pack(qtl::quantize_matrix(qtl::Uniform<4>{}, qtl::PerRow{}, w));
  EXPECT_THROW((void)(qtl::unpack<3, qtl::Mode::Asymmetric>(p)), qtl::Error);
  EXPECT_THROW((void)(qtl::unpack<4, qtl::Mode::Symmetric>(p)), qtl::Error);
}

}  // namespace
