// qtl/model/finetune.hpp — end-to-end tuning of a quantized model's RMSNorm gains and group scales.
//
// Layer-wise and block-wise solvers each match a part of the model; what is measured is the
// whole model's output distribution. Once every linear is quantized, the parameters left in
// fp32 (the RMSNorm gains: two per block and the final one, free in bits) can be tuned to
//   L = 1/N Σ_t KL(p_t ‖ q_t),
// p_t the unquantized model's next-token distribution at calibration position t, q_t the
// quantized model's. QuIP# and AQLM end with the same kind of step (fine-tuning the parameters
// that stay in high precision, end to end against the unquantized model's outputs), and
// AutoRound tunes the gains of one block at a time (qtl/model/block_reconstruction.hpp).
//
// The gradient runs through every block: ∂L/∂z_t = (q_t − p_t)/N at the logits, back through
// the classifier and the final RMSNorm, then block by block (BlockFunction::backward, the
// block's written-out backward pass) on the quantized model's effective weights (each linear
// applied to the identity, so any op, uniform, table, vector or ggml, takes part). Gains are
// g = g₀ ⊙ m with m ∈ [½, 3/2] per channel, m moved by Adam on random mini-batches of calibration
// sequences (deterministic for a seed; a batch's sequences run in parallel and their gradients
// are summed in batch order, so the result does not depend on the thread count). The real model
// (its own kernels) is evaluated on a fixed subset of the calibration sequences every
// eval_every steps and the best gains are kept: never worse than the start on that subset.
//
// finetune_model with opt.scales also tunes the scales of the block linears' codes, where the
// op has a scale per row and column group it can multiply in place (uniform codes on the packed
// kernels, LinearOp::scale_group_bounds): W = m(r, g) ⊙ W₀ with W₀ the weights as quantized,
// ∂L/∂m(r, g) = Σ_{c ∈ g} ∂L/∂W(r, c) W₀(r, c) from the same backward pass, and m folded into
// the stored fp16 scales, so the model's size does not change. This is EfficientQAT's end-to-end
// step-size training (E2E-QP: codes fixed, quantization scales trained on the model's loss),
// here on the KL to the unquantized model; ops without such scales (vector codes, ggml blocks)
// stay as they are.
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <limits>
#include <memory>
#include <random>
#include <span>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "qtl/core/error.hpp"
#include "qtl/core/validate.hpp"
#include "qtl/kernel/common/threading.hpp"
#include "qtl/model/block_function.hpp"
#include "qtl/model/transformer.hpp"

