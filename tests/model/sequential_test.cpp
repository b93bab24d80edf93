// The sequential driver and the quantized model on the real stories260K model and text.
#include <gtest/gtest.h>
#include <qtl/io/data_path.hpp>
#include <qtl/model/eval.hpp>
#include <qtl/model/recipes.hpp>
#include <qtl/model/sequential.hpp>
#include <qtl/model/tokenizer.hpp>

#include <cmath>
#include <limits>

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

TEST(SequentialDriver, RtnPerplexityRisesAsBitsFallAndEightBitIsNearFp32) {
  const auto& f = fixture();
  const auto calib = f.calibration(0, 16);
  const auto eval = f.eval_slice(250, 24);
  m::EvalOptions opt;
  opt.threads = 2;
  const double base = m::perplexity(f.fp32, f.tokenizer, eval, opt).perplexity;
  double prev = base;
  for (int bits : {8, 4, 3, 2}) {
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
    EXPECT_GT(r.perplexity, prev) << bits << " bits";
    EXPECT_GT(r.mean_kl, 0.0);
    prev = r.perplexity;
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

TEST(SequentialDriver, BadInputIsAnError) {
  const auto& f = fixture();
  m::RecipeSpec spec;
  EXPECT_THROW((void)m::quantize_sequential(f.fp32, std::span<const std::vector<int>>(), *m::make_recipe(spec)),
               qtl::Error);
  spec.name = "no-such-recipe";
  EXPECT_THROW((void)m::make_recipe(spec), qtl::Error);
  spec.name = "rtn";
  spec.bits = 9;
  EXPECT_THROW((void)m::make_recipe(spec), qtl::Error);
  spec.bits = 5;  // a valid quantizer without a packed kernel format
  const auto calib = f.calibration(0, 1);
  EXPECT_THROW((void)m::quantize_sequential(f.fp32, calib, *m::make_recipe(spec)), qtl::Error);
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

}  // namespace
