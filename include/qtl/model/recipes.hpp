// qtl/model/recipes.hpp — named quantization recipes for the sequential driver and the examples.
//
//   auto recipe = qtl::model::make_recipe({.name = "rtn", .bits = 4, .group = 32});
//   Transformer q = quantize_sequential(fp32, calibration, *recipe);
//
// Names and descriptions: recipes() below (quantize_model --help lists them).
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "qtl/core/error.hpp"
#include "qtl/calib/gptq_partial_binary.hpp"
#include "qtl/calib/hadamard.hpp"
#include "qtl/calib/pipeline.hpp"
#include "qtl/model/block_reconstruction.hpp"
#include "qtl/model/calibrated_recipe.hpp"
#include "qtl/model/mixed_precision.hpp"
#include "qtl/model/partial_binary_linear.hpp"
#include "qtl/model/sequential.hpp"
#include "qtl/model/vq_recipe.hpp"
#include "qtl/quant/codebook.hpp"
#include "qtl/quant/e8p.hpp"
#include "qtl/quant/log2.hpp"
#include "qtl/quant/uniform.hpp"

namespace qtl::model {

struct RecipeSpec {
  std::string name = "rtn";
  int bits = 4;
  Index group = 32;  ///< inputs per group; 0 = one group per row
  KernelOptions kernel{};
  /// GPTQ's damping, a fraction of mean(diag H) (gptq.py --percdamp); used by the GPTQ solvers.
  double damp = 0.01;
  /// For block-wise recipes (autoround): a precision per matrix name, overriding bits and
  /// group (e.g. precisions_of an allocation, qtl/model/mixed_precision.hpp). Other recipes
  /// refuse it.
  std::map<std::string, Precision, std::less<>> precisions{};
};

struct RecipeInfo {
  std::string_view name;
  std::string_view description;
  std::function<std::unique_ptr<Recipe>(const RecipeSpec&)> make;
};

namespace detail {

inline Granularity granularity_of(const RecipeSpec& s) {
  if (s.group < 0) fail("make_recipe: group must be >= 0 (0 = per row), got ", s.group);
  return s.group == 0 ? Granularity{PerRow{}} : Granularity{PerGroup{s.group}};
}

/// Calls f(Uniform<B, M>{}) for the bit widths the packed uniform kernels run (2, 3, 4, 5, 6, 8);
/// any other width is rejected here, before anything is calibrated, instead of after.
template <Mode M, class F>
std::unique_ptr<Recipe> visit_packed_uniform(const RecipeSpec& s, F&& f) {
  switch (s.bits) {
    case 2: return f(Uniform<2, M>{});
    case 3: return f(Uniform<3, M>{});
    case 4: return f(Uniform<4, M>{});
    case 5: return f(Uniform<5, M>{});
    case 6: return f(Uniform<6, M>{});
    case 8: return f(Uniform<8, M>{});
    default:
      fail("make_recipe: '", s.name, "' writes uniform codes, which the packed kernels run at 2, 3, 4, 5, 6 or 8 bits; "
           "got bits = ", s.bits);
  }
}

template <Mode M>
std::unique_ptr<Recipe> visit_packed_uniform_block(const RecipeSpec& s, const BlockReconstructionOptions& o) {
  return visit_packed_uniform<M>(s, [&](auto q) -> std::unique_ptr<Recipe> {
    return std::make_unique<BlockReconstructionRecipe<decltype(q)::kBits, M>>(q, granularity_of(s), o, s.kernel, s.name);
  });
}

template <Mode M>
std::unique_ptr<Recipe> uniform_rtn(const RecipeSpec& s, const calib::RtnOptions& how) {
  return visit_packed_uniform<M>(s, [&](auto q) -> std::unique_ptr<Recipe> {
    return std::make_unique<RtnRecipe<decltype(q)>>(q, granularity_of(s), how, s.kernel, s.name);
  });
}

/// Uniform asymmetric codes (gptq.py's min-max grid) through a qtl::calib pipeline.
template <class Deferred = void>
std::unique_ptr<Recipe> uniform_calibrated(const RecipeSpec& s, calib::Pipeline r) {
  r.name = s.name;
  if (!(s.damp >= 0.0 && s.damp <= 10.0)) fail("make_recipe: damp must be in [0, 10], got ", s.damp);
  r.solver = calib::with_damp(std::move(r.solver), s.damp);
  if (r.refine.sweeps > 0) r.refine.damp_fraction = s.damp;
  return visit_packed_uniform<Mode::Asymmetric>(s, [&](auto q) -> std::unique_ptr<Recipe> {
    return std::make_unique<CalibratedRecipe<decltype(q)>>(q, granularity_of(s), r, s.kernel);
  });
}

/// The level tables of the table-kernel recipes.
enum class TableFamily { NF4, Log2 };

/// Calls f with the table quantizer of `family` at s.bits: NF4 (4 bits only) or Log2<bits>
/// (2..4 bits). These run on the table-decode kernels (int8 mode with --int8-activations).
template <class F>
std::unique_ptr<Recipe> visit_table(const RecipeSpec& s, TableFamily family, F&& f) {
  if (family == TableFamily::NF4) {
    if (s.bits != 4) fail("make_recipe: '", s.name, "' uses NF4, which is 4-bit only; got bits = ", s.bits);
    return f(NF4{});
  }
  switch (s.bits) {
    case 2: return f(Log2<2>{});
    case 3: return f(Log2<3>{});
    case 4: return f(Log2<4>{});
    default: fail("make_recipe: '", s.name, "' uses log2 levels of 2, 3 or 4 bits; got bits = ", s.bits);
  }
}

template <class Deferred = void>
std::unique_ptr<Recipe> table_rtn(const RecipeSpec& s, TableFamily family) {
  return visit_table(s, family, [&](auto q) -> std::unique_ptr<Recipe> {
    return std::make_unique<RtnRecipe<decltype(q)>>(q, granularity_of(s), calib::RtnOptions{}, s.kernel, s.name);
  });
}

template <class Deferred = void>
std::unique_ptr<Recipe> table_gptq(const RecipeSpec& s, TableFamily family) {
  if (!(s.damp >= 0.0 && s.damp <= 10.0)) fail("make_recipe: damp must be in [0, 10], got ", s.damp);
  return visit_table(s, family, [&](auto q) -> std::unique_ptr<Recipe> {
    const calib::Pipeline r{.name = s.name, .solver = calib::GptqOptions{.damp_fraction = s.damp}};
    return std::make_unique<CalibratedRecipe<decltype(q)>>(q, granularity_of(s), r, s.kernel);
  });
}

/// A recipe that first rotates the model's residual stream by a randomized Hadamard matrix
/// (Transformer::rotate_residual, QuaRot's weight side), then quantizes with `inner`.
template <class Deferred = void>
class ResidualRotationRecipe final : public Recipe {
 public:
  ResidualRotationRecipe(std::unique_ptr<Recipe> inner, std::string name, std::uint64_t seed = 0x51ed)
      : inner_(std::move(inner)), name_(std::move(name)), seed_(seed) {}
  [[nodiscard]] std::string name() const override { return name_; }
  void prepare(Transformer& model) const override {
    const Index dim = model.config().dim;
    const calib::RandomizedHadamard h(dim, seed_);
    model.rotate_residual(h.rotate_rows(RowMatrixXf::Identity(dim, dim)));
    inner_->prepare(model);
  }
  [[nodiscard]] std::vector<QuantizedLayer> quantize(std::span<const LayerCalibration> group) const override {
    return inner_->quantize(group);
  }
  [[nodiscard]] bool needs_calibration() const override { return inner_->needs_calibration(); }
  [[nodiscard]] bool wants_fp32_targets() const override { return inner_->wants_fp32_targets(); }

