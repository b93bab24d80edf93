// qtl/model/ggml_recipe.hpp — any qtl calibration pipeline, writing llama.cpp's block types.
//
// GgmlRecipe is a Recipe of the sequential driver whose layers come out as GgmlLinear ops
// (ggml tensor bytes, ready for write_gguf_model). A type plan names each linear's ggml type
// (per tensor, as llama-quantize chooses them: qtl/model/ggml_presets.hpp); the solver is one of
//   rtn            llama.cpp's reference quantizer (llama-quantize's bytes without an imatrix)
//   rtn-imatrix    clip / scale search weighted by the inputs' mean x^2 (llama.cpp's imatrix)
//   a calib::Pipeline  GPTQ (act-order, static groups, clip search...), AWQ, ...: calibrate_group
// over the type's quantizer policy (qtl/quant/ggml_quantizers.hpp), so the solver's grid is the
// grid ggml decodes. AWQ's scales are folded into the RMSNorm gains (wq/wk/wv, w1/w3); the
// groups whose input is not a norm output (wo, w2) run the solver alone, since a GGUF file
// cannot apply a scaling online. F32 / F16 layers (llama-quantize's fallback for rows no block
// fits) stay dense (F16 rounded). The K-quants (q2_K ... q6_K), whose grid is fitted per
// 256-value super-block: rtn is ggml's reference, rtn-imatrix ggml's importance path with the
// inputs' mean x^2 (llama-quantize --imatrix's bytes), a calib::Pipeline runs GPTQ on that grid
// (calib::gptq_k; no input transforms).
#pragma once

#include <functional>
#include <memory>
#include <span>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include "qtl/calib/gptq_ggml.hpp"
#include "qtl/calib/pipeline.hpp"
#include "qtl/core/error.hpp"
#include "qtl/core/overloaded.hpp"
#include "qtl/detail/fp16.hpp"
#include "qtl/quant/ggml_types.hpp"
#include "qtl/model/calibrated_recipe.hpp"
#include "qtl/model/ggml_linear.hpp"
#include "qtl/model/quantized_linear.hpp"
#include "qtl/model/sequential.hpp"
#include "qtl/quant/ggml_quantizers.hpp"

namespace qtl::model {

/// Calls f(Q{}) with qtl's quantizer policy for ggml type `t` and returns its result; throws
/// qtl::Error for a type without a policy. Every call must return one type.
template <class F>
decltype(auto) visit_ggml_quantizer(ggml::Type t, F&& f) {
  switch (t) {
    case ggml::Type::Q4_0: return f(ggml::GgmlQ4_0{});
    case ggml::Type::Q4_1: return f(ggml::GgmlQ4_1{});
    case ggml::Type::Q5_0: return f(ggml::GgmlQ5_0{});
    case ggml::Type::Q5_1: return f(ggml::GgmlQ5_1{});
    case ggml::Type::Q8_0: return f(ggml::GgmlQ8_0{});
    case ggml::Type::IQ4_NL: return f(ggml::GgmlIQ4_NL{});
    case ggml::Type::TQ1_0: return f(ggml::GgmlTQ1_0{});
    case ggml::Type::TQ2_0: return f(ggml::GgmlTQ2_0{});
    default: fail("ggml recipe: type ", ggml::type_name(t), " has no quantizer policy for qtl's solvers");
  }
}

/// True when qtl's solvers can write type `t` (visit_ggml_quantizer accepts it).
[[nodiscard]] constexpr bool has_ggml_quantizer(ggml::Type t) noexcept {
  switch (t) {
    case ggml::Type::Q4_0:
    case ggml::Type::Q4_1:
    case ggml::Type::Q5_0:
    case ggml::Type::Q5_1:
    case ggml::Type::Q8_0:
    case ggml::Type::IQ4_NL:
    case ggml::Type::TQ1_0:
    case ggml::Type::TQ2_0: return true;
    default: return false;
  }
}

/// Which ggml type a linear layer gets: (qtl name "layers.3.w2", rows, cols) -> type.
using GgmlTypePlan = std::function<ggml::Type(const std::string& name, Index rows, Index cols)>;

/// How a GgmlRecipe solves each layer: round to nearest (calib::RtnOptions; with imatrix, the
/// inputs' mean x² weights the fit, llama-quantize --imatrix), or a calibration pipeline
/// (calib::Pipeline: its solver, and its input scalings where the file can hold them).
using GgmlSolver = std::variant<calib::RtnOptions, calib::Pipeline>;

/// GgmlRecipe (below): a class template only so that its solvers are instantiated where a
/// GgmlRecipe is built, not in every translation unit that includes this header
/// (qtl/core/types.hpp: "Deferred").
template <class Deferred = void>
class BasicGgmlRecipe final : public Recipe {
 public:
  BasicGgmlRecipe(std::string name, GgmlTypePlan plan, GgmlSolver solver)
      : name_(std::move(name)), plan_(std::move(plan)), solver_(std::move(solver)) {
    if (!plan_) fail("GgmlRecipe '", name_, "': no type plan");
  }

