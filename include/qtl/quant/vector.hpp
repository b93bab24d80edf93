// qtl/quant/vector.hpp — vector quantization: D consecutive weights of a row share one index
// into a codebook of 2^Bits D-vectors.
//
// The VectorQuantizer concept (it does not pretend to be scalar):
//   params = v.fit(x, w)          x: n vectors of kDim floats, row after row (n * kDim values);
//                                 w: n * kDim importance weights >= 0 (never empty here)
//   index  = v.encode(params, vec, wt)   the codeword nearest to vec in the wt-weighted norm
//                                        sum_d wt_d (vec_d - c_d)^2 (wt == nullptr: all ones)
//   v.decode(params, index, out)         writes the kDim values of codeword `index`
//   kDim, kBits (indices are < 2^kBits), name(), and kParamWords: one parameter set occupies
//   exactly kParamWords 16-bit words in the packed format (serialize / deserialize), so
//   param_bits() = 16 * kParamWords counts codebooks and scales honestly.
//
// Layout. A row of `cols` weights is cut into ceil(cols / D) vectors along the input dimension.
// When D does not divide cols (stories260K's 172 columns with D = 8) the last vector of each row
// is zero-padded: the padded coordinates get importance 0, so they influence neither the fit
// nor the choice of codeword, and their decoded values are dropped (a kernel multiplies them by
// activations it treats as 0). The padding still costs index bits, and bits_per_weight divides
// the stored bits by the real rows * cols, so padding is counted. One parameter set (codebook
// or scale) is shared by `rows_per_set` consecutive rows (VQGranularity; 0 = the whole tensor).
//
// KMeansVQ<Dim, Bits>: codebook fitted by importance-weighted k-means (VPTQ uses the Hessian
// diagonal as the weights; GPTVQ / AQLM likewise weight by input statistics): k-means++ seeding
// from a seeded mt19937, then Lloyd iterations. For fixed assignments the weighted objective
//   J = sum_vectors sum_d w_d (x_d - c_{a,d})^2
// is minimized per coordinate by the weighted mean c_{k,d} = sum w_d x_d / sum w_d over the
// cluster, and for fixed centroids by the weighted-nearest assignment, so J never increases. An
// empty cluster is re-seeded at the worst-fitted vector (deterministic); coordinates of weight 0
// (padding) of a seed start at 0, so padding values never leak into a codebook. The codebook is rounded
// to fp16 once at the end (2^Bits * Dim fp16 words per set).
//
// ResidualVQ<V1, V2>: a second quantizer fitted on the residual of the first (AQLM / QuIP#'s
// RVQ): index = i1 | i2 << V1::kBits, decode = decode1 + decode2.
#pragma once

#include <algorithm>
#include <cmath>
#include <concepts>
#include <cstdint>
#include <limits>
#include <numeric>
#include <random>
#include <span>
#include <string>
#include <vector>
#include <utility>

#include "qtl/core/error.hpp"
#include "qtl/core/types.hpp"
#include "qtl/core/validate.hpp"
#include "qtl/detail/fp16.hpp"