 private:
  std::unique_ptr<Recipe> inner_;
  std::string name_;
  std::uint64_t seed_;
};

/// The solvers partial binarization runs: round to nearest (its alpha is the least-squares
/// optimum, so RtnOptions' fit and imatrix have nothing to act on and must stay unset) or GPTQ's
/// error feedback over the binary part. Any other calib solver does not convert: a compile error.
using PartialBinarySolver = std::variant<calib::RtnOptions, calib::GptqOptions>;

/// Partial binarization (PB-LLM): the most salient weights (by |w|² · diag H, the Hessian
/// diagonal of the layer's inputs) kept at 8 bits, the rest binary with an alpha per group;
/// round-to-nearest, or GPTQ's error feedback over the binary part (PB-GPTQ). Runs as
/// PartialBinaryLinear: the binary part on the packed kernels, the correction sparse in fp32.
template <class Deferred = void>
class PartialBinaryRecipe final : public Recipe {
 public:
  PartialBinaryRecipe(std::string name, Granularity granularity, double salient_fraction, SalientStorage storage,
                      PartialBinarySolver solver, KernelOptions kernel)
      : name_(std::move(name)),
        granularity_(granularity),
        fraction_(salient_fraction),
        storage_(storage),
        solver_(std::move(solver)),
        kernel_(kernel) {
    if (const auto* rtn = std::get_if<calib::RtnOptions>(&solver_)) {
      if (rtn->imatrix || rtn->fit.clip_search || rtn->fit.refine_iterations != 0) {
        fail("PartialBinaryRecipe '", name_, "': partial binarization's RTN fit is closed-form; it takes no ",
             rtn->imatrix ? "imatrix" : rtn->fit.clip_search ? "clip_search" : "refine_iterations");
      }
    }
  }
  [[nodiscard]] std::string name() const override { return name_; }
  [[nodiscard]] std::vector<QuantizedLayer> quantize(std::span<const LayerCalibration> group) const override {
    const Eigen::MatrixXd h = group.front().stats->hessian();
    PartialBinaryOptions pb;
    pb.salient_fraction = fraction_;
    pb.storage = storage_;
    pb.column_importance = h.diagonal().cast<float>().cwiseMax(0.0f);
    std::vector<QuantizedLayer> out;
    for (const auto& l : group) {
      QuantizedLayer q;
      PartialBinaryMatrix m;
      if (const auto* opt = std::get_if<calib::GptqOptions>(&solver_)) {
        auto r = calib::gptq_partial_binary(granularity_, *l.weight, h, pb, *opt);
        q.note = str_cat("damp ", r.report.damp_fraction, ", proxy loss ", r.report.total_proxy_loss);
        m = std::move(r.matrix);
      } else {
        m = quantize_partial_binary(granularity_, *l.weight, pb);
      }
      auto op = std::make_unique<PartialBinaryLinear>(m, kernel_);
      q.bits_per_weight = op->bits_per_weight();
      q.op = std::move(op);
      out.push_back(std::move(q));
    }
    return out;
  }

