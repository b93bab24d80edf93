// qtl/model/sequential.hpp — layer-by-layer ("true sequential") quantization of a whole model.
//
// For each transformer block l, in order, and within it for each group of linears that share
// an input — {wq, wk, wv}, then {wo}, then {w1, w3}, then {w2} (GPTQ's true-sequential order):
//   1. run calibration text through block l of the model *as quantized so far* and capture the
//      group's input: streaming statistics (Hessian 2/n Σ x xᵀ, mean |x|, mean x²) plus a
//      deterministic sample of input rows for recipes that search on real activations;
//   2. hand the fp32 weights and those statistics to the recipe, which returns quantized ops;
//   3. install them, so the next group (and block l+1) sees the outputs of quantized layers.
// Memory: one block's residual streams for the calibration text, one group's statistics.
// A block-wise recipe (Recipe::quantizes_blocks, e.g. qtl/model/block_reconstruction.hpp)
// instead quantizes each block at once from the block's inputs in the quantized and in the
// unquantized model (the driver then keeps both models' streams).
//
// A recipe is one interface: RTN with any scalar quantizer here; GPTQ, AWQ, rotations and their
// compositions (qtl/calib) implement the same interface and plug into the same driver.
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <random>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "qtl/calib/hessian.hpp"
#include "qtl/calib/solver.hpp"
#include "qtl/core/error.hpp"
#include "qtl/model/quantized_linear.hpp"
#include "qtl/model/transformer.hpp"
#include "qtl/quant/quantize_matrix.hpp"