namespace qtl {

template <class V>
concept VectorQuantizer =
    std::copy_constructible<V> &&
    requires(const V v, const typename V::Params p, std::span<const float> x, const float* vec,
             std::uint32_t index, float* out, std::vector<std::uint16_t>& words, const std::uint16_t* in) {
      typename V::Params;
      { V::kDim } -> std::convertible_to<int>;
      { V::kBits } -> std::convertible_to<int>;
      { V::kParamWords } -> std::convertible_to<std::size_t>;
      { v.name() } -> std::convertible_to<std::string>;
      { v.fit(x, x) } -> std::same_as<typename V::Params>;
      { v.encode(p, vec, vec) } -> std::same_as<std::uint32_t>;
      { v.decode(p, index, out) };
      { v.param_bits() } -> std::convertible_to<double>;
      { v.serialize(p, words) };
      { v.deserialize(in) } -> std::same_as<typename V::Params>;
    };

// ---- weighted k-means over D-vectors ---------------------------------------------------------

struct VectorKMeansOptions {
  int iterations = 25;  ///< Lloyd iterations at most (stops early when J stops falling)
  unsigned seed = 0;    ///< seeds the k-means++ initialization
};

struct VectorKMeansResult {
  std::vector<double> centroids;  ///< k * dim values
  std::vector<double> objective;  ///< J after each assignment step (non-increasing)
};

/// Weighted k-means of n = x.size() / dim vectors (see the header comment). `w` has one weight
/// per value; if all are 0 every coordinate is weighted 1. Throws qtl::Error for k < 1, fewer
/// vectors than k, sizes that do not match, non-finite values or negative weights.
[[nodiscard]] inline VectorKMeansResult kmeans_vectors(std::span<const float> x, std::span<const float> w,
                                                       int dim, int k, const VectorKMeansOptions& opt = {}) {
  constexpr std::string_view kWhere = "kmeans_vectors";
  if (dim < 1) fail(kWhere, ": dim must be >= 1, got ", dim);
  if (k < 1) fail(kWhere, ": the codebook size must be >= 1, got ", k);
  if (x.size() % static_cast<std::size_t>(dim) != 0) fail(kWhere, ": ", x.size(), " values are not whole ", dim, "-vectors");
  if (!w.empty() && w.size() != x.size()) fail(kWhere, ": ", w.size(), " weights for ", x.size(), " values");
  require_finite(kWhere, "values", x);
  require_finite(kWhere, "weights", w);
  const std::size_t n = x.size() / static_cast<std::size_t>(dim);
  const auto D = static_cast<std::size_t>(dim);
  const auto K = static_cast<std::size_t>(k);
  if (n < K) fail(kWhere, ": a codebook of ", k, " entries needs at least ", k, " vectors to fit, got ", n);
  std::vector<double> wt(x.size(), 1.0);
  double total = 0.0;
  for (float v : w) {
    if (v < 0.0f) fail(kWhere, ": weights must be >= 0, got ", v);
    total += v;
  }
  if (total > 0.0) {
    for (std::size_t i = 0; i < x.size(); ++i) wt[i] = w[i];
  }
  auto dist = [&](std::size_t i, const double* c) {
    double s = 0.0;
    for (std::size_t d = 0; d < D; ++d) {
      const double e = x[i * D + d] - c[d];
      s += wt[i * D + d] * e * e;
    }
    return s;
  };

  // k-means++ seeding with weighted distances
  std::mt19937 rng(opt.seed);
  std::uniform_real_distribution<double> uni(0.0, 1.0);
  std::vector<double> c(K * D), d2(n, std::numeric_limits<double>::infinity());
  auto sample = [&]() -> std::size_t {
    double sum = 0.0;
    for (double v : d2) sum += std::isfinite(v) ? v : 1.0;
    if (!(sum > 0.0)) return static_cast<std::size_t>(uni(rng) * static_cast<double>(n)) % n;
    double t = uni(rng) * sum;
    for (std::size_t i = 0; i < n; ++i) {
      t -= std::isfinite(d2[i]) ? d2[i] : 1.0;
      if (t < 0.0) return i;
    }
    return n - 1;
  };
  // a seed's coordinates of weight 0 (padding) carry no information: they start at 0
  auto seed_from = [&](std::size_t j, std::size_t i) {
    for (std::size_t d = 0; d < D; ++d) c[j * D + d] = wt[i * D + d] > 0.0 ? x[i * D + d] : 0.0;
  };
  for (std::size_t j = 0; j < K; ++j) {
    seed_from(j, sample());
    for (std::size_t m = 0; m < n; ++m) d2[m] = std::min(d2[m], dist(m, &c[j * D]));
  }

  VectorKMeansResult out;
  std::vector<std::uint32_t> assign(n);
  std::vector<double> err(n), sw(K * D), swx(K * D);
  std::vector<std::size_t> count(K);
  for (int it = 0;; ++it) {
    double J = 0.0;
    for (std::size_t i = 0; i < n; ++i) {
      double best = std::numeric_limits<double>::infinity();
      std::uint32_t arg = 0;
      for (std::size_t j = 0; j < K; ++j) {
        const double e = dist(i, &c[j * D]);
        if (e < best) {
          best = e;
          arg = static_cast<std::uint32_t>(j);
        }
      }
      assign[i] = arg;
      err[i] = best;
      J += best;
    }
    const bool stalled = !out.objective.empty() && !(J < out.objective.back() * (1.0 - 1e-12));
    out.objective.push_back(J);
    if (stalled || it >= opt.iterations) break;
    std::fill(sw.begin(), sw.end(), 0.0);
    std::fill(swx.begin(), swx.end(), 0.0);
    std::fill(count.begin(), count.end(), std::size_t{0});
    for (std::size_t i = 0; i < n; ++i) {
      const std::size_t j = assign[i];
      ++count[j];
      for (std::size_t d = 0; d < D; ++d) {
        sw[j * D + d] += wt[i * D + d];
        swx[j * D + d] += wt[i * D + d] * x[i * D + d];
      }
    }
    for (std::size_t j = 0; j < K; ++j) {
      if (count[j] == 0) {
        const auto worst = static_cast<std::size_t>(std::max_element(err.begin(), err.end()) - err.begin());
        if (err[worst] > 0.0) {
          seed_from(j, worst);
          err[worst] = 0.0;
        }
        continue;
      }
      for (std::size_t d = 0; d < D; ++d) {
        if (sw[j * D + d] > 0.0) c[j * D + d] = swx[j * D + d] / sw[j * D + d];
      }
    }
  }
  out.centroids = std::move(c);
  return out;
}

// ---- k-means codebook ------------------------------------------------------------------------

template <int Dim, int Bits>
class KMeansVQ {
  static_assert(Dim == 2 || Dim == 4 || Dim == 8, "KMeansVQ<Dim, Bits>: Dim must be 2, 4 or 8");
  static_assert(Bits >= 1 && Bits <= 12, "KMeansVQ<Dim, Bits>: Bits must be in [1, 12]");

