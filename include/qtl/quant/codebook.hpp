// qtl/quant/codebook.hpp — non-uniform scalar codebooks of <= 4 bits: fixed tables (NF4, FP4
// E2M1) scaled per group, and tables fitted by importance-weighted k-means (Lloyd-Max).
//
// Fixed tables (FixedCodebook<Levels>):  x_hat = s * L[code],  s = fp16 scale per group.
//   NF4: bitsandbytes' 16 normal-quantile levels in [-1, 1] (0 exact), s0 = absmax.
//   FP4: the 16 values of E2M1 (code = sign:1 | exponent:2 | mantissa:1; exponent 0 is
//        subnormal: 0 or 0.5; else (1 + m/2) * 2^(e-1)), so levels are +-{0, .5, 1, 1.5, 2, 3, 4, 6},
//        s0 = absmax / 6. Codes 0 and 8 both decode to 0.
//   FitOptions::clip_search searches the scale down to clip_min_ratio * s0; refine_iterations
//   refits it by least squares (qtl/quant/scalar_fit.hpp).
//
// Fitted tables (KMeansCodebook<Bits>): the 2^Bits levels minimize
//   J = sum_i w_i (x_i - c_{a(i)})^2     (w_i = importance, e.g. the Hessian diagonal or the
//                                         squared gradient as SqueezeLLM weights each weight)
// by Lloyd's algorithm in one dimension (kmeans_1d): k-means++ seeding from a seeded mt19937,
// then alternating the nearest-centroid assignment and the weighted-mean update. Each step can
// only lower J, so J never increases across iterations; an empty cluster is re-seeded at the
// value with the largest weighted error, which cannot raise J either. The fitted levels are
// rounded to fp16 and sorted: the table is the parameter set. The table is per group, per row
// or per tensor through the granularity (PerRow / PerTensor hand fit() the whole row / tensor),
// and its 2^Bits fp16 entries are counted in param_bits().
//
// Fitted table, scaled per group (ScaledCodebook<Bits> + fit_scaled_codebook): one table per
// matrix fitted on the group-normalized weights, times an fp16 scale per group; see below.
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <limits>
#include <numeric>
#include <optional>
#include <random>
#include <span>
#include <string>
#include <vector>

#include "qtl/core/error.hpp"
#include "qtl/core/validate.hpp"
#include "qtl/detail/fp16.hpp"
#include "qtl/quant/concepts.hpp"
#include "qtl/quant/decode_table.hpp"
#include "qtl/quant/granularity.hpp"
#include "qtl/quant/quantize_matrix.hpp"
#include "qtl/quant/scalar_fit.hpp"

namespace qtl {

// ---- fixed tables -------------------------------------------------------------------------

struct NF4Levels {
  static constexpr const char* kName = "nf4";
  static constexpr float kMaxAbs = 1.0f;
  // bitsandbytes' NF4 (QLoRA, Dettmers et al. 2023): quantiles of N(0, 1) normalized to [-1, 1].
  static constexpr DecodeTable kLevels = {
      -1.0f, -0.6961928009986877f, -0.5250730514526367f, -0.39491748809814453f,
      -0.28444138169288635f, -0.18477343022823334f, -0.09105003625154495f, 0.0f,
      0.07958029955625534f, 0.16093020141124725f, 0.24611230194568634f, 0.33791524171829224f,
      0.44070982933044434f, 0.5626170039176941f, 0.7229568362236023f, 1.0f};
};

struct FP4Levels {
  static constexpr const char* kName = "fp4-e2m1";
  static constexpr float kMaxAbs = 6.0f;
  // code = s e1 e0 m  (bit 3 = sign)
  static constexpr DecodeTable kLevels = {0.0f,  0.5f,  1.0f,  1.5f,  2.0f,  3.0f,  4.0f,  6.0f,
                                          -0.0f, -0.5f, -1.0f, -1.5f, -2.0f, -3.0f, -4.0f, -6.0f};
};

template <class Levels>
class FixedCodebook {
 public:
  static constexpr int kBits = 4;
  static constexpr int kCodes = 16;
  static constexpr TableForm kTableForm = TableForm::ScaledShared;

  struct Params {
    float scale = 1.0f;  ///< fp16-representable, > 0
    friend bool operator==(const Params&, const Params&) = default;
  };