namespace qtl::model {

/// What a recipe sees of one linear layer.
struct LayerCalibration {
  std::string name;             ///< "layers.3.w2"
  int layer = 0;                ///< block index
  const RowMatrixXf* weight;    ///< fp32 weights [out x in]
  const calib::HessianAccumulator* stats;  ///< the group's inputs, from the partly quantized model
  const RowMatrixXf* input_sample;         ///< up to SequentialOptions::max_sample_rows input rows
  /// The group's input is an RMSNorm output (wq/wk/wv, w1/w3), so a channel scaling of it can be
  /// folded into the norm's gain instead of running online (QuantizedLayer::input_scale).
  bool input_is_norm = false;
  /// With Recipe::wants_fp32_targets: C = 2/n Σ x̃ xᵀ, x̃ this group's input in the partly
  /// quantized model (what `stats` describes), x the input of the same token in the unquantized
  /// model (calib::asymmetric_target). Null otherwise.
  const Eigen::MatrixXd* fp32_cross = nullptr;
};

/// A recipe's answer for one linear layer.
struct QuantizedLayer {
  std::unique_ptr<LinearOp> op;  ///< computes y = W_hat x from the layer's (original) input
  double bits_per_weight = 0.0;  ///< everything the layer stores, per weight
  std::string note;              ///< e.g. a solver's report ("damp 0.01, proxy loss 3.2e-4")
  /// Nonempty: `op` expects its input divided channel-wise by these scales (x ⊘ s), and the
  /// driver folds them into the RMSNorm gain that produces x (g ← g ⊘ s; AWQ's fold). Only for
  /// groups with input_is_norm, and every layer of the group must return the same scales.
  VectorXf input_scale;
};

/// What a block-wise recipe (Recipe::quantizes_blocks) sees of transformer block `layer`.
struct BlockCalibration {
  int layer = 0;
  const Transformer* fp32 = nullptr;       ///< the unquantized model (after Recipe::prepare)
  const Transformer* quantized = nullptr;  ///< the model as quantized so far (blocks < layer)
  std::span<const RowMatrixXf> inputs;       ///< per sequence, the stream entering the block in `quantized`
  std::span<const RowMatrixXf> fp32_inputs;  ///< the same sequences' stream entering it in `fp32`
};

/// A block-wise recipe's answer: the block's seven linears in linear_names() order (wq wk wv
/// wo w1 w2 w3, none with an input_scale) and, when nonempty, new RMSNorm gains.
struct QuantizedBlock {
  std::vector<QuantizedLayer> layers;
  VectorXf attention_norm;
  VectorXf ffn_norm;
};

class Recipe {
 public:
  virtual ~Recipe() = default;
  [[nodiscard]] virtual std::string name() const = 0;
  /// Quantizes a group of linears that share one input (all entries have the same stats and
  /// sample). Returns one QuantizedLayer per entry, in order.
  [[nodiscard]] virtual std::vector<QuantizedLayer> quantize(std::span<const LayerCalibration> group) const = 0;
  /// Called once on the driver's fp32 copy of the model before anything is calibrated, for
  /// whole-model transforms that keep the function (a residual-stream rotation,
  /// Transformer::rotate_residual). The default does nothing.
  virtual void prepare(Transformer& model) const { (void)model; }
  /// Whether quantize() reads the calibration statistics or sample. When false, the driver
  /// runs no calibration text through the model (RTN needs none) and hands the recipe empty
  /// statistics (zero tokens) and an empty sample. The default is true.
  [[nodiscard]] virtual bool needs_calibration() const { return true; }
  /// Whether quantize() wants LayerCalibration::fp32_cross: the driver then also runs the
  /// unquantized model over the calibration text, block by block beside the quantized one. The
  /// default is false.
  [[nodiscard]] virtual bool wants_fp32_targets() const { return false; }
  /// Whether the recipe quantizes a whole transformer block at once (quantize_block, e.g. to
  /// the error of the block's output) instead of group by group (quantize). The driver then
  /// calls quantize_block once per block, with the block's inputs in the quantized and in the
  /// unquantized model. The default is false.
  [[nodiscard]] virtual bool quantizes_blocks() const { return false; }
  [[nodiscard]] virtual QuantizedBlock quantize_block(const BlockCalibration& block) const {
    fail("recipe '", name(), "' does not quantize whole blocks (block ", block.layer, ")");
  }
};

/// Round-to-nearest with any scalar quantizer (calib::RtnOptions, qtl/calib/solver.hpp): no
/// calibration (the statistics are unused), unless options.imatrix asks for the inputs' mean x²
/// as per-column importance (llama.cpp's imatrix weighting; it matters with fit.clip_search).
template <ScalarQuantizer Q>
class RtnRecipe final : public Recipe {
 public:
  RtnRecipe(Q quantizer, Granularity granularity, calib::RtnOptions options = {}, KernelOptions kernel = {},
            std::string name = "rtn")
      : q_(std::move(quantizer)),
        granularity_(granularity),
        options_(options),
        kernel_(kernel),
        name_(std::move(name)) {}

  [[nodiscard]] std::string name() const override { return name_; }
  [[nodiscard]] bool needs_calibration() const override { return options_.imatrix; }

  [[nodiscard]] std::vector<QuantizedLayer> quantize(std::span<const LayerCalibration> group) const override {
    std::vector<QuantizedLayer> out;
    for (const auto& layer : group) {
      QuantizeOptions opt;
      opt.fit = options_.fit;
      if (options_.imatrix) opt.column_importance = layer.stats->mean_square().cast<float>();
      const auto q = quantize_matrix(q_, granularity_, *layer.weight, opt);
      QuantizedLayer r;
      r.bits_per_weight = bits_per_weight(q);
      r.op = make_packed_linear(q, kernel_);
      out.push_back(std::move(r));
    }
    return out;
  }

