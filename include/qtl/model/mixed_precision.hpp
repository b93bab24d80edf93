// qtl/model/mixed_precision.hpp — per-matrix bit widths and group sizes under a bits-per-weight
// budget.
//
//   auto table = measure_sensitivity(fp32, calibration, scoring, options, make);  // once
//   auto plan  = allocate_bits(table, 3.0);                       // any number of budgets
//   MixedPrecisionRecipe recipe(table, plan, make);
//   Transformer q = quantize_sequential(fp32, calibration, recipe);
//
// 1. Sensitivity. Each linear matrix i is quantized alone (every other matrix fp32) with each
//    candidate precision c (bits, group size), by the recipe `make(c)` builds, on the Hessian of
//    its inputs in the fp32 model; the model's mean KL(fp32 ‖ model) and its change in NLL are
//    measured on scoring sequences (a part of the calibration text: choices never look at the
//    evaluation text). That is KL_i(c), the bits B_i(c) the recipe reports, and ΔNLL_i(c).
// 2. Allocation. Under the additivity that HIGGS's linearity theorem justifies for small errors
//    (Malinovskii et al. 2024: the model's loss change is close to a weighted sum of the
//    layers' own errors), choose one c_i per matrix minimizing Σ_i KL_i(c_i) subject to
//    Σ_i B_i(c_i) n_i <= target · Σ_i n_i: a multiple-choice knapsack, solved exactly by
//    dynamic programming over the total bits (in units of 1 bit for models up to ~10⁶ bits of
//    budget steps, coarser above, with costs rounded up, so the budget is always met).
//    The predicted perplexity is exp(NLL_fp32 + Σ ΔNLL_i(c_i)).
// 3. Quantization: the sequential driver with each matrix at its precision (the recipe built
//    by make(c_i) for it, on the partly quantized model's statistics as usual).
// The recipes `make` builds must not transform inputs that a group shares (AWQ's scales fold
// into a norm shared by wq/wk/wv): each matrix is quantized on its own.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <map>
#include <memory>
#include <random>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "qtl/calib/hessian.hpp"
#include "qtl/core/error.hpp"
#include "qtl/kernel/common/threading.hpp"
#include "qtl/model/eval.hpp"
#include "qtl/model/sequential.hpp"
#include "qtl/model/transformer.hpp"

