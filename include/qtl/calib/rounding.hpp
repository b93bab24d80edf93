// qtl/calib/rounding.hpp — optimizing the rounding itself on the layer's Hessian objective.
//
// Every solver here minimizes the layer's output error on the calibration inputs,
//   L(Ŵ) = tr((Ŵ − W) H_λ (Ŵ − W)ᵀ),   H_λ = H + λ I,  λ = damp_fraction · mean(diag H),
// the same damped proxy GPTQ reports (H = 2/n Σ x xᵀ, qtl/calib/hessian.hpp). Its gradient is
// 2 (Ŵ − W) H_λ: no automatic differentiation is needed.
//
// signround (uniform codes)   SignRound (Cheng et al., "Optimize Weight Rounding via Signed
//   Gradient Descent", the algorithm of Intel's AutoRound): learns one rounding offset
//   v ∈ [−½, ½] per weight and clip factors α, β ∈ [min_clip, 1] per group (the range
//   [α·lo, β·hi] of the group's min-max grid; one factor on the extreme for symmetric codes),
//     code = clamp(round(w / s + v) + z, 0, 2^b − 1),   (s, z) = params_for_range(α lo, β hi),
//   by signed gradient descent with the straight-through estimator for round(), a learning rate
//   of 1/iterations decayed linearly to 0 (AutoRound's defaults: 200 iterations). Iteration 0 is
//   plain min-max round-to-nearest and the best iterate is kept, so the result is never worse
//   than RTN on L.
//
// refine_rounding (any scalar family)   exact coordinate descent on the codes (QuantEase,
//   Behdin et al. 2023): for each weight j of a row, with e = ŵ − w and g = H_λ e, the
//   one-dimensional optimum is ŵ_j − g_j / H_λ,jj; the code nearest to it (the quantizer's own
//   encode) is taken when it lowers L. Every accepted move lowers L, so a sweep never raises it.
//   Between sweeps, for families whose decode is linear in a `scale` (and an integer zero point
//   for asymmetric uniform codes), each row's group parameters are refitted for the fixed codes by
//   least squares on H_λ (rounded to fp16 / an integer zero), kept only if L falls. Start it
//   from any solver's result: RTN, GPTQ (the GPTQ + coordinate-descent refinement of QuantEase)
//   or SignRound.
//
// Cost: SignRound runs one [rows x cols] · [cols x cols] float product per iteration; a sweep of
// coordinate descent costs rows · cols² multiply-adds. Both are fine for the small matrices of
// the bundled model and for a 4096-wide layer take minutes, not seconds.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string_view>
#include <type_traits>
#include <vector>

#include <Eigen/Cholesky>
#include <Eigen/Core>

#include "qtl/core/error.hpp"
#include "qtl/core/types.hpp"
#include "qtl/core/validate.hpp"
#include "qtl/detail/fp16.hpp"
#include "qtl/quant/concepts.hpp"
#include "qtl/quant/granularity.hpp"
#include "qtl/quant/quantize_matrix.hpp"
#include "qtl/quant/uniform.hpp"