namespace qtl::model {

struct FinetuneOptions {
  /// Adam steps; 0 = evaluate only. 300 chosen on a calibration split of the bundled model
  /// (stories 0-199 / 200-249): autoround-mixed at 2.77 bits per weight 7.215 after 100 steps,
  /// 7.110 after 300; 3-bit autoround 4.909 / 4.894, and 4.897 after 1000.
  int iterations = 300;
  int batch_sequences = 4;       ///< calibration sequences per step
  double learning_rate = 1e-3;   ///< Adam's step size on the multipliers m (g = g₀ ⊙ m)
  int eval_sequences = 16;       ///< the fixed subset the best state is chosen on
  int eval_every = 10;           ///< steps between evaluations of that subset
  unsigned seed = 0;
  /// Threads over the sequences of a batch or of the evaluation subset; 0 = hardware_concurrency().
  int threads = 0;
  /// finetune_model only: also tune the group scales of every block linear that has them
  /// (LinearOp::scale_group_bounds: uniform codes on the packed kernels), as multipliers in
  /// [1 - scale_range, 1 + scale_range] per row and group, folded into the stored fp16 scales
  /// (the model's size in bits does not change).
  bool scales = false;
  double scale_learning_rate = 1e-3;  ///< Adam's step size on the scale multipliers
  double scale_range = 0.25;
};

struct FinetuneReport {
  double start_kl = 0.0;  ///< mean KL(fp32 ‖ quantized) per token on the evaluation subset, before
  double final_kl = 0.0;  ///< the same for the kept gains; never above start_kl
  int best_iteration = 0;
};

/// A whole model's parameters as the gradient sees them.
template <class S>
struct ModelWeights {
  std::vector<BlockWeights<S>> blocks;
  BlockVector<S> final_norm;
  BlockMatrix<S> classifier;  ///< [vocab x dim]
};

/// ∂(Σ_t KL) with respect to every RMSNorm gain and every block linear's weights, for one sequence.
template <class S>
struct GainGradient {
  double kl = 0.0;  ///< Σ_t KL(p_t ‖ q_t) over the sequence's positions (nats)
  std::vector<BlockVector<S>> attention_norm, ffn_norm;
  BlockVector<S> final_norm;
  std::vector<std::array<BlockMatrix<S>, 7>> linear;  ///< per block, kBlockLinears order
};

/// The weights `model` computes with: each linear's effective weights (the op applied to the
/// identity: exact for every op linear in its input; with int8 activations, the weights the
/// kernel decodes), its gains, and its classifier (the classifier op's effective weights when one
/// is set).
template <class S>
[[nodiscard]] ModelWeights<S> model_weights(const Transformer& model) {
  const auto effective = [](const LinearOp& op) -> BlockMatrix<S> {
    const RowMatrixXf eye = RowMatrixXf::Identity(op.in_features(), op.in_features());
    return op.forward(eye).transpose().template cast<S>();
  };
  const int layers = model.config().n_layers;
  ModelWeights<S> w;
  w.blocks.resize(static_cast<std::size_t>(layers));
  for (int l = 0; l < layers; ++l) {
    auto& b = w.blocks[static_cast<std::size_t>(l)];
    for (std::size_t j = 0; j < kBlockLinears.size(); ++j) {
      const LinearOp& op = model.linear(str_cat("layers.", l, ".", kBlockLinears[j]));
      const auto* dense = dynamic_cast<const DenseLinear*>(&op);
      b.linear[j] = dense != nullptr ? dense->weight().template cast<S>() : effective(op);
    }
    b.attention_norm = model.norm_gain(str_cat("layers.", l, ".attention_norm")).template cast<S>();
    b.ffn_norm = model.norm_gain(str_cat("layers.", l, ".ffn_norm")).template cast<S>();
  }
  w.final_norm = model.norm_gain("norm").template cast<S>();
  w.classifier = model.classifier_op() != nullptr ? effective(*model.classifier_op())
                                                  : model.classifier().template cast<S>();
  return w;
}

/// Throws qtl::Error naming the part of `w` that does not fit f's configuration (layer count,
/// any block's weights, the final gain, the classifier) or holds NaN/Inf.
template <class S>
void check_model_weights(const BlockFunction<S>& f, const ModelWeights<S>& w, std::string_view where) {
  const io::Llama2cConfig& c = f.config();
  require_size(where, "blocks", static_cast<Index>(w.blocks.size()), c.n_layers);
  for (const auto& b : w.blocks) f.check(b);
  require_size(where, "final_norm", w.final_norm.size(), c.dim);
  require_shape(where, "classifier", w.classifier.rows(), w.classifier.cols(), c.vocab_size, c.dim);
  if (!w.final_norm.allFinite()) fail(where, ": the final norm gain holds NaN or Inf");
  if (!w.classifier.allFinite()) fail(where, ": the classifier holds NaN or Inf");
}

/// One sequence: the model's logits z from the embedded tokens h0 [T x dim], Σ_t KL(p_t ‖
/// softmax(z_t)) with p_t = exp(target_log_probs row t) [T x vocab], and (with `gradient`) its
/// gradient with respect to every gain and every block linear's weights. Throws qtl::Error for weights that do not fit f
/// (check_model_weights), T outside [1, seq_len], a target of another shape than [T x vocab],
/// and NaN/Inf in h0 or the target.
template <class S>
[[nodiscard]] GainGradient<S> kl_gain_gradient(const BlockFunction<S>& f, const ModelWeights<S>& w,
                                               const BlockMatrix<S>& h0, const BlockMatrix<S>& target_log_probs,
                                               bool gradient = true) {
  constexpr std::string_view kWhere = "kl_gain_gradient";
  const io::Llama2cConfig& c = f.config();
  check_model_weights(f, w, kWhere);
  require_size(kWhere, "h0.cols()", h0.cols(), c.dim);
  require_range<Index>(kWhere, "h0.rows()", h0.rows(), 1, c.seq_len);
  require_shape(kWhere, "target_log_probs", target_log_probs.rows(), target_log_probs.cols(), h0.rows(), c.vocab_size);
  if (!h0.allFinite()) fail(kWhere, ": h0 holds NaN or Inf");
  if (!target_log_probs.allFinite()) fail(kWhere, ": target_log_probs holds NaN or Inf");
  const std::size_t layers = w.blocks.size();
  std::vector<BlockTape<S>> tapes(layers);
  BlockMatrix<S> h = h0;
  for (std::size_t l = 0; l < layers; ++l) h = f.forward(w.blocks[l], h, gradient ? &tapes[l] : nullptr);
  BlockVector<S> r;
  BlockMatrix<S> n;
  f.rms(h, r, n);
  const BlockMatrix<S> z = (n * w.final_norm.asDiagonal()) * w.classifier.transpose();
  GainGradient<S> g;
  BlockMatrix<S> dz(z.rows(), z.cols());
  for (Index t = 0; t < z.rows(); ++t) {
    const S zmax = z.row(t).maxCoeff();
    const S lse = zmax + std::log((z.row(t).array() - zmax).exp().sum());
    double kl = 0.0;
    for (Index v = 0; v < z.cols(); ++v) {
      const S lp = target_log_probs(t, v);
      const S lq = z(t, v) - lse;
      const S p = std::exp(lp);
      kl += static_cast<double>(p * (lp - lq));
      dz(t, v) = std::exp(lq) - p;
    }
    g.kl += kl;
  }
  if (!gradient) return g;
  const BlockMatrix<S> dx = dz * w.classifier;  // ∂/∂(n ⊙ g_final)
  g.final_norm = dx.cwiseProduct(n).colwise().sum().transpose();
  BlockMatrix<S> dh = BlockFunction<S>::rms_backward(n, r, dx * w.final_norm.asDiagonal());
  g.attention_norm.resize(layers);
  g.ffn_norm.resize(layers);
  g.linear.resize(layers);
  for (std::size_t l = layers; l-- > 0;) {
    BlockGradient<S> b = f.backward(w.blocks[l], tapes[l], dh);
    g.attention_norm[l] = std::move(b.attention_norm);
    g.ffn_norm[l] = std::move(b.ffn_norm);
    g.linear[l] = std::move(b.linear);
    dh = std::move(b.input);
  }
  return g;
}

namespace detail {

inline void check_finetune_options(std::string_view where, const FinetuneOptions& o) {
  require_range(where, "iterations", o.iterations, 0, 1000000);
  require_range(where, "batch_sequences", o.batch_sequences, 1, 1 << 20);
  require_range(where, "eval_sequences", o.eval_sequences, 1, 1 << 20);
  require_range(where, "eval_every", o.eval_every, 1, 1000000);
  require_range(where, "threads", o.threads, 0, 4096);
  if (!(o.learning_rate > 0.0 && o.learning_rate <= 1.0)) {
    fail(where, ": learning_rate must be in (0, 1], got ", o.learning_rate);
  }
  if (!(o.scale_learning_rate > 0.0 && o.scale_learning_rate <= 1.0)) {
    fail(where, ": scale_learning_rate must be in (0, 1], got ", o.scale_learning_rate);
  }
  if (!(o.scale_range > 0.0 && o.scale_range < 1.0)) fail(where, ": scale_range must be in (0, 1), got ", o.scale_range);
}

/// One Adam step on the multipliers x (clamped to [lo, hi]) with gradient g at step t (from 1).
inline void adam_step(VectorXf& x, VectorXf& mom1, VectorXf& mom2, const VectorXf& g, double t, double lr, float lo,
                      float hi) {
  constexpr double kBeta1 = 0.9, kBeta2 = 0.999, kEps = 1e-8;
  for (Index i = 0; i < x.size(); ++i) {
    const double gi = g(i);
    mom1(i) = static_cast<float>(kBeta1 * mom1(i) + (1.0 - kBeta1) * gi);
    mom2(i) = static_cast<float>(kBeta2 * mom2(i) + (1.0 - kBeta2) * gi * gi);
    const double mh = mom1(i) / (1.0 - std::pow(kBeta1, t));
    const double vh = mom2(i) / (1.0 - std::pow(kBeta2, t));
    x(i) = std::clamp(static_cast<float>(x(i) - lr * mh / (std::sqrt(vh) + kEps)), lo, hi);
  }
}

/// A block linear whose group scales finetune_model tunes: W = m(r, g) ⊙ W0 per row and group.
struct ScaledLinear {
  std::string name;
  std::size_t layer = 0, slot = 0;      // block and kBlockLinears index
  std::unique_ptr<LinearOp> pristine;   // the op as quantized
  std::vector<Index> bounds;            // its groups' column bounds
  RowMatrixXf w0;                       // its effective weights as quantized
  VectorXf m, mom1, mom2, best;         // rows x groups multipliers, row-major

