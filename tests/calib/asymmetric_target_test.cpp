// Asymmetric calibration (calib::asymmetric_target): quantizing toward the unquantized model's
// outputs from the inputs a layer actually receives.
#include <gtest/gtest.h>
#include <qtl/calib/hessian.hpp>
#include <qtl/calib/pipeline.hpp>
#include <qtl/quant/uniform.hpp>

#include <limits>

#include "calib/calib_test_util.hpp"
#include "test_util.hpp"

namespace {

using qtl::Index;
using qtl::RowMatrixXf;

struct Pair {
  RowMatrixXf x, xq;  // unquantized and perturbed ("quantized upstream") inputs, same tokens
  Eigen::MatrixXd h, c;
};

Pair make_pair(Index tokens, Index in, unsigned seed, float noise) {
  Pair p;
  p.x = qtl::test::correlated_activations(tokens, in, seed);
  p.xq = p.x + noise * qtl::test::gaussian(tokens, in, seed + 7);
  const double s = 2.0 / static_cast<double>(tokens);
  p.h = s * (p.xq.transpose() * p.xq).cast<double>();
  p.c = s * (p.xq.transpose() * p.x).cast<double>();
  return p;
}

double output_error(const RowMatrixXf& xq, const RowMatrixXf& v, const RowMatrixXf& x, const RowMatrixXf& w) {
  return (xq.cast<double>() * v.transpose().cast<double>() - x.cast<double>() * w.transpose().cast<double>())
      .squaredNorm();
}

TEST(AsymmetricTarget, IsTheWeightsWhenNothingUpstreamChanged) {
  const Pair p = make_pair(512, 48, 1, 0.0f);
  const RowMatrixXf w = qtl::test::gaussian(16, 48, 2);
  const RowMatrixXf t = qtl::calib::asymmetric_target(w, p.h, p.c);
  EXPECT_LT((t - w).cwiseAbs().maxCoeff(), 1e-4f * w.cwiseAbs().maxCoeff());
}

// W* is the least-squares solution: the error against the unquantized outputs of any Ŵ splits
// into its H-distance from W* plus a constant, so minimizing one minimizes the other.
TEST(AsymmetricTarget, SplitsTheOutputErrorIntoDistanceFromTheTargetPlusAConstant) {
  const Pair p = make_pair(600, 40, 3, 0.3f);
  const RowMatrixXf w = qtl::test::gaussian(12, 40, 4);
  const RowMatrixXf t = qtl::calib::asymmetric_target(w, p.h, p.c, 1e-9);
  auto distance = [&](const RowMatrixXf& v) {
    const Eigen::MatrixXd d = (v - t).cast<double>();
    return (d * p.h * d.transpose()).trace() * 600.0 / 2.0;  // ‖X̃ (V − W*)ᵀ‖²
  };
  double constant = 0;
  for (unsigned seed : {10u, 11u, 12u}) {
    const RowMatrixXf v = w + 0.2f * qtl::test::gaussian(12, 40, seed);
    const double c = output_error(p.xq, v, p.x, w) - distance(v);
    if (seed == 10u) constant = c;
    EXPECT_NEAR(c, constant, 1e-4 * output_error(p.xq, v, p.x, w)) << seed;
  }
  // And W* beats W itself on the true objective by a wide margin.
  EXPECT_LT(output_error(p.xq, t, p.x, w), 0.9 * output_error(p.xq, w, p.x, w));
}

TEST(AsymmetricTarget, BadInputIsAnError) {
  const Pair p = make_pair(128, 32, 5, 0.1f);
  const RowMatrixXf w = qtl::test::gaussian(4, 32, 6);
  EXPECT_NE(qtl::test::error_of([&] { (void)qtl::calib::asymmetric_target(w, p.h, p.c.topLeftCorner(31, 31)); })
                .find("cross"),
            std::string::npos);
  Eigen::MatrixXd bad = p.c;
  bad(2, 3) = std::numeric_limits<double>::infinity();
  EXPECT_NE(qtl::test::error_of([&] { (void)qtl::calib::asymmetric_target(w, p.h, bad); }).find("finite"),
            std::string::npos);
  EXPECT_NE(qtl::test::error_of([&] { (void)qtl::calib::asymmetric_target(w, p.h, p.c, 0.0); }).find("damp_fraction"),
            std::string::npos);
  // The pipeline asks for the cross term when its recipe quantizes toward fp32 outputs.
  qtl::calib::Pipeline r;
  r.name = "gptaq";
  r.fp32_targets = true;
  const auto st = qtl::test::statistics_of(p.xq);
  EXPECT_NE(qtl::test::error_of([&] { (void)qtl::calib::calibrate(qtl::Uniform<3>{}, qtl::PerRow{}, w, st, r); })
                .find("no cross term"),
            std::string::npos);
}

// Through the pipeline, GPTQ on the target lowers the error against the unquantized outputs.
TEST(AsymmetricTarget, GptqTowardTheTargetBeatsGptqOnTheLayerAlone) {
  const Pair p = make_pair(2048, 64, 7, 0.25f);
  const RowMatrixXf w = qtl::test::gaussian(32, 64, 8);
  auto st = qtl::test::statistics_of(p.xq);
  st.cross = p.c;
  qtl::calib::Pipeline r;
  const auto plain = qtl::calib::calibrate(qtl::Uniform<4>{}, qtl::PerGroup{32}, w, st, r);
  r.fp32_targets = true;
  const auto toward = qtl::calib::calibrate(qtl::Uniform<4>{}, qtl::PerGroup{32}, w, st, r);
  const double e_plain = output_error(p.xq, qtl::dequantize(plain.matrix), p.x, w);
  const double e_toward = output_error(p.xq, qtl::dequantize(toward.matrix), p.x, w);
  EXPECT_LT(e_toward, 0.8 * e_plain);
}

}  // namespace
