// qtl/quant/binary.hpp — 1-bit weights: sign x alpha, with an optional mean shift, and residual
// binarization with two bit planes.
//
// Binary<false>:  x_hat = alpha * (2 code - 1),  code = [x >= 0]
//   For fixed signs b_i = sign(x_i) the weighted squared error sum w_i (x_i - alpha b_i)^2 is
//   minimized by alpha* = sum w_i |x_i| / sum w_i  (the mean |x|; XNOR-Net's closed form).
//   alpha is stored as fp16 (16 bits per group). Table form: scale alpha x shared {-1, +1}.
// Binary<true> (mean shift): x_hat = mu + alpha * (2 code - 1), mu = weighted mean of the group,
//   alpha = weighted mean |x - mu|; the group stores its two levels lo = fp16(mu - alpha),
//   hi = fp16(mu + alpha) (32 bits), code = the nearer of the two. Table form: per group {lo, hi}.
//
// ResidualBinary: two planes (BiLLM's residual approximation, DB-LLM's dual binarization):
//   x - mu ~ alpha1 b1 + alpha2 b2,  b1 = sign(x - mu),  b2 = sign(x - mu - alpha1 b1)
//   code = [b1 > 0] | [b2 > 0] << 1,  levels(code) = mu + alpha1 b1 + alpha2 b2.
//   The greedy fit (alpha1 = mean |x - mu|, alpha2 = mean |residual|) is the plain fit; it is
//   followed by FitOptions::refine_iterations rounds of: encode each value to its nearest level, then solve the 3x3
//   weighted least squares for (mu, alpha1, alpha2) given the planes; a round is kept only if
//   the weighted error falls. The four levels are stored as fp16 (64 bits per group) and encode
//   picks the nearest of them, so the planes stay a bit-plane decomposition when
//   alpha2 <= alpha1 (the greedy fit guarantees it; refinement keeps it or is rejected).
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <type_traits>
#include <utility>

#include "qtl/core/error.hpp"
#include "qtl/detail/fp16.hpp"
#include "qtl/quant/concepts.hpp"
#include "qtl/quant/decode_table.hpp"
#include "qtl/quant/scalar_fit.hpp"

namespace qtl {

namespace detail {
/// Weighted mean of x (plain mean when every weight is 0).
[[nodiscard]] inline double weighted_mean(std::span<const float> x, std::span<const float> w) {
  double sw = 0.0, swx = 0.0;
  for (std::size_t i = 0; i < x.size(); ++i) {
    sw += weight_at(w, i);
    swx += weight_at(w, i) * x[i];
  }
  if (sw > 0.0) return swx / sw;
  double s = 0.0;
  for (float v : x) s += v;
  return s / static_cast<double>(x.size());
}
/// Weighted mean of |x - mu| (plain mean when every weight is 0).
[[nodiscard]] inline double weighted_mean_abs(std::span<const float> x, std::span<const float> w, double mu) {
  double sw = 0.0, swa = 0.0, sa = 0.0;
  for (std::size_t i = 0; i < x.size(); ++i) {
    const double a = std::fabs(x[i] - mu);
    sw += weight_at(w, i);
    swa += weight_at(w, i) * a;
    sa += a;
  }
  return sw > 0.0 ? swa / sw : sa / static_cast<double>(x.size());
}
[[nodiscard]] inline float fp16_level(std::string_view where, double v) {
  const float h = round_to_half(static_cast<float>(v));
  if (!std::isfinite(h)) fail(where, ": level ", v, " is too large for fp16 (max 65504)");
  return h;
}
}  // namespace detail

template <bool MeanShift = false>
class Binary {
 public:
  static constexpr int kBits = 1;
  static constexpr bool kMeanShift = MeanShift;
  static constexpr TableForm kTableForm = MeanShift ? TableForm::PerSet : TableForm::ScaledShared;

  struct ScaleParams {
    float scale = 1.0f;  ///< alpha, fp16, > 0
    friend bool operator==(const ScaleParams&, const ScaleParams&) = default;
  };
  struct LevelParams {
    float lo = -1.0f;  ///< fp16(mu - alpha)
    float hi = 1.0f;   ///< fp16(mu + alpha)
    friend bool operator==(const LevelParams&, const LevelParams&) = default;
  };
  using Params = std::conditional_t<MeanShift, LevelParams, ScaleParams>;

  [[nodiscard]] std::string name() const { return MeanShift ? "binary-shift" : "binary"; }
  [[nodiscard]] static constexpr double param_bits() noexcept { return MeanShift ? 32.0 : 16.0; }

  [[nodiscard]] static float decode(const Params& p, std::uint8_t code) noexcept {
    if constexpr (MeanShift) {
      return code ? p.hi : p.lo;
    } else {
      return p.scale * (code ? 1.0f : -1.0f);
    }
  }
  [[nodiscard]] static std::uint8_t encode(const Params& p, float x) noexcept {
    if constexpr (MeanShift) {
      return std::fabs(x - p.hi) <= std::fabs(x - p.lo) ? 1 : 0;
    } else {
      return x >= 0.0f ? 1 : 0;
    }
  }
  [[nodiscard]] Params fit(std::span<const float> x, std::span<const float> importance,
                           const FitOptions& = {}) const {
    detail::check_group(name(), x, importance);
    const double mu = MeanShift ? detail::weighted_mean(x, importance) : 0.0;
    const double alpha = detail::weighted_mean_abs(x, importance, mu);
    if constexpr (MeanShift) {
      return Params{detail::fp16_level(name(), mu - alpha), detail::fp16_level(name(), mu + alpha)};
    } else {
      // an all-zero group keeps alpha = 0 (binary has no zero level to fall back on)
      return Params{alpha > 0.0 ? detail::fp16_scale(name(), static_cast<float>(alpha)) : 0.0f};
    }
  }

