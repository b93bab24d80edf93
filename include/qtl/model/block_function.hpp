// qtl/model/block_function.hpp — one transformer block as a function of its weights, with its
// backward pass written out (for block-wise reconstruction: tuning a block's quantization to
// the error of the block's output rather than each layer's own, as AutoRound and OmniQuant do).
//
// The block is Transformer's (qtl/model/transformer.hpp, same notation), on the T tokens of one
// sequence at positions 0..T-1:
//   n_a = rms(h),  x_a = n_a ⊙ g_a                    rms(h)_t = h_t · r_t,  r_t = (mean(h_t²) + ε)^−½
//   q = rope(x_a Wqᵀ) / √hs,  k = rope(x_a Wkᵀ),  v = x_a Wvᵀ
//   P_j = causal_softmax(q_j k_gᵀ),  o_j = P_j v_g    (head j reads key/value head g = j / (H/G))
//   h1 = h + o Woᵀ
//   n_f = rms(h1),  x_f = n_f ⊙ g_f
//   a = silu(x_f W1ᵀ) ⊙ (x_f W3ᵀ)
//   out = h1 + a W2ᵀ
// The backward pass, from D = ∂L/∂out (each step the chain rule of the line above it):
//   ∂W2 = Dᵀ a,  ∂a = D W2,  with z = x_f W1ᵀ, u = x_f W3ᵀ, σ = sigmoid(z):
//   ∂u = ∂a ⊙ z σ,  ∂z = ∂a ⊙ u ⊙ σ (1 + z (1 − σ)),  ∂W1 = ∂zᵀ x_f,  ∂W3 = ∂uᵀ x_f
//   ∂x_f = ∂z W1 + ∂u W3,  ∂g_f = Σ_t ∂x_f ⊙ n_f,  ∂n_f = ∂x_f ⊙ g_f
//   RMSNorm: ∂h_t = r_t (∂n_t − n_t (n_t · ∂n_t) / d)
//   ∂h1 = D + rms'(∂n_f),  ∂Wo = ∂h1ᵀ o,  ∂o = ∂h1 Wo
//   attention, per head: ∂P = ∂o_j v_gᵀ,  ∂v_g += P_jᵀ ∂o_j,
//     ∂S = P_j ⊙ (∂P − rowsum(P_j ⊙ ∂P)),  ∂q_j = ∂S k_g,  ∂k_g += ∂Sᵀ q_j
//   ∂q /= √hs; RoPE is a rotation per pair, so its backward is the inverse rotation:
//     (∂a, ∂b) = (∂A cos θ + ∂B sin θ, −∂A sin θ + ∂B cos θ)
//   ∂Wq = ∂qᵀ x_a (likewise Wk, Wv),  ∂x_a = ∂q Wq + ∂k Wk + ∂v Wv,
//   ∂g_a = Σ_t ∂x_a ⊙ n_a,  ∂h = ∂h1 + rms'(∂x_a ⊙ g_a)
// Templated on the scalar: float for training, double for the finite-difference test.
// Memory: the tape holds one sequence's activations of one block (H attention maps of T x T).
#pragma once

#include <array>
#include <cmath>
#include <cstddef>
#include <string_view>
#include <vector>

#include "qtl/core/error.hpp"
#include "qtl/core/types.hpp"
#include "qtl/core/validate.hpp"
#include "qtl/io/llama2c.hpp"
#include "qtl/model/transformer.hpp"

