// qtl/model/block_reconstruction.hpp — block-wise reconstruction: a transformer block's rounding,
// clipping and RMSNorm gains tuned to the error of the whole block's output.
//
// Layer-wise solvers (GPTQ, SignRound on tr(ΔW H ΔWᵀ)) make each linear's output match on its
// own inputs; what the model needs is the block's output to match. AutoRound (Cheng et al.,
// "Optimize Weight Rounding via Signed Gradient Descent", the block-wise form of SignRound) and
// OmniQuant (Shao et al., learnable clipping tuned per block) optimize
//   L = 1/N Σ_t ‖block_q(x̃_t) − block(x_t)‖²
// over the calibration tokens, where block is the unquantized block on the unquantized model's
// stream x and block_q the quantized one on the stream x̃ of the model as quantized so far
// (AutoRound's default: quantized inputs, full-precision targets). The parameters: for each of
// the seven linears, a rounding offset v ∈ [−½, ½] per weight and clip factors α, β ∈ [min_clip, 1]
// per group (calib::detail::SignRoundState, straight-through estimator for round()); and,
// optionally, the two RMSNorm gains of the block as g₀ ⊙ m with m ∈ [½, 3/2] per channel (they
// stay fp32 in the model, so tuning them costs no bits). Gradients come from the block's
// written-out backward pass (qtl/model/block_function.hpp); every parameter takes signed steps
// of a learning rate 1/iterations decayed linearly to 0 (AutoRound's schedule), on a random
// mini-batch of calibration sequences per step (deterministic for a seed).
//
// Iteration 0 is min-max round-to-nearest with the original gains (or, given `start`, another
// solver's codes, the offsets then moving within ±½ of them; on a calibration split of the bundled
// model, starting from gptq-refine's codes toward fp32 targets ended worse than starting from
// RTN: 3-bit perplexity 5.160 vs 4.985, 2-bit 13.53 vs 11.27, a local minimum the ±½ steps do
// not leave). The loss is measured on a
// fixed subset of the calibration sequences every eval_every steps and the best state is kept,
// so the result is never worse than RTN on that subset. Memory: the block's targets for the
// calibration sequences (one residual stream's worth) and one sequence's activations at a time.
#pragma once

#include <algorithm>
#include <array>
#include <cstdint>
#include <limits>
#include <map>
#include <memory>
#include <random>
#include <span>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "qtl/calib/rounding.hpp"
#include "qtl/core/error.hpp"
#include "qtl/kernel/common/threading.hpp"
#include "qtl/model/block_function.hpp"
#include "qtl/model/mixed_precision.hpp"
#include "qtl/model/quantized_linear.hpp"
#include "qtl/model/sequential.hpp"

