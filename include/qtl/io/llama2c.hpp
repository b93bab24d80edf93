// qtl/io/llama2c.hpp — reader for llama2.c legacy fp32 checkpoints (e.g. karpathy's stories260K).
//
// File layout (all little-endian):
//   header: 7 x int32  dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len
//           vocab_size > 0: the classifier shares the token-embedding matrix;
//           vocab_size < 0: a separate classifier `wcls` is stored at the end, |vocab_size| rows.
//   then float32 arrays, each matrix [out][in] row-major, L = n_layers:
//     tok_embeddings [vocab][dim]
//     rms_att        [L][dim]            -> layers.{l}.attention_norm
//     wq             [L][dim][dim]       -> layers.{l}.wq
//     wk             [L][kv_dim][dim]    -> layers.{l}.wk
//     wv             [L][kv_dim][dim]    -> layers.{l}.wv
//     wo             [L][dim][dim]       -> layers.{l}.wo
//     rms_ffn        [L][dim]            -> layers.{l}.ffn_norm
//     w1             [L][hidden][dim]    -> layers.{l}.w1
//     w2             [L][dim][hidden]    -> layers.{l}.w2
//     w3             [L][hidden][dim]    -> layers.{l}.w3
//     rms_final      [dim]               -> norm
//     freq_cis_real  [seq_len][head_size/2]   (legacy RoPE tables: optional, ignored)
//     freq_cis_imag  [seq_len][head_size/2]
//     wcls           [vocab][dim]        -> output   (only when vocab_size < 0)
//   with head_size = dim / n_heads and kv_dim = head_size * n_kv_heads.
// The file size must equal the size of exactly one layout (with or without the RoPE tables);
// anything else is an error that states the expected and the actual byte counts.
#pragma once

#include <array>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <string>
#include <string_view>
#include <vector>

#include "qtl/core/error.hpp"
#include "qtl/core/types.hpp"

namespace qtl::io {

/// The hyper-parameters of a llama2.c checkpoint. vocab_size is always stored positive;
/// shared_classifier records the sign it had in the file.
struct Llama2cConfig {
  int dim = 0;
  int hidden_dim = 0;
  int n_layers = 0;
  int n_heads = 0;
  int n_kv_heads = 0;
  int vocab_size = 0;
  int seq_len = 0;
  bool shared_classifier = true;
  /// RMSNorm epsilon and RoPE base: llama2.c's fixed values; a GGUF model carries its own
  /// (llama.attention.layer_norm_rms_epsilon, llama.rope.freq_base).
  float norm_eps = 1e-5f;
  double rope_base = 10000.0;

  /// dim / n_heads (the header check guarantees exact division and an even result).
  [[nodiscard]] int head_size() const { return dim / n_heads; }
  /// Width of the key and value projections: head_size * n_kv_heads.
  [[nodiscard]] int kv_dim() const { return head_size() * n_kv_heads; }
};

namespace detail {

/// The largest accepted value of any header dimension; guards against garbage headers.
inline constexpr std::int64_t kLlama2cMaxDim = std::int64_t{1} << 20;

/// a * b, throwing if the product leaves int64.
inline std::int64_t llama2c_checked_mul(std::int64_t a, std::int64_t b, const std::string& file) {
  std::int64_t r = 0;
  if (__builtin_mul_overflow(a, b, &r)) {
    fail("llama2c: '", file, "': tensor sizes overflow 64 bits (", a, " x ", b, ")");
  }
  return r;
}

inline std::int64_t llama2c_checked_add(std::int64_t a, std::int64_t b, const std::string& file) {
  std::int64_t r = 0;
  if (__builtin_add_overflow(a, b, &r)) {
    fail("llama2c: '", file, "': tensor sizes overflow 64 bits (", a, " + ", b, ")");
  }
  return r;
}

inline std::uint32_t llama2c_load_u32_le(const unsigned char* p) {
  return static_cast<std::uint32_t>(p[0]) | (static_cast<std::uint32_t>(p[1]) << 8) |
         (static_cast<std::uint32_t>(p[2]) << 16) | (static_cast<std::uint32_t>(p[3]) << 24);
}

}  // namespace detail

/// A llama2.c checkpoint held in memory: the config and every named tensor.
/// Copying copies the weights; views returned by tensor() point into this object.
class Llama2cCheckpoint {
 public:
  /// Reads and validates the whole file. Throws qtl::Error when the file is missing, shorter
  /// than the header, has an implausible header, a size that matches no layout, or a weight
  /// that is NaN or infinite.
  [[nodiscard]] static Llama2cCheckpoint load(const std::filesystem::path& path);

  [[nodiscard]] const Llama2cConfig& config() const { return config_; }

  /// Every tensor name, in file order ("tok_embeddings", "layers.0.attention_norm", ...).
  [[nodiscard]] const std::vector<std::string>& tensor_names() const { return names_; }

  [[nodiscard]] bool has(std::string_view name) const { return find(name) != nullptr; }