  // table forms (qtl/quant/decode_table.hpp)
  [[nodiscard]] static DecodeTable shared_table() noexcept
    requires(!MeanShift)
  {
    return DecodeTable{-1.0f, 1.0f};
  }
  [[nodiscard]] static Params params_from_scale(float s) noexcept
    requires(!MeanShift)
  {
    return Params{s};
  }
  [[nodiscard]] static DecodeTable table_levels(const Params& p) noexcept
    requires(MeanShift)
  {
    return DecodeTable{p.lo, p.hi};
  }
  [[nodiscard]] static Params params_from_levels(const DecodeTable& t) noexcept
    requires(MeanShift)
  {
    return Params{t[0], t[1]};
  }
};

class ResidualBinary {
 public:
  static constexpr int kBits = 2;
  static constexpr TableForm kTableForm = TableForm::PerSet;

  struct Params {
    std::array<float, 4> levels{};  ///< fp16: levels[b1 | b2 << 1] = mu + a1 (2b1-1) + a2 (2b2-1)
    friend bool operator==(const Params&, const Params&) = default;
  };

  [[nodiscard]] std::string name() const { return "binary-residual"; }
  [[nodiscard]] static constexpr double param_bits() noexcept { return 64.0; }

  [[nodiscard]] static float decode(const Params& p, std::uint8_t code) noexcept { return p.levels[code]; }
  [[nodiscard]] std::uint8_t encode(const Params& p, float x) const noexcept {
    return detail::nearest_code_scan(*this, p, x, 4);
  }

  [[nodiscard]] Params fit(std::span<const float> x, std::span<const float> importance,
                           const FitOptions& opt = {}) const {
    detail::check_group(name(), x, importance);
    const double mu = detail::weighted_mean(x, importance);
    const double a1 = detail::weighted_mean_abs(x, importance, mu);
    // second plane on the residual r = x - mu - a1 b1
    double sw = 0.0, swr = 0.0, sr = 0.0;
    for (std::size_t i = 0; i < x.size(); ++i) {
      const double r = x[i] - mu - (x[i] >= mu ? a1 : -a1);
      sw += detail::weight_at(importance, i);
      swr += detail::weight_at(importance, i) * std::fabs(r);
      sr += std::fabs(r);
    }
    const double a2 = sw > 0.0 ? swr / sw : sr / static_cast<double>(x.size());
    // refits: least squares for (mu, a1, a2) with the planes of the current codes
    return detail::search_fit(
        make(mu, a1, a2), opt, [&](const Params& p) { return detail::weighted_sse(*this, p, x, importance); },
        detail::kNoGrid, [&](const Params& best) -> std::optional<Params> {
          double A[3][3] = {}, b[3] = {};
          for (std::size_t i = 0; i < x.size(); ++i) {
            const auto c = encode(best, x[i]);
            const double f[3] = {1.0, (c & 1) ? 1.0 : -1.0, (c & 2) ? 1.0 : -1.0};
            const double w = detail::weight_at(importance, i);
            for (int r = 0; r < 3; ++r) {
              b[r] += w * f[r] * x[i];
              for (int t = 0; t < 3; ++t) A[r][t] += w * f[r] * f[t];
            }
          }
          double sol[3];
          if (!solve3(A, b, sol)) return std::nullopt;
          if (!(std::fabs(sol[2]) <= std::fabs(sol[1]))) return std::nullopt;  // keep plane 1 the coarse one
          return make(sol[0], std::fabs(sol[1]), std::fabs(sol[2]));
        });
  }

  [[nodiscard]] static DecodeTable table_levels(const Params& p) noexcept {
    return DecodeTable{p.levels[0], p.levels[1], p.levels[2], p.levels[3]};
  }
  [[nodiscard]] static Params params_from_levels(const DecodeTable& t) noexcept {
    return Params{{t[0], t[1], t[2], t[3]}};
  }

 private:
  [[nodiscard]] Params make(double mu, double a1, double a2) const {
    Params p;
    for (int c = 0; c < 4; ++c) {
      p.levels[static_cast<std::size_t>(c)] =
          detail::fp16_level(name(), mu + ((c & 1) ? a1 : -a1) + ((c & 2) ? a2 : -a2));
    }
    return p;
  }
  // Gaussian elimination with partial pivoting; false if singular.
  static bool solve3(double A[3][3], double b[3], double x[3]) noexcept {
    for (int col = 0; col < 3; ++col) {
      int piv = col;
      for (int r = col + 1; r < 3; ++r) {
        if (std::fabs(A[r][col]) > std::fabs(A[piv][col])) piv = r;
      }
      if (!(std::fabs(A[piv][col]) > 1e-300)) return false;
      std::swap(A[piv], A[col]);
      std::swap(b[piv], b[col]);
      for (int r = col + 1; r < 3; ++r) {
        const double f = A[r][col] / A[col][col];
        for (int s = col; s < 3; ++s) A[r][s] -= f * A[col][s];
        b[r] -= f * b[col];
      }
    }
    for (int r = 2; r >= 0; --r) {
      double s = b[r];
      for (int c = r + 1; c < 3; ++c) s -= A[r][c] * x[c];
      x[r] = s / A[r][r];
    }
    return std::isfinite(x[0]) && std::isfinite(x[1]) && std::isfinite(x[2]);
  }
};

}  // namespace qtl
