// qtl/model/transformer.hpp — the llama2.c transformer in fp32 over Eigen, written for clarity.
//
// Notation: T tokens processed together, d = dim, L layers, H query heads, G = n_kv_heads key/
// value heads, hs = d / H, every activation a row-major [T x features] matrix (one token a row).
// For each layer l, with the residual stream h [T x d]:
//   x  = rmsnorm(h) ⊙ g_att          rmsnorm(x)_t = x_t / sqrt(mean(x_t²) + 1e-5)
//   q = x Wqᵀ, k = x Wkᵀ, v = x Wvᵀ   (q [T x d], k and v [T x G·hs])
//   RoPE on q and k at each token's absolute position p, pairs (2i, 2i+1) within each head:
//     θ = p · 10000^(−2i/hs),  (a, b) -> (a cos θ − b sin θ, a sin θ + b cos θ)
//   head j attends with key/value head j / (H/G) (grouped-query attention), causally:
//     o_j = softmax(q_j k_gᵀ / sqrt(hs) + mask) v_g,  mask = −∞ where key position > query's
//   h += o Woᵀ
//   x  = rmsnorm(h) ⊙ g_ffn
//   h += (silu(x W1ᵀ) ⊙ (x W3ᵀ)) W2ᵀ,  silu(z) = z / (1 + e^−z)
// Then logits = (rmsnorm(h) ⊙ g_final) Eᵀ with E the token embedding (shared classifier) or
// the separate classifier matrix.
//
// Every one of the 7·L linear layers is a LinearOp, addressed by its checkpoint name
// ("layers.3.w2"): set_linear() swaps in another implementation (a quantized matrix), and an
// observer sees each linear's input as the forward pass runs (activation capture).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "qtl/core/error.hpp"
#include "qtl/core/types.hpp"
#include "qtl/core/validate.hpp"
#include "qtl/io/llama2c.hpp"
#include "qtl/kernel/common/fp16_rows.hpp"
#include "qtl/kernel/common/threading.hpp"

namespace qtl::model {

/// A linear layer without bias: y = x Wᵀ with W [out_features x in_features].
/// Implementations must be safe to call concurrently from several threads (forward is const).
class LinearOp {
 public:
  virtual ~LinearOp() = default;
  [[nodiscard]] virtual Index in_features() const = 0;
  [[nodiscard]] virtual Index out_features() const = 0;
  /// y [T x out_features] = x [T x in_features] Wᵀ. Callers guarantee x.cols() == in_features().
  [[nodiscard]] virtual RowMatrixXf forward(MatrixRef x) const = 0;
  /// A deep copy (models are copyable, so that a quantized copy can sit next to the original).
  [[nodiscard]] virtual std::unique_ptr<LinearOp> clone() const = 0;
  /// A short description for reports, e.g. "dense fp32 64x172".
  [[nodiscard]] virtual std::string describe() const = 0;
  /// For ops whose weights carry a scale per row and column group that can be multiplied in
  /// place at no cost in bits (uniform codes on the packed kernels: W(r, c) = s(r, g) (q - z)):
  /// the groups' column bounds, groups + 1 entries (group g = columns [b[g], b[g+1])), the
  /// same for every row. Empty (the default): the op has no such scales.
  [[nodiscard]] virtual std::vector<Index> scale_group_bounds() const { return {}; }
  /// Multiplies the scale of row r's group g by m[r * groups + g] (see scale_group_bounds).
  /// Throws qtl::Error for an op without such scales, and as the op's kernel does for bad factors.
  virtual void multiply_group_scales(std::span<const float> /*m*/) {
    fail("LinearOp: '", describe(), "' has no group scales to multiply");
  }

 protected:
  LinearOp() = default;
  LinearOp(const LinearOp&) = default;
  LinearOp& operator=(const LinearOp&) = default;
};

/// The fp32 reference: an owned dense weight matrix.
class DenseLinear final : public LinearOp {
 public:
  /// Throws qtl::Error if `weight` is empty or holds NaN/Inf.
  explicit DenseLinear(RowMatrixXf weight) : weight_(std::move(weight)) {
    require_nonempty("DenseLinear", "weight", weight_.rows(), weight_.cols());
    require_finite("DenseLinear", "weight", weight_);
  }
  [[nodiscard]] Index in_features() const override { return weight_.cols(); }
  [[nodiscard]] Index out_features() const override { return weight_.rows(); }
  [[nodiscard]] RowMatrixXf forward(MatrixRef x) const override {
    return x * weight_.transpose();
  }
  [[nodiscard]] std::unique_ptr<LinearOp> clone() const override {
    return std::make_unique<DenseLinear>(*this);
  }
  [[nodiscard]] std::string describe() const override {
    return str_cat("dense fp32 ", weight_.rows(), "x", weight_.cols());
  }
  [[nodiscard]] const RowMatrixXf& weight() const { return weight_; }