namespace qtl::model {

template <class S>
using BlockMatrix = Eigen::Matrix<S, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
template <class S>
using BlockVector = Eigen::Matrix<S, Eigen::Dynamic, 1>;

/// The seven linears of a block, in Transformer::linear_names() order.
inline constexpr std::array<std::string_view, 7> kBlockLinears = {"wq", "wk", "wv", "wo", "w1", "w2", "w3"};

/// A block's parameters: the seven weight matrices [out x in] (kBlockLinears order) and the two
/// RMSNorm gains.
template <class S>
struct BlockWeights {
  std::array<BlockMatrix<S>, 7> linear;
  BlockVector<S> attention_norm;
  BlockVector<S> ffn_norm;
};

/// ∂L/∂ of every block parameter and of the block's input.
template <class S>
struct BlockGradient {
  std::array<BlockMatrix<S>, 7> linear;
  BlockVector<S> attention_norm;
  BlockVector<S> ffn_norm;
  BlockMatrix<S> input;
};

/// What forward() keeps for backward(): one sequence's activations in one block.
template <class S>
struct BlockTape {
  BlockVector<S> r_att, r_ffn;                 // 1 / rms per token
  BlockMatrix<S> n_att, x_att, n_ffn, x_ffn;   // normalized, and times the gain
  BlockMatrix<S> q, k, v;                      // q rotated and scaled by 1/√hs, k rotated
  std::vector<BlockMatrix<S>> probs;           // per query head, T x T (zeros above the diagonal)
  BlockMatrix<S> attended;                     // o, T x dim
  BlockMatrix<S> gate, up, sig, act;           // z, u, σ(z), silu(z) ⊙ u
};

/// Reads block `layer` of `model` (every linear dense fp32, e.g. the unquantized model).
/// Throws qtl::Error for a layer outside [0, n_layers) or a linear that is not a DenseLinear.
template <class S>
[[nodiscard]] BlockWeights<S> block_weights(const Transformer& model, int layer) {
  require_range("block_weights", "layer", layer, 0, model.config().n_layers - 1);
  BlockWeights<S> w;
  for (std::size_t i = 0; i < kBlockLinears.size(); ++i) {
    const std::string name = str_cat("layers.", layer, ".", kBlockLinears[i]);
    const auto* dense = dynamic_cast<const DenseLinear*>(&model.linear(name));
    if (dense == nullptr) fail("block_weights: '", name, "' is ", model.linear(name).describe(), ", not dense fp32");
    w.linear[i] = dense->weight().template cast<S>();
  }
  w.attention_norm = model.norm_gain(str_cat("layers.", layer, ".attention_norm")).template cast<S>();
  w.ffn_norm = model.norm_gain(str_cat("layers.", layer, ".ffn_norm")).template cast<S>();
  return w;
}

template <class S>
class BlockFunction {
 public:
  /// Throws qtl::Error for a configuration a block cannot run (see Transformer's checks).
  explicit BlockFunction(const io::Llama2cConfig& config) : c_(config) {
    if (c_.dim < 1 || c_.n_heads < 1 || c_.n_kv_heads < 1 || c_.hidden_dim < 1 || c_.seq_len < 1 ||
        c_.dim % c_.n_heads != 0 || c_.head_size() % 2 != 0 || c_.n_heads % c_.n_kv_heads != 0) {
      fail("BlockFunction: inconsistent configuration: dim ", c_.dim, ", n_heads ", c_.n_heads, ", n_kv_heads ",
           c_.n_kv_heads, ", hidden_dim ", c_.hidden_dim, ", seq_len ", c_.seq_len);
    }
    if (!(c_.norm_eps > 0.0f) || !std::isfinite(c_.norm_eps)) {
      fail("BlockFunction: norm_eps must be finite and > 0, got ", c_.norm_eps);
    }
    if (!(c_.rope_base > 1.0f) || !std::isfinite(c_.rope_base)) {
      fail("BlockFunction: rope_base must be finite and > 1, got ", c_.rope_base);
    }
    const int half = c_.head_size() / 2;
    cos_.resize(c_.seq_len, half);
    sin_.resize(c_.seq_len, half);
    for (int p = 0; p < c_.seq_len; ++p) {
      for (int i = 0; i < half; ++i) {
        // As Transformer::init_rope: the angle in double (float tables then round as the model's).
        const double theta = p * std::pow(c_.rope_base, -2.0 * i / c_.head_size());
        cos_(p, i) = static_cast<S>(std::cos(theta));
        sin_(p, i) = static_cast<S>(std::sin(theta));
      }
    }
  }

  [[nodiscard]] const io::Llama2cConfig& config() const { return c_; }

  /// Throws qtl::Error naming the parameter whose shape is wrong or that holds NaN/Inf.
  void check(const BlockWeights<S>& w) const {
    constexpr std::string_view kWhere = "BlockFunction";
    const Index d = c_.dim, kv = c_.kv_dim(), hid = c_.hidden_dim;
    const std::array<std::array<Index, 2>, 7> shapes = {{{d, d}, {kv, d}, {kv, d}, {d, d}, {hid, d}, {d, hid}, {hid, d}}};
    for (std::size_t i = 0; i < 7; ++i) {
      require_shape(kWhere, kBlockLinears[i], w.linear[i].rows(), w.linear[i].cols(), shapes[i][0], shapes[i][1]);
      if (!w.linear[i].allFinite()) fail(kWhere, ": ", kBlockLinears[i], " holds NaN or Inf");
    }
    require_size(kWhere, "attention_norm", w.attention_norm.size(), d);
    require_size(kWhere, "ffn_norm", w.ffn_norm.size(), d);
    if (!w.attention_norm.allFinite() || !w.ffn_norm.allFinite()) fail(kWhere, ": a norm gain holds NaN or Inf");
  }

