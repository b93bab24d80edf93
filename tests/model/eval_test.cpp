#include "qtl/model/eval.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <random>
#include <span>
#include <string>
#include <vector>

#include "model/eigen_single_thread.hpp"
#include "data_path.hpp"
#include "temp_dir.hpp"
#include "test_util.hpp"

namespace {

namespace fs = std::filesystem;
using qtl::RowMatrixXf;
using qtl::model::EvalResult;
using qtl::model::Tokenizer;
using qtl::model::Transformer;

const Transformer& fp32_model() {
  static const Transformer model =
      Transformer::load(qtl::io::data_path("stories260K/stories260K.bin"));
  return model;
}

const Tokenizer& tokenizer() {
  static const Tokenizer tok = Tokenizer::load(qtl::io::data_path("stories260K/tok512.bin"));
  return tok;
}

const std::vector<std::string>& dev_stories() {
  static const std::vector<std::string> stories =
      qtl::model::load_stories(qtl::io::data_path("tinystories_val_dev.txt"));
  return stories;
}

std::span<const std::string> stories(std::size_t first, std::size_t count) {
  return std::span<const std::string>(dev_stories()).subspan(first, count);
}

using qtl::test::error_of;

using qtl::test::TempDir;

/// A copy of the fp32 model whose linear `name` has weights W + noise·N(0, 1)·std(W).
Transformer perturbed(const std::string& name, float noise) {
  Transformer model = fp32_model();
  const auto& dense = dynamic_cast<const qtl::model::DenseLinear&>(model.linear(name));
  RowMatrixXf w = dense.weight();
  const float std_w = std::sqrt(w.squaredNorm() / static_cast<float>(w.size()));
  std::mt19937 rng(7);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (qtl::Index i = 0; i < w.size(); ++i) w.data()[i] += noise * std_w * normal(rng);
  model.set_linear(name, std::make_unique<qtl::model::DenseLinear>(std::move(w)));
  return model;
}

class ModelEval : public qtl::test::EigenSingleThread {};

// ---- stories ------------------------------------------------------------------------------

TEST_F(ModelEval, SplitStoriesDropsBlankLinesAndSeparators) {
  using qtl::model::split_stories;
  EXPECT_EQ(split_stories("a\n\nb\n<|endoftext|>\nc\n"), std::vector<std::string>({"a\nb", "c"}));
  EXPECT_EQ(split_stories("a\r\n\r\nb\r\n<|endoftext|>\r\nc"),
            std::vector<std::string>({"a\nb", "c"}));
  // Empty chunks (leading, doubled or trailing separators) are not stories.
  EXPECT_EQ(split_stories("<|endoftext|>\nx\n<|endoftext|>\n\n<|endoftext|>\ny\n<|endoftext|>\n"),
            std::vector<std::string>({"x", "y"}));
  // Only a whole line is a separator; spaces inside lines are kept as they are.
  EXPECT_EQ(split_stories("say <|endoftext|> now\n  indented \n"),
            std::vector<std::string>({"say <|endoftext|> now\n  indented "}));
  EXPECT_TRUE(split_stories("").empty());
  EXPECT_TRUE(split_stories("\n\n<|endoftext|>\n").empty());
}

TEST_F(ModelEval, DevTextHas500Stories) {
  const auto& s = dev_stories();
  ASSERT_EQ(s.size(), 500u);
  EXPECT_EQ(s.front().rfind("Spot. Spot saw the shiny car", 0), 0u);
  EXPECT_EQ(s.front().find("\n\n"), std::string::npos);
  EXPECT_NE(s.front().find("every day.\"\nAfter playing"), std::string::npos);  // was a blank line
  for (const auto& story : s) {
    EXPECT_FALSE(story.empty());
    EXPECT_NE(story.back(), '\n');
    EXPECT_EQ(story.find("<|endoftext|>"), std::string::npos);
  }
  EXPECT_TRUE(s.back().ends_with("part of the family ever since.")) << s.back();
}

// ---- reference perplexities (data/README.md) -----------------------------------------------

void expect_reference(std::size_t first, std::int64_t tokens, double nll, double ppl) {
  const auto t0 = std::chrono::steady_clock::now();
  const EvalResult r = qtl::model::perplexity(fp32_model(), tokenizer(), stories(first, 250));
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("stories %zu-%zu: ppl %.5f, mean NLL %.5f, %lld tokens, %d stories truncated "
              "(%lld tokens dropped), %.1f s\n",
              first, first + 249, r.perplexity, r.mean_nll, static_cast<long long>(r.tokens_scored),
              r.stories_truncated, static_cast<long long>(r.tokens_dropped), seconds);
  EXPECT_EQ(r.stories, 250);
  EXPECT_EQ(r.tokens_scored, tokens);
  EXPECT_NEAR(r.perplexity, ppl, 1e-3 * ppl);
  EXPECT_NEAR(r.mean_nll, nll, 1e-3 * nll);
  EXPECT_TRUE(std::isnan(r.mean_kl));
}

TEST_F(ModelEval, ReferencePerplexityStories0To249) {
  expect_reference(0, 91449, 1.27288, 3.5711);
}

TEST_F(ModelEval, ReferencePerplexityStories250To499) {
  expect_reference(250, 87149, 1.35047, 3.8592);
}

// ---- scoring details ----------------------------------------------------------------------

TEST_F(ModelEval, ScoresEveryNextTokenOfEachStory) {
  // Recompute the NLL of 3 stories by hand from forward() and compare.
  const auto s = stories(10, 3);
  double nll = 0;
  std::int64_t n = 0;
  for (const auto& story : s) {
    const auto ids = tokenizer().encode(story);
    ASSERT_LE(ids.size(), 513u);
    const RowMatrixXf logits =
        fp32_model().forward(std::span<const int>(ids).first(ids.size() - 1));
    for (qtl::Index t = 0; t < logits.rows(); ++t) {
      double sum = 0;
      for (qtl::Index v = 0; v < logits.cols(); ++v) sum += std::exp(double(logits(t, v)));
      nll += std::log(sum) - logits(t, ids[static_cast<std::size_t>(t) + 1]);
      ++n;
    }
  }
  const EvalResult r = qtl::model::perplexity(fp32_model(), tokenizer(), s);
  EXPECT_EQ(r.tokens_scored, n);
  EXPECT_NEAR(r.mean_nll, nll / static_cast<double>(n), 1e-9);
  EXPECT_NEAR(r.perplexity, std::exp(nll / static_cast<double>(n)), 1e-8);
  EXPECT_EQ(r.stories_truncated, 0);
}

TEST_F(ModelEval, LongStoryIsTruncatedAndCounted) {
  // Five stories joined: far more than seq_len + 1 = 513 tokens.
  std::string long_story;
  for (int i = 0; i < 5; ++i) long_story += dev_stories()[static_cast<std::size_t>(i)] + "\n";
  long_story.pop_back();
  const auto all_ids = tokenizer().encode(long_story);
  ASSERT_GT(all_ids.size(), 513u);

  const auto enc = qtl::model::encode_story(tokenizer(), long_story, 512);
  EXPECT_TRUE(enc.truncated());
  EXPECT_EQ(enc.ids.size(), 513u);
  EXPECT_EQ(enc.tokens_dropped, all_ids.size() - 513);
  EXPECT_TRUE(std::equal(enc.ids.begin(), enc.ids.end(), all_ids.begin()));

  const std::vector<std::string> one = {long_story};
  const EvalResult r = qtl::model::perplexity(fp32_model(), tokenizer(), one);
  EXPECT_EQ(r.tokens_scored, 512);
  EXPECT_EQ(r.stories_truncated, 1);
  EXPECT_EQ(r.tokens_dropped, static_cast<std::int64_t>(all_ids.size() - 513));

  // The dev text itself holds such stories; they are cut, not rejected.
  int long_dev_stories = 0;
  for (const auto& story : stories(0, 40)) {
    long_dev_stories += qtl::model::encode_story(tokenizer(), story, 512).truncated() ? 1 : 0;
  }
  EXPECT_GT(long_dev_stories, 0);
}

TEST_F(ModelEval, ThreadsDoNotChangeResults) {
  const auto s = stories(100, 6);
  const Transformer other = perturbed("layers.1.w2", 0.3f);
  const EvalResult one = qtl::model::evaluate(other, tokenizer(), s, &fp32_model(), {1});
  const EvalResult three = qtl::model::evaluate(other, tokenizer(), s, &fp32_model(), {3});
  EXPECT_EQ(one.mean_nll, three.mean_nll);
  EXPECT_EQ(one.mean_kl, three.mean_kl);
  EXPECT_EQ(one.tokens_scored, three.tokens_scored);
}

// ---- KL divergence ------------------------------------------------------------------------

TEST_F(ModelEval, KlOfModelAgainstItselfIsZero) {
  const EvalResult r =
      qtl::model::kl_divergence(fp32_model(), fp32_model(), tokenizer(), stories(250, 3));
  EXPECT_EQ(r.mean_kl, 0.0);
  EXPECT_GT(r.tokens_scored, 0);
}

TEST_F(ModelEval, KlGrowsWithWeightNoiseAndMatchesHandComputation) {
  const auto s = stories(300, 2);
  double previous = 0.0;
  for (float noise : {0.05f, 0.2f, 0.8f}) {
    const Transformer noisy = perturbed("layers.0.w1", noise);
    const EvalResult r = qtl::model::kl_divergence(fp32_model(), noisy, tokenizer(), s);
    EXPECT_GT(r.mean_kl, previous) << "noise " << noise;
    previous = r.mean_kl;
  }

  // KL(P || Q) of the first story by hand: Σ_v p (log p − log q), averaged over positions.
  const Transformer noisy = perturbed("layers.0.w1", 0.2f);
  const auto ids = tokenizer().encode(s[0]);
  const auto inputs = std::span<const int>(ids).first(ids.size() - 1);
  const RowMatrixXf lp = fp32_model().forward(inputs);
  const RowMatrixXf lq = noisy.forward(inputs);
  double kl = 0;
  for (qtl::Index t = 0; t < lp.rows(); ++t) {
    double zp = 0, zq = 0;
    for (qtl::Index v = 0; v < lp.cols(); ++v) {
      zp += std::exp(double(lp(t, v)));
      zq += std::exp(double(lq(t, v)));
    }
    for (qtl::Index v = 0; v < lp.cols(); ++v) {
      const double p = std::exp(double(lp(t, v))) / zp;
      const double q = std::exp(double(lq(t, v))) / zq;
      kl += p * std::log(p / q);
    }
  }
  kl /= static_cast<double>(lp.rows());
  const std::vector<std::string> first = {s[0]};
  const EvalResult r = qtl::model::kl_divergence(fp32_model(), noisy, tokenizer(), first);
  EXPECT_NEAR(r.mean_kl, kl, 1e-9 + 1e-6 * kl);
  EXPECT_GT(r.mean_kl, 0.0);
}

// ---- bad inputs ---------------------------------------------------------------------------

TEST_F(ModelEval, MissingAndEmptyTextFiles) {
  TempDir dir;
  std::string msg =
      error_of([&] { (void)qtl::model::load_stories(dir.file("my_stories.txt")); });
  EXPECT_NE(msg.find("not found"), std::string::npos) << msg;
  EXPECT_NE(msg.find("my_stories.txt"), std::string::npos) << msg;

  // An empty file (here the null device, as `--text /dev/null` gives) exists: it is empty,
  // not missing.
  msg = error_of([&] { (void)qtl::model::load_stories("/dev/null"); });
  EXPECT_NE(msg.find("is empty"), std::string::npos) << msg;
  EXPECT_EQ(msg.find("not found"), std::string::npos) << msg;
  { std::ofstream(dir.file("zero.txt")); }
  msg = error_of([&] { (void)qtl::model::load_stories(dir.file("zero.txt")); });
  EXPECT_NE(msg.find("is empty"), std::string::npos) << msg;
  msg = error_of([&] { (void)qtl::model::load_stories(dir.file("")); });
  EXPECT_NE(msg.find("is a folder"), std::string::npos) << msg;

  { std::ofstream(dir.file("empty.txt")) << "\n\n<|endoftext|>\n"; }
  msg = error_of([&] { (void)qtl::model::load_stories(dir.file("empty.txt")); });
  EXPECT_NE(msg.find("holds no story"), std::string::npos) << msg;
}

TEST_F(ModelEval, EmptyInputsAreErrors) {
  const std::vector<std::string> none;
  std::string msg =
      error_of([&] { (void)qtl::model::perplexity(fp32_model(), tokenizer(), none); });
  EXPECT_NE(msg.find("no stories"), std::string::npos) << msg;

  const std::vector<std::string> with_empty = {"Once upon a time.", ""};
  msg = error_of([&] { (void)qtl::model::perplexity(fp32_model(), tokenizer(), with_empty); });
  EXPECT_NE(msg.find("story 1 is empty"), std::string::npos) << msg;

  msg = error_of([&] { (void)qtl::model::encode_story(tokenizer(), "", 512); });
  EXPECT_NE(msg.find("empty"), std::string::npos) << msg;
  msg = error_of([&] { (void)qtl::model::encode_story(tokenizer(), "x", 0); });
  EXPECT_NE(msg.find("seq_len must be >= 1, got 0"), std::string::npos) << msg;

  const std::vector<std::string> ok = {"Once upon a time."};
  msg = error_of([&] { (void)qtl::model::perplexity(fp32_model(), tokenizer(), ok, {0}); });
  EXPECT_NE(msg.find("options.threads must be in [1, 1024], got 0"), std::string::npos) << msg;
}

TEST_F(ModelEval, TokenizerVocabularyMustMatchModel) {
  // A valid llama2.c tokenizer with 300 tokens: <unk>, BOS, EOS, 256 bytes, 41 letters/pairs.
  TempDir dir;
  {
    std::ofstream out(dir.file("tok300.bin"), std::ios::binary);
    const std::int32_t max_len = 6;
    out.write(reinterpret_cast<const char*>(&max_len), 4);
    auto put = [&](const std::string& piece) {
      const float score = 0.0f;
      const auto len = static_cast<std::int32_t>(piece.size());
      out.write(reinterpret_cast<const char*>(&score), 4);
      out.write(reinterpret_cast<const char*>(&len), 4);
      out.write(piece.data(), len);
    };
    put("<unk>");
    put("\n<s>\n");
    put("\n</s>\n");
    for (int b = 0; b < 256; ++b) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "<0x%02X>", b);
      put(buf);
    }
    for (int i = 0; i < 41; ++i) put(std::string(1, static_cast<char>('A' + i)));
  }
  const Tokenizer small = Tokenizer::load(dir.file("tok300.bin"));
  ASSERT_EQ(small.vocab_size(), 300);
  const std::vector<std::string> s = {"Once upon a time."};
  const std::string msg =
      error_of([&] { (void)qtl::model::perplexity(fp32_model(), small, s); });
  EXPECT_NE(msg.find("has 300 tokens but the model's vocab_size is 512"), std::string::npos)
      << msg;
}

}  // namespace