namespace qtl::model {

struct BlockReconstructionOptions {
  int iterations = 200;          ///< signed-gradient steps (AutoRound's default); 0 = min-max RTN
  int batch_sequences = 4;       ///< calibration sequences per step
  double learning_rate = 0.0;    ///< 0: 1 / iterations, decayed linearly to 0
  bool learn_clip = true;        ///< learn α, β per group besides the rounding offsets
  float min_clip = 0.5f;         ///< α, β ∈ [min_clip, 1]
  bool tune_norms = true;        ///< tune the block's two RMSNorm gains (m ∈ [½, 3/2] per channel)
  int eval_sequences = 16;       ///< the fixed subset the best state is chosen on
  int eval_every = 10;           ///< steps between evaluations of that subset
  unsigned seed = 0;
  /// Threads over the sequences of a batch (each one's gradient on its own, summed in batch
  /// order: the result does not depend on the count); 0 = std::thread::hardware_concurrency().
  int threads = 0;
};

template <int Bits, Mode M>
struct BlockReconstruction {
  std::array<QuantizedMatrix<Uniform<Bits, M>>, 7> linear;  ///< kBlockLinears order
  VectorXf attention_norm;
  VectorXf ffn_norm;
  double start_loss = 0.0;  ///< L on the evaluation subset at iteration 0 (the start)
  double final_loss = 0.0;  ///< L of the kept state on that subset; never above start_loss
  int best_iteration = 0;
};

namespace detail {

inline void check_block_options(std::string_view where, const BlockReconstructionOptions& o) {
  require_range(where, "iterations", o.iterations, 0, 100000);
  require_range(where, "batch_sequences", o.batch_sequences, 1, 1 << 20);
  require_range(where, "eval_sequences", o.eval_sequences, 1, 1 << 20);
  require_range(where, "eval_every", o.eval_every, 1, 100000);
  require_range(where, "threads", o.threads, 0, 4096);
  if (!(o.learning_rate >= 0.0 && o.learning_rate <= 1.0)) {
    fail(where, ": learning_rate must be in [0, 1] (0 = 1/iterations), got ", o.learning_rate);
  }
  if (!(o.min_clip >= 0.05f && o.min_clip <= 1.0f)) fail(where, ": min_clip must be in [0.05, 1], got ", o.min_clip);
}

/// One linear of a block under reconstruction, whatever its code: the block solver sees its
/// dequantized weights and hands it ∂L/∂Ŵ; it remembers the state worth keeping.
class BlockLinearTuner {
 public:
  virtual ~BlockLinearTuner() = default;
  /// Rounds with the current parameters: dequantized() is then Ŵ.
  virtual void forward() = 0;
  [[nodiscard]] virtual const RowMatrixXf& dequantized() const = 0;
  /// One signed step of size lr against G = ∂L/∂Ŵ at the last forward().
  virtual void step(const RowMatrixXf& g, float lr, bool learn_clip, float min_clip) = 0;
  /// Keeps the codes of the last forward() as the result.
  virtual void keep() = 0;
  /// The kept codes as a layer on the packed kernels, with its bits per weight.
  [[nodiscard]] virtual QuantizedLayer kept_layer(const KernelOptions& kernel) const = 0;
};

/// Uniform codes of any packed width: SignRound's offsets and clip factors (SignRoundState).
template <int Bits, Mode M>
class UniformBlockTuner final : public BlockLinearTuner {
 public:
  /// From min-max RTN of W at `granularity`.
  UniformBlockTuner(const Uniform<Bits, M>& q, const Granularity& granularity, MatrixRef w, std::string_view where)
      : state_(q, granularity, w, where) {}
  /// From another solver's codes (SignRoundState's second constructor).
  UniformBlockTuner(const QuantizedMatrix<Uniform<Bits, M>>& start, MatrixRef w, std::string_view where)
      : state_(start, w, where) {}
  void forward() override { state_.forward(); }
  [[nodiscard]] const RowMatrixXf& dequantized() const override { return state_.dequantized(); }
  void step(const RowMatrixXf& g, float lr, bool learn_clip, float min_clip) override {
    state_.step(g, lr, learn_clip, min_clip);
  }
  void keep() override { kept_ = state_.matrix(); }
  [[nodiscard]] QuantizedLayer kept_layer(const KernelOptions& kernel) const override {
    QuantizedLayer l;
    l.bits_per_weight = bits_per_weight(kept_);
    l.op = make_packed_linear(kept_, kernel);
    return l;
  }
  [[nodiscard]] const QuantizedMatrix<Uniform<Bits, M>>& kept() const { return kept_; }

