// model_tokens_bench: tokens/s of a whole model in qtl and in llama.cpp (libllama), in one process,
// on one GGUF file that qtl writes.
//
//   model_tokens_bench [--models stories,synthetic] [--prompt 128] [--gen 64] [--threads 1,2]
//                      [--dim 2048 --hidden 5632 --layers 8 --heads 32 --vocab 32000] [--dir DIR]
//
// For each model (stories260K, the bundled llama2.c checkpoint: dim 64, 5 layers, where tokens/s
// measure per-token overhead; and a synthetic LLaMA-shaped model of realistic width with random
// weights, where they measure the matrix products):
//   1. qtl quantizes the fp32 weights to llama-quantize's Q4_0 file type (GgmlRecipe "rtn":
//      llama.cpp's reference quantizer, tensor types by llama-quantize's rules, ggml_presets.hpp)
//      and writes the GGUF file with its writer (write_gguf_model);
//   2. llama.cpp loads that file (llama_model_load_from_file, CPU backend variant chosen by
//      ggml_backend_load_all_from_path, weights repacked for its GEMMs as llama.cpp does by
//      default) and so does qtl (load_gguf_model, which decodes every tensor to fp32: qtl runs the
//      file's weights as Eigen fp32 products);
//   3. qtl also runs the file's Q4_0 tensors on its own 4-bit kernel (load_gguf_model with
//      qtl_kernels: the blocks' 4-bit codes and fp16 scales become a uniform symmetric group-32
//      matrix, q4_0's rule being qtl's symmetric rule, d = max / -8) on UniformKernelMatrix with
//      int8 activations, the same weights as llama.cpp;
//   4. and qtl's own pipeline: the fp32 weights quantized by RtnRecipe (4-bit symmetric, group 32,
//      the "rtn-sym" recipe) into the same packed kernel.
// The other tensors of the file stay fp32 in qtl (stories260K's 172-wide ffn_down is F16), except
// the classifier: output.weight is Q6_K by llama-quantize's rules, whose 16-wide sub-block scales
// qtl's packed format cannot hold exactly, so qtl's two kernel engines run it on the 6-bit
// kernel, symmetric group 32, int8 activations: the file engine loads it with
// GgufLoadOptions::requantize_bits (the Q6_K weights rounded once more), the rtn-sym engine
// rounds its fp32 classifier (Transformer::set_classifier_op); 6.5 bits per weight read against
// Q6_K's 6.56 (--classifier-bits 8: 8.5; 0 keeps it fp32). The embedding is a row lookup in both
// engines.
//
// Before anything is timed, both engines must compute the same function: the logits of the first
// --check prompt positions from llama.cpp (F32 KV cache, no flash attention: plain fp32 attention
// like qtl's) are held against each qtl engine's. llama.cpp quantizes the activations of every
// Q4_0 product to Q8_0 (blocks of 32, int8 with an fp16 scale) and qtl's int8 kernel does the same
// with its own scales, so the engines differ by activation rounding and summation order, not by
// weights. The tolerance: the relative difference (max |a - b| over the position's logits, over
// max |b|) must stay below a quarter of what Q4_0 itself changes (qtl's fp32 model against its Q4_0
// model, same positions). A wrong tensor, layout or RoPE convention moves logits by about as much
// as the quantization or more; rounding the activations to 8 bits moves them by far less.
//
// Timing (llama-bench's method, tools/llama-bench/llama-bench.cpp): prompt processing of --prompt
// tokens as one batch from an empty cache (logits of the last position only), then generation of
// --gen tokens one at a time on top of it (one decode and its logits per token); fixed token ids
// (BOS, then seeded random ids), no sampling. One warm-up, then --runs runs with every engine in
// turn (so slow drifts of a shared machine hit all engines alike); the best time of each. llama.cpp
// runs with its defaults (F16 KV cache, flash attention auto) and a persistent ggml thread pool
// per thread count (as llama-bench attaches one), paused while qtl runs so that its threads do not
// poll beside qtl's; qtl's threads are OpenMP's (Eigen's products, the attention heads and the
// packed kernels), and its KV cache is fp16 as llama.cpp's (KvType::F16; --kv-cache f32 for fp32).
//
// Last, where qtl's time goes: its fastest engine once more with every linear layer timed, and the
// classifier timed alone; the rest is attention, norms, RoPE and copies.
//
// Not part of ctest: run by hand (README, "Whole model: tokens/s in qtl and llama.cpp").
#include "recipe_instances.hpp"  // first: the recipe classes come compiled from the instance libraries

#include "data_path.hpp"
#include "ggml_cpu_variant.hpp"

