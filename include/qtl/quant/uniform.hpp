// qtl/quant/uniform.hpp — uniform (integer-affine) scalar quantization, 2..8 bits.
//
//   x_hat = s * (q - z),   q = clamp(round(x / s) + z, 0, 2^b - 1)
// round() is round-half-to-even (std::nearbyint in the default rounding mode). The scale s is
// rounded to the nearest fp16 value when fitted, because packed formats store it as fp16; the
// zero point z is an integer, so 0 is always exactly representable.
//
// Asymmetric: the range [min(x, 0), max(x, 0)] is mapped onto [0, 2^b - 1]:
//   s = (hi - lo) / (2^b - 1),   z = clamp(round(-lo / s), 0, 2^b - 1)            (GPTQ's grid)
// Symmetric: z = 2^(b-1) and s = -m / 2^(b-1), where m is the element of largest magnitude, so
// m lands exactly on code 0 and the other side keeps 2^(b-1) - 1 levels; this is llama.cpp's
// q4_0 rule (d = max / -8), finer by 2^b/(2^b - 1) than the usual absmax / (2^(b-1) - 1).
// s may therefore be negative in symmetric mode.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <optional>
#include <span>
#include <string>

#include "qtl/core/error.hpp"
#include "qtl/detail/fp16.hpp"
#include "qtl/quant/concepts.hpp"
#include "qtl/quant/scalar_fit.hpp"

namespace qtl {

enum class Mode { Symmetric, Asymmetric };

template <int Bits, Mode M = Mode::Asymmetric>
class Uniform {
  static_assert(Bits >= 2 && Bits <= 8, "Uniform<Bits>: Bits must be in [2, 8]");

 public:
  static constexpr int kBits = Bits;
  static constexpr Mode kMode = M;
  static constexpr bool kSymmetric = (M == Mode::Symmetric);
  static constexpr int kMaxCode = (1 << Bits) - 1;
  static constexpr int kSymmetricZero = 1 << (Bits - 1);

  struct Params {
    float scale = 1.0f;  ///< fp16-representable
    float zero = 0.0f;   ///< integer in [0, kMaxCode]
    friend bool operator==(const Params&, const Params&) = default;
  };

  [[nodiscard]] std::string name() const {
    return str_cat("uniform", Bits, kSymmetric ? "-sym" : "-asym");
  }

  /// Bits of one group's parameters in the packed format: fp16 scale, plus a uint8 zero point
  /// in asymmetric mode.
  [[nodiscard]] static constexpr double param_bits() noexcept { return kSymmetric ? 16.0 : 24.0; }

  [[nodiscard]] static std::uint8_t encode(const Params& p, float x) noexcept {
    const float q = std::nearbyint(x / p.scale) + p.zero;
    const float c = q < 0.0f ? 0.0f : (q > float(kMaxCode) ? float(kMaxCode) : q);
    return static_cast<std::uint8_t>(c);
  }
  [[nodiscard]] static float decode(const Params& p, std::uint8_t code) noexcept {
    return p.scale * (static_cast<float>(code) - p.zero);
  }

  /// Parameters for the value range [lo, hi] (asymmetric) or the extreme m (symmetric; lo = hi = m).
  [[nodiscard]] static Params params_for_range(float lo, float hi) {
    Params p;
    if constexpr (kSymmetric) {
      const float m = (std::fabs(lo) > std::fabs(hi)) ? lo : hi;
      p.zero = static_cast<float>(kSymmetricZero);
      p.scale = checked_scale(-m / static_cast<float>(kSymmetricZero), m);
    } else {
      lo = std::min(lo, 0.0f);
      hi = std::max(hi, 0.0f);
      p.scale = checked_scale((hi - lo) / static_cast<float>(kMaxCode), hi - lo);
      const float z = std::nearbyint(-lo / p.scale);
      p.zero = z < 0.0f ? 0.0f : (z > float(kMaxCode) ? float(kMaxCode) : z);
    }
    return p;
  }

