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
// weight, file size, time and peak memory. --eval-stories also prints qtl's perplexity of the
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

/// The recipe called `name` over the type plan.
std::unique_ptr<m::Recipe> make_ggml_recipe(const std::string& name, m::GgmlTypePlan plan) {
  qtl::calib::Recipe r;
  r.name = name;
  r.solver = qtl::calib::Solver::Gptq;
  r.gptq.damp_fraction = 0.01;
  if (name == "rtn") return std::make_unique<m::GgmlRecipe>(name, std::move(plan), m::GgmlSolver::Rtn);
  if (name == "rtn-imatrix") return std::make_unique<m::GgmlRecipe>(name, std::move(plan), m::GgmlSolver::RtnImatrix);
  if (name == "gptq") return std::make_unique<m::GgmlRecipe>(name, std::move(plan), m::GgmlSolver::Pipeline, r);
  r.gptq.fit.clip_search = true;
  r.gptq.hessian_importance = true;
  if (name == "gptq-clip") return std::make_unique<m::GgmlRecipe>(name, std::move(plan), m::GgmlSolver::Pipeline, r);
  if (name == "gptq-actorder") {
    r.gptq.act_order = true;
    return std::make_unique<m::GgmlRecipe>(name, std::move(plan), m::GgmlSolver::Pipeline, r);
  }
  if (name == "awq-gptq") {
    r.awq = true;
    return std::make_unique<m::GgmlRecipe>(name, std::move(plan), m::GgmlSolver::Pipeline, r);
  }
  if (name == "quarot-gptq") {
    // The rotation folds fully into the weights (Transformer::rotate_residual), so the GGUF
    // holds a plain llama model that llama.cpp runs as it is.
    return std::make_unique<m::detail::ResidualRotationRecipe<>>(
        std::make_unique<m::GgmlRecipe>(name, std::move(plan), m::GgmlSolver::Pipeline, r), name);
  }
  qtl::fail("unknown recipe '", name,
            "'; known: rtn, rtn-imatrix, gptq, gptq-clip, gptq-actorder, awq-gptq, quarot-gptq");
}