 private:
  RowMatrixXf weight_;
};

/// Called with each linear layer's name and its input x [T x in_features], just before the
/// layer runs. wq, wk and wv see the same input, as do w1 and w3.
using LinearObserver = std::function<void(std::string_view name, MatrixRef input)>;

/// How a KvCache stores keys and values: fp32 (the model's own arithmetic: a cached forward
/// equals the uncached one), or fp16, as llama.cpp's default cache does: half the memory and
/// half the bytes each generated token reads, each key and value rounded once to the nearest
/// fp16 (a relative change of at most 2^-11; values beyond fp16's range, 65504, become inf).
enum class KvType { F32, F16 };

/// Keys and values of the tokens processed so far, for incremental generation.
/// Holds room for config.seq_len positions in each layer.
class KvCache {
 public:
  explicit KvCache(const io::Llama2cConfig& config, KvType type = KvType::F32)
      : type_(type), layers_(config.n_layers), kv_dim_(config.kv_dim()), capacity_(config.seq_len) {
    const auto layers = static_cast<std::size_t>(config.n_layers);
    if (type == KvType::F32) {
      keys_.assign(layers, RowMatrixXf::Zero(Index{config.n_kv_heads} * config.seq_len, config.head_size()));
      values_ = keys_;
    } else {
      const auto n = static_cast<std::size_t>(config.seq_len) * static_cast<std::size_t>(config.kv_dim());
      keys16_.assign(layers, std::vector<std::uint16_t>(n));
      values16_ = keys16_;
    }
  }

  /// Number of positions already processed (the position of the next token).
  [[nodiscard]] int size() const { return size_; }
  [[nodiscard]] int capacity() const { return capacity_; }
  [[nodiscard]] KvType type() const { return type_; }
  void clear() { size_ = 0; }

 private:
  friend class Transformer;
  KvType type_ = KvType::F32;
  int layers_ = 0;
  Index kv_dim_ = 0;
  // Per layer, head-major: kv head g's key of position p is row g * capacity + p of a
  // [kv_heads * capacity x head_size] matrix (RoPE already applied), so that a head's keys and
  // values are one contiguous run each. (Position-major rows would put a head's 2 * head_size
  // bytes every kv_dim * 4 bytes: in generation, one new 4 KiB page per position at kv_dim
  // 1024+, where hardware prefetchers stop, so every position is a memory round trip.)
  std::vector<RowMatrixXf> keys_;    // F32
  std::vector<RowMatrixXf> values_;  // F32
  std::vector<std::vector<std::uint16_t>> keys16_;    // F16: the same layout, fp16 bits
  std::vector<std::vector<std::uint16_t>> values16_;  // F16
  int capacity_ = 0;
  int size_ = 0;
};

/// The weights of a Transformer, each [out x in] row-major; `linears` holds the 7 matrices of
/// every layer in linear_names() order (wq wk wv wo w1 w2 w3, layer by layer); `classifier` is
/// empty when the configuration shares it with the embedding.
struct TransformerWeights {
  RowMatrixXf embedding;
  RowMatrixXf classifier;
  std::vector<VectorXf> attention_norm;
  std::vector<VectorXf> ffn_norm;
  VectorXf final_norm;
  std::vector<RowMatrixXf> linears;
};

class Transformer {
 public:
  /// Builds the model from a checkpoint (weights are copied; the checkpoint may go away).
  explicit Transformer(const io::Llama2cCheckpoint& checkpoint);
  /// A model from its weights (e.g. read from a GGUF file): every shape is checked against
  /// `config`; the linears become DenseLinear ops.
  Transformer(const io::Llama2cConfig& config, TransformerWeights weights);

  /// Loads a llama2.c checkpoint file (see Llama2cCheckpoint::load for the errors).
  [[nodiscard]] static Transformer load(const std::filesystem::path& path) {
    return Transformer(io::Llama2cCheckpoint::load(path));
  }

  /// Deep copies: every LinearOp is cloned. The observer is not copied: it usually records
  /// into state that belongs to one model.
  Transformer(const Transformer& other);
  Transformer& operator=(const Transformer& other) {
    if (this != &other) *this = Transformer(other);
    return *this;
  }
  Transformer(Transformer&&) noexcept = default;
  Transformer& operator=(Transformer&&) noexcept = default;
  ~Transformer() = default;

  [[nodiscard]] const io::Llama2cConfig& config() const { return config_; }
  /// The token embedding [vocab x dim], and the classifier [vocab x dim] (the embedding itself
  /// when config().shared_classifier).
  [[nodiscard]] const RowMatrixXf& embedding() const { return embedding_; }
  [[nodiscard]] const RowMatrixXf& classifier() const {
    return config_.shared_classifier ? embedding_ : classifier_;
  }

  /// The 7·L linear layer names, layer by layer, each as wq wk wv wo w1 w2 w3.
  [[nodiscard]] const std::vector<std::string>& linear_names() const { return linear_names_; }

  /// The RMSNorm gain called `name`: "layers.L.attention_norm", "layers.L.ffn_norm" or "norm"
  /// (the final one); throws qtl::Error for an unknown name.
  [[nodiscard]] const VectorXf& norm_gain(std::string_view name) const {
    return const_cast<Transformer*>(this)->gain_slot(name);
  }