#include <qtl/core/error.hpp>
#include <qtl/io/gguf.hpp>
#include <qtl/kernel/uniform.hpp>
#include <qtl/model/ggml_presets.hpp>
#include <qtl/model/ggml_recipe.hpp>
#include <qtl/model/gguf_model.hpp>
#include <qtl/model/quantized_linear.hpp>
#include <qtl/model/sequential.hpp>
#include <qtl/model/tokenizer.hpp>
#include <qtl/model/transformer.hpp>
#include <qtl/quant/ggml_blocks.hpp>
#include <qtl/quant/quantize_matrix.hpp>
#include <qtl/quant/uniform.hpp>

#include <CLI/CLI.hpp>
#include <Eigen/Core>
#include <ggml-backend.h>
#include <ggml-cpu.h>
#include <llama.h>

#include <dlfcn.h>
#include <link.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <random>
#include <span>
#include <string>
#include <utility>
#include <vector>

#ifndef QTL_LLAMA_CPP_BINS
#error "QTL_LLAMA_CPP_BINS (llama.cpp's library folder) must be defined by the build"
#endif

namespace {

namespace qm = qtl::model;
using qtl::Index;
using qtl::RowMatrixXf;
using qtl::VectorXf;
using Clock = std::chrono::steady_clock;
using U4s = qtl::Uniform<4, qtl::Mode::Symmetric>;
using Ukm = qtl::kernel::UniformKernelMatrix;

[[noreturn]] void die(const std::string& message) {
  std::fprintf(stderr, "model_tokens_bench: %s\n", message.c_str());
  std::exit(1);
}

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

// ---------------------------------------------------------------- the models
struct SyntheticShape {
  int dim = 2048, hidden = 5632, layers = 8, heads = 32, kv_heads = 32, vocab = 32000;
};

/// A SentencePiece-style vocabulary of `vocab` pieces: <unk>, <s>, </s>, the 256 byte pieces
/// (llama.cpp's "llama" vocabulary looks up the newline's byte piece when it loads), then filler.
qm::Tokenizer synthetic_tokenizer(int vocab) {
  using Type = qm::Tokenizer::TokenType;
  std::vector<std::string> pieces = {"<unk>", "<s>", "</s>"};
  std::vector<std::int32_t> types = {static_cast<std::int32_t>(Type::Unknown), static_cast<std::int32_t>(Type::Control),
                                     static_cast<std::int32_t>(Type::Control)};
  char hex[8];
  for (int b = 0; b < 256; ++b) {
    std::snprintf(hex, sizeof hex, "<0x%02X>", b);
    pieces.emplace_back(hex);
    types.push_back(static_cast<std::int32_t>(Type::Byte));
  }
  for (int i = static_cast<int>(pieces.size()); i < vocab; ++i) {
    pieces.push_back(qtl::str_cat("t", i));
    types.push_back(static_cast<std::int32_t>(Type::Normal));
  }
  std::vector<float> scores(pieces.size(), 0.0f);
  return qm::Tokenizer::from_pieces(std::move(pieces), std::move(scores), std::move(types), 0, 1, 2, "synthetic");
}

/// A LLaMA-shaped model with N(0, 0.02) weights (the initialization of GPT-2 and of LLaMA's
/// reference training code), RMSNorm gains 1 and a separate classifier. Every projection reads an
/// RMSNorm'd input of rms ~1 or a SwiGLU/attention output of rms < 1, so its outputs have rms
/// <= 0.02 sqrt(in) (0.9 for dim 2048, 1.5 for hidden 5632): the residual stream grows by O(1) per
/// layer, logits stay O(1), nothing overflows (the checks below verify it).
qm::Transformer synthetic_model(const SyntheticShape& s, int seq_len, std::uint64_t seed) {
  qtl::io::Llama2cConfig c;
  c.dim = s.dim;
  c.hidden_dim = s.hidden;
  c.n_layers = s.layers;
  c.n_heads = s.heads;
  c.n_kv_heads = s.kv_heads;
  c.vocab_size = s.vocab;
  c.seq_len = seq_len;
  c.shared_classifier = false;
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.0f, 0.02f);
  auto random = [&](Index rows, Index cols) {
    RowMatrixXf m(rows, cols);
    for (float& v : m.reshaped()) v = normal(rng);
    return m;
  };
  qm::TransformerWeights w;
  w.embedding = random(c.vocab_size, c.dim);
  w.classifier = random(c.vocab_size, c.dim);
  w.final_norm = VectorXf::Ones(c.dim);
  for (int l = 0; l < c.n_layers; ++l) {
    w.attention_norm.push_back(VectorXf::Ones(c.dim));
    w.ffn_norm.push_back(VectorXf::Ones(c.dim));
    w.linears.push_back(random(c.dim, c.dim));          // wq
    w.linears.push_back(random(c.kv_dim(), c.dim));     // wk
    w.linears.push_back(random(c.kv_dim(), c.dim));     // wv
    w.linears.push_back(random(c.dim, c.dim));          // wo
    w.linears.push_back(random(c.hidden_dim, c.dim));   // w1
    w.linears.push_back(random(c.dim, c.hidden_dim));   // w2
    w.linears.push_back(random(c.hidden_dim, c.dim));   // w3
  }
  return qm::Transformer(c, std::move(w));
}

