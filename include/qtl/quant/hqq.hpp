// qtl/quant/hqq.hpp — HQQ: a calibration-free fit of uniform group parameters by half-quadratic
// splitting of a sparsity-promoting lp loss (Badri & Shaji, "Half-Quadratic Quantization of
// Large Machine Learning Models", 2023).
//
// For a group x with codes c = encode(x) and decode x̂ = s (c − z), HQQ minimizes
//   φ(x − x̂) = Σ_i |x_i − x̂_i|^p,   p < 1 (0.7),
// which, unlike the squared error, lets a few outliers keep large errors in exchange for a
// tighter fit of the bulk. With an auxiliary error variable e it alternates two closed forms:
//   1. e ← shrink_p(x − x̂, β),  shrink_p(r, β) = sign(r) · max(|r| − |r|^(p−1) / β, 0)
//      (the generalized soft threshold, the proximal step of the lp term);
//   2. the parameters that make x̂ closest to x − e in least squares, for the current codes;
//   β ← κ β (κ = 1.01), then re-encode. HQQ's defaults: p = 0.7, β₀ = 10, 20 iterations,
//   stopping as soon as φ stops falling, so the kept objective decreases monotonically.
// qtl keeps the zero point an integer (the packed kernels and ggml-style blocks store it in
// 8 bits; HQQ's own fractional zero would need an fp16 zero, 8 more bits per group), so step 2
// refits the scale too: s and b of x̂ = s·c + b by least squares, then s to fp16 and
// z = round(−b / s). Symmetric codes refit the scale only. Starting from min-max, HQQ's steps
// are accepted only while φ falls: the result is never worse than min-max RTN on φ.
#pragma once

#include <algorithm>
#include <cmath>
#include <span>
#include <string_view>
#include <vector>

#include "qtl/core/error.hpp"
#include "qtl/core/types.hpp"
#include "qtl/core/validate.hpp"
#include "qtl/detail/fp16.hpp"
#include "qtl/quant/granularity.hpp"
#include "qtl/quant/quantize_matrix.hpp"
#include "qtl/quant/uniform.hpp"

namespace qtl {

struct HqqOptions {
  int iterations = 20;  ///< HQQ's default
  float p = 0.7f;       ///< the lp exponent, in (0, 2]
  float beta = 10.0f;   ///< β₀
  float kappa = 1.01f;  ///< β grows by this factor per iteration
};

struct HqqTrace {
  std::vector<double> objective;  ///< φ after each accepted step; [0] is min-max RTN's
};

/// Σ_i |x_i − decode(encode(x_i))|^p for one group.
template <int Bits, Mode M>
[[nodiscard]] double hqq_objective(const typename Uniform<Bits, M>::Params& prm, std::span<const float> x, float p) {
  using Q = Uniform<Bits, M>;
  double o = 0.0;
  for (float v : x) o += std::pow(std::fabs(static_cast<double>(v) - Q::decode(prm, Q::encode(prm, v))), p);
  return o;
}

/// HQQ's fit of one group's parameters (see the header comment).
template <int Bits, Mode M>
[[nodiscard]] typename Uniform<Bits, M>::Params hqq_fit(const Uniform<Bits, M>& q, std::span<const float> x,
                                                        const HqqOptions& opt = {}, HqqTrace* trace = nullptr) {
  using Q = Uniform<Bits, M>;
  using Params = typename Q::Params;
  constexpr std::string_view kWhere = "hqq_fit";
  if (x.empty()) fail(kWhere, ": cannot fit an empty group");
  require_range(kWhere, "iterations", opt.iterations, 0, 10000);
  if (!(opt.p > 0.0f && opt.p <= 2.0f)) fail(kWhere, ": p must be in (0, 2], got ", opt.p);
  if (!(opt.beta > 0.0f) || !std::isfinite(opt.beta)) fail(kWhere, ": beta must be finite and > 0, got ", opt.beta);
  if (!(opt.kappa >= 1.0f) || !std::isfinite(opt.kappa)) fail(kWhere, ": kappa must be finite and >= 1, got ", opt.kappa);
  for (std::size_t i = 0; i < x.size(); ++i) {
    if (!std::isfinite(x[i])) fail(kWhere, ": value ", i, " of the group is not finite: ", x[i]);
  }
  Params best = q.fit(x, {});
  double best_obj = hqq_objective<Bits, M>(best, x, opt.p);
  if (trace != nullptr) trace->objective.assign(1, best_obj);
  double beta = opt.beta;
  const double pm1 = static_cast<double>(opt.p) - 1.0;
  for (int it = 0; it < opt.iterations; ++it) {
    // 1. the lp proximal step on the residual; 2. least squares of x − e on the codes.
    double sc = 0, sc2 = 0, st = 0, stc = 0, n = 0;
    for (float v : x) {
      const std::uint8_t code = Q::encode(best, v);
      const double r = static_cast<double>(v) - Q::decode(best, code);
      const double ar = std::fabs(r);
      const double e = ar > 0.0 ? std::copysign(std::max(ar - std::pow(ar, pm1) / beta, 0.0), r) : 0.0;
      const double t = static_cast<double>(v) - e;
      const double c = Q::kSymmetric ? static_cast<double>(code) - best.zero : static_cast<double>(code);
      sc += c;
      sc2 += c * c;
      st += t;
      stc += t * c;
      n += 1.0;
    }
    Params cand = best;
    if constexpr (Q::kSymmetric) {
      if (!(sc2 > 0.0)) break;
      cand.scale = detail::round_to_half(static_cast<float>(stc / sc2));
    } else {
      const double det = n * sc2 - sc * sc;
      if (!(det > 0.0)) break;
      const double s = (n * stc - sc * st) / det;
      const double b = (st - s * sc) / n;
      cand.scale = detail::round_to_half(static_cast<float>(s));
      if (!(std::fabs(cand.scale) > 0.0f) || !std::isfinite(cand.scale)) break;
      cand.zero = static_cast<float>(std::clamp(std::nearbyint(-b / cand.scale), 0.0, static_cast<double>(Q::kMaxCode)));
    }
    if (!(std::fabs(cand.scale) > 0.0f) || !std::isfinite(cand.scale)) break;
    const double obj = hqq_objective<Bits, M>(cand, x, opt.p);
    if (!(obj < best_obj)) break;  // HQQ's early stop: keep the best, never go up
    best = cand;
    best_obj = obj;
    if (trace != nullptr) trace->objective.push_back(obj);
    beta *= opt.kappa;
  }
  return best;
}

/// Round-to-nearest with every group's parameters fitted by HQQ (no calibration data).
template <int Bits, Mode M>
[[nodiscard]] QuantizedMatrix<Uniform<Bits, M>> quantize_matrix_hqq(const Uniform<Bits, M>& q,
                                                                   const Granularity& granularity, MatrixRef w,
                                                                   const HqqOptions& opt = {}) {
  return quantize_matrix_with(
      q, granularity, w, QuantizeOptions{},
      [&](std::span<const float> v, std::span<const float>) { return hqq_fit(q, v, opt); }, "quantize_matrix_hqq");
}

}  // namespace qtl
