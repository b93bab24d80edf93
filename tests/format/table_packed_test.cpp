#include <gtest/gtest.h>
#include <qtl/format/table_packed.hpp>
#include <qtl/quant/binary.hpp>
#include <qtl/quant/codebook.hpp>
#include <qtl/quant/log2.hpp>
#include <qtl/quant/ternary.hpp>

#include <vector>

#include "test_util.hpp"

namespace {

template <class Q>
void round_trip_table(const Q& q, const qtl::Granularity& g, qtl::Index rows, qtl::Index cols, unsigned seed) {
  const auto w = qtl::test::gaussian(rows, cols, seed, 0.05f);
  const auto m = qtl::quantize_matrix(q, g, w);
  const auto p = qtl::pack_table(m);
  EXPECT_EQ(p.bits(), Q::kBits);
  EXPECT_EQ(p.form(), Q::kTableForm);
  const auto back = qtl::unpack_table(p, q);
  EXPECT_EQ(back.layout, m.layout) << q.name();
  EXPECT_EQ(back.codes, m.codes) << q.name();
  EXPECT_EQ(back.params, m.params) << q.name();
  // the decode table of every group reproduces decode() bit for bit
  for (std::size_t s = 0; s < m.params.size(); ++s) {
    const auto t = qtl::decode_table(q, m.params[s]);
    for (int k = 0; k < 16; ++k) {
      if (k >= (1 << Q::kBits)) {
        EXPECT_EQ(t[k], 0.0f);
        continue;
      }
      float packed = 0.0f;
      if constexpr (Q::kTableForm == qtl::TableForm::ScaledShared) {
        packed = qtl::detail::half_to_float(p.scales()[s]) * p.shared_table()[k];
      } else {
        packed = qtl::detail::half_to_float(p.tables()[(s << Q::kBits) + k]);
      }
      EXPECT_EQ(t[k], packed) << q.name() << " set " << s << " code " << k;
    }
  }
  // honest storage: codes (padded to 32) + per-set data (+ the shared table)
  const double n = double(rows) * double(cols);
  const double padded_codes = double(rows) * double((cols + 31) / 32 * 32) * Q::kBits;
  const double sets = double(m.params.size());
  const double expected = Q::kTableForm == qtl::TableForm::ScaledShared ? (padded_codes + 16 * sets + 512) / n
                                                                        : (padded_codes + 16 * sets * (1 << Q::kBits)) / n;
  EXPECT_DOUBLE_EQ(p.storage_bits_per_weight(), expected);
}

template <class Q>
void round_trip_shapes(const Q& q) {
  round_trip_table(q, qtl::PerGroup{32}, 5, 96, 1);
  round_trip_table(q, qtl::PerGroup{64}, 3, 172, 2);  // short last group, padded last block
  round_trip_table(q, qtl::PerRow{}, 7, 33, 3);
  round_trip_table(q, qtl::PerTensor{}, 4, 64, 4);
  round_trip_table(q, qtl::PerGroup{40}, 1, 40, 5);
}

TEST(TablePacked, EveryTableFamilyRoundTripsBitExactly) {
  round_trip_shapes(qtl::Log2<2>{});
  round_trip_shapes(qtl::Log2<3>{});
  round_trip_shapes(qtl::Log2<4>{});
  round_trip_shapes(qtl::Log2<4, qtl::Log2Base::Sqrt2>{});
  round_trip_shapes(qtl::PowerGrid<3>{1.5f});
  round_trip_shapes(qtl::NF4{});
  round_trip_shapes(qtl::FP4{});
  round_trip_shapes(qtl::ScaledCodebook<3>{qtl::DecodeTable{-0.9f, -0.4f, -0.1f, 0.0f, 0.1f, 0.3f, 0.6f, 1.1f}});
  round_trip_shapes(qtl::KMeansCodebook<1>{});
  round_trip_shapes(qtl::KMeansCodebook<2>{});
  round_trip_shapes(qtl::KMeansCodebook<3>{});
  round_trip_shapes(qtl::KMeansCodebook<4>{});
  round_trip_shapes(qtl::Binary<false>{});
  round_trip_shapes(qtl::Binary<true>{});
  round_trip_shapes(qtl::ResidualBinary{});
  round_trip_shapes(qtl::Ternary{qtl::TernaryRule::AbsMean});
  round_trip_shapes(qtl::Ternary{qtl::TernaryRule::MseOptimal});
}

TEST(TablePacked, OneBitBlockLayout) {
  std::uint8_t codes[32] = {};
  codes[0] = codes[5] = codes[31] = 1;
  qtl::BlockQ1 b{};
  qtl::pack_table_block(1, codes, b.qs);
  EXPECT_EQ(b.qs[0], 1);           // code 0 -> byte 0 bit 0
  EXPECT_EQ(b.qs[1], 1 << 1);      // code 5 -> byte 1 bit 1
  EXPECT_EQ(b.qs[3], 1 << 7);      // code 31 -> byte 3 bit 7
  for (int i = 0; i < 32; ++i) EXPECT_EQ(qtl::table_code_in_block(1, b.qs, i), codes[i]);
}

TEST(TablePacked, UnpackRejectsAnotherQuantizer) {
  const auto w = qtl::test::gaussian(2, 32, 1);
  const auto p = qtl::pack_table(qtl::quantize_matrix(qtl::PowerGrid<3>{1.5f}, qtl::PerRow{}, w));
  EXPECT_THROW((void)qtl::unpack_table(p, qtl::PowerGrid<3>{2.0f}), qtl::Error);  // other gamma
  EXPECT_THROW((void)qtl::unpack_table(p, qtl::Log2<3>{}), qtl::Error);
  EXPECT_THROW((void)qtl::unpack_table(p, qtl::KMeansCodebook<3>{}), qtl::Error);
  EXPECT_THROW((void)qtl::unpack_table(p, qtl::NF4{}), qtl::Error);
  EXPECT_THROW((void)qtl::pack_table(qtl::QuantizedMatrix<qtl::NF4>{}), qtl::Error);
}

}  // namespace
