// qtl-quantize — calibrate a model with a qtl recipe and write a GGUF file llama.cpp runs.
//
//   qtl-quantize [--recipe R] [--calib TEXT] [--calib-stories 0-249] [--tokenizer TOK]
//                [--threads N] [--ctx N] [--eval-stories 250-499] INPUT OUTPUT TYPE
//
// INPUT is a GGUF model (llama architecture; F32, F16, BF16 or quantized) or a llama2.c
// checkpoint (its tokenizer from --tokenizer, default tok512.bin beside it). TYPE is F32, F16,
// BF16, one of llama.cpp's block types (Q8_0, Q5_1, Q5_0, Q4_1, Q4_0, IQ4_NL, TQ2_0, TQ1_0,
// Q6_K, Q2_K) or a llama-quantize mix (Q3_K_S/M/L, Q4_K_S/M, Q5_K_S/M): every tensor gets the
// type llama-quantize would give it (qtl/model/ggml_presets.hpp), so files of the same TYPE
// have the same size. The recipe decides how each layer is fitted into its type:
//   rtn            llama.cpp's reference quantizer: llama-quantize's bytes without an imatrix
//   rtn-imatrix    scale search weighted by the calibration inputs' mean x^2 (an imatrix)
//   gptq           GPTQ (1% damping, blocks of 128) on the type's own grid
//   gptq-clip      GPTQ whose per-block fit searches the scale, weighted by diag(H)
//   gptq-actorder  gptq-clip visiting columns by descending diag(H), static groups
//   awq-gptq       AWQ scales folded into the RMSNorm gains, then gptq-clip
//   quarot-gptq    the residual stream rotated by a randomized Hadamard matrix with the RMSNorm
//                  gains folded into the weights (QuaRot; the file is a plain llama model),
//                  then gptq-clip
// The default is the best recipe measured for the type (see README). --calib is a text of
// stories separated by <|endoftext|> lines (default: the bundled TinyStories dev text), of
// which --calib-stories are used. Progress goes to stderr; a summary at the end gives bits per
// weight, file size, time and peak memory. --finetune-norms then tunes the written model's
// RMSNorm gains end to end to the input model's outputs on the calibration stories (the file's
// size and every other tensor unchanged; qtl::model::finetune_norms). --eval-stories also prints qtl's perplexity of the
// written model (its own forward pass on the exact decoded weights) on those stories.
#include "recipe_instances.hpp"  // first: the recipe classes are compiled in qtl_recipe_instances
#include <CLI/CLI.hpp>
#include <sys/resource.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include "data_path.hpp"
#include "qtl/io/llama2c.hpp"
#include "qtl/model/eval.hpp"
#include "qtl/model/ggml_presets.hpp"
#include "qtl/model/ggml_recipe.hpp"
#include "qtl/model/gguf_model.hpp"
#include "qtl/model/recipes.hpp"
#include "qtl/model/quantize_file.hpp"
#include "qtl/model/sequential.hpp"

