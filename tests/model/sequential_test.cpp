// The sequential driver and the quantized model on the real stories260K model and text.
#include "recipe_instances.hpp"  // first: the recipe classes are compiled in qtl_recipe_instances
#include <gtest/gtest.h>
#include "data_path.hpp"
#include <qtl/model/eval.hpp>
#include <qtl/model/recipes.hpp>
#include <qtl/model/sequential.hpp>
#include <qtl/model/tokenizer.hpp>

#include <cmath>
#include <cstdio>
#include <limits>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "model/real_model_fixture.hpp"

namespace {

namespace m = qtl::model;
using qtl::test::fixture;

TEST(QuantizedModel, ForwardOnPackedWeightsEqualsFp32ForwardOfDequantizedWeights) {
  const auto& f = fixture();
  m::Transformer packed = f.fp32, dense = f.fp32;
  for (const auto& name : f.fp32.linear_names()) {
    const auto& w = dynamic_cast<const m::DenseLinear&>(f.fp32.linear(name)).weight();
    const auto q = qtl::quantize_matrix(qtl::Uniform<4>{}, qtl::PerGroup{32}, w);
    packed.set_linear(name, m::make_packed_linear(q));
    dense.set_linear(name, std::make_unique<m::DenseLinear>(qtl::dequantize(q)));
    EXPECT_NE(packed.linear(name).describe().find("uniform4"), std::string::npos) << packed.linear(name).describe();
  }
  const auto ids = m::encode_story(f.tokenizer, f.stories[300], f.fp32.config().seq_len).ids;
  const qtl::RowMatrixXf a = packed.forward(ids), b = dense.forward(ids), c = f.fp32.forward(ids);
  const float scale = b.cwiseAbs().maxCoeff();
  EXPECT_LE((a - b).cwiseAbs().maxCoeff(), 2e-4f * scale);
  // and the 4-bit model is measurably different from fp32 (the comparison above is not vacuous)
  EXPECT_GT((c - b).cwiseAbs().maxCoeff(), 100 * 2e-4f * scale);
}

// Every width the packed kernels run, 5 and 6 bits included: the KL rises at each step down,
// the perplexity from 4 bits down (above 4 bits its changes are within the evaluation's noise).
TEST(SequentialDriver, RtnPerplexityRisesAsBitsFallAndEightBitIsNearFp32) {
  const auto& f = fixture();
  const auto calib = f.calibration(0, 16);
  const auto eval = f.eval_slice(250, 24);
  m::EvalOptions opt;
  opt.threads = 2;
  const double base = m::perplexity(f.fp32, f.tokenizer, eval, opt).perplexity;
  double prev = base, prev_kl = 0.0;
  for (int bits : {8, 6, 5, 4, 3, 2}) {
    m::RecipeSpec spec;
    spec.name = "rtn";
    spec.bits = bits;
    spec.group = 32;
    m::SequentialReport report;
    const auto q = m::quantize_sequential(f.fp32, calib, *m::make_recipe(spec), {}, &report);
    ASSERT_EQ(report.layers.size(), f.fp32.linear_names().size());
    EXPECT_NEAR(report.bits_per_weight(), bits + 24.0 / 32.0, 0.15) << bits;  // codes + fp16 scale + zero per 32
    const auto r = m::kl_divergence(f.fp32, q, f.tokenizer, eval, opt);
    if (bits == 8) {
      EXPECT_LT(std::fabs(r.perplexity / base - 1.0), 0.005) << r.perplexity << " vs " << base;
    }
    if (bits <= 4) {
      EXPECT_GT(r.perplexity, prev) << bits << " bits";
    }
    EXPECT_GT(r.mean_kl, 1.5 * prev_kl) << bits << " bits";
    std::printf("[ real ] rtn %d-bit g32: perplexity %.4f, KL %.6f\n", bits, r.perplexity, r.mean_kl);
    prev = r.perplexity;
    prev_kl = r.mean_kl;
  }
}

TEST(SequentialDriver, CalibrationStatisticsComeFromThePartlyQuantizedModel) {
  // A recipe that records what it sees: every linear is offered exactly once, in true-sequential
  // order, with its own input width, and statistics over every calibration token.
  struct Recorder final : m::Recipe {
    mutable std::vector<std::string> seen;
    mutable std::vector<std::int64_t> tokens;
    std::string name() const override { return "recorder"; }
    std::vector<m::QuantizedLayer> quantize(std::span<const m::LayerCalibration> group) const override {
      std::vector<m::QuantizedLayer> out;
      for (const auto& l : group) {
        EXPECT_EQ(l.stats->in_features(), l.weight->cols()) << l.name;
        EXPECT_EQ(l.input_sample->cols(), l.weight->cols()) << l.name;
        seen.push_back(l.name);
        tokens.push_back(l.stats->tokens());
        out.push_back({std::make_unique<m::DenseLinear>(*l.weight), 32.0, "", {}});
      }
      return out;
    }
  } recorder;
  const auto& f = fixture();
  const auto calib = f.calibration(0, 3);
  std::int64_t total = 0;
  for (const auto& c : calib) total += static_cast<std::int64_t>(c.size());
  const auto q = m::quantize_sequential(f.fp32, calib, recorder);
  ASSERT_EQ(recorder.seen.size(), 35u);
  EXPECT_EQ(recorder.seen[0], "layers.0.wq");
  EXPECT_EQ(recorder.seen[3], "layers.0.wo");
  EXPECT_EQ(recorder.seen[4], "layers.0.w1");
  EXPECT_EQ(recorder.seen[5], "layers.0.w3");
  EXPECT_EQ(recorder.seen[6], "layers.0.w2");
  for (auto t : recorder.tokens) EXPECT_EQ(t, total);
  // An identity recipe leaves the model's outputs unchanged.
  const auto ids = calib[0];
  EXPECT_LE((q.forward(ids) - f.fp32.forward(ids)).cwiseAbs().maxCoeff(), 1e-5f);
}

// Recipes that quantize toward the unquantized model's outputs get C = 2/n Σ x̃ xᵀ: equal to H
// where nothing upstream is quantized (the first group), different after a quantized group.
TEST(SequentialDriver, Fp32CrossStatisticsPairTheQuantizedAndUnquantizedInputs) {
  struct CrossRecorder final : m::Recipe {
    mutable std::vector<double> rel_diff;  // ‖C − H‖ / ‖H‖ per group
    std::string name() const override { return "cross-recorder"; }
    bool wants_fp32_targets() const override { return true; }
    std::vector<m::QuantizedLayer> quantize(std::span<const m::LayerCalibration> group) const override {
      const auto& l = group.front();
      EXPECT_NE(l.fp32_cross, nullptr) << l.name;
      if (l.fp32_cross != nullptr) {
        const Eigen::MatrixXd h = l.stats->hessian();
        rel_diff.push_back((*l.fp32_cross - h).norm() / h.norm());
      }
      std::vector<m::QuantizedLayer> out;
      for (const auto& g : group) {  // 2-bit RTN, so the next groups' inputs differ
        const auto qm = qtl::quantize_matrix(qtl::Uniform<2>{}, qtl::PerRow{}, *g.weight);
        out.push_back({std::make_unique<m::DenseLinear>(qtl::dequantize(qm)), 2.0, "", {}});
      }
      return out;
    }
  } recorder;
  const auto& f = fixture();
  (void)m::quantize_sequential(f.fp32, f.calibration(0, 3), recorder);
  ASSERT_EQ(recorder.rel_diff.size(), 20u);  // 4 groups x 5 blocks
  EXPECT_LT(recorder.rel_diff[0], 1e-5);     // layers.0.wq: the embedding, quantized by nothing
  for (std::size_t i = 1; i < recorder.rel_diff.size(); ++i) EXPECT_GT(recorder.rel_diff[i], 1e-3) << "group " << i;
}

TEST(SequentialDriver, RtnRunsNoCalibrationPass) {
  // RTN reads no statistics: it needs no calibration text, and the text changes nothing.
  const auto& f = fixture();
  m::RecipeSpec spec;  // rtn, 4-bit, group 32
  const auto rtn = m::make_recipe(spec);
  EXPECT_FALSE(rtn->needs_calibration());
  m::SequentialReport report;
  const auto without = m::quantize_sequential(f.fp32, std::span<const std::vector<int>>(), *rtn, {}, &report);
  EXPECT_EQ(report.calibration_tokens, 0);
  const auto with = m::quantize_sequential(f.fp32, f.calibration(0, 2), *rtn);
  const auto ids = m::encode_story(f.tokenizer, f.stories[300], f.fp32.config().seq_len).ids;
  EXPECT_EQ(without.forward(ids), with.forward(ids));
  // The imatrix-weighted RTN and GPTQ do read the inputs.
  spec.name = "rtn-imatrix";
  EXPECT_TRUE(m::make_recipe(spec)->needs_calibration());
  spec.name = "gptq";
  EXPECT_TRUE(m::make_recipe(spec)->needs_calibration());
  spec.name = "quarot-rtn";
  EXPECT_FALSE(m::make_recipe(spec)->needs_calibration());
}

TEST(SequentialDriver, BadInputIsAnError) {
  const auto& f = fixture();
  m::RecipeSpec spec;
  spec.name = "gptq";  // a recipe that calibrates, given no calibration text
  const std::string msg = [&] {
    try {
      (void)m::quantize_sequential(f.fp32, std::span<const std::vector<int>>(), *m::make_recipe(spec));
    } catch (const qtl::Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  }();
  EXPECT_NE(msg.find("no calibration sequences"), std::string::npos) << msg;
  spec.name = "rtn";
  spec.name = "no-such-recipe";
  EXPECT_THROW((void)m::make_recipe(spec), qtl::Error);
  spec.name = "rtn";
  spec.bits = 9;
  EXPECT_THROW((void)m::make_recipe(spec), qtl::Error);
  spec.bits = 7;  // a valid quantizer without a packed kernel format: refused at the door
  EXPECT_THROW((void)m::make_recipe(spec), qtl::Error);
  spec.name = "gptq";
  EXPECT_THROW((void)m::make_recipe(spec), qtl::Error);
  spec.name = "rtn";
  spec.bits = 4;
  spec.group = -1;
  EXPECT_THROW((void)m::make_recipe(spec), qtl::Error);
  spec.group = 32;
  spec.name = "gptq";
  spec.damp = -0.01;
  EXPECT_THROW((void)m::make_recipe(spec), qtl::Error);
  spec.damp = std::numeric_limits<double>::quiet_NaN();
  EXPECT_THROW((void)m::make_recipe(spec), qtl::Error);
}

// Wraps 4-bit RTN and attaches chosen input scales to the layers of one group (named by its
// first layer, e.g. "layers.0.wq"). Where a layer's scales are a valid fold (right size, finite,
// > 0), it quantizes W·diag(s) instead of W, so after the driver folds s into the RMSNorm gain
// (x → x ⊘ s) the model computes what plain RTN computes.
class FoldingRecipe final : public m::Recipe {
 public:
  FoldingRecipe(std::string group_front, std::vector<qtl::VectorXf> scales)
      : group_front_(std::move(group_front)), scales_(std::move(scales)), inner_(m::make_recipe(m::RecipeSpec{})) {}

  std::string name() const override { return "fold-probe"; }

  std::vector<m::QuantizedLayer> quantize(std::span<const m::LayerCalibration> group) const override {
    if (group.front().name != group_front_) return inner_->quantize(group);
    EXPECT_EQ(group.size(), scales_.size()) << group_front_;
    std::vector<qtl::RowMatrixXf> scaled(group.size());  // sized up front: pointers stay valid
    std::vector<m::LayerCalibration> calibs(group.begin(), group.end());
    for (std::size_t i = 0; i < group.size(); ++i) {
      const qtl::VectorXf& s = scales_[i];
      if (s.size() == group[i].weight->cols() && s.allFinite() && (s.array() > 0.0f).all()) {
        scaled[i] = *group[i].weight * s.asDiagonal();
        calibs[i].weight = &scaled[i];
      }
    }
    auto out = inner_->quantize(calibs);
    for (std::size_t i = 0; i < out.size(); ++i) out[i].input_scale = scales_[i];
    return out;
  }

 private:
  std::string group_front_;
  std::vector<qtl::VectorXf> scales_;
  std::unique_ptr<m::Recipe> inner_;
};

TEST(SequentialDriver, BadFoldScalesAreErrorsNamingTheLayer) {
  const auto& f = fixture();
  const auto calib = f.calibration(0, 1);
  const auto in = [&](const char* name) { return f.fp32.linear(name).in_features(); };
  const qtl::Index dim = in("layers.0.wq"), hidden = in("layers.0.w2");
  // The driver's error message for a recipe, or "" when it quantizes the model without one.
  const auto error_of = [&](const FoldingRecipe& recipe) -> std::string {
    try {
      (void)m::quantize_sequential(f.fp32, calib, recipe);
    } catch (const qtl::Error& e) {
      return e.what();
    }
    return "";
  };
  const auto with = [](qtl::VectorXf s, qtl::Index i, float v) {
    s(i) = v;
    return s;
  };
  const qtl::VectorXf ones = qtl::VectorXf::Ones(dim);
  const float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();

  struct Case {
    std::string what;
    std::string group_front;
    std::vector<qtl::VectorXf> scales;
    std::string names;  // the layer the message must name
  };
  const std::vector<Case> bad = {
      {"too few scales", "layers.0.wq", std::vector<qtl::VectorXf>(3, qtl::VectorXf::Ones(dim - 1)), "layers.0.wq"},
      {"too many scales", "layers.0.wq", std::vector<qtl::VectorXf>(3, qtl::VectorXf::Ones(dim + 1)), "layers.0.wq"},
      {"a zero scale", "layers.0.wq", std::vector<qtl::VectorXf>(3, with(ones, 5, 0.0f)), "layers.0.wq"},
      {"a NaN scale", "layers.0.wq", std::vector<qtl::VectorXf>(3, with(ones, 5, nan)), "layers.0.wq"},
      {"an infinite scale", "layers.0.wq", std::vector<qtl::VectorXf>(3, with(ones, 5, inf)), "layers.0.wq"},
      {"a negative scale", "layers.0.wq", std::vector<qtl::VectorXf>(3, with(ones, 5, -1.0f)), "layers.0.wq"},
      {"wv's scales differ from wq's and wk's", "layers.0.wq", {ones, ones, with(ones, 5, 2.0f)}, "layers.0.wv"},
      {"only wq asks for a fold", "layers.0.wq", {ones, qtl::VectorXf(), qtl::VectorXf()}, "layers.0.wk"},
      {"w3's scales differ from w1's", "layers.0.w1", {ones, 2 * ones}, "layers.0.w3"},
      {"a fold into wo's input (attention output, no norm)", "layers.0.wo", {ones}, "layers.0.wo"},
      {"a fold into w2's input (SwiGLU output, no norm)", "layers.0.w2", {qtl::VectorXf::Ones(hidden)}, "layers.0.w2"},
  };
  for (const auto& c : bad) {
    const std::string message = error_of(FoldingRecipe(c.group_front, c.scales));
    EXPECT_NE(message.find("'fold-probe'"), std::string::npos) << c.what << ": \"" << message << "\"";
    EXPECT_NE(message.find("'" + c.names + "'"), std::string::npos) << c.what << ": \"" << message << "\"";
  }

  // Valid folds are accepted and applied: the norm gain is divided by s, and since the recipe
  // quantized W·diag(s), the model computes what plain RTN computes.
  const auto rtn = m::quantize_sequential(f.fp32, calib, *m::make_recipe(m::RecipeSpec{}));
  const qtl::VectorXf twos = 2 * ones;
  qtl::VectorXf mixed = ones;
  for (qtl::Index i = 0; i < dim; i += 2) mixed(i) = 2.0f;
  for (const qtl::VectorXf& s : {ones, twos, mixed}) {
    m::Transformer q = f.fp32;
    ASSERT_NO_THROW(q = m::quantize_sequential(f.fp32, calib, FoldingRecipe("layers.0.wq", {s, s, s})))
        << s.transpose();
    const qtl::VectorXf expected = f.fp32.norm_gain("layers.0.attention_norm").cwiseQuotient(s);
    EXPECT_EQ(q.norm_gain("layers.0.attention_norm"), expected) << s.transpose();
    EXPECT_EQ(q.norm_gain("layers.0.ffn_norm"), f.fp32.norm_gain("layers.0.ffn_norm"));
    if (s != mixed) {  // a uniform power-of-two scale commutes with RTN (per-group scales scale with it)
      const qtl::RowMatrixXf a = q.forward(calib[0]), b = rtn.forward(calib[0]);
      EXPECT_LE((a - b).cwiseAbs().maxCoeff(), 1e-4f * b.cwiseAbs().maxCoeff()) << s(0);
    }
  }
  EXPECT_EQ(error_of(FoldingRecipe("layers.0.w1", {twos, twos})), "");  // w1/w3 read ffn_norm's output
}

}  // namespace
