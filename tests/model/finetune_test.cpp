// End-to-end tuning of a quantized model's RMSNorm gains (qtl/model/finetune.hpp) on the real
// model: the gradient through every block equals central finite differences in double, the
// tuned gains lower the KL to the fp32 model (on the subset they were chosen on, and on stories
// they never saw), the result does not depend on the thread count, and bad input is named.
#include <gtest/gtest.h>
#include <qtl/model/eval.hpp>
#include <qtl/model/finetune.hpp>
#include <qtl/model/recipes.hpp>
#include <qtl/model/sequential.hpp>

#include <algorithm>
#include <array>
#include <cstdio>
#include <cmath>
#include <limits>
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
using FinetuneTest = qtl::test::EigenSingleThread;

#define EXPECT_ERROR_HAS(expr, text) EXPECT_NE(error_of([&] { (void)(expr); }).find(text), std::string::npos) << error_of([&] { (void)(expr); })

const m::Transformer& rtn3() {
  static const m::Transformer q = [] {
    const auto rtn = m::make_recipe({.name = "rtn", .bits = 3, .group = 32});
    return m::quantize_sequential(fixture().fp32, {}, *rtn);
  }();
  return q;
}

template <class S>
m::BlockMatrix<S> log_softmax(const m::BlockMatrix<S>& z) {
  m::BlockMatrix<S> out = z;
  for (Index t = 0; t < z.rows(); ++t) {
    const S zmax = z.row(t).maxCoeff();
    out.row(t).array() -= zmax + std::log((z.row(t).array() - zmax).exp().sum());
  }
  return out;
}

/// n stories from `first` on, each cut to at most `tokens` tokens (the tuning tests' short sets).
std::vector<std::vector<int>> stories(std::size_t first, std::size_t n, std::size_t tokens) {
  auto out = fixture().calibration(first, n);
  for (auto& ids : out) ids.resize(std::min(ids.size(), tokens));
  return out;
}

/// Mean KL(fp32 ‖ model) per token over the sequences.
double mean_kl(const m::Transformer& model, const std::vector<std::vector<int>>& seqs) {
  double sum = 0.0;
  Index tokens = 0;
  for (const auto& s : seqs) {
    const qtl::RowMatrixXf lp = log_softmax<float>(fixture().fp32.forward(s));
    const qtl::RowMatrixXf lq = log_softmax<float>(model.forward(s));
    sum += static_cast<double>((lp.array().exp() * (lp - lq).array()).sum());
    tokens += lp.rows();
  }
  return sum / static_cast<double>(tokens);
}

TEST_F(FinetuneTest, GainGradientEqualsFiniteDifferences) {
  const auto& f = fixture();
  const m::Transformer& q = rtn3();
  auto ids = f.calibration(3, 1).front();
  ids.resize(12);
  const m::BlockFunction<double> block(q.config());
  m::ModelWeights<double> w = m::model_weights<double>(q);
  const m::BlockMatrix<double> h0 = q.embed(ids).cast<double>();
  const m::BlockMatrix<double> target = log_softmax<double>(f.fp32.forward(ids).cast<double>());
  const auto g = m::kl_gain_gradient(block, w, h0, target);

  // The KL is the real model's (float kernels, so within float rounding).
  const m::BlockMatrix<double> lq = log_softmax<double>(q.forward(ids).cast<double>());
  const double kl_real = (target.array().exp() * (target - lq).array()).sum();
  EXPECT_NEAR(g.kl, kl_real, 1e-3 * kl_real);
  ASSERT_EQ(g.attention_norm.size(), 5u);

  auto check = [&](auto&& slot, const m::BlockVector<double>& analytic, const char* what) {
    for (Index c : {Index{0}, Index{17}, Index{63}}) {
      const double keep = slot()(c), h = 1e-6;
      slot()(c) = keep + h;
      const double up = m::kl_gain_gradient(block, w, h0, target, false).kl;
      slot()(c) = keep - h;
      const double down = m::kl_gain_gradient(block, w, h0, target, false).kl;
      slot()(c) = keep;
      const double numeric = (up - down) / (2 * h);
      EXPECT_NEAR(analytic(c), numeric, 1e-5 * std::abs(numeric) + 1e-8) << what << " channel " << c;
    }
  };
  check([&]() -> m::BlockVector<double>& { return w.final_norm; }, g.final_norm, "final norm");
  check([&]() -> m::BlockVector<double>& { return w.blocks[1].attention_norm; }, g.attention_norm[1], "block 1 attention norm");
  check([&]() -> m::BlockVector<double>& { return w.blocks[3].ffn_norm; }, g.ffn_norm[3], "block 3 ffn norm");
  check([&]() -> m::BlockVector<double>& { return w.blocks[0].ffn_norm; }, g.ffn_norm[0], "block 0 ffn norm");
  // And with respect to the linears' weights (what the scale gradient is made of).
  ASSERT_EQ(g.linear.size(), 5u);
  for (auto [layer, slot, r, c] : {std::array<Index, 4>{1, 4, 5, 9}, std::array<Index, 4>{3, 3, 60, 2}}) {
    auto& wt = w.blocks[static_cast<std::size_t>(layer)].linear[static_cast<std::size_t>(slot)];
    const double keep = wt(r, c), h = 1e-6;
    wt(r, c) = keep + h;
    const double up = m::kl_gain_gradient(block, w, h0, target, false).kl;
    wt(r, c) = keep - h;
    const double down = m::kl_gain_gradient(block, w, h0, target, false).kl;
    wt(r, c) = keep;
    const double numeric = (up - down) / (2 * h);
    const double analytic = g.linear[static_cast<std::size_t>(layer)][static_cast<std::size_t>(slot)](r, c);
    EXPECT_NEAR(analytic, numeric, 1e-5 * std::abs(numeric) + 1e-8) << "layer " << layer << " linear " << slot;
  }
  // The gradient is not trivially zero.
  EXPECT_GT(g.final_norm.cwiseAbs().maxCoeff(), 1e-4);
  EXPECT_GT(g.attention_norm[0].cwiseAbs().maxCoeff(), 1e-4);
}

