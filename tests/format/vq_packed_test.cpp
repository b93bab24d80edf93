#include <gtest/gtest.h>
#include <qtl/format/vq_packed.hpp>
#include <qtl/quant/e8p.hpp>

#include "test_util.hpp"

namespace {

template <class V>
void round_trip_vq(const V& v, qtl::VQGranularity g, qtl::Index rows, qtl::Index cols) {
  const auto w = qtl::test::gaussian(rows, cols, 17, 0.05f);
  const auto m = qtl::quantize_vectors(v, g, w);
  const auto p = qtl::pack_vq(m);
  const auto back = qtl::unpack_vq(p, v);
  EXPECT_EQ(back.layout, m.layout) << v.name();
  EXPECT_EQ(back.indices, m.indices) << v.name();
  EXPECT_EQ(back.params, m.params) << v.name();
  EXPECT_EQ(qtl::dequantize(back), qtl::dequantize(m));
  // storage: whole bytes per row of indices + the parameter words
  const double idx_bytes = double(rows) * double((m.layout.vectors_per_row() * V::kBits + 7) / 8);
  const double expected = 8.0 * (idx_bytes + 2.0 * V::kParamWords * double(m.params.size())) / double(rows * cols);
  EXPECT_DOUBLE_EQ(p.storage_bits_per_weight(), expected);
  EXPECT_NEAR(p.storage_bits_per_weight(), qtl::bits_per_weight(m), 8.0 / double(cols));
}

TEST(VQPacked, RoundTripsBitExactly) {
  round_trip_vq(qtl::KMeansVQ<2, 3>{}, {}, 9, 35);     // odd bits, padded vector
  round_trip_vq(qtl::KMeansVQ<4, 8>{}, {}, 64, 68);
  round_trip_vq(qtl::KMeansVQ<8, 5>{}, {8}, 40, 172);  // 172 = 21 x 8 + 4
  round_trip_vq(qtl::ResidualVQ<qtl::KMeansVQ<4, 6>, qtl::KMeansVQ<4, 3>>{}, {16}, 32, 64);
  round_trip_vq(qtl::E8P{}, {1}, 5, 172);
  round_trip_vq(qtl::E8P{}, {}, 3, 64);
  round_trip_vq(qtl::ResidualVQ<qtl::E8P, qtl::KMeansVQ<8, 4>>{}, {}, 16, 64);
}

TEST(VQPacked, IndexBitOrderAndMismatch) {
  std::uint8_t row[4] = {};
  qtl::write_packed_index(row, 0, 5, 0b10110);
  qtl::write_packed_index(row, 1, 5, 0b00111);
  EXPECT_EQ(row[0], 0b11110110);  // bits 0-4: first index, bits 5-7: low bits of the second
  EXPECT_EQ(row[1], 0b00000000);
  EXPECT_EQ(qtl::read_packed_index(row, 0, 5), 0b10110u);
  EXPECT_EQ(qtl::read_packed_index(row, 1, 5), 0b00111u);
  const auto p = qtl::pack_vq(qtl::quantize_vectors(qtl::KMeansVQ<4, 4>{}, {}, qtl::test::gaussian(8, 16, 1)));
  EXPECT_THROW((void)qtl::unpack_vq(p, qtl::KMeansVQ<4, 5>{}), qtl::Error);
  EXPECT_THROW((void)qtl::unpack_vq(p, qtl::KMeansVQ<2, 4>{}), qtl::Error);
  EXPECT_THROW((void)qtl::pack_vq(qtl::VQMatrix<qtl::E8P>{}), qtl::Error);
}

}  // namespace
