#include <gtest/gtest.h>
#include <qtl/calib/hessian.hpp>

#include <cmath>
#include <limits>

#include "calib/calib_test_util.hpp"

namespace {

using qtl::calib::HessianAccumulator;

TEST(HessianAccumulator, MatchesTwoOverNXtXInDouble) {
  const auto x = qtl::test::correlated_activations(700, 48, 11);
  HessianAccumulator acc(48, /*chunk_tokens=*/128);
  acc.add_batch(x.topRows(300));
  acc.add_batch(x.bottomRows(400));
  const Eigen::MatrixXd xd = x.cast<double>();
  const Eigen::MatrixXd h_ref = 2.0 / 700.0 * xd.transpose() * xd;
  const Eigen::MatrixXd h = acc.hessian();
  EXPECT_EQ(acc.tokens(), 700);
  EXPECT_LT((h - h_ref).norm() / h_ref.norm(), 1e-6);
  EXPECT_LT((h - h.transpose()).norm(), 1e-12 * h.norm());
  const Eigen::VectorXd mean_abs_ref = xd.cwiseAbs().colwise().mean().transpose();
  EXPECT_LT((acc.mean_abs() - mean_abs_ref).norm(), 1e-6 * mean_abs_ref.norm());
  EXPECT_LT((acc.mean_square() - h_ref.diagonal() / 2.0).norm(), 1e-6 * h_ref.diagonal().norm());
  EXPECT_EQ(acc.abs_max(), x.cwiseAbs().colwise().maxCoeff().transpose().eval());
}

TEST(HessianAccumulator, MergeEqualsOneStream) {
  const auto x = qtl::test::correlated_activations(300, 20, 5);
  HessianAccumulator all(20), a(20), b(20);
  all.add_batch(x);
  a.add_batch(x.topRows(120));
  b.add_batch(x.bottomRows(180));
  a.merge(b);
  EXPECT_EQ(a.tokens(), 300);
  // Chunks differ, so only the float rounding of the chunk products may differ.
  EXPECT_LT((a.hessian() - all.hessian()).norm(), 1e-6 * all.hessian().norm());
  EXPECT_LT((a.mean_abs() - all.mean_abs()).norm(), 1e-6 * all.mean_abs().norm());
  EXPECT_EQ(a.abs_max(), all.abs_max());
  HessianAccumulator other(21);
  EXPECT_THROW(a.merge(other), qtl::Error);
}

TEST(HessianAccumulator, ReportsDeadColumns) {
  auto x = qtl::test::gaussian(50, 10, 2);
  x.col(3).setZero();
  x.col(7).setZero();
  HessianAccumulator acc(10);
  acc.add_batch(x);
  EXPECT_EQ(acc.dead_columns(), (std::vector<qtl::Index>{3, 7}));
  EXPECT_EQ(acc.hessian()(3, 3), 0.0);
}

TEST(HessianAccumulator, BadInputThrowsAndLeavesStatisticsUnchanged) {
  HessianAccumulator acc(8);
  EXPECT_THROW((void)acc.hessian(), qtl::Error);  // no tokens yet
  auto x = qtl::test::gaussian(10, 8, 1);
  acc.add_batch(x);
  const auto h = acc.hessian();
  x(4, 5) = std::numeric_limits<float>::quiet_NaN();
  try {
    acc.add_batch(x);
    FAIL() << "NaN activation accepted";
  } catch (const qtl::Error& e) {
    EXPECT_NE(std::string(e.what()).find("(4, 5)"), std::string::npos) << e.what();
  }
  x(4, 5) = std::numeric_limits<float>::infinity();
  EXPECT_THROW(acc.add_batch(x), qtl::Error);
  EXPECT_THROW(acc.add_batch(qtl::test::gaussian(3, 9, 1)), qtl::Error);
  EXPECT_EQ(acc.tokens(), 10);
  EXPECT_EQ(acc.hessian(), h);
  EXPECT_THROW(HessianAccumulator(0), qtl::Error);
}

}  // namespace
