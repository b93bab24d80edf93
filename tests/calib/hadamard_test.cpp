#include <gtest/gtest.h>
#include <qtl/calib/hadamard.hpp>

#include <cmath>

#include "calib/calib_test_util.hpp"

namespace {

using qtl::Index;
using qtl::RowMatrixXf;
using qtl::calib::RandomizedHadamard;

TEST(Fwht, MatchesTheSylvesterMatrix) {
  // H_{2n} = [[H_n, H_n], [H_n, -H_n]], normalized by 1/sqrt(n).
  for (Index n : {1, 2, 4, 8, 64}) {
    Eigen::MatrixXd h = Eigen::MatrixXd::Ones(1, 1);
    while (h.rows() < n) {
      Eigen::MatrixXd next(2 * h.rows(), 2 * h.rows());
      next << h, h, h, -h;
      h = next;
    }
    h /= std::sqrt(static_cast<double>(n));
    const Eigen::VectorXd x = Eigen::VectorXd::LinSpaced(n, -1.0, 2.0).array().sin();
    Eigen::VectorXd y = x;
    qtl::calib::fwht_rows(y.data(), n, 1);
    EXPECT_LT((y - h * x).norm(), 1e-12) << n;
  }
}

TEST(RandomizedHadamard, IsOrthogonalForEverySize) {
  for (Index n : {1, 2, 3, 16, 43, 64, 172, 96, 256}) {
    const RandomizedHadamard r(n, 7);
    EXPECT_EQ(r.power_of_two_factor() * r.odd_factor(), n);
    EXPECT_EQ(r.odd_factor() % 2, 1);
    const RowMatrixXf m = r.matrix();
    EXPECT_LT((m * m.transpose() - RowMatrixXf::Identity(n, n)).cwiseAbs().maxCoeff(), 2e-6) << n;
    // apply_inverse undoes apply
    const RowMatrixXf x = qtl::test::gaussian(3, n, 2);
    EXPECT_LT((r.unrotate_rows(r.rotate_rows(x)) - x).cwiseAbs().maxCoeff(), 1e-5) << n;
  }
  EXPECT_EQ(RandomizedHadamard(172, 1).odd_factor(), 43);
  EXPECT_EQ(RandomizedHadamard(172, 1).power_of_two_factor(), 4);
}

TEST(RandomizedHadamard, LeavesTheLayerOutputUnchanged) {
  for (Index n : {64, 172}) {
    const RandomizedHadamard r(n, 3);
    const RowMatrixXf w = qtl::test::gaussian(20, n, 1);
    const RowMatrixXf x = qtl::test::correlated_activations(50, n, 2);
    const RowMatrixXf y = x * w.transpose();
    const RowMatrixXf y_rot = r.rotate_rows(x) * r.rotate_rows(w).transpose();
    EXPECT_LT((y - y_rot).norm() / y.norm(), 1e-6) << n;
  }
}

TEST(RandomizedHadamard, RotatesTheHessian) {
  const Index n = 172;
  const RandomizedHadamard r(n, 5);
  const RowMatrixXf x = qtl::test::correlated_activations(300, n, 6);
  const Eigen::MatrixXd xd = x.cast<double>();
  const Eigen::MatrixXd h = xd.transpose() * xd;
  const Eigen::MatrixXd xr = r.rotate_rows(x).cast<double>();
  const Eigen::MatrixXd h_direct = xr.transpose() * xr;
  EXPECT_LT((r.rotate_hessian(h) - h_direct).norm() / h_direct.norm(), 1e-6);
}

TEST(RandomizedHadamard, SpreadsAnOutlierChannel) {
  // One channel 100x the others: after the rotation no channel holds more than a few times the
  // mean energy (incoherence, QuIP# §3).
  const Index n = 256;
  RowMatrixXf x = qtl::test::gaussian(200, n, 9);
  x.col(17) *= 100.0f;
  const RandomizedHadamard r(n, 11);
  const RowMatrixXf xr = r.rotate_rows(x);
  const Eigen::VectorXf before = x.cwiseAbs().colwise().maxCoeff();
  const Eigen::VectorXf after = xr.cwiseAbs().colwise().maxCoeff();
  EXPECT_GT(before.maxCoeff() / before.mean(), 30.0f);
  EXPECT_LT(after.maxCoeff() / after.mean(), 2.0f);
}

TEST(RandomizedHadamard, BadInputThrows) {
  EXPECT_THROW(RandomizedHadamard(0, 1), qtl::Error);
  EXPECT_THROW(RandomizedHadamard(2 * 1031, 1), qtl::Error);  // odd factor 1031 > 1024
  const RandomizedHadamard r(64, 1);
  EXPECT_THROW((void)r.rotate_rows(RowMatrixXf::Zero(2, 63)), qtl::Error);
  EXPECT_THROW((void)r.rotate_hessian(Eigen::MatrixXd::Zero(65, 65)), qtl::Error);
}

}  // namespace