/// llama-quantize's type for each tensor of file type Q4_0, by GGUF name and row length (what
/// qtl::model::quantize_model_file chooses: Q4_0; output.weight Q6_K; F16 where no 32-block fits).
std::function<qtl::ggml::Type(const std::string&, Index)> q4_0_types(const qtl::io::Llama2cConfig& c) {
  const qm::GgmlPreset preset = qm::ggml_preset("Q4_0");
  return [preset, c](const std::string& gguf_name, Index cols) {
    qm::GgmlTensorRole role;
    role.kind = qm::ggml_tensor_kind(gguf_name);
    role.cols = cols;
    if (gguf_name.rfind("blk.", 0) == 0) role.layer = std::stoi(gguf_name.substr(4));
    return qm::ggml_preset_type(preset, role, c.n_layers, c.n_heads / c.n_kv_heads, c.shared_classifier, false);
  };
}

/// Quantizes `fp32` to the Q4_0 file type with qtl's GgmlRecipe (RTN: llama.cpp's reference
/// quantizer) and writes it as GGUF.
void write_q4_0_file(const std::filesystem::path& path, const qm::Transformer& fp32, const qm::Tokenizer& tokenizer) {
  const auto type_of = q4_0_types(fp32.config());
  qm::GgmlRecipe recipe("rtn", [&](const std::string& name, Index, Index cols) {
    return type_of(qm::gguf_tensor_name(name), cols);
  }, qtl::calib::RtnOptions{});
  const qm::Transformer q4 = qm::quantize_sequential(fp32, {}, recipe);
  qm::GgufWriteOptions wo;
  wo.name = "qtl Q4_0 (rtn)";
  wo.file_type = qm::ggml_preset("Q4_0").ftype;
  wo.dense_type = [&](std::string_view name, Index, Index cols) { return type_of(std::string(name), cols); };
  qm::write_gguf_model(path, q4, tokenizer, wo);
}


/// qtl's thread count: Eigen's products (OpenMP) and every packed kernel's (a PackedLinear keeps
/// its count, so each is rebuilt around its kernel).
void use_qtl_threads(qm::Transformer& model, int threads) {
  Eigen::setNbThreads(threads);
  auto rebuilt = [threads](const qm::LinearOp* op) -> std::unique_ptr<qm::LinearOp> {
    if (const auto* p = dynamic_cast<const qm::PackedLinear<Ukm>*>(op)) {
      return std::make_unique<qm::PackedLinear<Ukm>>(p->kernel(), p->bits_per_weight(), p->describe(), threads);
    }
    return nullptr;
  };
  for (const std::string& name : model.linear_names()) {
    if (auto op = rebuilt(&model.linear(name))) model.set_linear(name, std::move(op));
  }
  if (auto op = rebuilt(model.classifier_op())) model.set_classifier_op(std::move(op));
}

/// A linear layer that adds its forward time to a counter (the breakdown of qtl's time).
class TimedLinear final : public qm::LinearOp {
 public:
  TimedLinear(std::unique_ptr<qm::LinearOp> inner, std::shared_ptr<std::atomic<std::int64_t>> ns)
      : inner_(std::move(inner)), ns_(std::move(ns)) {}
  [[nodiscard]] Index in_features() const override { return inner_->in_features(); }
  [[nodiscard]] Index out_features() const override { return inner_->out_features(); }
  [[nodiscard]] RowMatrixXf forward(qtl::MatrixRef x) const override {
    const auto t0 = Clock::now();
    RowMatrixXf y = inner_->forward(x);
    *ns_ += std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - t0).count();
    return y;
  }
  [[nodiscard]] std::unique_ptr<qm::LinearOp> clone() const override {
    return std::make_unique<TimedLinear>(inner_->clone(), ns_);
  }
  [[nodiscard]] std::string describe() const override { return inner_->describe(); }

 private:
  std::unique_ptr<qm::LinearOp> inner_;
  std::shared_ptr<std::atomic<std::int64_t>> ns_;
};

// ---------------------------------------------------------------- llama.cpp
using bench_ggml::loaded_cpu_variant_path;

std::string loaded_cpu_variant() {
  const std::string path = loaded_cpu_variant_path();
  return path.empty() ? "(none found)" : std::filesystem::path(path).filename().string();
}

void quiet_log(ggml_log_level level, const char* text, void*) {
  static bool last_shown = false;
  bool show = level == GGML_LOG_LEVEL_ERROR;
  if (level == GGML_LOG_LEVEL_CONT) show = last_shown;
  last_shown = show;
  if (show) std::fputs(text, stderr);
}