TEST_F(FinetuneTest, LowersTheKlOnStoriesItNeverSawAndIgnoresTheThreadCount) {
  const auto& f = fixture();
  const auto calibration = stories(0, 12, 96);
  const auto held_out = stories(300, 8, 128);
  m::FinetuneOptions opt;
  opt.iterations = 30;
  opt.learning_rate = 3e-3;
  opt.eval_sequences = 6;
  opt.eval_every = 5;
  opt.threads = 1;
  m::Transformer tuned = rtn3();
  const auto r = m::finetune_norms(f.fp32, tuned, calibration, opt);
  EXPECT_LE(r.final_kl, r.start_kl);
  EXPECT_LT(r.final_kl, 0.95 * r.start_kl) << "start " << r.start_kl << " final " << r.final_kl;
  EXPECT_GT(r.best_iteration, 0);
  // The report is the installed model's KL on the evaluation subset (evenly spaced sequences).
  std::vector<std::vector<int>> subset;
  for (std::size_t e = 0; e < 6; ++e) subset.push_back(calibration[e * 12 / 6]);
  EXPECT_NEAR(mean_kl(tuned, subset), r.final_kl, 1e-6 * r.final_kl);
  EXPECT_NEAR(mean_kl(rtn3(), subset), r.start_kl, 1e-6 * r.start_kl);
  // Only gains moved, each within [½, 3/2] of where it started; linears are the same ops.
  const auto& g0 = rtn3().norm_gain("layers.2.ffn_norm");
  const auto& g1 = tuned.norm_gain("layers.2.ffn_norm");
  EXPECT_NE(g0, g1);
  EXPECT_TRUE(((g1.array() / g0.array()) >= 0.5f - 1e-6f).all() && ((g1.array() / g0.array()) <= 1.5f + 1e-6f).all());
  EXPECT_NE(tuned.norm_gain("norm"), rtn3().norm_gain("norm"));
  EXPECT_EQ(tuned.linear("layers.1.w2").describe(), rtn3().linear("layers.1.w2").describe());
  // On stories it never saw.
  EXPECT_LT(mean_kl(tuned, held_out), mean_kl(rtn3(), held_out));

  // The same gains on two threads; none moved with zero steps.
  m::FinetuneOptions brief = opt;
  brief.iterations = 4;
  brief.eval_every = 2;
  m::Transformer one = rtn3(), two = rtn3();
  (void)m::finetune_norms(f.fp32, one, calibration, brief);
  brief.threads = 2;
  (void)m::finetune_norms(f.fp32, two, calibration, brief);
  for (const char* name : {"layers.0.attention_norm", "layers.4.ffn_norm", "norm"}) {
    EXPECT_EQ(one.norm_gain(name), two.norm_gain(name)) << name;
  }
  brief.iterations = 0;
  m::Transformer none = rtn3();
  const auto r0 = m::finetune_norms(f.fp32, none, calibration, brief);
  EXPECT_EQ(r0.start_kl, r0.final_kl);
  EXPECT_EQ(none.norm_gain("layers.3.attention_norm"), rtn3().norm_gain("layers.3.attention_norm"));
}

