// qtl/calib/gptq_partial_binary.hpp — partial binarization with GPTQ's error feedback (PB-LLM's
// "PB-GPTQ": Shang et al. 2023, §3.3).
//
//   auto pb = qtl::calib::gptq_partial_binary(qtl::PerGroup{32}, w, stats, {.salient_fraction = 0.1});
//   RowMatrixXf w_hat = qtl::dequantize(pb.matrix);   // the same PartialBinaryMatrix as RTN's
//
// 1. Salient weights are chosen as quantize_partial_binary chooses them, by W^2 times the
//    Hessian diagonal (the diagonal-Hessian form of PB-LLM's Hessian saliency), unless the
//    options bring their own importance.
// 2. GPTQ runs over the binary quantizer with the salient weights kept out (GptqOptions::keep):
//    every other weight is binarized column by column, its error fed forward onto the columns
//    not yet visited, salient ones included; the binary alphas are fitted per group on the
//    error-updated non-salient weights.
// 3. The salient weights' final values become the 8-bit residual correction C = W' - B at the
//    salient positions, exactly as in quantize_partial_binary (its 8-bit rounding is the only
//    error that is not fed back).
// The result is a PartialBinaryMatrix (same storage, bits and kernels as the RTN variant) plus
// GPTQ's report.
#pragma once

#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

#include "qtl/calib/gptq.hpp"
#include "qtl/calib/hessian.hpp"
#include "qtl/quant/partial_binary.hpp"

namespace qtl::calib {

struct GptqPartialBinaryResult {
  PartialBinaryMatrix matrix;
  GptqReport report;
};

/// PB-GPTQ from the Hessian H = 2/n X^T X [cols x cols]. Throws qtl::Error on bad shapes,
/// non-finite values, a salient fraction outside [0, 1) or more than 65535 columns.
template <class Deferred = void>
[[nodiscard]] GptqPartialBinaryResult gptq_partial_binary(const Granularity& granularity, MatrixRef w,
                                                                 const Eigen::MatrixXd& hessian,
                                                                 PartialBinaryOptions pb = {},
                                                                 GptqOptions opt = {}) {
  constexpr std::string_view kWhere = "gptq_partial_binary";
  if (hessian.rows() != w.cols() || hessian.cols() != w.cols()) {
    fail(kWhere, ": weights have ", w.cols(), " columns but the Hessian is ", hessian.rows(), "x", hessian.cols());
  }
  if (pb.column_importance.size() == 0 && pb.importance.size() == 0) {
    pb.column_importance = hessian.diagonal().cast<float>().cwiseMax(0.0f);
  }
  const RowMatrixXf imp = qtl::detail::partial_binary_importance(kWhere, w, pb);
  GptqPartialBinaryResult out;
  const std::vector<std::uint8_t> salient = qtl::detail::partial_binary_salient(w, imp, pb, out.matrix);
  opt.keep = std::span<const std::uint8_t>(salient);
  auto g = gptq(Binary<>{}, granularity, w, hessian, opt);
  out.matrix.binary = std::move(g.matrix);
  out.report = std::move(g.report);
  qtl::detail::add_partial_binary_correction(kWhere, out.matrix, salient, g.kept_values);
  return out;
}

/// PB-GPTQ with the statistics of a HessianAccumulator.
template <class Deferred = void>
[[nodiscard]] GptqPartialBinaryResult gptq_partial_binary(const Granularity& granularity, MatrixRef w,
                                                                 const HessianAccumulator& stats,
                                                                 const PartialBinaryOptions& pb = {},
                                                                 const GptqOptions& opt = {}) {
  if (stats.in_features() != w.cols()) {
    fail("gptq_partial_binary: weights have ", w.cols(), " columns but the statistics have ", stats.in_features(),
         " inputs");
  }
  auto r = gptq_partial_binary<Deferred>(granularity, w, stats.hessian(), pb, opt);
  r.report.tokens = stats.tokens();
  r.report.rank_deficient = stats.tokens() < w.cols();
  return r;
}

}  // namespace qtl::calib