 public:
  static constexpr int kDim = Dim;
  static constexpr int kBits = Bits;
  static constexpr int kEntries = 1 << Bits;
  static constexpr std::size_t kParamWords = static_cast<std::size_t>(kEntries) * Dim;

  struct Params {
    std::vector<float> codebook;  ///< kEntries * Dim fp16 values, entry k at [k * Dim, (k+1) * Dim)
    friend bool operator==(const Params&, const Params&) = default;
  };

  KMeansVQ() = default;
  explicit KMeansVQ(VectorKMeansOptions options) : options_(options) {}

  [[nodiscard]] std::string name() const { return str_cat("vq", Dim, "x", Bits); }
  [[nodiscard]] static constexpr double param_bits() noexcept { return 16.0 * kParamWords; }
  [[nodiscard]] const VectorKMeansOptions& options() const noexcept { return options_; }

  [[nodiscard]] Params fit(std::span<const float> x, std::span<const float> w) const {
    const auto km = kmeans_vectors(x, w, Dim, kEntries, options_);
    Params p;
    p.codebook.resize(kParamWords);
    for (std::size_t i = 0; i < kParamWords; ++i) {
      const float h = detail::round_to_half(static_cast<float>(km.centroids[i]));
      if (!std::isfinite(h)) fail(name(), ": codebook value ", km.centroids[i], " is too large for fp16");
      p.codebook[i] = h;
    }
    return p;
  }

  [[nodiscard]] std::uint32_t encode(const Params& p, const float* vec, const float* wt) const noexcept {
    float best = std::numeric_limits<float>::infinity();
    std::uint32_t arg = 0;
    for (int k = 0; k < kEntries; ++k) {
      const float* c = p.codebook.data() + static_cast<std::size_t>(k) * Dim;
      float s = 0.0f;
      for (int d = 0; d < Dim; ++d) {
        const float e = vec[d] - c[d];
        s += (wt ? wt[d] : 1.0f) * e * e;
      }
      if (s < best) {
        best = s;
        arg = static_cast<std::uint32_t>(k);
      }
    }
    return arg;
  }
  static void decode(const Params& p, std::uint32_t index, float* out) noexcept {
    std::copy_n(p.codebook.data() + static_cast<std::size_t>(index) * Dim, Dim, out);
  }
  static void serialize(const Params& p, std::vector<std::uint16_t>& words) {
    for (float v : p.codebook) words.push_back(detail::float_to_half(v));
  }
  [[nodiscard]] static Params deserialize(const std::uint16_t* in) {
    Params p;
    p.codebook.resize(kParamWords);
    for (std::size_t i = 0; i < kParamWords; ++i) p.codebook[i] = detail::half_to_float(in[i]);
    return p;
  }