// With scales, the uniform codes' group scales move too: the KL falls below what the gains
// alone reach, on the chosen subset and on stories never seen; every op keeps its kind, its
// size and its codes (each weight moves by one factor per row and group within the range).
TEST_F(FinetuneTest, ScalesLowerTheKlBeyondTheGainsAtTheSameSize) {
  const auto& f = fixture();
  const auto calibration = stories(0, 12, 96);
  const auto held_out = stories(300, 8, 128);
  m::FinetuneOptions opt;
  opt.iterations = 20;
  opt.learning_rate = 3e-3;
  opt.scale_learning_rate = 3e-3;
  opt.scale_range = 0.2;
  opt.eval_sequences = 6;
  opt.eval_every = 5;
  opt.threads = 1;
  m::Transformer gains = rtn3(), scaled = rtn3();
  const auto rg = m::finetune_model(f.fp32, gains, calibration, opt);
  opt.scales = true;
  const auto rs = m::finetune_model(f.fp32, scaled, calibration, opt);
  EXPECT_EQ(rs.start_kl, rg.start_kl);
  EXPECT_LT(rs.final_kl, rg.final_kl) << "gains " << rg.final_kl << ", gains and scales " << rs.final_kl;
  EXPECT_LT(mean_kl(scaled, held_out), mean_kl(rtn3(), held_out));
  std::printf("[ real ] KL on the subset: start %.5f, gains %.5f, gains and scales %.5f\n", rs.start_kl, rg.final_kl,
              rs.final_kl);
  const qtl::RowMatrixXf eye = qtl::RowMatrixXf::Identity(64, 64);
  int moved = 0;
  for (const char* name : {"layers.0.wq", "layers.2.wo", "layers.4.w1"}) {
    const m::LinearOp& a = rtn3().linear(name);
    const m::LinearOp& b = scaled.linear(name);
    EXPECT_EQ(a.describe(), b.describe()) << name;
    EXPECT_EQ(a.scale_group_bounds(), b.scale_group_bounds()) << name;
    const qtl::RowMatrixXf wa = a.forward(eye).transpose(), wb = b.forward(eye).transpose();
    for (Index r = 0; r < wa.rows(); ++r) {
      for (Index c = 0; c < wa.cols(); ++c) {
        if (wa(r, c) == 0.0f) continue;
        const float ratio = wb(r, c) / wa(r, c);
        EXPECT_TRUE(ratio >= 0.8f * (1 - 1e-3f) && ratio <= 1.2f * (1 + 1e-3f)) << name << " " << r << "," << c << " " << ratio;
        moved += ratio != 1.0f;
      }
    }
  }
  EXPECT_GT(moved, 100);
  m::FinetuneOptions norms_only = opt;
  m::Transformer q = rtn3();
  EXPECT_ERROR_HAS(m::finetune_norms(f.fp32, q, calibration, norms_only), "finetune_model tunes the scales too");
  norms_only.scale_range = 1.0;
  EXPECT_ERROR_HAS(m::finetune_model(f.fp32, q, calibration, norms_only), "scale_range must be in (0, 1), got 1");
  norms_only.scale_range = 0.2;
  norms_only.scale_learning_rate = 0.0;
  EXPECT_ERROR_HAS(m::finetune_model(f.fp32, q, calibration, norms_only), "scale_learning_rate must be in (0, 1], got 0");
  norms_only.scale_learning_rate = 2.0;
  EXPECT_ERROR_HAS(m::finetune_model(f.fp32, q, calibration, norms_only), "scale_learning_rate must be in (0, 1], got 2");
  // An op without group scales (the fp32 model's dense weights) has none to offer or multiply.
  const auto dense = f.fp32.linear("layers.0.wq").clone();
  EXPECT_TRUE(dense->scale_group_bounds().empty());
  const std::vector<float> ones(64, 1.0f);
  EXPECT_ERROR_HAS(dense->multiply_group_scales(ones), "has no group scales to multiply");
}

