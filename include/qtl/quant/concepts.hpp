// qtl/quant/concepts.hpp — what a scalar quantizer policy must provide.
//
// A scalar quantizer maps one number to a small integer code and back, given per-group
// parameters that it fits:
//   params = q.fit(values, importance, options)   // importance may be empty (all ones)
//   code   = q.encode(params, x)                   // nearest representable level
//   x_hat  = q.decode(params, code)
// plus kBits (codes are in [0, 2^kBits)), a name, and param_bits(): the bits one group's
// parameters occupy in the packed format, so bits per weight are counted honestly. A format
// that stores codes in fewer bits than kBits (ggml's tq1_0: 5 trits per byte) says so with
// `static constexpr double kCodeBits` (code_bits<Q>()).
#pragma once

#include <concepts>
#include <cstdint>
#include <span>
#include <string>

namespace qtl {

/// Options every scalar `fit` understands.
struct FitOptions {
  /// Search shrunken ranges r * [min, max] for r in a grid from 1 down to clip_min_ratio and
  /// keep the one with the lowest importance-weighted squared error (llama.cpp's scale search,
  /// AWQ's clip search). r = 1 is always tried, so the search never increases the error.
  bool clip_search = false;
  int clip_steps = 20;
  float clip_min_ratio = 0.5f;
  /// With clip_search: after the grid, refit the scale for the chosen codes by weighted least
  /// squares and re-encode, keeping each refit only if the weighted error falls.
  int refine_iterations = 2;
};

template <class Q>
concept ScalarQuantizer =
    std::copy_constructible<Q> &&
    requires(const Q q, const typename Q::Params p, std::span<const float> x, float v,
             std::uint8_t code, const FitOptions& opt) {
      typename Q::Params;
      { Q::kBits } -> std::convertible_to<int>;
      { q.name() } -> std::convertible_to<std::string>;
      { q.fit(x, x, opt) } -> std::same_as<typename Q::Params>;
      { q.encode(p, v) } -> std::same_as<std::uint8_t>;
      { q.decode(p, code) } -> std::same_as<float>;
      { q.param_bits() } -> std::convertible_to<double>;
    };

/// Bits one code occupies in the packed format: Q::kCodeBits where given, else Q::kBits.
template <ScalarQuantizer Q>
[[nodiscard]] constexpr double code_bits() noexcept {
  if constexpr (requires { Q::kCodeBits; }) {
    return static_cast<double>(Q::kCodeBits);
  } else {
    return static_cast<double>(Q::kBits);
  }
}

}  // namespace qtl