  /// The block's output [T x dim] for the residual stream h [T x dim] at positions 0..T-1;
  /// fills `tape` for backward() when given. Throws qtl::Error for a wrong shape of h or T
  /// outside [1, seq_len] (the weights are the caller's to check(), once).
  [[nodiscard]] BlockMatrix<S> forward(const BlockWeights<S>& w, const BlockMatrix<S>& h, BlockTape<S>* tape = nullptr) const {
    constexpr std::string_view kWhere = "BlockFunction::forward";
    require_size(kWhere, "h.cols()", h.cols(), c_.dim);
    require_range<Index>(kWhere, "h.rows()", h.rows(), 1, c_.seq_len);
    BlockTape<S> local;
    BlockTape<S>& t = tape != nullptr ? *tape : local;
    const Index T = h.rows();
    const int hs = c_.head_size();
    const int group = c_.n_heads / c_.n_kv_heads;

    rms(h, t.r_att, t.n_att);
    t.x_att = t.n_att * w.attention_norm.asDiagonal();
    t.q.noalias() = t.x_att * w.linear[0].transpose();
    t.k.noalias() = t.x_att * w.linear[1].transpose();
    t.v.noalias() = t.x_att * w.linear[2].transpose();
    rope(t.q, false);
    rope(t.k, false);
    t.q *= S(1) / std::sqrt(static_cast<S>(hs));
    t.probs.resize(static_cast<std::size_t>(c_.n_heads));
    t.attended.resize(T, c_.dim);
    for (int head = 0; head < c_.n_heads; ++head) {
      const int g = head / group;
      BlockMatrix<S>& p = t.probs[static_cast<std::size_t>(head)];
      p.noalias() = t.q.middleCols(head * hs, hs) * t.k.middleCols(g * hs, hs).transpose();
      for (Index r = 0; r < T; ++r) {
        auto live = p.row(r).head(r + 1).array();
        live = (live - live.maxCoeff()).exp();
        live /= live.sum();
        p.row(r).tail(T - r - 1).setZero();
      }
      t.attended.middleCols(head * hs, hs).noalias() = p * t.v.middleCols(g * hs, hs);
    }
    BlockMatrix<S> h1 = h;
    h1.noalias() += t.attended * w.linear[3].transpose();

    rms(h1, t.r_ffn, t.n_ffn);
    t.x_ffn = t.n_ffn * w.ffn_norm.asDiagonal();
    t.gate.noalias() = t.x_ffn * w.linear[4].transpose();
    t.up.noalias() = t.x_ffn * w.linear[6].transpose();
    t.sig = (S(1) + (-t.gate.array()).exp()).inverse().matrix();
    t.act = (t.gate.array() * t.sig.array() * t.up.array()).matrix();
    BlockMatrix<S> out = std::move(h1);
    out.noalias() += t.act * w.linear[5].transpose();
    return out;
  }

