// qtl/quant/log2.hpp — logarithmic scalar quantizers: power-of-two (or power-of-sqrt2) levels,
// and the NUPES power-exponent grid.
//
// Log2<Bits, Base> — sign + magnitude exponent relative to a per-group fp16 scale s:
//   code = sign << (Bits-1) | m,   m in [0, M],  M = 2^(Bits-1) - 1,  sign = 1 for negatives
//   x_hat = 0                                   if m = 0 (the zero code; -0 decodes to 0 too)
//   x_hat = (-1)^sign * s * base^-(M - m)       if m >= 1
// so the largest magnitude is s (= the group's absmax before the optional scale search) and the
// smallest non-zero one is s * base^-(M-1). base = 2 is the classic log2 quantizer (levels are
// s * 2^-k exactly, computed with ldexp); base = sqrt2 gives twice the resolution over half the
// range: the log-sqrt2 quantizer of RepQ-ViT and the power-of-square-root-of-two levels of ASQ
// (s * 2^-k/2; odd powers use float(sqrt(1/2)) * 2^-(k-1)/2). Encoding picks the nearest level
// in the linear domain (not in the log domain), which is what minimizes the weight error.
//
// PowerGrid<Bits> — NUPES's power-function grid (Yvinec et al., "NUPES: non-uniform post-training
// quantization via power exponent search"): levels
//   x_hat = s * sign(q) * |q / qmax|^gamma,   q in [-qmax, qmax],  qmax = 2^(Bits-1) - 1,
//   code = q + qmax  (code 2^Bits - 1 is unused and decodes to 0).
// gamma = 1 is the symmetric uniform grid; gamma > 1 crowds levels near zero like a log grid,
// gamma < 1 spreads them outward. gamma is a property of the quantizer (one per matrix);
// fit_power_grid() searches it over a grid for one matrix by the importance-weighted error.
//
// Both are "scaled-table" quantizers (qtl/quant/decode_table.hpp): x_hat = s * L[code], with L
// fixed by the quantizer, so at <= 4 bits the table-decode kernels run them unchanged.
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <limits>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "qtl/core/error.hpp"
#include "qtl/core/validate.hpp"
#include "qtl/quant/concepts.hpp"
#include "qtl/quant/decode_table.hpp"
#include "qtl/quant/granularity.hpp"
#include "qtl/quant/quantize_matrix.hpp"
#include "qtl/quant/scalar_fit.hpp"

namespace qtl {

enum class Log2Base { Two, Sqrt2 };

template <int Bits, Log2Base Base = Log2Base::Two>
class Log2 {
  static_assert(Bits >= 2 && Bits <= 8, "Log2<Bits>: Bits must be in [2, 8]");

 public:
  static constexpr int kBits = Bits;
  static constexpr int kCodes = 1 << Bits;
  static constexpr int kMaxMagnitude = (1 << (Bits - 1)) - 1;  ///< M
  static constexpr TableForm kTableForm = TableForm::ScaledShared;

  struct Params {
    float scale = 1.0f;  ///< fp16-representable, > 0: the largest magnitude
    friend bool operator==(const Params&, const Params&) = default;
  };

  [[nodiscard]] std::string name() const {
    return str_cat(Base == Log2Base::Two ? "log2-" : "log2sqrt2-", Bits);
  }
  [[nodiscard]] static constexpr double param_bits() noexcept { return 16.0; }
  [[nodiscard]] static constexpr double base() noexcept {
    return Base == Log2Base::Two ? 2.0 : 1.4142135623730951;
  }

  /// base^-k as a float: an exact power of two for base 2 (and for even k with base sqrt2).
  [[nodiscard]] static float power(int k) noexcept {
    if constexpr (Base == Log2Base::Two) {
      return std::ldexp(1.0f, -k);
    } else {
      return (k % 2 == 0) ? std::ldexp(1.0f, -k / 2)
                          : std::ldexp(static_cast<float>(0.70710678118654752), -(k - 1) / 2);
    }
  }

  /// Unscaled level of a code: 0, or +-base^-(M - m).
  [[nodiscard]] static float level(std::uint8_t code) noexcept { return levels()[code]; }

  [[nodiscard]] static float decode(const Params& p, std::uint8_t code) noexcept {
    return p.scale * level(code);
  }

  [[nodiscard]] static std::uint8_t encode(const Params& p, float x) noexcept {
    const int sign = x < 0.0f ? 1 : 0;
    const float a = std::fabs(x) / p.scale;
    const auto make = [&](int m) { return static_cast<std::uint8_t>((m == 0 ? 0 : sign << (Bits - 1)) | m); };
    if (!(a > 0.0f)) return 0;
    // k_real = -log_base(a); the nearest level is next to floor(k_real): check a few neighbours
    // (float log is not exact) and the zero code, in the linear domain.
    const double kr = -std::log2(static_cast<double>(a)) * (Base == Log2Base::Two ? 1.0 : 2.0);
    const int k0 = static_cast<int>(std::floor(std::clamp(kr, -2.0, double(kMaxMagnitude) + 2.0)));
    std::uint8_t best = 0;
    float best_err = std::fabs(x);
    for (int k = k0 - 1; k <= k0 + 2; ++k) {
      if (k < 0 || k > kMaxMagnitude - 1) continue;
      const std::uint8_t c = make(kMaxMagnitude - k);
      const float e = std::fabs(x - decode(p, c));
      if (e < best_err) {
        best_err = e;
        best = c;
      }
    }
    return best;
  }