/// The CPU backend's thread-pool functions (they live in the variant library ggml loaded).
/// ggml_threadpool_pause is not among the registry's proc addresses: it is looked up in the
/// variant library itself (already loaded: RTLD_NOLOAD only returns its handle).
struct GgmlPools {
  decltype(&ggml_threadpool_new) make = nullptr;
  decltype(&ggml_threadpool_free) free = nullptr;
  decltype(&ggml_threadpool_pause) pause = nullptr;
  GgmlPools() {
    ggml_backend_dev_t dev = ggml_backend_dev_by_type(GGML_BACKEND_DEVICE_TYPE_CPU);
    if (dev == nullptr) die("ggml found no CPU device in " QTL_LLAMA_CPP_BINS);
    ggml_backend_reg_t reg = ggml_backend_dev_backend_reg(dev);
    make = reinterpret_cast<decltype(make)>(ggml_backend_reg_get_proc_address(reg, "ggml_threadpool_new"));
    free = reinterpret_cast<decltype(free)>(ggml_backend_reg_get_proc_address(reg, "ggml_threadpool_free"));
    if (make == nullptr || free == nullptr) die("the CPU backend exports no thread-pool functions");
    if (void* lib = dlopen(loaded_cpu_variant_path().c_str(), RTLD_NOW | RTLD_NOLOAD); lib != nullptr) {
      pause = reinterpret_cast<decltype(pause)>(dlsym(lib, "ggml_threadpool_pause"));
    }
    if (pause == nullptr) {
      std::fprintf(stderr, "ggml: no ggml_threadpool_pause; llama.cpp's idle threads may poll beside qtl's\n");
    }
  }
};

class LlamaModel {
 public:
  explicit LlamaModel(const std::filesystem::path& path) {
    llama_model_params p = llama_model_default_params();
    p.n_gpu_layers = 0;
    model_ = llama_model_load_from_file(path.c_str(), p);
    if (model_ == nullptr) die("llama.cpp cannot load " + path.string());
    vocab_ = llama_vocab_n_tokens(llama_model_get_vocab(model_));
  }
  ~LlamaModel() { llama_model_free(model_); }
  LlamaModel(const LlamaModel&) = delete;
  LlamaModel& operator=(const LlamaModel&) = delete;
  llama_model* get() const { return model_; }
  int vocab() const { return vocab_; }

  /// Logits [T x vocab] of every position, computed in one batch from an empty cache with F32
  /// keys and values and without flash attention (plain fp32 attention, as qtl's).
  RowMatrixXf logits(const std::vector<int>& tokens) const {
    const auto n = static_cast<std::int32_t>(tokens.size());
    llama_context_params c = llama_context_default_params();
    c.n_ctx = static_cast<std::uint32_t>(n);
    c.n_batch = c.n_ubatch = static_cast<std::uint32_t>(n);
    c.n_seq_max = 1;
    c.n_threads = c.n_threads_batch = 1;
    c.type_k = c.type_v = GGML_TYPE_F32;
    c.flash_attn_type = LLAMA_FLASH_ATTN_TYPE_DISABLED;
    llama_context* ctx = llama_init_from_model(model_, c);
    if (ctx == nullptr) die("llama.cpp cannot create a context");
    llama_batch batch = llama_batch_init(n, 0, 1);
    for (std::int32_t i = 0; i < n; ++i) {
      batch.token[i] = tokens[static_cast<std::size_t>(i)];
      batch.pos[i] = i;
      batch.n_seq_id[i] = 1;
      batch.seq_id[i][0] = 0;
      batch.logits[i] = 1;
    }
    batch.n_tokens = n;
    if (llama_decode(ctx, batch) != 0) die("llama_decode failed");
    RowMatrixXf out(n, vocab_);
    for (std::int32_t i = 0; i < n; ++i) {
      const float* row = llama_get_logits_ith(ctx, i);
      if (row == nullptr) die("llama.cpp returned no logits");
      std::copy(row, row + vocab_, out.row(i).data());
    }
    llama_batch_free(batch);
    llama_free(ctx);
    return out;
  }

 private:
  llama_model* model_ = nullptr;
  int vocab_ = 0;
};

// ---------------------------------------------------------------- engines
/// One way to run the model: seconds for the prompt from an empty cache, then seconds for the
/// generated tokens on top of it.
struct Engine {
  std::string format, engine;
  bool is_llama = false;
  std::function<void(int)> use_threads;
  std::function<double(const std::vector<int>&)> prompt;
  std::function<double(const std::vector<int>&)> generate;
  std::function<void()> after_run;  // e.g. pause llama.cpp's pool
  double best_prompt = 0, best_gen = 0;
};