  [[nodiscard]] std::string name() const { return Levels::kName; }
  [[nodiscard]] static constexpr double param_bits() noexcept { return 16.0; }
  [[nodiscard]] static constexpr float level(std::uint8_t code) noexcept { return Levels::kLevels[code]; }
  [[nodiscard]] static float decode(const Params& p, std::uint8_t code) noexcept {
    return p.scale * Levels::kLevels[code];
  }
  [[nodiscard]] std::uint8_t encode(const Params& p, float x) const noexcept {
    return detail::nearest_code_scan(*this, p, x, kCodes);
  }
  [[nodiscard]] Params fit(std::span<const float> x, std::span<const float> importance,
                           const FitOptions& opt = {}) const {
    detail::check_group(name(), x, importance);
    return detail::fit_table_scale(*this, x, importance, opt, detail::abs_max(x) / Levels::kMaxAbs,
                                   opt.clip_min_ratio);
  }
  [[nodiscard]] static DecodeTable shared_table() noexcept { return Levels::kLevels; }
  [[nodiscard]] static Params params_from_scale(float s) noexcept { return Params{s}; }
};

using NF4 = FixedCodebook<NF4Levels>;
using FP4 = FixedCodebook<FP4Levels>;

// ---- k-means in one dimension -------------------------------------------------------------

struct KMeansOptions {
  int iterations = 50;  ///< Lloyd iterations at most (stops early when J stops falling)
  unsigned seed = 0;    ///< seeds the k-means++ initialization
};

struct KMeans1dResult {
  std::vector<double> centroids;  ///< k values, sorted ascending
  std::vector<double> objective;  ///< J after each assignment step (non-increasing)
};

/// Weighted 1-D k-means (see the header comment). `weights` is empty (all ones) or one weight
/// >= 0 per value; if every weight is 0 the values are weighted equally. Throws qtl::Error for
/// k < 1, fewer than k values, non-finite values or bad weights.
[[nodiscard]] inline KMeans1dResult kmeans_1d(std::span<const float> x, std::span<const float> weights,
                                              int k, const KMeansOptions& opt = {}) {
  constexpr std::string_view kWhere = "kmeans_1d";
  if (k < 1) fail(kWhere, ": the codebook size must be >= 1, got ", k);
  if (x.size() < static_cast<std::size_t>(k)) {
    fail(kWhere, ": a codebook of ", k, " entries needs at least ", k, " values to fit, got ", x.size());
  }
  if (opt.iterations < 0) fail(kWhere, ": iterations must be >= 0, got ", opt.iterations);
  detail::check_group(kWhere, x, weights);
  const std::size_t n = x.size();
  std::vector<double> w(n, 1.0);
  double total = 0.0;
  for (std::size_t i = 0; i < weights.size(); ++i) total += weights[i];
  if (!weights.empty() && total > 0.0) {
    for (std::size_t i = 0; i < n; ++i) w[i] = weights[i];
  }

  // k-means++ seeding: the first centre with probability ~ w, the next ones ~ w * D^2.
  std::mt19937 rng(opt.seed);
  std::uniform_real_distribution<double> uni(0.0, 1.0);
  auto sample = [&](const std::vector<double>& mass) -> std::size_t {
    const double sum = std::accumulate(mass.begin(), mass.end(), 0.0);
    if (!(sum > 0.0)) return static_cast<std::size_t>(uni(rng) * static_cast<double>(n)) % n;
    double t = uni(rng) * sum;
    for (std::size_t i = 0; i < n; ++i) {
      t -= mass[i];
      if (t < 0.0) return i;
    }
    return n - 1;
  };
  std::vector<double> c;
  c.reserve(static_cast<std::size_t>(k));
  c.push_back(x[sample(w)]);
  std::vector<double> d2(n), mass(n);
  for (std::size_t i = 0; i < n; ++i) d2[i] = (x[i] - c[0]) * (x[i] - c[0]);
  while (static_cast<int>(c.size()) < k) {
    for (std::size_t i = 0; i < n; ++i) mass[i] = w[i] * d2[i];
    const double ci = x[sample(mass)];
    c.push_back(ci);
    for (std::size_t i = 0; i < n; ++i) d2[i] = std::min(d2[i], (x[i] - ci) * (x[i] - ci));
  }

  // Lloyd iterations over the values sorted once: with sorted centres every cluster is a run of
  // consecutive sorted values, found by one merge-like scan against the midpoints.
  std::vector<std::size_t> order(n);
  std::iota(order.begin(), order.end(), std::size_t{0});
  std::sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) { return x[a] < x[b]; });
  std::vector<double> xs(n), ws(n), err(n);
  for (std::size_t i = 0; i < n; ++i) {
    xs[i] = x[order[i]];
    ws[i] = w[order[i]];
  }
  KMeans1dResult out;
  const auto K = static_cast<std::size_t>(k);
  std::vector<std::size_t> begin(K + 1);
  for (int it = 0;; ++it) {
    std::sort(c.begin(), c.end());
    // cluster j = sorted values in [begin[j], begin[j+1]): those below the midpoint of c_j, c_j+1
    std::size_t i = 0;
    for (std::size_t j = 0; j < K; ++j) {
      begin[j] = i;
      if (j + 1 < K) {
        const double mid = 0.5 * (c[j] + c[j + 1]);
        while (i < n && !(xs[i] > mid)) ++i;
      } else {
        i = n;
      }
    }
    begin[K] = n;
    double J = 0.0;
    for (std::size_t j = 0; j < K; ++j) {
      for (std::size_t m = begin[j]; m < begin[j + 1]; ++m) {
        const double d = xs[m] - c[j];
        err[m] = ws[m] * d * d;
        J += err[m];
      }
    }
    const bool stalled = !out.objective.empty() && !(J < out.objective.back() * (1.0 - 1e-12));
    out.objective.push_back(J);
    if (stalled || it >= opt.iterations) break;
    // update: weighted means; an empty cluster moves to the worst-fitted value
    for (std::size_t j = 0; j < K; ++j) {
      double sw = 0.0, swx = 0.0;
      for (std::size_t m = begin[j]; m < begin[j + 1]; ++m) {
        sw += ws[m];
        swx += ws[m] * xs[m];
      }
      if (sw > 0.0) {
        c[j] = swx / sw;
      } else {
        const auto worst = static_cast<std::size_t>(std::max_element(err.begin(), err.end()) - err.begin());
        if (err[worst] > 0.0) {
          c[j] = xs[worst];
          err[worst] = 0.0;
        }
      }
    }
  }
  std::sort(c.begin(), c.end());
  out.centroids = c;
  return out;
}