  /// s0 = absmax; clip_search tries s in (absmax / base, absmax] (the log grid repeats beyond
  /// that), refine_iterations refits s by least squares (qtl/quant/scalar_fit.hpp).
  [[nodiscard]] Params fit(std::span<const float> x, std::span<const float> importance,
                           const FitOptions& opt = {}) const {
    detail::check_group(name(), x, importance);
    return detail::fit_table_scale(*this, x, importance, opt, detail::abs_max(x),
                                   static_cast<float>(1.0 / base()));
  }

  [[nodiscard]] DecodeTable shared_table() const
    requires(Bits <= 4)
  {
    DecodeTable t{};
    for (int k = 0; k < kCodes; ++k) t[static_cast<std::size_t>(k)] = levels()[static_cast<std::size_t>(k)];
    return t;
  }
  [[nodiscard]] static Params params_from_scale(float s) noexcept { return Params{s}; }

 private:
  static const std::array<float, kCodes>& levels() {
    static const std::array<float, kCodes> table = [] {
      std::array<float, kCodes> t{};
      for (int c = 0; c < kCodes; ++c) {
        const int m = c & kMaxMagnitude;
        const bool neg = (c >> (Bits - 1)) != 0;
        t[static_cast<std::size_t>(c)] = m == 0 ? 0.0f : (neg ? -power(kMaxMagnitude - m) : power(kMaxMagnitude - m));
      }
      return t;
    }();
    return table;
  }
};

template <int Bits>
class PowerGrid {
  static_assert(Bits >= 2 && Bits <= 8, "PowerGrid<Bits>: Bits must be in [2, 8]");

 public:
  static constexpr int kBits = Bits;
  static constexpr int kCodes = 1 << Bits;
  static constexpr int kQMax = (1 << (Bits - 1)) - 1;
  static constexpr TableForm kTableForm = TableForm::ScaledShared;
  static constexpr float kMinGamma = 0.25f;
  static constexpr float kMaxGamma = 4.0f;

  struct Params {
    float scale = 1.0f;  ///< fp16-representable, > 0: the largest magnitude
    friend bool operator==(const Params&, const Params&) = default;
  };

  /// gamma in [0.25, 4]; throws qtl::Error otherwise.
  explicit PowerGrid(float gamma = 1.0f) : gamma_(gamma) {
    if (!(gamma >= kMinGamma && gamma <= kMaxGamma)) {
      fail("PowerGrid: gamma must be in [", kMinGamma, ", ", kMaxGamma, "], got ", gamma);
    }
    for (int c = 0; c < kCodes; ++c) {
      const int q = c - kQMax;
      const float mag = c == kCodes - 1 ? 0.0f
                                        : static_cast<float>(std::pow(std::abs(q) / double(kQMax), double(gamma)));
      levels_[static_cast<std::size_t>(c)] = q < 0 ? -mag : mag;
    }
  }

  [[nodiscard]] float gamma() const noexcept { return gamma_; }
  [[nodiscard]] std::string name() const { return str_cat("pow", Bits, "-g", gamma_); }
  [[nodiscard]] static constexpr double param_bits() noexcept { return 16.0; }

  [[nodiscard]] float level(std::uint8_t code) const noexcept { return levels_[code]; }
  [[nodiscard]] float decode(const Params& p, std::uint8_t code) const noexcept {
    return p.scale * levels_[code];
  }
  [[nodiscard]] std::uint8_t encode(const Params& p, float x) const noexcept {
    const float a = std::fabs(x) / p.scale;
    // |q| = qmax * a^(1/gamma) inverts the grid; the nearest level (in the linear domain) is at
    // floor or ceil of it: check a neighbourhood because pow is not exact.
    const double qr = kQMax * std::pow(std::min(static_cast<double>(a), 2.0), 1.0 / gamma_);
    const int q0 = static_cast<int>(std::floor(std::min(qr, double(kQMax))));
    const int sign = x < 0.0f ? -1 : 1;
    std::uint8_t best = static_cast<std::uint8_t>(kQMax);  // q = 0
    float best_err = std::fabs(x);
    for (int q = q0 - 1; q <= q0 + 2; ++q) {
      if (q < 1 || q > kQMax) continue;
      const auto c = static_cast<std::uint8_t>(sign * q + kQMax);
      const float e = std::fabs(x - decode(p, c));
      if (e < best_err) {
        best_err = e;
        best = c;
      }
    }
    return best;
  }

