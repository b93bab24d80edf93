// qtl/quant/scalar_fit.hpp — what the scalar families share: the fit skeleton that gives
// FitOptions its one meaning (search_fit), input checks of fit(), weighted error, and the fit of
// one scale over a fixed level table.
//
// A "scaled-table" quantizer decodes  x_hat = s * level[code]  with s an fp16 value and a level
// table that is fixed for the quantizer (log2 levels, NF4, FP4 E2M1, power grid, {-1,0,1}). For
// such a quantizer the only fitted parameter is s:
//   1. s0 = the quantizer's starting scale (absmax / largest level), rounded to fp16 (the plain fit);
//   2. with FitOptions::clip_search, try s = s0 * r for r on a grid from 1 down to the ratio the
//      family asks for (clip_min_ratio, or 1/base for the log grids, whose levels repeat under a
//      change of scale by the base), keeping the lowest weighted squared error (r = 1 is tried,
//      so the search never increases the error);
//   3. refine_iterations times: for the chosen codes the least-squares scale is
//        s* = sum_i w_i x_i l_i / sum_i w_i l_i^2,   l_i = level[code_i]
//      rounded to fp16 and re-encoded; kept only if the weighted error falls.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <optional>
#include <span>
#include <string_view>

#include "qtl/core/error.hpp"
#include "qtl/detail/fp16.hpp"
#include "qtl/quant/concepts.hpp"

namespace qtl::detail {

/// The skeleton of every scalar fit (FitOptions' meaning, qtl/quant/concepts.hpp):
///   start                 the family's plain fit, returned as is without clip_search and refits;
///   grid(consider)        with clip_search, calls consider(p) for each clip-grid candidate;
///                         consider keeps p when error(p) is lower and returns whether it did;
///   refit(best)           std::optional<Params>: the least-squares parameters for the codes
///                         `best` gives (nullopt when there are none), tried refine_iterations
///                         times, stopping at the first that does not lower the error.
template <class Params, class Error, class Grid, class Refit>
[[nodiscard]] Params search_fit(const Params& start, const FitOptions& opt, Error&& error, Grid&& grid,
                                Refit&& refit) {
  if (!opt.clip_search && opt.refine_iterations <= 0) return start;
  Params best = start;
  double best_err = error(start);
  auto consider = [&](const Params& p) {
    const double err = error(p);
    if (!(err < best_err)) return false;
    best_err = err;
    best = p;
    return true;
  };
  if (opt.clip_search) grid(consider);
  for (int it = 0; it < opt.refine_iterations; ++it) {
    const std::optional<Params> p = refit(best);
    if (!p || !consider(*p)) break;
  }
  return best;
}

/// A grid for search_fit that proposes nothing (families without a clip grid).
inline constexpr auto kNoGrid = [](auto&&) {};

/// Checks a group handed to fit(): non-empty, finite values, importance empty or one finite
/// weight >= 0 per value.
inline void check_group(std::string_view where, std::span<const float> x,
                        std::span<const float> importance) {
  if (x.empty()) fail(where, ": cannot fit an empty group");
  if (!importance.empty() && importance.size() != x.size()) {
    fail(where, ": importance has ", importance.size(), " values for a group of ", x.size());
  }
  for (std::size_t i = 0; i < x.size(); ++i) {
    if (!std::isfinite(x[i])) fail(where, ": value ", i, " of the group is not finite: ", x[i]);
  }
  for (std::size_t i = 0; i < importance.size(); ++i) {
    if (!(importance[i] >= 0.0f) || !std::isfinite(importance[i])) {
      fail(where, ": importance ", i, " must be finite and >= 0, got ", importance[i]);
    }
  }
}

[[nodiscard]] inline double weight_at(std::span<const float> importance, std::size_t i) noexcept {
  return importance.empty() ? 1.0 : static_cast<double>(importance[i]);
}

/// sum_i w_i (x_i - decode(encode(x_i)))^2.
template <class Q>
[[nodiscard]] double weighted_sse(const Q& q, const typename Q::Params& p,
                                  std::span<const float> x, std::span<const float> importance) {
  double err = 0.0;
  for (std::size_t i = 0; i < x.size(); ++i) {
    const double d = static_cast<double>(x[i]) - q.decode(p, q.encode(p, x[i]));
    err += weight_at(importance, i) * d * d;
  }
  return err;
}

/// A positive fp16 scale for s > 0: rounds to fp16, lifts underflow to the smallest fp16
/// subnormal, and rejects a value too large for fp16.
[[nodiscard]] inline float fp16_scale(std::string_view where, float s) {
  if (!(s > 0.0f)) return 1.0f;  // an all-zero group: any scale decodes it exactly
  const float h = round_to_half(s);
  if (!std::isfinite(h)) fail(where, ": scale ", s, " is too large for fp16 (max 65504)");
  if (h == 0.0f) return half_to_float(1);
  return h;
}

/// The nearest code by brute force over every code (ties go to the lower code). Reference
/// encoder for small tables; `codes` = 2^kBits.
template <class Q>
[[nodiscard]] std::uint8_t nearest_code_scan(const Q& q, const typename Q::Params& p, float x,
                                             int codes) noexcept {
  int best = 0;
  float best_err = std::numeric_limits<float>::infinity();
  for (int c = 0; c < codes; ++c) {
    const float e = std::fabs(x - q.decode(p, static_cast<std::uint8_t>(c)));
    if (e < best_err) {
      best_err = e;
      best = c;
    }
  }
  return static_cast<std::uint8_t>(best);
}

/// Fits the fp16 scale of a scaled-table quantizer (see the header comment). Q must provide
/// Params with a `scale` member and level(code) (the unscaled table entry).
template <class Q>
[[nodiscard]] typename Q::Params fit_table_scale(const Q& q, std::span<const float> x,
                                                 std::span<const float> importance,
                                                 const FitOptions& opt, float s0,
                                                 float min_ratio) {
  using Params = typename Q::Params;
  constexpr std::string_view kWhere = "fit";
  Params start{};
  start.scale = fp16_scale(kWhere, s0);
  if (!(s0 > 0.0f)) return start;
  auto scaled = [](float s) {
    Params p{};
    p.scale = s;
    return p;
  };
  return search_fit(
      start, opt, [&](const Params& p) { return weighted_sse(q, p, x, importance); },
      [&](auto&& consider) {
        const int steps = std::max(opt.clip_steps, 1);
        for (int i = 1; i <= steps; ++i) {
          const float r = 1.0f - (1.0f - min_ratio) * static_cast<float>(i) / static_cast<float>(steps);
          consider(scaled(fp16_scale(kWhere, s0 * r)));
        }
      },
      [&](const Params& best) -> std::optional<Params> {
        double num = 0.0, den = 0.0;
        for (std::size_t i = 0; i < x.size(); ++i) {
          const double l = q.level(q.encode(best, x[i]));
          const double w = weight_at(importance, i);
          num += w * x[i] * l;
          den += w * l * l;
        }
        if (!(den > 0.0)) return std::nullopt;
        const double s = num / den;
        if (!(s > 0.0) || !std::isfinite(s)) return std::nullopt;
        const float h = round_to_half(static_cast<float>(s));
        if (!(h > 0.0f) || !std::isfinite(h)) return std::nullopt;
        return scaled(h);
      });
}

/// max_i |x_i|.
[[nodiscard]] inline float abs_max(std::span<const float> x) noexcept {
  float m = 0.0f;
  for (float v : x) m = std::max(m, std::fabs(v));
  return m;
}

}  // namespace qtl::detail