  /// Replaces an RMSNorm gain (e.g. to fold a channel scaling of the next layers' inputs into
  /// it: g ← g ⊘ s). Throws qtl::Error for an unknown name, a size mismatch or NaN/Inf.
  void set_norm_gain(std::string_view name, VectorXf gain) {
    VectorXf& slot = gain_slot(name);
    if (gain.size() != slot.size()) {
      fail("Transformer::set_norm_gain: '", name, "' has ", slot.size(), " channels, got ", gain.size());
    }
    require_finite("Transformer::set_norm_gain", "gain", gain);
    slot = std::move(gain);
  }

  /// Rotates the residual stream by an orthogonal Q [dim x dim] (QuaRot's and SpinQuant's fold):
  /// every RMSNorm gain is folded into the linears that read it (the gains become 1), then
  ///   W <- W diag(g) Q   for wq, wk, wv (g: attention_norm) and w1, w3 (g: ffn_norm),
  ///   W <- Q^T W         for wo and w2 (they write the residual stream),
  ///   E <- E Q, classifier <- C diag(g_final) Q   (a shared classifier is untied first).
  /// The residual stream becomes h Q, and rmsnorm(h Q) = rmsnorm(h) Q because Q keeps norms, so
  /// the model computes the same function; but the weights the quantizer sees are rotated, and
  /// the channel outliers of the stream are spread over all channels. Throws qtl::Error if Q is
  /// not dim x dim, not orthogonal (max |Q^T Q - I| > 1e-4) or not finite, or if a linear is not
  /// a DenseLinear or a classifier op is set (rotate before quantizing).
  void rotate_residual(const RowMatrixXf& q) {
    constexpr std::string_view kWhere = "Transformer::rotate_residual";
    const Index dim = config_.dim;
    if (classifier_op_) fail(kWhere, ": the classifier runs through an op (", classifier_op_->describe(), "); rotate before quantizing it");
    if (q.rows() != dim || q.cols() != dim) fail(kWhere, ": Q is ", q.rows(), "x", q.cols(), ", the stream has ", dim, " channels");
    require_finite(kWhere, "Q", q);
    const double dev = ((q.transpose() * q).cast<double>() - Eigen::MatrixXd::Identity(dim, dim)).cwiseAbs().maxCoeff();
    if (dev > 1e-4) fail(kWhere, ": Q is not orthogonal (max |Q^T Q - I| = ", dev, ")");
    std::vector<RowMatrixXf> w(linears_.size());
    for (std::size_t i = 0; i < linears_.size(); ++i) {
      const auto* dense = dynamic_cast<const DenseLinear*>(linears_[i].get());
      if (dense == nullptr) fail(kWhere, ": '", linear_names_[i], "' is not a dense fp32 layer (", linears_[i]->describe(), ")");
      w[i] = dense->weight();
    }
    for (std::size_t i = 0; i < linears_.size(); ++i) {
      const int layer = static_cast<int>(i / 7);
      const std::string_view slot = std::string_view(linear_names_[i]).substr(linear_names_[i].rfind('.') + 1);
      if (slot == "wo" || slot == "w2") {
        w[i] = q.transpose() * w[i];
      } else {
        const VectorXf& g = (slot == "w1" || slot == "w3") ? ffn_norm_[static_cast<std::size_t>(layer)]
                                                             : attention_norm_[static_cast<std::size_t>(layer)];
        w[i] = (w[i] * g.asDiagonal()) * q;
      }
    }
    if (config_.shared_classifier) {
      classifier_ = embedding_;
      config_.shared_classifier = false;
    }
    classifier_ = (classifier_ * final_norm_.asDiagonal()) * q;
    embedding_ = embedding_ * q;
    for (std::size_t i = 0; i < linears_.size(); ++i) linears_[i] = std::make_unique<DenseLinear>(std::move(w[i]));
    for (auto& g : attention_norm_) g.setOnes();
    for (auto& g : ffn_norm_) g.setOnes();
    final_norm_.setOnes();
  }

  /// The linear layer called `name` ("layers.0.wq"); throws qtl::Error for an unknown name.
  [[nodiscard]] const LinearOp& linear(std::string_view name) const {
    return *linears_[linear_index(name)];
  }

  /// Replaces the linear layer `name` and returns the previous one. Throws qtl::Error for an
  /// unknown name, a null op, or an op whose shape differs from the layer's.
  std::unique_ptr<LinearOp> set_linear(std::string_view name, std::unique_ptr<LinearOp> op) {
    const std::size_t i = linear_index(name);
    if (!op) fail("Transformer::set_linear: the op for '", name, "' is null");
    const LinearOp& old = *linears_[i];
    if (op->out_features() != old.out_features() || op->in_features() != old.in_features()) {
      fail("Transformer::set_linear: '", name, "' is ", old.out_features(), "x",
           old.in_features(), " (out x in) but the new op is ", op->out_features(), "x",
           op->in_features());
    }
    return std::exchange(linears_[i], std::move(op));
  }