namespace qtl::calib {

struct SignRoundOptions {
  int iterations = 200;          ///< AutoRound's default; 0 returns min-max RTN
  double learning_rate = 0.0;    ///< 0: 1 / iterations (AutoRound), decayed linearly to 0
  bool learn_clip = true;        ///< learn α, β per group besides the offsets
  float min_clip = 0.5f;         ///< α, β ∈ [min_clip, 1]
  double damp_fraction = 0.01;   ///< λ of H_λ, a fraction of mean(diag H)
};

struct RefineOptions {
  int sweeps = 0;                ///< coordinate-descent sweeps over every weight; 0 = off
  bool refit_params = true;      ///< least-squares group parameters between sweeps
  double damp_fraction = 0.01;   ///< λ of H_λ, a fraction of mean(diag H)
};

struct RoundingReport {
  double start_loss = 0.0;       ///< L of the starting point (min-max RTN, or the given matrix)
  double final_loss = 0.0;       ///< L of the result; never above start_loss
  int best_iteration = 0;        ///< SignRound: the iterate kept (0 = the start)
  int sweeps = 0;                ///< refine: sweeps run (stops early when nothing moves)
  std::int64_t moves = 0;        ///< refine: codes changed in total
  int refits_kept = 0;           ///< refine: parameter refits that lowered L
};

template <ScalarQuantizer Q>
struct RoundingResult {
  QuantizedMatrix<Q> matrix;
  RoundingReport report;
};

namespace detail {

/// H + λ I with λ = fraction · mean(diag H); a zero diagonal entry (a dead input) reads as
/// mean(diag H) so every weight keeps a positive curvature. Checks shape and finiteness.
[[nodiscard]] inline Eigen::MatrixXd damped_objective_hessian(std::string_view where, const Eigen::MatrixXd& h,
                                                              Index cols, double damp_fraction) {
  require_shape(where, "hessian", h.rows(), h.cols(), cols, cols);
  require_finite(where, "hessian", h);
  if (!(damp_fraction >= 0.0 && damp_fraction <= 10.0)) {
    fail(where, ": damp_fraction must be in [0, 10], got ", damp_fraction);
  }
  const double mean = h.diagonal().mean();
  Eigen::MatrixXd hd = h;
  const double fill = mean > 0.0 ? mean : 1.0;
  for (Index i = 0; i < hd.rows(); ++i) {
    if (!(hd(i, i) > 0.0)) hd(i, i) = fill;
    hd(i, i) += damp_fraction * fill;
  }
  return hd;
}

/// L = Σ_r (ŵ_r − w_r)ᵀ H (ŵ_r − w_r) for Ŵ given row-major (rows x cols).
[[nodiscard]] inline double layer_loss(const RowMatrixXd& e, const Eigen::MatrixXd& h) {
  return (e * h).cwiseProduct(e).sum();
}

}  // namespace detail

/// tr((Ŵ − W) H_λ (Ŵ − W)ᵀ) of a quantized matrix against W, H_λ as the solvers here damp it.
template <ScalarQuantizer Q>
[[nodiscard]] double rounding_loss(const QuantizedMatrix<Q>& m, MatrixRef w, const Eigen::MatrixXd& h,
                                   double damp_fraction = 0.01) {
  constexpr std::string_view kWhere = "rounding_loss";
  require_shape(kWhere, "weights", w.rows(), w.cols(), m.rows(), m.cols());
  const Eigen::MatrixXd hd = detail::damped_objective_hessian(kWhere, h, w.cols(), damp_fraction);
  const RowMatrixXd e = dequantize(m).template cast<double>() - w.cast<double>();
  return detail::layer_loss(e, hd);
}

namespace detail {

/// SignRound's state for one matrix of uniform codes: a rounding offset v ∈ [−½, ½] per weight
/// and clip factors α, β ∈ [min_clip, 1] per parameter set, over the min-max range of each set.
/// forward() rounds W with them (the codes, Ŵ, and the straight-through derivatives of Ŵ with
/// respect to v, α and β); step(G, lr) takes one signed-gradient step from G = ∂L/∂Ŵ (any
/// positive multiple of it: only signs are used). The layer solver below feeds it the gradient
/// of the layer objective; a block-wise solver (qtl/model/block_reconstruction.hpp) feeds it the
/// gradient of the block's output error.
template <int Bits, Mode M>
class SignRoundState {
 public:
  using Q = Uniform<Bits, M>;
  using Params = typename Q::Params;

