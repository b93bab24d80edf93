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

/// Options every scalar `fit` understands, with one meaning for every family. A fit runs the
/// skeleton in qtl/quant/scalar_fit.hpp (detail::search_fit):
///   1. the family's plain fit (min-max or absmax round-to-nearest, the TWN threshold search,
///      ggml's reference bytes, ...): `FitOptions{}` returns it unchanged;
///   2. with clip_search, the family's clip grid of shrunken ranges or scales, keeping any
///      candidate with a lower importance-weighted squared error (the plain fit is the first
///      candidate, so the search never increases the error);
///   3. refine_iterations times: refit the group's parameters by weighted least squares for the
///      codes the current best gives (a scale; scale and offset; or mean and plane scales), keep
///      the refit only if the weighted error falls, else stop.
/// Fits that are already least-squares optimal for their codes take neither option (Binary's
/// mean |x|, the k-means tables, both ternary rules). ggml's k-quant
/// super-blocks (q2_K..q6_K) store sub-block scales as integer codes of one super-block scale:
/// their clip search refits each sub-block itself and refine_iterations is not used.
struct FitOptions {
  bool clip_search = false;
  int clip_steps = 20;
  float clip_min_ratio = 0.5f;
  int refine_iterations = 0;

  /// The clip grid, then two least-squares refits (the "-clip" and "-imatrix" RTN recipes).
  [[nodiscard]] static constexpr FitOptions searched() noexcept {
    FitOptions o;
    o.clip_search = true;
    o.refine_iterations = 2;
    return o;
  }
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
