// qtl's GGUF files in the real llama.cpp (libllama of node-llama-cpp 3.21.1, through the
// llama_logits tool): it loads them, and its logits equal qtl's forward pass on the same file,
// for the fp32 model and for a model quantized into ggml block types by qtl's recipes; and
// the other way: every file llama-quantize makes of the bundled model decodes in qtl exactly as
// in ggml (the type traits' to_float of libggml-base).
#include "recipe_instances.hpp"  // first: the recipe classes are compiled in qtl_recipe_instances
#include <gtest/gtest.h>
#include <ggml.h>
#include <qtl/model/ggml_recipe.hpp>
#include <qtl/quant/ggml_blocks.hpp>
#include <qtl/io/gguf.hpp>
#include <qtl/model/gguf_model.hpp>
#include <qtl/model/quantize_file.hpp>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

#include "model/real_model_fixture.hpp"
#include "model/tuned_file_options.hpp"
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

/// The first 128 tokens of story `story` (within the files' context length).
std::vector<int> story_tokens(const m::Tokenizer& tok, int story) {
  auto ids = m::encode_story(tok, fixture().stories[static_cast<std::size_t>(story)], 512).ids;
  ids.resize(std::min<std::size_t>(ids.size(), 128));
  return ids;
}

/// qtl's logits of `model` and llama.cpp's of the file `gguf` (the same model written) on
/// story_tokens(story).
struct BothEngines {
  qtl::RowMatrixXf ours, theirs;
};
BothEngines logits_in_both(const m::Transformer& model, const m::Tokenizer& tok, const std::filesystem::path& gguf,
                           int story, const TempDir& dir) {
  const std::vector<int> ids = story_tokens(tok, story);
  BothEngines out{model.forward(ids), llama_logits(dir, gguf, ids, model.config().vocab_size)};
  EXPECT_EQ(out.theirs.rows(), out.ours.rows()) << "story " << story;
  return out;
}

/// How many positions' argmax agree.
int same_argmax(const qtl::RowMatrixXf& a, const qtl::RowMatrixXf& b) {
  int agree = 0;
  for (qtl::Index t = 0; t < std::min(a.rows(), b.rows()); ++t) {
    qtl::Index i = 0, j = 0;
    a.row(t).maxCoeff(&i);
    b.row(t).maxCoeff(&j);
    agree += i == j;
  }
  return agree;
}

void expect_same_logits(const m::Transformer& model, const m::Tokenizer& tok, const std::filesystem::path& gguf,
                        const TempDir& dir) {
  for (int story : {250, 333}) {
    const BothEngines e = logits_in_both(model, tok, gguf, story, dir);
    ASSERT_EQ(e.theirs.rows(), e.ours.rows());
    const float diff = (e.ours - e.theirs).cwiseAbs().maxCoeff();
    EXPECT_LE(diff, 1e-3f) << "story " << story << ": max |qtl - llama.cpp| = " << diff;
    EXPECT_GT(e.ours.cwiseAbs().maxCoeff(), 1.0f);  // real logits, not zeros
  }
}

TEST(GgufInLlamaCpp, Fp32ModelGivesQtlsLogits) {
  const auto& f = fixture();
  TempDir dir;
  m::write_gguf_model(dir.file("f32.gguf"), f.fp32, f.tokenizer);
  const m::GgufModel back = m::load_gguf_model(dir.file("f32.gguf"));
  expect_same_logits(back.model, back.tokenizer, dir.file("f32.gguf"), dir);
}

