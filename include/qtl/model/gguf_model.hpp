// qtl/model/gguf_model.hpp — LLaMA-architecture models in and out of GGUF, llama.cpp's format.
//
//   auto [model, tokenizer] = qtl::model::load_gguf_model("model.gguf");   // F32/F16/BF16/quantized
//   auto fast = qtl::model::load_gguf_model("q4_0.gguf", {.qtl_kernels = true}); // Q4_0/Q8_0 on qtl's kernels
//   qtl::model::write_gguf_model("out.gguf", model, tokenizer, {});       // what llama.cpp loads
//
// Names, shapes and metadata are llama.cpp's for general.architecture = "llama" (as its
// convert_hf_to_gguf.py and convert-llama2c-to-ggml write them):
//   token_embd.weight [dim, vocab]        output_norm.weight [dim]      output.weight [dim, vocab]
//   blk.L.attn_norm.weight                blk.L.ffn_norm.weight
//   blk.L.attn_q / attn_k / attn_v / attn_output / ffn_gate / ffn_down / ffn_up .weight
// (GGUF shapes list the row length first: a [out x in] row-major matrix is [in, out].)
// qtl's names are layers.L.wq / wk / wv / wo / w1 (gate) / w2 (down) / w3 (up).
// Hyperparameters come from llama.* keys: embedding_length, feed_forward_length, block_count,
// attention.head_count(_kv), context_length, attention.layer_norm_rms_epsilon, rope.freq_base,
// rope.dimension_count (must be the head size: partial RoPE is not supported), and the
// tokenizer from tokenizer.ggml.* (model "llama": SentencePiece pieces, scores, token types;
// the pieces spell spaces as U+2581, as SentencePiece and llama.cpp do, and qtl's tokenizer
// sees plain spaces).
// An absent output.weight means the classifier is the token embedding.
//
// Writing: each linear (and a classifier op) that is a GgmlLinear (a solver's ggml blocks) is
// written as its bytes; every other weight (dense linears, embedding, classifier) is written in the type
// GgufWriteOptions::dense_type picks (F32 by default; a quantized type goes through llama.cpp's
// reference quantizer, as llama-quantize does without an imatrix); norms stay F32. Tensors are
// written one at a time (at most one tensor's bytes are held besides the model) to a temporary
// file that is renamed at the end.
#pragma once

#include <array>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "qtl/core/error.hpp"
#include "qtl/core/types.hpp"
#include "qtl/detail/fp16.hpp"
#include "qtl/quant/ggml_blocks.hpp"
#include "qtl/quant/ggml_types.hpp"
#include "qtl/io/gguf.hpp"
#include "qtl/model/ggml_linear.hpp"
#include "qtl/model/quantized_linear.hpp"
#include "qtl/model/tokenizer.hpp"
#include "qtl/model/transformer.hpp"