 private:
  VectorKMeansOptions options_{};
};

// ---- residual composition --------------------------------------------------------------------

template <VectorQuantizer V1, VectorQuantizer V2>
class ResidualVQ {
  static_assert(V1::kDim == V2::kDim, "ResidualVQ<V1, V2>: both stages must have the same dimension");
  static_assert(V1::kBits + V2::kBits <= 32, "ResidualVQ<V1, V2>: indices must fit 32 bits");

 public:
  static constexpr int kDim = V1::kDim;
  static constexpr int kBits = V1::kBits + V2::kBits;
  static constexpr std::size_t kParamWords = V1::kParamWords + V2::kParamWords;

  struct Params {
    typename V1::Params first;
    typename V2::Params second;
    friend bool operator==(const Params&, const Params&) = default;
  };

  ResidualVQ() = default;
  ResidualVQ(V1 first, V2 second) : first_(std::move(first)), second_(std::move(second)) {}

  [[nodiscard]] std::string name() const { return str_cat(first_.name(), "+", second_.name()); }
  [[nodiscard]] double param_bits() const { return first_.param_bits() + second_.param_bits(); }

  [[nodiscard]] Params fit(std::span<const float> x, std::span<const float> w) const {
    Params p{first_.fit(x, w), {}};
    std::vector<float> r(x.begin(), x.end());
    float dec[kDim];
    for (std::size_t i = 0; i + kDim <= r.size(); i += kDim) {
      const float* wt = w.empty() ? nullptr : w.data() + i;
      first_.decode(p.first, first_.encode(p.first, x.data() + i, wt), dec);
      for (int d = 0; d < kDim; ++d) r[i + static_cast<std::size_t>(d)] -= dec[d];
    }
    p.second = second_.fit(r, w);
    return p;
  }
  [[nodiscard]] std::uint32_t encode(const Params& p, const float* vec, const float* wt) const {
    const std::uint32_t i1 = first_.encode(p.first, vec, wt);
    float r[kDim];
    first_.decode(p.first, i1, r);
    for (int d = 0; d < kDim; ++d) r[d] = vec[d] - r[d];
    return i1 | second_.encode(p.second, r, wt) << V1::kBits;
  }
  void decode(const Params& p, std::uint32_t index, float* out) const {
    float r[kDim];
    first_.decode(p.first, index & ((1u << V1::kBits) - 1u), out);
    second_.decode(p.second, index >> V1::kBits, r);
    for (int d = 0; d < kDim; ++d) out[d] += r[d];
  }
  void serialize(const Params& p, std::vector<std::uint16_t>& words) const {
    first_.serialize(p.first, words);
    second_.serialize(p.second, words);
  }
  [[nodiscard]] Params deserialize(const std::uint16_t* in) const {
    return Params{first_.deserialize(in), second_.deserialize(in + V1::kParamWords)};
  }

 private:
  V1 first_{};
  V2 second_{};
};

// ---- parameters fitted elsewhere -------------------------------------------------------------

/// V with its parameters fixed in advance: fit() ignores the data and returns them, everything
/// else is V's. A codebook fitted once on many matrices and shared by all of them (GPTVQ /
/// VPTQ-style model-wide codebooks) quantizes each matrix through the same quantize_vectors,
/// gptvq and pack_vq as a per-matrix one; the packed format is V's, and each packed matrix still
/// carries its copy of the parameters (whoever shares them counts their bits once).
template <VectorQuantizer V>
class FixedParamsVQ {
 public:
  static constexpr int kDim = V::kDim;
  static constexpr int kBits = V::kBits;
  static constexpr std::size_t kParamWords = V::kParamWords;
  using Params = typename V::Params;

