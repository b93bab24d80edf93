// GPTQ on the real model: every linear layer of stories260K, its Hessian from calibration
// stories 0-15, its output error measured on held-out stories 250-257.
#include <gtest/gtest.h>
#include <qtl/calib/gptq.hpp>
#include <qtl/quant/binary.hpp>
#include <qtl/quant/codebook.hpp>
#include <qtl/quant/log2.hpp>
#include <qtl/quant/metrics.hpp>
#include <qtl/quant/ternary.hpp>
#include <qtl/quant/uniform.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "calib/gptq_reference.hpp"
#include "calib/real_inputs.hpp"

namespace {

using qtl::RowMatrixXf;
using qtl::calib::gptq;
using qtl::calib::GptqOptions;

constexpr qtl::Index kGroup = 32;  // the reference protocol's group size

/// Sum over layers of the squared held-out output error ||(W - Ŵ) Xᵀ||² / ||W Xᵀ||² for RTN and
/// GPTQ; also checks every layer individually.
template <class Q>
void expect_gptq_beats_rtn(const Q& quant, bool act_order, qtl::FitOptions rtn_fit = {}) {
  const auto& model = qtl::test::real_model();
  double sum_rtn = 0, sum_gptq = 0;
  int layer_wins = 0;
  for (const auto& layer : model.layers) {
    qtl::QuantizeOptions ro;
    ro.fit = rtn_fit;
    const RowMatrixXf rtn = qtl::dequantize(qtl::quantize_matrix(quant, qtl::PerGroup{kGroup}, layer.weight, ro));
    GptqOptions opt;
    opt.act_order = act_order;
    opt.fit = rtn_fit;
    const auto res = gptq(quant, qtl::PerGroup{kGroup}, layer.weight, layer.stats, opt);
    const RowMatrixXf g = qtl::dequantize(res.matrix);
    const double e_rtn = qtl::relative_output_error(layer.weight, rtn, layer.eval);
    const double e_g = qtl::relative_output_error(layer.weight, g, layer.eval);
    sum_rtn += e_rtn * e_rtn;
    sum_gptq += e_g * e_g;
    layer_wins += e_g < e_rtn;
    EXPECT_LT(e_g, e_rtn) << quant.name() << " " << layer.name << (act_order ? " act-order" : "");
  }
  std::printf("[ real ] %-16s %s  rtn %.5f  gptq %.5f  (sum of squared relative output errors, %d/%zu layers better)\n",
              quant.name().c_str(), act_order ? "act-order" : "in order ", sum_rtn, sum_gptq, layer_wins,
              model.layers.size());
}

TEST(GptqRealModel, BeatsRtnWithUniform) {
  for (bool act : {false, true}) {
    expect_gptq_beats_rtn(qtl::Uniform<2>{}, act);
    expect_gptq_beats_rtn(qtl::Uniform<3>{}, act);
    expect_gptq_beats_rtn(qtl::Uniform<4>{}, act);
    expect_gptq_beats_rtn(qtl::Uniform<3, qtl::Mode::Symmetric>{}, act);
  }
}

// In visiting order only, to keep the suite fast (act-order beats RTN on every layer with every
// family too; the uniform test above covers act-order).
TEST(GptqRealModel, BeatsRtnWithEveryOtherScalarFamily) {
  expect_gptq_beats_rtn(qtl::Log2<3>{}, false);
  expect_gptq_beats_rtn(qtl::Log2<4>{}, false);
  expect_gptq_beats_rtn(qtl::NF4{}, false);
  expect_gptq_beats_rtn(qtl::FP4{}, false);
  expect_gptq_beats_rtn(qtl::KMeansCodebook<2>{}, false);
  expect_gptq_beats_rtn(qtl::KMeansCodebook<3>{}, false);
  expect_gptq_beats_rtn(qtl::Ternary{}, false);
  expect_gptq_beats_rtn(qtl::Binary<>{}, false);
}

// The library's blocked GPTQ against the column-loop, full-inverse reference of gptq_test.cpp,
// on real layer inputs (a wide-input and a narrow-input layer): the same proxy loss within 1%.
TEST(GptqRealModel, MatchesTheUnblockedReference) {
  const auto& model = qtl::test::real_model();
  for (const char* name : {"layers.1.w1", "layers.3.w2", "layers.0.wq"}) {
    const auto& layer = *std::find_if(model.layers.begin(), model.layers.end(),
                                      [&](const auto& l) { return l.name == name; });
    const Eigen::MatrixXd h = layer.stats.hessian();
    for (bool act : {false, true}) {
      GptqOptions opt;
      opt.act_order = act;
      opt.block_size = 48;  // blocks that cut groups and rows at odd places
      const qtl::Uniform<3> q;
      const auto res = gptq(q, qtl::PerGroup{kGroup}, layer.weight, h, opt);
      const auto ref = qtl::test::reference_gptq(q, kGroup, layer.weight, h, 0.01, act);
      const RowMatrixXf g = qtl::dequantize(res.matrix);
      const double rel = std::abs(res.report.total_proxy_loss - ref.proxy) / ref.proxy;
      qtl::Index same = 0;
      for (qtl::Index i = 0; i < g.size(); ++i) same += g.reshaped()(i) == ref.q.reshaped()(i);
      EXPECT_LT(rel, 0.01) << name << " proxy " << res.report.total_proxy_loss << " vs " << ref.proxy;
      std::printf("[ real ] %s %s: proxy loss %.6g vs reference %.6g, %lld of %lld codes equal\n", name,
                  act ? "act-order" : "in order", res.report.total_proxy_loss, ref.proxy,
                  static_cast<long long>(same), static_cast<long long>(g.size()));
    }
  }
}

}  // namespace
