// qtl/model/quantize_file.hpp — a whole model file to a quantized GGUF file in one call: what
// the qtl-quantize program does, as a library function (the C API's qtl_quantize_model_file).
//
//   QuantizeFileOptions o;
//   o.input = "stories260K.bin"; o.output = "q4_k_m.gguf"; o.type = "Q4_K_M";
//   o.calibration_text = "stories.txt";  // stories separated by <|endoftext|> lines
//   QuantizeFileResult r = quantize_model_file(o);
//
// The input is a GGUF model or a llama2.c checkpoint (with its tokenizer); each tensor gets the
// type llama-quantize's rules give it for the file type (qtl/model/ggml_presets.hpp), and the
// layers are calibrated one block after another (qtl/model/sequential.hpp) with a recipe of
// qtl/model/ggml_recipe.hpp. With finetune_norms, the written file is then decoded exactly as
// llama.cpp decodes it, its RMSNorm gains are tuned end to end to the input model's outputs
// (qtl/model/finetune.hpp), and the file is written again with only those F32 tensors changed.
// The file is written to a temporary name and renamed.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "qtl/core/error.hpp"
#include "qtl/io/gguf.hpp"
#include "qtl/model/eval.hpp"
#include "qtl/model/finetune.hpp"
#include "qtl/model/ggml_presets.hpp"
#include "qtl/model/ggml_recipe.hpp"
#include "qtl/model/gguf_model.hpp"
#include "qtl/model/recipes.hpp"
#include "qtl/model/sequential.hpp"

namespace qtl::model {

/// The recipe names quantize_model_file knows.
inline constexpr std::string_view kGgmlRecipeNames =
    "rtn, rtn-imatrix, gptq, gptq-clip, gptq-actorder, awq-gptq, quarot-gptq";

/// The ggml recipe called `name` over a type plan (names: kGgmlRecipeNames).
template <class Deferred = void>
[[nodiscard]] std::unique_ptr<Recipe> make_ggml_recipe(const std::string& name, GgmlTypePlan plan) {
  auto make = [&](GgmlSolver solver) { return std::make_unique<GgmlRecipe>(name, std::move(plan), std::move(solver)); };
  if (name == "rtn") return make(calib::RtnOptions{});
  if (name == "rtn-imatrix") return make(calib::RtnOptions{.fit = FitOptions::searched(), .imatrix = true});
  if (name == "gptq") return make(calib::Pipeline{.name = name, .solver = calib::GptqOptions{}});
  // The others search each group's clip range on the Hessian-weighted error.
  calib::Pipeline r{.name = name, .solver = calib::gptq_clip_options()};
  if (name == "gptq-clip") return make(r);
  if (name == "gptq-actorder") {
    std::get<calib::GptqOptions>(r.solver).act_order = true;
    return make(r);
  }
  if (name == "awq-gptq") {
    r.awq = true;
    return make(r);
  }
  if (name == "quarot-gptq") {
    // The rotation folds fully into the weights (Transformer::rotate_residual), so the GGUF
    // holds a plain llama model that llama.cpp runs as it is.
    return std::make_unique<detail::ResidualRotationRecipe<>>(make(r), name);
  }
  fail("unknown recipe '", name, "'; known: ", kGgmlRecipeNames);
}

/// The best recipe measured on stories260K for each file type (README, "GGUF: qtl against
/// llama-quantize", llama-perplexity on stories 250-499); GPTQ with the clip search elsewhere.
[[nodiscard]] inline std::string default_ggml_recipe(const GgmlPreset& p) {
  if (!ggml::type_info(p.base).quantized) return "rtn";
  if (p.name == "Q4_0" || p.name == "Q5_0" || p.name == "IQ4_NL") return "quarot-gptq";
  if (p.name == "Q5_1" || p.name == "Q8_0") return "gptq-actorder";
  return "gptq-clip";
}

struct QuantizeFileOptions {
  std::filesystem::path input;      ///< GGUF model or llama2.c checkpoint
  std::filesystem::path output;     ///< GGUF file to write
  std::string type;                 ///< llama-quantize's file type: Q4_K_M, Q4_0, F16, ... (ggml_preset)
  std::string recipe;               ///< empty: default_ggml_recipe(type)
  /// Calibration text: stories separated by <|endoftext|> lines; required when the recipe reads
  /// activations (every recipe but rtn). Stories [calib_first, calib_last] of it are used.
  std::filesystem::path calibration_text;
  int calib_first = 0, calib_last = 249;
  std::filesystem::path tokenizer;  ///< a llama2.c input's tokenizer (empty: tok512.bin beside it)
  int context = 0;                  ///< > 0: a GGUF input's context length, replacing the file's
  /// Tune the RMSNorm gains of the written model end to end (finetune_norms, on the calibration
  /// stories; needs calibration text with any recipe). The file's size and every other tensor
  /// stay as they are.
  bool finetune_norms = false;
  FinetuneOptions finetune{};
  /// Called with the fraction of the work done (0..1) and a line of progress.
  std::function<void(double, std::string_view)> progress;
};

struct QuantizeFileResult {
  std::string recipe;             ///< the recipe that ran
  double bits_per_weight = 0.0;   ///< over the 2-D tensors of the written file
  std::uint64_t tensor_bytes = 0; ///< every tensor's data
  std::int64_t calibration_stories = 0;
  std::optional<FinetuneReport> finetune;  ///< with finetune_norms
};

namespace detail {

/// Copies the GGUF file `src` to `dst` (through a temporary name, renamed) with its RMSNorm
/// gain tensors replaced by `model`'s; every other byte is kept. Throws qtl::Error if a gain
/// tensor is missing or not F32 of the model's width.
inline void copy_gguf_with_norm_gains(const std::filesystem::path& src, const std::filesystem::path& dst,
                                      const Transformer& model) {
  constexpr std::string_view kWhere = "quantize_model_file";
  const gguf::File f = gguf::File::open(src);
  std::vector<char> bytes(f.size());
  {
    std::ifstream in(src, std::ios::binary);
    if (!in.read(bytes.data(), static_cast<std::streamsize>(bytes.size()))) fail(kWhere, ": cannot read '", src.string(), "'");
  }
  std::vector<std::string> names = {"norm"};
  for (int l = 0; l < model.config().n_layers; ++l) {
    names.push_back(str_cat("layers.", l, ".attention_norm"));
    names.push_back(str_cat("layers.", l, ".ffn_norm"));
  }
  for (const auto& name : names) {
    const std::string g = gguf_tensor_name(name);
    const VectorXf& gain = model.norm_gain(name);
    const auto it = std::find_if(f.tensors().begin(), f.tensors().end(), [&](const gguf::TensorInfo& t) { return t.name == g; });
    if (it == f.tensors().end() || it->type != ggml::Type::F32 || it->n_elements != gain.size()) {
      fail(kWhere, ": '", g, "' of '", src.string(), "' is not an F32 tensor of ", gain.size(), " values");
    }
    std::memcpy(bytes.data() + f.data_offset() + it->offset, gain.data(), static_cast<std::size_t>(gain.size()) * sizeof(float));
  }
  const std::filesystem::path tmp = dst.string() + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    if (!out.flush()) {
      std::error_code ec;
      std::filesystem::remove(tmp, ec);
      fail(kWhere, ": cannot write '", tmp.string(), "'");
    }
  }
  std::filesystem::rename(tmp, dst);
}

/// Removes a file when it goes out of scope (an intermediate file on every path out).
struct RemoveOnExit {
  std::filesystem::path path;
  ~RemoveOnExit() {
    std::error_code ec;
    std::filesystem::remove(path, ec);
  }
};

}  // namespace detail

