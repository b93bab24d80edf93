// qtl's GGUF files in the real llama.cpp (libllama of node-llama-cpp 3.21.1, through the
// llama_logits tool): it loads them, and its logits equal qtl's forward pass on the same file,
// for the fp32 model and for a model quantized into ggml block types by qtl's recipes.
#include "recipe_instances.hpp"  // first: the recipe classes are compiled in qtl_recipe_instances
#include <gtest/gtest.h>
#include <qtl/model/ggml_recipe.hpp>
#include <qtl/model/gguf_model.hpp>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

#include "model/real_model_fixture.hpp"
#include "temp_dir.hpp"

namespace {

namespace m = qtl::model;
using qtl::test::fixture;
using qtl::test::TempDir;

/// llama.cpp's logits [tokens x vocab] of `ids` on the model in `gguf` (F32 KV cache, 1 thread).
qtl::RowMatrixXf llama_logits(const TempDir& dir, const std::filesystem::path& gguf, const std::vector<int>& ids,
                              int vocab) {
  {
    std::ofstream t(dir.file("tokens.txt"));
    for (int id : ids) t << id << ' ';
  }
  const std::string cmd = qtl::str_cat("'", QTL_LLAMA_LOGITS, "' '", gguf.string(), "' '", dir.file("out.f32").string(),
                                       "' '", dir.file("tokens.txt").string(), "' > '", dir.file("log").string(), "' 2>&1");
  const int rc = std::system(cmd.c_str());
  if (rc != 0) {
    std::ifstream log(dir.file("log"));
    ADD_FAILURE() << "llama_logits failed (" << rc << "): " << std::string(std::istreambuf_iterator<char>(log), {});
    return {};
  }
  qtl::RowMatrixXf out(static_cast<qtl::Index>(ids.size()), vocab);
  std::ifstream in(dir.file("out.f32"), std::ios::binary);
  in.read(reinterpret_cast<char*>(out.data()), static_cast<std::streamsize>(sizeof(float) * out.size()));
  EXPECT_TRUE(in.good()) << "short logits file";
  return out;
}

void expect_same_logits(const m::Transformer& model, const m::Tokenizer& tok, const std::filesystem::path& gguf,
                        const TempDir& dir) {
  const auto& f = fixture();
  for (int story : {250, 333}) {
    auto ids = m::encode_story(tok, f.stories[static_cast<std::size_t>(story)], 512).ids;
    ids.resize(std::min<std::size_t>(ids.size(), 128));  // within the file's context length
    const qtl::RowMatrixXf ours = model.forward(ids);
    const qtl::RowMatrixXf theirs = llama_logits(dir, gguf, ids, model.config().vocab_size);
    ASSERT_EQ(theirs.rows(), ours.rows());
    const float diff = (ours - theirs).cwiseAbs().maxCoeff();
    EXPECT_LE(diff, 1e-3f) << "story " << story << ": max |qtl - llama.cpp| = " << diff;
    EXPECT_GT(ours.cwiseAbs().maxCoeff(), 1.0f);  // real logits, not zeros
  }
}

TEST(GgufInLlamaCpp, Fp32ModelGivesQtlsLogits) {
  const auto& f = fixture();
  TempDir dir;
  m::write_gguf_model(dir.file("f32.gguf"), f.fp32, f.tokenizer);
  const m::GgufModel back = m::load_gguf_model(dir.file("f32.gguf"));
  expect_same_logits(back.model, back.tokenizer, dir.file("f32.gguf"), dir);
}

TEST(GgufInLlamaCpp, GptqIntoQ8_0GivesQtlsLogits) {
  // Q8_0: llama.cpp's CPU matmul rounds activations to q8_0 blocks for quantized weights, so the
  // logits agree to the activation rounding; with 8-bit weights that stays within 1e-3 here.
  const auto& f = fixture();
  const m::GgmlTypePlan plan = [](const std::string&, qtl::Index, qtl::Index cols) {
    return cols % 32 == 0 ? qtl::ggml::Type::Q8_0 : qtl::ggml::Type::F16;
  };
  const m::GgmlRecipe gptq("gptq", plan, m::GgmlSolver::Pipeline, qtl::calib::Recipe{});
  const m::Transformer q = m::quantize_sequential(f.fp32, f.calibration(0, 4), gptq);
  TempDir dir;
  m::write_gguf_model(dir.file("q8.gguf"), q, f.tokenizer);
  const m::GgufModel back = m::load_gguf_model(dir.file("q8.gguf"));
  const auto& f2 = fixture();
  auto ids = m::encode_story(f2.tokenizer, f2.stories[251], 512).ids;
  ids.resize(std::min<std::size_t>(ids.size(), 128));
  const qtl::RowMatrixXf ours = back.model.forward(ids);
  const qtl::RowMatrixXf theirs = llama_logits(dir, dir.file("q8.gguf"), ids, back.model.config().vocab_size);
  ASSERT_EQ(theirs.rows(), ours.rows());
  const float diff = (ours - theirs).cwiseAbs().maxCoeff();
  EXPECT_LE(diff, 2e-2f) << "max |qtl - llama.cpp| = " << diff;
  std::printf("q8_0 GGUF: max |qtl - llama.cpp| logit difference %.3g\n", static_cast<double>(diff));
}

}  // namespace