/// The best recipe measured on stories260K for each type (README, "GGUF: qtl against
/// llama-quantize", llama-perplexity on stories 250-499); GPTQ with the clip search elsewhere.
std::string default_recipe(const m::GgmlPreset& p) {
  if (!qtl::ggml::type_info(p.base).quantized) return "rtn";
  if (p.name == "Q4_0" || p.name == "Q5_0" || p.name == "IQ4_NL") return "quarot-gptq";
  if (p.name == "Q5_1" || p.name == "Q8_0") return "gptq-actorder";
  return "gptq-clip";
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Calibrate a llama model with a qtl recipe and write a GGUF file for llama.cpp"};
  std::string input, output, type_name, recipe_name, calib_path, tokenizer_path, calib_range = "0-249", eval_range;
  int threads = 2, context = 0;
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
  app.add_option("--eval-stories", eval_range, "also print qtl's perplexity of the result on these stories of --calib's text");
  CLI11_PARSE(app, argc, argv);

  Eigen::setNbThreads(1);
  const auto start = std::chrono::steady_clock::now();
  try {
    const m::GgmlPreset preset = m::ggml_preset(type_name);
    if (recipe_name.empty()) recipe_name = default_recipe(preset);

    // The model.
    std::cerr << "qtl-quantize: reading " << input << "\n";
    std::optional<m::GgufModel> loaded;
    if (!std::filesystem::exists(input)) qtl::fail("input '", input, "' not found");
    if (m::is_gguf_file(input)) {
      loaded.emplace(m::load_gguf_model(input, context));
    } else {
      const std::filesystem::path tok = tokenizer_path.empty()
                                            ? std::filesystem::path(input).parent_path() / "tok512.bin"
                                            : std::filesystem::path(tokenizer_path);
      m::Transformer model = m::Transformer::load(input);
      m::Tokenizer tokenizer = m::Tokenizer::load(tok);
      tokenizer.require_vocab_size(model.config().vocab_size);
      loaded.emplace(m::GgufModel{std::move(model), std::move(tokenizer)});
    }
    const m::Transformer& fp32 = loaded->model;
    const m::Tokenizer& tokenizer = loaded->tokenizer;
    const auto& c = fp32.config();

    // Which type each tensor gets: llama-quantize's rules for this file type.
    auto recipe_probe = make_ggml_recipe(recipe_name, [](const std::string&, qtl::Index, qtl::Index) {
      return qtl::ggml::Type::F32;
    });
    const bool imatrix = recipe_probe->needs_calibration();
    const int n_gqa = c.n_heads / c.n_kv_heads;
    auto type_of = [&, preset](const std::string& gguf_name, qtl::Index rows, qtl::Index cols) {
      (void)rows;
      m::GgmlTensorRole role;
      role.kind = m::ggml_tensor_kind(gguf_name);
      role.cols = cols;
      if (gguf_name.rfind("blk.", 0) == 0) role.layer = std::stoi(gguf_name.substr(4));
      return m::ggml_preset_type(preset, role, c.n_layers, n_gqa, c.shared_classifier, imatrix);
    };
    const m::GgmlTypePlan plan = [&](const std::string& name, qtl::Index rows, qtl::Index cols) {
      return type_of(m::gguf_tensor_name(name), rows, cols);
    };
    const auto recipe = make_ggml_recipe(recipe_name, plan);

    // Calibration text, only when the recipe reads activations.
    std::vector<std::string> stories;
    if (recipe->needs_calibration() || !eval_range.empty()) {
      stories = m::load_stories(calib_path.empty() ? qtl::io::require_data_file("tinystories_val_dev.txt")
                                                   : std::filesystem::path(calib_path));
    }
    std::vector<std::vector<int>> calibration;
    if (recipe->needs_calibration()) {
      for (const auto& s : slice(stories, parse_range(calib_range, "--calib-stories"), "--calib-stories")) {
        auto ids = m::encode_story(tokenizer, s, c.seq_len).ids;
        if (ids.size() > static_cast<std::size_t>(c.seq_len)) ids.resize(static_cast<std::size_t>(c.seq_len));
        calibration.push_back(std::move(ids));
      }
    }

    std::cerr << "qtl-quantize: " << preset.name << " with recipe " << recipe_name
              << (recipe->needs_calibration() ? qtl::str_cat(" (", calibration.size(), " calibration stories)") : "")
              << "\n";
    m::SequentialOptions seq;
    seq.progress = [](std::string_view line) { std::cerr << "  " << line << '\n'; };
    const bool quantized = qtl::ggml::type_info(preset.base).quantized;
    const m::Transformer q = quantized ? m::quantize_sequential(fp32, calibration, *recipe, seq) : fp32;

    m::GgufWriteOptions wo;
    wo.name = qtl::str_cat("qtl ", preset.name, " (", recipe_name, ")");
    wo.file_type = preset.ftype;
    wo.dense_type = [&](std::string_view gguf_name, qtl::Index rows, qtl::Index cols) {
      return type_of(std::string(gguf_name), rows, cols);
    };
    m::write_gguf_model(output, q, tokenizer, wo);

    // Summary.
    const qtl::gguf::File written = qtl::gguf::File::open(output);
    std::int64_t weights = 0;
    std::uint64_t bytes = 0, all_bytes = 0;
    for (const auto& t : written.tensors()) {
      all_bytes += t.n_bytes;
      if (t.shape.size() < 2) continue;
      weights += t.n_elements;
      bytes += t.n_bytes;
      std::cerr << "  " << t.name << ": " << qtl::ggml::type_name(t.type) << "\n";
    }
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    rusage ru{};
    getrusage(RUSAGE_SELF, &ru);
    std::printf("%s: %s, recipe %s: %.4f bits per weight over the 2-D tensors, tensor data %llu bytes, "
                "file %llu bytes, %.2f s, peak RSS %.1f MiB\n",
                output.c_str(), std::string(preset.name).c_str(), recipe_name.c_str(),
                8.0 * static_cast<double>(bytes) / static_cast<double>(weights),
                static_cast<unsigned long long>(all_bytes),
                static_cast<unsigned long long>(std::filesystem::file_size(output)), seconds,
                static_cast<double>(ru.ru_maxrss) / 1024.0);
    if (!eval_range.empty()) {
      const auto eval = slice(stories, parse_range(eval_range, "--eval-stories"), "--eval-stories");
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
