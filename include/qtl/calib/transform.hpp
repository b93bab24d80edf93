// qtl/calib/transform.hpp — invertible transforms of a linear layer's input space, composed.
//
// Each step T is an invertible map of the inputs; the layer stays exact when its weights take
// the inverse:  y = W x = (W T⁻¹)(T x).  Steps:
//   RandomizedHadamard R   T x = Rᵀ x,        W T⁻¹ = W R       (rows w ← Rᵀ w)
//   ChannelScale s         T x = x ⊘ s,       W T⁻¹ = W diag(s) (AWQ, SmoothQuant)
// An InputTransform is a sequence T = T_k ⋯ T_1 (T_1 applied to x first), so W' = W T_1⁻¹ ⋯ T_k⁻¹
// and each weight row goes through the steps in the same order as each activation row.
// Statistics follow exactly where they can: H' = T H Tᵀ always; mean|x| and max|x| exactly for a
// scaling, and, after a rotation, as sqrt(diag(H')/2) and the bound ||max|x|||₂ (see
// LayerStatistics::exact_channel_stats).
//
// Where the transform goes at inference: a ChannelScale folds into the op that produces x (an
// RMSNorm gain g ← g ⊘ s, or a previous linear's rows W_prev ← diag(1/s) W_prev), and a rotation
// into a previous linear (W_prev ← Rᵀ W_prev); otherwise apply() runs online, per token, in
// O(n log n) for the rotation and O(n) for the scaling.
#pragma once

#include <cmath>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

#include "qtl/calib/hadamard.hpp"
#include "qtl/calib/hessian.hpp"
#include "qtl/core/error.hpp"
#include "qtl/core/overloaded.hpp"
#include "qtl/core/types.hpp"
#include "qtl/core/validate.hpp"

namespace qtl::calib {

/// x' = x ⊘ s and W' = W diag(s), s > 0 per input channel.
struct ChannelScale {
  VectorXf scales;
};

/// A step of an InputTransform. Code that acts on steps visits them (std::visit with
/// qtl::Overloaded), so that a new step type is a compile error wherever it is not handled.
using TransformStep = std::variant<RandomizedHadamard, ChannelScale>;

class InputTransform {
 public:
  InputTransform() = default;

  /// Appends a step, applied after the existing ones. Throws on a size mismatch or a scale that
  /// is not finite and > 0.
  InputTransform& then(TransformStep step) {
    const Index n = step_size(step);
    if (!steps_.empty() && n != size_) {
      fail("InputTransform::then: step of size ", n, " after steps of size ", size_);
    }
    std::visit(Overloaded{[](const RandomizedHadamard&) {},
                          [](const ChannelScale& cs) {
                            for (Index i = 0; i < cs.scales.size(); ++i) {
                              const float s = cs.scales[i];
                              if (!(s > 0.0f) || !std::isfinite(s)) {
                                fail("InputTransform::then: channel scale ", i, " must be finite and > 0, got ", s);
                              }
                            }
                          }},
               step);
    size_ = n;
    steps_.push_back(std::move(step));
    return *this;
  }

  [[nodiscard]] bool is_identity() const noexcept { return steps_.empty(); }
  [[nodiscard]] Index size() const noexcept { return size_; }
  [[nodiscard]] const std::vector<TransformStep>& steps() const noexcept { return steps_; }

  /// One token in place: x ← T x. O(n log n) per rotation step, O(n) per scaling step.
  void apply(float* x) const noexcept {
    for (const auto& step : steps_) {
      std::visit(Overloaded{[&](const RandomizedHadamard& r) { r.apply(x); },
                            [&](const ChannelScale& cs) {
                              for (Index i = 0; i < cs.scales.size(); ++i) x[i] /= cs.scales[i];
                            }},
                 step);
    }
  }

  /// Activations [tokens x n]: every row x_t ← T x_t.
  [[nodiscard]] RowMatrixXf apply_activations(MatrixRef x) const {
    require_width("InputTransform::apply_activations", x.cols());
    RowMatrixXf out = x;
    for (Index t = 0; t < out.rows(); ++t) apply(out.row(t).data());
    return out;
  }

  /// Weights [out x n]: W' = W T⁻¹, so that W' (T x) = W x.
  [[nodiscard]] RowMatrixXf apply_weights(MatrixRef w) const {
    require_width("InputTransform::apply_weights", w.cols());
    RowMatrixXf out = w;
    for (const auto& step : steps_) {
      std::visit(Overloaded{[&](const RandomizedHadamard& r) {
                              for (Index i = 0; i < out.rows(); ++i) r.apply(out.row(i).data());
                            },
                            [&](const ChannelScale& cs) { out.array().rowwise() *= cs.scales.transpose().array(); }},
                 step);
    }
    return out;
  }

  /// Statistics of the transformed inputs T x.
  [[nodiscard]] LayerStatistics apply_statistics(LayerStatistics s) const {
    require_width("InputTransform::apply_statistics", s.in_features());
    for (const auto& step : steps_) {
      std::visit(Overloaded{[&](const RandomizedHadamard& r) {
                              s.hessian = r.rotate_hessian(s.hessian);
                              s.mean_abs = (s.hessian.diagonal() / 2.0).cwiseMax(0.0).cwiseSqrt();
                              const float bound = s.abs_max.norm();
                              s.abs_max.setConstant(s.abs_max.size(), bound);
                              s.exact_channel_stats = false;
                            },
                            [&](const ChannelScale& cs) {
                              const VectorXd inv = cs.scales.cast<double>().cwiseInverse();
                              s.hessian = inv.asDiagonal() * s.hessian * inv.asDiagonal();
                              s.mean_abs = s.mean_abs.cwiseProduct(inv);
                              s.abs_max = s.abs_max.cwiseProduct(inv.cast<float>());
                            }},
                 step);
    }
    return s;
  }

 private:
  static Index step_size(const TransformStep& step) {
    return std::visit(Overloaded{[](const RandomizedHadamard& r) { return r.size(); },
                                 [](const ChannelScale& cs) { return cs.scales.size(); }},
                      step);
  }
  void require_width(std::string_view where, Index cols) const {
    if (!steps_.empty() && cols != size_) {
      fail(where, ": rows have ", cols, " values, the transform has size ", size_);
    }
  }

  Index size_ = 0;
  std::vector<TransformStep> steps_;
};

/// Folds a channel scaling into the RMSNorm gain that produces the inputs: g ← g ⊘ s.
inline void fold_into_norm(VectorXf& gain, const ChannelScale& s) {
  require_size("fold_into_norm", "gain", gain.size(), s.scales.size());
  gain.array() /= s.scales.array();
}

/// Folds a channel scaling into the previous linear layer that produces the inputs
/// (x = W_prev h): W_prev ← diag(1/s) W_prev.
inline void fold_into_previous(RowMatrixXf& w_prev, const ChannelScale& s) {
  require_size("fold_into_previous", "previous layer's rows", w_prev.rows(), s.scales.size());
  w_prev.array().colwise() /= s.scales.array();
}

}  // namespace qtl::calib
