#include <gtest/gtest.h>
#include <qtl/format/ternary_packed.hpp>
#include <qtl/format/table_packed.hpp>

#include "test_util.hpp"

namespace {

TEST(TernaryPacked, EveryFiveTritPatternRoundTrips) {
  for (int v = 0; v < 243; ++v) {
    std::uint8_t t[5];
    int u = v;
    for (int i = 4; i >= 0; --i) {
      t[i] = static_cast<std::uint8_t>(u % 3);
      u /= 3;
    }
    const std::uint8_t q = qtl::pack_trits(t);
    for (int i = 0; i < 5; ++i) ASSERT_EQ(qtl::trit_in_byte(q, i), t[i]) << "v=" << v << " i=" << i;
  }
}

TEST(TernaryPacked, MatrixRoundTripsAndCostsOnePointSixBits) {
  for (auto g : {qtl::Granularity{qtl::PerGroup{64}}, qtl::Granularity{qtl::PerRow{}}, qtl::Granularity{qtl::PerTensor{}}}) {
    const auto w = qtl::test::gaussian(7, 172, 3, 0.05f);
    const auto m = qtl::quantize_matrix(qtl::Ternary{qtl::TernaryRule::MseOptimal}, g, w);
    const auto p = qtl::pack_ternary_base3(m);
    const auto back = qtl::unpack_ternary_base3(p);
    EXPECT_EQ(back.codes, m.codes);
    EXPECT_EQ(back.params, m.params);
    EXPECT_EQ(back.layout, m.layout);
    const double expected = (7.0 * 35 * 8 + 16.0 * double(m.params.size())) / (7.0 * 172);
    EXPECT_DOUBLE_EQ(p.storage_bits_per_weight(), expected);
    // the 2-bit form of the same matrix is the table format
    EXPECT_GT(qtl::pack_table(m).storage_bits_per_weight(), 2.0);
  }
  EXPECT_THROW((void)qtl::pack_ternary_base3(qtl::QuantizedMatrix<qtl::Ternary>{}), qtl::Error);
}

}  // namespace