  /// Fits one group. `importance` is empty (all ones) or one non-negative weight per value.
  /// Without options this is plain min-max RTN; FitOptions as in qtl/quant/concepts.hpp.
  [[nodiscard]] Params fit(std::span<const float> x, std::span<const float> importance,
                           const FitOptions& opt = {}) const {
    if (x.empty()) fail(name(), ": cannot fit an empty group");
    if (!importance.empty() && importance.size() != x.size()) {
      fail(name(), ": importance has ", importance.size(), " values for a group of ", x.size());
    }
    float lo = x[0], hi = x[0];
    for (float v : x) {
      lo = std::min(lo, v);
      hi = std::max(hi, v);
    }
    // qtl/quant/scalar_fit.hpp's skeleton: min-max, the clip grid r * [lo, hi], then the
    // least-squares scale for fixed codes, s* = sum w x (q - z) / sum w (q - z)^2.
    return detail::search_fit(
        params_for_range(lo, hi), opt, [&](const Params& p) { return weighted_error(p, x, importance); },
        [&](auto&& consider) {
          const int steps = std::max(opt.clip_steps, 1);
          for (int i = 1; i <= steps; ++i) {
            const float r = 1.0f - (1.0f - opt.clip_min_ratio) * static_cast<float>(i) /
                                       static_cast<float>(steps);
            consider(params_for_range(r * lo, r * hi));
          }
        },
        [&](const Params& best) -> std::optional<Params> {
          double num = 0.0, den = 0.0;
          for (std::size_t i = 0; i < x.size(); ++i) {
            const double w = importance.empty() ? 1.0 : importance[i];
            const double d = static_cast<double>(encode(best, x[i])) - best.zero;
            num += w * x[i] * d;
            den += w * d * d;
          }
          if (den <= 0.0) return std::nullopt;
          Params p = best;
          const auto s = static_cast<float>(num / den);
          if (!(std::fabs(s) > 0.0f) || !std::isfinite(s)) return std::nullopt;
          p.scale = detail::round_to_half(s);
          if (p.scale == 0.0f || !std::isfinite(p.scale)) return std::nullopt;
          return p;
        });
  }

  /// sum_i w_i (x_i - decode(encode(x_i)))^2 with w = 1 when importance is empty.
  [[nodiscard]] static double weighted_error(const Params& p, std::span<const float> x,
                                             std::span<const float> importance) noexcept {
    double err = 0.0;
    for (std::size_t i = 0; i < x.size(); ++i) {
      const double d = static_cast<double>(x[i]) - decode(p, encode(p, x[i]));
      err += (importance.empty() ? 1.0 : importance[i]) * d * d;
    }
    return err;
  }

 private:
  // Rounds the scale to fp16. A zero range gets scale 1 (every value encodes to the zero point);
  // a range too small for fp16 gets the smallest fp16 subnormal; one too large is an error.
  static float checked_scale(float s, float range) {
    if (range == 0.0f || s == 0.0f) return 1.0f;
    const float h = detail::round_to_half(s);
    if (!std::isfinite(h)) {
      fail("uniform: a group spans ", range, ", too wide for an fp16 scale (max 65504 per step)");
    }
    if (h == 0.0f) return std::copysign(detail::half_to_float(1), s);
    return h;
  }
};

}  // namespace qtl

namespace qtl {

/// Calls f(Uniform<B, M>{}) for a bit width and mode known only at run time (a command line, a
/// file header); throws qtl::Error for bits outside [2, 8]. All calls must return one type.
template <class F>
decltype(auto) visit_uniform(int bits, Mode mode, F&& f) {
  auto with_mode = [&]<int B>() -> decltype(auto) {
    if (mode == Mode::Symmetric) return f(Uniform<B, Mode::Symmetric>{});
    return f(Uniform<B, Mode::Asymmetric>{});
  };
  switch (bits) {
    case 2: return with_mode.template operator()<2>();
    case 3: return with_mode.template operator()<3>();
    case 4: return with_mode.template operator()<4>();
    case 5: return with_mode.template operator()<5>();
    case 6: return with_mode.template operator()<6>();
    case 7: return with_mode.template operator()<7>();
    case 8: return with_mode.template operator()<8>();
    default: fail("uniform: bits must be in [2, 8], got ", bits);
  }
}

}  // namespace qtl
