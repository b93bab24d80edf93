// qtl/model/calibrated_recipe.hpp — qtl::calib recipes (GPTQ, AWQ, rotations, SmoothQuant,
// low-rank compensation, and their compositions) as Recipes of the sequential driver.
//
// calib::calibrate_group returns, per layer, Ŵ' (quantized in a transformed input space), the
// input transform T and an optional low-rank term. The model layer computes
//   y = Ŵ' (T x) + A (B (T x))
// with Ŵ' on the packed kernels and T applied online per token (O(n log n) for the randomized
// Hadamard, O(n) for scalings). Where T is only channel scalings and the group reads an RMSNorm
// output (wq/wk/wv, w1/w3), the scales are folded into the norm's gain instead (llm-awq's fold:
// QuantizedLayer::input_scale, applied by the driver), so nothing runs online; the outputs are
// the same up to float rounding. Scalings of wo's and w2's inputs, and rotations, run online.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "qtl/calib/pipeline.hpp"
#include "qtl/model/quantized_linear.hpp"
#include "qtl/model/sequential.hpp"

namespace qtl::model {

/// A linear layer that reads T x: y = inner(T x) + low_rank(T x).
class TransformedLinear final : public LinearOp {
 public:
  TransformedLinear(calib::InputTransform transform, std::unique_ptr<LinearOp> inner,
                    std::optional<calib::LowRankCorrection> low_rank)
      : transform_(std::move(transform)), inner_(std::move(inner)), low_rank_(std::move(low_rank)) {}
  TransformedLinear(const TransformedLinear& other)
      : LinearOp(other), transform_(other.transform_), inner_(other.inner_->clone()), low_rank_(other.low_rank_) {}

  [[nodiscard]] Index in_features() const override { return inner_->in_features(); }
  [[nodiscard]] Index out_features() const override { return inner_->out_features(); }
  [[nodiscard]] RowMatrixXf forward(MatrixRef x) const override {
    if (transform_.is_identity() && !low_rank_) return inner_->forward(x);
    const RowMatrixXf tx = transform_.is_identity() ? RowMatrixXf(x) : transform_.apply_activations(x);
    RowMatrixXf y = inner_->forward(tx);
    if (low_rank_) y += low_rank_->apply(tx);
    return y;
  }
  [[nodiscard]] std::unique_ptr<LinearOp> clone() const override {
    return std::make_unique<TransformedLinear>(*this);
  }
  [[nodiscard]] std::string describe() const override {
    return str_cat(inner_->describe(), transform_.is_identity() ? "" : " on transformed inputs",
                   low_rank_ ? str_cat(" + rank-", low_rank_->rank(), " correction") : "");
  }

 private:
  calib::InputTransform transform_;
  std::unique_ptr<LinearOp> inner_;
  std::optional<calib::LowRankCorrection> low_rank_;
};

template <ScalarQuantizer Q>
class CalibratedRecipe final : public Recipe {
 public:
  /// fold_scales: fold pure channel scalings of an RMSNorm-fed group into the norm's gain.
  CalibratedRecipe(Q quantizer, Granularity granularity, calib::Pipeline recipe, KernelOptions kernel = {},
                   bool fold_scales = true)
      : q_(std::move(quantizer)),
        granularity_(granularity),
        recipe_(std::move(recipe)),
        kernel_(kernel),
        fold_scales_(fold_scales) {}

  [[nodiscard]] std::string name() const override { return recipe_.name; }
  [[nodiscard]] bool wants_fp32_targets() const override { return recipe_.fp32_targets; }
  /// Whether any step reads the layer's input statistics: not the rotation (a fixed seed), not
  /// HQQ, not RTN without imatrix. If none does, the driver runs no calibration pass.
  [[nodiscard]] bool needs_calibration() const override {
    const auto& r = recipe_;
    return calib::reads_statistics(r.solver) || r.refine.sweeps > 0 || r.smoothquant || r.awq ||
           r.low_rank.rank > 0 || r.fp32_targets;
  }

  [[nodiscard]] std::vector<QuantizedLayer> quantize(std::span<const LayerCalibration> group) const override {
    std::vector<RowMatrixXf> weights;
    for (const auto& l : group) weights.push_back(*l.weight);
    calib::LayerStatistics stats;
    if (needs_calibration()) {
      stats = group.front().stats->statistics();
      if (recipe_.fp32_targets) {
        if (group.front().fp32_cross == nullptr) {
          fail("recipe '", recipe_.name, "': the driver supplied no fp32 cross statistics for '", group.front().name,
               "'");
        }
        stats.cross = *group.front().fp32_cross;
      }
    } else {  // the solver reads no statistics; calibrate_group checks their shape only
      const Index in = group.front().weight->cols();
      stats.hessian = Eigen::MatrixXd::Zero(in, in);
      stats.mean_abs = VectorXd::Zero(in);
      stats.abs_max = VectorXf::Zero(in);
    }
    auto layers = calib::calibrate_group(q_, granularity_, weights, stats, recipe_);
    std::vector<QuantizedLayer> out;
    for (auto& layer : layers) {
      QuantizedLayer r;
      r.bits_per_weight = bits_per_weight(layer.matrix) + (layer.low_rank ? layer.low_rank->bits_per_weight() : 0.0);
      if (layer.gptq_report) {
        r.note = str_cat("damp ", layer.gptq_report->damp_fraction, ", proxy loss ", layer.gptq_report->proxy_loss.sum());
      }
      if (fold_scales_ && group.front().input_is_norm) {
        if (auto s = only_scalings(layer.transform)) {
          r.input_scale = std::move(*s);
          layer.transform = calib::InputTransform{};
        }
      }
      // Nothing to apply online: the packed layer itself (a GGUF writer can then take it as is).
      if (layer.transform.is_identity() && !layer.low_rank) {
        r.op = make_packed_linear(layer.matrix, kernel_);
      } else {
        r.op = std::make_unique<TransformedLinear>(std::move(layer.transform), make_packed_linear(layer.matrix, kernel_),
                                                   std::move(layer.low_rank));
      }
      out.push_back(std::move(r));
    }
    return out;
  }

 private:
  /// The combined scale s (T x = x ⊘ s) when every step of t is a channel scaling.
  static std::optional<VectorXf> only_scalings(const calib::InputTransform& t) {
    if (t.is_identity()) return std::nullopt;
    VectorXf s;
    for (const auto& step : t.steps()) {
      const auto* cs = std::get_if<calib::ChannelScale>(&step);
      if (cs == nullptr) return std::nullopt;
      s = s.size() == 0 ? cs->scales : VectorXf(s.cwiseProduct(cs->scales));
    }
    return s;
  }

  Q q_;
  Granularity granularity_;
  calib::Pipeline recipe_;
  KernelOptions kernel_;
  bool fold_scales_;
};

}  // namespace qtl::model
