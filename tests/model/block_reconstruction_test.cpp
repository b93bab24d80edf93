// Block-wise reconstruction (qtl/model/block_reconstruction.hpp) on the real model: it starts
// at min-max RTN, never ends worse on its evaluation subset, lowers the block's output error,
// is deterministic for a seed, and through the driver gives a better model than RTN at the
// same bits per weight. Threads split a batch's sequences, not the arithmetic of one.
#include <gtest/gtest.h>
#include <qtl/model/block_reconstruction.hpp>
#include <qtl/model/eval.hpp>
#include <qtl/model/mixed_precision.hpp>
#include <qtl/model/recipes.hpp>
#include <qtl/model/sequential.hpp>

#include <algorithm>
#include <array>
#include <memory>
#include <cmath>
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
using U3 = qtl::Uniform<3, qtl::Mode::Asymmetric>;
using BlockReconstructionTest = qtl::test::EigenSingleThread;

#define EXPECT_ERROR_HAS(expr, text) EXPECT_NE(error_of([&] { (void)(expr); }).find(text), std::string::npos) << error_of([&] { (void)(expr); })

/// Streams entering block `layer` for calibration stories [first, first + count), cut to
/// `tokens`: in the fp32 model, and in the model whose earlier blocks are 3-bit RTN.
struct BlockInputs {
  std::vector<qtl::RowMatrixXf> quantized, fp32;
};
BlockInputs block_inputs(int layer, int first, int count, std::size_t tokens) {
  const auto& f = fixture();
  const auto rtn = m::make_recipe({.name = "rtn", .bits = 3, .group = 32});
  const m::Transformer q = m::quantize_sequential(f.fp32, {}, *rtn);
  BlockInputs in;
  for (auto ids : f.calibration(first, count)) {
    if (ids.size() > tokens) ids.resize(tokens);
    qtl::RowMatrixXf a = q.embed(ids), b = f.fp32.embed(ids);
    for (int l = 0; l < layer; ++l) {
      q.forward_layer(l, a);
      f.fp32.forward_layer(l, b);
    }
    in.quantized.push_back(std::move(a));
    in.fp32.push_back(std::move(b));
  }
  return in;
}

/// 1/N Σ ‖block_q(x̃) − block(x)‖² over the given sequences.
double block_error(const m::BlockFunction<float>& f, const m::BlockWeights<float>& q, const m::BlockWeights<float>& w,
                   const BlockInputs& in, const std::vector<std::size_t>& which) {
  double sum = 0.0;
  Index tokens = 0;
  for (std::size_t i : which) {
    sum += static_cast<double>((f.forward(q, in.quantized[i]) - f.forward(w, in.fp32[i])).squaredNorm());
    tokens += in.quantized[i].rows();
  }
  return sum / static_cast<double>(tokens);
}

m::BlockWeights<float> weights_of(const m::BlockReconstruction<3, qtl::Mode::Asymmetric>& r) {
  m::BlockWeights<float> q;
  for (std::size_t j = 0; j < 7; ++j) q.linear[j] = qtl::dequantize(r.linear[j]);
  q.attention_norm = r.attention_norm;
  q.ffn_norm = r.ffn_norm;
  return q;
}