TEST(GgufInLlamaCpp, GptqIntoQ4_0RunsAsQtlComputedIt) {
  // llama.cpp's CPU matmul rounds the activations to q8_0 blocks for quantized weights, so its
  // logits and qtl's (fp32 activations) differ by that rounding. What must hold: llama.cpp runs
  // the weights qtl wrote, i.e. its logits sit far closer to qtl's quantized model than the
  // quantized model sits to the fp32 one, and they pick the same next token almost everywhere.
  const auto& f = fixture();
  const m::GgmlTypePlan plan = [](const std::string&, qtl::Index, qtl::Index cols) {
    return cols % 32 == 0 ? qtl::ggml::Type::Q4_0 : qtl::ggml::Type::F16;
  };
  const m::GgmlRecipe gptq("gptq", plan, qtl::calib::Pipeline{});
  const m::Transformer q = m::quantize_sequential(f.fp32, f.calibration(0, 4), gptq);
  TempDir dir;
  m::write_gguf_model(dir.file("q4.gguf"), q, f.tokenizer);
  const BothEngines e = logits_in_both(q, f.tokenizer, dir.file("q4.gguf"), 251, dir);
  ASSERT_EQ(e.theirs.rows(), e.ours.rows());
  const qtl::RowMatrixXf fp32 = f.fp32.forward(story_tokens(f.tokenizer, 251));
  const double engine = (e.ours - e.theirs).cwiseAbs().mean(), quant = (e.ours - fp32).cwiseAbs().mean();
  const int agree = same_argmax(e.ours, e.theirs);
  std::printf("q4_0 GGUF: mean |qtl - llama.cpp| %.4f, mean |q4_0 - fp32| %.4f, same argmax at %d of %lld positions\n",
              engine, quant, agree, static_cast<long long>(e.ours.rows()));
  EXPECT_LT(engine, 0.25 * quant);
  EXPECT_GE(agree, static_cast<int>(0.9 * static_cast<double>(e.ours.rows())));
}

TEST(GgufInLlamaCpp, AClassifierOpIsTheClassifierLlamaCppRuns) {
  // The bundled model ties its classifier to the embedding; a Q8_0 classifier op of half the
  // weights goes into the file as output.weight, so llama.cpp must compute the halved logits
  // qtl computes, not the tied model's.
  const auto& f = fixture();
  m::Transformer model = f.fp32;
  const qtl::RowMatrixXf half = 0.5f * model.classifier();
  model.set_classifier_op(std::make_unique<m::GgmlLinear>(qtl::ggml::Type::Q8_0, half.rows(), half.cols(),
                                                          m::ggml_quantize_reference(qtl::ggml::Type::Q8_0, half)));
  TempDir dir;
  m::write_gguf_model(dir.file("c.gguf"), model, f.tokenizer);
  const BothEngines e = logits_in_both(model, f.tokenizer, dir.file("c.gguf"), 252, dir);
  ASSERT_EQ(e.theirs.rows(), e.ours.rows());
  const qtl::RowMatrixXf tied = f.fp32.forward(story_tokens(f.tokenizer, 252));
  // llama.cpp rounds the classifier's input to q8_0 blocks: a small difference, against the
  // large one a tied (unhalved) classifier would make.
  const double engine = (e.ours - e.theirs).cwiseAbs().mean(), other = (e.ours - tied).cwiseAbs().mean();
  std::printf("Q8_0 classifier op: mean |qtl - llama.cpp| %.4f, mean |halved - tied| %.4f\n", engine, other);
  EXPECT_LT(engine, 0.02 * other);
}

TEST(GgufInLlamaCpp, TunedNormGainsAreTheGainsLlamaCppRuns) {
  // qtl-quantize --finetune-norms rewrites only the F32 norm tensors of the file it wrote:
  // llama.cpp must run the tuned gains, i.e. its logits on the tuned file sit close to qtl's
  // decode of that file and clearly apart from qtl's decode of the untuned one.
  TempDir dir;
  m::QuantizeFileOptions o = qtl::test::q4_0_file_options(dir.file("plain.gguf"));
  (void)m::quantize_model_file(o);
  o.output = dir.file("tuned.gguf");
  qtl::test::brief_finetune(o);
  (void)m::quantize_model_file(o);
  const m::GgufModel plain = m::load_gguf_model(dir.file("plain.gguf")), tuned = m::load_gguf_model(dir.file("tuned.gguf"));
  const BothEngines e = logits_in_both(tuned.model, tuned.tokenizer, dir.file("tuned.gguf"), 254, dir);
  ASSERT_EQ(e.theirs.rows(), e.ours.rows());
  const qtl::RowMatrixXf untuned = plain.model.forward(story_tokens(plain.tokenizer, 254));
  const double engine = (e.ours - e.theirs).cwiseAbs().mean(), gains = (e.theirs - untuned).cwiseAbs().mean();
  std::printf("tuned gains, Q4_0: mean |qtl - llama.cpp| %.4f, mean |llama.cpp - qtl untuned| %.4f\n", engine, gains);
  EXPECT_LT(engine, 0.5 * gains);
  EXPECT_GE(same_argmax(e.ours, e.theirs), static_cast<int>(0.9 * static_cast<double>(e.ours.rows())));
}

