#include <gtest/gtest.h>
#include <qtl/calib/smoothquant.hpp>
#include <qtl/quant/metrics.hpp>
#include <qtl/quant/quantize_matrix.hpp>
#include <qtl/quant/uniform.hpp>

#include "calib/calib_test_util.hpp"

namespace {

using qtl::Index;
using qtl::RowMatrixXf;

/// W8A8 output: per-token int8 activations times per-row symmetric int8 weights.
RowMatrixXf w8a8(const RowMatrixXf& x, const RowMatrixXf& w) {
  const RowMatrixXf wq = qtl::dequantize(
      qtl::quantize_matrix(qtl::Uniform<8, qtl::Mode::Symmetric>{}, qtl::PerRow{}, w));
  return qtl::calib::quantize_activations_int8(x) * wq.transpose();
}

TEST(SmoothQuant, MigratesActivationOutliersForW8A8) {
  // LLM activations have a few channels ~100x larger than the rest (SmoothQuant §3); per-token
  // int8 then wastes its range on them.
  RowMatrixXf x = qtl::test::gaussian(256, 128, 1);
  for (Index c : {3, 50, 91}) x.col(c) *= 80.0f;
  const RowMatrixXf w = qtl::test::gaussian(64, 128, 2);
  qtl::calib::HessianAccumulator acc(128);
  acc.add_batch(x);
  const auto st = acc.statistics();
  const RowMatrixXf y = x * w.transpose();
  const double plain = (y - w8a8(x, w)).norm() / y.norm();
  const auto s = qtl::calib::smoothquant_scales({w}, st, {.alpha = 0.5f});
  qtl::calib::InputTransform t;
  t.then(s);
  const RowMatrixXf xs = t.apply_activations(x);
  const RowMatrixXf ws = t.apply_weights(w);
  // exact without quantization
  EXPECT_LT((xs * ws.transpose() - y).norm() / y.norm(), 1e-6);
  const double smoothed = (y - w8a8(xs, ws)).norm() / y.norm();
  EXPECT_LT(smoothed, 0.5 * plain);
  // s_j = sqrt(max|x_j| / max|w_j|) at alpha = 0.5
  const float expect3 = std::sqrt(x.col(3).cwiseAbs().maxCoeff() / w.col(3).cwiseAbs().maxCoeff());
  EXPECT_NEAR(s.scales[3], expect3, 1e-4f * expect3);
}

TEST(SmoothQuant, DeadChannelsKeepScaleOneAndBadInputThrows) {
  RowMatrixXf x = qtl::test::gaussian(20, 8, 1);
  x.col(2).setZero();
  qtl::calib::HessianAccumulator acc(8);
  acc.add_batch(x);
  const RowMatrixXf w = qtl::test::gaussian(4, 8, 2);
  EXPECT_EQ(qtl::calib::smoothquant_scales({w}, acc.statistics()).scales[2], 1.0f);
  EXPECT_THROW((void)qtl::calib::smoothquant_scales({w}, acc.statistics(), {.alpha = 1.5f}), qtl::Error);
  EXPECT_THROW((void)qtl::calib::smoothquant_scales({RowMatrixXf(w.leftCols(7))}, acc.statistics()), qtl::Error);
  const RowMatrixXf q = qtl::calib::quantize_activations_int8(x);
  EXPECT_TRUE(q.col(2).isZero());
  EXPECT_LE((q - x).cwiseAbs().maxCoeff(), x.cwiseAbs().maxCoeff() / 127.0f);
}

}  // namespace
