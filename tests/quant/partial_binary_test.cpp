#include <gtest/gtest.h>
#include <qtl/quant/partial_binary.hpp>

#include <limits>

#include "quant/family_test_util.hpp"
#include "test_util.hpp"

namespace {

using qtl::SalientStorage;

TEST(PartialBinary, SparseListKeepsTheLargestWeightsAndHelps) {
  auto w = qtl::test::gaussian(16, 96, 3, 0.05f);
  w(2, 5) = 1.0f;  // outliers must be selected
  w(9, 40) = -2.0f;
  qtl::PartialBinaryOptions opt;
  opt.salient_fraction = 0.02;
  const auto m = qtl::quantize_partial_binary(qtl::PerGroup{32}, w, opt);
  EXPECT_EQ(m.salient_count(), static_cast<std::size_t>(std::llround(0.02 * 16 * 96)));
  const qtl::RowMatrixXf wh = qtl::dequantize(m);
  // salient entries are nearly exact (8-bit residual), the others are the binary part
  EXPECT_NEAR(wh(2, 5), 1.0f, 2e-2);
  EXPECT_NEAR(wh(9, 40), -2.0f, 2e-2);
  const auto plain = qtl::quantize_matrix(qtl::Binary<>{}, qtl::PerGroup{32}, w);
  EXPECT_LT((w - wh).squaredNorm(), 0.7 * (w - qtl::dequantize(plain)).squaredNorm());
  // alphas come from the non-salient weights: the group with the outlier keeps a small alpha
  EXPECT_LT(m.binary.params_at(2, 5).scale, 0.1f);
  EXPECT_GT(plain.params_at(2, 5).scale, m.binary.params_at(2, 5).scale);
  const double n = 16.0 * 96;
  const double expected = (n + 16.0 * 16 * 3 + 16.0 * 16 + 24.0 * m.salient_count() + 32.0 * 17) / n;
  EXPECT_DOUBLE_EQ(qtl::bits_per_weight(m), expected);
}

TEST(PartialBinary, ChannelMaskSelectsImportantChannels) {
  const auto w = qtl::test::gaussian(24, 64, 4, 0.05f);
  qtl::PartialBinaryOptions opt;
  opt.storage = SalientStorage::ChannelMask;
  opt.salient_fraction = 4.0 / 64;
  opt.column_importance = qtl::VectorXf::Ones(64);
  opt.column_importance[7] = opt.column_importance[50] = 1000.0f;
  const auto m = qtl::quantize_partial_binary(qtl::PerRow{}, w, opt);
  ASSERT_EQ(m.channels.size(), 4u);
  EXPECT_NE(std::find(m.channels.begin(), m.channels.end(), 7), m.channels.end());
  EXPECT_NE(std::find(m.channels.begin(), m.channels.end(), 50), m.channels.end());
  EXPECT_EQ(m.values.size(), 24u * 4);
  const qtl::RowMatrixXf wh = qtl::dequantize(m);
  for (int r = 0; r < 24; ++r) EXPECT_NEAR(wh(r, 7), w(r, 7), 0.01f);
  EXPECT_DOUBLE_EQ(qtl::bits_per_weight(m), (24.0 * 64 + 16.0 * 24 + 16.0 * 24 + 64 + 8.0 * 96) / (24.0 * 64));
}

TEST(PartialBinary, PacksRoundTripsAndGemvEqualsDequantizedProduct) {
  for (auto storage : {SalientStorage::SparseList, SalientStorage::ChannelMask}) {
    const auto w = qtl::test::gaussian(10, 70, 5, 0.05f);
    qtl::PartialBinaryOptions opt;
    opt.storage = storage;
    opt.salient_fraction = 0.1;
    const auto m = qtl::quantize_partial_binary(qtl::PerGroup{32}, w, opt);
    const auto p = qtl::pack_partial_binary(m);
    EXPECT_EQ(qtl::unpack_partial_binary(p), m);
    const qtl::VectorXf x = qtl::test::gaussian(70, 1, 6);
    const Eigen::VectorXd ref = qtl::dequantize(m).cast<double>() * x.cast<double>();
    const qtl::VectorXf y = qtl::gemv_partial_binary_reference(p, x);
    for (int r = 0; r < 10; ++r) EXPECT_NEAR(y[r], ref[r], 1e-5 * (1 + std::fabs(ref[r])));
    // packed bytes: signs padded to 32-code blocks, alphas, the shared {-1, +1} table, row
    // scales, and the list (offsets, columns, values) or the mask (bytes) with its values
    const double nnz = double(m.values.size());
    const double extra = storage == SalientStorage::SparseList ? 32.0 * 11 + 16.0 * nnz + 8.0 * nnz : 8.0 * 9 + 8.0 * nnz;
    EXPECT_DOUBLE_EQ(p.storage_bits_per_weight(), (10.0 * 96 + 16.0 * 30 + 512 + 16.0 * 10 + extra) / 700.0);
  }
}

TEST(PartialBinary, BadInput) {
  const auto w = qtl::test::gaussian(4, 8, 1);
  qtl::PartialBinaryOptions opt;
  opt.salient_fraction = 1.0;
  EXPECT_THROW((void)qtl::quantize_partial_binary(qtl::PerRow{}, w, opt), qtl::Error);
  opt.salient_fraction = -0.1;
  EXPECT_THROW((void)qtl::quantize_partial_binary(qtl::PerRow{}, w, opt), qtl::Error);
  opt.salient_fraction = std::numeric_limits<double>::quiet_NaN();
  EXPECT_THROW((void)qtl::quantize_partial_binary(qtl::PerRow{}, w, opt), qtl::Error);
  opt = {};
  qtl::RowMatrixXf bad = w;
  bad(0, 0) = std::numeric_limits<float>::infinity();
  EXPECT_THROW((void)qtl::quantize_partial_binary(qtl::PerRow{}, bad, opt), qtl::Error);
  opt.column_importance = qtl::VectorXf::Ones(7);
  EXPECT_THROW((void)qtl::quantize_partial_binary(qtl::PerRow{}, w, opt), qtl::Error);
  EXPECT_THROW((void)qtl::quantize_partial_binary(qtl::PerRow{}, qtl::RowMatrixXf(0, 3), {}), qtl::Error);
}

}  // namespace
