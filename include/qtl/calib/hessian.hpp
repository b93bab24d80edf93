// qtl/calib/hessian.hpp — streaming second-order statistics of a linear layer's inputs.
//
// For activations X [n tokens x in] (one token per row) seen in any number of batches:
//   H        = 2/n · Σ_t x_t x_tᵀ            (GPTQ's Hessian of ||W X^T - Ŵ X^T||², gptq.py add_batch)
//   mean_abs = 1/n · Σ_t |x_t|                (AWQ's per-input-channel activation magnitude)
//   mean_sq  = 1/n · Σ_t x_t²  = diag(H) / 2  (llama.cpp imatrix importance)
//   abs_max  = max_t |x_t|                    (SmoothQuant's activation range)
// Σ x xᵀ is accumulated in double. Each batch is multiplied in float in chunks of at most
// `chunk_tokens` tokens (a symmetric rank-k update, half a GEMM) and the chunk's product is
// added to the double sum, so the float rounding never grows with the number of tokens while the
// product runs at float GEMM speed. Partial statistics merge exactly (the sums add), so
// calibration can be split across batches, threads or machines.
//
// A column whose diagonal stays 0 (an input that was always 0) is "dead": GPTQ sets its H_ii to 1
// and its weights to 0 (gptq.py), which changes no output.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string_view>
#include <vector>

#include <Eigen/Cholesky>

#include "qtl/core/error.hpp"
#include "qtl/core/types.hpp"
#include "qtl/core/validate.hpp"

namespace qtl::calib {

/// A snapshot of a layer's input statistics, as values the transforms can map (a rotation or a
/// channel scaling of the inputs maps H, mean|x| and max|x| to those of the new inputs) and the
/// solvers read. `hessian` is H = 2/n Σ x xᵀ.
struct LayerStatistics {
  Eigen::MatrixXd hessian;
  VectorXd mean_abs;
  VectorXf abs_max;
  std::int64_t tokens = 0;
  /// False after a rotation: mean|x| and max|x| of rotated inputs are not functions of the
  /// statistics kept, and are replaced by sqrt(mean x²) (= sqrt(diag(H)/2)) and the bound
  /// max|x'_i| <= Σ_j |R_ji| max|x_j|.
  bool exact_channel_stats = true;
  /// Empty, or C = 2/n Σ x̃ xᵀ: x̃ the layer's input in the partly quantized model (the one H
  /// describes), x the unquantized model's input at the same token (asymmetric calibration,
  /// asymmetric_target below). Transforms do not map it: targets are formed before them.
  Eigen::MatrixXd cross;

  [[nodiscard]] Index in_features() const noexcept { return hessian.rows(); }
};

/// The weights that best reproduce the unquantized model's outputs from the inputs the layer
/// actually receives (GPTAQ's asymmetric calibration, Li et al. 2025, as a change of target):
///   W* = argmin_V ‖X̃ Vᵀ − X Wᵀ‖² + λ‖V − W‖² = (W Cᵀ + λ W)(H + λ I)⁻¹,
/// with H = 2/n X̃ᵀX̃, C = 2/n X̃ᵀX, λ = damp_fraction · mean(diag H). Because W* solves the
/// least-squares problem, ‖X̃ Ŵᵀ − X Wᵀ‖² = ‖X̃ (Ŵ − W*)ᵀ‖² + const (λ = 0): any solver run on
/// (W*, H) minimizes the error against the unquantized model's outputs, not the layer's own.
/// With x̃ = x (nothing quantized upstream) W* = W.
[[nodiscard]] inline RowMatrixXf asymmetric_target(MatrixRef w, const Eigen::MatrixXd& hessian,
                                                   const Eigen::MatrixXd& cross, double damp_fraction = 0.01) {
  constexpr std::string_view kWhere = "asymmetric_target";
  const Index n = w.cols();
  require_shape(kWhere, "hessian", hessian.rows(), hessian.cols(), n, n);
  require_shape(kWhere, "cross", cross.rows(), cross.cols(), n, n);
  require_finite(kWhere, "weights", w);
  require_finite(kWhere, "hessian", hessian);
  require_finite(kWhere, "cross", cross);
  if (!(damp_fraction > 0.0 && damp_fraction <= 10.0)) {
    fail(kWhere, ": damp_fraction must be in (0, 10], got ", damp_fraction);
  }
  const double mean = hessian.diagonal().mean();
  const double lambda = damp_fraction * (mean > 0.0 ? mean : 1.0);
  Eigen::MatrixXd a = hessian;
  a.diagonal().array() += lambda;
  const Eigen::MatrixXd wt = w.transpose().cast<double>();        // [in x out]
  const Eigen::MatrixXd rhs = cross * wt + lambda * wt;           // (W Cᵀ + λW)ᵀ
  const Eigen::LLT<Eigen::MatrixXd> llt(a);
  if (llt.info() != Eigen::Success) fail(kWhere, ": H + λI is not positive definite (λ = ", lambda, ")");
  const Eigen::MatrixXd target = llt.solve(rhs);
  if (!target.allFinite()) fail(kWhere, ": the target weights are not finite");
  return target.transpose().cast<float>();
}

class HessianAccumulator {
 public:
  /// Tokens per float product before it is added to the double sum.
  static constexpr Index kDefaultChunkTokens = 512;

