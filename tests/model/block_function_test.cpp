// One transformer block as a function (qtl/model/block_function.hpp): its forward pass is the
// model's own block, and its written-out backward pass equals central finite differences on a
// real block of the bundled model with real activations, for every kind of parameter.
#include <gtest/gtest.h>
#include <qtl/model/block_function.hpp>
#include <qtl/model/quantized_linear.hpp>

#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "model/eigen_single_thread.hpp"
#include "model/real_model_fixture.hpp"
#include "test_util.hpp"

namespace {

namespace m = qtl::model;
using qtl::Index;
using qtl::test::error_of;
using qtl::test::fixture;
using Md = m::BlockMatrix<double>;
using BlockFunctionTest = qtl::test::EigenSingleThread;

/// The residual stream entering block `layer` for the first `tokens` tokens of story `story`.
qtl::RowMatrixXf stream_into(int layer, int story, std::size_t tokens) {
  const auto& f = fixture();
  auto ids = f.calibration(story, 1).front();
  if (ids.size() > tokens) ids.resize(tokens);
  qtl::RowMatrixXf h = f.fp32.embed(ids);
  for (int l = 0; l < layer; ++l) f.fp32.forward_layer(l, h);
  return h;
}

TEST_F(BlockFunctionTest, ForwardIsTheModelsBlock) {
  const auto& f = fixture();
  const m::BlockFunction<float> block(f.fp32.config());
  for (int layer : {0, 2, 4}) {
    const qtl::RowMatrixXf h = stream_into(layer, 7, 512);
    ASSERT_GT(h.rows(), 100);
    qtl::RowMatrixXf want = h;
    f.fp32.forward_layer(layer, want);
    const auto w = m::block_weights<float>(f.fp32, layer);
    block.check(w);
    const qtl::RowMatrixXf got = block.forward(w, h);
    const float scale = want.cwiseAbs().maxCoeff();
    EXPECT_LT((got - want).cwiseAbs().maxCoeff(), 2e-5f * scale) << "layer " << layer;
  }
}

/// L = Σ R ⊙ out(θ): the backward pass from D = R against central differences of L.
TEST_F(BlockFunctionTest, BackwardEqualsFiniteDifferencesOnARealBlock) {
  const auto& f = fixture();
  const int layer = 1;
  const m::BlockFunction<double> block(f.fp32.config());
  const Md h = stream_into(layer, 3, 24).cast<double>();
  m::BlockWeights<double> w = m::block_weights<double>(f.fp32, layer);
  std::mt19937 rng(11);
  std::normal_distribution<double> normal;
  Md r(h.rows(), h.cols());
  for (Index i = 0; i < r.size(); ++i) r.data()[i] = normal(rng);

  m::BlockTape<double> tape;
  const Md out = block.forward(w, h, &tape);
  const m::BlockGradient<double> g = block.backward(w, tape, r);
  ASSERT_EQ(g.input.rows(), h.rows());

  Md hh = h;
  auto loss = [&] { return block.forward(w, hh).cwiseProduct(r).sum(); };
  ASSERT_NEAR(loss(), out.cwiseProduct(r).sum(), 1e-12);
  // Perturbs `x`, returns (L(x + ε) − L(x − ε)) / 2ε, restores x.
  auto central = [&](double& x) {
    const double eps = 1e-5 * std::max(1.0, std::abs(x));
    const double x0 = x;
    x = x0 + eps;
    const double up = loss();
    x = x0 - eps;
    const double down = loss();
    x = x0;
    return (up - down) / (2 * eps);
  };
  int checked = 0;
  double worst = 0.0;
  auto expect_match = [&](double analytic, double numeric, const std::string& what) {
    const double err = std::abs(analytic - numeric) / std::max(1e-3, std::abs(numeric));
    worst = std::max(worst, err);
    EXPECT_LT(err, 1e-5) << what << ": backward " << analytic << ", finite differences " << numeric;
    ++checked;
  };
  for (std::size_t i = 0; i < 7; ++i) {
    auto& mat = w.linear[i];
    std::uniform_int_distribution<Index> row(0, mat.rows() - 1), col(0, mat.cols() - 1);
    for (int s = 0; s < 8; ++s) {
      const Index a = row(rng), b = col(rng);
      expect_match(g.linear[i](a, b), central(mat(a, b)), std::string(m::kBlockLinears[i]) + "(" + std::to_string(a) + "," + std::to_string(b) + ")");
    }
  }
  for (Index c : {0, 17, 40, 63}) {
    expect_match(g.attention_norm(c), central(w.attention_norm(c)), "attention_norm(" + std::to_string(c) + ")");
    expect_match(g.ffn_norm(c), central(w.ffn_norm(c)), "ffn_norm(" + std::to_string(c) + ")");
  }
  std::uniform_int_distribution<Index> tok(0, h.rows() - 1), ch(0, h.cols() - 1);
  for (int s = 0; s < 12; ++s) {
    const Index a = tok(rng), b = ch(rng);
    expect_match(g.input(a, b), central(hh(a, b)), "input(" + std::to_string(a) + "," + std::to_string(b) + ")");
  }
  EXPECT_EQ(checked, 7 * 8 + 8 + 12);
  // The gradient is not trivially small: a zero backward would "match" a flat loss.
  EXPECT_GT(g.linear[0].cwiseAbs().maxCoeff(), 1e-3);
  EXPECT_GT(g.input.cwiseAbs().maxCoeff(), 1e-3);
  RecordProperty("worst_relative_error", std::to_string(worst));
}

TEST_F(BlockFunctionTest, BadInputNamesTheValue) {
  const auto& f = fixture();
  const m::BlockFunction<float> block(f.fp32.config());
  auto w = m::block_weights<float>(f.fp32, 0);
  const qtl::RowMatrixXf h = stream_into(0, 0, 16);
  EXPECT_NE(error_of([&] { (void)block.forward(w, qtl::RowMatrixXf(h.leftCols(63))); }).find("h.cols()"), std::string::npos);
  EXPECT_NE(error_of([&] { (void)m::block_weights<float>(f.fp32, 5); }).find("layer"), std::string::npos);
  auto bad = f.fp32.config();
  bad.norm_eps = 0.0f;
  EXPECT_NE(error_of([&] { (void)m::BlockFunction<float>(bad); }).find("norm_eps must be finite and > 0, got 0"),
            std::string::npos);
  bad = f.fp32.config();
  bad.rope_base = std::nanf("");
  EXPECT_NE(error_of([&] { (void)m::BlockFunction<double>(bad); }).find("rope_base"), std::string::npos);
  m::BlockTape<float> tape;
  (void)block.forward(w, h, &tape);
  EXPECT_NE(error_of([&] { (void)block.backward(w, tape, qtl::RowMatrixXf::Zero(h.rows() + 1, h.cols())); }).find("d_out"),
            std::string::npos);
  w.linear[5](3, 4) = std::nanf("");
  EXPECT_NE(error_of([&] { block.check(w); }).find("w2 holds NaN"), std::string::npos);
  w.linear[1].resize(4, 4);
  EXPECT_NE(error_of([&] { block.check(w); }).find("wk"), std::string::npos);
  // A quantized model's block is not dense: block_weights says which linear.
  m::Transformer q = f.fp32;
  const auto qm = qtl::quantize_matrix(qtl::Uniform<4>{}, qtl::PerGroup{32}, m::block_weights<float>(f.fp32, 0).linear[3]);
  q.set_linear("layers.0.wo", m::make_packed_linear(qm));
  EXPECT_NE(error_of([&] { (void)m::block_weights<float>(q, 0); }).find("layers.0.wo"), std::string::npos);
}

}  // namespace