 private:
  calib::detail::SignRoundState<Bits, M> state_;
  QuantizedMatrix<Uniform<Bits, M>> kept_;
};

/// A tuner for uniform codes at a width known at run time: the packed kernels' 2, 3, 4, 5, 6 or 8
/// bits (any other width is named in the error).
template <Mode M>
[[nodiscard]] std::unique_ptr<BlockLinearTuner> make_uniform_tuner(int bits, const Granularity& granularity, MatrixRef w,
                                                                   std::string_view where) {
  switch (bits) {
    case 2: return std::make_unique<UniformBlockTuner<2, M>>(Uniform<2, M>{}, granularity, w, where);
    case 3: return std::make_unique<UniformBlockTuner<3, M>>(Uniform<3, M>{}, granularity, w, where);
    case 4: return std::make_unique<UniformBlockTuner<4, M>>(Uniform<4, M>{}, granularity, w, where);
    case 5: return std::make_unique<UniformBlockTuner<5, M>>(Uniform<5, M>{}, granularity, w, where);
    case 6: return std::make_unique<UniformBlockTuner<6, M>>(Uniform<6, M>{}, granularity, w, where);
    case 8: return std::make_unique<UniformBlockTuner<8, M>>(Uniform<8, M>{}, granularity, w, where);
    default: fail(where, ": uniform codes run on the packed kernels at 2, 3, 4, 5, 6 or 8 bits; got ", bits);
  }
}

/// What tune_block found besides the tuners' kept codes.
struct BlockTuning {
  VectorXf attention_norm;
  VectorXf ffn_norm;
  double start_loss = 0.0;
  double final_loss = 0.0;
  int best_iteration = 0;
};

/// Checks what forward() would reject, before any thread runs (an exception must not leave a
/// parallel region).
inline void check_block_inputs(std::string_view where, const io::Llama2cConfig& cfg,
                               std::span<const RowMatrixXf> inputs, std::span<const RowMatrixXf> fp32_inputs) {
  if (inputs.empty()) fail(where, ": no calibration sequences");
  if (inputs.size() != fp32_inputs.size()) {
    fail(where, ": ", inputs.size(), " quantized-model inputs but ", fp32_inputs.size(), " fp32 inputs");
  }
  for (std::size_t i = 0; i < inputs.size(); ++i) {
    if (inputs[i].cols() != cfg.dim || inputs[i].rows() < 1 || inputs[i].rows() > cfg.seq_len) {
      fail(where, ": sequence ", i, " is ", inputs[i].rows(), "x", inputs[i].cols(), "; the block takes 1..",
           cfg.seq_len, " tokens of ", cfg.dim, " channels");
    }
    if (inputs[i].rows() != fp32_inputs[i].rows() || inputs[i].cols() != fp32_inputs[i].cols()) {
      fail(where, ": sequence ", i, " is ", inputs[i].rows(), "x", inputs[i].cols(), " in the quantized model and ",
           fp32_inputs[i].rows(), "x", fp32_inputs[i].cols(), " in the fp32 one");
    }
    if (!inputs[i].allFinite() || !fp32_inputs[i].allFinite()) fail(where, ": sequence ", i, "'s input holds NaN or Inf");
  }
}

/// The block solver of the header comment over any seven tuners (kBlockLinears order), each
/// built on the block's fp32 weights; inputs checked by the caller (check_block_inputs). On
/// return every tuner has kept its best state.
template <class Deferred = void>
[[nodiscard]] BlockTuning tune_block(std::span<const std::unique_ptr<BlockLinearTuner>, 7> tuners,
                                     const BlockFunction<float>& block, const BlockWeights<float>& fp32,
                                     std::span<const RowMatrixXf> inputs, std::span<const RowMatrixXf> fp32_inputs,
                                     const BlockReconstructionOptions& opt) {
  const std::size_t n = inputs.size();
  std::vector<RowMatrixXf> targets(n);
  const int threads = opt.threads > 0 ? opt.threads : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  kernel::parallel_for(static_cast<std::ptrdiff_t>(n), threads, [&](std::ptrdiff_t b, std::ptrdiff_t e) {
    for (auto i = static_cast<std::size_t>(b); i < static_cast<std::size_t>(e); ++i) targets[i] = block.forward(fp32, fp32_inputs[i]);
  });

  BlockWeights<float> cur = fp32;
  VectorXf m_att = VectorXf::Ones(fp32.attention_norm.size()), m_ffn = VectorXf::Ones(fp32.ffn_norm.size());
  auto refresh = [&] {
    for (std::size_t j = 0; j < 7; ++j) {
      tuners[j]->forward();
      cur.linear[j] = tuners[j]->dequantized();
    }
    cur.attention_norm = fp32.attention_norm.cwiseProduct(m_att);
    cur.ffn_norm = fp32.ffn_norm.cwiseProduct(m_ffn);
  };

  // The evaluation subset: evenly spaced sequences.
  std::vector<std::size_t> eval;
  const std::size_t ne = std::min<std::size_t>(n, static_cast<std::size_t>(opt.eval_sequences));
  for (std::size_t e = 0; e < ne; ++e) eval.push_back(e * n / ne);
  std::vector<double> errors(eval.size());
  auto eval_loss = [&] {
    kernel::parallel_for(static_cast<std::ptrdiff_t>(eval.size()), threads, [&](std::ptrdiff_t b, std::ptrdiff_t e) {
      for (auto i = static_cast<std::size_t>(b); i < static_cast<std::size_t>(e); ++i) {
        errors[i] = static_cast<double>((block.forward(cur, inputs[eval[i]]) - targets[eval[i]]).squaredNorm());
      }
    });
    double sum = 0.0;
    Index tokens = 0;
    for (std::size_t i = 0; i < eval.size(); ++i) {
      sum += errors[i];
      tokens += inputs[eval[i]].rows();
    }
    return sum / static_cast<double>(tokens);
  };

  BlockTuning best;
  double best_loss = std::numeric_limits<double>::infinity();
  auto keep_if_better = [&](int it) {
    const double loss = eval_loss();
    if (it == 0) best.start_loss = loss;
    if (loss < best_loss) {
      best_loss = loss;
      for (std::size_t j = 0; j < 7; ++j) tuners[j]->keep();
      best.attention_norm = cur.attention_norm;
      best.ffn_norm = cur.ffn_norm;
      best.best_iteration = it;
    }
  };

  std::mt19937_64 rng(opt.seed);
  std::uniform_int_distribution<std::size_t> pick(0, n - 1);
  const int iters = opt.iterations;
  const double lr0 = opt.learning_rate > 0.0 ? opt.learning_rate : (iters > 0 ? 1.0 / iters : 0.0);
  std::array<RowMatrixXf, 7> grad;
  VectorXf g_att, g_ffn;
  std::vector<BlockGradient<float>> per_sequence(static_cast<std::size_t>(opt.batch_sequences));
  for (int it = 0; it <= iters; ++it) {
    refresh();
    if (it % opt.eval_every == 0 || it == iters) keep_if_better(it);
    if (it == iters) break;
    Index tokens = 0;
    std::vector<std::size_t> batch(static_cast<std::size_t>(opt.batch_sequences));
    for (auto& b : batch) {
      b = pick(rng);
      tokens += inputs[b].rows();
    }
    for (std::size_t j = 0; j < 7; ++j) grad[j].setZero(cur.linear[j].rows(), cur.linear[j].cols());
    g_att.setZero(cur.attention_norm.size());
    g_ffn.setZero(cur.ffn_norm.size());
    kernel::parallel_for(static_cast<std::ptrdiff_t>(batch.size()), threads, [&](std::ptrdiff_t b, std::ptrdiff_t e) {
      BlockTape<float> tape;
      for (auto i = static_cast<std::size_t>(b); i < static_cast<std::size_t>(e); ++i) {
        const RowMatrixXf out = block.forward(cur, inputs[batch[i]], &tape);
        const RowMatrixXf d = (out - targets[batch[i]]) * (2.0f / static_cast<float>(tokens));
        per_sequence[i] = block.backward(cur, tape, d);
      }
    });
    for (const auto& g : per_sequence) {
      for (std::size_t j = 0; j < 7; ++j) grad[j] += g.linear[j];
      g_att += g.attention_norm;
      g_ffn += g.ffn_norm;
    }
    const auto lr = static_cast<float>(lr0 * (1.0 - static_cast<double>(it) / iters));
    for (std::size_t j = 0; j < 7; ++j) tuners[j]->step(grad[j], lr, opt.learn_clip, opt.min_clip);
    if (opt.tune_norms) {
      // ∂L/∂m = ∂L/∂g ⊙ g₀; one signed step per channel, m kept in [½, 3/2].
      for (Index c = 0; c < m_att.size(); ++c) {
        const float da = g_att(c) * fp32.attention_norm(c), df = g_ffn(c) * fp32.ffn_norm(c);
        if (da != 0.0f) m_att(c) = std::clamp(m_att(c) - (da > 0.0f ? lr : -lr), 0.5f, 1.5f);
        if (df != 0.0f) m_ffn(c) = std::clamp(m_ffn(c) - (df > 0.0f ? lr : -lr), 0.5f, 1.5f);
      }
    }
  }
  best.final_loss = best_loss;
  return best;
}

}  // namespace detail

/// Tunes the quantization of one block (weights `fp32`, the unquantized block's parameters) to
/// the block's output error. `inputs[i]` is sequence i's stream entering the block in the model
/// as quantized so far, `fp32_inputs[i]` in the unquantized model (each T_i x dim, the pairs of
/// equal shape). With `start` (another solver's matrices, e.g. GPTQ's, in kBlockLinears order)
/// the search starts from them instead of min-max RTN. Throws qtl::Error for mismatched or
/// empty inputs, bad options or weights.
template <int Bits, Mode M>
[[nodiscard]] BlockReconstruction<Bits, M> reconstruct_block(const Uniform<Bits, M>& q, const Granularity& granularity,
                                                             const BlockFunction<float>& block,
                                                             const BlockWeights<float>& fp32,
                                                             std::span<const RowMatrixXf> inputs,
                                                             std::span<const RowMatrixXf> fp32_inputs,
                                                             const BlockReconstructionOptions& opt = {},
                                                             const std::array<QuantizedMatrix<Uniform<Bits, M>>, 7>* start = nullptr) {
  constexpr std::string_view kWhere = "reconstruct_block";
  detail::check_block_options(kWhere, opt);
  block.check(fp32);
  detail::check_block_inputs(kWhere, block.config(), inputs, fp32_inputs);
  if (start != nullptr) {  // another solver's matrices must be this granularity's, of these weights
    for (std::size_t j = 0; j < 7; ++j) {
      const Index rows = fp32.linear[j].rows(), cols = fp32.linear[j].cols();
      if ((*start)[j].layout != make_group_layout(granularity, rows, cols, kWhere)) {
        const GroupLayout& L = (*start)[j].layout;
        fail(kWhere, ": start matrix ", kBlockLinears[j], " is ", L.rows, "x", L.cols, " in groups of ",
             L.per_tensor ? L.cols : L.group_size, "; the block's ", rows, "x", cols, " weights are quantized with ",
             make_group_layout(granularity, rows, cols, kWhere).group_size, "-column groups");
      }
    }
  }
  using Tuner = detail::UniformBlockTuner<Bits, M>;
  std::array<std::unique_ptr<detail::BlockLinearTuner>, 7> tuners;
  for (std::size_t j = 0; j < 7; ++j) {
    tuners[j] = start != nullptr ? std::make_unique<Tuner>((*start)[j], fp32.linear[j], kWhere)
                                 : std::make_unique<Tuner>(q, granularity, fp32.linear[j], kWhere);
  }
  detail::BlockTuning t = detail::tune_block(tuners, block, fp32, inputs, fp32_inputs, opt);
  BlockReconstruction<Bits, M> r;
  for (std::size_t j = 0; j < 7; ++j) r.linear[j] = static_cast<const Tuner&>(*tuners[j]).kept();
  r.attention_norm = std::move(t.attention_norm);
  r.ffn_norm = std::move(t.ffn_norm);
  r.start_loss = t.start_loss;
  r.final_loss = t.final_loss;
  r.best_iteration = t.best_iteration;
  return r;
}

namespace detail {

/// What the block-wise recipes share: quantize_block checks the block's fp32 weights and
/// calibration inputs, asks the subclass for each linear's tuner (make_tuner), runs tune_block
/// over them (the seed offset by the layer), and returns the kept codes on the packed kernels,
/// their notes prefixed by the tuner's label (when nonempty), and the tuned gains. (A template
/// only so that its members compile where a recipe is made, not in every includer.)
template <class Deferred = void>
class BlockReconstructionBase : public Recipe {
 public:
  [[nodiscard]] std::string name() const override { return name_; }
  [[nodiscard]] bool quantizes_blocks() const override { return true; }
  [[nodiscard]] std::vector<QuantizedLayer> quantize(std::span<const LayerCalibration> group) const override {
    fail("recipe '", name_, "' quantizes whole blocks, not the group of '", group.empty() ? std::string() : group.front().name,
         "' alone (it cannot be a per-matrix candidate)");
  }
  [[nodiscard]] QuantizedBlock quantize_block(const BlockCalibration& b) const override {
    const BlockFunction<float> f(b.fp32->config());
    const BlockWeights<float> w = block_weights<float>(*b.fp32, b.layer);
    f.check(w);
    check_block_inputs(where_, f.config(), b.inputs, b.fp32_inputs);
    std::array<std::unique_ptr<BlockLinearTuner>, 7> tuners;
    std::array<std::string, 7> labels;
    for (std::size_t j = 0; j < 7; ++j) tuners[j] = make_tuner(b.layer, j, w.linear[j], labels[j]);
    BlockReconstructionOptions opt = options_;
    opt.seed = options_.seed + static_cast<unsigned>(b.layer);
    const BlockTuning t = tune_block(tuners, f, w, b.inputs, b.fp32_inputs, opt);
    QuantizedBlock out;
    for (std::size_t j = 0; j < 7; ++j) {
      QuantizedLayer l = tuners[j]->kept_layer(kernel_);
      l.note = str_cat(labels[j].empty() ? std::string() : str_cat(labels[j], "; "), "block loss ", t.start_loss, " -> ",
                       t.final_loss, " (step ", t.best_iteration, ")");
      out.layers.push_back(std::move(l));
    }
    if (options_.tune_norms) {
      out.attention_norm = t.attention_norm;
      out.ffn_norm = t.ffn_norm;
    }
    return out;
  }

