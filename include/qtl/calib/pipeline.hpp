// qtl/calib/pipeline.hpp — one layer's calibration as a value, calib::Pipeline: transforms, then
// a solver, then a quantizer, then an optional low-rank correction. (A model-level recipe,
// qtl::model::Recipe, runs a Pipeline, or another solver, over every layer of a model.)
//
//   calibrate(q, granularity, W, statistics, pipeline) -> CalibratedLayer<Q>
// runs, in order:
//   0. targets       (pipeline.fp32_targets) W ← W* = the weights that best reproduce the
//                    unquantized model's outputs from the layer's actual inputs (asymmetric_target)
//   1. rotation      (pipeline.rotate)      T ← R (randomized Hadamard; QuIP#, QuaRot)
//   2. SmoothQuant   (pipeline.smoothquant) T ← diag(1/s) T, s from max|x'| and max|w'|
//   3. AWQ           (pipeline.awq)         T ← diag(1/s) T, s searched on the quantizer; clip search
//   4. solver        pipeline.solver, one of the calib::Solver alternatives (qtl/calib/solver.hpp):
//                    RtnOptions (quantize_matrix), GptqOptions, SignRoundOptions or HqqOptions
//                    (uniform codes only), on W' = W T⁻¹ with the statistics of T x
//   5. refine        (pipeline.refine.sweeps > 0) coordinate descent on the codes and least-squares
//                    group parameters, on the layer objective (qtl/calib/rounding.hpp)
//   6. low rank      (pipeline.low_rank.rank > 0) A B ≈ W' − Ŵ', weighted by the inputs T x
// so "rotate → AWQ → GPTQ" (RSQ), "rotate → GPTQ" (QuaRot / QuIP#-style), "AWQ + GPTQ" (QQQ's
// weight side), "GPTQ + LQER" are all one struct literal. The result holds the quantized matrix
// in the transformed input space and the InputTransform T; the layer computes
//   y = Ŵ' (T x) + A (B (T x)).
// A driver folds T into the op producing x where it can (fold_into_norm / fold_into_previous for
// the scalings, a previous linear for the rotation) or runs T.apply(x) online per token.
// Layers that read the same input and must share one fold (q/k/v; w1/w3) are calibrated together
// with calibrate_group, which uses one transform for all of them.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "qtl/calib/awq.hpp"
#include "qtl/calib/gptq.hpp"
#include "qtl/calib/hadamard.hpp"
#include "qtl/calib/hessian.hpp"
#include "qtl/calib/lowrank.hpp"
#include "qtl/calib/rounding.hpp"
#include "qtl/calib/smoothquant.hpp"
#include "qtl/calib/solver.hpp"
#include "qtl/calib/transform.hpp"
#include "qtl/core/error.hpp"
#include "qtl/core/overloaded.hpp"
#include "qtl/core/types.hpp"
#include "qtl/quant/concepts.hpp"
#include "qtl/quant/granularity.hpp"
#include "qtl/quant/hqq.hpp"
#include "qtl/quant/quantize_matrix.hpp"

namespace qtl::calib {

struct Pipeline {
  std::string name = "gptq";
  bool rotate = false;
  std::uint64_t rotation_seed = 0x51ed5eedULL;
  bool smoothquant = false;
  SmoothQuantOptions smoothquant_options{};
  bool awq = false;
  AwqOptions awq_options{};
  /// The solver and its options (qtl/calib/solver.hpp); GPTQ with gptq.py's defaults unless set.
  Solver solver = GptqOptions{};
  /// Coordinate-descent refinement of whatever the solver produced (sweeps = 0: off).
  RefineOptions refine{};
  LowRankOptions low_rank{.rank = 0, .scaling = LowRankOptions::Scaling::Hessian};
  /// Quantize toward the unquantized model's outputs (asymmetric_target; needs
  /// statistics.cross, which the sequential driver supplies for recipes that ask).
  bool fp32_targets = false;
};

template <ScalarQuantizer Q>
struct CalibratedLayer {
  QuantizedMatrix<Q> matrix;                    ///< Ŵ' in the transformed input space
  InputTransform transform;                     ///< T: the layer reads T x
  std::optional<LowRankCorrection> low_rank;    ///< A B, also on T x
  std::optional<GptqReport> gptq_report;
  std::optional<AwqResult> awq_report;          ///< scales and losses (weights dropped)
  std::optional<RoundingReport> signround_report;
  std::optional<RoundingReport> refine_report;

