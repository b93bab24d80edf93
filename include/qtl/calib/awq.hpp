// qtl/calib/awq.hpp — activation-aware weight quantization (Lin et al., MLSys'24;
// mit-han-lab/llm-awq auto_scale.py / auto_clip.py, AutoAWQ's duo scaling).
//
// Scale search. With x̄ = mean |x| per input channel, for α in {0, 1/G, ..., 1} (G = grid = 20):
//   s = max(x̄^α, 1e-4)                                        (plain)
//   s = max(x̄^α / (w̄^(1−α) + 1e-4), 1e-4)                     (duo; w̄ below)
//   s ← s / sqrt(max(s) · min(s))                              (normalized around 1)
// The weights W diag(s) are quantized (Q), the layer is evaluated as Q(W diag(s)) diag(1/s), and
// the α with the lowest output error on the calibration tokens wins:
//   loss(α) = Σ_layers ||X (W − Q(W diag(s)) diag(1/s))ᵀ||² = (n/2) Σ_rows dᵀ H d,
// computed exactly from the Hessian H = 2/n XᵀX, so no tokens need to be kept. α = 0 is plain
// RTN (s = 1), so the chosen scales never do worse than RTN on the calibration data. Several
// layers that read the same input (q/k/v, or w1/w3) share one s, as they must to fold it into the
// one op producing x; llm-awq scores the whole attention/MLP block's output there, qtl the sum of
// the layers' outputs. w̄ (duo): per input channel, the mean over output rows of |w| divided by
// its group's max |w| (AutoAWQ's w_mean).
//
// Clip search (auto_clip.py): on the scaled weights, for each output row and group, try the
// clamp range ±r · max|w_g| for r = 1 − i/G_c, i = 0 .. ⌊max_shrink · G_c⌋ − 1 (G_c = 20,
// max_shrink = 0.5), quantize the clamped group, and keep the r with the lowest error of that
// group's contribution to the output, d_gᵀ H_gg d_g with d_g = w_g − Q(clamp(w_g)). The clamped
// weights are returned, so any solver (RTN, GPTQ) quantizes them afterwards.
//
// The result's ChannelScale s is applied to the inputs as x / s: fold it into the previous op
// (fold_into_norm / fold_into_previous) or run it online (InputTransform).
#pragma once

#include <algorithm>
#include <cmath>
#include <limits>
#include <span>
#include <string_view>
#include <vector>

#include "qtl/calib/hessian.hpp"
#include "qtl/calib/transform.hpp"
#include "qtl/core/error.hpp"
#include "qtl/core/types.hpp"
#include "qtl/core/validate.hpp"
#include "qtl/quant/concepts.hpp"
#include "qtl/quant/granularity.hpp"
#include "qtl/quant/quantize_matrix.hpp"

