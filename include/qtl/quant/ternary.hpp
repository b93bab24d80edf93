// qtl/quant/ternary.hpp — ternary weights {-1, 0, +1} x alpha.
//
//   x_hat = alpha * t,  t in {-1, 0, +1},  code = t + 1  (code 3 is unused and decodes to 0)
// encode picks the nearest of {-alpha, 0, +alpha}: t = sign(x) when |x| > alpha / 2, else 0.
// alpha is stored as fp16 (16 bits per group). Table form: alpha x shared {-1, 0, +1, 0}.
//
// Two fits (TernaryRule):
//   AbsMean     BitNet b1.58 (Ma et al. 2024): alpha = mean |x| (importance-weighted), then
//               RoundClip(x / alpha, -1, 1), i.e. the threshold alpha / 2.
//   MseOptimal  the weighted squared error for a support S = {i : t_i != 0} and the best alpha on
//               it, alpha_S = sum_S w |x| / sum_S w, is  sum w x^2 - (sum_S w |x|)^2 / sum_S w;
//               the best support of each size is the |x|-largest values, so sorting by |x| and
//               scanning every prefix finds the optimal (threshold, alpha) pair exactly (TWN's
//               threshold search, solved exactly rather than with its 0.7 mean |x| rule).
//               The absmean solution is evaluated too and the better of the two (after fp16
//               rounding) is returned, so this rule is never worse than AbsMean on the same group.
// Both fits are least-squares optimal for their rule, so FitOptions do not apply to them.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <span>
#include <string>
#include <vector>

#include "qtl/core/error.hpp"
#include "qtl/quant/concepts.hpp"
#include "qtl/quant/decode_table.hpp"
#include "qtl/quant/scalar_fit.hpp"

namespace qtl {

enum class TernaryRule { AbsMean, MseOptimal };

class Ternary {
 public:
  static constexpr int kBits = 2;
  static constexpr TableForm kTableForm = TableForm::ScaledShared;

  struct Params {
    float scale = 0.0f;  ///< alpha, fp16, >= 0
    friend bool operator==(const Params&, const Params&) = default;
  };

  explicit Ternary(TernaryRule rule = TernaryRule::AbsMean) : rule_(rule) {}

  [[nodiscard]] TernaryRule rule() const noexcept { return rule_; }
  [[nodiscard]] std::string name() const {
    return rule_ == TernaryRule::AbsMean ? "ternary-absmean" : "ternary-mse";
  }
  [[nodiscard]] static constexpr double param_bits() noexcept { return 16.0; }

  [[nodiscard]] static constexpr float level(std::uint8_t code) noexcept {
    return code == 0 ? -1.0f : (code == 2 ? 1.0f : 0.0f);
  }
  [[nodiscard]] static float decode(const Params& p, std::uint8_t code) noexcept {
    return p.scale * level(code);
  }
  [[nodiscard]] static std::uint8_t encode(const Params& p, float x) noexcept {
    const float a = std::fabs(x);
    if (!(std::fabs(a - p.scale) < a)) return 1;  // 0 is at least as near as +-alpha
    return x > 0.0f ? 2 : 0;
  }

  [[nodiscard]] Params fit(std::span<const float> x, std::span<const float> importance,
                           const FitOptions& = {}) const {
    detail::check_group(name(), x, importance);
    const Params absmean = fit_absmean(x, importance);
    if (rule_ == TernaryRule::AbsMean) return absmean;
    return fit_mse(x, importance, absmean);
  }

  [[nodiscard]] static DecodeTable shared_table() noexcept { return DecodeTable{-1.0f, 0.0f, 1.0f, 0.0f}; }
  [[nodiscard]] static Params params_from_scale(float s) noexcept { return Params{s}; }

 private:
  [[nodiscard]] Params to_params(double alpha) const {
    return Params{alpha > 0.0 ? detail::fp16_scale(name(), static_cast<float>(alpha)) : 0.0f};
  }

  [[nodiscard]] Params fit_absmean(std::span<const float> x, std::span<const float> w) const {
    double sw = 0.0, swa = 0.0, sa = 0.0;
    for (std::size_t i = 0; i < x.size(); ++i) {
      sw += detail::weight_at(w, i);
      swa += detail::weight_at(w, i) * std::fabs(x[i]);
      sa += std::fabs(x[i]);
    }
    return to_params(sw > 0.0 ? swa / sw : sa / static_cast<double>(x.size()));
  }

  [[nodiscard]] Params fit_mse(std::span<const float> x, std::span<const float> w, const Params& absmean) const {
    std::vector<std::size_t> order(x.size());
    std::iota(order.begin(), order.end(), std::size_t{0});
    std::sort(order.begin(), order.end(),
              [&](std::size_t a, std::size_t b) { return std::fabs(x[a]) > std::fabs(x[b]); });
    double A = 0.0, B = 0.0, best_gain = -1.0, best_alpha = 0.0;
    for (std::size_t j = 0; j < order.size(); ++j) {
      const std::size_t i = order[j];
      A += detail::weight_at(w, i) * std::fabs(x[i]);
      B += detail::weight_at(w, i);
      // ties in |x| must enter the support together: evaluate only at the end of a tie run
      if (j + 1 < order.size() && std::fabs(x[order[j + 1]]) == std::fabs(x[i])) continue;
      if (B > 0.0 && A * A / B > best_gain) {
        best_gain = A * A / B;
        best_alpha = A / B;
      }
    }
    const Params best = to_params(best_alpha);
    if (detail::weighted_sse(*this, absmean, x, w) <= detail::weighted_sse(*this, best, x, w)) return absmean;
    return best;
  }

  TernaryRule rule_ = TernaryRule::AbsMean;
};

}  // namespace qtl