TEST_F(BlockReconstructionTest, StartsAtRtnEndsBetterAndIsDeterministic) {
  const auto& f = fixture();
  const int layer = 2;
  const BlockInputs in = block_inputs(layer, 0, 16, 64);
  const m::BlockFunction<float> block(f.fp32.config());
  const auto w = m::block_weights<float>(f.fp32, layer);
  m::BlockReconstructionOptions opt;
  opt.iterations = 40;
  opt.eval_sequences = 8;
  opt.eval_every = 5;
  opt.threads = 1;
  const auto r = m::reconstruct_block(U3{}, qtl::PerGroup{32}, block, w, in.quantized, in.fp32, opt);

  // Iteration 0 is min-max RTN with the original gains.
  m::BlockWeights<float> rtn = w;
  for (std::size_t j = 0; j < 7; ++j) rtn.linear[j] = qtl::dequantize(qtl::quantize_matrix(U3{}, qtl::PerGroup{32}, w.linear[j]));
  std::vector<std::size_t> eval;
  for (std::size_t e = 0; e < 8; ++e) eval.push_back(e * 16 / 8);
  EXPECT_NEAR(r.start_loss, block_error(block, rtn, w, in, eval), 1e-4 * r.start_loss);
  // The kept state is what the result holds, and it is better than the start.
  EXPECT_NEAR(r.final_loss, block_error(block, weights_of(r), w, in, eval), 1e-4 * r.final_loss);
  EXPECT_LE(r.final_loss, r.start_loss);
  EXPECT_LT(r.final_loss, 0.9 * r.start_loss) << "start " << r.start_loss << " final " << r.final_loss;
  EXPECT_GT(r.best_iteration, 0);
  // On the sequences it never evaluated on, too.
  std::vector<std::size_t> others;
  for (std::size_t i = 0; i < 16; ++i) {
    if (i % 2 == 1) others.push_back(i);
  }
  EXPECT_LT(block_error(block, weights_of(r), w, in, others), block_error(block, rtn, w, in, others));
  // The gains moved (tune_norms), within [½, 3/2] of the originals.
  EXPECT_GT((r.attention_norm - w.attention_norm).cwiseAbs().maxCoeff(), 0.0f);
  EXPECT_TRUE(((r.ffn_norm.array() / w.ffn_norm.array()) >= 0.5f - 1e-6f).all());
  EXPECT_TRUE(((r.ffn_norm.array() / w.ffn_norm.array()) <= 1.5f + 1e-6f).all());

  // The same result again, and on any number of threads (a short run: on a busy machine every
  // parallel region waits for a second core).
  const auto again = m::reconstruct_block(U3{}, qtl::PerGroup{32}, block, w, in.quantized, in.fp32, opt);
  for (std::size_t j = 0; j < 7; ++j) EXPECT_EQ(again.linear[j].codes, r.linear[j].codes) << m::kBlockLinears[j];
  EXPECT_EQ(again.final_loss, r.final_loss);
  m::BlockReconstructionOptions brief = opt;
  brief.iterations = 6;
  brief.eval_every = 3;
  const auto one = m::reconstruct_block(U3{}, qtl::PerGroup{32}, block, w, in.quantized, in.fp32, brief);
  brief.threads = 2;
  const auto two = m::reconstruct_block(U3{}, qtl::PerGroup{32}, block, w, in.quantized, in.fp32, brief);
  for (std::size_t j = 0; j < 7; ++j) EXPECT_EQ(one.linear[j].codes, two.linear[j].codes) << m::kBlockLinears[j];
  EXPECT_EQ(one.attention_norm, two.attention_norm);
  // From another solver's codes: iteration 0 reproduces them (no steps: exactly them).
  m::BlockReconstructionOptions none = opt;
  none.iterations = 0;
  const auto from = m::reconstruct_block(U3{}, qtl::PerGroup{32}, block, w, in.quantized, in.fp32, none, &r.linear);
  for (std::size_t j = 0; j < 7; ++j) EXPECT_EQ(from.linear[j].codes, r.linear[j].codes) << m::kBlockLinears[j];
  EXPECT_EQ(from.attention_norm, w.attention_norm);
  // Without gain tuning, the gains stay.
  opt.tune_norms = false;
  const auto fixed = m::reconstruct_block(U3{}, qtl::PerGroup{32}, block, w, in.quantized, in.fp32, opt);
  EXPECT_EQ(fixed.attention_norm, w.attention_norm);
  EXPECT_LE(fixed.final_loss, fixed.start_loss);
}