  [[nodiscard]] std::string name() const override { return name_; }
  [[nodiscard]] bool needs_calibration() const override {
    const auto* rtn = std::get_if<calib::RtnOptions>(&solver_);
    return rtn == nullptr || rtn->imatrix;
  }

  [[nodiscard]] std::vector<QuantizedLayer> quantize(std::span<const LayerCalibration> group) const override {
    std::vector<ggml::Type> types;
    for (const auto& l : group) types.push_back(plan_(l.name, l.weight->rows(), l.weight->cols()));
    std::vector<QuantizedLayer> out(group.size());
    // Layers of one type are calibrated together (they share the input: one AWQ scale, one
    // Hessian); a group of mixed types runs type by type without input scalings.
    bool mixed = false;
    for (auto t : types) mixed = mixed || t != types.front();
    std::vector<bool> done(group.size(), false);
    for (std::size_t i = 0; i < group.size(); ++i) {
      if (done[i]) continue;
      std::vector<LayerCalibration> same;
      std::vector<std::size_t> where;
      for (std::size_t j = i; j < group.size(); ++j) {
        if (types[j] == types[i] && !done[j]) {
          same.push_back(group[j]);
          where.push_back(j);
          done[j] = true;
        }
      }
      auto results = quantize_type(types[i], same, /*scalings=*/!mixed && group.front().input_is_norm);
      for (std::size_t k = 0; k < where.size(); ++k) out[where[k]] = std::move(results[k]);
    }
    return out;
  }

 private:
  std::vector<QuantizedLayer> quantize_type(ggml::Type type, std::span<const LayerCalibration> layers,
                                            bool scalings) const {
    const ggml::TypeInfo info = ggml::type_info(type);
    std::vector<QuantizedLayer> out;
    for (const auto& l : layers) {
      if (l.weight->cols() % info.block_size != 0) {
        fail("GgmlRecipe '", name_, "': '", l.name, "' has rows of ", l.weight->cols(), " values, which ", info.name,
             " (blocks of ", info.block_size, ") cannot hold; the type plan must give it a fallback type");
      }
    }
    if (type == ggml::Type::F32 || type == ggml::Type::F16) {
      for (const auto& l : layers) {
        RowMatrixXf w = *l.weight;
        if (type == ggml::Type::F16) {
          for (auto& v : w.reshaped()) v = qtl::detail::round_to_half(v);
        }
        QuantizedLayer q;
        q.bits_per_weight = 8.0 * static_cast<double>(info.type_size);
        q.op = std::make_unique<DenseLinear>(std::move(w));
        out.push_back(std::move(q));
      }
      return out;
    }
    if (needs_calibration() && is_k_quant(type)) return quantize_k_type(type, layers);
    if (!has_ggml_quantizer(type)) {  // llama.cpp's reference quantizer
      for (const auto& l : layers) {
        QuantizedLayer q;
        q.op = std::make_unique<GgmlLinear>(type, l.weight->rows(), l.weight->cols(),
                                            ggml_quantize_reference(type, *l.weight));
        q.bits_per_weight = ggml::type_bits_per_weight(type);
        q.note = "reference quantizer (no qtl policy for this type)";
        out.push_back(std::move(q));
      }
      return out;
    }
    return visit_ggml_quantizer(type, [&](auto q) -> std::vector<QuantizedLayer> {
      using Q = decltype(q);
      const Granularity g = PerGroup{info.block_size};
      return std::visit(Overloaded{[&](const calib::RtnOptions& o) { return RtnRecipe<Q>(q, g, o).quantize(layers); },
                                   [&](calib::Pipeline r) {
                                     if (!scalings) {  // a GGUF file holds weights only: no online input transform
                                       r.awq = false;
                                       r.smoothquant = false;
                                       r.rotate = false;
                                     }
                                     return CalibratedRecipe<Q>(q, g, r, {}, /*fold_scales=*/true).quantize(layers);
                                   }},
                        solver_);
    });
  }