namespace qtl::calib {

struct AwqOptions {
  int grid = 20;             ///< α = i / grid, i = 0 .. grid
  bool duo_scaling = false;  ///< AutoAWQ's duo_scaling: also divide by w̄^(1−α)
  bool search_scales = true;
  bool clip_search = true;
  int clip_grid = 20;
  float max_shrink = 0.5f;
  /// Fit options of the quantizer during the searches (default: the plain min-max grid).
  FitOptions fit{};
};

struct AwqResult {
  ChannelScale scale;                ///< s: inputs x / s, weights W diag(s)
  float ratio = 0.0f;                ///< the α chosen
  std::vector<RowMatrixXf> weights;  ///< W diag(s), clamped by the clip search: quantize these
  std::vector<double> grid_loss;     ///< loss(α) for each α of the grid (Σ dᵀ H d)
  double rtn_loss = 0.0;             ///< loss of plain RTN (s = 1, no clipping)
  double scaled_loss = 0.0;          ///< loss with the chosen s, before clipping
  double final_loss = 0.0;           ///< loss with the chosen s and clipping
};

namespace detail {

/// Σ_rows dᵀ H d for D = W − W_hat (rows), in double.
template <class Deferred = void>
double hessian_loss(MatrixRef w, MatrixRef w_hat, const Eigen::MatrixXd& h) {
  const Eigen::MatrixXd d = (w - w_hat).cast<double>();
  return (d * h).cwiseProduct(d).sum();
}

template <ScalarQuantizer Q>
double awq_loss(const Q& q, const Granularity& g, const std::vector<RowMatrixXf>& weights,
                const VectorXf& s, const Eigen::MatrixXd& h, const FitOptions& fit) {
  QuantizeOptions qo;
  qo.fit = fit;
  double loss = 0.0;
  for (const auto& w : weights) {
    const RowMatrixXf scaled = w.array().rowwise() * s.transpose().array();
    RowMatrixXf back = dequantize(quantize_matrix(q, g, scaled, qo));
    back.array().rowwise() /= s.transpose().array();
    loss += hessian_loss(w, back, h);
  }
  return loss;
}

}  // namespace detail

/// Per-input-channel AWQ scales for layers that share one input, then clipping of each.
template <ScalarQuantizer Q>
[[nodiscard]] AwqResult awq(const Q& q, const Granularity& granularity,
                            const std::vector<RowMatrixXf>& weights, const LayerStatistics& stats,
                            const AwqOptions& opt = {}) {
  constexpr std::string_view kWhere = "awq";
  if (weights.empty()) fail(kWhere, ": no weight matrix given");
  const Index n = stats.in_features();
  if (n == 0 || stats.mean_abs.size() != n) {
    fail(kWhere, ": statistics are empty or inconsistent (H ", stats.hessian.rows(), "x",
         stats.hessian.cols(), ", mean|x| of ", stats.mean_abs.size(), ")");
  }
  for (std::size_t i = 0; i < weights.size(); ++i) {
    require_nonempty(kWhere, "weights", weights[i].rows(), weights[i].cols());
    if (weights[i].cols() != n) {
      fail(kWhere, ": weight matrix ", i, " has ", weights[i].cols(), " columns but the statistics have ",
           n, " inputs");
    }
    require_finite(kWhere, "weights", weights[i]);
  }
  require_range(kWhere, "options.grid", opt.grid, 1, 1000);
  require_range(kWhere, "options.clip_grid", opt.clip_grid, 1, 1000);
  require_range(kWhere, "options.max_shrink", opt.max_shrink, 0.0f, 0.99f);
  require_nonnegative(kWhere, "mean_abs", stats.mean_abs);

  const Eigen::MatrixXd& h = stats.hessian;
  AwqResult res;
  const VectorXf ones = VectorXf::Ones(n);
  res.rtn_loss = detail::awq_loss(q, granularity, weights, ones, h, opt.fit);

  // w̄ for duo scaling: |w| / (group max |w|), averaged over all rows of all layers.
  VectorXd w_mean = VectorXd::Zero(n);
  if (opt.duo_scaling) {
    Index rows = 0;
    for (const auto& w : weights) {
      const GroupLayout L = make_group_layout(granularity, w.rows(), w.cols(), kWhere);
      const Index gsize = L.per_tensor ? w.cols() : L.group_size;
      for (Index r = 0; r < w.rows(); ++r) {
        for (Index c0 = 0; c0 < w.cols(); c0 += gsize) {
          const Index c1 = std::min(w.cols(), c0 + gsize);
          const double m = w.row(r).segment(c0, c1 - c0).cwiseAbs().maxCoeff();
          for (Index c = c0; c < c1; ++c) w_mean[c] += std::fabs(w(r, c)) / (m + 1e-6);
        }
      }
      rows += w.rows();
    }
    w_mean /= static_cast<double>(rows);
  }

  VectorXf best_s = ones;
  double best = std::numeric_limits<double>::infinity();
  if (opt.search_scales) {
    for (int i = 0; i <= opt.grid; ++i) {
      const double alpha = static_cast<double>(i) / opt.grid;
      VectorXd s(n);
      for (Index c = 0; c < n; ++c) {
        double v = std::pow(stats.mean_abs[c], alpha);
        if (opt.duo_scaling) v /= std::pow(w_mean[c], 1.0 - alpha) + 1e-4;
        s[c] = std::max(v, 1e-4);
      }
      s /= std::sqrt(s.maxCoeff() * s.minCoeff());
      const VectorXf sf = s.cast<float>();
      const double loss = detail::awq_loss(q, granularity, weights, sf, h, opt.fit);
      res.grid_loss.push_back(loss);
      if (loss < best) {
        best = loss;
        best_s = sf;
        res.ratio = static_cast<float>(alpha);
      }
    }
  }
  if (!(best <= res.rtn_loss)) {  // duo scaling has no identity point: keep RTN if it is better
    best = res.rtn_loss;
    best_s = ones;
    res.ratio = 0.0f;
  }
  res.scale.scales = best_s;
  res.scaled_loss = best;

  // The scaled weights' Hessian is diag(1/s) H diag(1/s).
  const VectorXd inv = best_s.cast<double>().cwiseInverse();
  const Eigen::MatrixXd hs = inv.asDiagonal() * h * inv.asDiagonal();
  res.final_loss = 0.0;
  QuantizeOptions qo;
  qo.fit = opt.fit;
  for (const auto& w : weights) {
    RowMatrixXf ws = w.array().rowwise() * best_s.transpose().array();
    const GroupLayout L = make_group_layout(granularity, w.rows(), w.cols(), kWhere);
    if (opt.clip_search && !L.per_tensor) {
      const Index gsize = L.group_size;
      const int steps = static_cast<int>(std::floor(opt.max_shrink * static_cast<float>(opt.clip_grid)));
      std::vector<float> vals;
      Eigen::VectorXd d;
      for (Index r = 0; r < ws.rows(); ++r) {
        for (Index c0 = 0; c0 < n; c0 += gsize) {
          const Index width = std::min(n, c0 + gsize) - c0;
          const auto hg = hs.block(c0, c0, width, width);
          const float org_max = ws.row(r).segment(c0, width).cwiseAbs().maxCoeff();
          float best_max = org_max;
          double best_err = std::numeric_limits<double>::infinity();
          for (int i = 0; i < std::max(steps, 1); ++i) {
            const float m = org_max * (1.0f - static_cast<float>(i) / static_cast<float>(opt.clip_grid));
            vals.resize(static_cast<std::size_t>(width));
            for (Index c = 0; c < width; ++c) vals[static_cast<std::size_t>(c)] = std::clamp(ws(r, c0 + c), -m, m);
            const auto p = q.fit(vals, {}, opt.fit);
            d.resize(width);
            for (Index c = 0; c < width; ++c) {
              d[c] = static_cast<double>(ws(r, c0 + c)) - q.decode(p, q.encode(p, vals[static_cast<std::size_t>(c)]));
            }
            const double err = d.dot(hg * d);
            if (err < best_err) {
              best_err = err;
              best_max = m;
            }
          }
          for (Index c = 0; c < width; ++c) ws(r, c0 + c) = std::clamp(ws(r, c0 + c), -best_max, best_max);
        }
      }
    }
    RowMatrixXf back = dequantize(quantize_matrix(q, granularity, ws, qo));
    back.array().rowwise() /= best_s.transpose().array();
    res.final_loss += detail::hessian_loss(w, back, h);
    res.weights.push_back(std::move(ws));
  }
  return res;
}

/// One layer.
template <ScalarQuantizer Q>
[[nodiscard]] AwqResult awq(const Q& q, const Granularity& granularity, MatrixRef weight,
                            const LayerStatistics& stats, const AwqOptions& opt = {}) {
  return awq(q, granularity, std::vector<RowMatrixXf>{RowMatrixXf(weight)}, stats, opt);
}

}  // namespace qtl::calib