TEST(GgufInLlamaCpp, LlamaQuantizeFilesDecodeInQtlAsInGgml) {
  // llama-quantize (llama.cpp's own tool, built from the same release) makes each file from
  // qtl's F32 GGUF of the bundled model; its rows are 64 and 172 wide, so the 256-wide types
  // (K-quants, TQ1_0, TQ2_0) take llama-quantize's own fallbacks where a row cannot hold them:
  // whatever the file holds, qtl must decode each tensor to the bits ggml decodes.
  const auto& f = fixture();
  TempDir dir;
  const auto f32 = dir.file("f32.gguf");
  m::write_gguf_model(f32, f.fp32, f.tokenizer);
  int tensors_checked = 0;
  std::vector<std::string> types_seen;
  for (const char* ftype : {"Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "IQ4_NL", "TQ1_0", "TQ2_0", "Q2_K", "Q3_K_M",
                            "Q4_K_M", "Q5_K_M", "Q6_K"}) {
    SCOPED_TRACE(ftype);
    const auto out = dir.file(qtl::str_cat(ftype, ".gguf"));
    const std::string cmd = qtl::str_cat("'", QTL_LLAMA_QUANTIZE, "' '", f32.string(), "' '", out.string(), "' ", ftype,
                                         " 1 > '", dir.file("quantize.log").string(), "' 2>&1");
    if (std::system(cmd.c_str()) != 0) {
      std::ifstream log(dir.file("quantize.log"));
      FAIL() << "llama-quantize failed: " << std::string(std::istreambuf_iterator<char>(log), {});
    }
    const qtl::gguf::File file = qtl::gguf::File::open(out);
    // And qtl loads it as a model (every weight decoded), and onto its kernels, where the Q4_0
    // and Q8_0 tensors run as the same weights (fp32 activations: only the summation order).
    const m::Transformer decoded = m::load_gguf_model(out).model;
    const m::Transformer kernels =
        m::load_gguf_model(out, {.qtl_kernels = true, .kernel = {.activations = qtl::kernel::ActivationMode::Fp32}}).model;
    const auto ids = m::encode_story(f.tokenizer, f.stories[253], 48).ids;
    const qtl::RowMatrixXf a = decoded.forward(ids), b = kernels.forward(ids);
    EXPECT_LT((a - b).cwiseAbs().maxCoeff(), 1e-5 * a.cwiseAbs().maxCoeff());
    if (std::string_view(ftype) == "Q4_0" || std::string_view(ftype) == "Q8_0") {
      EXPECT_NE(dynamic_cast<const m::PackedLinear<qtl::kernel::UniformKernelMatrix>*>(&kernels.linear("layers.0.wq")),
                nullptr);
    }
    for (const auto& info : file.tensors()) {
      const qtl::gguf::TensorView t = file.tensor(info.name);
      const auto n = static_cast<std::size_t>(t.n_elements);
      std::vector<float> ours(n), theirs(n);
      qtl::ggml::dequantize_row(t.type, t.bytes, ours);
      if (t.type == qtl::ggml::Type::F32) {  // ggml has no to_float for F32: its bytes are the floats
        std::memcpy(theirs.data(), t.bytes.data(), n * sizeof(float));
      } else {
        const auto* traits = ggml_get_type_traits(static_cast<ggml_type>(static_cast<int>(t.type)));
        ASSERT_NE(traits->to_float, nullptr) << info.name << " (" << qtl::ggml::type_name(t.type) << ")";
        traits->to_float(t.bytes.data(), theirs.data(), t.n_elements);
      }
      EXPECT_EQ(std::memcmp(ours.data(), theirs.data(), n * sizeof(float)), 0)
          << info.name << " (" << qtl::ggml::type_name(t.type) << ") decodes differently in qtl and in ggml";
      const std::string type(qtl::ggml::type_name(t.type));
      if (std::find(types_seen.begin(), types_seen.end(), type) == types_seen.end()) types_seen.push_back(type);
      ++tensors_checked;
    }
  }
  std::string seen;
  for (const auto& t : types_seen) seen += " " + t;
  std::printf("%d tensors of llama-quantize's files decoded; types:%s\n", tensors_checked, seen.c_str());
  // Every block type the files can hold on 64-wide rows was met, not only the fallbacks.
  for (const char* t : {"q8_0", "q4_0", "q4_1", "q5_0", "q5_1", "iq4_nl"}) {  // ggml's type names
    EXPECT_NE(std::find(types_seen.begin(), types_seen.end(), t), types_seen.end()) << t;
  }
}

}  // namespace