namespace qtl::model {

struct GgufModel {
  Transformer model;
  Tokenizer tokenizer;
};

/// llama.cpp's tensor name of a qtl weight: "layers.3.w2" -> "blk.3.ffn_down.weight",
/// "tok_embeddings" -> "token_embd.weight", "layers.0.attention_norm" -> "blk.0.attn_norm.weight".
/// Throws qtl::Error for a name that is not one of the model's weights.
[[nodiscard]] inline std::string gguf_tensor_name(std::string_view qtl_name) {
  if (qtl_name == "tok_embeddings") return "token_embd.weight";
  if (qtl_name == "output") return "output.weight";
  if (qtl_name == "norm") return "output_norm.weight";
  static constexpr std::array<std::pair<std::string_view, std::string_view>, 9> kMap = {{{"wq", "attn_q"},
                                                                                          {"wk", "attn_k"},
                                                                                          {"wv", "attn_v"},
                                                                                          {"wo", "attn_output"},
                                                                                          {"w1", "ffn_gate"},
                                                                                          {"w2", "ffn_down"},
                                                                                          {"w3", "ffn_up"},
                                                                                          {"attention_norm", "attn_norm"},
                                                                                          {"ffn_norm", "ffn_norm"}}};
  constexpr std::string_view kPrefix = "layers.";
  if (qtl_name.substr(0, kPrefix.size()) == kPrefix) {
    const std::string_view rest = qtl_name.substr(kPrefix.size());
    const auto dot = rest.find('.');
    if (dot != std::string_view::npos && dot > 0) {
      const std::string_view layer = rest.substr(0, dot), kind = rest.substr(dot + 1);
      for (const auto& [q, g] : kMap) {
        if (kind == q) return str_cat("blk.", layer, ".", g, ".weight");
      }
    }
  }
  fail("gguf_tensor_name: '", qtl_name, "' is not a weight of the model");
}

namespace detail {

/// SentencePiece spells a space inside a piece as U+2581 ("▁"), and GGUF vocabularies of
/// tokenizer model "llama" store the pieces that way; qtl's tokenizer works on plain spaces.
inline constexpr std::string_view kSpmSpace = "\xE2\x96\x81";

inline std::string replace_all(std::string_view s, std::string_view from, std::string_view to) {
  std::string out;
  out.reserve(s.size());
  for (std::size_t i = 0; i < s.size();) {
    if (s.substr(i, from.size()) == from) {
      out += to;
      i += from.size();
    } else {
      out += s[i++];
    }
  }
  return out;
}

/// One GGUF tensor as a [rows x cols] fp32 matrix (ggml's to_float of every row). `rows` = 0
/// reads a vector of `cols` values.
inline RowMatrixXf gguf_matrix(const gguf::File& f, const std::string& name, Index rows, Index cols) {
  const gguf::TensorView t = f.tensor(name);
  const bool vector = rows == 0;
  const std::vector<std::int64_t> want = vector ? std::vector<std::int64_t>{cols} : std::vector<std::int64_t>{cols, rows};
  if (!std::equal(t.shape.begin(), t.shape.end(), want.begin(), want.end())) {
    std::string got;
    for (auto d : t.shape) got += str_cat(got.empty() ? "" : ", ", d);
    fail("gguf model: tensor '", name, "' has shape [", got, "], expected [", cols,
         vector ? std::string() : str_cat(", ", rows), "]");
  }
  if (!ggml::can_dequantize(t.type)) {
    fail("gguf model: tensor '", name, "' has type ", ggml::type_name(t.type), ", which qtl does not decode");
  }
  const Index r = vector ? 1 : rows;
  RowMatrixXf m(r, cols);
  ggml::dequantize_row(t.type, t.bytes, std::span<float>(m.data(), static_cast<std::size_t>(m.size())));
  if (!m.allFinite()) fail("gguf model: tensor '", name, "' holds NaN or Inf values");
  return m;
}

inline int gguf_dim(const gguf::File& f, std::string_view key, std::int64_t lo, std::int64_t hi) {
  const std::uint64_t v = f.get_u64(key);
  if (v < static_cast<std::uint64_t>(lo) || v > static_cast<std::uint64_t>(hi)) {
    fail("gguf model: ", key, " = ", v, " is outside [", lo, ", ", hi, "]");
  }
  return static_cast<int>(v);
}

}  // namespace detail

/// The tokenizer of a GGUF file (tokenizer.ggml.*; model "llama", i.e. SentencePiece).
[[nodiscard]] inline Tokenizer tokenizer_from_gguf(const gguf::File& f, std::string source = "gguf") {
  if (f.find("tokenizer.ggml.model") == nullptr) fail("gguf model: '", source, "' has no tokenizer (tokenizer.ggml.model)");
  const std::string& kind = f.get_string("tokenizer.ggml.model");
  if (kind != "llama") {
    fail("gguf model: tokenizer.ggml.model = '", kind, "' is not supported (only 'llama', SentencePiece)");
  }
  std::vector<std::string> pieces = f.get_array<std::string>("tokenizer.ggml.tokens");
  for (auto& p : pieces) p = detail::replace_all(p, detail::kSpmSpace, " ");
  std::vector<float> scores;
  if (f.find("tokenizer.ggml.scores") != nullptr) scores = f.get_array<float>("tokenizer.ggml.scores");
  std::vector<std::int32_t> types;
  if (f.find("tokenizer.ggml.token_type") != nullptr) types = f.get_array<std::int32_t>("tokenizer.ggml.token_type");
  auto id_of = [&](std::string_view key, int fallback) -> int {
    if (f.find(key) == nullptr) return fallback;
    const std::uint64_t v = f.get_u64(key);
    if (v == 0xFFFFFFFFull) return -1;  // "none", as convert scripts write it
    if (v >= pieces.size()) fail("gguf model: ", key, " = ", v, " is outside the ", pieces.size(), " tokens");
    return static_cast<int>(v);
  };
  const int unk = id_of("tokenizer.ggml.unknown_token_id", -1);
  const int bos = id_of("tokenizer.ggml.bos_token_id", 1);
  const int eos = id_of("tokenizer.ggml.eos_token_id", 2);
  if (bos < 0 || eos < 0) fail("gguf model: '", source, "' names no BOS or EOS token");
  return Tokenizer::from_pieces(std::move(pieces), std::move(scores), std::move(types), unk, bos, eos, std::move(source));
}

/// The Transformer of a llama-architecture GGUF file; every weight decoded to fp32.
/// `context` > 0 replaces llama.context_length (some converters write a shorter context than
/// the model was trained with, e.g. llama.cpp's llama2.c converter writes 128).
[[nodiscard]] inline Transformer transformer_from_gguf(const gguf::File& f, int context = 0) {
  const std::string& arch = f.get_string("general.architecture");
  if (arch != "llama") fail("gguf model: general.architecture = '", arch, "'; only 'llama' models are supported");
  constexpr std::int64_t kMax = std::int64_t{1} << 20;
  io::Llama2cConfig c;
  c.dim = detail::gguf_dim(f, "llama.embedding_length", 2, kMax);
  c.hidden_dim = detail::gguf_dim(f, "llama.feed_forward_length", 1, kMax);
  c.n_layers = detail::gguf_dim(f, "llama.block_count", 1, 4096);
  c.n_heads = detail::gguf_dim(f, "llama.attention.head_count", 1, c.dim);
  c.n_kv_heads = f.find("llama.attention.head_count_kv") != nullptr
                     ? detail::gguf_dim(f, "llama.attention.head_count_kv", 1, c.n_heads)
                     : c.n_heads;
  c.seq_len = detail::gguf_dim(f, "llama.context_length", 1, kMax);
  if (context > 0) c.seq_len = context;
  if (c.dim % c.n_heads != 0 || c.n_heads % c.n_kv_heads != 0 || c.head_size() % 2 != 0) {
    fail("gguf model: embedding_length ", c.dim, " with ", c.n_heads, " heads and ", c.n_kv_heads,
         " kv heads (heads must divide it into an even head size, kv heads must divide heads)");
  }
  if (f.find("llama.rope.dimension_count") != nullptr) {
    const int rot = detail::gguf_dim(f, "llama.rope.dimension_count", 1, kMax);
    if (rot != c.head_size()) {
      fail("gguf model: llama.rope.dimension_count = ", rot, " but the head size is ", c.head_size(),
           " (partial rotary embeddings are not supported)");
    }
  }
  if (const auto* s = f.find("llama.rope.scaling.type"); s != nullptr) {
    const std::string& kind = f.get_string("llama.rope.scaling.type");
    if (kind != "none") fail("gguf model: llama.rope.scaling.type = '", kind, "' is not supported");
  }
  if (f.find("llama.attention.layer_norm_rms_epsilon") != nullptr) {
    c.norm_eps = static_cast<float>(f.get_f64("llama.attention.layer_norm_rms_epsilon"));
  }
  if (f.find("llama.rope.freq_base") != nullptr) c.rope_base = f.get_f64("llama.rope.freq_base");
  const gguf::TensorView emb = f.tensor("token_embd.weight");
  if (emb.shape.size() != 2 || emb.shape[1] < 1 || emb.shape[1] > (std::int64_t{1} << 24)) {
    fail("gguf model: token_embd.weight must be [", c.dim, ", vocab], got ", emb.shape.size(), " dimensions");
  }
  c.vocab_size = static_cast<int>(emb.shape[1]);
  c.shared_classifier = !f.find_tensor("output.weight").has_value();

  TransformerWeights w;
  w.embedding = detail::gguf_matrix(f, "token_embd.weight", c.vocab_size, c.dim);
  if (!c.shared_classifier) w.classifier = detail::gguf_matrix(f, "output.weight", c.vocab_size, c.dim);
  w.final_norm = detail::gguf_matrix(f, "output_norm.weight", 0, c.dim).row(0).transpose();
  const std::array<std::pair<const char*, std::pair<Index, Index>>, 7> linears = {{
      {"attn_q", {c.dim, c.dim}},
      {"attn_k", {c.kv_dim(), c.dim}},
      {"attn_v", {c.kv_dim(), c.dim}},
      {"attn_output", {c.dim, c.dim}},
      {"ffn_gate", {c.hidden_dim, c.dim}},
      {"ffn_down", {c.dim, c.hidden_dim}},
      {"ffn_up", {c.hidden_dim, c.dim}},
  }};
  for (int l = 0; l < c.n_layers; ++l) {
    w.attention_norm.push_back(detail::gguf_matrix(f, str_cat("blk.", l, ".attn_norm.weight"), 0, c.dim).row(0).transpose());
    w.ffn_norm.push_back(detail::gguf_matrix(f, str_cat("blk.", l, ".ffn_norm.weight"), 0, c.dim).row(0).transpose());
    for (const auto& [name, shape] : linears) {
      w.linears.push_back(detail::gguf_matrix(f, str_cat("blk.", l, ".", name, ".weight"), shape.first, shape.second));
    }
  }
  return Transformer(c, std::move(w));
}

struct GgufLoadOptions {
  /// > 0 replaces llama.context_length (see transformer_from_gguf).
  int context = 0;
  /// Run every linear, and the classifier, whose tensor qtl's packed kernels hold exactly
  /// (Q4_0, Q5_0, Q8_0: ggml_linear_on_kernel) on those kernels instead of an fp32 product of
  /// the decoded weights. The model computes with the same weights either way; with int8
  /// activations it rounds activations as llama.cpp does for these types (per 32 values).
  bool qtl_kernels = false;
  /// The kernels' activations and threads, when qtl_kernels is set.
  KernelOptions kernel = {.activations = kernel::ActivationMode::Int8, .threads = 1};
  /// With qtl_kernels: 4, 5, 6 or 8 also runs every other quantized tensor (k-quants, Q4_1,
  /// Q5_1, IQ and ternary types) on the kernels, its decoded weights rounded once more to that
  /// width (ggml_linear_requantized): no longer exactly the file's weights. 0 (the default)
  /// keeps them as fp32 products of the decoded weights, which read 4 bytes per weight. The
  /// use: llama-quantize's Q6_K classifier of a Q4_0 / Q5_0 / Q8_0 file at 6 (6.5 bits per weight
  /// against Q6_K's 6.56) or 8. Unquantized tensors (F32, F16, BF16) stay fp32 products.
  int requantize_bits = 0;
};

/// Moves the linears and the classifier of `model` (read from `f`) whose tensors are Q4_0, Q5_0
/// or Q8_0 onto qtl's kernels (ggml_linear_on_kernel), and with requantize_bits > 0 those of
/// every other quantized type, rounded once more (ggml_linear_requantized); returns how many it
/// moved. A classifier shared with a quantized token embedding moves too (classifier op over
/// token_embd's blocks). Throws qtl::Error for options.threads < 1, requantize_bits not 0, 4, 5,
/// 6 or 8, or a tensor missing from `f` or of another shape than the model's layer.
template <class Deferred = void>
int use_qtl_kernels(Transformer& model, const gguf::File& f, const KernelOptions& options, int requantize_bits = 0) {
  if (options.threads < 1) fail("use_qtl_kernels: threads must be >= 1, got ", options.threads);
  if (requantize_bits != 0 && requantize_bits != 4 && requantize_bits != 5 && requantize_bits != 6 &&
      requantize_bits != 8) {
    fail("use_qtl_kernels: requantize_bits must be 0 (off), 4, 5, 6 or 8, got ", requantize_bits);
  }
  auto on_kernel = [&](std::string_view gguf_name, Index rows, Index cols) -> std::unique_ptr<LinearOp> {
    const gguf::TensorView t = f.tensor(gguf_name);
    if (t.type == ggml::Type::Q4_0 || t.type == ggml::Type::Q5_0 || t.type == ggml::Type::Q8_0) {
      const GgmlLinear g(t.type, rows, cols, std::vector<std::byte>(t.bytes.begin(), t.bytes.end()));
      return ggml_linear_on_kernel(g, options);
    }
    if (requantize_bits == 0 || !ggml::type_info(t.type).quantized) return nullptr;
    return ggml_linear_requantized(detail::gguf_matrix(f, std::string(gguf_name), rows, cols), requantize_bits,
                                   options);
  };
  const auto& c = model.config();
  int moved = 0;
  for (const std::string& name : model.linear_names()) {
    const LinearOp& old = model.linear(name);
    if (auto op = on_kernel(gguf_tensor_name(name), old.out_features(), old.in_features())) {
      model.set_linear(name, std::move(op));
      ++moved;
    }
  }
  if (auto op = on_kernel(c.shared_classifier ? "token_embd.weight" : "output.weight", c.vocab_size, c.dim)) {
    model.set_classifier_op(std::move(op));
    ++moved;
  }
  return moved;
}

/// Reads a llama-architecture GGUF model and its tokenizer (memory-mapped while reading).
[[nodiscard]] inline GgufModel load_gguf_model(const std::filesystem::path& path, const GgufLoadOptions& options) {
  const gguf::File f = gguf::File::open(path);
  Transformer model = transformer_from_gguf(f, options.context);
  if (options.qtl_kernels) (void)use_qtl_kernels(model, f, options.kernel, options.requantize_bits);
  Tokenizer tokenizer = tokenizer_from_gguf(f, path.string());
  tokenizer.require_vocab_size(model.config().vocab_size);
  return {std::move(model), std::move(tokenizer)};
}

/// load_gguf_model with every weight decoded to fp32 (`context` as in GgufLoadOptions).
[[nodiscard]] inline GgufModel load_gguf_model(const std::filesystem::path& path, int context = 0) {
  return load_gguf_model(path, GgufLoadOptions{.context = context});
}

/// True when `path` starts with GGUF's magic (else: a llama2.c checkpoint, for the tools).
[[nodiscard]] inline bool is_gguf_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  char magic[4] = {};
  return in.read(magic, 4) && std::string_view(magic, 4) == "GGUF";
}