volatile float g_sink;

Engine qtl_engine(std::string format, std::string engine, std::shared_ptr<qm::Transformer> model,
                  qm::KvType kv = qm::KvType::F16) {
  auto cache = std::make_shared<qm::KvCache>(model->config(), kv);
  Engine e;
  e.format = std::move(format);
  e.engine = std::move(engine);
  e.use_threads = [model](int t) { use_qtl_threads(*model, t); };
  e.prompt = [model, cache](const std::vector<int>& tokens) {
    cache->clear();
    const auto t0 = Clock::now();
    const VectorXf logits = model->forward_last(tokens, *cache);
    const double s = seconds_since(t0);
    g_sink = logits(0);
    return s;
  };
  e.generate = [model, cache](const std::vector<int>& tokens) {
    const auto t0 = Clock::now();
    for (int t : tokens) g_sink = model->step(t, *cache)(0);
    return seconds_since(t0);
  };
  e.after_run = [] {};
  return e;
}

Engine llama_engine(const LlamaModel& model, int n_ctx, int n_batch, const GgmlPools& pools) {
  llama_context_params c = llama_context_default_params();
  c.n_ctx = static_cast<std::uint32_t>(n_ctx);
  c.n_batch = c.n_ubatch = static_cast<std::uint32_t>(n_batch);
  c.n_seq_max = 1;
  c.no_perf = true;
  std::shared_ptr<llama_context> ctx(llama_init_from_model(model.get(), c), llama_free);
  if (!ctx) die("llama.cpp cannot create a context");
  // One persistent pool per thread count, kept for the whole run (llama-bench attaches one).
  auto pool = std::make_shared<std::map<int, std::shared_ptr<ggml_threadpool>>>();
  Engine e;
  e.format = "Q4_0 file";
  e.engine = "llama.cpp";
  e.is_llama = true;
  e.use_threads = [ctx, pool, &pools](int t) {
    auto& p = (*pool)[t];
    if (!p) {
      ggml_threadpool_params tpp = ggml_threadpool_params_default(t);
      p = std::shared_ptr<ggml_threadpool>(pools.make(&tpp), pools.free);
      if (!p) die("ggml_threadpool_new failed");
    }
    llama_attach_threadpool(ctx.get(), p.get(), nullptr);
    llama_set_n_threads(ctx.get(), t, t);
  };
  auto decode = [ctx](std::vector<int> tokens) {
    std::vector<llama_token> ids(tokens.begin(), tokens.end());
    if (llama_decode(ctx.get(), llama_batch_get_one(ids.data(), static_cast<std::int32_t>(ids.size()))) != 0) {
      die("llama_decode failed");
    }
    llama_synchronize(ctx.get());
    g_sink = llama_get_logits_ith(ctx.get(), -1)[0];
  };
  e.prompt = [ctx, decode](const std::vector<int>& tokens) {
    llama_memory_clear(llama_get_memory(ctx.get()), true);
    const auto t0 = Clock::now();
    decode(tokens);
    return seconds_since(t0);
  };
  e.generate = [decode](const std::vector<int>& tokens) {
    const auto t0 = Clock::now();
    for (int t : tokens) decode({t});
    return seconds_since(t0);
  };
  e.after_run = [ctx, pool, &pools] {
    for (auto& [t, p] : *pool) {
      if (p && pools.pause != nullptr) pools.pause(p.get());
    }
  };
  return e;
}

/// max over positions of max_j |a - b| / max_j |b|.
double max_relative_difference(const RowMatrixXf& a, const RowMatrixXf& b) {
  double worst = 0;
  for (Index r = 0; r < a.rows(); ++r) {
    const double mag = b.row(r).cwiseAbs().maxCoeff();
    worst = std::max(worst, static_cast<double>((a.row(r) - b.row(r)).cwiseAbs().maxCoeff()) / std::max(mag, 1e-30));
  }
  return worst;
}

struct Row {
  std::string model, format, engine;
  int threads;
  double prompt_tps, gen_tps, prompt_ratio, gen_ratio;
};

struct Options {
  std::vector<std::string> models = {"stories", "synthetic"};
  SyntheticShape shape;
  int prompt = 128, gen = 64, runs = 3, check = 8;
  std::vector<int> threads = {1, 2};
  std::uint64_t seed = 1;
  std::string dir;
  int classifier_bits = 6;  // qtl's kernel engines' classifier: 6- or 8-bit kernel, 0 = fp32
  qm::KvType kv = qm::KvType::F16;  // qtl's KV cache
};