  explicit HessianAccumulator(Index in_features, Index chunk_tokens = kDefaultChunkTokens)
      : in_(in_features), chunk_(chunk_tokens) {
    if (in_features < 1) fail("HessianAccumulator: in_features must be >= 1, got ", in_features);
    if (chunk_tokens < 1) fail("HessianAccumulator: chunk_tokens must be >= 1, got ", chunk_tokens);
    sum_xxt_.setZero(in_, in_);
    sum_abs_.setZero(in_);
    sum_sq_.setZero(in_);
    abs_max_.setZero(in_);
    scratch_.resize(in_, in_);
  }

  /// Adds a batch of activations [tokens x in_features]. Throws qtl::Error (naming the first
  /// bad entry) on NaN/Inf or a wrong width, before changing any statistic.
  void add_batch(MatrixRef x) {
    constexpr std::string_view kWhere = "HessianAccumulator::add_batch";
    if (x.cols() != in_) {
      fail(kWhere, ": activations have ", x.cols(), " columns, expected in_features = ", in_);
    }
    if (x.rows() == 0) return;
    if (!x.allFinite()) require_finite(kWhere, "activations", x);
    for (Index t0 = 0; t0 < x.rows(); t0 += chunk_) {
      const Index nt = std::min(chunk_, x.rows() - t0);
      const auto chunk = x.middleRows(t0, nt);
      // Lower triangle of Xᵀ X (float), added to the double lower triangle.
      scratch_.setZero();
      scratch_.selfadjointView<Eigen::Lower>().rankUpdate(chunk.transpose());
      sum_xxt_.triangularView<Eigen::Lower>() += scratch_.cast<double>();
      const Eigen::ArrayXXf a = chunk.array().abs();
      sum_abs_ += a.colwise().sum().transpose().cast<double>().matrix();
      sum_sq_ += chunk.array().square().colwise().sum().transpose().cast<double>().matrix();
      abs_max_ = abs_max_.cwiseMax(a.colwise().maxCoeff().transpose().matrix());
    }
    tokens_ += x.rows();
  }

  /// Adds another accumulator's statistics (same in_features): the result equals one
  /// accumulator that saw both streams.
  void merge(const HessianAccumulator& other) {
    if (other.in_ != in_) {
      fail("HessianAccumulator::merge: other has in_features = ", other.in_, ", expected ", in_);
    }
    sum_xxt_.triangularView<Eigen::Lower>() += other.sum_xxt_;
    sum_abs_ += other.sum_abs_;
    sum_sq_ += other.sum_sq_;
    abs_max_ = abs_max_.cwiseMax(other.abs_max_);
    tokens_ += other.tokens_;
  }

  [[nodiscard]] Index in_features() const noexcept { return in_; }
  [[nodiscard]] std::int64_t tokens() const noexcept { return tokens_; }

  /// H = 2/n Σ x xᵀ, symmetric, in double. Throws when no token was added.
  [[nodiscard]] Eigen::MatrixXd hessian() const {
    require_tokens("hessian");
    Eigen::MatrixXd h = sum_xxt_.selfadjointView<Eigen::Lower>();
    h *= 2.0 / static_cast<double>(tokens_);
    return h;
  }
  /// Σ x xᵀ (not normalized), symmetric, in double: ||D Xᵀ||_F² = tr(D · this · Dᵀ).
  [[nodiscard]] Eigen::MatrixXd sum_outer() const {
    return sum_xxt_.selfadjointView<Eigen::Lower>();
  }
  [[nodiscard]] VectorXd mean_abs() const {
    require_tokens("mean_abs");
    return sum_abs_ / static_cast<double>(tokens_);
  }
  [[nodiscard]] VectorXd mean_square() const {
    require_tokens("mean_square");
    return sum_sq_ / static_cast<double>(tokens_);
  }
  [[nodiscard]] VectorXf abs_max() const { return abs_max_; }

  /// Everything the transforms and solvers need, as a value.
  [[nodiscard]] LayerStatistics statistics() const {
    LayerStatistics s;
    s.hessian = hessian();
    s.mean_abs = mean_abs();
    s.abs_max = abs_max();
    s.tokens = tokens_;
    return s;
  }

  /// Inputs that were 0 in every token so far (diag(H) == 0).
  [[nodiscard]] std::vector<Index> dead_columns() const {
    std::vector<Index> dead;
    for (Index i = 0; i < in_; ++i) {
      if (sum_xxt_(i, i) == 0.0) dead.push_back(i);
    }
    return dead;
  }

 private:
  void require_tokens(std::string_view what) const {
    if (tokens_ == 0) fail("HessianAccumulator::", what, ": no activations were added");
  }

  Index in_;
  Index chunk_;
  std::int64_t tokens_ = 0;
  Eigen::MatrixXd sum_xxt_;  ///< lower triangle of Σ x xᵀ
  VectorXd sum_abs_;
  VectorXd sum_sq_;
  VectorXf abs_max_;
  Eigen::MatrixXf scratch_;  ///< one chunk's float product (allocated once)
};

}  // namespace qtl::calib