// ---- fitted table -------------------------------------------------------------------------

template <int Bits>
class KMeansCodebook {
  static_assert(Bits >= 1 && Bits <= 4, "KMeansCodebook<Bits>: Bits must be in [1, 4]");

 public:
  static constexpr int kBits = Bits;
  static constexpr int kCodes = 1 << Bits;
  static constexpr TableForm kTableForm = TableForm::PerSet;

  struct Params {
    DecodeTable levels{};  ///< kCodes fp16 values sorted ascending, then zeros
    friend bool operator==(const Params&, const Params&) = default;
  };

  KMeansCodebook() = default;
  explicit KMeansCodebook(KMeansOptions options) : options_(options) {}

  [[nodiscard]] std::string name() const { return str_cat("kmeans", Bits); }
  /// The table: 2^Bits fp16 levels.
  [[nodiscard]] static constexpr double param_bits() noexcept { return 16.0 * kCodes; }
  [[nodiscard]] const KMeansOptions& options() const noexcept { return options_; }

  [[nodiscard]] static float decode(const Params& p, std::uint8_t code) noexcept { return p.levels[code]; }
  [[nodiscard]] std::uint8_t encode(const Params& p, float x) const noexcept {
    return detail::nearest_code_scan(*this, p, x, kCodes);
  }
  /// Weighted k-means of the group (FitOptions' clip options do not apply to a free table).
  [[nodiscard]] Params fit(std::span<const float> x, std::span<const float> importance,
                           const FitOptions& = {}) const {
    detail::check_group(name(), x, importance);
    if (x.size() < static_cast<std::size_t>(kCodes)) {
      fail(name(), ": a codebook of ", kCodes, " entries needs at least ", kCodes,
           " values to fit, got a group of ", x.size());
    }
    const auto km = kmeans_1d(x, importance, kCodes, options_);
    Params p;
    for (int j = 0; j < kCodes; ++j) {
      const auto h = detail::round_to_half(static_cast<float>(km.centroids[static_cast<std::size_t>(j)]));
      if (!std::isfinite(h)) fail(name(), ": level ", km.centroids[static_cast<std::size_t>(j)], " is too large for fp16");
      p.levels[static_cast<std::size_t>(j)] = h;
    }
    std::sort(p.levels.begin(), p.levels.begin() + kCodes);
    return p;
  }
  [[nodiscard]] static DecodeTable table_levels(const Params& p) noexcept { return p.levels; }
  [[nodiscard]] static Params params_from_levels(const DecodeTable& t) noexcept {
    Params p;
    for (int j = 0; j < kCodes; ++j) p.levels[static_cast<std::size_t>(j)] = t[static_cast<std::size_t>(j)];
    return p;
  }