  /// The op that runs the classifier product, or null when logits() multiplies by the fp32
  /// classifier() itself (the default).
  [[nodiscard]] const LinearOp* classifier_op() const { return classifier_op_.get(); }

  /// Runs the classifier product through `op` (e.g. a PackedLinear of the quantized
  /// classifier(): with a large vocabulary the fp32 product streams vocab x dim x 4 bytes per
  /// generated token, more than all the quantized layers together); null restores the fp32
  /// product. classifier() keeps returning the fp32 weights, which calibration and the file
  /// writers read; the observer does not see the classifier's input. Returns the previous op.
  /// Throws qtl::Error for an op whose shape is not vocab x dim (out x in).
  std::unique_ptr<LinearOp> set_classifier_op(std::unique_ptr<LinearOp> op) {
    if (op && (op->out_features() != config_.vocab_size || op->in_features() != config_.dim)) {
      fail("Transformer::set_classifier_op: the classifier is ", config_.vocab_size, "x", config_.dim,
           " (vocab x dim) but the op (", op->describe(), ") is ", op->out_features(), "x", op->in_features());
    }
    return std::exchange(classifier_op_, std::move(op));
  }

  /// Installs (or, with an empty function, removes) the observer of linear-layer inputs.
  /// While an observer is set, forward calls from several threads must not overlap unless the
  /// observer itself is thread-safe.
  void set_observer(LinearObserver observer) { observer_ = std::move(observer); }

  /// Logits [T x vocab] for tokens at positions 0..T-1 (one causal pass, no cache).
  /// Throws qtl::Error if T is 0 or exceeds seq_len, or a token is outside [0, vocab).
  [[nodiscard]] RowMatrixXf forward(std::span<const int> tokens) const {
    RowMatrixXf h = embed(tokens);
    for (int l = 0; l < config_.n_layers; ++l) layer_forward(l, h, nullptr, 0);
    return logits(h);
  }

  /// Logits [T x vocab] for tokens at positions cache.size()..cache.size()+T-1, attending to
  /// everything cached before them; appends their keys and values to the cache.
  [[nodiscard]] RowMatrixXf forward(std::span<const int> tokens, KvCache& cache) const {
    return logits(forward_cached(tokens, cache));
  }

  /// Like forward(tokens, cache), but only the logits [vocab] of the last token: what
  /// generation needs after a prompt. The classifier over all T rows would cost T·vocab·dim
  /// multiply-adds that nobody reads (with a 32000-token vocabulary and dim 2048, 16 GFLOP for a
  /// 128-token prompt; llama.cpp likewise computes logits only where the batch asks for them).
  [[nodiscard]] VectorXf forward_last(std::span<const int> tokens, KvCache& cache) const {
    const RowMatrixXf h = forward_cached(tokens, cache);
    return logits(h.bottomRows(1)).row(0).transpose();
  }

  /// Logits [vocab] of the next token after `token`, which sits at position cache.size().
  [[nodiscard]] VectorXf step(int token, KvCache& cache) const {
    const int one[1] = {token};
    return forward(std::span<const int>(one), cache).row(0).transpose();
  }

  // ---- The pass in pieces, for layer-by-layer drivers (calibrate layer l, then feed its
  // ---- outputs to layer l+1). forward(tokens) == logits(layers 0..L-1 applied to embed(tokens)).

  /// The residual stream entering layer 0: row t is the embedding of tokens[t].
  [[nodiscard]] RowMatrixXf embed(std::span<const int> tokens) const {
    if (tokens.empty()) fail("Transformer: the token sequence is empty");
    if (tokens.size() > static_cast<std::size_t>(config_.seq_len)) {
      fail("Transformer: ", tokens.size(), " tokens exceed seq_len = ", config_.seq_len);
    }
    RowMatrixXf h(static_cast<Index>(tokens.size()), config_.dim);
    for (std::size_t t = 0; t < tokens.size(); ++t) {
      if (tokens[t] < 0 || tokens[t] >= config_.vocab_size) {
        fail("Transformer: token ", tokens[t], " at index ", t, " is outside [0, ",
             config_.vocab_size, ")");
      }
      h.row(static_cast<Index>(t)) = embedding_.row(tokens[t]);
    }
    return h;
  }

  /// Applies layer `layer` in place to the residual stream h [T x dim] of tokens at
  /// positions 0..T-1 (causal attention among them, no cache).
  void forward_layer(int layer, RowMatrixXf& h) const {
    require_range("Transformer::forward_layer", "layer", layer, 0, config_.n_layers - 1);
    require_range<Index>("Transformer::forward_layer", "h.rows()", h.rows(), 1, config_.seq_len);
    require_size("Transformer::forward_layer", "h.cols()", h.cols(), config_.dim);
    layer_forward(layer, h, nullptr, 0);
  }