  [[nodiscard]] Index groups() const { return static_cast<Index>(bounds.size()) - 1; }
  /// m ⊙ W0 (per row and group).
  [[nodiscard]] RowMatrixXf weights() const {
    RowMatrixXf w = w0;
    for (Index r = 0; r < w.rows(); ++r) {
      for (Index g = 0; g < groups(); ++g) w.row(r).segment(bounds[g], bounds[g + 1] - bounds[g]) *= m(r * groups() + g);
    }
    return w;
  }
  /// ∂L/∂m from ∂L/∂W: Σ over each group's columns of ∂L/∂W ⊙ W0.
  [[nodiscard]] VectorXf gradient(const RowMatrixXf& dw) const {
    VectorXf out(m.size());
    for (Index r = 0; r < w0.rows(); ++r) {
      for (Index g = 0; g < groups(); ++g) {
        const Index c0 = bounds[g], n = bounds[g + 1] - c0;
        out(r * groups() + g) = dw.row(r).segment(c0, n).dot(w0.row(r).segment(c0, n));
      }
    }
    return out;
  }
};

/// log softmax of each row.
inline RowMatrixXf log_softmax_rows(RowMatrixXf z) {
  for (Index t = 0; t < z.rows(); ++t) {
    const float zmax = z.row(t).maxCoeff();
    const float lse = zmax + std::log((z.row(t).array() - zmax).exp().sum());
    z.row(t).array() -= lse;
  }
  return z;
}

}  // namespace detail

/// Tunes `quantized`'s RMSNorm gains (and with opt.scales its block linears' group scales) to
/// the unquantized model `fp32`'s output distribution on `calibration` (token sequences, cut to
/// seq_len) and installs the best state found (see the header comment). The two models must
/// have the same configuration. Throws qtl::Error for mismatched models, empty or invalid
/// sequences and bad options, before anything changes.
template <class Deferred = void>
FinetuneReport finetune_model(const Transformer& fp32, Transformer& quantized,
                              std::span<const std::vector<int>> calibration, const FinetuneOptions& opt = {}) {
  constexpr std::string_view kWhere = "finetune_model";
  detail::check_finetune_options(kWhere, opt);
  const io::Llama2cConfig& c = quantized.config();
  const io::Llama2cConfig& c0 = fp32.config();
  if (c.dim != c0.dim || c.n_layers != c0.n_layers || c.vocab_size != c0.vocab_size || c.seq_len != c0.seq_len ||
      c.hidden_dim != c0.hidden_dim || c.n_heads != c0.n_heads || c.n_kv_heads != c0.n_kv_heads) {
    fail(kWhere, ": the quantized model (dim ", c.dim, ", ", c.n_layers, " layers, vocab ", c.vocab_size,
         ") is not the unquantized model's shape (dim ", c0.dim, ", ", c0.n_layers, " layers, vocab ", c0.vocab_size, ")");
  }
  if (calibration.empty()) fail(kWhere, ": no calibration sequences");
  std::vector<std::span<const int>> seqs;
  std::vector<RowMatrixXf> h0;
  for (std::size_t i = 0; i < calibration.size(); ++i) {
    if (calibration[i].empty()) fail(kWhere, ": calibration sequence ", i, " is empty");
    seqs.emplace_back(calibration[i].data(), std::min<std::size_t>(calibration[i].size(), static_cast<std::size_t>(c.seq_len)));
    h0.push_back(quantized.embed(seqs.back()));  // checks every token id
  }
  const std::size_t n = seqs.size();
  const int threads = opt.threads > 0 ? opt.threads : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  const BlockFunction<float> f(c);
  ModelWeights<float> w = model_weights<float>(quantized);
  check_model_weights(f, w, "finetune_model: the quantized model");

  // The evaluation subset (evenly spaced) and its targets, computed once.
  std::vector<std::size_t> eval;
  const std::size_t ne = std::min<std::size_t>(n, static_cast<std::size_t>(opt.eval_sequences));
  for (std::size_t e = 0; e < ne; ++e) eval.push_back(e * n / ne);
  std::vector<RowMatrixXf> eval_targets(ne);
  std::vector<double> eval_kl(ne);
  Index eval_tokens = 0;
  for (std::size_t e = 0; e < ne; ++e) eval_tokens += static_cast<Index>(seqs[eval[e]].size());

  // Gains as g₀ ⊙ m; Adam's moments per multiplier.
  const std::size_t L = w.blocks.size();
  std::vector<VectorXf> g0, m, mom1, mom2;
  for (std::size_t l = 0; l < L; ++l) {
    g0.push_back(w.blocks[l].attention_norm);
    g0.push_back(w.blocks[l].ffn_norm);
  }
  g0.push_back(w.final_norm);
  for (const auto& g : g0) {
    m.push_back(VectorXf::Ones(g.size()));
    mom1.push_back(VectorXf::Zero(g.size()));
    mom2.push_back(VectorXf::Zero(g.size()));
  }
  // The linears whose group scales are tuned, as multipliers of their quantized weights.
  std::vector<detail::ScaledLinear> scaled;
  if (opt.scales) {
    for (std::size_t l = 0; l < L; ++l) {
      for (std::size_t j = 0; j < kBlockLinears.size(); ++j) {
        const std::string name = str_cat("layers.", l, ".", kBlockLinears[j]);
        const LinearOp& op = quantized.linear(name);
        std::vector<Index> bounds = op.scale_group_bounds();
        if (bounds.size() < 2) continue;
        detail::ScaledLinear x;
        x.name = name;
        x.layer = l;
        x.slot = j;
        x.pristine = op.clone();
        x.bounds = std::move(bounds);
        x.w0 = w.blocks[l].linear[j];
        const Index n = x.w0.rows() * x.groups();
        x.m = VectorXf::Ones(n);
        x.mom1 = VectorXf::Zero(n);
        x.mom2 = VectorXf::Zero(n);
        scaled.push_back(std::move(x));
      }
    }
  }
  auto gain = [&](std::size_t k) -> VectorXf { return g0[k].cwiseProduct(m[k]); };
  auto install = [&](Transformer& model) {
    for (std::size_t l = 0; l < L; ++l) {
      model.set_norm_gain(str_cat("layers.", l, ".attention_norm"), gain(2 * l));
      model.set_norm_gain(str_cat("layers.", l, ".ffn_norm"), gain(2 * l + 1));
    }
    model.set_norm_gain("norm", gain(2 * L));
    for (const auto& x : scaled) {
      std::unique_ptr<LinearOp> op = x.pristine->clone();
      op->multiply_group_scales(std::span<const float>(x.m.data(), static_cast<std::size_t>(x.m.size())));
      (void)model.set_linear(x.name, std::move(op));
    }
  };
  kernel::parallel_for(static_cast<std::ptrdiff_t>(ne), threads, [&](std::ptrdiff_t b, std::ptrdiff_t e) {
    for (auto i = static_cast<std::size_t>(b); i < static_cast<std::size_t>(e); ++i) {
      eval_targets[i] = detail::log_softmax_rows(fp32.forward(seqs[eval[i]]));
    }
  });
  // KL of the real model (its own kernels) with the current gains, on the evaluation subset.
  auto evaluate = [&] {
    install(quantized);
    kernel::parallel_for(static_cast<std::ptrdiff_t>(ne), threads, [&](std::ptrdiff_t b, std::ptrdiff_t e) {
      for (auto i = static_cast<std::size_t>(b); i < static_cast<std::size_t>(e); ++i) {
        const RowMatrixXf lq = detail::log_softmax_rows(quantized.forward(seqs[eval[i]]));
        const RowMatrixXf& lp = eval_targets[i];
        eval_kl[i] = static_cast<double>((lp.array().exp() * (lp - lq).array()).sum());
      }
    });
    double sum = 0.0;
    for (double k : eval_kl) sum += k;
    return sum / static_cast<double>(eval_tokens);
  };

  FinetuneReport report;
  std::vector<VectorXf> best_m = m;
  double best_kl = std::numeric_limits<double>::infinity();
  auto keep_if_better = [&](int it) {
    const double kl = evaluate();
    if (it == 0) report.start_kl = kl;
    if (kl < best_kl) {
      best_kl = kl;
      best_m = m;
      for (auto& x : scaled) x.best = x.m;
      report.best_iteration = it;
    }
  };

  std::mt19937_64 rng(opt.seed);
  std::uniform_int_distribution<std::size_t> pick(0, n - 1);
  std::vector<GainGradient<float>> per_sequence(static_cast<std::size_t>(opt.batch_sequences));
  for (int it = 0; it <= opt.iterations; ++it) {
    if (it % opt.eval_every == 0 || it == opt.iterations) keep_if_better(it);
    if (it == opt.iterations) break;
    std::vector<std::size_t> batch(static_cast<std::size_t>(opt.batch_sequences));
    Index tokens = 0;
    for (auto& b : batch) {
      b = pick(rng);
      tokens += static_cast<Index>(seqs[b].size());
    }
    for (std::size_t l = 0; l < L; ++l) {
      w.blocks[l].attention_norm = gain(2 * l);
      w.blocks[l].ffn_norm = gain(2 * l + 1);
    }
    w.final_norm = gain(2 * L);
    for (const auto& x : scaled) w.blocks[x.layer].linear[x.slot] = x.weights();
    kernel::parallel_for(static_cast<std::ptrdiff_t>(batch.size()), threads, [&](std::ptrdiff_t b, std::ptrdiff_t e) {
      for (auto i = static_cast<std::size_t>(b); i < static_cast<std::size_t>(e); ++i) {
        const RowMatrixXf target = detail::log_softmax_rows(fp32.forward(seqs[batch[i]]));
        per_sequence[i] = kl_gain_gradient(f, w, h0[batch[i]], target);
      }
    });
    const double t = it + 1;
    for (std::size_t k = 0; k < g0.size(); ++k) {
      VectorXf grad = VectorXf::Zero(g0[k].size());
      for (const auto& s : per_sequence) {
        grad += k == 2 * L ? s.final_norm : (k % 2 == 0 ? s.attention_norm[k / 2] : s.ffn_norm[k / 2]);
      }
      grad = grad.cwiseProduct(g0[k]) / static_cast<float>(tokens);  // ∂L/∂m
      detail::adam_step(m[k], mom1[k], mom2[k], grad, t, opt.learning_rate, 0.5f, 1.5f);
    }
    const auto lo = static_cast<float>(1.0 - opt.scale_range), hi = static_cast<float>(1.0 + opt.scale_range);
    for (auto& x : scaled) {
      RowMatrixXf dw = RowMatrixXf::Zero(x.w0.rows(), x.w0.cols());
      for (const auto& s : per_sequence) dw += s.linear[x.layer][x.slot];
      const VectorXf grad = x.gradient(dw) / static_cast<float>(tokens);
      detail::adam_step(x.m, x.mom1, x.mom2, grad, t, opt.scale_learning_rate, lo, hi);
    }
  }
  m = best_m;
  for (auto& x : scaled) x.m = x.best;
  install(quantized);
  report.final_kl = best_kl;
  return report;
}

/// finetune_model with the gains alone (opt.scales must be off): what a GGUF file can carry
/// (quantize_model_file rewrites only its norm tensors).
template <class Deferred = void>
FinetuneReport finetune_norms(const Transformer& fp32, Transformer& quantized,
                              std::span<const std::vector<int>> calibration, const FinetuneOptions& opt = {}) {
  if (opt.scales) fail("finetune_norms: tunes the gains only; finetune_model tunes the scales too (opt.scales)");
  return finetune_model<Deferred>(fp32, quantized, calibration, opt);
}

}  // namespace qtl::model