TEST_F(FinetuneTest, BadInputNamesTheValue) {
  const auto& f = fixture();
  const auto calibration = f.calibration(0, 2);
  m::Transformer q = rtn3();
  m::FinetuneOptions o;
  o.iterations = 1;
  EXPECT_ERROR_HAS(m::finetune_norms(f.fp32, q, {}, o), "no calibration sequences");
  const std::vector<std::vector<int>> with_empty = {calibration[0], {}};
  EXPECT_ERROR_HAS(m::finetune_norms(f.fp32, q, with_empty, o), "calibration sequence 1 is empty");
  const std::vector<std::vector<int>> bad_token = {{1, 2, 9999}};
  EXPECT_ERROR_HAS(m::finetune_norms(f.fp32, q, bad_token, o), "token 9999");
  o.learning_rate = 0.0;
  EXPECT_ERROR_HAS(m::finetune_norms(f.fp32, q, calibration, o), "learning_rate");
  o = {};
  o.batch_sequences = 0;
  EXPECT_ERROR_HAS(m::finetune_norms(f.fp32, q, calibration, o), "batch_sequences");
  // A model of another shape: the fp32 model's first four blocks.
  const auto& c = f.fp32.config();
  qtl::io::Llama2cConfig small = c;
  small.n_layers = 4;
  m::TransformerWeights w;
  w.embedding = f.fp32.embedding();
  w.classifier = f.fp32.classifier();
  w.final_norm = f.fp32.norm_gain("norm");
  for (int l = 0; l < 4; ++l) {
    w.attention_norm.push_back(f.fp32.norm_gain(qtl::str_cat("layers.", l, ".attention_norm")));
    w.ffn_norm.push_back(f.fp32.norm_gain(qtl::str_cat("layers.", l, ".ffn_norm")));
    for (const char* s : {"wq", "wk", "wv", "wo", "w1", "w2", "w3"}) {
      w.linears.push_back(dynamic_cast<const m::DenseLinear&>(f.fp32.linear(qtl::str_cat("layers.", l, ".", s))).weight());
    }
  }
  m::Transformer four(small, std::move(w));
  o = {};
  EXPECT_ERROR_HAS(m::finetune_norms(f.fp32, four, calibration, o), "4 layers");
  // Nothing changed in q through all of this.
  EXPECT_EQ(q.norm_gain("norm"), rtn3().norm_gain("norm"));
}

TEST_F(FinetuneTest, GainGradientNamesWhatDoesNotFit) {
  const auto& f = fixture();
  auto ids = f.calibration(3, 1).front();
  ids.resize(8);
  const m::BlockFunction<float> block(rtn3().config());
  const m::ModelWeights<float> w = m::model_weights<float>(rtn3());
  const m::BlockMatrix<float> h0 = rtn3().embed(ids);
  const m::BlockMatrix<float> target = log_softmax<float>(f.fp32.forward(ids));
  ASSERT_GT(m::kl_gain_gradient(block, w, h0, target, false).kl, 0.0);  // the unchanged inputs are fine

  const std::string dim = std::to_string(rtn3().config().dim), vocab = std::to_string(rtn3().config().vocab_size);
  EXPECT_ERROR_HAS(m::kl_gain_gradient(block, w, m::BlockMatrix<float>(h0.leftCols(10)), target), "h0.cols()");
  EXPECT_ERROR_HAS(m::kl_gain_gradient(block, w, m::BlockMatrix<float>(0, h0.cols()), m::BlockMatrix<float>(0, target.cols())),
                   "h0.rows()");
  EXPECT_ERROR_HAS(m::kl_gain_gradient(block, w, h0, m::BlockMatrix<float>(target.topRows(5))), "target_log_probs");
  EXPECT_ERROR_HAS(m::kl_gain_gradient(block, w, h0, m::BlockMatrix<float>(target.leftCols(100))), vocab);
  m::BlockMatrix<float> bad = target;
  bad(2, 7) = -std::numeric_limits<float>::infinity();
  EXPECT_ERROR_HAS(m::kl_gain_gradient(block, w, h0, bad), "target_log_probs holds NaN or Inf");
  bad = h0;
  bad(1, 1) = std::numeric_limits<float>::quiet_NaN();
  EXPECT_ERROR_HAS(m::kl_gain_gradient(block, w, bad, target), "h0 holds NaN or Inf");

  m::ModelWeights<float> v = w;
  v.blocks.pop_back();
  EXPECT_ERROR_HAS(m::kl_gain_gradient(block, v, h0, target), "blocks");
  v = w;
  v.blocks[2].linear[4].resize(3, 3);
  EXPECT_ERROR_HAS(m::kl_gain_gradient(block, v, h0, target), "w1");
  v = w;
  v.classifier.conservativeResize(v.classifier.rows() - 1, Eigen::NoChange);
  EXPECT_ERROR_HAS(m::kl_gain_gradient(block, v, h0, target), "classifier");
  v = w;
  v.classifier(0, 0) = std::numeric_limits<float>::infinity();
  EXPECT_ERROR_HAS(m::kl_gain_gradient(block, v, h0, target), "classifier holds NaN or Inf");
  v = w;
  v.final_norm.conservativeResize(v.final_norm.size() + 1);
  v.final_norm(v.final_norm.size() - 1) = 1.0f;
  EXPECT_ERROR_HAS(m::kl_gain_gradient(block, v, h0, target), "final_norm");
  EXPECT_NE(error_of([&] { (void)m::kl_gain_gradient(block, v, h0, target); }).find(dim), std::string::npos);
}

}  // namespace