namespace qtl::model {

/// One candidate precision: a bit width and a group size (0 = one group per row), and the
/// recipe that quantizes at it: empty for the factory's own, or a name the factory builds
/// instead (e.g. E8P vector codes, "gptaq-e8p", among uniform widths: HIGGS mixes grids the
/// same way).
struct Precision {
  Precision() = default;
  Precision(int bits_, Index group_, std::string recipe_ = {})
      : bits(bits_), group(group_), recipe(std::move(recipe_)) {}
  int bits = 4;
  Index group = 32;
  std::string recipe;
  friend auto operator<=>(const Precision&, const Precision&) = default;
};

[[nodiscard]] inline std::string to_string(const Precision& p) {
  return str_cat(p.recipe.empty() ? std::string() : str_cat(p.recipe, " "), p.bits, "-bit ",
                 p.group == 0 ? std::string("per row") : str_cat("g", p.group));
}

/// Builds the recipe that quantizes a matrix at one precision.
using PrecisionRecipeFactory = std::function<std::unique_ptr<Recipe>(const Precision&)>;

struct MatrixSensitivity {
  std::string name;                      ///< "layers.3.w2"
  std::int64_t weights = 0;              ///< rows · cols
  std::vector<double> bits_per_weight;   ///< per candidate, as the recipe counts them
  std::vector<double> kl;                ///< mean KL(fp32 ‖ model) with only this matrix quantized
  std::vector<double> delta_nll;         ///< the model's NLL change, nats per token
};

struct SensitivityTable {
  std::vector<Precision> candidates;
  std::vector<MatrixSensitivity> matrices;  ///< in the model's linear order
  double fp32_nll = 0.0;                    ///< on the scoring sequences
  std::int64_t scored_tokens = 0;
};

struct SensitivityOptions {
  /// The default: the uniform widths of 2-4 bits with group 32 and per row, and 8 bits per row.
  /// The packed kernels also run 5 and 6 bits: add {5, 0}, {6, 0} (and group 32) where budgets
  /// between 4 and 8 bits per weight should have steps between them (each candidate costs one
  /// model evaluation per matrix).
  std::vector<Precision> candidates{{2, 32}, {2, 0}, {3, 32}, {3, 0}, {4, 32}, {4, 0}, {8, 0}};
  /// false: KL_i(c) measured for every matrix and candidate (one model evaluation each).
  /// true: HIGGS's linear model (Malinovskii et al. 2024): per matrix, one evaluation with
  /// Gaussian noise of known relative output error t0² gives α_i = KL / t0² (and the same for
  /// ΔNLL); then KL_i(c) = α_i · t_i(c)², t_i(c)² = tr(ΔW H ΔWᵀ) / tr(W H Wᵀ) of the candidate's
  /// quantized matrix on the calibration inputs. One evaluation per matrix instead of one per
  /// candidate: what makes the allocation affordable for large models.
  bool linear_model = false;
  double noise_relative_error = 0.01;  ///< t0², the linear model's probe
  unsigned seed = 0;                   ///< of the probe's noise
  int threads = 1;  ///< scoring sequences in parallel
  std::function<void(std::string_view)> progress;
};

namespace detail {

/// Log-softmax rows of the fp32 model's logits for each scoring sequence (inputs = all but the
/// last token, targets = all but the first).
struct ScoringReference {
  std::vector<RowMatrixXf> log_probs;
};

/// Mean NLL (and, with `ref`, mean KL from it) of `model` on the sequences, starting from the
/// residual streams `streams[i]` entering block `first_layer` (the fp32 model's, cached: the
/// blocks before the changed matrix are the fp32 model's own).
inline double score_against(const Transformer& model, std::span<const std::vector<int>> seqs,
                            const std::vector<RowMatrixXf>& streams, int first_layer,
                            const ScoringReference* ref, int threads, double* kl_out) {
  std::vector<double> nll(seqs.size(), 0.0), kl(seqs.size(), 0.0);
  kernel::parallel_for(static_cast<std::ptrdiff_t>(seqs.size()), threads, [&](std::ptrdiff_t b, std::ptrdiff_t e) {
    for (auto i = static_cast<std::size_t>(b); i < static_cast<std::size_t>(e); ++i) {
      const auto& s = seqs[i];
      RowMatrixXf h = streams[i];
      for (int l = first_layer; l < model.config().n_layers; ++l) model.forward_layer(l, h);
      const RowMatrixXf logits = model.logits(h);
      for (Index t = 0; t < logits.rows(); ++t) {
        const double lse = log_sum_exp(logits.row(t));
        nll[i] += lse - static_cast<double>(logits(t, s[static_cast<std::size_t>(t) + 1]));
        if (ref != nullptr) {
          const auto& lp = ref->log_probs[i];
          double k = 0.0;
          for (Index v = 0; v < logits.cols(); ++v) {
            const double p = lp(t, v);
            k += std::exp(p) * (p - (static_cast<double>(logits(t, v)) - lse));
          }
          kl[i] += k;
        }
      }
    }
  });
  double n = 0, sn = 0, sk = 0;
  for (std::size_t i = 0; i < seqs.size(); ++i) {
    n += static_cast<double>(seqs[i].size() - 1);
    sn += nll[i];
    sk += kl[i];
  }
  if (kl_out != nullptr) *kl_out = sk / n;
  return sn / n;
}

}  // namespace detail

/// Step 1 of the header comment. `calibration` gives each matrix's input statistics (fp32
/// model); `scoring` the sequences KL and NLL are measured on (each >= 2 tokens).
[[nodiscard]] inline SensitivityTable measure_sensitivity(const Transformer& fp32,
                                                          std::span<const std::vector<int>> calibration,
                                                          std::span<const std::vector<int>> scoring,
                                                          const SensitivityOptions& options,
                                                          const PrecisionRecipeFactory& make) {
  constexpr std::string_view kWhere = "measure_sensitivity";
  if (options.candidates.empty()) fail(kWhere, ": no candidate precisions");
  if (scoring.empty()) fail(kWhere, ": no scoring sequences");
  for (std::size_t i = 0; i < scoring.size(); ++i) {
    if (scoring[i].size() < 2) fail(kWhere, ": scoring sequence ", i, " has ", scoring[i].size(), " tokens (need >= 2)");
  }
  require_range(kWhere, "options.threads", options.threads, 1, 1024);
  if (options.linear_model && !(options.noise_relative_error > 0.0 && options.noise_relative_error < 1.0)) {
    fail(kWhere, ": noise_relative_error must be in (0, 1), got ", options.noise_relative_error);
  }
  std::vector<std::unique_ptr<Recipe>> recipes;
  bool calibrate = false;
  for (const auto& c : options.candidates) {
    recipes.push_back(make(c));
    if (!recipes.back()) fail(kWhere, ": the recipe factory returned nothing for ", to_string(c));
    calibrate = calibrate || recipes.back()->needs_calibration();
  }
  if (calibrate && calibration.empty()) fail(kWhere, ": the recipes calibrate, and no calibration sequences were given");

  const auto names = fp32.linear_names();
  // Every matrix's input statistics in the fp32 model, from one pass over the calibration text.
  std::map<std::string, calib::HessianAccumulator> stats;
  for (const auto& n : names) stats.emplace(n, calib::HessianAccumulator(fp32.linear(n).in_features()));
  if (calibrate) {
    Transformer observed = fp32;
    observed.set_observer([&](std::string_view name, MatrixRef x) { stats.at(std::string(name)).add_batch(x); });
    for (const auto& seq : calibration) {
      const std::size_t n = std::min(seq.size(), static_cast<std::size_t>(fp32.config().seq_len));
      (void)observed.forward(std::span<const int>(seq.data(), n));
    }
  }
  SensitivityTable table;
  table.candidates = options.candidates;
  detail::ScoringReference ref;
  ref.log_probs.resize(scoring.size());
  for (std::size_t i = 0; i < scoring.size(); ++i) {
    RowMatrixXf logits = fp32.forward(std::span<const int>(scoring[i].data(), scoring[i].size() - 1));
    for (Index t = 0; t < logits.rows(); ++t) {
      const auto lse = static_cast<float>(detail::log_sum_exp(logits.row(t)));
      logits.row(t).array() -= lse;
    }
    ref.log_probs[i] = std::move(logits);
    table.scored_tokens += static_cast<std::int64_t>(scoring[i].size() - 1);
  }
  // The fp32 residual streams entering each block, per scoring sequence.
  const int n_layers = fp32.config().n_layers;
  std::vector<std::vector<RowMatrixXf>> streams(static_cast<std::size_t>(n_layers), std::vector<RowMatrixXf>(scoring.size()));
  for (std::size_t i = 0; i < scoring.size(); ++i) {
    RowMatrixXf h = fp32.embed(std::span<const int>(scoring[i].data(), scoring[i].size() - 1));
    for (int l = 0; l < n_layers; ++l) {
      streams[static_cast<std::size_t>(l)][i] = h;
      fp32.forward_layer(l, h);
    }
  }
  table.fp32_nll = detail::score_against(fp32, scoring, streams[0], 0, nullptr, options.threads, nullptr);

  const RowMatrixXf empty_sample;
  Transformer trial = fp32;
  for (std::size_t li = 0; li < names.size(); ++li) {
    const std::string& name = names[li];
    const int block = std::stoi(name.substr(7, name.find('.', 7) - 7));  // "layers.B.wq"
    const auto& dense = dynamic_cast<const DenseLinear&>(fp32.linear(name));
    MatrixSensitivity m;
    m.name = name;
    m.weights = static_cast<std::int64_t>(dense.weight().rows()) * dense.weight().cols();
    const bool is_norm_input = name.ends_with(".wq") || name.ends_with(".wk") || name.ends_with(".wv") ||
                               name.ends_with(".w1") || name.ends_with(".w3");
    // Alone in the fp32 model a matrix's inputs are the fp32 model's: the cross term is H itself.
    const Eigen::MatrixXd h_fp32 = calibrate ? stats.at(name).hessian() : Eigen::MatrixXd();
    // The linear model's probe: W + noise with tr(N H Nᵀ) = t0² tr(W H Wᵀ) (H = I without
    // calibration), one evaluation.
    const RowMatrixXf& wt = dense.weight();
    const Eigen::MatrixXd h_rel = calibrate ? h_fp32 : Eigen::MatrixXd::Identity(wt.cols(), wt.cols());
    auto output_energy = [&](const Eigen::MatrixXd& d) { return (d * h_rel).cwiseProduct(d).sum(); };
    const double energy = output_energy(wt.cast<double>());
    double alpha_kl = 0.0, alpha_nll = 0.0;
    if (options.linear_model) {
      std::mt19937_64 rng(options.seed + 0x9e3779b97f4a7c15ULL * (li + 1));
      std::normal_distribution<double> normal;
      Eigen::MatrixXd noise(wt.rows(), wt.cols());
      for (Index r = 0; r < noise.rows(); ++r) {
        for (Index c = 0; c < noise.cols(); ++c) noise(r, c) = normal(rng);
      }
      noise *= std::sqrt(options.noise_relative_error * energy / std::max(output_energy(noise), 1e-300));
      auto previous = trial.set_linear(name, std::make_unique<DenseLinear>(RowMatrixXf(wt + noise.cast<float>())));
      double kl = 0.0;
      const double nll = detail::score_against(trial, scoring, streams[static_cast<std::size_t>(block)], block, &ref,
                                               options.threads, &kl);
      trial.set_linear(name, std::move(previous));
      alpha_kl = kl / options.noise_relative_error;
      alpha_nll = (nll - table.fp32_nll) / options.noise_relative_error;
    }
    for (std::size_t c = 0; c < recipes.size(); ++c) {
      const bool targets = calibrate && recipes[c]->wants_fp32_targets();
      const LayerCalibration lc{name,          0, &dense.weight(), &stats.at(name), &empty_sample, is_norm_input,
                                targets ? &h_fp32 : nullptr};
      auto out = recipes[c]->quantize(std::span<const LayerCalibration>(&lc, 1));
      if (out.size() != 1 || !out.front().op) fail(kWhere, ": recipe '", recipes[c]->name(), "' returned no op for ", name);
      if (out.front().input_scale.size() > 0) {
        fail(kWhere, ": recipe '", recipes[c]->name(), "' folds input scales into a norm shared by a group; "
             "per-matrix precisions need recipes that quantize each matrix on its own");
      }
      m.bits_per_weight.push_back(out.front().bits_per_weight);
      if (options.linear_model) {
        // The layer's effective weights: its op applied to the identity gives Ŵᵀ.
        const RowMatrixXf what_t = out.front().op->forward(RowMatrixXf::Identity(wt.cols(), wt.cols()));
        const double t2 = output_energy(what_t.transpose().cast<double>() - wt.cast<double>()) / energy;
        m.kl.push_back(alpha_kl * t2);
        m.delta_nll.push_back(alpha_nll * t2);
        continue;
      }
      auto previous = trial.set_linear(name, std::move(out.front().op));
      double kl = 0.0;
      const double nll = detail::score_against(trial, scoring, streams[static_cast<std::size_t>(block)], block, &ref,
                                               options.threads, &kl);
      trial.set_linear(name, std::move(previous));
      m.kl.push_back(kl);
      m.delta_nll.push_back(nll - table.fp32_nll);
    }
    if (options.progress) {
      std::string line = str_cat("sensitivity ", name, ":");
      for (std::size_t c = 0; c < recipes.size(); ++c) {
        line += str_cat(" ", to_string(options.candidates[c]), " KL ", m.kl[c]);
      }
      options.progress(line);
    }
    table.matrices.push_back(std::move(m));
  }
  return table;
}

struct BitAllocation {
  std::vector<std::size_t> choice;   ///< per matrix, an index into the table's candidates
  double bits_per_weight = 0.0;      ///< achieved, Σ B_i n_i / Σ n_i
  double target_bits_per_weight = 0.0;
  double predicted_kl = 0.0;         ///< Σ KL_i(c_i)
  double predicted_delta_nll = 0.0;  ///< Σ ΔNLL_i(c_i)
};

/// Step 2 of the header comment: the exact minimum of Σ KL subject to the budget (up to the bit
/// unit for very large models). Throws qtl::Error when even the cheapest choices exceed it.
[[nodiscard]] inline BitAllocation allocate_bits(const SensitivityTable& table, double target_bits_per_weight) {
  constexpr std::string_view kWhere = "allocate_bits";
  if (!(target_bits_per_weight > 0.0) || !std::isfinite(target_bits_per_weight)) {
    fail(kWhere, ": the target bits per weight must be finite and > 0, got ", target_bits_per_weight);
  }
  const std::size_t nm = table.matrices.size(), nc = table.candidates.size();
  if (nm == 0 || nc == 0) fail(kWhere, ": the sensitivity table is empty");
  std::int64_t total_weights = 0;
  std::vector<std::vector<std::int64_t>> bits(nm, std::vector<std::int64_t>(nc));
  for (std::size_t i = 0; i < nm; ++i) {
    const auto& m = table.matrices[i];
    if (m.kl.size() != nc || m.bits_per_weight.size() != nc) fail(kWhere, ": matrix ", m.name, " lacks candidates");
    total_weights += m.weights;
    for (std::size_t c = 0; c < nc; ++c) {
      bits[i][c] = std::llround(m.bits_per_weight[c] * static_cast<double>(m.weights));
    }
  }
  const auto budget = static_cast<std::int64_t>(std::floor(target_bits_per_weight * static_cast<double>(total_weights)));
  std::int64_t cheapest = 0;
  for (const auto& b : bits) cheapest += *std::min_element(b.begin(), b.end());
  if (cheapest > budget) {
    fail(kWhere, ": the cheapest choice of every matrix needs ", static_cast<double>(cheapest) / total_weights,
         " bits per weight, above the target ", target_bits_per_weight);
  }
  // Knapsack over the bits above the cheapest choices, in units of `unit` bits (costs rounded
  // up, so whatever fits in units fits in bits).
  const std::int64_t slack = budget - cheapest;
  const std::int64_t unit = std::max<std::int64_t>(1, (slack + 999'999) / 1'000'000);
  const auto cap = static_cast<std::size_t>(slack / unit);
  std::vector<std::vector<std::int64_t>> extra(nm, std::vector<std::int64_t>(nc));
  for (std::size_t i = 0; i < nm; ++i) {
    const std::int64_t lo = *std::min_element(bits[i].begin(), bits[i].end());
    for (std::size_t c = 0; c < nc; ++c) extra[i][c] = (bits[i][c] - lo + unit - 1) / unit;
  }
  constexpr double kInf = std::numeric_limits<double>::infinity();
  std::vector<double> best(cap + 1, 0.0), next(cap + 1);
  std::vector<std::vector<std::uint8_t>> pick(nm, std::vector<std::uint8_t>(cap + 1));
  if (nc > 255) fail(kWhere, ": at most 255 candidates, got ", nc);
  for (std::size_t i = 0; i < nm; ++i) {
    for (std::size_t u = 0; u <= cap; ++u) {
      double v = kInf;
      std::uint8_t arg = 0;
      for (std::size_t c = 0; c < nc; ++c) {
        const auto e = static_cast<std::size_t>(extra[i][c]);
        if (e > u) continue;
        const double cand = best[u - e] + table.matrices[i].kl[c];
        if (cand < v) {
          v = cand;
          arg = static_cast<std::uint8_t>(c);
        }
      }
      next[u] = v;
      pick[i][u] = arg;
    }
    std::swap(best, next);
  }
  BitAllocation a;
  a.target_bits_per_weight = target_bits_per_weight;
  a.choice.assign(nm, 0);
  std::size_t u = cap;
  for (std::size_t i = nm; i-- > 0;) {
    const std::uint8_t c = pick[i][u];
    a.choice[i] = c;
    u -= static_cast<std::size_t>(extra[i][c]);
  }
  std::int64_t used = 0;
  for (std::size_t i = 0; i < nm; ++i) {
    used += bits[i][a.choice[i]];
    a.predicted_kl += table.matrices[i].kl[a.choice[i]];
    a.predicted_delta_nll += table.matrices[i].delta_nll[a.choice[i]];
  }
  a.bits_per_weight = static_cast<double>(used) / static_cast<double>(total_weights);
  return a;
}

/// The allocation as a precision per matrix name, for recipes that take one (e.g.
/// MixedBlockReconstructionRecipe, qtl/model/block_reconstruction.hpp).
[[nodiscard]] inline std::map<std::string, Precision, std::less<>> precisions_of(const SensitivityTable& table,
                                                                                  const BitAllocation& plan) {
  if (plan.choice.size() != table.matrices.size()) {
    fail("precisions_of: the plan has ", plan.choice.size(), " choices for ", table.matrices.size(), " matrices");
  }
  std::map<std::string, Precision, std::less<>> out;
  for (std::size_t i = 0; i < plan.choice.size(); ++i) {
    if (plan.choice[i] >= table.candidates.size()) {
      fail("precisions_of: ", table.matrices[i].name, " has choice ", plan.choice[i], " of ", table.candidates.size(),
           " candidates");
    }
    out.emplace(table.matrices[i].name, table.candidates[plan.choice[i]]);
  }
  return out;
}

/// Step 3: each matrix quantized at its allocated precision by the recipe make() builds for it.
class MixedPrecisionRecipe final : public Recipe {
 public:
  MixedPrecisionRecipe(std::string name, const SensitivityTable& table, const BitAllocation& plan,
                       const PrecisionRecipeFactory& make)
      : name_(std::move(name)) {
    if (plan.choice.size() != table.matrices.size()) {
      fail("MixedPrecisionRecipe: the plan has ", plan.choice.size(), " choices for ", table.matrices.size(),
           " matrices");
    }
    for (std::size_t i = 0; i < plan.choice.size(); ++i) {
      const Precision& p = table.candidates.at(plan.choice[i]);
      auto it = recipes_.find(p);
      if (it == recipes_.end()) it = recipes_.emplace(p, make(p)).first;
      by_name_.emplace(table.matrices[i].name, it->second.get());
    }
  }
  [[nodiscard]] std::string name() const override { return name_; }
  [[nodiscard]] bool needs_calibration() const override {
    return std::any_of(recipes_.begin(), recipes_.end(), [](const auto& r) { return r.second->needs_calibration(); });
  }
  [[nodiscard]] bool wants_fp32_targets() const override {
    return std::any_of(recipes_.begin(), recipes_.end(), [](const auto& r) { return r.second->wants_fp32_targets(); });
  }
  [[nodiscard]] std::vector<QuantizedLayer> quantize(std::span<const LayerCalibration> group) const override {
    std::vector<QuantizedLayer> out;
    for (const auto& l : group) {
      const auto it = by_name_.find(l.name);
      if (it == by_name_.end()) fail("MixedPrecisionRecipe: no precision allocated for '", l.name, "'");
      auto one = it->second->quantize(std::span<const LayerCalibration>(&l, 1));
      if (one.size() != 1) fail("MixedPrecisionRecipe: recipe '", it->second->name(), "' returned ", one.size(), " layers");
      if (one.front().input_scale.size() > 0) {
        fail("MixedPrecisionRecipe: recipe '", it->second->name(), "' folds input scales into a shared norm");
      }
      out.push_back(std::move(one.front()));
    }
    return out;
  }

 private:
  std::string name_;
  std::map<Precision, std::unique_ptr<Recipe>> recipes_;
  std::map<std::string, const Recipe*, std::less<>> by_name_;
};

}  // namespace qtl::model