 private:
  Q q_;
  Granularity granularity_;
  calib::RtnOptions options_;
  KernelOptions kernel_;
  std::string name_;
};

struct SequentialOptions {
  /// Input rows kept per group for recipes that evaluate candidate weights on activations
  /// (AWQ's scale search); a uniform random sample (fixed seed) when there are more tokens.
  Index max_sample_rows = 8192;
  unsigned seed = 0;
  /// Called with one line of progress per quantized group (e.g. to print on stderr).
  std::function<void(std::string_view)> progress;
};

struct SequentialLayerReport {
  std::string name;
  std::int64_t parameters = 0;
  double bits_per_weight = 0.0;
  std::string note;
};

struct SequentialReport {
  std::vector<SequentialLayerReport> layers;
  double seconds = 0.0;
  std::int64_t calibration_tokens = 0;
  /// Over every quantized linear weight (embedding and norms stay fp32 and are not counted).
  [[nodiscard]] double bits_per_weight() const {
    double bits = 0, n = 0;
    for (const auto& l : layers) {
      bits += l.bits_per_weight * static_cast<double>(l.parameters);
      n += static_cast<double>(l.parameters);
    }
    return n > 0 ? bits / n : 0.0;
  }
};

namespace detail {

/// Reservoir sample of input rows (Vitter's algorithm R), deterministic for a seed.
class RowReservoir {
 public:
  RowReservoir(Index capacity, Index cols, unsigned seed) : rows_(capacity, cols), rng_(seed) {}
  void add(MatrixRef x) {
    for (Index t = 0; t < x.rows(); ++t, ++seen_) {
      if (seen_ < rows_.rows()) {
        rows_.row(seen_) = x.row(t);
      } else {
        std::uniform_int_distribution<std::int64_t> pick(0, seen_);
        const std::int64_t j = pick(rng_);
        if (j < rows_.rows()) rows_.row(static_cast<Index>(j)) = x.row(t);
      }
    }
  }
  [[nodiscard]] RowMatrixXf take() {
    return rows_.topRows(std::min<Index>(rows_.rows(), static_cast<Index>(seen_)));
  }