TEST_F(BlockReconstructionTest, ThroughTheDriverBeatsRtnAtEqualBits) {
  const auto& f = fixture();
  auto calibration = f.calibration(0, 8);
  for (auto& ids : calibration) ids.resize(std::min<std::size_t>(ids.size(), 128));
  const auto eval = f.eval_slice(250, 8);
  m::EvalOptions eo;
  eo.threads = 2;
  m::BlockReconstructionOptions opt;
  opt.iterations = 20;
  opt.eval_sequences = 4;
  opt.threads = 1;
  m::BlockReconstructionRecipe<3, qtl::Mode::Asymmetric> recipe(U3{}, qtl::PerGroup{32}, opt);
  m::SequentialReport report;
  const m::Transformer q = m::quantize_sequential(f.fp32, calibration, recipe, {}, &report);
  const auto rtn_recipe = m::make_recipe({.name = "rtn", .bits = 3, .group = 32});
  m::SequentialReport rtn_report;
  const m::Transformer rtn = m::quantize_sequential(f.fp32, {}, *rtn_recipe, {}, &rtn_report);
  ASSERT_EQ(report.layers.size(), 35u);
  EXPECT_DOUBLE_EQ(report.bits_per_weight(), rtn_report.bits_per_weight());
  EXPECT_NE(q.linear("layers.4.w2").describe().find("uniform3"), std::string::npos) << q.linear("layers.4.w2").describe();
  EXPECT_NE(q.norm_gain("layers.3.ffn_norm"), f.fp32.norm_gain("layers.3.ffn_norm"));
  const double ppl = m::perplexity(q, f.tokenizer, eval, eo).perplexity;
  const double ppl_rtn = m::perplexity(rtn, f.tokenizer, eval, eo).perplexity;
  EXPECT_LT(ppl, 0.97 * ppl_rtn) << "block-wise " << ppl << " vs rtn " << ppl_rtn;
  // Through make_recipe, by name.
  EXPECT_EQ(m::make_recipe({.name = "autoround", .bits = 2})->name(), "autoround");
}

/// Every linear of the model at one precision, or `override_` where named.
m::MixedBlockReconstructionRecipe<qtl::Mode::Asymmetric>::Precisions all_at(const m::Transformer& model, m::Precision p) {
  m::MixedBlockReconstructionRecipe<qtl::Mode::Asymmetric>::Precisions out;
  for (const auto& n : model.linear_names()) out.emplace(n, p);
  return out;
}