 private:
  std::string name_;
  Granularity granularity_;
  double fraction_;
  SalientStorage storage_;
  PartialBinarySolver solver_;
  KernelOptions kernel_;
};

/// 10% salient: weights (PB-LLM's unstructured list, 16-bit column + 8-bit value each) or input
/// channels (a channel mask, 8 bits per salient weight).
template <class Deferred = void>
std::unique_ptr<Recipe> partial_binary(const RecipeSpec& s, SalientStorage storage, PartialBinarySolver solver) {
  if (s.bits != 1) {
    fail("make_recipe: '", s.name, "' binarizes (1 bit plus 10% salient weights at 8 bits); got bits = ", s.bits,
         " (use --bits 1)");
  }
  if (!(s.damp >= 0.0 && s.damp <= 10.0)) fail("make_recipe: damp must be in [0, 10], got ", s.damp);
  return std::make_unique<PartialBinaryRecipe<Deferred>>(s.name, granularity_of(s), 0.1, storage,
                                                         calib::with_damp(std::move(solver), s.damp), s.kernel);
}

/// GPTVQ with one k-means codebook of D-vectors for the whole model, rows normalized by fp16
/// RMS scales (qtl/model/vq_recipe.hpp). s.bits is the index bits per weight (B = bits * D);
/// only codebooks of at most 256 entries are offered here: on this model a larger one costs more
/// bits than it saves (4096 x 4 fp16 values = 1.2 bits per weight of stories260K).
template <int D, class Deferred = void>
std::unique_ptr<Recipe> gptvq_kmeans(const RecipeSpec& s) {
  if (!(s.damp >= 0.0 && s.damp <= 10.0)) fail("make_recipe: damp must be in [0, 10], got ", s.damp);
  VQLayerOptions o;
  o.normalize_rows = true;
  o.gptq.damp_fraction = s.damp;
  auto make = [&](auto v) -> std::unique_ptr<Recipe> {
    return std::make_unique<VQRecipe<decltype(v)>>(s.name, v, VQGranularity{0}, o, true, s.kernel);
  };
  if constexpr (D == 2) {
    switch (s.bits) {
      case 2: return make(KMeansVQ<2, 4>{});
      case 3: return make(KMeansVQ<2, 6>{});
      case 4: return make(KMeansVQ<2, 8>{});
      default: break;
    }
    fail("make_recipe: '", s.name, "' (2-vectors, 2^(2 bits) entries) runs at 2, 3 or 4 bits; got bits = ", s.bits);
  } else if constexpr (D == 4) {
    switch (s.bits) {
      case 1: return make(KMeansVQ<4, 4>{});
      case 2: return make(KMeansVQ<4, 8>{});
      default: break;
    }
    fail("make_recipe: '", s.name, "' (4-vectors, 2^(4 bits) entries) runs at 1 or 2 bits; got bits = ", s.bits);
  } else {
    static_assert(D == 8, "gptvq_kmeans: D must be 2, 4 or 8");
    if (s.bits == 1) return make(KMeansVQ<8, 8>{});
    fail("make_recipe: '", s.name, "' (8-vectors, 2^(8 bits) entries) runs at 1 bit; got bits = ", s.bits,
         " (2 bits over 8-vectors is E8P: gptvq-e8p, quip)");
  }
}

/// E8P (QuIP#'s lattice codebook, 2 bits per weight) with one fp16 scale per row, GPTVQ over 8
/// columns at a time; `rotate`: randomized Hadamard of the inputs, run online, and the residual
/// stream rotated (QuaRot's fold) so that wo and w2 are rotated on both sides (QuIP#'s
/// incoherence processing where the model allows it, without fine-tuning).
template <class Deferred = void>
std::unique_ptr<Recipe> e8p_recipe(const RecipeSpec& s, VQLayerOptions o) {
  if (s.bits != 2) fail("make_recipe: '", s.name, "' uses E8P, 2 bits per weight (16 bits per 8 weights); got bits = ", s.bits);
  if (!(s.damp >= 0.0 && s.damp <= 10.0)) fail("make_recipe: damp must be in [0, 10], got ", s.damp);
  o.gptq.damp_fraction = s.damp;
  auto inner = std::make_unique<VQRecipe<E8P>>(s.name, E8P{}, VQGranularity{1}, o, false, s.kernel);
  if (!o.rotate) return inner;
  return std::make_unique<ResidualRotationRecipe<Deferred>>(std::move(inner), s.name);
}

}  // namespace detail

/// Every recipe make_recipe knows, in display order.
template <class Deferred = void>
[[nodiscard]] const std::vector<RecipeInfo>& recipes() {
  static const std::vector<RecipeInfo> list = {
      {"rtn", "uniform asymmetric round-to-nearest, min-max range (no calibration)",
       [](const RecipeSpec& s) { return detail::uniform_rtn<Mode::Asymmetric>(s, {}); }},
      {"rtn-sym", "uniform symmetric round-to-nearest (llama.cpp q4_0 rule)",
       [](const RecipeSpec& s) { return detail::uniform_rtn<Mode::Symmetric>(s, {}); }},
      {"rtn-clip", "uniform asymmetric, per-group clip search + least-squares scale (no calibration)",
       [](const RecipeSpec& s) { return detail::uniform_rtn<Mode::Asymmetric>(s, {.fit = FitOptions::searched()}); }},
      {"rtn-imatrix", "uniform asymmetric, clip search weighted by the inputs' mean x^2 (llama.cpp imatrix)",
       [](const RecipeSpec& s) { return detail::uniform_rtn<Mode::Asymmetric>(s, {.fit = FitOptions::searched(), .imatrix = true}); }},
      {"gptq", "GPTQ: Hessian error feedback, lazy blocks of 128, 1% damping, min-max grid per group",
       [](const RecipeSpec& s) { return detail::uniform_calibrated(s, calib::Pipeline{.solver = calib::GptqOptions{}}); }},
      {"gptq-actorder", "GPTQ visiting columns by descending Hessian diagonal, static groups",
       [](const RecipeSpec& s) {
         return detail::uniform_calibrated(s, calib::Pipeline{.solver = calib::GptqOptions{.act_order = true}});
       }},
      {"gptq-clip", "GPTQ with a Hessian-weighted clip search for each group's range",
       [](const RecipeSpec& s) {
         return detail::uniform_calibrated(s, calib::Pipeline{.solver = calib::gptq_clip_options()});
       }},
      {"signround", "SignRound on the layer's Hessian objective: learned rounding offsets and clip, 200 signed-gradient steps",
       [](const RecipeSpec& s) {
         return detail::uniform_calibrated(s, calib::Pipeline{.solver = calib::SignRoundOptions{}});
       }},
      {"signround-refine", "SignRound, then coordinate descent on the codes and least-squares group parameters",
       [](const RecipeSpec& s) {
         return detail::uniform_calibrated(s, calib::Pipeline{.solver = calib::SignRoundOptions{}, .refine = {.sweeps = 8}});
       }},
      {"gptq-refine", "gptq-clip, then coordinate descent on the codes and least-squares group parameters (QuantEase)",
       [](const RecipeSpec& s) {
         return detail::uniform_calibrated(s, calib::Pipeline{.solver = calib::gptq_clip_options(), .refine = {.sweeps = 8}});
       }},
      {"hqq", "HQQ: calibration-free half-quadratic lp fit of each group's scale and zero (p = 0.7, 20 steps)",
       [](const RecipeSpec& s) { return detail::uniform_calibrated(s, calib::Pipeline{.solver = calib::HqqOptions{}}); }},
      {"hqq-refine", "HQQ's fit, then coordinate descent on the codes and group parameters on the layer's Hessian",
       [](const RecipeSpec& s) {
         return detail::uniform_calibrated(s, calib::Pipeline{.solver = calib::HqqOptions{}, .refine = {.sweeps = 8}});
       }},
      {"gptaq-refine", "gptq-refine toward the unquantized model's outputs: ||X~ W^T - X W^T|| on the actual inputs (GPTAQ)",
       [](const RecipeSpec& s) {
         return detail::uniform_calibrated(
             s, calib::Pipeline{.solver = calib::gptq_clip_options(), .refine = {.sweeps = 8}, .fp32_targets = true});
       }},
      {"autoround", "block-wise SignRound (AutoRound): rounding, clip and RMSNorm gains tuned to each block's output error, 500 steps",
       [](const RecipeSpec& s) -> std::unique_ptr<Recipe> {
         // 500 steps, not AutoRound's 200: chosen on a calibration split (stories 0-199 / 200-249),
         // where 2-bit perplexity went 11.62 -> 11.27 and 3-bit 5.029 -> 4.985.
         BlockReconstructionOptions o;
         o.iterations = 500;
         if (!s.precisions.empty()) {
           return std::make_unique<MixedBlockReconstructionRecipe<Mode::Asymmetric>>(s.precisions, o, s.kernel,
                                                                                      s.name + "-mixed");
         }
         return detail::visit_packed_uniform_block<Mode::Asymmetric>(s, o);
       }},
      {"awq", "AWQ: activation-aware per-channel scales (grid over alpha) and clip search, then RTN",
       [](const RecipeSpec& s) { return detail::uniform_calibrated(s, calib::Pipeline{.awq = true, .solver = calib::RtnOptions{}}); }},
      {"awq-gptq", "AWQ scales and clipping, then GPTQ (QQQ's weight side)",
       [](const RecipeSpec& s) { return detail::uniform_calibrated(s, calib::Pipeline{.awq = true, .solver = calib::GptqOptions{}}); }},
      {"rotate-rtn", "randomized Hadamard rotation of the inputs (QuaRot / QuIP#), then RTN",
       [](const RecipeSpec& s) { return detail::uniform_calibrated(s, calib::Pipeline{.rotate = true, .solver = calib::RtnOptions{}}); }},
      {"rotate-gptq", "randomized Hadamard rotation, then GPTQ",
       [](const RecipeSpec& s) { return detail::uniform_calibrated(s, calib::Pipeline{.rotate = true, .solver = calib::GptqOptions{}}); }},
      {"rsq", "rotation, then AWQ scaling, then GPTQ (the RSQ composition)",
       [](const RecipeSpec& s) { return detail::uniform_calibrated(s, calib::Pipeline{.rotate = true, .awq = true, .solver = calib::GptqOptions{}}); }},
      {"gptq-lqer", "GPTQ plus a rank-4 correction of the activation-weighted error (LQER), its bits counted",
       [](const RecipeSpec& s) {
         auto r = calib::Pipeline{.solver = calib::GptqOptions{}};
         r.low_rank.rank = 4;
         return detail::uniform_calibrated(s, r);
       }},
      {"quarot-rtn", "residual stream rotated by a randomized Hadamard matrix, RMSNorm gains folded (QuaRot), then RTN",
       [](const RecipeSpec& s) {
         return std::make_unique<detail::ResidualRotationRecipe<Deferred>>(detail::uniform_rtn<Mode::Asymmetric>(s, {}), s.name);
       }},
      {"quarot-gptq", "residual stream rotation (QuaRot), then GPTQ",
       [](const RecipeSpec& s) {
         return std::make_unique<detail::ResidualRotationRecipe<Deferred>>(
             detail::uniform_calibrated(s, calib::Pipeline{.solver = calib::GptqOptions{}}), s.name);
       }},
      {"rtn-nf4", "NF4 levels (4-bit only) times an fp16 absmax scale per group, round-to-nearest (table kernels)",
       [](const RecipeSpec& s) { return detail::table_rtn(s, detail::TableFamily::NF4); }},
      {"gptq-nf4", "GPTQ with NF4 levels (4-bit only; table kernels)",
       [](const RecipeSpec& s) { return detail::table_gptq(s, detail::TableFamily::NF4); }},
      {"rtn-log2", "signed power-of-two levels times an fp16 scale per group, round-to-nearest (table kernels)",
       [](const RecipeSpec& s) { return detail::table_rtn(s, detail::TableFamily::Log2); }},
      {"gptq-log2", "GPTQ with signed power-of-two levels (table kernels)",
       [](const RecipeSpec& s) { return detail::table_gptq(s, detail::TableFamily::Log2); }},
      {"gptvq-kmeans2", "GPTVQ over 2-vectors, one k-means codebook (2^(2 bits) entries) for the whole model, fp16 row scales",
       [](const RecipeSpec& s) { return detail::gptvq_kmeans<2, Deferred>(s); }},
      {"gptvq-kmeans4", "GPTVQ over 4-vectors, one k-means codebook (2^(4 bits) entries) for the whole model, fp16 row scales",
       [](const RecipeSpec& s) { return detail::gptvq_kmeans<4, Deferred>(s); }},
      {"gptvq-kmeans8", "GPTVQ over 8-vectors, one k-means codebook (2^(8 bits) entries) for the whole model, fp16 row scales",
       [](const RecipeSpec& s) { return detail::gptvq_kmeans<8, Deferred>(s); }},
      {"gptvq-e8p", "GPTVQ over 8 columns with QuIP#'s E8P lattice codebook (--bits 2), an fp16 scale per row",
       [](const RecipeSpec& s) { return detail::e8p_recipe<Deferred>(s, {}); }},
      {"gptaq-e8p", "gptvq-e8p toward the unquantized model's outputs (GPTAQ's asymmetric target, --bits 2)",
       [](const RecipeSpec& s) { return detail::e8p_recipe<Deferred>(s, {.fp32_targets = true}); }},
      {"quip", "QuIP# without fine-tuning: randomized Hadamard (inputs online, residual stream folded), E8P, BlockLDLQ over 8 columns (--bits 2)",
       [](const RecipeSpec& s) { return detail::e8p_recipe<Deferred>(s, {.rotate = true}); }},
      {"rtn-pb", "partial binarization (PB-LLM, --bits 1): 10% salient weights at 8 bits, the rest binary",
       [](const RecipeSpec& s) { return detail::partial_binary(s, SalientStorage::SparseList, calib::RtnOptions{}); }},
      {"gptq-pb", "partial binarization with GPTQ's error feedback over the binary part (PB-GPTQ, --bits 1)",
       [](const RecipeSpec& s) { return detail::partial_binary(s, SalientStorage::SparseList, calib::GptqOptions{}); }},
      {"rtn-pb-channel", "partial binarization with 10% salient input channels at 8 bits (a channel mask, --bits 1)",
       [](const RecipeSpec& s) { return detail::partial_binary(s, SalientStorage::ChannelMask, calib::RtnOptions{}); }},
      {"gptq-pb-channel", "salient input channels at 8 bits, GPTQ over the binary rest (--bits 1)",
       [](const RecipeSpec& s) { return detail::partial_binary(s, SalientStorage::ChannelMask, calib::GptqOptions{}); }},
  };
  return list;
}

/// Builds the recipe `spec.name`; throws qtl::Error naming the known recipes otherwise.
template <class Deferred = void>
[[nodiscard]] std::unique_ptr<Recipe> make_recipe(const RecipeSpec& spec) {
  for (const auto& r : recipes<Deferred>()) {
    if (r.name != spec.name) continue;
    auto made = r.make(spec);
    if (!spec.precisions.empty() && !made->quantizes_blocks()) {
      fail("make_recipe: '", spec.name, "' quantizes layer by layer at one precision; per-matrix precisions "
           "go through MixedPrecisionRecipe (qtl/model/mixed_precision.hpp)");
    }
    return made;
  }
  std::string known;
  for (const auto& r : recipes<Deferred>()) known += str_cat(known.empty() ? "" : ", ", r.name);
  fail("make_recipe: unknown recipe '", spec.name, "'; known: ", known);
}

}  // namespace qtl::model