 private:
  KMeansOptions options_{};
};

// ---- fitted table shared by a matrix, scaled per group ------------------------------------

/// x_hat = s * L[code]: an fp16 scale per group times a level table L shared by the whole matrix
/// (fitted by fit_scaled_codebook below). It is NF4's form with a fitted table: the table costs
/// 2^Bits floats once per matrix instead of 2^Bits fp16 values per group, so small groups keep
/// their own scale at 16 bits. L is normalized so that max |L| = 1 (the scale is the absmax).
template <int Bits>
class ScaledCodebook {
  static_assert(Bits >= 1 && Bits <= 4, "ScaledCodebook<Bits>: Bits must be in [1, 4]");

 public:
  static constexpr int kBits = Bits;
  static constexpr int kCodes = 1 << Bits;
  static constexpr TableForm kTableForm = TableForm::ScaledShared;

  struct Params {
    float scale = 1.0f;  ///< fp16, > 0
    friend bool operator==(const Params&, const Params&) = default;
  };

  /// Levels 0 .. 2^Bits - 1 of `levels` (sorted, normalized to max |L| = 1 here); throws
  /// qtl::Error for non-finite or all-zero levels.
  explicit ScaledCodebook(const DecodeTable& levels = default_levels()) {
    float m = 0.0f;
    for (int k = 0; k < kCodes; ++k) {
      if (!std::isfinite(levels[static_cast<std::size_t>(k)])) fail("ScaledCodebook: level ", k, " is not finite");
      m = std::max(m, std::fabs(levels[static_cast<std::size_t>(k)]));
    }
    if (!(m > 0.0f)) fail("ScaledCodebook: the levels are all zero");
    for (int k = 0; k < kCodes; ++k) levels_[static_cast<std::size_t>(k)] = levels[static_cast<std::size_t>(k)] / m;
    std::sort(levels_.begin(), levels_.begin() + kCodes);
  }

  [[nodiscard]] std::string name() const { return str_cat("kmeans", Bits, "-scaled"); }
  [[nodiscard]] static constexpr double param_bits() noexcept { return 16.0; }
  [[nodiscard]] float level(std::uint8_t code) const noexcept { return levels_[code]; }
  [[nodiscard]] float decode(const Params& p, std::uint8_t code) const noexcept { return p.scale * levels_[code]; }
  [[nodiscard]] std::uint8_t encode(const Params& p, float x) const noexcept {
    return detail::nearest_code_scan(*this, p, x, kCodes);
  }
  [[nodiscard]] Params fit(std::span<const float> x, std::span<const float> importance,
                           const FitOptions& opt = {}) const {
    detail::check_group(name(), x, importance);
    return detail::fit_table_scale(*this, x, importance, opt, detail::abs_max(x), opt.clip_min_ratio);
  }
  [[nodiscard]] DecodeTable shared_table() const noexcept { return levels_; }
  [[nodiscard]] static Params params_from_scale(float s) noexcept { return Params{s}; }

  /// Uniform levels in [-1, 1] (a starting point; fit_scaled_codebook replaces them).
  [[nodiscard]] static DecodeTable default_levels() noexcept {
    DecodeTable t{};
    for (int k = 0; k < kCodes; ++k) t[static_cast<std::size_t>(k)] = kCodes == 1 ? 1.0f : -1.0f + 2.0f * k / (kCodes - 1);
    return t;
  }

 private:
  DecodeTable levels_{};
};

template <int Bits>
struct ScaledCodebookFit {
  ScaledCodebook<Bits> quantizer;
  QuantizedMatrix<ScaledCodebook<Bits>> matrix;
  double weighted_error = 0.0;

  /// bits_per_weight(matrix) plus the shared table: 2^Bits float32 levels per matrix.
  [[nodiscard]] double bits_per_weight() const {
    return qtl::bits_per_weight(matrix) +
           32.0 * (1 << Bits) / (static_cast<double>(matrix.rows()) * static_cast<double>(matrix.cols()));
  }
};

