#include <gtest/gtest.h>
#include <qtl/kernels.hpp>

#include <cmath>
#include <limits>

#include "test_util.hpp"

namespace {

TEST(GroupLayout, ShortLastGroup) {
  const auto L = qtl::make_group_layout(qtl::PerGroup{32}, 3, 172);
  EXPECT_EQ(L.groups_per_row(), 6);
  EXPECT_EQ(L.group_width(5), 172 - 160);
  EXPECT_EQ(L.param_index(2, 171), 2 * 6 + 5);
  const auto T = qtl::make_group_layout(qtl::PerTensor{}, 3, 172);
  EXPECT_EQ(T.num_param_sets(), 1);
  const auto R = qtl::make_group_layout(qtl::PerRow{}, 3, 172);
  EXPECT_EQ(R.num_param_sets(), 3);
  const auto big = qtl::make_group_layout(qtl::PerGroup{1000}, 3, 172);
  EXPECT_EQ(big.groups_per_row(), 1);
}

TEST(QuantizeMatrix, EachGroupUsesItsOwnParameters) {
  // Rows with very different magnitudes per group: per-group error must be far below per-tensor.
  auto w = qtl::test::gaussian(8, 172, 3);
  for (int c = 0; c < 172; ++c) w.col(c) *= (c / 32 % 2) ? 100.0f : 0.01f;
  const double g = qtl::sqnr_db(w, qtl::dequantize(qtl::quantize_matrix(qtl::Uniform<4>{}, qtl::PerGroup{32}, w)));
  const double r = qtl::sqnr_db(w, qtl::dequantize(qtl::quantize_matrix(qtl::Uniform<4>{}, qtl::PerRow{}, w)));
  const double t = qtl::sqnr_db(w, qtl::dequantize(qtl::quantize_matrix(qtl::Uniform<4>{}, qtl::PerTensor{}, w)));
  EXPECT_GE(g, r);
  EXPECT_GE(r, t - 1e-9);
  // the small-magnitude columns keep their own relative precision under per-group scales
  const auto wq = qtl::dequantize(qtl::quantize_matrix(qtl::Uniform<4>{}, qtl::PerGroup{32}, w));
  const double small_sqnr = qtl::sqnr_db(w.leftCols(32), wq.leftCols(32));
  EXPECT_GT(small_sqnr, 15.0);
}

TEST(QuantizeMatrix, ShortLastGroupIsFittedOnItsOwnValues) {
  // 172 = 5 * 32 + 12: the 12-column tail group must not borrow a neighbour's range.
  auto w = qtl::test::gaussian(4, 172, 5);
  w.rightCols(12) *= 1000.0f;
  const auto q = qtl::quantize_matrix(qtl::Uniform<4>{}, qtl::PerGroup{32}, w);
  for (int r = 0; r < 4; ++r) {
    EXPECT_GT(std::fabs(q.params_at(r, 171).scale), 50.0f * std::fabs(q.params_at(r, 0).scale));
  }
  EXPECT_GT(qtl::sqnr_db(w.leftCols(160), qtl::dequantize(q).leftCols(160)), 15.0);
}

TEST(QuantizeMatrix, BitsPerWeightCountsScalesAndZeros) {
  const auto w = qtl::test::gaussian(4, 64, 1);
  const auto a = qtl::quantize_matrix(qtl::Uniform<4>{}, qtl::PerGroup{32}, w);
  EXPECT_DOUBLE_EQ(qtl::bits_per_weight(a), 4.0 + 24.0 / 32.0);
  const auto s = qtl::quantize_matrix(qtl::Uniform<4, qtl::Mode::Symmetric>{}, qtl::PerGroup{32}, w);
  EXPECT_DOUBLE_EQ(qtl::bits_per_weight(s), 4.5);
  const auto t = qtl::quantize_matrix(qtl::Uniform<2>{}, qtl::PerTensor{}, w);
  EXPECT_DOUBLE_EQ(qtl::bits_per_weight(t), 2.0 + 24.0 / 256.0);
}

TEST(QuantizeMatrix, BadInputThrowsNamingTheValue) {
  auto w = qtl::test::gaussian(4, 8, 1);
  auto expect_msg = [](auto&& f, const std::string& needle) {
    try {
      f();
      ADD_FAILURE() << "no qtl::Error; expected one mentioning " << needle;
    } catch (const qtl::Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  expect_msg([&] { (void)qtl::quantize_matrix(qtl::Uniform<4>{}, qtl::PerGroup{0}, w); }, "group size must be >= 1, got 0");
  expect_msg([&] { (void)qtl::quantize_matrix(qtl::Uniform<4>{}, qtl::PerGroup{-3}, w); }, "got -3");
  qtl::RowMatrixXf empty(0, 8), no_cols(4, 0);
  expect_msg([&] { (void)qtl::quantize_matrix(qtl::Uniform<4>{}, qtl::PerRow{}, empty); }, "0x8");
  expect_msg([&] { (void)qtl::quantize_matrix(qtl::Uniform<4>{}, qtl::PerRow{}, no_cols); }, "4x0");
  w(1, 2) = std::numeric_limits<float>::quiet_NaN();
  expect_msg([&] { (void)qtl::quantize_matrix(qtl::Uniform<4>{}, qtl::PerRow{}, w); }, "(1, 2)");
  w(1, 2) = -std::numeric_limits<float>::infinity();
  expect_msg([&] { (void)qtl::quantize_matrix(qtl::Uniform<4>{}, qtl::PerRow{}, w); }, "-inf");
  w(1, 2) = 0.0f;
  qtl::QuantizeOptions opt;
  opt.column_importance = qtl::VectorXf::Ones(7);
  expect_msg([&] { (void)qtl::quantize_matrix(qtl::Uniform<4>{}, qtl::PerRow{}, w, opt); }, "must have size 8, got 7");
  opt.column_importance = qtl::VectorXf::Ones(8);
  opt.column_importance[3] = -1.0f;
  expect_msg([&] { (void)qtl::quantize_matrix(qtl::Uniform<4>{}, qtl::PerRow{}, w, opt); }, "must be >= 0");
  qtl::QuantizeOptions opt2;
  opt2.importance = qtl::RowMatrixXf::Ones(3, 8);
  expect_msg([&] { (void)qtl::quantize_matrix(qtl::Uniform<4>{}, qtl::PerRow{}, w, opt2); }, "must be 4x8, got 3x8");
}

TEST(Metrics, DefinitionsAndErrors) {
  const auto w = qtl::test::gaussian(8, 16, 2);
  qtl::RowMatrixXf wh = w;
  EXPECT_EQ(qtl::mse(w, wh), 0.0);
  EXPECT_TRUE(std::isinf(qtl::sqnr_db(w, wh)));
  wh = w * 0.9f;  // noise = 0.01 * signal -> 20 dB
  EXPECT_NEAR(qtl::sqnr_db(w, wh), 20.0, 1e-4);
  const auto x = qtl::test::gaussian(5, 16, 3);
  EXPECT_NEAR(qtl::relative_output_error(w, wh, x), 0.1, 1e-5);
  EXPECT_THROW((void)qtl::relative_output_error(w, wh, qtl::test::gaussian(5, 15, 3)), qtl::Error);
  EXPECT_THROW((void)qtl::mse(w, qtl::test::gaussian(8, 15, 3)), qtl::Error);
}

}  // namespace