struct GgufWriteOptions {
  std::string name = "qtl";  ///< general.name
  /// The type of a weight that is not already in ggml blocks: given its GGUF name and shape
  /// (rows = outputs, cols = row length). Default: F32.
  std::function<ggml::Type(std::string_view gguf_name, Index rows, Index cols)> dense_type;
  /// general.file_type (llama.cpp's llama_ftype; 0 = all F32, 2 = mostly Q4_0, ...), or -1 for none.
  int file_type = -1;
  /// More metadata, written after the model's own keys.
  std::vector<gguf::KeyValue> extra;
};

/// Writes `model` with `tokenizer` as a GGUF file llama.cpp loads (see the header comment).
/// Throws qtl::Error when a linear is neither dense nor in ggml blocks (e.g. a layer with an
/// online input transform, which GGUF cannot express), or a type cannot hold a tensor's rows.
inline void write_gguf_model(const std::filesystem::path& path, const Transformer& model, const Tokenizer& tokenizer,
                             const GgufWriteOptions& options = {}) {
  constexpr std::string_view kWhere = "write_gguf_model";
  const auto& c = model.config();
  tokenizer.require_vocab_size(c.vocab_size);

  struct Entry {
    std::string name;
    ggml::Type type;
    Index rows, cols;  // rows = 0: a vector
    std::function<void(gguf::Writer&, const std::string&, ggml::Type)> write;
  };
  std::vector<Entry> entries;
  auto dense_type = [&](const std::string& name, Index rows, Index cols) {
    const ggml::Type t = options.dense_type ? options.dense_type(name, rows, cols) : ggml::Type::F32;
    const ggml::TypeInfo info = ggml::type_info(t);
    if (t != ggml::Type::F32 && t != ggml::Type::F16 && !ggml::can_quantize_reference(t)) {
      fail(kWhere, ": cannot write '", name, "' as ", info.name, " (no quantizer for it)");
    }
    if (cols % info.block_size != 0) {
      fail(kWhere, ": '", name, "' has rows of ", cols, " values, which ", info.name, " (blocks of ",
           info.block_size, ") cannot hold; choose a fallback type for it");
    }
    return t;
  };
  auto write_dense = [](const RowMatrixXf* m) {
    return [m](gguf::Writer& w, const std::string& name, ggml::Type t) {
      if (t == ggml::Type::F32) {
        w.write_tensor(name, std::as_bytes(std::span<const float>(m->data(), static_cast<std::size_t>(m->size()))));
      } else if (t == ggml::Type::F16) {
        std::vector<std::uint16_t> h(static_cast<std::size_t>(m->size()));
        for (std::size_t i = 0; i < h.size(); ++i) h[i] = qtl::detail::float_to_half(m->data()[i]);
        w.write_tensor(name, std::as_bytes(std::span<const std::uint16_t>(h)));
      } else {
        w.write_tensor(name, ggml_quantize_reference(t, *m));
      }
    };
  };
  auto add_matrix = [&](const std::string& name, const RowMatrixXf& m) {
    entries.push_back({name, dense_type(name, m.rows(), m.cols()), m.rows(), m.cols(), write_dense(&m)});
  };
  auto add_vector = [&](const std::string& name, const VectorXf& v) {
    entries.push_back({name, ggml::Type::F32, 0, v.size(), [&v](gguf::Writer& w, const std::string& n, ggml::Type) {
                         w.write_tensor(n, std::as_bytes(std::span<const float>(v.data(), static_cast<std::size_t>(v.size()))));
                       }});
  };

  auto add_op = [&](const std::string& gname, std::string_view qname, const LinearOp& op) {
    if (const auto* g = dynamic_cast<const GgmlLinear*>(&op)) {
      entries.push_back({gname, g->type(), g->out_features(), g->in_features(),
                         [g](gguf::Writer& w, const std::string& n, ggml::Type) { w.write_tensor(n, g->bytes()); }});
    } else if (const auto* d = dynamic_cast<const DenseLinear*>(&op)) {
      add_matrix(gname, d->weight());
    } else {
      fail(kWhere, ": layer '", qname, "' is ", op.describe(), ", which a GGUF file cannot hold (only dense "
           "weights and ggml block types; recipes that transform a layer's input online cannot be exported)");
    }
  };

  add_matrix("token_embd.weight", model.embedding());
  add_vector("output_norm.weight", model.norm_gain("norm"));
  // A classifier op is what the model computes with, so it is what the file holds (an op over a
  // shared classifier unties it: output.weight is written).
  if (const LinearOp* op = model.classifier_op()) {
    add_op("output.weight", "classifier", *op);
  } else if (!c.shared_classifier) {
    add_matrix("output.weight", model.classifier());
  }
  for (int l = 0; l < c.n_layers; ++l) {
    add_vector(gguf_tensor_name(str_cat("layers.", l, ".attention_norm")), model.norm_gain(str_cat("layers.", l, ".attention_norm")));
    add_vector(gguf_tensor_name(str_cat("layers.", l, ".ffn_norm")), model.norm_gain(str_cat("layers.", l, ".ffn_norm")));
    for (const char* kind : {"wq", "wk", "wv", "wo", "w1", "w2", "w3"}) {
      const std::string qname = str_cat("layers.", l, ".", kind);
      add_op(gguf_tensor_name(qname), qname, model.linear(qname));
    }
  }

  gguf::Writer w(path);
  w.set("general.architecture", std::string("llama"));
  w.set("general.name", options.name);
  if (options.file_type >= 0) w.set("general.file_type", static_cast<std::uint32_t>(options.file_type));
  bool quantized = false;
  for (const auto& e : entries) quantized = quantized || ggml::type_info(e.type).quantized;
  if (quantized) w.set("general.quantization_version", static_cast<std::uint32_t>(2));
  w.set("llama.context_length", static_cast<std::uint32_t>(c.seq_len));
  w.set("llama.embedding_length", static_cast<std::uint32_t>(c.dim));
  w.set("llama.feed_forward_length", static_cast<std::uint32_t>(c.hidden_dim));
  w.set("llama.block_count", static_cast<std::uint32_t>(c.n_layers));
  w.set("llama.attention.head_count", static_cast<std::uint32_t>(c.n_heads));
  w.set("llama.attention.head_count_kv", static_cast<std::uint32_t>(c.n_kv_heads));
  w.set("llama.rope.dimension_count", static_cast<std::uint32_t>(c.head_size()));
  w.set("llama.rope.freq_base", static_cast<float>(c.rope_base));
  w.set("llama.attention.layer_norm_rms_epsilon", c.norm_eps);
  w.set("llama.vocab_size", static_cast<std::uint32_t>(c.vocab_size));
  std::vector<std::string> pieces;
  std::vector<float> scores;
  std::vector<std::int32_t> types;
  for (int id = 0; id < tokenizer.vocab_size(); ++id) {
    pieces.push_back(detail::replace_all(tokenizer.piece(id), " ", detail::kSpmSpace));
    scores.push_back(tokenizer.score(id));
    types.push_back(static_cast<std::int32_t>(tokenizer.token_type(id)));
  }
  w.set("tokenizer.ggml.model", std::string("llama"));
  w.set("tokenizer.ggml.tokens", gguf::Array::of(pieces));
  w.set("tokenizer.ggml.scores", gguf::Array::of(scores));
  w.set("tokenizer.ggml.token_type", gguf::Array::of(types));
  if (tokenizer.unk_id() >= 0) w.set("tokenizer.ggml.unknown_token_id", static_cast<std::uint32_t>(tokenizer.unk_id()));
  w.set("tokenizer.ggml.bos_token_id", static_cast<std::uint32_t>(tokenizer.bos_id()));
  w.set("tokenizer.ggml.eos_token_id", static_cast<std::uint32_t>(tokenizer.eos_id()));
  for (const auto& kv : options.extra) w.set(kv.key, kv.value);
  for (const auto& e : entries) {
    w.add_tensor(e.name, e.type, e.rows == 0 ? std::vector<std::int64_t>{e.cols} : std::vector<std::int64_t>{e.cols, e.rows});
  }
  for (const auto& e : entries) e.write(w, e.name, e.type);
  w.finish();
}

}  // namespace qtl::model