 protected:
  BlockReconstructionBase(std::string_view where, BlockReconstructionOptions options, KernelOptions kernel, std::string name)
      : where_(where), options_(options), kernel_(kernel), name_(std::move(name)) {
    check_block_options(where_, options_);
  }
  /// The tuner of linear j (kBlockLinears order) of block `layer`, on its fp32 weights w; sets
  /// `label` to what the notes should say about its precision (or leaves it empty).
  [[nodiscard]] virtual std::unique_ptr<BlockLinearTuner> make_tuner(int layer, std::size_t j, const BlockMatrix<float>& w,
                                                                     std::string& label) const = 0;
  [[nodiscard]] std::string_view where() const { return where_; }

 private:
  std::string_view where_;  // a string literal of the subclass
  BlockReconstructionOptions options_;
  KernelOptions kernel_;
  std::string name_;
};

}  // namespace detail

/// The block-wise recipe for the sequential driver: reconstruct_block on every block, its
/// linears packed on the uniform kernels, the tuned gains installed in the model.
template <int Bits, Mode M>
class BlockReconstructionRecipe final : public detail::BlockReconstructionBase<> {
 public:
  BlockReconstructionRecipe(Uniform<Bits, M> q, Granularity granularity, BlockReconstructionOptions options,
                            KernelOptions kernel = {}, std::string name = "autoround")
      : BlockReconstructionBase("BlockReconstructionRecipe", options, kernel, std::move(name)),
        q_(q),
        granularity_(granularity) {}