 private:
  RowMatrixXf rows_;
  std::mt19937_64 rng_;
  std::int64_t seen_ = 0;
};

inline const RowMatrixXf& dense_weight(const Transformer& model, std::string_view name) {
  const auto* dense = dynamic_cast<const DenseLinear*>(&model.linear(name));
  if (dense == nullptr) {
    fail("quantize_sequential: the source model's layer '", name, "' is ", model.linear(name).describe(),
         "; quantize an fp32 model");
  }
  return dense->weight();
}

/// Runs a block-wise recipe on one block and installs its answer in `model` (checked first, so
/// that a wrong answer fails with the recipe's name before anything is replaced).
inline void quantize_whole_block(const Recipe& recipe, const BlockCalibration& block, Transformer& model,
                                 SequentialReport& report) {
  constexpr std::string_view kWhere = "quantize_sequential";
  QuantizedBlock b = recipe.quantize_block(block);
  const int l = block.layer;
  if (b.layers.size() != 7) {
    fail(kWhere, ": recipe '", recipe.name(), "' returned ", b.layers.size(), " layers for block ", l, " (7 expected)");
  }
  const Index dim = model.config().dim;
  for (const auto* gain : {&b.attention_norm, &b.ffn_norm}) {
    if (gain->size() != 0 && (gain->size() != dim || !gain->allFinite())) {
      fail(kWhere, ": recipe '", recipe.name(), "' returned a norm gain of ", gain->size(), " values for block ", l,
           " (", dim, ", finite)");
    }
  }
  static constexpr std::array<std::string_view, 7> kSlots = {"wq", "wk", "wv", "wo", "w1", "w2", "w3"};
  for (std::size_t i = 0; i < 7; ++i) {
    const std::string name = str_cat("layers.", l, ".", kSlots[i]);
    if (!b.layers[i].op) fail(kWhere, ": recipe '", recipe.name(), "' returned no op for '", name, "'");
    if (b.layers[i].input_scale.size() != 0) {
      fail(kWhere, ": recipe '", recipe.name(), "' returned input scales for '", name, "' from a whole block");
    }
  }
  for (std::size_t i = 0; i < 7; ++i) {
    const std::string name = str_cat("layers.", l, ".", kSlots[i]);
    const auto params = model.linear(name).in_features() * model.linear(name).out_features();
    report.layers.push_back({name, static_cast<std::int64_t>(params), b.layers[i].bits_per_weight, b.layers[i].note});
    model.set_linear(name, std::move(b.layers[i].op));
  }
  if (b.attention_norm.size() != 0) model.set_norm_gain(str_cat("layers.", l, ".attention_norm"), std::move(b.attention_norm));
  if (b.ffn_norm.size() != 0) model.set_norm_gain(str_cat("layers.", l, ".ffn_norm"), std::move(b.ffn_norm));
}

}  // namespace detail

/// Quantizes every linear layer of `fp32` with `recipe`, block by block, calibrating on
/// `calibration` (token sequences, each at most seq_len long, e.g. BOS + story). Returns the
/// quantized model; `report` (optional) receives per-layer bits and notes and the time taken.
/// A recipe whose needs_calibration() is false runs without any calibration pass (and may be
/// given no calibration sequences at all).
template <class Deferred = void>
[[nodiscard]] Transformer quantize_sequential(const Transformer& fp32,
                                                     std::span<const std::vector<int>> calibration,
                                                     const Recipe& recipe,
                                                     const SequentialOptions& options = {},
                                                     SequentialReport* report = nullptr) {
  constexpr std::string_view kWhere = "quantize_sequential";
  const bool calibrate = recipe.needs_calibration();
  if (calibrate && calibration.empty()) {
    fail(kWhere, ": recipe '", recipe.name(), "' calibrates, and no calibration sequences were given");
  }
  if (options.max_sample_rows < 1) {
    fail(kWhere, ": max_sample_rows must be >= 1, got ", options.max_sample_rows);
  }
  const auto start = std::chrono::steady_clock::now();
  Transformer prepared = fp32;
  recipe.prepare(prepared);
  Transformer model = prepared;
  const auto& cfg = model.config();

  std::vector<RowMatrixXf> streams;  // residual stream entering the current block, per sequence
  streams.reserve(calibration.size());
  std::int64_t tokens = 0;
  if (calibrate) {
    for (const auto& seq : calibration) {
      streams.push_back(model.embed(seq));
      tokens += static_cast<std::int64_t>(seq.size());
    }
  }
  // The unquantized model's streams, for recipes that quantize toward its outputs.
  const bool blocks = recipe.quantizes_blocks();
  if (blocks && !calibrate) fail(kWhere, ": recipe '", recipe.name(), "' quantizes whole blocks, which needs calibration");
  const bool targets = calibrate && (blocks || recipe.wants_fp32_targets());
  std::vector<RowMatrixXf> fp32_streams;
  if (targets) fp32_streams = streams;
  SequentialReport local;
  local.calibration_tokens = tokens;

  const std::vector<std::vector<std::string>> groups = {{"wq", "wk", "wv"}, {"wo"}, {"w1", "w3"}, {"w2"}};

  for (int l = 0; l < cfg.n_layers; ++l) {
    if (blocks) {
      detail::quantize_whole_block(recipe, BlockCalibration{l, &prepared, &model, streams, fp32_streams}, model, local);
      if (options.progress) options.progress(str_cat(recipe.name(), ": block ", l, " quantized (", tokens, " calibration tokens)"));
    }
    for (const auto& group : blocks ? std::vector<std::vector<std::string>>{} : groups) {
      std::vector<std::string> names;
      for (const auto& g : group) names.push_back(str_cat("layers.", l, ".", g));
      const Index in = model.linear(names.front()).in_features();
      calib::HessianAccumulator stats(in);
      detail::RowReservoir sample(options.max_sample_rows, in, options.seed + static_cast<unsigned>(l));
      const std::string& capture = names.front();
      model.set_observer([&](std::string_view name, MatrixRef x) {
        if (name == capture) {
          stats.add_batch(x);
          sample.add(x);
        }
      });
      Eigen::MatrixXd cross;
      if (targets) {
        // Token by token pairs: the group's input in the quantized model (x̃, into stats) and
        // in the unquantized one (x); C accumulates Σ x̃ xᵀ in double, scaled like H below.
        cross.setZero(in, in);
        RowMatrixXf seen_fp32;
        prepared.set_observer([&](std::string_view name, MatrixRef x) {
          if (name == capture) seen_fp32 = x;
        });
        RowMatrixXf seen_quant;
        model.set_observer([&](std::string_view name, MatrixRef x) {
          if (name == capture) {
            stats.add_batch(x);
            sample.add(x);
            seen_quant = x;
          }
        });
        for (std::size_t i = 0; i < streams.size(); ++i) {
          RowMatrixXf a = streams[i], b = fp32_streams[i];
          model.forward_layer(l, a);
          prepared.forward_layer(l, b);
          cross.noalias() += (seen_quant.transpose() * seen_fp32).cast<double>();
        }
        prepared.set_observer({});
        cross *= 2.0 / static_cast<double>(std::max<std::int64_t>(stats.tokens(), 1));
      } else {
        for (const auto& h : streams) {  // empty when the recipe does not calibrate
          RowMatrixXf scratch = h;
          model.forward_layer(l, scratch);
        }
      }
      model.set_observer({});
      const RowMatrixXf input_sample = sample.take();

      // The RMSNorm whose output the group reads, if any.
      const std::string norm = group.front() == "wq" ? str_cat("layers.", l, ".attention_norm")
                               : group.front() == "w1" ? str_cat("layers.", l, ".ffn_norm")
                                                       : std::string();
      std::vector<LayerCalibration> calibs;
      for (const auto& name : names) {
        calibs.push_back(LayerCalibration{name, l, &detail::dense_weight(prepared, name), &stats, &input_sample,
                                          !norm.empty(), targets ? &cross : nullptr});
      }
      auto results = recipe.quantize(calibs);
      if (results.size() != names.size()) {
        fail(kWhere, ": recipe '", recipe.name(), "' returned ", results.size(), " layers for a group of ",
             names.size());
      }
      const VectorXf fold = results.front().input_scale;
      for (std::size_t i = 0; i < names.size(); ++i) {
        const VectorXf& s = results[i].input_scale;
        if (s.size() != fold.size() || (s.size() > 0 && s != fold)) {
          fail(kWhere, ": recipe '", recipe.name(), "' returned different input scales within the group of '",
               names[i], "'");
        }
      }
      if (fold.size() > 0) {
        if (norm.empty()) {
          fail(kWhere, ": recipe '", recipe.name(), "' asked to fold input scales into '", names.front(),
               "', whose input is not an RMSNorm output");
        }
        if (fold.size() != in || !(fold.array() > 0.0f).all() || !fold.allFinite()) {
          fail(kWhere, ": recipe '", recipe.name(), "' returned ", fold.size(), " input scales for '", names.front(),
               "' (", in, " inputs, each finite and > 0)");
        }
        model.set_norm_gain(norm, model.norm_gain(norm).cwiseQuotient(fold));
      }
      for (std::size_t i = 0; i < names.size(); ++i) {
        auto& r = results[i];
        if (!r.op) fail(kWhere, ": recipe '", recipe.name(), "' returned no op for '", names[i], "'");
        const auto params = model.linear(names[i]).in_features() * model.linear(names[i]).out_features();
        local.layers.push_back({names[i], static_cast<std::int64_t>(params), r.bits_per_weight, r.note});
        model.set_linear(names[i], std::move(r.op));
      }
      if (options.progress) {
        options.progress(str_cat(recipe.name(), ": block ", l, " ", group.front(), group.size() > 1 ? "..." : "",
                                 " quantized (",
                                 calibrate ? str_cat(stats.tokens(), " calibration tokens") : std::string("no calibration"),
                                 ")"));
      }
    }
    for (auto& h : streams) model.forward_layer(l, h);  // feed the quantized block's outputs on
    for (auto& h : fp32_streams) prepared.forward_layer(l, h);
  }
  local.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  if (report != nullptr) *report = std::move(local);
  return model;
}

}  // namespace qtl::model