TEST_F(BlockReconstructionTest, MixedWidthsTuneEachMatrixAtItsOwn) {
  const auto& f = fixture();
  auto calibration = f.calibration(0, 4);
  for (auto& ids : calibration) ids.resize(std::min<std::size_t>(ids.size(), 64));
  m::BlockReconstructionOptions opt;
  opt.iterations = 8;
  opt.eval_sequences = 4;
  opt.eval_every = 2;
  opt.threads = 1;
  // One precision everywhere: the same model as the single-width recipe, bit for bit.
  const m::MixedBlockReconstructionRecipe<qtl::Mode::Asymmetric> same(all_at(f.fp32, {3, 32}), opt);
  const m::BlockReconstructionRecipe<3, qtl::Mode::Asymmetric> single(U3{}, qtl::PerGroup{32}, opt);
  const m::Transformer a = m::quantize_sequential(f.fp32, calibration, same);
  const m::Transformer b = m::quantize_sequential(f.fp32, calibration, single);
  const std::vector<int> probe(calibration[1].begin(), calibration[1].begin() + 32);
  EXPECT_EQ(a.forward(probe), b.forward(probe));
  EXPECT_EQ(a.norm_gain("layers.2.attention_norm"), b.norm_gain("layers.2.attention_norm"));

  // Mixed: each matrix at its own width and group size, as the layer reports say.
  auto precisions = all_at(f.fp32, {4, 0});
  for (int l = 0; l < 5; ++l) {
    precisions[qtl::str_cat("layers.", l, ".wk")] = {8, 0};
    precisions[qtl::str_cat("layers.", l, ".w2")] = {2, 32};
    precisions[qtl::str_cat("layers.", l, ".w3")] = {3, 32};
  }
  const m::MixedBlockReconstructionRecipe<qtl::Mode::Asymmetric> mixed(precisions, opt);
  m::SequentialReport report;
  const m::Transformer q = m::quantize_sequential(f.fp32, calibration, mixed, {}, &report);
  ASSERT_EQ(report.layers.size(), 35u);
  auto rtn_bits = [](int bits, const qtl::Granularity& g, const qtl::RowMatrixXf& w) {
    using qtl::Mode;
    switch (bits) {
      case 2: return qtl::bits_per_weight(qtl::quantize_matrix(qtl::Uniform<2, Mode::Asymmetric>{}, g, w));
      case 3: return qtl::bits_per_weight(qtl::quantize_matrix(qtl::Uniform<3, Mode::Asymmetric>{}, g, w));
      case 4: return qtl::bits_per_weight(qtl::quantize_matrix(qtl::Uniform<4, Mode::Asymmetric>{}, g, w));
      default: return qtl::bits_per_weight(qtl::quantize_matrix(qtl::Uniform<8, Mode::Asymmetric>{}, g, w));
    }
  };
  for (const auto& layer : report.layers) {
    const m::Precision& p = precisions.at(layer.name);
    const auto& w = dynamic_cast<const m::DenseLinear&>(f.fp32.linear(layer.name)).weight();
    const qtl::Granularity g = p.group == 0 ? qtl::Granularity{qtl::PerRow{}} : qtl::Granularity{qtl::PerGroup{p.group}};
    EXPECT_DOUBLE_EQ(layer.bits_per_weight, rtn_bits(p.bits, g, w)) << layer.name;
    EXPECT_NE(q.linear(layer.name).describe().find(qtl::str_cat("uniform", p.bits)), std::string::npos)
        << layer.name << ": " << q.linear(layer.name).describe();
    EXPECT_NE(layer.note.find(m::to_string(p)), std::string::npos) << layer.note;
  }

  // One block by hand: iteration 0 is RTN at each matrix's precision, and the kept state is
  // never worse than it on the evaluation subset.
  const int layer = 1;
  const BlockInputs in = block_inputs(layer, 0, 8, 48);
  const m::BlockFunction<float> block(f.fp32.config());
  const auto w = m::block_weights<float>(f.fp32, layer);
  std::array<std::unique_ptr<m::detail::BlockLinearTuner>, 7> tuners;
  m::BlockWeights<float> rtn = w;
  for (std::size_t j = 0; j < 7; ++j) {
    const m::Precision& p = precisions.at(qtl::str_cat("layers.", layer, ".", m::kBlockLinears[j]));
    const qtl::Granularity g = p.group == 0 ? qtl::Granularity{qtl::PerRow{}} : qtl::Granularity{qtl::PerGroup{p.group}};
    tuners[j] = m::detail::make_uniform_tuner<qtl::Mode::Asymmetric>(p.bits, g, w.linear[j], "test");
    tuners[j]->forward();
    rtn.linear[j] = tuners[j]->dequantized();
  }
  EXPECT_EQ(rtn.linear[1], qtl::dequantize(qtl::quantize_matrix(qtl::Uniform<8, qtl::Mode::Asymmetric>{}, qtl::PerRow{}, w.linear[1])));
  m::BlockReconstructionOptions o = opt;
  o.iterations = 20;
  const auto t = m::detail::tune_block(tuners, block, w, in.quantized, in.fp32, o);
  std::vector<std::size_t> eval;
  for (std::size_t e = 0; e < 4; ++e) eval.push_back(e * 8 / 4);
  EXPECT_NEAR(t.start_loss, block_error(block, rtn, w, in, eval), 1e-4 * t.start_loss);
  EXPECT_LT(t.final_loss, t.start_loss);
  m::BlockWeights<float> kept = w;
  for (std::size_t j = 0; j < 7; ++j) {
    const auto l = tuners[j]->kept_layer({});
    kept.linear[j] = l.op->forward(qtl::RowMatrixXf::Identity(w.linear[j].cols(), w.linear[j].cols())).transpose();
  }
  kept.attention_norm = t.attention_norm;
  kept.ffn_norm = t.ffn_norm;
  EXPECT_NEAR(t.final_loss, block_error(block, kept, w, in, eval), 1e-3 * t.final_loss);

  // Through make_recipe, and what it refuses, by name.
  m::RecipeSpec spec{.name = "autoround"};
  spec.precisions = precisions;
  const auto made = m::make_recipe(spec);
  EXPECT_EQ(made->name(), "autoround-mixed");
  EXPECT_TRUE(made->quantizes_blocks());
  spec.name = "gptq";
  EXPECT_ERROR_HAS(m::make_recipe(spec), "per-matrix precisions");
  auto wrong = precisions;
  wrong["layers.3.w1"] = {7, 32};
  EXPECT_ERROR_HAS((m::MixedBlockReconstructionRecipe<qtl::Mode::Asymmetric>(wrong, opt)), "'layers.3.w1' is allocated 7 bits");
  wrong["layers.3.w1"] = {2, 0, "gptaq-e8p"};
  EXPECT_ERROR_HAS((m::MixedBlockReconstructionRecipe<qtl::Mode::Asymmetric>(wrong, opt)), "tunes uniform codes only");
  wrong = precisions;
  wrong.erase("layers.4.wo");
  const m::MixedBlockReconstructionRecipe<qtl::Mode::Asymmetric> missing(wrong, opt);
  EXPECT_ERROR_HAS(m::quantize_sequential(f.fp32, calibration, missing), "no precision for 'layers.4.wo'");
}

