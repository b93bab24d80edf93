// Rounding optimization on the layer objective (qtl/calib/rounding.hpp): SignRound and
// coordinate-descent refinement, on the real model's layers and on small exact cases.
#include <gtest/gtest.h>
#include <qtl/calib/gptq.hpp>
#include <qtl/calib/pipeline.hpp>
#include <qtl/calib/rounding.hpp>
#include <qtl/quant/binary.hpp>
#include <qtl/quant/codebook.hpp>
#include <qtl/quant/log2.hpp>
#include <qtl/quant/metrics.hpp>
#include <qtl/quant/ternary.hpp>
#include <qtl/quant/uniform.hpp>

#include <cmath>
#include <cstdio>
#include <limits>

#include "calib/calib_test_util.hpp"
#include "calib/real_inputs.hpp"
#include "test_util.hpp"

namespace {

using qtl::Index;
using qtl::RowMatrixXf;
using qtl::calib::refine_rounding;
using qtl::calib::RefineOptions;
using qtl::calib::rounding_loss;
using qtl::calib::signround;
using qtl::calib::SignRoundOptions;

constexpr Index kGroup = 32;

template <int B, qtl::Mode M>
void expect_signround_beats_rtn_on_every_layer() {
  const qtl::Uniform<B, M> q;
  const auto& model = qtl::test::real_model();
  double start = 0, end = 0;
  SignRoundOptions opt;
  opt.iterations = 100;  // half AutoRound's default keeps the suite fast; the claim is the same
  for (const auto& layer : model.layers) {
    const Eigen::MatrixXd h = layer.stats.hessian();
    const auto res = signround(q, qtl::PerGroup{kGroup}, layer.weight, h, opt);
    const auto rtn = qtl::quantize_matrix(q, qtl::PerGroup{kGroup}, layer.weight);
    // The report's losses are the objective itself, recomputed independently here.
    EXPECT_NEAR(res.report.start_loss, rounding_loss(rtn, layer.weight, h), 1e-9 * res.report.start_loss);
    EXPECT_NEAR(res.report.final_loss, rounding_loss(res.matrix, layer.weight, h), 1e-9 * res.report.start_loss);
    // Never worse than its start; on real layers strictly better.
    EXPECT_LT(res.report.final_loss, res.report.start_loss) << q.name() << " " << layer.name;
    EXPECT_GT(res.report.best_iteration, 0) << q.name() << " " << layer.name;
    start += res.report.start_loss;
    end += res.report.final_loss;
  }
  std::printf("[ real ] signround %-12s layer objective: rtn %.5g -> %.5g\n", q.name().c_str(), start, end);
}

TEST(SignRound, LowersTheLayerObjectiveOnEveryRealLayer) {
  expect_signround_beats_rtn_on_every_layer<2, qtl::Mode::Asymmetric>();
  expect_signround_beats_rtn_on_every_layer<4, qtl::Mode::Symmetric>();
}

TEST(SignRound, ZeroIterationsIsMinMaxRtn) {
  const RowMatrixXf w = qtl::test::gaussian(8, 64, 3);
  const auto st = qtl::test::statistics_of(qtl::test::correlated_activations(256, 64, 4));
  SignRoundOptions opt;
  opt.iterations = 0;
  const auto res = signround(qtl::Uniform<3>{}, qtl::PerGroup{kGroup}, w, st.hessian, opt);
  const auto rtn = qtl::quantize_matrix(qtl::Uniform<3>{}, qtl::PerGroup{kGroup}, w);
  EXPECT_EQ(res.matrix.codes, rtn.codes);
  EXPECT_EQ(res.matrix.params, rtn.params);
  EXPECT_EQ(res.report.final_loss, res.report.start_loss);
}

TEST(SignRound, RejectsBadInputNamingTheValue) {
  const RowMatrixXf w = qtl::test::gaussian(4, 64, 5);
  const auto st = qtl::test::statistics_of(qtl::test::correlated_activations(128, 64, 6));
  SignRoundOptions opt;
  opt.iterations = -1;
  EXPECT_NE(qtl::test::error_of([&] { (void)signround(qtl::Uniform<3>{}, qtl::PerRow{}, w, st.hessian, opt); })
                .find("iterations must be in [0, 100000], got -1"),
            std::string::npos);
  opt = {};
  opt.min_clip = 0.0f;
  EXPECT_NE(qtl::test::error_of([&] { (void)signround(qtl::Uniform<3>{}, qtl::PerRow{}, w, st.hessian, opt); })
                .find("min_clip"),
            std::string::npos);
  const Eigen::MatrixXd small = Eigen::MatrixXd::Identity(32, 32);
  EXPECT_NE(qtl::test::error_of([&] { (void)signround(qtl::Uniform<3>{}, qtl::PerRow{}, w, small); }).find("hessian"),
            std::string::npos);
  Eigen::MatrixXd nan = st.hessian;
  nan(3, 5) = std::numeric_limits<double>::quiet_NaN();
  EXPECT_NE(qtl::test::error_of([&] { (void)signround(qtl::Uniform<3>{}, qtl::PerRow{}, w, nan); }).find("finite"),
            std::string::npos);
}

/// refine_rounding from GPTQ's result: the objective never rises, the report matches the
/// objective recomputed, and the held-out output error of the whole model's layers falls.
template <class Q>
void expect_refine_improves_gptq(const Q& q, bool expect_strict) {
  const auto& model = qtl::test::real_model();
  double start = 0, end = 0, held_gptq = 0, held_refined = 0;
  int strictly = 0;
  for (const auto& layer : model.layers) {
    const Eigen::MatrixXd h = layer.stats.hessian();
    const auto g = qtl::calib::gptq(q, qtl::PerGroup{kGroup}, layer.weight, layer.stats);
    RefineOptions opt;
    opt.sweeps = 8;
    const auto res = refine_rounding(g.matrix, layer.weight, h, opt);
    EXPECT_NEAR(res.report.start_loss, rounding_loss(g.matrix, layer.weight, h), 1e-9 * res.report.start_loss);
    EXPECT_NEAR(res.report.final_loss, rounding_loss(res.matrix, layer.weight, h), 1e-9 * res.report.start_loss);
    EXPECT_LE(res.report.final_loss, res.report.start_loss) << q.name() << " " << layer.name;
    strictly += res.report.final_loss < res.report.start_loss;
    start += res.report.start_loss;
    end += res.report.final_loss;
    const double eg = qtl::relative_output_error(layer.weight, qtl::dequantize(g.matrix), layer.eval);
    const double er = qtl::relative_output_error(layer.weight, qtl::dequantize(res.matrix), layer.eval);
    held_gptq += eg * eg;
    held_refined += er * er;
  }
  if (expect_strict) {
    EXPECT_EQ(strictly, static_cast<int>(model.layers.size())) << q.name();
    EXPECT_LT(held_refined, held_gptq) << q.name() << ": held-out output error";
  }
  std::printf("[ real ] refine %-14s objective gptq %.5g -> %.5g; held-out error %.5f -> %.5f\n", q.name().c_str(),
              start, end, held_gptq, held_refined);
}

TEST(RefineRounding, ImprovesGptqOnTheRealModelForUniformCodes) {
  expect_refine_improves_gptq(qtl::Uniform<2>{}, true);
  expect_refine_improves_gptq(qtl::Uniform<3>{}, true);
  expect_refine_improves_gptq(qtl::Uniform<3, qtl::Mode::Symmetric>{}, true);
}

TEST(RefineRounding, NeverRaisesTheObjectiveForAnyScalarFamily) {
  expect_refine_improves_gptq(qtl::Log2<3>{}, false);
  expect_refine_improves_gptq(qtl::NF4{}, false);
  expect_refine_improves_gptq(qtl::FP4{}, false);
  expect_refine_improves_gptq(qtl::KMeansCodebook<2>{}, false);
  expect_refine_improves_gptq(qtl::Ternary{}, false);
  expect_refine_improves_gptq(qtl::Binary<>{}, false);
}

// Coordinate descent stops at a point where no single code change lowers the objective: checked
// by trying every code of every weight.
TEST(RefineRounding, EndsWhereNoSingleCodeChangeHelps) {
  const RowMatrixXf w = qtl::test::gaussian(6, 48, 11);
  const auto st = qtl::test::statistics_of(qtl::test::correlated_activations(400, 48, 12));
  const qtl::Uniform<3> q;
  RefineOptions opt;
  opt.sweeps = 200;
  opt.refit_params = false;
  const auto res = refine_rounding(qtl::quantize_matrix(q, qtl::PerGroup{16}, w), w, st.hessian, opt);
  ASSERT_LT(res.report.sweeps, 200) << "did not converge";
  const double base = rounding_loss(res.matrix, w, st.hessian);
  EXPECT_NEAR(base, res.report.final_loss, 1e-9 * base);
  for (Index r = 0; r < w.rows(); ++r) {
    for (Index c = 0; c < w.cols(); ++c) {
      for (int code = 0; code <= q.kMaxCode; ++code) {
        auto m = res.matrix;
        m.codes[static_cast<std::size_t>(r * w.cols() + c)] = static_cast<std::uint8_t>(code);
        EXPECT_GE(rounding_loss(m, w, st.hessian), base * (1 - 1e-12)) << r << "," << c << " code " << code;
      }
    }
  }
}

TEST(RefineRounding, MoreSweepsNeverHurt) {
  const auto& layer = qtl::test::real_model().layers.at(3);
  const Eigen::MatrixXd h = layer.stats.hessian();
  const auto start = qtl::quantize_matrix(qtl::Uniform<2>{}, qtl::PerGroup{kGroup}, layer.weight);
  double prev = rounding_loss(start, layer.weight, h);
  for (int sweeps : {1, 2, 4, 8}) {
    RefineOptions opt;
    opt.sweeps = sweeps;
    const double l = refine_rounding(start, layer.weight, h, opt).report.final_loss;
    EXPECT_LE(l, prev * (1 + 1e-12)) << sweeps << " sweeps";
    prev = l;
  }
}

TEST(RefineRounding, RejectsPerTensorAndBadShapes) {
  const RowMatrixXf w = qtl::test::gaussian(4, 32, 13);
  const auto st = qtl::test::statistics_of(qtl::test::correlated_activations(128, 32, 14));
  RefineOptions opt;
  opt.sweeps = 2;
  const auto t = qtl::quantize_matrix(qtl::Uniform<3>{}, qtl::PerTensor{}, w);
  EXPECT_NE(qtl::test::error_of([&] { (void)refine_rounding(t, w, st.hessian, opt); }).find("per-tensor"),
            std::string::npos);
  const auto m = qtl::quantize_matrix(qtl::Uniform<3>{}, qtl::PerRow{}, w);
  const RowMatrixXf other = qtl::test::gaussian(5, 32, 15);
  EXPECT_NE(qtl::test::error_of([&] { (void)refine_rounding(m, other, st.hessian, opt); }).find("weights"),
            std::string::npos);
  opt.sweeps = -3;
  EXPECT_NE(qtl::test::error_of([&] { (void)refine_rounding(m, w, st.hessian, opt); }).find("got -3"),
            std::string::npos);
}

// The pipeline: SignRound is for uniform codes and says so; refinement composes with any solver.
TEST(RoundingPipeline, SignRoundRejectsNonUniformCodesAndRefineComposes) {
  const RowMatrixXf w = qtl::test::gaussian(8, 64, 21);
  const auto st = qtl::test::statistics_of(qtl::test::correlated_activations(512, 64, 22));
  qtl::calib::Pipeline r;
  r.name = "signround-nf4";
  r.solver = qtl::calib::SignRoundOptions{};
  EXPECT_NE(qtl::test::error_of([&] { (void)qtl::calib::calibrate(qtl::NF4{}, qtl::PerGroup{kGroup}, w, st, r); })
                .find("not uniform"),
            std::string::npos);
  r.solver = qtl::calib::HqqOptions{};
  EXPECT_NE(qtl::test::error_of([&] { (void)qtl::calib::calibrate(qtl::NF4{}, qtl::PerGroup{kGroup}, w, st, r); })
                .find("HQQ solver fits a uniform grid"),
            std::string::npos);
  r.solver = qtl::calib::GptqOptions{};
  const auto plain = qtl::calib::calibrate(qtl::Uniform<3>{}, qtl::PerGroup{kGroup}, w, st, r);
  r.refine.sweeps = 4;
  const auto refined = qtl::calib::calibrate(qtl::Uniform<3>{}, qtl::PerGroup{kGroup}, w, st, r);
  ASSERT_TRUE(refined.refine_report.has_value());
  EXPECT_FALSE(plain.refine_report.has_value());
  EXPECT_LE(rounding_loss(refined.matrix, w, st.hessian), rounding_loss(plain.matrix, w, st.hessian));
  r.solver = qtl::calib::SignRoundOptions{};
  const auto sr = qtl::calib::calibrate(qtl::Uniform<3>{}, qtl::PerGroup{kGroup}, w, st, r);
  ASSERT_TRUE(sr.signround_report.has_value());
  EXPECT_LE(sr.refine_report->final_loss, sr.signround_report->final_loss * (1 + 1e-9));
}

}  // namespace