  /// W must be finite and nonempty (checked by the callers).
  SignRoundState(const Q& q, const Granularity& granularity, MatrixRef w, std::string_view where) : w_(w) {
    cur_.quantizer = q;
    cur_.layout = make_group_layout(granularity, w.rows(), w.cols(), where);
    const GroupLayout& L = cur_.layout;
    const Index rows = L.rows, cols = L.cols, sets = L.num_param_sets();
    cur_.codes.resize(static_cast<std::size_t>(rows * cols));
    cur_.params.resize(static_cast<std::size_t>(sets));
    // Each parameter set's min-max range (0 included for asymmetric codes, as params_for_range).
    lo_.assign(static_cast<std::size_t>(sets), std::numeric_limits<float>::infinity());
    hi_.assign(static_cast<std::size_t>(sets), -std::numeric_limits<float>::infinity());
    for (Index r = 0; r < rows; ++r) {
      for (Index c = 0; c < cols; ++c) {
        const auto k = static_cast<std::size_t>(L.param_index(r, c));
        lo_[k] = std::min(lo_[k], w(r, c));
        hi_[k] = std::max(hi_[k], w(r, c));
      }
    }
    alpha_.assign(static_cast<std::size_t>(sets), 1.0f);
    beta_ = alpha_;
    v_ = RowMatrixXf::Zero(rows, cols);
    v_lo_ = RowMatrixXf::Constant(rows, cols, -0.5f);
    v_hi_ = RowMatrixXf::Constant(rows, cols, 0.5f);
    allocate();
  }

  /// Starts from another solver's codes and parameters (e.g. GPTQ's) instead of min-max RTN:
  /// each set's range is the one its parameters span (decode of codes 0 and 2^b − 1), the
  /// offsets start where round(w / s + v) gives the start's codes, and move within ±½ of there.
  /// forward() before any step() reproduces `start`. Throws qtl::Error if W's shape differs.
  SignRoundState(const QuantizedMatrix<Q>& start, MatrixRef w, std::string_view where) : w_(w), cur_(start) {
    const GroupLayout& L = cur_.layout;
    require_shape(where, "weights", w.rows(), w.cols(), L.rows, L.cols);
    const Index rows = L.rows, cols = L.cols, sets = L.num_param_sets();
    lo_.resize(static_cast<std::size_t>(sets));
    hi_.resize(static_cast<std::size_t>(sets));
    for (Index k = 0; k < sets; ++k) {
      const Params& p = cur_.params[static_cast<std::size_t>(k)];
      lo_[static_cast<std::size_t>(k)] = Q::decode(p, 0);
      hi_[static_cast<std::size_t>(k)] = Q::decode(p, static_cast<std::uint8_t>(Q::kMaxCode));
    }
    alpha_.assign(static_cast<std::size_t>(sets), 1.0f);
    beta_ = alpha_;
    v_.resize(rows, cols);
    for (Index r = 0; r < rows; ++r) {
      for (Index c = 0; c < cols; ++c) {
        const Params& p = cur_.params[static_cast<std::size_t>(L.param_index(r, c))];
        const float code = cur_.codes[static_cast<std::size_t>(r * cols + c)];
        v_(r, c) = (code - p.zero) - w(r, c) / p.scale;
      }
    }
    v_lo_ = v_.array() - 0.5f;
    v_hi_ = v_.array() + 0.5f;
    allocate();
  }

 private:
  void allocate() {
    const Index rows = cur_.layout.rows, cols = cur_.layout.cols, sets = cur_.layout.num_param_sets();
    what_.resize(rows, cols);
    dalpha_.resize(rows, cols);
    dbeta_.resize(rows, cols);
    inrange_.resize(rows, cols);
    ga_.resize(static_cast<std::size_t>(sets));
    gb_.resize(static_cast<std::size_t>(sets));
  }

 public:

  /// Params, codes and Ŵ for the current (α, β, v), and the STE derivatives.
  void forward() {
    const GroupLayout& L = cur_.layout;
    const Index rows = L.rows, cols = L.cols, sets = L.num_param_sets();
    for (Index k = 0; k < sets; ++k) cur_.params[static_cast<std::size_t>(k)] = params_of(static_cast<std::size_t>(k));
    for (Index r = 0; r < rows; ++r) {
      for (Index c = 0; c < cols; ++c) {
        const auto k = static_cast<std::size_t>(L.param_index(r, c));
        const Params& p = cur_.params[k];
        const float u = w_(r, c) / p.scale + v_(r, c);
        const float ru = std::nearbyint(u);
        const float qc = ru + p.zero;
        const float clamped = std::clamp(qc, 0.0f, static_cast<float>(Q::kMaxCode));
        cur_.codes[static_cast<std::size_t>(r * cols + c)] = static_cast<std::uint8_t>(clamped);
        what_(r, c) = Q::decode(p, static_cast<std::uint8_t>(clamped));
        const bool in = (clamped == qc);
        inrange_(r, c) = in ? p.scale : 0.0f;  // dŵ/dv
        if constexpr (Q::kSymmetric) {
          // ŵ = s (code − Z), s ∝ α: dŵ/dα = (ds/dα) · (round(u) − w/s) in range, (code − Z) clamped.
          const float ds = p.scale / std::max(alpha_[k], 1e-6f);
          dalpha_(r, c) = ds * (in ? (ru - w_(r, c) / p.scale) : (clamped - p.zero));
          dbeta_(r, c) = 0.0f;
        } else {
          // s = (β hi − α lo) / M, z = −α lo / s: in range ŵ = s round(u), so dŵ/ds = round(u) − w/s;
          // clamped at 0, ŵ = −s z = α lo; clamped at M, ŵ = s (M − z) = β hi.
          const float m = static_cast<float>(Q::kMaxCode);
          const float res = ru - w_(r, c) / p.scale;
          if (in) {
            dalpha_(r, c) = res * (-lo_[k] / m);
            dbeta_(r, c) = res * (hi_[k] / m);
          } else if (clamped == 0.0f) {
            dalpha_(r, c) = lo_[k];
            dbeta_(r, c) = 0.0f;
          } else {
            dalpha_(r, c) = 0.0f;
            dbeta_(r, c) = hi_[k];
          }
        }
      }
    }
  }

  /// One signed step of size lr against G (rows x cols, a positive multiple of ∂L/∂Ŵ at the
  /// last forward()); α and β move only with learn_clip, and stay in [min_clip, 1].
  void step(const RowMatrixXf& g, float lr, bool learn_clip, float min_clip) {
    const GroupLayout& L = cur_.layout;
    std::fill(ga_.begin(), ga_.end(), 0.0);
    std::fill(gb_.begin(), gb_.end(), 0.0);
    for (Index r = 0; r < L.rows; ++r) {
      for (Index c = 0; c < L.cols; ++c) {
        const float gv = g(r, c) * inrange_(r, c);
        if (gv > 0.0f) v_(r, c) = std::max(v_(r, c) - lr, v_lo_(r, c));
        if (gv < 0.0f) v_(r, c) = std::min(v_(r, c) + lr, v_hi_(r, c));
        const auto k = static_cast<std::size_t>(L.param_index(r, c));
        ga_[k] += static_cast<double>(g(r, c)) * dalpha_(r, c);
        gb_[k] += static_cast<double>(g(r, c)) * dbeta_(r, c);
      }
    }
    if (learn_clip) {
      for (std::size_t k = 0; k < ga_.size(); ++k) {
        if (ga_[k] > 0.0) alpha_[k] = std::max(alpha_[k] - lr, min_clip);
        if (ga_[k] < 0.0) alpha_[k] = std::min(alpha_[k] + lr, 1.0f);
        if (gb_[k] > 0.0) beta_[k] = std::max(beta_[k] - lr, min_clip);
        if (gb_[k] < 0.0) beta_[k] = std::min(beta_[k] + lr, 1.0f);
      }
    }
  }

  /// The codes and parameters of the last forward(), and their dequantized weights.
  [[nodiscard]] const QuantizedMatrix<Q>& matrix() const { return cur_; }
  [[nodiscard]] const RowMatrixXf& dequantized() const { return what_; }
  [[nodiscard]] const RowMatrixXf& weights() const { return w_; }

