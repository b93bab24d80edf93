// generate — continue a prompt with the bundled llama2.c model (stories260K) in fp32.
//
//   generate                                   # greedy continuation of "Once upon a time"
//   generate --prompt "Tom had a red" --temperature 0.8 --seed 7 --steps 200
//   generate --kv-cache f16                    # keys and values cached in fp16, as llama.cpp does
//
// The prompt is processed in one batched pass (one GEMM per linear layer), then tokens are
// generated one at a time with the key/value cache. Temperature 0 picks the most likely token
// (greedy); temperature t > 0 samples from softmax(logits / t). Generation stops after --steps
// new tokens, at seq_len, or when the model emits BOS/EOS (the end of a story).
#include <CLI/CLI.hpp>

#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <iostream>
#include <random>
#include <string>
#include <vector>

#include "data_path.hpp"
#include "qtl/model/tokenizer.hpp"
#include "qtl/model/transformer.hpp"

namespace {

/// argmax_v logits(v) for temperature 0; else a draw from p(v) ∝ exp(logits(v) / temperature).
int pick_next(const qtl::VectorXf& logits, float temperature, std::mt19937_64& rng) {
  qtl::Index best = 0;
  for (qtl::Index v = 1; v < logits.size(); ++v) {
    if (logits(v) > logits(best)) best = v;
  }
  if (temperature == 0.0f) return static_cast<int>(best);
  std::vector<double> p(static_cast<std::size_t>(logits.size()));
  double sum = 0.0;
  for (qtl::Index v = 0; v < logits.size(); ++v) {
    // Shift by the max logit so that exp never overflows.
    p[v] = std::exp(static_cast<double>(logits(v) - logits(best)) / temperature);
    sum += p[v];
  }
  // A uniform draw in [0, sum): 53 random bits, so the result is the same on every platform.
  const double u = static_cast<double>(rng() >> 11) * 0x1.0p-53 * sum;
  double acc = 0.0;
  for (std::size_t v = 0; v < p.size(); ++v) {
    acc += p[v];
    if (u < acc) return static_cast<int>(v);
  }
  return static_cast<int>(best);  // u landed on the rounding slack above the last bucket
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Continue a prompt with the fp32 stories260K model (llama2.c format)"};
  std::string model_path = qtl::io::data_path("stories260K/stories260K.bin").string();
  std::string tokenizer_path = qtl::io::data_path("stories260K/tok512.bin").string();
  std::string prompt = "Once upon a time";
  int steps = 256;
  float temperature = 0.0f;
  std::uint64_t seed = 42;
  std::string kv_cache = "f32";
  app.add_option("--model", model_path, "llama2.c checkpoint (.bin)")->capture_default_str();
  app.add_option("--tokenizer", tokenizer_path, "llama2.c tokenizer (.bin)")
      ->capture_default_str();
  app.add_option("--prompt", prompt, "text to continue (may be empty)")->capture_default_str();
  app.add_option("--steps", steps, "new tokens to generate at most")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_option("--temperature", temperature, "0 = greedy; > 0 samples from softmax(logits/t)")
      ->check(CLI::Range(0.0f, 100.0f))
      ->capture_default_str();
  app.add_option("--seed", seed, "random seed for sampling")->capture_default_str();
  app.add_option("--kv-cache", kv_cache,
                 "f32: the cached forward equals the uncached one; f16: half the cache's memory and reads, "
                 "each key and value rounded once (llama.cpp's default)")
      ->check(CLI::IsMember({"f32", "f16"}))
      ->capture_default_str();
  CLI11_PARSE(app, argc, argv);

  // The model's matrix products are tiny: splitting each across threads only adds overhead.
  Eigen::setNbThreads(1);
  try {
    const auto model = qtl::model::Transformer::load(model_path);
    const auto tokenizer = qtl::model::Tokenizer::load(tokenizer_path);
    tokenizer.require_vocab_size(model.config().vocab_size);
    const int seq_len = model.config().seq_len;

    const std::vector<int> prompt_ids = tokenizer.encode(prompt, /*bos=*/true);
    if (static_cast<int>(prompt_ids.size()) >= seq_len) {
      std::cerr << "error: the prompt has " << prompt_ids.size()
                << " tokens; the model's context is " << seq_len << " tokens\n";
      return 1;
    }
    std::mt19937_64 rng(seed);
    qtl::model::KvCache cache(model.config(), kv_cache == "f16" ? qtl::model::KvType::F16 : qtl::model::KvType::F32);

    const auto start = std::chrono::steady_clock::now();
    const qtl::RowMatrixXf prompt_logits = model.forward(prompt_ids, cache);
    qtl::VectorXf logits = prompt_logits.bottomRows(1).transpose();
    std::cout << tokenizer.decode(prompt_ids) << std::flush;

    int previous = prompt_ids.back();
    int generated = 0;
    while (generated < steps && cache.size() < seq_len) {
      const int next = pick_next(logits, temperature, rng);
      ++generated;
      if (next == qtl::model::Tokenizer::kBos || next == qtl::model::Tokenizer::kEos) break;
      std::cout << tokenizer.decode_token(previous, next) << std::flush;
      previous = next;
      if (cache.size() < seq_len) logits = model.step(next, cache);
    }
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    std::cout << "\n";
    std::fprintf(stderr, "[%zu prompt tokens, %d generated, %.1f tokens/s, temperature %g, %s KV cache]\n",
                 prompt_ids.size(), generated, generated / seconds, temperature, kv_cache.c_str());
  } catch (const qtl::Error& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