  FixedParamsVQ() = default;
  /// Throws qtl::Error if `params` do not serialize to V's kParamWords words (e.g. a codebook
  /// of another size).
  FixedParamsVQ(V inner, Params params) : inner_(std::move(inner)), params_(std::move(params)) {
    std::vector<std::uint16_t> words;
    inner_.serialize(params_, words);
    if (words.size() != kParamWords) {
      fail("FixedParamsVQ: ", inner_.name(), " parameters serialize to ", words.size(), " words, expected ", kParamWords);
    }
  }

  [[nodiscard]] std::string name() const { return inner_.name(); }
  [[nodiscard]] double param_bits() const { return inner_.param_bits(); }
  [[nodiscard]] const V& inner() const noexcept { return inner_; }
  [[nodiscard]] const Params& params() const noexcept { return params_; }

  [[nodiscard]] Params fit(std::span<const float> /*x*/, std::span<const float> /*w*/) const { return params_; }
  [[nodiscard]] std::uint32_t encode(const Params& p, const float* vec, const float* wt) const {
    return inner_.encode(p, vec, wt);
  }
  void decode(const Params& p, std::uint32_t index, float* out) const { inner_.decode(p, index, out); }
  void serialize(const Params& p, std::vector<std::uint16_t>& words) const { inner_.serialize(p, words); }
  [[nodiscard]] Params deserialize(const std::uint16_t* in) const { return inner_.deserialize(in); }

 private:
  V inner_{};
  Params params_{};
};

// ---- matrices --------------------------------------------------------------------------------

/// Rows that share one codebook / scale: 0 = the whole tensor.
struct VQGranularity {
  Index rows_per_set = 0;
};

struct VQLayout {
  Index rows = 0;
  Index cols = 0;
  int dim = 0;
  Index rows_per_set = 0;  ///< resolved: 1 .. rows

  [[nodiscard]] Index vectors_per_row() const noexcept { return (cols + dim - 1) / dim; }
  [[nodiscard]] Index padded_cols() const noexcept { return vectors_per_row() * dim; }
  [[nodiscard]] Index num_sets() const noexcept { return (rows + rows_per_set - 1) / rows_per_set; }
  [[nodiscard]] Index set_of_row(Index r) const noexcept { return r / rows_per_set; }
  friend bool operator==(const VQLayout&, const VQLayout&) = default;
};

template <VectorQuantizer V>
struct VQMatrix {
  using Quantizer = V;
  V quantizer{};
  VQLayout layout{};
  std::vector<std::uint32_t> indices;     ///< rows * vectors_per_row, row-major
  std::vector<typename V::Params> params; ///< layout.num_sets()

