// Calibration recipes through the sequential driver on the whole real model: calibrated on
// stories 0-15, evaluated on stories 250-273 (never the calibration stories).
#include <gtest/gtest.h>
#include <qtl/model/calibrated_recipe.hpp>
#include <qtl/model/recipes.hpp>

#include "model/real_model_fixture.hpp"

namespace {

namespace m = qtl::model;
using qtl::test::fixture;

double perplexity_of(const std::string& recipe, int bits) {
  const auto& f = fixture();
  m::RecipeSpec spec;
  spec.name = recipe;
  spec.bits = bits;
  spec.group = 32;
  const auto q = m::quantize_sequential(f.fp32, f.calibration(0, 16), *m::make_recipe(spec));
  m::EvalOptions opt;
  opt.threads = 2;
  return m::perplexity(q, f.tokenizer, f.eval_slice(250, 24), opt).perplexity;
}

TEST(CalibratedRecipes, GptqAndAwqBeatRtnOnTheWholeModelAt3Bits) {
  const double rtn = perplexity_of("rtn", 3);
  const double gptq = perplexity_of("gptq", 3);
  const double awq = perplexity_of("awq", 3);
  EXPECT_LT(gptq, 0.95 * rtn) << "gptq " << gptq << " rtn " << rtn;
  EXPECT_LT(awq, 0.95 * rtn) << "awq " << awq << " rtn " << rtn;
}

TEST(CalibratedRecipes, TransformedLinearIsExactWithoutQuantization) {
  // A rotation and a scaling in front of an fp32 layer change nothing: W T^-1 (T x) = W x.
  const auto& f = fixture();
  const auto& w = dynamic_cast<const m::DenseLinear&>(f.fp32.linear("layers.2.w2")).weight();
  qtl::calib::InputTransform t;
  t.then(qtl::calib::RandomizedHadamard(w.cols(), 7));
  const qtl::RowMatrixXf w_rot = t.apply_weights(w);
  const m::TransformedLinear op(t, std::make_unique<m::DenseLinear>(w_rot), std::nullopt);
  const auto ids = f.calibration(3, 1).front();
  qtl::RowMatrixXf x = qtl::RowMatrixXf::Random(static_cast<qtl::Index>(ids.size()), w.cols());
  const qtl::RowMatrixXf y = op.forward(x), expected = x * w.transpose();
  EXPECT_LE((y - expected).cwiseAbs().maxCoeff(), 1e-4f * expected.cwiseAbs().maxCoeff());
}

}  // namespace