  /// The tensor as a read-only row-major view; vectors (the norms) are 1 x n.
  /// Throws qtl::Error naming `name` and the available names when it does not exist.
  [[nodiscard]] MatrixMap tensor(std::string_view name) const {
    const Entry* e = find(name);
    if (e == nullptr) {
      fail("llama2c: no tensor named '", name,
           "'; this checkpoint holds tok_embeddings, layers.{0..", config_.n_layers - 1,
           "}.{attention_norm, wq, wk, wv, wo, ffn_norm, w1, w2, w3}, norm",
           config_.shared_classifier ? "" : ", output");
    }
    return MatrixMap(data_.data() + e->offset, e->rows, e->cols);
  }

  /// The seven linear weight matrices of every layer, layer by layer, each layer in the order
  /// wq wk wv wo w1 w2 w3 ("layers.0.wq", ..., "layers.{L-1}.w3"). The classifier is excluded.
  [[nodiscard]] std::vector<std::string> linear_names() const {
    static constexpr std::array<std::string_view, 7> kLinears = {"wq", "wk", "wv", "wo",
                                                                 "w1", "w2", "w3"};
    std::vector<std::string> out;
    out.reserve(static_cast<std::size_t>(config_.n_layers) * kLinears.size());
    for (int l = 0; l < config_.n_layers; ++l) {
      for (std::string_view w : kLinears) out.push_back(str_cat("layers.", l, ".", w));
    }
    return out;
  }

 private:
  struct Entry {
    std::string name;
    std::size_t offset = 0;  // in floats, into data_
    Index rows = 0;
    Index cols = 0;
  };

  [[nodiscard]] const Entry* find(std::string_view name) const {
    for (const Entry& e : entries_) {
      if (e.name == name) return &e;
    }
    return nullptr;
  }