  [[nodiscard]] Params fit(std::span<const float> x, std::span<const float> importance,
                           const FitOptions& opt = {}) const {
    detail::check_group(name(), x, importance);
    return detail::fit_table_scale(*this, x, importance, opt, detail::abs_max(x), opt.clip_min_ratio);
  }

  [[nodiscard]] DecodeTable shared_table() const
    requires(Bits <= 4)
  {
    DecodeTable t{};
    for (int k = 0; k < kCodes; ++k) t[static_cast<std::size_t>(k)] = levels_[static_cast<std::size_t>(k)];
    return t;
  }
  [[nodiscard]] static Params params_from_scale(float s) noexcept { return Params{s}; }

 private:
  float gamma_ = 1.0f;
  std::array<float, kCodes> levels_{};
};

/// The result of searching a power grid's exponent for one matrix.
template <int Bits>
struct PowerGridFit {
  PowerGrid<Bits> quantizer;
  QuantizedMatrix<PowerGrid<Bits>> matrix;
  double weighted_error = 0.0;  ///< sum over weights of importance * (w - w_hat)^2

  /// bits_per_weight(matrix) plus the one float gamma stored for the whole matrix.
  [[nodiscard]] double bits_per_weight() const {
    return qtl::bits_per_weight(matrix) +
           32.0 / (static_cast<double>(matrix.rows()) * static_cast<double>(matrix.cols()));
  }
};

/// The default exponent grid of fit_power_grid: 0.5 .. 3, gamma = 1 (uniform) included.
[[nodiscard]] inline std::vector<float> default_power_gammas() {
  return {0.5f, 0.625f, 0.75f, 0.875f, 1.0f, 1.125f, 1.25f, 1.5f, 1.75f, 2.0f, 2.5f, 3.0f};
}

/// Quantizes W with PowerGrid<Bits>{gamma} for every gamma of the grid and keeps the one with
/// the lowest importance-weighted squared error (the weights are those of `opt`: per column
/// times per element). NUPES searches the exponent per layer in the same spirit.
template <int Bits>
[[nodiscard]] PowerGridFit<Bits> fit_power_grid(const Granularity& granularity, MatrixRef w,
                                                const QuantizeOptions& opt = {},
                                                std::span<const float> gammas = {}) {
  std::vector<float> grid(gammas.begin(), gammas.end());
  if (grid.empty()) grid = default_power_gammas();
  std::optional<PowerGridFit<Bits>> best;
  for (float g : grid) {
    PowerGrid<Bits> q(g);
    auto m = quantize_matrix(q, granularity, w, opt);
    double err = 0.0;
    for (Index r = 0; r < w.rows(); ++r) {
      for (Index c = 0; c < w.cols(); ++c) {
        double imp = 1.0;
        if (opt.column_importance.size() > 0) imp *= opt.column_importance[c];
        if (opt.importance.size() > 0) imp *= opt.importance(r, c);
        const double d = static_cast<double>(w(r, c)) - m.value(r, c);
        err += imp * d * d;
      }
    }
    if (!best || err < best->weighted_error) best = PowerGridFit<Bits>{q, std::move(m), err};
  }
  return std::move(*best);
}

/// Calls f(Log2<B, base>{}) for a bit width known only at run time; throws qtl::Error for bits
/// outside [2, 8]. All calls must return one type.
template <class F>
decltype(auto) visit_log2(int bits, Log2Base base, F&& f) {
  auto with_base = [&]<int B>() -> decltype(auto) {
    if (base == Log2Base::Two) return f(Log2<B, Log2Base::Two>{});
    return f(Log2<B, Log2Base::Sqrt2>{});
  };
  switch (bits) {
    case 2: return with_base.template operator()<2>();
    case 3: return with_base.template operator()<3>();
    case 4: return with_base.template operator()<4>();
    case 5: return with_base.template operator()<5>();
    case 6: return with_base.template operator()<6>();
    case 7: return with_base.template operator()<7>();
    case 8: return with_base.template operator()<8>();
    default: fail("log2: bits must be in [2, 8], got ", bits);
  }
}

/// Calls f(PowerGrid<B>{gamma}) for a bit width known only at run time; throws qtl::Error for
/// bits outside [2, 8] or a gamma outside [0.25, 4].
template <class F>
decltype(auto) visit_power_grid(int bits, float gamma, F&& f) {
  switch (bits) {
    case 2: return f(PowerGrid<2>{gamma});
    case 3: return f(PowerGrid<3>{gamma});
    case 4: return f(PowerGrid<4>{gamma});
    case 5: return f(PowerGrid<5>{gamma});
    case 6: return f(PowerGrid<6>{gamma});
    case 7: return f(PowerGrid<7>{gamma});
    case 8: return f(PowerGrid<8>{gamma});
    default: fail("power grid: bits must be in [2, 8], got ", bits);
  }
}

}  // namespace qtl