  static constexpr bool is_k_quant(ggml::Type t) noexcept {
    return t == ggml::Type::Q2_K || t == ggml::Type::Q3_K || t == ggml::Type::Q4_K || t == ggml::Type::Q5_K ||
           t == ggml::Type::Q6_K;
  }

  /// K-quants with calibration: the super-block grid fitted with the inputs' mean x^2 as the
  /// importance (llama-quantize --imatrix's grid), then, for a pipeline whose solver is GPTQ, the
  /// codes by GPTQ on that grid (calib::gptq_k; input transforms do not apply: a GGUF holds
  /// weights only). A pipeline with RTN keeps the grid's own codes; other solvers do not apply.
  std::vector<QuantizedLayer> quantize_k_type(ggml::Type type, std::span<const LayerCalibration> layers) const {
    const Eigen::MatrixXd h = layers.front().stats->hessian();
    QuantizeOptions grid;
    grid.column_importance = h.diagonal().cast<float>().cwiseMax(0.0f);  // ∝ mean x^2 per input
    const calib::GptqOptions* gopt = nullptr;
    if (const auto* p = std::get_if<calib::Pipeline>(&solver_)) {
      gopt = std::get_if<calib::GptqOptions>(&p->solver);
      if (gopt == nullptr && !std::holds_alternative<calib::RtnOptions>(p->solver)) {
        fail("GgmlRecipe '", name_, "': ", ggml::type_info(type).name, " (a k-quant) is solved by RTN or GPTQ on its ",
             "super-block grid, not by ", calib::solver_name(p->solver));
      }
    }
    std::vector<QuantizedLayer> out;
    for (const auto& l : layers) {
      std::vector<std::byte> bytes;
      std::string note;
      const auto run = [&](auto kq) {
        if (gopt != nullptr) {
          auto r = calib::gptq_k(kq, *l.weight, h, grid, *gopt);
          note = str_cat("gptq on the imatrix grid, damp ", r.report.damp_fraction, ", proxy loss ",
                         r.report.total_proxy_loss);
          bytes = ggml::to_blocks(r.matrix);
        } else {
          bytes = ggml::to_blocks(ggml::quantize_k(kq, *l.weight, grid));
          note = "imatrix grid";
        }
      };
      switch (type) {
        case ggml::Type::Q2_K: run(ggml::GgmlQ2_K{}); break;
        case ggml::Type::Q3_K: run(ggml::GgmlQ3_K{}); break;
        case ggml::Type::Q4_K: run(ggml::GgmlQ4_K{}); break;
        case ggml::Type::Q5_K: run(ggml::GgmlQ5_K{}); break;
        default: run(ggml::GgmlQ6_K{}); break;
      }
      QuantizedLayer q;
      q.op = std::make_unique<GgmlLinear>(type, l.weight->rows(), l.weight->cols(), std::move(bytes));
      q.bits_per_weight = ggml::type_bits_per_weight(type);
      q.note = std::move(note);
      out.push_back(std::move(q));
    }
    return out;
  }

  std::string name_;
  GgmlTypePlan plan_;
  GgmlSolver solver_;
};

using GgmlRecipe = BasicGgmlRecipe<>;

}  // namespace qtl::model