  Llama2cConfig config_;
  std::vector<float> data_;  // every float after the header, in file order
  std::vector<Entry> entries_;
  std::vector<std::string> names_;
};

inline Llama2cCheckpoint Llama2cCheckpoint::load(const std::filesystem::path& path) {
  const std::string file = path.string();
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec)) {
    fail("llama2c: model file '", file, "' not found (or not a regular file)");
  }
  const std::uintmax_t file_size = std::filesystem::file_size(path, ec);
  if (ec) fail("llama2c: cannot read the size of '", file, "': ", ec.message());

  constexpr std::int64_t kHeaderBytes = 7 * 4;
  if (file_size < static_cast<std::uintmax_t>(kHeaderBytes)) {
    fail("llama2c: '", file, "' has ", file_size, " bytes, shorter than the ", kHeaderBytes,
         "-byte header");
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) fail("llama2c: cannot open '", file, "'");

  std::array<unsigned char, kHeaderBytes> header{};
  in.read(reinterpret_cast<char*>(header.data()), kHeaderBytes);
  if (!in) fail("llama2c: cannot read the header of '", file, "'");
  std::array<std::int64_t, 7> h{};
  for (std::size_t i = 0; i < h.size(); ++i) {
    h[i] = static_cast<std::int32_t>(detail::llama2c_load_u32_le(header.data() + 4 * i));
  }

  static constexpr std::array<const char*, 7> kFields = {
      "dim", "hidden_dim", "n_layers", "n_heads", "n_kv_heads", "vocab_size", "seq_len"};
  for (std::size_t i = 0; i < h.size(); ++i) {
    const std::int64_t v = (i == 5) ? (h[i] < 0 ? -h[i] : h[i]) : h[i];
    if (v <= 0 || v > detail::kLlama2cMaxDim) {
      fail("llama2c: '", file, "': header field ", kFields[i], " = ", h[i], " is out of range (",
           i == 5 ? "|vocab_size| must be in [1, " : "must be in [1, ", detail::kLlama2cMaxDim,
           "]); is this a llama2.c legacy checkpoint?");
    }
  }
  Llama2cConfig c;
  c.dim = static_cast<int>(h[0]);
  c.hidden_dim = static_cast<int>(h[1]);
  c.n_layers = static_cast<int>(h[2]);
  c.n_heads = static_cast<int>(h[3]);
  c.n_kv_heads = static_cast<int>(h[4]);
  c.shared_classifier = h[5] > 0;
  c.vocab_size = static_cast<int>(h[5] < 0 ? -h[5] : h[5]);
  c.seq_len = static_cast<int>(h[6]);
  if (c.dim % c.n_heads != 0) {
    fail("llama2c: '", file, "': dim = ", c.dim, " is not divisible by n_heads = ", c.n_heads);
  }
  if (c.n_heads % c.n_kv_heads != 0) {
    fail("llama2c: '", file, "': n_heads = ", c.n_heads, " is not divisible by n_kv_heads = ",
         c.n_kv_heads);
  }
  if (c.head_size() % 2 != 0) {
    fail("llama2c: '", file, "': head_size = dim / n_heads = ", c.head_size(),
         " is odd; RoPE rotates pairs of dimensions");
  }

  // Expected size, from the header alone (checked arithmetic: a garbage header must neither
  // overflow nor allocate). Floats after the header:
  //   body = vocab*dim + L*(2*dim + 2*dim*dim + 2*kv_dim*dim + 3*hidden*dim) + dim
  //   rope = 2 * seq_len * head_size/2,  cls = vocab*dim if the classifier is separate.
  const std::int64_t dim = c.dim, hidden = c.hidden_dim, vocab = c.vocab_size, kv = c.kv_dim();
  const auto mul = [&](std::int64_t a, std::int64_t b) {
    return detail::llama2c_checked_mul(a, b, file);
  };
  const auto add = [&](std::int64_t a, std::int64_t b) {
    return detail::llama2c_checked_add(a, b, file);
  };
  const std::int64_t per_layer =
      add(add(add(2 * dim, mul(2 * dim, dim)), mul(2 * kv, dim)), mul(3 * hidden, dim));
  const std::int64_t body_floats = add(add(mul(vocab, dim), mul(c.n_layers, per_layer)), dim);
  const std::int64_t rope_floats = mul(c.seq_len, c.head_size());
  const std::int64_t cls_floats = c.shared_classifier ? 0 : vocab * dim;
  const std::int64_t with_rope = add(add(body_floats, rope_floats), cls_floats);
  const std::int64_t without_rope = add(body_floats, cls_floats);
  const std::int64_t bytes_with = add(kHeaderBytes, mul(with_rope, 4));
  const std::int64_t bytes_without = add(kHeaderBytes, mul(without_rope, 4));
  const auto actual = static_cast<std::int64_t>(file_size);
  if (actual != bytes_with && actual != bytes_without) {
    fail("llama2c: '", file, "' has ", actual, " bytes, but the header (dim=", c.dim,
         ", hidden_dim=", c.hidden_dim, ", n_layers=", c.n_layers, ", n_heads=", c.n_heads,
         ", n_kv_heads=", c.n_kv_heads, ", vocab_size=", c.vocab_size,
         c.shared_classifier ? " shared" : " separate classifier", ", seq_len=", c.seq_len,
         ") expects ", bytes_with, " bytes (with the RoPE tables) or ", bytes_without,
         " bytes (without them); the file is truncated, padded, or not a llama2.c checkpoint");
  }
  const bool has_rope = actual == bytes_with;
  const std::int64_t total_floats = has_rope ? with_rope : without_rope;

  // Tensor table in file order; offsets count floats after the header.
  Llama2cCheckpoint ck;
  ck.config_ = c;
  std::int64_t cursor = 0;
  auto add_tensor = [&](std::string name, std::int64_t rows, std::int64_t cols) {
    ck.entries_.push_back({std::move(name), static_cast<std::size_t>(cursor),
                           static_cast<Index>(rows), static_cast<Index>(cols)});
    cursor += rows * cols;
  };
  // Per-layer arrays are stored kind by kind ([L][...] each), not layer by layer.
  auto add_per_layer = [&](std::string_view kind, std::int64_t rows, std::int64_t cols) {
    for (int l = 0; l < c.n_layers; ++l) add_tensor(str_cat("layers.", l, ".", kind), rows, cols);
  };
  add_tensor("tok_embeddings", vocab, dim);
  add_per_layer("attention_norm", 1, dim);
  add_per_layer("wq", dim, dim);
  add_per_layer("wk", kv, dim);
  add_per_layer("wv", kv, dim);
  add_per_layer("wo", dim, dim);
  add_per_layer("ffn_norm", 1, dim);
  add_per_layer("w1", hidden, dim);
  add_per_layer("w2", dim, hidden);
  add_per_layer("w3", hidden, dim);
  add_tensor("norm", 1, dim);
  if (has_rope) cursor += rope_floats;
  if (!c.shared_classifier) add_tensor("output", vocab, dim);

  ck.data_.resize(static_cast<std::size_t>(total_floats));
  in.read(reinterpret_cast<char*>(ck.data_.data()), static_cast<std::streamsize>(total_floats) * 4);
  if (!in) fail("llama2c: reading '", file, "' failed after the header");
  if constexpr (std::endian::native == std::endian::big) {
    for (float& v : ck.data_) {
      std::uint32_t u = 0;
      std::memcpy(&u, &v, 4);
      u = detail::llama2c_load_u32_le(reinterpret_cast<const unsigned char*>(&u));
      std::memcpy(&v, &u, 4);
    }
  }

  ck.names_.reserve(ck.entries_.size());
  for (const Entry& e : ck.entries_) {
    const float* p = ck.data_.data() + e.offset;
    for (Index i = 0; i < e.rows * e.cols; ++i) {
      if (!std::isfinite(p[i])) {
        fail("llama2c: '", file, "': tensor ", e.name, " holds ", p[i], " at (", i / e.cols,
             ", ", i % e.cols, "); weights must be finite");
      }
    }
    ck.names_.push_back(e.name);
  }
  return ck;
}

}  // namespace qtl::io