  /// Final RMSNorm and classifier (classifier_op() when one is set): logits [T x vocab] from
  /// the residual stream h [T x dim].
  [[nodiscard]] RowMatrixXf logits(const RowMatrixXf& h) const {
    require_size("Transformer::logits", "h.cols()", h.cols(), config_.dim);
    const RowMatrixXf x = rmsnorm(h, final_norm_);
    if (classifier_op_) {
      RowMatrixXf y = classifier_op_->forward(x);
      if (y.rows() != x.rows() || y.cols() != config_.vocab_size) {
        fail("Transformer: the classifier op (", classifier_op_->describe(), ") returned ", y.rows(), "x",
             y.cols(), " for an input of ", x.rows(), "x", x.cols(), "; expected ", x.rows(), "x",
             config_.vocab_size);
      }
      return y;
    }
    return x * (config_.shared_classifier ? embedding_ : classifier_).transpose();
  }

 private:
  // Index of each linear within a layer's block of 7, in linear_names() order.
  enum Slot : std::size_t { kWq, kWk, kWv, kWo, kW1, kW2, kW3, kSlots };

  std::size_t linear_index(std::string_view name) const {
    for (std::size_t i = 0; i < linear_names_.size(); ++i) {
      if (linear_names_[i] == name) return i;
    }
    fail("Transformer: no linear layer named '", name, "'; the names are layers.{0..",
         config_.n_layers - 1, "}.{wq, wk, wv, wo, w1, w2, w3}");
  }

  void require_cache(const KvCache& cache) const {
    if (cache.layers_ != config_.n_layers || cache.capacity_ != config_.seq_len || cache.kv_dim_ != config_.kv_dim()) {
      fail("Transformer: the KvCache was made for another model config (", cache.layers_,
           " layers, capacity ", cache.capacity_, ", kv_dim ", cache.kv_dim_, ")");
    }
  }

  /// The residual stream after the last layer for tokens at positions cache.size().., their
  /// keys and values appended to the cache (forward(tokens, cache) without the classifier).
  RowMatrixXf forward_cached(std::span<const int> tokens, KvCache& cache) const {
    require_cache(cache);
    if (static_cast<std::size_t>(cache.size_) + tokens.size() >
        static_cast<std::size_t>(cache.capacity_)) {
      fail("Transformer::forward: ", tokens.size(), " new tokens after ", cache.size_,
           " cached ones exceed seq_len = ", cache.capacity_);
    }
    RowMatrixXf h = embed(tokens);
    for (int l = 0; l < config_.n_layers; ++l) layer_forward(l, h, &cache, cache.size_);
    cache.size_ += static_cast<int>(tokens.size());
    return h;
  }

  /// Runs linear `slot` of layer `layer` on x, showing x to the observer first. The output
  /// shape is checked: a LinearOp is an extension point, and a wrong shape would corrupt memory.
  RowMatrixXf apply_linear(int layer, Slot slot, const RowMatrixXf& x) const {
    const std::size_t i = static_cast<std::size_t>(layer) * kSlots + slot;
    if (observer_) observer_(linear_names_[i], x);
    RowMatrixXf y = linears_[i]->forward(x);
    if (y.rows() != x.rows() || y.cols() != linears_[i]->out_features()) {
      fail("Transformer: linear '", linear_names_[i], "' (", linears_[i]->describe(),
           ") returned ", y.rows(), "x", y.cols(), " for an input of ", x.rows(), "x", x.cols(),
           "; expected ", x.rows(), "x", linears_[i]->out_features());
    }
    return y;
  }

  /// y_t = x_t / sqrt(mean(x_t²) + eps) ⊙ gain, row by row (eps = config().norm_eps, 1e-5 for
  /// llama2.c models).
  RowMatrixXf rmsnorm(const RowMatrixXf& x, const VectorXf& gain) const {
    const float kEps = config_.norm_eps;
    RowMatrixXf y(x.rows(), x.cols());
    for (Index t = 0; t < x.rows(); ++t) {
      const float mean_square = x.row(t).squaredNorm() / static_cast<float>(x.cols());
      const float inv_rms = 1.0f / std::sqrt(mean_square + kEps);
      y.row(t) = (x.row(t).array() * inv_rms) * gain.transpose().array();
    }
    return y;
  }

  /// RoPE in place on m [T x n_heads·hs], rows at positions pos0..pos0+T-1.
  void rope(RowMatrixXf& m, int pos0) const {
    const int hs = config_.head_size();
    const int n_heads = static_cast<int>(m.cols()) / hs;
    for (Index t = 0; t < m.rows(); ++t) {
      const Index p = pos0 + t;
      for (int head = 0; head < n_heads; ++head) {
        for (int i = 0; i < hs / 2; ++i) {
          const float c = rope_cos_(p, i);
          const float s = rope_sin_(p, i);
          float& a = m(t, head * hs + 2 * i);
          float& b = m(t, head * hs + 2 * i + 1);
          const float a0 = a;
          a = a0 * c - b * s;
          b = a0 * s + b * c;
        }
      }
    }
  }

