// qtl/calib/smoothquant.hpp — SmoothQuant (Xiao et al., ICML'23): migrate activation outliers
// into the weights before W8A8 quantization.
//
//   s_j = max(max|x_j|^α / max|w_j|^(1−α), 1e-5)     per input channel j,
// with max|w_j| over the rows of every layer that reads x (q/k/v share s), α the migration
// strength (0.5 by default; larger moves more difficulty into the weights). Then x' = x / s and
// W' = W diag(s) (a ChannelScale), which leaves W x unchanged and flattens x's channel ranges,
// so per-token int8 activations lose less. A channel whose activations are all 0 gets s = 1.
//
// quantize_activations_int8 is the activation side of W8A8 as a fake-quantizer for tests and
// measurements: per token, symmetric int8, x̂ = d · clamp(round(x / d), −127, 127), d = max|x| / 127.
#pragma once

#include <algorithm>
#include <cmath>
#include <string_view>
#include <vector>

#include "qtl/calib/hessian.hpp"
#include "qtl/calib/transform.hpp"
#include "qtl/core/error.hpp"
#include "qtl/core/types.hpp"
#include "qtl/core/validate.hpp"

namespace qtl::calib {

struct SmoothQuantOptions {
  float alpha = 0.5f;  ///< migration strength in [0, 1]
};

template <class Deferred = void>
[[nodiscard]] ChannelScale smoothquant_scales(const std::vector<RowMatrixXf>& weights,
                                                     const LayerStatistics& stats,
                                                     const SmoothQuantOptions& opt = {}) {
  constexpr std::string_view kWhere = "smoothquant_scales";
  require_range(kWhere, "options.alpha", opt.alpha, 0.0f, 1.0f);
  if (weights.empty()) fail(kWhere, ": no weight matrix given");
  const Index n = stats.abs_max.size();
  if (n == 0) fail(kWhere, ": the statistics hold no max|x|");
  VectorXf w_max = VectorXf::Zero(n);
  for (const auto& w : weights) {
    if (w.cols() != n) {
      fail(kWhere, ": a weight matrix has ", w.cols(), " columns but the statistics have ", n, " inputs");
    }
    require_finite(kWhere, "weights", w);
    w_max = w_max.cwiseMax(w.cwiseAbs().colwise().maxCoeff().transpose());
  }
  ChannelScale s;
  s.scales.resize(n);
  for (Index j = 0; j < n; ++j) {
    if (stats.abs_max[j] == 0.0f || w_max[j] == 0.0f) {
      s.scales[j] = 1.0f;
      continue;
    }
    const double v = std::pow(static_cast<double>(stats.abs_max[j]), opt.alpha) /
                     std::pow(static_cast<double>(w_max[j]), 1.0 - opt.alpha);
    s.scales[j] = static_cast<float>(std::max(v, 1e-5));
  }
  return s;
}

/// Per-token symmetric int8 fake quantization of activations [tokens x in].
template <class Deferred = void>
[[nodiscard]] RowMatrixXf quantize_activations_int8(MatrixRef x) {
  RowMatrixXf out(x.rows(), x.cols());
  for (Index t = 0; t < x.rows(); ++t) {
    const float m = x.row(t).cwiseAbs().maxCoeff();
    if (m == 0.0f) {
      out.row(t).setZero();
      continue;
    }
    const float d = m / 127.0f;
    for (Index c = 0; c < x.cols(); ++c) {
      out(t, c) = d * std::clamp(std::nearbyint(x(t, c) / d), -127.0f, 127.0f);
    }
  }
  return out;
}

}  // namespace qtl::calib