/// Everything for one model; appends its table rows.
void bench_model(const std::string& label, std::unique_ptr<qm::Transformer> fp32, const qm::Tokenizer& tokenizer,
                 const Options& o, const GgmlPools& pools, std::vector<Row>& table) {
  const qtl::io::Llama2cConfig c = fp32->config();  // a copy: fp32 goes once quantized
  std::fprintf(stderr, "\n== %s: dim %d, hidden %d, %d layers, %d heads (%d kv), vocab %d\n", label.c_str(), c.dim,
               c.hidden_dim, c.n_layers, c.n_heads, c.n_kv_heads, c.vocab_size);
  if (o.prompt + o.gen > c.seq_len) die(qtl::str_cat(label, ": prompt + gen exceed the context of ", c.seq_len));
  std::mt19937_64 rng(o.seed);
  std::uniform_int_distribution<int> id(3, c.vocab_size - 1);
  std::vector<int> prompt = {tokenizer.bos_id()};
  while (static_cast<int>(prompt.size()) < o.prompt) prompt.push_back(id(rng));
  std::vector<int> gen;
  while (static_cast<int>(gen.size()) < o.gen) gen.push_back(id(rng));
  const std::vector<int> check(prompt.begin(), prompt.begin() + std::min(o.check, o.prompt));

  Eigen::setNbThreads(2);
  const std::filesystem::path file = std::filesystem::path(o.dir) / (label + "-q4_0.gguf");
  auto t0 = Clock::now();
  write_q4_0_file(file, *fp32, tokenizer);
  std::fprintf(stderr, "wrote %s (%.1f MiB) in %.1f s\n", file.c_str(),
               static_cast<double>(std::filesystem::file_size(file)) / (1 << 20), seconds_since(t0));
  const RowMatrixXf ref_fp32 = fp32->forward(check);
  t0 = Clock::now();
  qm::RtnRecipe<U4s> rtn_sym(U4s{}, qtl::PerGroup{32}, {}, {.activations = qtl::kernel::ActivationMode::Int8}, "rtn-sym");
  auto own = std::make_shared<qm::Transformer>(qm::quantize_sequential(*fp32, {}, rtn_sym));
  std::fprintf(stderr, "qtl rtn-sym 4-bit g32 in %.1f s\n", seconds_since(t0));
  fp32.reset();

  const LlamaModel lm(file);
  if (lm.vocab() != c.vocab_size) die("llama.cpp sees another vocabulary size");
  const RowMatrixXf ref_llama = lm.logits(check);
  auto decoded = std::make_shared<qm::Transformer>(qm::load_gguf_model(file).model);
  auto on_kernel = std::make_shared<qm::Transformer>(
      qm::load_gguf_model(file, {.qtl_kernels = true, .requantize_bits = o.classifier_bits}).model);
  if (dynamic_cast<const qm::PackedLinear<Ukm>*>(&on_kernel->linear("layers.0.wq")) == nullptr) {
    die("load_gguf_model(qtl_kernels) left layers.0.wq off qtl's kernel");
  }
  if (o.classifier_bits > 0) {
    own->set_classifier_op(qm::ggml_linear_requantized(own->classifier(), o.classifier_bits,
                                                       {.activations = qtl::kernel::ActivationMode::Int8}));
  }
  std::fprintf(stderr, "qtl loads %s: layers.0.wq is '%s' (decoded), '%s' (the file's codes); classifier: %s\n",
               file.filename().c_str(), decoded->linear("layers.0.wq").describe().c_str(),
               on_kernel->linear("layers.0.wq").describe().c_str(),
               on_kernel->classifier_op() != nullptr ? on_kernel->classifier_op()->describe().c_str() : "fp32");

  // The check (see the top of the file).
  const RowMatrixXf q_decoded = decoded->forward(check);
  if (!q_decoded.allFinite() || !ref_llama.allFinite()) die("non-finite logits");
  const double quant = max_relative_difference(ref_fp32, q_decoded);
  const double tol = 0.25 * quant;
  std::fprintf(stderr, "check, %zu positions: Q4_0 itself moves qtl's logits by %.4f (fp32 vs Q4_0); tolerance %.4f\n",
               check.size(), quant, tol);
  bool ok = true;
  const std::vector<std::pair<const char*, const qm::Transformer*>> same_file = {
      {"the Q4_0 file decoded to fp32", decoded.get()}, {"the Q4_0 file's codes on qtl's kernel", on_kernel.get()}};
  for (const auto& [name, m] : same_file) {
    const double d = max_relative_difference(m->forward(check), ref_llama);
    std::fprintf(stderr, "check: qtl (%s) vs llama.cpp: max relative difference %.5f%s\n", name, d,
                 d <= tol ? "" : "  ** above the tolerance **");
    ok = ok && d <= tol;
  }
  if (!ok) die("the engines disagree on the same file: not timing them");
  // qtl's own model is not the file's: fp32 embedding and classifier, fp32 group scales. It is a
  // 4-bit model of the same fp32 weights, so it must stay within the quantization's own reach.
  const double d_own = max_relative_difference(own->forward(check), ref_llama);
  std::fprintf(stderr, "check: qtl rtn-sym (other weights) vs llama.cpp: max relative difference %.5f\n", d_own);
  if (!(d_own <= 2 * quant)) die("qtl's rtn-sym model is further from the Q4_0 file than twice Q4_0's own error");

  const int n_ctx = (o.prompt + o.gen + 255) / 256 * 256;
  std::vector<Engine> engines;
  engines.push_back(llama_engine(lm, n_ctx, o.prompt, pools));
  engines.push_back(qtl_engine("Q4_0 file", "qtl, decoded to fp32 (Eigen)", decoded, o.kv));
  engines.push_back(qtl_engine("Q4_0 file", "qtl, u4 g32 kernel, int8 act.", on_kernel, o.kv));
  engines.push_back(qtl_engine("qtl rtn-sym 4-bit g32", "qtl, u4 g32 kernel, int8 act.", own, o.kv));
  for (int threads : o.threads) {
    for (auto& e : engines) {  // warm-up
      e.use_threads(threads);
      (void)e.prompt(prompt);
      (void)e.generate({gen.front()});
      e.after_run();
      e.best_prompt = e.best_gen = 1e300;
    }
    for (int run = 0; run < o.runs; ++run) {
      for (auto& e : engines) {
        e.use_threads(threads);
        e.best_prompt = std::min(e.best_prompt, e.prompt(prompt));
        e.best_gen = std::min(e.best_gen, e.generate(gen));
        e.after_run();
      }
    }
    const Engine& ref = engines.front();
    for (const auto& e : engines) {
      const double p = o.prompt / e.best_prompt, g = o.gen / e.best_gen;
      table.push_back({label, e.format, e.engine, threads, p, g, ref.best_prompt / e.best_prompt, ref.best_gen / e.best_gen});
      std::fprintf(stderr, "%-10s %-22s %-32s %d thr: prompt %9.1f tok/s, gen %8.1f tok/s\n", label.c_str(),
                   e.format.c_str(), e.engine.c_str(), threads, p, g);
    }
  }

  // Where qtl's time goes: its packed engine on the file's codes, one thread, every linear timed.
  auto ns = std::make_shared<std::atomic<std::int64_t>>(0);
  use_qtl_threads(*on_kernel, 1);
  for (const std::string& name : on_kernel->linear_names()) {
    on_kernel->set_linear(name, std::make_unique<TimedLinear>(on_kernel->linear(name).clone(), ns));
  }
  Engine timed = qtl_engine("", "", on_kernel, o.kv);
  *ns = 0;
  const double prompt_s = timed.prompt(prompt);
  const double prompt_lin = static_cast<double>(ns->exchange(0)) * 1e-9;
  const double gen_s = timed.generate(gen);
  const double gen_lin = static_cast<double>(ns->exchange(0)) * 1e-9;
  const RowMatrixXf h = RowMatrixXf::Random(1, c.dim);
  t0 = Clock::now();
  for (int i = 0; i < o.gen; ++i) g_sink = on_kernel->logits(h)(0, 0);
  const double cls = seconds_since(t0);
  std::fprintf(stderr,
               "qtl (the file's codes on qtl's kernel), 1 thread, where the time goes:\n"
               "  prompt: %.1f ms = linears %.1f ms (%.0f%%) + classifier ~%.2f ms + attention/norms/RoPE %.1f ms\n"
               "  gen:    %.3f ms/token = linears %.3f (%.0f%%) + classifier (%s) %.3f (%.0f%%) + rest %.3f\n",
               prompt_s * 1e3, prompt_lin * 1e3, 100 * prompt_lin / prompt_s, cls / o.gen * 1e3,
               (prompt_s - prompt_lin - cls / o.gen) * 1e3, gen_s / o.gen * 1e3, gen_lin / o.gen * 1e3,
               100 * gen_lin / gen_s, on_kernel->classifier_op() != nullptr ? on_kernel->classifier_op()->describe().c_str() : "fp32",
               cls / o.gen * 1e3, 100 * cls / gen_s,
               (gen_s - gen_lin - cls) / o.gen * 1e3);
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  CLI::App app{"Prompt and generation tokens/s of one Q4_0 GGUF file (written by qtl) in qtl and in llama.cpp"};
  app.add_option("--models", o.models, "stories (stories260K), synthetic")->delimiter(',')->capture_default_str();
  app.add_option("--prompt", o.prompt, "prompt tokens (one batch)")->check(CLI::Range(1, 4096))->capture_default_str();
  app.add_option("--gen", o.gen, "generated tokens")->check(CLI::Range(1, 4096))->capture_default_str();
  app.add_option("--runs", o.runs, "timed runs per engine (best of)")->check(CLI::PositiveNumber)->capture_default_str();
  app.add_option("--threads", o.threads, "thread counts")->delimiter(',')->capture_default_str();
  app.add_option("--check", o.check, "prompt positions whose logits are compared")->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_option("--dim", o.shape.dim, "synthetic model: width")->capture_default_str();
  app.add_option("--hidden", o.shape.hidden, "synthetic model: feed-forward width")->capture_default_str();
  app.add_option("--layers", o.shape.layers, "synthetic model: layers")->capture_default_str();
  app.add_option("--heads", o.shape.heads, "synthetic model: attention heads")->capture_default_str();
  app.add_option("--kv-heads", o.shape.kv_heads, "synthetic model: key/value heads")->capture_default_str();
  app.add_option("--vocab", o.shape.vocab, "synthetic model: vocabulary")->check(CLI::Range(259, 1 << 20))
      ->capture_default_str();
  app.add_option("--seed", o.seed, "weights and token ids")->capture_default_str();
  app.add_option("--classifier-bits", o.classifier_bits,
                 "classifier of qtl's kernel engines: 6 or 8 (bits, symmetric group 32), 0 = fp32")
      ->check(CLI::IsMember({0, 6, 8}))
      ->capture_default_str();
  app.add_option("--kv-cache", o.kv, "qtl's KV cache: f16 (as llama.cpp's default) or f32")
      ->transform(CLI::CheckedTransformer(std::map<std::string, qm::KvType>{{"f16", qm::KvType::F16},
                                                                          {"f32", qm::KvType::F32}}))
      ->capture_default_str();
  app.add_option("--dir", o.dir, "where the GGUF files go (default: a temporary folder)");
  CLI11_PARSE(app, argc, argv);
  for (int t : o.threads) {
    if (t < 1) die("thread counts must be >= 1");
  }

  try {
    std::filesystem::path tmp;
    if (o.dir.empty()) {
      tmp = std::filesystem::temp_directory_path() / qtl::str_cat("model_tokens_bench.", ::getpid());
      std::filesystem::create_directories(tmp);
      o.dir = tmp.string();
    }
    llama_log_set(quiet_log, nullptr);
    ggml_backend_load_all_from_path(QTL_LLAMA_CPP_BINS);
    llama_backend_init();
    const GgmlPools pools;
    const std::string variant = loaded_cpu_variant();
    std::fprintf(stderr, "ggml CPU variant: %s\n", variant.c_str());

    std::vector<Row> table;
    for (const std::string& m : o.models) {
      if (m == "stories") {
        auto model = std::make_unique<qm::Transformer>(
            qm::Transformer::load(qtl::io::data_path("stories260K/stories260K.bin")));
        const auto tokenizer = qm::Tokenizer::load(qtl::io::data_path("stories260K/tok512.bin"));
        bench_model("stories260K", std::move(model), tokenizer, o, pools, table);
      } else if (m == "synthetic") {
        const auto t0 = Clock::now();
        const int seq = (o.prompt + o.gen + 255) / 256 * 256;
        auto model = std::make_unique<qm::Transformer>(synthetic_model(o.shape, seq, o.seed));
        std::fprintf(stderr, "synthetic model built in %.1f s\n", seconds_since(t0));
        bench_model(qtl::str_cat("synthetic-", o.shape.dim), std::move(model), synthetic_tokenizer(o.shape.vocab), o,
                    pools, table);
      } else {
        die("unknown model '" + m + "' (stories, synthetic)");
      }
    }
    if (!tmp.empty()) std::filesystem::remove_all(tmp);

    std::printf("\nggml CPU variant: %s; prompt %d tokens, generation %d tokens, best of %d; qtl: KV cache %s, "
                "classifier %s\n\n",
                variant.c_str(), o.prompt, o.gen, o.runs, o.kv == qm::KvType::F16 ? "f16" : "f32",
                o.classifier_bits > 0 ? qtl::str_cat(o.classifier_bits, "-bit kernel").c_str() : "fp32");
    std::printf("| model | format | engine | threads | prompt tok/s | gen tok/s | prompt qtl/llama.cpp | gen qtl/llama.cpp |\n");
    std::printf("|---|---|---|---:|---:|---:|---:|---:|\n");
    for (const auto& r : table) {
      char ratios[64] = "| | |";
      if (r.engine != "llama.cpp") std::snprintf(ratios, sizeof ratios, "| %.2f | %.2f |", r.prompt_ratio, r.gen_ratio);
      std::printf("| %s | %s | %s | %d | %.1f | %.1f %s\n", r.model.c_str(), r.format.c_str(), r.engine.c_str(),
                  r.threads, r.prompt_tps, r.gen_tps, ratios);
    }
    llama_backend_free();
  } catch (const qtl::Error& e) {
    die(e.what());
  }
  return 0;
}