  /// y = Ŵ' (T x) + A B (T x), for activations [tokens x in]: the reference forward pass.
  [[nodiscard]] RowMatrixXf forward(MatrixRef x) const {
    const RowMatrixXf tx = transform.is_identity() ? RowMatrixXf(x) : transform.apply_activations(x);
    RowMatrixXf y = tx * dequantize(matrix).transpose();
    if (low_rank) y += low_rank->apply(tx);
    return y;
  }
  /// The weights the layer applies to the original x: (Ŵ' + A B) T, as a dense matrix.
  [[nodiscard]] RowMatrixXf effective_weight() const {
    RowMatrixXf w = dequantize(matrix);
    if (low_rank) w += low_rank->dense();
    // W_eff = W' T: its rows are Tᵀ w'. Undo the weight map step by step, last step first.
    for (auto it = transform.steps().rbegin(); it != transform.steps().rend(); ++it) {
      std::visit(Overloaded{[&](const RandomizedHadamard& r) {
                              for (Index i = 0; i < w.rows(); ++i) r.apply_inverse(w.row(i).data());
                            },
                            [&](const ChannelScale& cs) { w.array().rowwise() /= cs.scales.transpose().array(); }},
                 *it);
    }
    return w;
  }
  /// Codes, group parameters and the low-rank factors (online transforms are not counted: a
  /// rotation is generated from a seed, scales fold into the previous op).
  [[nodiscard]] double bits_per_weight() const {
    return qtl::bits_per_weight(matrix) + (low_rank ? low_rank->bits_per_weight() : 0.0);
  }
};

/// Calibrates layers that read the same input x with one shared transform.
template <ScalarQuantizer Q>
[[nodiscard]] std::vector<CalibratedLayer<Q>> calibrate_group(const Q& q, const Granularity& granularity,
                                                              const std::vector<RowMatrixXf>& weights,
                                                              const LayerStatistics& stats,
                                                              const Pipeline& pipeline) {
  constexpr std::string_view kWhere = "calibrate";
  if (weights.empty()) fail(kWhere, ": no weight matrix given");
  if constexpr (!detail::kIsUniform<Q>) {
    if (std::holds_alternative<SignRoundOptions>(pipeline.solver) || std::holds_alternative<HqqOptions>(pipeline.solver)) {
      fail(kWhere, ": recipe '", pipeline.name, "': the ", solver_name(pipeline.solver), " solver fits a uniform grid; ",
           q.name(), " is not uniform (use refine for other families)");
    }
  }
  const Index n = stats.in_features();
  for (const auto& w : weights) {
    if (w.cols() != n) {
      fail(kWhere, ": recipe '", pipeline.name, "': weights have ", w.cols(), " columns but the statistics have ",
           n, " inputs");
    }
  }
  InputTransform t;
  std::vector<RowMatrixXf> ws = weights;
  if (pipeline.fp32_targets) {
    if (stats.cross.size() == 0) {
      fail(kWhere, ": recipe '", pipeline.name, "' quantizes toward the unquantized model's outputs, and the statistics "
           "carry no cross term (statistics.cross; the sequential driver fills it for such recipes)");
    }
    for (auto& w : ws) w = asymmetric_target(w, stats.hessian, stats.cross, damp_fraction(pipeline.solver));
  }
  LayerStatistics st = stats;
  auto add_step = [&](TransformStep step) {
    InputTransform one;
    one.then(step);
    for (auto& w : ws) w = one.apply_weights(w);
    st = one.apply_statistics(std::move(st));
    t.then(std::move(step));
  };
  if (pipeline.rotate) add_step(RandomizedHadamard(n, pipeline.rotation_seed));
  if (pipeline.smoothquant) add_step(smoothquant_scales(ws, st, pipeline.smoothquant_options));
  std::optional<AwqResult> awq_res;
  if (pipeline.awq) {
    awq_res = awq(q, granularity, ws, st, pipeline.awq_options);
    InputTransform one;
    one.then(awq_res->scale);
    st = one.apply_statistics(std::move(st));
    t.then(awq_res->scale);
    ws = std::move(awq_res->weights);  // scaled and clipped
    awq_res->weights.clear();
  }

  std::vector<CalibratedLayer<Q>> out;
  for (const auto& w : ws) {
    CalibratedLayer<Q> layer;
    layer.transform = t;
    std::visit(Overloaded{[&](const GptqOptions& o) {
                            auto res = gptq(q, granularity, w, st.hessian, o);
                            res.report.tokens = st.tokens;
                            res.report.rank_deficient = st.tokens < n;
                            layer.matrix = std::move(res.matrix);
                            layer.gptq_report = std::move(res.report);
                          },
                          [&](const SignRoundOptions& o) {
                            if constexpr (detail::kIsUniform<Q>) {  // else rejected above
                              auto res = signround(q, granularity, w, st.hessian, o);
                              layer.matrix = std::move(res.matrix);
                              layer.signround_report = res.report;
                            }
                          },
                          [&](const HqqOptions& o) {
                            if constexpr (detail::kIsUniform<Q>) layer.matrix = quantize_matrix_hqq(q, granularity, w, o);
                          },
                          [&](const RtnOptions& o) {
                            QuantizeOptions qo;
                            qo.fit = o.fit;
                            // mean x² per input, up to a common factor (which no fit depends on).
                            if (o.imatrix) qo.column_importance = st.hessian.diagonal().cast<float>().cwiseMax(0.0f);
                            layer.matrix = quantize_matrix(q, granularity, w, qo);
                          }},
               pipeline.solver);
    if (pipeline.refine.sweeps > 0) {
      auto res = refine_rounding(std::move(layer.matrix), w, st.hessian, pipeline.refine);
      layer.matrix = std::move(res.matrix);
      layer.refine_report = res.report;
    }
    if (pipeline.low_rank.rank > 0) {
      layer.low_rank = low_rank_correction(w, dequantize(layer.matrix), st, pipeline.low_rank);
    }
    layer.awq_report = awq_res;
    out.push_back(std::move(layer));
  }
  return out;
}

/// One layer: calibrate(layer W, statistics of its inputs, pipeline) -> quantized layer + the
/// transform to apply to its inputs.
template <ScalarQuantizer Q>
[[nodiscard]] CalibratedLayer<Q> calibrate(const Q& q, const Granularity& granularity, MatrixRef w,
                                           const LayerStatistics& stats, const Pipeline& pipeline) {
  auto layers = calibrate_group(q, granularity, std::vector<RowMatrixXf>{RowMatrixXf(w)}, stats, pipeline);
  return std::move(layers.front());
}

}  // namespace qtl::calib