  /// One transformer block on h [T x dim] at positions pos0..pos0+T-1. With a cache, the new
  /// keys/values go to cache rows pos0.. and attention sees cache rows 0..pos0+T-1; without
  /// one, pos0 is 0 and attention sees the T tokens themselves.
  void layer_forward(int layer, RowMatrixXf& h, KvCache* cache, int pos0) const {
    const auto l = static_cast<std::size_t>(layer);
    const Index T = h.rows();
    const int hs = config_.head_size();
    const int group = config_.n_heads / config_.n_kv_heads;  // query heads per kv head

    // Attention.
    const RowMatrixXf x = rmsnorm(h, attention_norm_[l]);
    RowMatrixXf q = apply_linear(layer, kWq, x);
    RowMatrixXf k = apply_linear(layer, kWk, x);
    RowMatrixXf v = apply_linear(layer, kWv, x);
    rope(q, pos0);
    rope(k, pos0);
    const bool f16 = cache != nullptr && cache->type_ == KvType::F16;
    const bool f32_cache = cache != nullptr && !f16;
    const kernel::KernelPath path = f16 ? kernel::default_kernel_path() : kernel::KernelPath::Portable;
    const Index kvd = config_.kv_dim();
    const Index cap = cache != nullptr ? cache->capacity_ : 0;
    for (int g = 0; f32_cache && g < config_.n_kv_heads; ++g) {
      cache->keys_[l].middleRows(g * cap + pos0, T) = k.middleCols(g * hs, hs);
      cache->values_[l].middleRows(g * cap + pos0, T) = v.middleCols(g * hs, hs);
    }
    for (int g = 0; f16 && g < config_.n_kv_heads; ++g) {
      kernel::float_rows_to_fp16(path, k.data() + g * hs, kvd, cache->keys16_[l].data() + (g * cap + pos0) * hs, hs, T,
                                 hs);
      kernel::float_rows_to_fp16(path, v.data() + g * hs, kvd, cache->values16_[l].data() + (g * cap + pos0) * hs, hs,
                                 T, hs);
    }
    // Keys/values visible to this call: the cache's positions 0..pos0+T-1, or the T new ones
    // (an fp16 cache's are read below, the new ones as stored: rounded).
    const Index S = cache != nullptr ? pos0 + T : T;  // key positions; query t sits at pos0 + t
    auto head_keys = [&](int g) {
      return f32_cache ? MatrixRef(cache->keys_[l].middleRows(g * cap, S)) : MatrixRef(k.middleCols(g * hs, hs));
    };
    auto head_values = [&](int g) {
      return f32_cache ? MatrixRef(cache->values_[l].middleRows(g * cap, S)) : MatrixRef(v.middleCols(g * hs, hs));
    };
    q *= 1.0f / std::sqrt(static_cast<float>(hs));  // folds the 1/sqrt(hs) of the scores into q
    RowMatrixXf attended(T, config_.dim);
    // Heads are independent: split across Eigen's thread count (the threads of the model's fp32
    // products), each chunk of heads with its own scores (and, for an fp16 cache and several
    // tokens, its own fp32 copy of the current kv head's keys and values). A head's arithmetic
    // does not depend on the split, so the result is the same for any thread count. In
    // generation (T = 1) the per-head products are GEMVs, which Eigen runs on one thread; this
    // is their parallelism. One token over an fp16 cache reads the fp16 rows directly.
    const int chunks = static_cast<int>(std::clamp<Index>(Eigen::nbThreads(), 1, config_.n_heads));
    const bool widen = f16 && T > 1;
    std::vector<RowMatrixXf> scores(static_cast<std::size_t>(chunks), RowMatrixXf(T, S));
    std::vector<RowMatrixXf> head_kv(widen ? static_cast<std::size_t>(2 * chunks) : 0, RowMatrixXf(S, hs));
    kernel::parallel_for(chunks, chunks, [&](std::ptrdiff_t c0, std::ptrdiff_t c1) {
      for (std::ptrdiff_t c = c0; c < c1; ++c) {
        RowMatrixXf& sc = scores[static_cast<std::size_t>(c)];
        int widened = -1;  // the kv head whose fp16 rows head_kv holds
        for (int head = static_cast<int>(config_.n_heads * c / chunks);
             head < static_cast<int>(config_.n_heads * (c + 1) / chunks); ++head) {
          const int kv_head = head / group;
          const std::uint16_t* k16 = f16 ? cache->keys16_[l].data() + kv_head * cap * hs : nullptr;
          const std::uint16_t* v16 = f16 ? cache->values16_[l].data() + kv_head * cap * hs : nullptr;
          if (f16 && !widen) {
            kernel::fp16_rows_dot(path, q.data() + head * hs, k16, hs, S, hs, sc.data());
            softmax_prefix(sc.row(0), S);
            kernel::fp16_rows_weighted_sum(path, sc.data(), v16, hs, S, hs, attended.data() + head * hs);
            continue;
          }
          if (widen && kv_head != widened) {
            kernel::fp16_rows_to_float(path, k16, hs, head_kv[2 * static_cast<std::size_t>(c)].data(), hs, S, hs);
            kernel::fp16_rows_to_float(path, v16, hs, head_kv[2 * static_cast<std::size_t>(c) + 1].data(), hs, S, hs);
            widened = kv_head;
          }
          const MatrixRef kh = widen ? MatrixRef(head_kv[2 * static_cast<std::size_t>(c)]) : head_keys(kv_head);
          const MatrixRef vh = widen ? MatrixRef(head_kv[2 * static_cast<std::size_t>(c) + 1]) : head_values(kv_head);
          // Causal: queries in blocks of kQueryBlock, each block against the keys up to its
          // last query only (a prompt of T tokens multiplies about half of the T x S scores).
          for (Index t0 = 0; t0 < T; t0 += kQueryBlock) {
            const Index tb = std::min<Index>(kQueryBlock, T - t0), sb = std::min<Index>(S, pos0 + t0 + tb);
            auto scores_block = sc.block(t0, 0, tb, sb);
            scores_block.noalias() = q.block(t0, head * hs, tb, hs) * kh.topRows(sb).transpose();
            for (Index t = 0; t < tb; ++t) softmax_prefix(scores_block.row(t), pos0 + t0 + t + 1);
            attended.block(t0, head * hs, tb, hs).noalias() = scores_block * vh.topRows(sb);
          }
        }
      }
    });
    h += apply_linear(layer, kWo, attended);

    // SwiGLU feed-forward.
    const RowMatrixXf xf = rmsnorm(h, ffn_norm_[l]);
    const RowMatrixXf gate = apply_linear(layer, kW1, xf);
    const RowMatrixXf up = apply_linear(layer, kW3, xf);
    const RowMatrixXf act = (gate.array() / (1.0f + (-gate.array()).exp())) * up.array();
    h += apply_linear(layer, kW2, act);
  }