/// Fits one level table for the whole matrix and a scale per group (SqueezeLLM's weighted
/// k-means, made scale-invariant as NF4 is). Alternating minimization of
///   E = sum_(r,c) imp(r,c) (W(r,c) - s_g L[code(r,c)])^2 :
/// with the scales fixed, the table is the weighted 1-D k-means of u = W / s_g with weights
/// imp * s_g^2 (then E = sum imp s_g^2 (u - L)^2 exactly); with the table fixed, quantize_matrix
/// refits every group's scale (opt.fit with at least two least-squares refits: the alternation
/// needs them). Starts from s_g = the group's absmax; `rounds` alternations, the best (lowest E)
/// result is kept.
template <int Bits>
[[nodiscard]] ScaledCodebookFit<Bits> fit_scaled_codebook(const Granularity& granularity, MatrixRef w,
                                                          const QuantizeOptions& opt = {},
                                                          const KMeansOptions& kmeans = {}, int rounds = 2) {
  constexpr std::string_view kWhere = "fit_scaled_codebook";
  require_nonempty(kWhere, "weights", w.rows(), w.cols());
  require_finite(kWhere, "weights", w);
  require_range(kWhere, "rounds", rounds, 1, 100);
  const GroupLayout L = make_group_layout(granularity, w.rows(), w.cols(), kWhere);
  QuantizeOptions scale_step = opt;
  scale_step.fit.refine_iterations = std::max(opt.fit.refine_iterations, 2);
  auto importance = [&](Index r, Index c) {
    double v = 1.0;
    if (opt.column_importance.size() > 0) v *= opt.column_importance[c];
    if (opt.importance.size() > 0) v *= opt.importance(r, c);
    return v;
  };
  // starting scales: group absmax
  std::vector<float> scales(static_cast<std::size_t>(L.num_param_sets()), 0.0f);
  for (Index r = 0; r < L.rows; ++r) {
    for (Index c = 0; c < L.cols; ++c) {
      auto& s = scales[static_cast<std::size_t>(L.param_index(r, c))];
      s = std::max(s, std::fabs(w(r, c)));
    }
  }
  std::optional<ScaledCodebookFit<Bits>> best;
  std::vector<float> u, uw;
  for (int round = 0; round < rounds; ++round) {
    u.clear();
    uw.clear();
    for (Index r = 0; r < L.rows; ++r) {
      for (Index c = 0; c < L.cols; ++c) {
        const float s = scales[static_cast<std::size_t>(L.param_index(r, c))];
        if (!(s > 0.0f)) continue;  // an all-zero group decodes exactly with any table
        u.push_back(w(r, c) / s);
        uw.push_back(static_cast<float>(importance(r, c) * double(s) * double(s)));
      }
    }
    if (u.size() < static_cast<std::size_t>(1 << Bits)) {
      fail(kWhere, ": a table of ", 1 << Bits, " levels needs at least ", 1 << Bits, " non-zero-group values, got ", u.size());
    }
    const auto km = kmeans_1d(u, uw, 1 << Bits, kmeans);
    DecodeTable t{};
    for (int k = 0; k < (1 << Bits); ++k) t[static_cast<std::size_t>(k)] = static_cast<float>(km.centroids[static_cast<std::size_t>(k)]);
    ScaledCodebook<Bits> q(t);
    auto m = quantize_matrix(q, granularity, w, scale_step);
    double err = 0.0;
    for (Index r = 0; r < L.rows; ++r) {
      for (Index c = 0; c < L.cols; ++c) {
        const double d = static_cast<double>(w(r, c)) - m.value(r, c);
        err += importance(r, c) * d * d;
      }
    }
    for (std::size_t i = 0; i < scales.size(); ++i) scales[i] = m.params[i].scale;
    if (!best || err < best->weighted_error) best = ScaledCodebookFit<Bits>{q, std::move(m), err};
  }
  return std::move(*best);
}

/// Calls f(KMeansCodebook<B>{options}) for a bit width known only at run time; throws
/// qtl::Error for bits outside [1, 4].
template <class F>
decltype(auto) visit_kmeans_codebook(int bits, const KMeansOptions& options, F&& f) {
  switch (bits) {
    case 1: return f(KMeansCodebook<1>{options});
    case 2: return f(KMeansCodebook<2>{options});
    case 3: return f(KMeansCodebook<3>{options});
    case 4: return f(KMeansCodebook<4>{options});
    default: fail("kmeans codebook: bits must be in [1, 4], got ", bits);
  }
}

}  // namespace qtl