 private:
  [[nodiscard]] std::unique_ptr<detail::BlockLinearTuner> make_tuner(int /*layer*/, std::size_t /*j*/,
                                                                     const BlockMatrix<float>& w,
                                                                     std::string& /*label*/) const override {
    return std::make_unique<detail::UniformBlockTuner<Bits, M>>(q_, granularity_, w, where());
  }

  Uniform<Bits, M> q_;
  Granularity granularity_;
};

/// Block-wise reconstruction with a precision per matrix: each linear's uniform width and group
/// size come from `precisions` (by name, "layers.3.w2"; e.g. allocate_bits' choice, see
/// precisions_of in qtl/model/mixed_precision.hpp), and every block is tuned to its output error
/// as BlockReconstructionRecipe does at one width. A matrix whose precision names another recipe
/// (E8P vector codes) is refused: only uniform codes are tuned here.
template <Mode M>
class MixedBlockReconstructionRecipe final : public detail::BlockReconstructionBase<> {
 public:
  using Precisions = std::map<std::string, Precision, std::less<>>;
  MixedBlockReconstructionRecipe(Precisions precisions, BlockReconstructionOptions options, KernelOptions kernel = {},
                                 std::string name = "autoround-mixed")
      : BlockReconstructionBase("MixedBlockReconstructionRecipe", options, kernel, std::move(name)),
        precisions_(std::move(precisions)) {
    if (precisions_.empty()) fail(where(), ": no precisions");
    for (const auto& [matrix, p] : precisions_) {
      if (!p.recipe.empty()) {
        fail(where(), ": '", matrix, "' is allocated ", to_string(p), "; block-wise reconstruction tunes uniform codes only");
      }
      if (!is_packable_bits(p.bits)) {
        fail(where(), ": '", matrix, "' is allocated ", p.bits, " bits; uniform codes run on the packed kernels at 2, 3, 4, 5, 6 or 8");
      }
      if (p.group < 0) fail(where(), ": '", matrix, "' has group ", p.group, " (0 = per row)");
    }
  }

 private:
  [[nodiscard]] std::unique_ptr<detail::BlockLinearTuner> make_tuner(int layer, std::size_t j, const BlockMatrix<float>& w,
                                                                     std::string& label) const override {
    const std::string matrix = str_cat("layers.", layer, ".", kBlockLinears[j]);
    const auto it = precisions_.find(matrix);
    if (it == precisions_.end()) fail(where(), ": no precision for '", matrix, "'");
    const Precision& p = it->second;
    const Granularity g = p.group == 0 ? Granularity{PerRow{}} : Granularity{PerGroup{p.group}};
    label = to_string(p);
    return detail::make_uniform_tuner<M>(p.bits, g, w, where());
  }

  Precisions precisions_;
};

}  // namespace qtl::model