  [[nodiscard]] Index rows() const noexcept { return layout.rows; }
  [[nodiscard]] Index cols() const noexcept { return layout.cols; }
  [[nodiscard]] std::uint32_t index(Index r, Index v) const noexcept {
    return indices[static_cast<std::size_t>(r * layout.vectors_per_row() + v)];
  }
};

struct VQOptions {
  VectorXf column_importance;    ///< empty, or one weight >= 0 per column
  RowMatrixXf importance;        ///< empty, or one weight >= 0 per element
};

/// Quantizes W [rows x cols] vector by vector: each set of rows_per_set rows gets its own fitted
/// parameters (codebook / scale), then every vector is encoded to its weighted-nearest codeword.
template <VectorQuantizer V>
[[nodiscard]] VQMatrix<V> quantize_vectors(const V& v, const VQGranularity& granularity, MatrixRef w,
                                           const VQOptions& opt = {}) {
  constexpr std::string_view kWhere = "quantize_vectors";
  require_nonempty(kWhere, "weights", w.rows(), w.cols());
  require_finite(kWhere, "weights", w);
  if (granularity.rows_per_set < 0) fail(kWhere, ": rows_per_set must be >= 0, got ", granularity.rows_per_set);
  const ImportanceGiven given = require_importance(kWhere, opt, w.rows(), w.cols());
  const bool col_imp = given.column, elem_imp = given.element;
  VQMatrix<V> out;
  out.quantizer = v;
  out.layout = VQLayout{w.rows(), w.cols(), V::kDim,
                        granularity.rows_per_set == 0 ? w.rows() : std::min(granularity.rows_per_set, w.rows())};
  const VQLayout& L = out.layout;
  const Index vpr = L.vectors_per_row(), pc = L.padded_cols();
  out.indices.resize(static_cast<std::size_t>(L.rows * vpr));
  std::vector<float> x, wt;
  for (Index s = 0; s < L.num_sets(); ++s) {
    const Index r0 = s * L.rows_per_set, r1 = std::min(L.rows, r0 + L.rows_per_set);
    x.assign(static_cast<std::size_t>((r1 - r0) * pc), 0.0f);
    wt.assign(x.size(), 0.0f);  // padding: weight 0
    for (Index r = r0; r < r1; ++r) {
      for (Index c = 0; c < L.cols; ++c) {
        const auto i = static_cast<std::size_t>((r - r0) * pc + c);
        x[i] = w(r, c);
        float imp = 1.0f;
        if (col_imp) imp *= opt.column_importance[c];
        if (elem_imp) imp *= opt.importance(r, c);
        wt[i] = imp;
      }
    }
    out.params.push_back(v.fit(x, wt));
    const auto& p = out.params.back();
    for (Index r = r0; r < r1; ++r) {
      for (Index j = 0; j < vpr; ++j) {
        const auto i = static_cast<std::size_t>((r - r0) * pc + j * V::kDim);
        out.indices[static_cast<std::size_t>(r * vpr + j)] = v.encode(p, x.data() + i, wt.data() + i);
      }
    }
  }
  return out;
}

/// W_hat [rows x cols]: decoded vectors with the padding dropped.
template <VectorQuantizer V>
[[nodiscard]] RowMatrixXf dequantize(const VQMatrix<V>& m) {
  const VQLayout& L = m.layout;
  RowMatrixXf out(L.rows, L.cols);
  float buf[V::kDim];
  for (Index r = 0; r < L.rows; ++r) {
    const auto& p = m.params[static_cast<std::size_t>(L.set_of_row(r))];
    for (Index j = 0; j < L.vectors_per_row(); ++j) {
      m.quantizer.decode(p, m.index(r, j), buf);
      for (int d = 0; d < V::kDim && j * V::kDim + d < L.cols; ++d) out(r, j * V::kDim + d) = buf[d];
    }
  }
  return out;
}

/// Stored bits (indices of every vector, padding included, plus every parameter set) divided by
/// the real number of weights rows * cols.
template <VectorQuantizer V>
[[nodiscard]] double bits_per_weight(const VQMatrix<V>& m) {
  const double n = static_cast<double>(m.rows()) * static_cast<double>(m.cols());
  const double index_bits = static_cast<double>(m.rows()) * static_cast<double>(m.layout.vectors_per_row()) * V::kBits;
  return (index_bits + static_cast<double>(m.layout.num_sets()) * m.quantizer.param_bits()) / n;
}

/// Calls f(KMeansVQ<D, B>{options}) for a dimension and bit width known only at run time;
/// throws qtl::Error for D not in {2, 4, 8} or bits not in [1, 12].
template <class F>
decltype(auto) visit_kmeans_vq(int dim, int bits, const VectorKMeansOptions& options, F&& f) {
  auto with_dim = [&]<int D>() -> decltype(auto) {
    switch (bits) {
      case 1: return f(KMeansVQ<D, 1>{options});
      case 2: return f(KMeansVQ<D, 2>{options});
      case 3: return f(KMeansVQ<D, 3>{options});
      case 4: return f(KMeansVQ<D, 4>{options});
      case 5: return f(KMeansVQ<D, 5>{options});
      case 6: return f(KMeansVQ<D, 6>{options});
      case 7: return f(KMeansVQ<D, 7>{options});
      case 8: return f(KMeansVQ<D, 8>{options});
      case 9: return f(KMeansVQ<D, 9>{options});
      case 10: return f(KMeansVQ<D, 10>{options});
      case 11: return f(KMeansVQ<D, 11>{options});
      case 12: return f(KMeansVQ<D, 12>{options});
      default: fail("kmeans vq: bits must be in [1, 12], got ", bits);
    }
  };
  switch (dim) {
    case 2: return with_dim.template operator()<2>();
    case 4: return with_dim.template operator()<4>();
    case 8: return with_dim.template operator()<8>();
    default: fail("kmeans vq: vector dimension must be 2, 4 or 8, got ", dim);
  }
}

}  // namespace qtl