  /// ∂L/∂(weights, gains, input) from the tape of forward(w, h) and D = ∂L/∂out [T x dim].
  [[nodiscard]] BlockGradient<S> backward(const BlockWeights<S>& w, const BlockTape<S>& t, const BlockMatrix<S>& d_out) const {
    constexpr std::string_view kWhere = "BlockFunction::backward";
    const Index T = t.n_att.rows();
    require_shape(kWhere, "d_out", d_out.rows(), d_out.cols(), T, c_.dim);
    const int hs = c_.head_size();
    const int group = c_.n_heads / c_.n_kv_heads;
    BlockGradient<S> g;

    // Feed-forward.
    g.linear[5].noalias() = d_out.transpose() * t.act;
    const BlockMatrix<S> d_act = d_out * w.linear[5];
    const BlockMatrix<S> d_up = (d_act.array() * t.gate.array() * t.sig.array()).matrix();
    const BlockMatrix<S> d_gate =
        (d_act.array() * t.up.array() * t.sig.array() * (S(1) + t.gate.array() * (S(1) - t.sig.array()))).matrix();
    g.linear[4].noalias() = d_gate.transpose() * t.x_ffn;
    g.linear[6].noalias() = d_up.transpose() * t.x_ffn;
    BlockMatrix<S> d_x = d_gate * w.linear[4];
    d_x.noalias() += d_up * w.linear[6];
    g.ffn_norm = d_x.cwiseProduct(t.n_ffn).colwise().sum().transpose();
    BlockMatrix<S> d_h1 = d_out + rms_backward(t.n_ffn, t.r_ffn, d_x * w.ffn_norm.asDiagonal());

    // Attention.
    g.linear[3].noalias() = d_h1.transpose() * t.attended;
    const BlockMatrix<S> d_o = d_h1 * w.linear[3];
    BlockMatrix<S> d_q(T, c_.dim);
    BlockMatrix<S> d_k = BlockMatrix<S>::Zero(T, c_.kv_dim());
    BlockMatrix<S> d_v = BlockMatrix<S>::Zero(T, c_.kv_dim());
    BlockMatrix<S> d_p(T, T);
    for (int head = 0; head < c_.n_heads; ++head) {
      const int kvh = head / group;
      const BlockMatrix<S>& p = t.probs[static_cast<std::size_t>(head)];
      const auto d_oj = d_o.middleCols(head * hs, hs);
      d_p.noalias() = d_oj * t.v.middleCols(kvh * hs, hs).transpose();
      d_v.middleCols(kvh * hs, hs).noalias() += p.transpose() * d_oj;
      const BlockVector<S> dot = p.cwiseProduct(d_p).rowwise().sum();
      d_p = p.cwiseProduct(d_p - dot.replicate(1, T));  // ∂S
      d_q.middleCols(head * hs, hs).noalias() = d_p * t.k.middleCols(kvh * hs, hs);
      d_k.middleCols(kvh * hs, hs).noalias() += d_p.transpose() * t.q.middleCols(head * hs, hs);
    }
    d_q *= S(1) / std::sqrt(static_cast<S>(hs));
    rope(d_q, true);
    rope(d_k, true);
    g.linear[0].noalias() = d_q.transpose() * t.x_att;
    g.linear[1].noalias() = d_k.transpose() * t.x_att;
    g.linear[2].noalias() = d_v.transpose() * t.x_att;
    d_x.noalias() = d_q * w.linear[0];
    d_x.noalias() += d_k * w.linear[1];
    d_x.noalias() += d_v * w.linear[2];
    g.attention_norm = d_x.cwiseProduct(t.n_att).colwise().sum().transpose();
    g.input = d_h1 + rms_backward(t.n_att, t.r_att, d_x * w.attention_norm.asDiagonal());
    return g;
  }

  // RMSNorm's arithmetic, public for the model's final norm (qtl/model/finetune.hpp).
  /// n = x_t · r_t per row, r_t = 1 / sqrt(mean(x_t²) + ε) (the arithmetic of Transformer's).
  void rms(const BlockMatrix<S>& x, BlockVector<S>& r, BlockMatrix<S>& n) const {
    r.resize(x.rows());
    n.resize(x.rows(), x.cols());
    const auto eps = static_cast<S>(c_.norm_eps);
    for (Index t = 0; t < x.rows(); ++t) {
      const S mean_square = x.row(t).squaredNorm() / static_cast<S>(x.cols());
      r(t) = S(1) / std::sqrt(mean_square + eps);
      n.row(t) = x.row(t) * r(t);
    }
  }

  /// ∂x from ∂n for n = rms(x): ∂x_t = r_t (∂n_t − n_t (n_t · ∂n_t) / d).
  static BlockMatrix<S> rms_backward(const BlockMatrix<S>& n, const BlockVector<S>& r, const BlockMatrix<S>& dn) {
    BlockMatrix<S> dx(n.rows(), n.cols());
    const auto d = static_cast<S>(n.cols());
    for (Index t = 0; t < n.rows(); ++t) {
      const S dot = n.row(t).dot(dn.row(t));
      dx.row(t) = r(t) * (dn.row(t) - n.row(t) * (dot / d));
    }
    return dx;
  }

 private:
  /// RoPE on m [T x heads·hs] at positions 0..T-1 (inverse = its backward: rotation by −θ).
  void rope(BlockMatrix<S>& m, bool inverse) const {
    const int hs = c_.head_size();
    const auto heads = static_cast<int>(m.cols()) / hs;
    for (Index t = 0; t < m.rows(); ++t) {
      for (int head = 0; head < heads; ++head) {
        for (int i = 0; i < hs / 2; ++i) {
          const S c = cos_(t, i);
          const S s = inverse ? -sin_(t, i) : sin_(t, i);
          S& a = m(t, head * hs + 2 * i);
          S& b = m(t, head * hs + 2 * i + 1);
          const S a0 = a;
          a = a0 * c - b * s;
          b = a0 * s + b * c;
        }
      }
    }
  }

  io::Llama2cConfig c_;
  BlockMatrix<S> cos_, sin_;  // [seq_len x hs/2]
};

}  // namespace qtl::model
