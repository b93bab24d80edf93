#include <gtest/gtest.h>
#include <qtl/calib/lowrank.hpp>
#include <qtl/quant/metrics.hpp>
#include <qtl/quant/quantize_matrix.hpp>
#include <qtl/quant/uniform.hpp>

#include "calib/calib_test_util.hpp"

namespace {

using qtl::Index;
using qtl::RowMatrixXf;
using qtl::calib::low_rank_correction;
using qtl::calib::LowRankOptions;

struct Case {
  RowMatrixXf x, w, wq;
  qtl::calib::LayerStatistics st;
};

Case make_case() {
  Case c;
  c.x = qtl::test::correlated_activations(400, 96, 1);
  c.w = qtl::test::gaussian(40, 96, 2);
  c.wq = qtl::dequantize(qtl::quantize_matrix(qtl::Uniform<2>{}, qtl::PerGroup{32}, c.w));
  qtl::calib::HessianAccumulator acc(96);
  acc.add_batch(c.x);
  c.st = acc.statistics();
  return c;
}

double corrected_error(const Case& c, const qtl::calib::LowRankCorrection& lr) {
  return qtl::relative_output_error(c.w, c.wq + lr.dense(), c.x);
}

TEST(LowRank, ErrorFallsWithRankAndHessianScalingIsBest) {
  const Case c = make_case();
  const double base = qtl::relative_output_error(c.w, c.wq, c.x);
  double prev = base;
  for (Index r : {1, 4, 16}) {
    const auto h = low_rank_correction(c.w, c.wq, c.st, {.rank = r, .scaling = LowRankOptions::Scaling::Hessian});
    const auto m = low_rank_correction(c.w, c.wq, c.st, {.rank = r, .scaling = LowRankOptions::Scaling::MeanAbs});
    const auto n = low_rank_correction(c.w, c.wq, c.st, {.rank = r, .scaling = LowRankOptions::Scaling::None});
    const double eh = corrected_error(c, h), em = corrected_error(c, m), en = corrected_error(c, n);
    EXPECT_LT(eh, prev) << r;
    EXPECT_LE(eh, em * 1.001) << r;  // the exact solution for the output error (up to fp16)
    EXPECT_LE(eh, en * 1.001) << r;
    EXPECT_LT(em, base) << r;
    EXPECT_LT(en, base) << r;
    EXPECT_EQ(h.rank(), r);
    EXPECT_DOUBLE_EQ(h.bits_per_weight(), 16.0 * r * (40 + 96) / (40.0 * 96));
    prev = eh;
  }
  // full rank restores W up to the fp16 rounding of the factors
  const auto full = low_rank_correction(c.w, c.wq, c.st, {.rank = 40, .scaling = LowRankOptions::Scaling::Hessian});
  EXPECT_LT(corrected_error(c, full), 0.01 * base);
}

TEST(LowRank, ApplyMatchesTheDenseProduct) {
  const Case c = make_case();
  const auto lr = low_rank_correction(c.w, c.wq, c.st, {.rank = 6});
  const RowMatrixXf y = lr.apply(c.x);
  const RowMatrixXf y_dense = c.x * lr.dense().transpose();
  EXPECT_LT((y - y_dense).norm(), 1e-4 * y_dense.norm());
  EXPECT_THROW((void)lr.apply(RowMatrixXf::Zero(2, 95)), qtl::Error);
}

TEST(LowRank, BadInputThrows) {
  const Case c = make_case();
  EXPECT_THROW((void)low_rank_correction(c.w, c.wq.leftCols(95), c.st), qtl::Error);
  EXPECT_THROW((void)low_rank_correction(c.w, c.wq, c.st, {.rank = 41}), qtl::Error);
  EXPECT_THROW((void)low_rank_correction(c.w, c.wq, c.st, {.rank = -1}), qtl::Error);
  auto st = c.st;
  st.hessian = Eigen::MatrixXd::Identity(95, 95);
  EXPECT_THROW((void)low_rank_correction(c.w, c.wq, st), qtl::Error);
}

}  // namespace