/// Quantizes options.input into options.output (see the top of this file). Throws qtl::Error
/// naming the bad value (unknown type or recipe, missing file, bad story range, ...); the output
/// is not touched unless the whole file was written.
template <class Deferred = void>
QuantizeFileResult quantize_model_file(const QuantizeFileOptions& o) {
  constexpr std::string_view kWhere = "quantize_model_file";
  auto report = [&](double fraction, std::string_view line) {
    if (o.progress) o.progress(fraction, line);
  };
  const GgmlPreset preset = ggml_preset(o.type);
  QuantizeFileResult result;
  result.recipe = o.recipe.empty() ? default_ggml_recipe(preset) : o.recipe;
  if (o.output.empty()) fail(kWhere, ": no output path given");
  if (!std::filesystem::exists(o.input)) fail(kWhere, ": input '", o.input.string(), "' not found");
  if (o.context < 0) fail(kWhere, ": context must be >= 0, got ", o.context);

  report(0.0, str_cat("reading ", o.input.string()));
  std::optional<GgufModel> loaded;
  if (is_gguf_file(o.input)) {
    loaded.emplace(load_gguf_model(o.input, o.context));
  } else {
    const std::filesystem::path tok = o.tokenizer.empty() ? o.input.parent_path() / "tok512.bin" : o.tokenizer;
    Transformer model = Transformer::load(o.input);
    Tokenizer tokenizer = Tokenizer::load(tok);
    tokenizer.require_vocab_size(model.config().vocab_size);
    loaded.emplace(GgufModel{std::move(model), std::move(tokenizer)});
  }
  const Transformer& fp32 = loaded->model;
  const Tokenizer& tokenizer = loaded->tokenizer;
  const auto& c = fp32.config();

  // Which type each tensor gets: llama-quantize's rules for this file type.
  const bool imatrix = make_ggml_recipe(result.recipe, [](const std::string&, Index, Index) {
                         return ggml::Type::F32;
                       })->needs_calibration();
  const int n_gqa = c.n_heads / c.n_kv_heads;
  auto type_of = [&c, preset, n_gqa, imatrix](const std::string& gguf_name, Index, Index cols) {
    GgmlTensorRole role;
    role.kind = ggml_tensor_kind(gguf_name);
    role.cols = cols;
    if (gguf_name.rfind("blk.", 0) == 0) role.layer = std::stoi(gguf_name.substr(4));
    return ggml_preset_type(preset, role, c.n_layers, n_gqa, c.shared_classifier, imatrix);
  };
  const auto recipe = make_ggml_recipe(result.recipe, [&](const std::string& name, Index rows, Index cols) {
    return type_of(gguf_tensor_name(name), rows, cols);
  });

  std::vector<std::vector<int>> calibration;
  if (recipe->needs_calibration() || o.finetune_norms) {
    if (o.calibration_text.empty()) {
      fail(kWhere, ": ", o.finetune_norms ? std::string("tuning the norm gains") : str_cat("recipe '", result.recipe, "'"),
           " calibrates on text, and no calibration text was given");
    }
    const std::vector<std::string> stories = load_stories(o.calibration_text);
    if (o.calib_first < 0 || o.calib_last < o.calib_first) {
      fail(kWhere, ": calibration stories ", o.calib_first, "-", o.calib_last, " are not a range FIRST-LAST");
    }
    if (o.calib_last >= static_cast<int>(stories.size())) {
      fail(kWhere, ": calibration stories ", o.calib_first, "-", o.calib_last, " exceed the ", stories.size(),
           " stories of '", o.calibration_text.string(), "'");
    }
    for (int s = o.calib_first; s <= o.calib_last; ++s) {
      auto ids = encode_story(tokenizer, stories[static_cast<std::size_t>(s)], c.seq_len).ids;
      if (ids.size() > static_cast<std::size_t>(c.seq_len)) ids.resize(static_cast<std::size_t>(c.seq_len));
      calibration.push_back(std::move(ids));
    }
  }
  result.calibration_stories = static_cast<std::int64_t>(calibration.size());

  report(0.0, str_cat(preset.name, " with recipe ", result.recipe,
                      recipe->needs_calibration() ? str_cat(" (", calibration.size(), " calibration stories)") : ""));
  // Four groups of layers per block (q/k/v, wo, w1/w3, w2): the fraction of them done.
  const double groups = 4.0 * static_cast<double>(c.n_layers);
  double done = 0.0;
  SequentialOptions seq;
  seq.progress = [&](std::string_view line) {
    done += 1.0;
    report(std::min(0.99, 0.99 * done / groups), line);
  };
  const bool quantized = ggml::type_info(preset.base).quantized;
  const Transformer q = quantized ? quantize_sequential(fp32, calibration, *recipe, seq) : fp32;

  GgufWriteOptions wo;
  wo.name = str_cat("qtl ", preset.name, " (", result.recipe, ")");
  wo.file_type = preset.ftype;
  wo.dense_type = [&](std::string_view gguf_name, Index rows, Index cols) {
    return type_of(std::string(gguf_name), rows, cols);
  };
  if (!o.finetune_norms) {
    write_gguf_model(o.output, q, tokenizer, wo);
  } else {
    // Tune on exactly what the file holds (every tensor decoded as llama.cpp decodes it, the
    // quantized embedding and classifier included), then copy it with the new gains.
    const detail::RemoveOnExit untuned{o.output.string() + ".untuned.tmp"};
    write_gguf_model(untuned.path, q, tokenizer, wo);
    report(0.99, "tuning the RMSNorm gains end to end");
    GgufModel decoded = load_gguf_model(untuned.path, o.context);
    result.finetune = finetune_norms(fp32, decoded.model, calibration, o.finetune);
    detail::copy_gguf_with_norm_gains(untuned.path, o.output, decoded.model);
  }

  const gguf::File written = gguf::File::open(o.output);
  std::int64_t weights = 0;
  std::uint64_t bytes = 0;
  for (const auto& t : written.tensors()) {
    result.tensor_bytes += t.n_bytes;
    if (t.shape.size() < 2) continue;
    weights += t.n_elements;
    bytes += t.n_bytes;
  }
  result.bits_per_weight = 8.0 * static_cast<double>(bytes) / static_cast<double>(std::max<std::int64_t>(weights, 1));
  report(1.0, str_cat("wrote ", o.output.string()));
  return result;
}

}  // namespace qtl::model