  static constexpr Index kQueryBlock = 64;  ///< attention: queries per block of causal scores

  /// Softmax over row[0..n), zeros in row[n..): causal masking of keys after the query.
  template <class Row>
  static void softmax_prefix(Row&& row, Index n) {
    auto live = row.head(n).array();
    live = (live - live.maxCoeff()).exp();
    live /= live.sum();
    row.tail(row.size() - n).setZero();
  }

  void init_rope();

  VectorXf& gain_slot(std::string_view name) {
    if (name == "norm") return final_norm_;
    for (int l = 0; l < config_.n_layers; ++l) {
      if (name == str_cat("layers.", l, ".attention_norm")) return attention_norm_[static_cast<std::size_t>(l)];
      if (name == str_cat("layers.", l, ".ffn_norm")) return ffn_norm_[static_cast<std::size_t>(l)];
    }
    fail("Transformer: no RMSNorm called '", name, "' (layers.L.attention_norm, layers.L.ffn_norm or norm)");
  }

  io::Llama2cConfig config_;
  RowMatrixXf embedding_;   // [vocab x dim]
  RowMatrixXf classifier_;  // [vocab x dim], empty when shared with embedding_
  std::vector<VectorXf> attention_norm_;
  std::vector<VectorXf> ffn_norm_;
  VectorXf final_norm_;
  std::vector<std::string> linear_names_;
  std::vector<std::unique_ptr<LinearOp>> linears_;  // 7 per layer, linear_names_ order
  std::unique_ptr<LinearOp> classifier_op_;         // null: the fp32 product with classifier()
  RowMatrixXf rope_cos_;  // [seq_len x hs/2]: cos(p · 10000^(−2i/hs))
  RowMatrixXf rope_sin_;
  LinearObserver observer_;
};

inline Transformer::Transformer(const io::Llama2cCheckpoint& checkpoint)
    : config_(checkpoint.config()) {
  const auto& c = config_;
  embedding_ = checkpoint.tensor("tok_embeddings");
  if (!c.shared_classifier) classifier_ = checkpoint.tensor("output");
  final_norm_ = checkpoint.tensor("norm").row(0).transpose();
  linear_names_ = checkpoint.linear_names();
  for (const std::string& name : linear_names_) {
    linears_.push_back(std::make_unique<DenseLinear>(RowMatrixXf(checkpoint.tensor(name))));
  }
  for (int l = 0; l < c.n_layers; ++l) {
    attention_norm_.emplace_back(
        checkpoint.tensor(str_cat("layers.", l, ".attention_norm")).row(0).transpose());
    ffn_norm_.emplace_back(
        checkpoint.tensor(str_cat("layers.", l, ".ffn_norm")).row(0).transpose());
  }
  init_rope();
}

inline Transformer::Transformer(const io::Llama2cConfig& config, TransformerWeights w) : config_(config) {
  constexpr std::string_view kWhere = "Transformer";
  const auto& c = config_;
  if (c.dim < 1 || c.n_layers < 1 || c.n_heads < 1 || c.n_kv_heads < 1 || c.vocab_size < 1 || c.seq_len < 1 ||
      c.hidden_dim < 1 || c.dim % c.n_heads != 0 || c.head_size() % 2 != 0 || c.n_heads % c.n_kv_heads != 0) {
    fail(kWhere, ": inconsistent configuration: dim ", c.dim, ", hidden_dim ", c.hidden_dim, ", n_layers ",
         c.n_layers, ", n_heads ", c.n_heads, ", n_kv_heads ", c.n_kv_heads, ", vocab_size ", c.vocab_size,
         ", seq_len ", c.seq_len, " (dim must split into heads of even size, n_heads into kv groups)");
  }
  if (!(c.norm_eps > 0.0f) || !std::isfinite(c.norm_eps)) fail(kWhere, ": norm_eps must be > 0, got ", c.norm_eps);
  if (!(c.rope_base > 1.0) || !std::isfinite(c.rope_base)) fail(kWhere, ": rope_base must be > 1, got ", c.rope_base);
  auto check = [&](std::string_view name, Index rows, Index cols, Index want_rows, Index want_cols) {
    if (rows != want_rows || cols != want_cols) {
      fail(kWhere, ": '", name, "' is ", rows, "x", cols, ", expected ", want_rows, "x", want_cols);
    }
  };
  check("tok_embeddings", w.embedding.rows(), w.embedding.cols(), c.vocab_size, c.dim);
  if (!c.shared_classifier) check("output", w.classifier.rows(), w.classifier.cols(), c.vocab_size, c.dim);
  check("norm", w.final_norm.size(), 1, c.dim, 1);
  const auto layers = static_cast<std::size_t>(c.n_layers);
  if (w.attention_norm.size() != layers || w.ffn_norm.size() != layers || w.linears.size() != 7 * layers) {
    fail(kWhere, ": ", w.attention_norm.size(), " attention norms, ", w.ffn_norm.size(), " ffn norms and ",
         w.linears.size(), " linears for ", c.n_layers, " layers (1, 1 and 7 per layer)");
  }
  static constexpr std::array<std::string_view, 7> kLinears = {"wq", "wk", "wv", "wo", "w1", "w2", "w3"};
  const std::array<std::pair<Index, Index>, 7> shapes = {{{c.dim, c.dim},
                                                          {c.kv_dim(), c.dim},
                                                          {c.kv_dim(), c.dim},
                                                          {c.dim, c.dim},
                                                          {c.hidden_dim, c.dim},
                                                          {c.dim, c.hidden_dim},
                                                          {c.hidden_dim, c.dim}}};
  for (int l = 0; l < c.n_layers; ++l) {
    const auto li = static_cast<std::size_t>(l);
    check(str_cat("layers.", l, ".attention_norm"), w.attention_norm[li].size(), 1, c.dim, 1);
    check(str_cat("layers.", l, ".ffn_norm"), w.ffn_norm[li].size(), 1, c.dim, 1);
    for (std::size_t k = 0; k < kLinears.size(); ++k) {
      const std::string name = str_cat("layers.", l, ".", kLinears[k]);
      const RowMatrixXf& m = w.linears[7 * li + k];
      check(name, m.rows(), m.cols(), shapes[k].first, shapes[k].second);
      linear_names_.push_back(name);
    }
  }
  embedding_ = std::move(w.embedding);
  if (!c.shared_classifier) classifier_ = std::move(w.classifier);
  final_norm_ = std::move(w.final_norm);
  attention_norm_ = std::move(w.attention_norm);
  ffn_norm_ = std::move(w.ffn_norm);
  for (auto& m : w.linears) linears_.push_back(std::make_unique<DenseLinear>(std::move(m)));
  init_rope();
}

inline void Transformer::init_rope() {
  const auto& c = config_;
  // Angles in double: p · base^(−2i/hs) reaches ~511 rad, where float angles lose digits.
  const int half = c.head_size() / 2;
  rope_cos_.resize(c.seq_len, half);
  rope_sin_.resize(c.seq_len, half);
  for (int p = 0; p < c.seq_len; ++p) {
    for (int i = 0; i < half; ++i) {
      const double theta = p * std::pow(c.rope_base, -2.0 * i / c.head_size());
      rope_cos_(p, i) = static_cast<float>(std::cos(theta));
      rope_sin_(p, i) = static_cast<float>(std::sin(theta));
    }
  }
}

inline Transformer::Transformer(const Transformer& other)
    : config_(other.config_),
      embedding_(other.embedding_),
      classifier_(other.classifier_),
      attention_norm_(other.attention_norm_),
      ffn_norm_(other.ffn_norm_),
      final_norm_(other.final_norm_),
      linear_names_(other.linear_names_),
      rope_cos_(other.rope_cos_),
      rope_sin_(other.rope_sin_) {
  linears_.reserve(other.linears_.size());
  for (const auto& op : other.linears_) linears_.push_back(op->clone());
  if (other.classifier_op_) classifier_op_ = other.classifier_op_->clone();
}

}  // namespace qtl::model