 private:
  Params params_of(std::size_t k) const {
    if constexpr (Q::kSymmetric) {
      return Q::params_for_range(alpha_[k] * lo_[k], alpha_[k] * hi_[k]);
    } else {
      return Q::params_for_range(alpha_[k] * lo_[k], beta_[k] * hi_[k]);
    }
  }

  RowMatrixXf w_;  // a copy: the state may outlive the caller's matrix
  QuantizedMatrix<Q> cur_;
  std::vector<float> lo_, hi_, alpha_, beta_;
  RowMatrixXf v_, v_lo_, v_hi_, what_;  // the offsets and their bounds
  RowMatrixXf dalpha_, dbeta_, inrange_;  // the straight-through derivatives of ŵ, per weight
  std::vector<double> ga_, gb_;
};

}  // namespace detail

/// SignRound on the layer objective for uniform codes (see the header comment).
template <int Bits, Mode M>
[[nodiscard]] RoundingResult<Uniform<Bits, M>> signround(const Uniform<Bits, M>& q, const Granularity& granularity,
                                                         MatrixRef w, const Eigen::MatrixXd& h,
                                                         const SignRoundOptions& opt = {}) {
  using Q = Uniform<Bits, M>;
  constexpr std::string_view kWhere = "signround";
  require_nonempty(kWhere, "weights", w.rows(), w.cols());
  require_finite(kWhere, "weights", w);
  if (opt.iterations < 0 || opt.iterations > 100000) fail(kWhere, ": iterations must be in [0, 100000], got ", opt.iterations);
  if (!(opt.learning_rate >= 0.0 && opt.learning_rate <= 1.0)) {
    fail(kWhere, ": learning_rate must be in [0, 1] (0 = 1/iterations), got ", opt.learning_rate);
  }
  if (!(opt.min_clip >= 0.05f && opt.min_clip <= 1.0f)) fail(kWhere, ": min_clip must be in [0.05, 1], got ", opt.min_clip);
  const Eigen::MatrixXd hd = detail::damped_objective_hessian(kWhere, h, w.cols(), opt.damp_fraction);
  const Eigen::MatrixXf hf = hd.cast<float>();

  detail::SignRoundState<Bits, M> state(q, granularity, w, kWhere);
  const Index rows = w.rows(), cols = w.cols();
  RoundingResult<Q> best;
  double best_loss = std::numeric_limits<double>::infinity();
  const int iters = opt.iterations;
  const double lr0 = opt.learning_rate > 0.0 ? opt.learning_rate : (iters > 0 ? 1.0 / iters : 0.0);
  RowMatrixXf e(rows, cols), g(rows, cols);
  for (int it = 0; it <= iters; ++it) {
    state.forward();
    e = state.dequantized() - w;
    g.noalias() = e * hf;  // ½ ∂L/∂Ŵ
    const double loss = static_cast<double>(g.cwiseProduct(e).sum());
    if (it == 0) best.report.start_loss = loss;
    if (loss < best_loss) {
      best_loss = loss;
      best.matrix = state.matrix();
      best.report.best_iteration = it;
    }
    if (it == iters) break;
    const auto lr = static_cast<float>(lr0 * (1.0 - static_cast<double>(it) / iters));
    state.step(g, lr, opt.learn_clip, opt.min_clip);
  }
  // Report the kept matrix's loss in double, as rounding_loss computes it.
  const RowMatrixXd eb = dequantize(best.matrix).template cast<double>() - w.cast<double>();
  best.report.final_loss = detail::layer_loss(eb, hd);
  {
    // The start in double too, so start_loss and final_loss compare like with like.
    const QuantizedMatrix<Q> rtn = quantize_matrix(q, granularity, w);
    const RowMatrixXd e0 = dequantize(rtn).template cast<double>() - w.cast<double>();
    best.report.start_loss = detail::layer_loss(e0, hd);
    if (best.report.final_loss > best.report.start_loss) {  // float noise in the search: keep the start
      best.matrix = rtn;
      best.report.final_loss = best.report.start_loss;
      best.report.best_iteration = 0;
    }
  }
  return best;
}

namespace detail {

/// Refits one row's group parameters for its fixed codes by least squares on H (kept by the
/// caller only if L falls). Returns false when the family has no linear parameterization.
template <class Q>
inline constexpr bool kIsUniform = false;
template <int Bits, Mode M>
inline constexpr bool kIsUniform<Uniform<Bits, M>> = true;

template <class Q>
inline constexpr bool kAffineUniform = false;
template <int Bits>
inline constexpr bool kAffineUniform<Uniform<Bits, Mode::Asymmetric>> = true;

/// Least-squares group parameters of row r for its fixed codes, on H: written to `out` (the
/// row's parameter sets, in group order); the caller keeps them only if L falls. False when the
/// family has no linear parameterization (no `scale`) or the system is singular.
template <ScalarQuantizer Q>
bool refit_row_params(const QuantizedMatrix<Q>& m, Index r, const Eigen::VectorXd& w, const Eigen::MatrixXd& hd,
                      std::vector<typename Q::Params>& out) {
  using Params = typename Q::Params;
  if constexpr (!requires(Params p) { p.scale; }) {
    return false;
  } else {
    const GroupLayout& L = m.layout;
    const Index cols = L.cols, groups = L.groups_per_row();
    constexpr bool kAffine = kAffineUniform<Q>;
    const Index per = kAffine ? 2 : 1;
    // ŵ_j = a_g φ(c_j) (+ b_g): A [cols x per·groups], θ = (Aᵀ H A)⁻¹ Aᵀ H w.
    Eigen::MatrixXd a = Eigen::MatrixXd::Zero(cols, per * groups);
    for (Index c = 0; c < cols; ++c) {
      const Index g = c / L.group_size;
      Params unit = m.params[static_cast<std::size_t>(r * groups + g)];
      unit.scale = 1.0f;
      a(c, per * g) = m.quantizer.decode(unit, m.code(r, c));
      if constexpr (kAffine) {
        a(c, per * g) = static_cast<double>(m.code(r, c));
        a(c, per * g + 1) = 1.0;
      }
    }
    const Eigen::MatrixXd ha = hd * a;
    Eigen::MatrixXd n = a.transpose() * ha;
    n.diagonal().array() += 1e-12 * std::max(1.0, n.diagonal().maxCoeff());
    const Eigen::VectorXd theta = n.ldlt().solve(ha.transpose() * w);
    if (!theta.allFinite()) return false;
    out.assign(m.params.begin() + r * groups, m.params.begin() + (r + 1) * groups);
    for (Index g = 0; g < groups; ++g) {
      Params p = out[static_cast<std::size_t>(g)];
      const double s = theta[per * g];
      if (!(std::fabs(s) > 0.0) || !std::isfinite(s)) continue;
      const float hs = qtl::detail::round_to_half(static_cast<float>(s));
      if (!(std::fabs(hs) > 0.0f) || !std::isfinite(hs)) continue;
      p.scale = hs;
      if constexpr (kAffine) {
        // ŵ = s code + b = s (code − z): z = −b / s, an integer in [0, 2^b − 1].
        const double z = std::nearbyint(-theta[per * g + 1] / hs);
        p.zero = static_cast<float>(std::clamp(z, 0.0, static_cast<double>(Q::kMaxCode)));
      }
      out[static_cast<std::size_t>(g)] = p;
    }
    return true;
  }
}

}  // namespace detail

/// Coordinate descent on the codes of `start` (any scalar family, per-row or per-group
/// parameters) with least-squares parameter refits between sweeps; see the header comment.
template <ScalarQuantizer Q>
[[nodiscard]] RoundingResult<Q> refine_rounding(QuantizedMatrix<Q> start, MatrixRef w, const Eigen::MatrixXd& h,
                                                const RefineOptions& opt = {}) {
  constexpr std::string_view kWhere = "refine_rounding";
  require_shape(kWhere, "weights", w.rows(), w.cols(), start.rows(), start.cols());
  require_finite(kWhere, "weights", w);
  if (opt.sweeps < 0 || opt.sweeps > 1000) fail(kWhere, ": sweeps must be in [0, 1000], got ", opt.sweeps);
  if (start.layout.per_tensor && opt.sweeps > 0) {
    fail(kWhere, ": per-tensor parameters are not supported (rows are refined independently); use per-row or groups");
  }
  const Eigen::MatrixXd hd = detail::damped_objective_hessian(kWhere, h, w.cols(), opt.damp_fraction);
  RoundingResult<Q> res;
  res.matrix = std::move(start);
  QuantizedMatrix<Q>& m = res.matrix;
  const Index rows = m.rows(), cols = m.cols(), groups = m.layout.groups_per_row();
  const Q& q = m.quantizer;

  double total_start = 0.0, total_end = 0.0;
  std::int64_t moves = 0;
  int sweeps_run = 0, refits = 0;
#if defined(_OPENMP)
#pragma omp parallel for schedule(dynamic, 8) reduction(+ : total_start, total_end, moves, refits) \
    reduction(max : sweeps_run) if (rows >= 64)
#endif
  for (Index r = 0; r < rows; ++r) {
    const Eigen::VectorXd wr = w.row(r).transpose().cast<double>();
    Eigen::VectorXd hat(cols);
    for (Index c = 0; c < cols; ++c) hat[c] = m.value(r, c);
    Eigen::VectorXd e = hat - wr;
    Eigen::VectorXd g = hd * e;
    double loss = e.dot(g);
    total_start += loss;
    int row_sweeps = 0;
    for (int s = 0; s < opt.sweeps; ++s) {
      ++row_sweeps;
      std::int64_t moved = 0;
      for (Index j = 0; j < cols; ++j) {
        const auto& p = m.params_at(r, j);
        const double target = hat[j] - g[j] / hd(j, j);
        const std::uint8_t code = q.encode(p, static_cast<float>(target));
        const double nv = q.decode(p, code);
        const double d = nv - hat[j];
        if (d == 0.0) continue;
        const double delta = 2.0 * d * g[j] + d * d * hd(j, j);
        if (!(delta < 0.0)) continue;
        m.codes[static_cast<std::size_t>(r * cols + j)] = code;
        hat[j] = nv;
        g.noalias() += d * hd.col(j);
        loss += delta;
        ++moved;
      }
      moves += moved;
      bool refit_kept = false;
      if (opt.refit_params) {
        std::vector<typename Q::Params> row;
        if (detail::refit_row_params(m, r, wr, hd, row)) {
          Eigen::VectorXd th(cols);
          for (Index c = 0; c < cols; ++c) {
            th[c] = q.decode(row[static_cast<std::size_t>(c / m.layout.group_size)], m.code(r, c));
          }
          const Eigen::VectorXd te = th - wr;
          const Eigen::VectorXd tg = hd * te;
          const double tl = te.dot(tg);
          if (tl < loss) {
            for (Index g2 = 0; g2 < groups; ++g2) {
              m.params[static_cast<std::size_t>(r * groups + g2)] = row[static_cast<std::size_t>(g2)];
            }
            hat = th;
            g = tg;
            loss = tl;
            refit_kept = true;
            ++refits;
          }
        }
      }
      // Recompute from scratch: the incremental updates drift in the last bits.
      e = hat - wr;
      g = hd * e;
      loss = e.dot(g);
      if (moved == 0 && !refit_kept) break;
    }
    total_end += loss;
    sweeps_run = std::max(sweeps_run, row_sweeps);
  }
  res.report.start_loss = total_start;
  res.report.final_loss = total_end;
  res.report.sweeps = sweeps_run;
  res.report.moves = moves;
  res.report.refits_kept = refits;
  return res;
}

}  // namespace qtl::calib
