// qtl/calib/solver.hpp — the choice of a layer's solver as one type: each solver is its own
// options struct, and a Solver holds exactly one of them.
//
//   calib::Solver s = calib::GptqOptions{.act_order = true};     // GPTQ, descending diag(H)
//   calib::Solver r = calib::RtnOptions{.fit = FitOptions::searched(), .imatrix = true};
//
// The alternatives: RtnOptions (round to nearest, each group fitted on its own), GptqOptions
// (Hessian error feedback, qtl/calib/gptq.hpp), SignRoundOptions (learned rounding on the layer
// objective, qtl/calib/rounding.hpp), HqqOptions (calibration-free lp fit, qtl/quant/hqq.hpp).
// Whoever runs a solver walks the variant with std::visit, so a solver that one of them does not
// handle is a compile error, not a branch that throws. Places that run only some solvers take a
// narrower variant of the same types (qtl/model: partial binarization takes
// variant<RtnOptions, GptqOptions>; a vector-quantized layer runs GPTVQ, whose options are
// GptqOptions), so a recipe names its solver the same way everywhere. A solver that a quantizer
// family cannot run (SignRound and HQQ fit uniform grids only) is rejected by calib::calibrate
// with a qtl::Error naming both.
#pragma once

#include <string_view>
#include <variant>

#include "qtl/calib/gptq.hpp"
#include "qtl/calib/rounding.hpp"
#include "qtl/core/overloaded.hpp"
#include "qtl/quant/concepts.hpp"
#include "qtl/quant/hqq.hpp"

namespace qtl::calib {

using HqqOptions = qtl::HqqOptions;  ///< the HQQ fit is a quantizer-level step (qtl/quant/hqq.hpp)

/// Round to nearest (quantize_matrix): each group fitted on its own, with `fit`; `imatrix`
/// weights each column's error by the inputs' mean x² (llama.cpp's importance matrix), which
/// matters only together with fit.clip_search and is the only reason RTN reads statistics.
struct RtnOptions {
  FitOptions fit{};
  bool imatrix = false;
};

using Solver = std::variant<RtnOptions, GptqOptions, SignRoundOptions, HqqOptions>;

[[nodiscard]] constexpr std::string_view solver_name(const RtnOptions&) noexcept { return "RTN"; }
[[nodiscard]] constexpr std::string_view solver_name(const GptqOptions&) noexcept { return "GPTQ"; }
[[nodiscard]] constexpr std::string_view solver_name(const SignRoundOptions&) noexcept { return "SignRound"; }
[[nodiscard]] constexpr std::string_view solver_name(const HqqOptions&) noexcept { return "HQQ"; }
/// The name of the solver a variant of solver options holds ("RTN", "GPTQ", ...).
template <class... S>
[[nodiscard]] constexpr std::string_view solver_name(const std::variant<S...>& s) noexcept {
  return std::visit([](const auto& o) { return solver_name(o); }, s);
}

/// Whether the solver reads the layer's input statistics (HQQ never; RTN only for its imatrix).
[[nodiscard]] inline bool reads_statistics(const Solver& s) noexcept {
  return std::visit(Overloaded{[](const RtnOptions& o) { return o.imatrix; },
                               [](const HqqOptions&) { return false; },
                               [](const auto&) { return true; }},
                    s);
}

/// The damping (a fraction of mean diag H) the solver applies to H; the GPTQ default for the
/// solvers that do not invert H. A pipeline that solves toward fp32 targets uses it there too.
[[nodiscard]] inline double damp_fraction(const Solver& s) noexcept {
  return std::visit(Overloaded{[](const GptqOptions& o) { return o.damp_fraction; },
                               [](const SignRoundOptions& o) { return o.damp_fraction; },
                               [](const auto&) { return GptqOptions{}.damp_fraction; }},
                    s);
}

/// `s` with its damping set to `fraction`, for the solvers that damp H (the others unchanged).
template <class... S>
[[nodiscard]] std::variant<S...> with_damp(std::variant<S...> s, double fraction) {
  std::visit(
      [&](auto& o) {
        if constexpr (requires { o.damp_fraction; }) o.damp_fraction = fraction;
      },
      s);
  return s;
}

/// GPTQ whose group fits search the clip range on the Hessian-weighted error (recipe gptq-clip).
[[nodiscard]] inline GptqOptions gptq_clip_options() {
  GptqOptions o;
  o.fit.clip_search = true;
  o.hessian_importance = true;
  return o;
}

}  // namespace qtl::calib