TEST_F(BlockReconstructionTest, BadInputNamesTheValue) {
  const auto& f = fixture();
  const m::BlockFunction<float> block(f.fp32.config());
  const auto w = m::block_weights<float>(f.fp32, 0);
  const BlockInputs in = block_inputs(0, 0, 2, 32);
  auto run = [&](const std::vector<qtl::RowMatrixXf>& a, const std::vector<qtl::RowMatrixXf>& b, m::BlockReconstructionOptions o) {
    return m::reconstruct_block(U3{}, qtl::PerGroup{32}, block, w, a, b, o);
  };
  m::BlockReconstructionOptions o;
  o.iterations = 2;
  EXPECT_ERROR_HAS(run({}, {}, o), "no calibration sequences");
  EXPECT_ERROR_HAS(run(in.quantized, {in.fp32.front()}, o), "2 quantized-model inputs but 1 fp32");
  auto shorter = in.fp32;
  shorter[1] = qtl::RowMatrixXf(shorter[1].topRows(5));
  EXPECT_ERROR_HAS(run(in.quantized, shorter, o), "sequence 1");
  // A wrong width is named before the threads run (an exception must not escape them).
  const std::vector<qtl::RowMatrixXf> narrow = {qtl::RowMatrixXf::Zero(8, 63), qtl::RowMatrixXf::Zero(8, 63)};
  o.threads = 2;
  EXPECT_ERROR_HAS(run(narrow, narrow, o), "8x63; the block takes 1..512 tokens of 64 channels");
  o.threads = 0;
  auto nan = in.quantized;
  nan[0](1, 1) = std::nanf("");
  EXPECT_ERROR_HAS(run(nan, in.fp32, o), "NaN");
  // A start from another granularity is named, not silently kept.
  std::array<qtl::QuantizedMatrix<U3>, 7> start64;
  for (std::size_t j = 0; j < 7; ++j) start64[j] = qtl::quantize_matrix(U3{}, qtl::PerGroup{64}, w.linear[j]);
  EXPECT_ERROR_HAS(m::reconstruct_block(U3{}, qtl::PerGroup{32}, block, w, in.quantized, in.fp32, o, &start64),
                   "start matrix wq is 64x64 in groups of 64");
  o.batch_sequences = 0;
  EXPECT_ERROR_HAS(run(in.quantized, in.fp32, o), "batch_sequences");
  o = {};
  o.min_clip = 2.0f;
  EXPECT_ERROR_HAS(run(in.quantized, in.fp32, o), "min_clip");
  o = {};
  o.iterations = -1;
  EXPECT_ERROR_HAS((m::BlockReconstructionRecipe<3, qtl::Mode::Asymmetric>(U3{}, qtl::PerGroup{32}, o)), "iterations");
  EXPECT_ERROR_HAS(m::make_recipe({.name = "autoround", .bits = 7}), "bits = 7");
  // A block-wise recipe is not a per-group one, and says so.
  m::BlockReconstructionRecipe<3, qtl::Mode::Asymmetric> recipe(U3{}, qtl::PerGroup{32}, {});
  EXPECT_ERROR_HAS(recipe.quantize({}), "quantizes whole blocks");
  EXPECT_ERROR_HAS(m::quantize_sequential(f.fp32, {}, recipe), "calibration");
}

}  // namespace
