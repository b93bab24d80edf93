#include <gtest/gtest.h>
#include <Eigen/LU>
#include <qtl/calib/gptq.hpp>
#include <qtl/quant/metrics.hpp>
#include <qtl/quant/uniform.hpp>

#include <cmath>
#include <limits>
#include <numeric>

#include "calib/calib_test_util.hpp"
#include "calib/gptq_reference.hpp"

namespace {

using qtl::Index;
using qtl::RowMatrixXf;
using qtl::calib::gptq;
using qtl::calib::GptqOptions;
using qtl::calib::HessianAccumulator;
using qtl::test::hessian_of;
using qtl::test::reference_gptq;

double damped_quadratic(const RowMatrixXf& w, const RowMatrixXf& q, Eigen::MatrixXd h, double lambda,
                        Index r) {
  h.diagonal().array() += lambda;
  const Eigen::VectorXd d = (w.row(r) - q.row(r)).transpose().cast<double>();
  return d.dot(h * d);
}

struct Config {
  Index group;
  bool act_order;
  Index block;
};

class GptqMatchesReference : public ::testing::TestWithParam<Config> {};

TEST_P(GptqMatchesReference, SameCodesOrSameProxyLoss) {
  const Config cfg = GetParam();
  const Index rows = 24, cols = 96;
  const RowMatrixXf x = qtl::test::correlated_activations(400, cols, 7);
  const RowMatrixXf w = qtl::test::gaussian(rows, cols, 8);
  const Eigen::MatrixXd h = hessian_of(x);
  const qtl::Uniform<3> q;
  GptqOptions opt;
  opt.act_order = cfg.act_order;
  opt.block_size = cfg.block;
  const qtl::Granularity gran = cfg.group >= cols ? qtl::Granularity{qtl::PerRow{}}
                                                  : qtl::Granularity{qtl::PerGroup{cfg.group}};
  const auto res = gptq(q, gran, w, h, opt);
  const RowMatrixXf wq = qtl::dequantize(res.matrix);
  const auto ref = reference_gptq(q, std::min(cfg.group, cols), w, h, 0.01, cfg.act_order);
  Index same = 0;
  for (Index i = 0; i < w.size(); ++i) same += (wq.reshaped()(i) == ref.q.reshaped()(i));
  const double rel = std::fabs(res.report.total_proxy_loss - ref.proxy) / ref.proxy;
  EXPECT_TRUE(same == w.size() || rel < 0.01)
      << same << " of " << w.size() << " weights agree; proxy " << res.report.total_proxy_loss
      << " vs " << ref.proxy;
  EXPECT_GT(same, w.size() * 9 / 10);
  // The reported proxy loss is exactly (w - q)ᵀ (H + λI) (w - q), row by row.
  for (Index r = 0; r < rows; ++r) {
    const double direct = damped_quadratic(w, wq, h, res.report.damping, r);
    EXPECT_NEAR(res.report.proxy_loss[r], direct, 1e-3 * direct) << "row " << r;
  }
  EXPECT_EQ(res.report.retries, 0);
  EXPECT_DOUBLE_EQ(res.report.damp_fraction, 0.01);
}

INSTANTIATE_TEST_SUITE_P(Layouts, GptqMatchesReference,
                         ::testing::Values(Config{96, false, 128}, Config{32, false, 128},
                                           Config{32, false, 40}, Config{40, false, 16},
                                           Config{24, false, 128}, Config{32, true, 128},
                                           Config{32, true, 20}, Config{96, true, 32}));


double gptq_error(auto quant, const RowMatrixXf& w, const RowMatrixXf& x, bool act_order) {
  HessianAccumulator acc(x.cols());
  acc.add_batch(x);
  GptqOptions opt;
  opt.act_order = act_order;
  return qtl::relative_output_error(
      w, qtl::dequantize(gptq(quant, qtl::PerGroup{32}, w, acc, opt).matrix), x);
}

TEST(Gptq, BeatsRoundToNearestOnCorrelatedInputs) {
  // Correlated channels of similar magnitude: both orders cut RTN's output error clearly.
  const RowMatrixXf x = qtl::test::gaussian(600, 128, 21) * qtl::test::gaussian(128, 128, 5) +
                        0.3f * qtl::test::gaussian(600, 128, 6);
  const RowMatrixXf w = qtl::test::gaussian(64, 128, 22);
  auto check = [&](auto quant) {
    const double e_rtn = qtl::test::rtn_output_error(quant, w, x);
    EXPECT_LT(gptq_error(quant, w, x, false), 0.85 * e_rtn) << quant.name();
    EXPECT_LT(gptq_error(quant, w, x, true), 0.85 * e_rtn) << quant.name();
  };
  check(qtl::Uniform<2>{});
  check(qtl::Uniform<3>{});
  check(qtl::Uniform<4>{});
  check(qtl::Uniform<4, qtl::Mode::Symmetric>{});
}

TEST(Gptq, ActOrderHandlesChannelsOfVeryDifferentMagnitude) {
  // Channel magnitudes spread over two decades (diag H over four): the error fed forward into
  // the weak channels inflates their groups' ranges, which is what act-order was made for
  // (GPTQ paper, LLaMA/OPT outlier features). Act-order must beat RTN at every width.
  const RowMatrixXf x = qtl::test::correlated_activations(600, 128, 21);
  const RowMatrixXf w = qtl::test::gaussian(64, 128, 22);
  auto check = [&](auto quant) {
    EXPECT_LT(gptq_error(quant, w, x, true), 0.8 * qtl::test::rtn_output_error(quant, w, x)) << quant.name();
  };
  check(qtl::Uniform<2>{});
  check(qtl::Uniform<3>{});
  check(qtl::Uniform<4>{});
}

TEST(Gptq, ExactQuantizerChangesNothing) {
  const RowMatrixXf x = qtl::test::correlated_activations(200, 72, 3);
  const RowMatrixXf w = qtl::test::gaussian(10, 72, 4);
  for (bool act : {false, true}) {
    GptqOptions opt;
    opt.act_order = act;
    const auto res = gptq(qtl::test::ExactTable{}, qtl::PerGroup{24}, w, hessian_of(x), opt);
    EXPECT_EQ(qtl::dequantize(res.matrix), w);
    EXPECT_EQ(res.report.total_proxy_loss, 0.0);
  }
}

TEST(Gptq, SingularHessianFromDuplicatedColumnsIsDampedAndReported) {
  RowMatrixXf x = qtl::test::correlated_activations(300, 64, 9);
  x.col(10) = x.col(3);
  x.col(11) = x.col(3);
  x.col(40) = 2.0f * x.col(20);
  const RowMatrixXf w = qtl::test::gaussian(16, 64, 10);
  GptqOptions opt;
  opt.damp_fraction = 0.0;  // undamped: the factorization must fail and be remedied
  const auto res = gptq(qtl::Uniform<4>{}, qtl::PerGroup{32}, w, hessian_of(x), opt);
  EXPECT_GT(res.report.retries, 0);
  EXPECT_GT(res.report.damp_fraction, 0.0);
  EXPECT_GT(res.report.damping, 0.0);
  const RowMatrixXf wq = qtl::dequantize(res.matrix);
  EXPECT_TRUE(wq.allFinite());
  EXPECT_TRUE(std::isfinite(res.report.total_proxy_loss));
  const auto rtn = qtl::dequantize(qtl::quantize_matrix(qtl::Uniform<4>{}, qtl::PerGroup{32}, w));
  EXPECT_LT(qtl::relative_output_error(w, wq, x), qtl::relative_output_error(w, rtn, x));
}

TEST(Gptq, ZeroColumnsAreDeadAndReported) {
  RowMatrixXf x = qtl::test::correlated_activations(300, 64, 12);
  x.col(0).setZero();
  x.col(33).setZero();
  const RowMatrixXf w = qtl::test::gaussian(8, 64, 13);
  HessianAccumulator acc(64);
  acc.add_batch(x);
  for (bool act : {false, true}) {
    GptqOptions opt;
    opt.act_order = act;
    const auto res = gptq(qtl::Uniform<3>{}, qtl::PerGroup{32}, w, acc, opt);
    EXPECT_EQ(res.report.dead_columns, (std::vector<Index>{0, 33}));
    const RowMatrixXf wq = qtl::dequantize(res.matrix);
    EXPECT_TRUE(wq.col(0).isZero());
    EXPECT_TRUE(wq.col(33).isZero());
    EXPECT_EQ(res.report.retries, 0);
    const auto rtn = qtl::dequantize(qtl::quantize_matrix(qtl::Uniform<3>{}, qtl::PerGroup{32}, w));
    EXPECT_LT(qtl::relative_output_error(w, wq, x), qtl::relative_output_error(w, rtn, x));
  }
}

TEST(Gptq, FewerTokensThanInputsIsDampedAndReported) {
  const RowMatrixXf x = qtl::test::correlated_activations(40, 128, 14);
  const RowMatrixXf w = qtl::test::gaussian(16, 128, 15);
  HessianAccumulator acc(128);
  acc.add_batch(x);
  const auto res = gptq(qtl::Uniform<4>{}, qtl::PerGroup{32}, w, acc);
  EXPECT_TRUE(res.report.rank_deficient);
  EXPECT_EQ(res.report.tokens, 40);
  EXPECT_GT(res.report.damping, 0.0);
  const RowMatrixXf wq = qtl::dequantize(res.matrix);
  EXPECT_TRUE(wq.allFinite());
  const auto rtn = qtl::dequantize(qtl::quantize_matrix(qtl::Uniform<4>{}, qtl::PerGroup{32}, w));
  EXPECT_LT(qtl::relative_output_error(w, wq, x), qtl::relative_output_error(w, rtn, x));
}

TEST(Gptq, BadInputThrowsNamingTheValue) {
  const RowMatrixXf w = qtl::test::gaussian(4, 16, 1);
  Eigen::MatrixXd h = Eigen::MatrixXd::Identity(16, 16);
  EXPECT_THROW((void)gptq(qtl::Uniform<4>{}, qtl::PerRow{}, w, Eigen::MatrixXd::Identity(15, 15)),
               qtl::Error);
  h(2, 3) = std::numeric_limits<double>::quiet_NaN();
  EXPECT_THROW((void)gptq(qtl::Uniform<4>{}, qtl::PerRow{}, w, h), qtl::Error);
  h(2, 3) = 0.0;
  h(5, 5) = -1.0;
  EXPECT_THROW((void)gptq(qtl::Uniform<4>{}, qtl::PerRow{}, w, h), qtl::Error);
  h(5, 5) = 1.0;
  RowMatrixXf bad = w;
  bad(1, 1) = std::numeric_limits<float>::infinity();
  EXPECT_THROW((void)gptq(qtl::Uniform<4>{}, qtl::PerRow{}, bad, h), qtl::Error);
  EXPECT_THROW((void)gptq(qtl::Uniform<4>{}, qtl::PerGroup{0}, w, h), qtl::Error);
  GptqOptions opt;
  opt.block_size = 0;
  EXPECT_THROW((void)gptq(qtl::Uniform<4>{}, qtl::PerRow{}, w, h, opt), qtl::Error);
  HessianAccumulator acc(16);
  RowMatrixXf x = qtl::test::gaussian(8, 16, 2);
  x(0, 0) = std::numeric_limits<float>::quiet_NaN();
  EXPECT_THROW(acc.add_batch(x), qtl::Error);
}


// The blocked, threaded factorization behind GPTQ: U must be upper triangular with
// UᵀU = (Hp + λI)⁻¹ (Hp the permuted Hessian, zero diagonals read as 1), for sizes that take
// every blocked branch (several Cholesky panels, several inversion levels, a ragged last block)
// and for 1 and 2 threads (which agree to rounding: the split changes only GEMM blocking).
TEST(GptqFactorization, UpperCholeskyOfInverseMatchesDenseInverse) {
  for (const Index n : {Index{5}, Index{130}, Index{600}}) {
    const RowMatrixXf x = qtl::test::correlated_activations(2 * n, n, 7);
    Eigen::MatrixXd h = hessian_of(x);
    h.row(n / 3).setZero();  // a dead input
    h.col(n / 3).setZero();
    std::vector<Index> perm(static_cast<std::size_t>(n));
    std::iota(perm.begin(), perm.end(), Index{0});
    std::reverse(perm.begin(), perm.begin() + n / 2);
    std::swap(perm[1], perm[static_cast<std::size_t>(n - 1)]);
    const double lambda = 0.01 * h.diagonal().mean();

    Eigen::MatrixXd hp(n, n);
    for (Index i = 0; i < n; ++i) {
      for (Index j = 0; j < n; ++j) hp(i, j) = h(perm[static_cast<std::size_t>(i)], perm[static_cast<std::size_t>(j)]);
    }
    for (Index i = 0; i < n; ++i) {
      if (hp(i, i) == 0.0) hp(i, i) = 1.0;
    }
    hp.diagonal().array() += lambda;
    const Eigen::MatrixXd inv = hp.inverse();

    RowMatrixXf u1, u2;
    ASSERT_TRUE(qtl::calib::detail::upper_cholesky_of_inverse<double>(h, perm, lambda, 1e-13, u1, 1)) << n;
    ASSERT_TRUE(qtl::calib::detail::upper_cholesky_of_inverse<double>(h, perm, lambda, 1e-13, u2, 2)) << n;
    EXPECT_LT((u1 - u2).cwiseAbs().maxCoeff(), 1e-6 * u1.cwiseAbs().maxCoeff()) << "n = " << n;
    const Eigen::MatrixXd u = u1.cast<double>();
    EXPECT_EQ(u.triangularView<Eigen::StrictlyLower>().toDenseMatrix().cwiseAbs().maxCoeff(), 0.0) << n;
    EXPECT_GT(u.diagonal().minCoeff(), 0.0) << n;
    const double err = (u.transpose() * u - inv).cwiseAbs().maxCoeff() / inv.cwiseAbs().maxCoeff();
    EXPECT_LT(err, 1e-5) << "n = " << n;  // the factor is stored in float

    RowMatrixXf uf;
    ASSERT_TRUE(qtl::calib::detail::upper_cholesky_of_inverse<float>(h, perm, lambda, 1e-6, uf, 2)) << n;
    const Eigen::MatrixXd ufd = uf.cast<double>();
    EXPECT_LT((ufd.transpose() * ufd - inv).cwiseAbs().maxCoeff() / inv.cwiseAbs().maxCoeff(), 1e-3) << n;
  }
}

}  // namespace