namespace {

namespace m = qtl::model;

struct Range {
  int begin = 0, end = 0;
};

Range parse_range(const std::string& s, std::string_view what) {
  Range r;
  char dash = 0;
  std::istringstream in(s);
  if (!(in >> r.begin >> dash >> r.end) || dash != '-' || in.peek() != std::char_traits<char>::eof()) {
    qtl::fail(what, " takes a story range FIRST-LAST such as 0-249, got '", s, "'");
  }
  if (r.begin < 0) qtl::fail(what, " ", s, ": the first story must be >= 0, got ", r.begin);
  if (r.end < r.begin) qtl::fail(what, " ", s, ": the first story (", r.begin, ") comes after the last (", r.end, ")");
  return r;
}

std::vector<std::string> slice(const std::vector<std::string>& stories, Range r, std::string_view what) {
  if (r.end >= static_cast<int>(stories.size())) {
    qtl::fail(what, " ", r.begin, "-", r.end, " exceeds the ", stories.size(), " stories of the text");
  }
  return {stories.begin() + r.begin, stories.begin() + r.end + 1};
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Calibrate a llama model with a qtl recipe and write a GGUF file for llama.cpp"};
  std::string input, output, type_name, recipe_name, calib_path, tokenizer_path, calib_range = "0-249", eval_range;
  int threads = 2, context = 0, finetune_steps = 300;
  bool finetune = false;
  app.add_option("INPUT", input, "GGUF model or llama2.c checkpoint")->required();
  app.add_option("OUTPUT", output, "GGUF file to write")->required();
  app.add_option("TYPE", type_name, "F32, F16, BF16, Q8_0, Q5_1, Q5_0, Q4_1, Q4_0, IQ4_NL, TQ2_0, TQ1_0, Q6_K, Q5_K_M, "
                                    "Q5_K_S, Q4_K_M, Q4_K_S, Q3_K_L, Q3_K_M, Q3_K_S, Q2_K")->required();
  app.add_option("--recipe", recipe_name, "rtn, rtn-imatrix, gptq, gptq-clip, gptq-actorder, awq-gptq, quarot-gptq (default: the best for TYPE)");
  app.add_option("--calib", calib_path, "calibration text: stories separated by <|endoftext|> lines (default: bundled dev text)");
  app.add_option("--calib-stories", calib_range, "which stories of --calib calibrate, FIRST-LAST");
  app.add_option("--tokenizer", tokenizer_path, "llama2.c tokenizer for a llama2.c INPUT (default: tok512.bin beside it)");
  app.add_option("--threads", threads, "threads for evaluation")->check(CLI::Range(1, 256));
  app.add_option("--ctx", context, "context length for calibration and evaluation, replacing the file's "
                                   "(llama.cpp's llama2.c converter writes 128 for a 512-token model); written out too")
      ->check(CLI::Range(1, 1 << 20));
  app.add_flag("--finetune-norms", finetune,
               "tune the written model's RMSNorm gains end to end to the input model's outputs (calibration stories)");
  app.add_option("--finetune-steps", finetune_steps, "with --finetune-norms: Adam steps")->check(CLI::Range(0, 1000000));
  app.add_option("--eval-stories", eval_range, "also print qtl's perplexity of the result on these stories of --calib's text");
  CLI11_PARSE(app, argc, argv);

  Eigen::setNbThreads(1);
  const auto start = std::chrono::steady_clock::now();
  try {
    const m::GgmlPreset preset = m::ggml_preset(type_name);
    m::QuantizeFileOptions o;
    o.input = input;
    o.output = output;
    o.type = type_name;
    o.recipe = recipe_name;
    o.tokenizer = tokenizer_path;
    o.context = context;
    const std::string recipe_used = recipe_name.empty() ? m::default_ggml_recipe(preset) : recipe_name;
    const bool calibrates = m::make_ggml_recipe(recipe_used, [](const std::string&, qtl::Index, qtl::Index) {
                              return qtl::ggml::Type::F32;
                            })->needs_calibration();
    o.finetune_norms = finetune;
    o.finetune.iterations = finetune_steps;
    o.finetune.threads = threads;
    std::filesystem::path text;
    if (calibrates || finetune || !eval_range.empty()) {
      text = calib_path.empty() ? qtl::io::require_data_file("tinystories_val_dev.txt") : std::filesystem::path(calib_path);
    }
    if (calibrates || finetune) {
      const Range r = parse_range(calib_range, "--calib-stories");
      o.calibration_text = text;
      o.calib_first = r.begin;
      o.calib_last = r.end;
    }
    o.progress = [](double, std::string_view line) { std::cerr << "qtl-quantize: " << line << '\n'; };
    const m::QuantizeFileResult result = m::quantize_model_file(o);

    // Summary.
    const qtl::gguf::File written = qtl::gguf::File::open(output);
    for (const auto& t : written.tensors()) {
      std::cerr << "  " << t.name << ": " << qtl::ggml::type_name(t.type) << "\n";
    }
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    rusage ru{};
    getrusage(RUSAGE_SELF, &ru);
    std::printf("%s: %s, recipe %s: %.4f bits per weight over the 2-D tensors, tensor data %llu bytes, "
                "file %llu bytes, %.2f s, peak RSS %.1f MiB\n",
                output.c_str(), std::string(preset.name).c_str(), result.recipe.c_str(), result.bits_per_weight,
                static_cast<unsigned long long>(result.tensor_bytes),
                static_cast<unsigned long long>(std::filesystem::file_size(output)), seconds,
                static_cast<double>(ru.ru_maxrss) / 1024.0);
    if (result.finetune) {
      std::printf("RMSNorm gains tuned end to end: KL to the input model on %d calibration stories %.5f -> %.5f (step %d)\n",
                  std::min(o.finetune.eval_sequences, static_cast<int>(result.calibration_stories)), result.finetune->start_kl,
                  result.finetune->final_kl, result.finetune->best_iteration);
    }
    if (!eval_range.empty()) {
      const auto eval = slice(m::load_stories(text), parse_range(eval_range, "--eval-stories"), "--eval-stories");
      const auto reread = m::load_gguf_model(output, context);
      m::EvalOptions eo;
      eo.threads = threads;
      const auto r = m::perplexity(reread.model, reread.tokenizer, eval, eo);
      std::printf("qtl perplexity of %s on stories %s: %.4f (%lld tokens)\n", output.c_str(), eval_range.c_str(),
                  r.perplexity, static_cast<long long>(r.tokens_scored));
    }
  } catch (const std::exception& e) {
    std::cerr << "qtl-quantize: " << e.what() << '\n';
    return 1;
  }
  return 0;
}
