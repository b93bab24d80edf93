#include <gtest/gtest.h>
#include <qtl/calib/awq.hpp>
#include <qtl/quant/metrics.hpp>
#include <qtl/quant/uniform.hpp>

#include <cstdio>
#include <map>

#include "calib/calib_test_util.hpp"
#include "calib/real_inputs.hpp"

namespace {

using qtl::Index;
using qtl::RowMatrixXf;
using qtl::calib::awq;
using qtl::calib::AwqOptions;
using qtl::calib::HessianAccumulator;

using qtl::test::statistics_of;

/// W_hat as the layer sees it: Q(W diag(s)) diag(1/s), from the AWQ result's weights.
template <class Q>
RowMatrixXf effective(const Q& q, const qtl::calib::AwqResult& r, std::size_t i) {
  RowMatrixXf back = qtl::dequantize(qtl::quantize_matrix(q, qtl::PerGroup{32}, r.weights[i]));
  back.array().rowwise() /= r.scale.scales.transpose().array();
  return back;
}


TEST(Awq, ProtectsSalientChannels) {
  // A few input channels carry much larger activations (AWQ §3.1: ~1% salient channels).
  RowMatrixXf x = qtl::test::gaussian(500, 128, 1);
  for (Index c : {5, 40, 77, 100}) x.col(c) *= 20.0f;
  const RowMatrixXf w = qtl::test::gaussian(48, 128, 2);
  const auto st = statistics_of(x);
  const qtl::Uniform<3> q;
  const auto r = awq(q, qtl::PerGroup{32}, w, st);
  ASSERT_EQ(r.grid_loss.size(), 21u);
  EXPECT_NEAR(r.grid_loss[0], r.rtn_loss, 1e-9 * r.rtn_loss);  // α = 0 is RTN
  EXPECT_GT(r.ratio, 0.0f);
  EXPECT_LT(r.scaled_loss, 0.8 * r.rtn_loss);
  EXPECT_LE(r.final_loss, r.scaled_loss * 1.001);
  // the salient channels get the largest scales
  for (Index c : {5, 40, 77, 100}) EXPECT_GT(r.scale.scales[c], r.scale.scales.mean());
  // and the reported loss is the output error the layer really has
  const RowMatrixXf wh = effective(q, r, 0);
  const double direct = qtl::calib::detail::hessian_loss(w, wh, st.hessian);
  EXPECT_NEAR(direct, r.final_loss, 1e-6 * direct);
  EXPECT_LT(qtl::relative_output_error(w, wh, x), qtl::test::rtn_output_error(q, w, x));
}

TEST(Awq, ScalesAreNormalizedAroundOne) {
  const RowMatrixXf x = qtl::test::correlated_activations(300, 64, 3);
  const RowMatrixXf w = qtl::test::gaussian(16, 64, 4);
  for (bool duo : {false, true}) {
    AwqOptions opt;
    opt.duo_scaling = duo;
    const auto r = awq(qtl::Uniform<4>{}, qtl::PerGroup{32}, w, statistics_of(x), opt);
    const auto& s = r.scale.scales;
    EXPECT_NEAR(static_cast<double>(s.maxCoeff()) * s.minCoeff(), 1.0, 1e-4);
    EXPECT_LE(r.final_loss, r.rtn_loss);
  }
}

TEST(Awq, WithAnExactQuantizerTheLayerIsUnchanged) {
  const RowMatrixXf x = qtl::test::correlated_activations(200, 64, 5);
  const RowMatrixXf w = qtl::test::gaussian(12, 64, 6);
  AwqOptions opt;
  opt.clip_search = false;
  const auto r = awq(qtl::test::ExactTable{}, qtl::PerGroup{32}, w, statistics_of(x), opt);
  qtl::calib::InputTransform t;
  t.then(r.scale);
  const RowMatrixXf y = x * w.transpose();
  const RowMatrixXf y2 = t.apply_activations(x) * r.weights[0].transpose();
  EXPECT_LT((y - y2).norm() / y.norm(), 1e-6);
}

TEST(Awq, BadInputThrows) {
  const auto st = statistics_of(qtl::test::gaussian(20, 16, 1));
  EXPECT_THROW((void)awq(qtl::Uniform<4>{}, qtl::PerRow{}, RowMatrixXf::Ones(3, 15), st), qtl::Error);
  EXPECT_THROW((void)awq(qtl::Uniform<4>{}, qtl::PerRow{}, std::vector<RowMatrixXf>{}, st), qtl::Error);
  AwqOptions opt;
  opt.grid = 0;
  EXPECT_THROW((void)awq(qtl::Uniform<4>{}, qtl::PerRow{}, RowMatrixXf::Ones(3, 16), st, opt), qtl::Error);
}

// The real model: layers that read the same input share one scale (q/k/v; w1/w3), as folding
// into the RMSNorm gain requires. AWQ's held-out output error must be below RTN's, layer group
// by layer group.
TEST(AwqRealModel, BeatsRtn) {
  const auto& model = qtl::test::real_model();
  std::map<std::string, std::vector<const qtl::test::RealLayer*>> by_input;
  for (const auto& l : model.layers) {
    const std::string block = l.name.substr(0, l.name.rfind('.') + 1);
    const std::string slot = l.name.substr(l.name.rfind('.') + 1);
    const std::string key = block + (slot == "wq" || slot == "wk" || slot == "wv" ? "qkv"
                                     : slot == "w1" || slot == "w3"               ? "w13"
                                                                                  : slot);
    by_input[key].push_back(&l);
  }
  auto run = [&](auto q, bool duo) {
    double sum_rtn = 0, sum_awq = 0;
    for (const auto& [key, layers] : by_input) {
      std::vector<RowMatrixXf> ws;
      for (const auto* l : layers) ws.push_back(l->weight);
      AwqOptions opt;
      opt.duo_scaling = duo;
      const auto r = awq(q, qtl::PerGroup{32}, ws, layers[0]->stats.statistics(), opt);
      double e_rtn = 0, e_awq = 0;
      for (std::size_t i = 0; i < layers.size(); ++i) {
        const auto& l = *layers[i];
        const double a = qtl::test::rtn_output_error(q, l.weight, l.eval);
        const double b = qtl::relative_output_error(l.weight, effective(q, r, i), l.eval);
        e_rtn += a * a;
        e_awq += b * b;
      }
      EXPECT_LT(e_awq, e_rtn) << q.name() << " " << key << (duo ? " duo" : "") << " alpha " << r.ratio;
      sum_rtn += e_rtn;
      sum_awq += e_awq;
    }
    std::printf("[ real ] awq%s %-14s rtn %.5f  awq %.5f (sum of squared relative output errors, held out)\n",
                duo ? "-duo" : "    ", q.name().c_str(), sum_rtn, sum_awq);
  };
  for (bool duo : {false, true}) {
    run(qtl::Uniform<3>{}, duo);
    run(qtl::Uniform<4>{}, duo);
  }
}

}  // namespace
