// qtl/calib/gptq.hpp — GPTQ: quantize a layer column by column, feeding each column's rounding
// error back into the columns not yet quantized (Frantar et al., ICLR'23; IST-DASLab gptq.py).
//
// For one row w of W and the Hessian H = 2/n XᵀX of the layer's inputs, GPTQ minimizes
// (w - q)ᵀ H (w - q) greedily. With U the upper Cholesky factor of (H + λI)⁻¹ (H⁻¹ = UᵀU):
//   for i = 0 .. cols-1:
//     q_i   = decode(encode(w_i))                      (the quantizer's grid, params of i's group)
//     e_i   = (w_i - q_i) / U_ii
//     w_j  -= e_i · U_ij           for j > i           (optimal update of the remaining weights)
// Then w_orig - q = e·U exactly, so the proxy loss  Σ_i e_i² = (w_orig - q)ᵀ (H + λI) (w_orig - q):
// the report's proxy_loss is this value per row (gptq.py's Losses·2, for the damped Hessian).
//
// Lazy batches: columns are processed in blocks of B (128). Inside a block the update touches
// only the block's columns; the block's errors E [rows x B] reach the rest of its panel in one
// GEMM, W[:, i2:p2] -= E · U[i1:i2, i2:p2]. Rows are independent inside a block (each row only
// reads U); the sweep runs 16 rows side by side as one vector per column, and tiles of rows in
// parallel (OpenMP).
//
// Panels without the inverse of H. With J the reversal permutation and J H J = L Lᵀ, Ũ = J L J
// is upper triangular and H = Ũ Ũᵀ, so U = Ũ⁻¹ (the upper Cholesky factor of H⁻¹ that gptq.py
// computes with cholesky → cholesky_inverse → cholesky(upper); QuIP's LDL view of GPTQ). The
// columns are cut into panels (one or more blocks, ending on group boundaries). Inside a panel
// the sweep above needs U_PP = (Ũ_PP)⁻¹ only (the diagonal blocks of a triangular inverse are
// the inverses of the diagonal blocks). Across panels the update is left-looking: with
// D = W - Q for the columns already done, the panel's error-updated weights are
//   W_P + (D · Ũ[:p1, P]) · U_PP,
// the conditional optimum given the quantized columns, which is exactly what the right-looking
// updates of gptq.py would have left there. One Cholesky (n³/6 multiply-adds) replaces a
// Cholesky plus a full triangular inverse; the GEMM work is the same (rows · n²/2).
//
// Groups. Parameters of a group are fitted on the error-updated weights when the group's first
// column is reached (gptq.py's find_params at i % groupsize == 0). Blocks are cut so that every
// group starts at a block start or lies inside one block, so the fitted values always include
// every update made so far (gptq.py fits a group that starts inside a block on weights that miss
// the block's own pending updates; here they are included). Per-row and per-tensor parameters,
// and all groups under `static_groups`, are fitted up front on W (gptq.py --static-groups).
//
// Act-order (gptq.py --act-order): columns are visited in descending diag(H). It always uses
// static groups, so a weight's group is its original column / G and inference needs no g_idx.
//
// Damping: λ = damp_fraction · mean(diag H), 1% by default. When the Cholesky fails (H not
// positive definite in float, after a retry in double), the fraction grows by damp_increment
// (GPTQModel's damp_auto_increment) until it succeeds; the report says what was used.
// Dead inputs (diag H = 0): H_ii = 1 and the weight column set to 0 (gptq.py).
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <exception>
#include <numeric>
#include <span>
#include <string_view>
#include <vector>

#include <Eigen/Cholesky>
#include <Eigen/Core>

#if defined(_OPENMP)
#include <omp.h>
#endif

#include "qtl/calib/hessian.hpp"
#include "qtl/core/error.hpp"
#include "qtl/core/types.hpp"
#include "qtl/core/validate.hpp"
#include "qtl/quant/concepts.hpp"
#include "qtl/quant/granularity.hpp"
#include "qtl/quant/quantize_matrix.hpp"

namespace qtl::calib {

struct GptqOptions {
  double damp_fraction = 0.01;   ///< λ = damp_fraction · mean(diag H)   (gptq.py percdamp)
  double damp_increment = 0.01;  ///< added to the fraction after each failed Cholesky
  double max_damp_fraction = 10.0;
  Index block_size = 128;        ///< lazy-batch width B
  bool act_order = false;        ///< visit columns in descending diag(H); implies static groups
  bool static_groups = false;    ///< fit every group on W up front
  /// How each group's parameters are fitted; the default is gptq.py's min-max grid.
  FitOptions fit{};
  /// Weight each weight's error by diag(H) when fitting group parameters.
  bool hessian_importance = false;
  /// Reproduce gptq.py's group fit exactly: plain blocks, and a group that starts inside a block
  /// is fitted on the weights as they were at the block's start (without the block's own
  /// pending updates). Off: groups are fitted on fully updated weights.
  bool gptq_py_group_fit = false;
  /// Empty, or rows x cols flags (row-major): 1 = keep this weight out of the quantizer
  /// (PB-LLM's salient weights). A kept weight leaves no error to feed back: its final,
  /// error-updated value is returned in GptqResult::kept_values for the caller to store (e.g. as
  /// an 8-bit correction, qtl/calib/gptq_partial_binary.hpp), and it takes no part in its
  /// group's parameter fit (left out of it; with parameters fitted up front, importance 0 and
  /// its value replaced by another weight of the set). Its code is still the quantizer's
  /// encoding of it.
  std::span<const std::uint8_t> keep{};
};

struct GptqReport {
  double damp_fraction = 0.0;  ///< fraction of mean(diag H) finally used
  double damping = 0.0;        ///< λ added to the diagonal
  int retries = 0;             ///< failed Cholesky attempts before success
  bool factored_in_double = false;  ///< the float Cholesky failed and double succeeded
  std::vector<Index> dead_columns;  ///< inputs with diag(H) = 0 (weights zeroed)
  /// Per row: Σ_i (w_i - q_i)² / U_ii² = (w - q)ᵀ (H + λI) (w - q), w the original row.
  VectorXd proxy_loss;
  double total_proxy_loss = 0.0;
  Index block_size = 0;
  bool act_order = false;
  bool static_groups = false;
  std::int64_t tokens = -1;    ///< calibration tokens, when known (-1 otherwise)
  bool rank_deficient = false; ///< fewer calibration tokens than inputs: H is singular
};

template <ScalarQuantizer Q>
struct GptqResult {
  QuantizedMatrix<Q> matrix;
  GptqReport report;
  /// With GptqOptions::keep: rows x cols, the final value of every kept weight (0 elsewhere).
  RowMatrixXf kept_values;
};

namespace detail {

/// Threads for the factorization: OpenMP's team size outside a parallel region, else 1.
[[nodiscard]] inline int factor_threads() noexcept {
#if defined(_OPENMP)
  return omp_in_parallel() ? 1 : std::max(1, omp_get_max_threads());
#else
  return 1;
#endif
}

/// Runs f(begin, end) over `threads` contiguous chunks of [0, n) in parallel (Eigen products
/// inside run single-threaded: Eigen does not nest its own threads in an OpenMP team).
template <class F>
void parallel_chunks(int threads, Index n, F&& f) {
  if (threads <= 1 || n < 128) {
    f(Index{0}, n);
    return;
  }
#if defined(_OPENMP)
#pragma omp parallel for num_threads(threads) schedule(static, 1)
#endif
  for (int t = 0; t < threads; ++t) {
    const Index a = n * t / threads, b = n * (t + 1) / threads;
    if (b > a) f(a, b);
  }
}

/// In place: L (lower triangular) ← L⁻¹, by blocks
///   [A 0; B C]⁻¹ = [A⁻¹ 0; −C⁻¹ B A⁻¹  C⁻¹],
/// two triangular products per level: n³/6 multiply-adds in GEMM-like kernels, a third of a
/// triangular solve against the identity. The two halves invert concurrently and the products
/// are split across threads (Eigen's triangular products are single-threaded). Reads and
/// writes only the lower triangle.
template <class Mat>
void invert_lower_in_place(Eigen::Ref<Mat> l, int threads = 1) {
  const Index n = l.rows();
  if (n <= 128) {
    Mat inv = Mat::Identity(n, n);
    l.template triangularView<Eigen::Lower>().solveInPlace(inv);
    l.template triangularView<Eigen::Lower>() = inv;
    return;
  }
  const Index h = n / 2;
  if (threads > 1) {
#if defined(_OPENMP)
#pragma omp parallel sections num_threads(2)
#endif
    {
#if defined(_OPENMP)
#pragma omp section
#endif
      invert_lower_in_place<Mat>(l.block(0, 0, h, h), 1);
#if defined(_OPENMP)
#pragma omp section
#endif
      invert_lower_in_place<Mat>(l.block(h, h, n - h, n - h), 1);
    }
  } else {
    invert_lower_in_place<Mat>(l.block(0, 0, h, h), 1);
    invert_lower_in_place<Mat>(l.block(h, h, n - h, n - h), 1);
  }
  Mat t(n - h, h);
  parallel_chunks(threads, n - h, [&](Index r0, Index r1) {
    t.middleRows(r0, r1 - r0).noalias() =
        l.block(h + r0, 0, r1 - r0, h) * l.block(0, 0, h, h).template triangularView<Eigen::Lower>();
  });
  parallel_chunks(threads, h, [&](Index c0, Index c1) {
    l.block(h, c0, n - h, c1 - c0).noalias() =
        -(l.block(h, h, n - h, n - h).template triangularView<Eigen::Lower>() * t.middleCols(c0, c1 - c0));
  });
}

/// In place: the lower triangle of the symmetric `a` ← L with a = L Lᵀ (right-looking, blocks of
/// 256: Eigen's LLT on each diagonal block, the panel solve as a GEMM split across threads, the trailing
/// update as GEMMs on column blocks shared among threads). False if a pivot is not positive.
/// The strictly upper triangle is scratch.
template <class Mat>
bool cholesky_lower_in_place(Eigen::Ref<Mat> a, int threads = 1) {
  constexpr Index kNb = 256;
  const Index n = a.rows();
  for (Index k = 0; k < n; k += kNb) {
    const Index kb = std::min(kNb, n - k), m = n - k - kb;
    Eigen::Ref<Mat> a11 = a.block(k, k, kb, kb);
    Eigen::LLT<Eigen::Ref<Mat>> llt(a11);  // in place
    if (llt.info() != Eigen::Success) return false;
    if (m == 0) break;
    // A21 ← A21 L11⁻ᵀ as a GEMM with the explicit inverse of the small diagonal block (kb³/3
    // multiply-adds), as blocked GPU TRSMs do: Eigen's row-major TRSM ran at a fraction of its
    // GEMM speed and took a fifth of the factorization.
    Mat inv = Mat::Identity(kb, kb);
    a11.template triangularView<Eigen::Lower>().solveInPlace(inv);
    inv.template triangularView<Eigen::StrictlyUpper>().setZero();
    parallel_chunks(threads, m, [&](Index r0, Index r1) {
      auto a21 = a.block(k + kb + r0, k, r1 - r0, kb);
      const Mat t = a21 * inv.transpose();
      a21 = t;
    });
    const Index nblocks = (m + kNb - 1) / kNb;
    [[maybe_unused]] const bool par = threads > 1 && m >= 256;
#if defined(_OPENMP)
#pragma omp parallel for num_threads(threads) schedule(dynamic, 1) if (par)
#endif
    for (Index jb = 0; jb < nblocks; ++jb) {  // A22 ← A22 − A21 A21ᵀ, lower block columns
      const Index j = jb * kNb, w = std::min(kNb, m - j);
      a.block(k + kb + j, k + kb + j, m - j, w).noalias() -=
          a.block(k + kb + j, k, m - j, kb) * a.block(k + kb + j, k, w, kb).transpose();
    }
  }
  return true;
}

/// The lower Cholesky factor L of J (Hp + λI) J, in place in `a` (n x n, row-major),
/// Hp(i, j) = h(perm[i], perm[j]) (perm empty: the identity), zero diagonal entries read as 1
/// (dead inputs). J Hp J is built row-major straight from h: no copy of the Hessian and no
/// transposition. False when the factorization fails or a pivot carries less than `rel_tol` of
/// its diagonal (numerically singular).
template <class Mat>
bool reversed_cholesky(const Eigen::MatrixXd& h, std::span<const Index> perm, double lambda,
                       double rel_tol, Mat& a, int threads) {
  using Scalar = typename Mat::Scalar;
  const Index n = h.rows();
  auto p = [&](Index i) { return perm.empty() ? i : perm[static_cast<std::size_t>(i)]; };
  a.resize(n, n);
  Eigen::Matrix<Scalar, Eigen::Dynamic, 1> diag(n);
  // Row r of J Hp J: a(r, c) = Hp(n-1-r, n-1-c); only c <= r (the lower triangle) is needed.
  // Reading h(p(n-1-c), p(n-1-r)) (symmetric) walks one column of h: contiguous.
#if defined(_OPENMP)
#pragma omp parallel for num_threads(threads) schedule(static) if (threads > 1 && n >= 256)
#endif
  for (Index r = 0; r < n; ++r) {
    const double* hcol = h.col(p(n - 1 - r)).data();
    Scalar* arow = a.row(r).data();
    for (Index c = 0; c < r; ++c) arow[c] = static_cast<Scalar>(hcol[p(n - 1 - c)]);
    const double d = hcol[p(n - 1 - r)];
    arow[r] = static_cast<Scalar>((d == 0.0 ? 1.0 : d) + lambda);
    diag[r] = arow[r];
  }
  if (!cholesky_lower_in_place<Mat>(a, threads)) return false;
  for (Index i = 0; i < n; ++i) {
    const double piv = static_cast<double>(a(i, i));
    if (!(piv * piv >= rel_tol * static_cast<double>(diag[i])) || !std::isfinite(piv)) return false;
  }
  return true;
}

/// dst = J a J for a lower-triangular `a` (n x n): dst(i, j) = a(n-1-i, n-1-j) for j >= i (row i
/// of dst is row n-1-i of a reversed), zero below the diagonal; in float. False if an entry is
/// not finite.
template <class Mat>
bool reverse_lower_into_upper(const Mat& a, RowMatrixXf& dst, int threads) {
  using Scalar = typename Mat::Scalar;
  const Index n = a.rows();
  dst.resize(n, n);
  bool finite = true;
#if defined(_OPENMP)
#pragma omp parallel for num_threads(threads) schedule(static) if (threads > 1 && n >= 256) reduction(&& : finite)
#else
  (void)threads;  // one thread without OpenMP
#endif
  for (Index i = 0; i < n; ++i) {
    const Scalar* src = a.row(n - 1 - i).data();
    float* d = dst.row(i).data();
    for (Index j = 0; j < i; ++j) d[j] = 0.0f;
    for (Index j = i; j < n; ++j) {
      d[j] = static_cast<float>(src[n - 1 - j]);
      finite = finite && std::isfinite(d[j]);
    }
  }
  return finite;
}

/// Upper Cholesky factor U of (Hp + λI)⁻¹ (see reversed_cholesky for Hp and the failure
/// cases): with J Hp J = L Lᵀ, U = J L⁻¹ J, so U is L⁻¹'s storage reversed. Scalar = float or
/// double; the result is float, row-major.
template <class Scalar>
bool upper_cholesky_of_inverse(const Eigen::MatrixXd& h, std::span<const Index> perm, double lambda,
                               double rel_tol, RowMatrixXf& u, int threads) {
  using Mat = Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  Mat a;
  if (!reversed_cholesky(h, perm, lambda, rel_tol, a, threads)) return false;
  invert_lower_in_place<Mat>(a, threads);
  return reverse_lower_into_upper(a, u, threads);  // U = J L⁻¹ J
}

/// GPTQ's factors without the inverse of the whole matrix. With J Hp J = L Lᵀ, Ũ = J L J is
/// upper triangular and Hp + λI = Ũ Ũᵀ, so U = Ũ⁻¹ (QuIP's LDL view of GPTQ, Chee et al. 2023).
/// The sweep needs U only inside a panel of columns (the lazy updates never leave it); the
/// errors of earlier panels reach a panel through Ũ instead (see gptq()). A triangular matrix's
/// inverse has the inverses of its diagonal blocks on its diagonal, so U_PP = (Ũ_PP)⁻¹: one
/// Cholesky (n³/6 multiply-adds) plus small inverses, instead of a Cholesky and a full
/// triangular inverse.
struct GptqFactor {
  RowMatrixXf ut;                   ///< Ũ (upper, zero below)
  std::vector<RowMatrixXf> panel_u; ///< U restricted to each panel (upper, zero below)
};

template <class Scalar>
bool gptq_factor(const Eigen::MatrixXd& h, std::span<const Index> perm, double lambda, double rel_tol,
                 std::span<const std::pair<Index, Index>> panels, GptqFactor& f, int threads) {
  using Mat = Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  const Index n = h.rows();
  Mat a;
  if (!reversed_cholesky(h, perm, lambda, rel_tol, a, threads)) return false;
  if (!reverse_lower_into_upper(a, f.ut, threads)) return false;  // Ũ = J L J
  // Panel P = [p1, p2): Ũ_PP = J B J with B = L's diagonal block at rows/cols [n-p2, n-p1), so
  // U_PP = J B⁻¹ J.
  const auto np = static_cast<Index>(panels.size());
  f.panel_u.resize(static_cast<std::size_t>(np));
  bool finite = true;
  const bool across = threads > 1 && np >= threads;
#if defined(_OPENMP)
#pragma omp parallel for num_threads(threads) schedule(dynamic, 1) if (across) reduction(&& : finite)
#endif
  for (Index k = 0; k < np; ++k) {
    const auto [p1, p2] = panels[static_cast<std::size_t>(k)];
    const Index w = p2 - p1;
    Mat b = a.block(n - p2, n - p2, w, w);
    invert_lower_in_place<Mat>(b, across ? 1 : threads);
    finite = reverse_lower_into_upper(b, f.panel_u[static_cast<std::size_t>(k)], 1) && finite;
  }
  return finite;
}

/// The same for h itself (no permutation), with OpenMP's threads.
template <class Scalar>
bool upper_cholesky_of_inverse(const Eigen::MatrixXd& h, double lambda, double rel_tol, RowMatrixXf& u) {
  return upper_cholesky_of_inverse<Scalar>(h, {}, lambda, rel_tol, u, factor_threads());
}

/// Column blocks [begin, end) such that every group starts at a block start or lies inside one
/// block (when groups are fitted during the sweep); plain blocks of `block` otherwise.
inline std::vector<std::pair<Index, Index>> gptq_blocks(Index cols, Index block, Index group,
                                                        bool aligned) {
  std::vector<std::pair<Index, Index>> out;
  if (!aligned) {
    for (Index b = 0; b < cols; b += block) out.emplace_back(b, std::min(cols, b + block));
    return out;
  }
  if (group <= block) {
    const Index width = group * (block / group);
    for (Index b = 0; b < cols; b += width) out.emplace_back(b, std::min(cols, b + width));
  } else {
    for (Index g = 0; g < cols; g += group) {
      const Index g_end = std::min(cols, g + group);
      for (Index b = g; b < g_end; b += block) out.emplace_back(b, std::min(g_end, b + block));
    }
  }
  return out;
}

/// Panels: runs of consecutive blocks, each at least `min_width` wide (except the last) and,
/// when groups are fitted during the sweep, ending on a group boundary, so no group's fit ever
/// needs a column beyond its panel.
inline std::vector<std::pair<Index, Index>> gptq_panels(std::span<const std::pair<Index, Index>> blocks,
                                                        Index group, bool group_bound,
                                                        Index min_width) {
  std::vector<std::pair<Index, Index>> out;
  std::size_t b = 0;
  while (b < blocks.size()) {
    const Index p1 = blocks[b].first;
    Index p2 = blocks[b].second;
    ++b;
    while (b < blocks.size() && ((group_bound && p2 % group != 0) || p2 - p1 < min_width)) {
      p2 = blocks[b].second;
      ++b;
    }
    out.emplace_back(p1, p2);
  }
  return out;
}

}  // namespace detail

namespace detail {

/// The checks gptq() and gptvq() share: weights non-empty and finite, a finite cols x cols
/// Hessian with no negative diagonal entry, damping and block size in range.
inline void check_gptq_input(std::string_view where, MatrixRef w, const Eigen::MatrixXd& hessian,
                             const GptqOptions& opt) {
  require_nonempty(where, "weights", w.rows(), w.cols());
  require_finite(where, "weights", w);
  const Index cols = w.cols();
  if (hessian.rows() != cols || hessian.cols() != cols) {
    fail(where, ": weights have ", cols, " columns but the Hessian is ", hessian.rows(), "x", hessian.cols());
  }
  if (!hessian.allFinite()) require_finite(where, "hessian", hessian);
  require_range(where, "options.damp_fraction", opt.damp_fraction, 0.0, 1e6);
  require_range(where, "options.damp_increment", opt.damp_increment, 1e-9, 1e6);
  require_range(where, "options.block_size", opt.block_size, Index{1}, Index{1} << 20);
  for (Index i = 0; i < cols; ++i) {
    if (hessian(i, i) < 0.0) {
      fail(where, ": the Hessian must be positive semi-definite, got diagonal ", hessian(i, i), " at ", i);
    }
  }
}

/// gptq_factor with damping λ = frac · mean_diag, frac from options.damp_fraction raised by
/// options.damp_increment until the factorization succeeds (in float, else in double); the
/// damping used, the retries and a double factorization go into the report.
template <class Deferred = void>
GptqFactor damped_gptq_factor(std::string_view where, const Eigen::MatrixXd& hessian,
                                     std::span<const Index> order, double mean_diag,
                                     std::span<const std::pair<Index, Index>> panels, const GptqOptions& opt,
                                     GptqReport& rep) {
  const int threads = factor_threads();
  GptqFactor factor;
  double frac = opt.damp_fraction;
  for (;;) {
    const double lambda = frac * mean_diag;
    if (gptq_factor<float>(hessian, order, lambda, 1e-6, panels, factor, threads)) break;
    if (gptq_factor<double>(hessian, order, lambda, 1e-13, panels, factor, threads)) {
      rep.factored_in_double = true;
      break;
    }
    ++rep.retries;
    frac += opt.damp_increment;
    if (frac > opt.max_damp_fraction) {
      fail(where, ": the Hessian stays singular with damping ", frac - opt.damp_increment, " x mean diagonal (",
           mean_diag, "); options.max_damp_fraction = ", opt.max_damp_fraction);
    }
  }
  rep.damp_fraction = frac;
  rep.damping = frac * mean_diag;
  return factor;
}

}  // namespace detail

namespace detail {

/// GPTQ; `grid` (optional) gives every group's parameters, fitted beforehand (gptq_on_grid).
template <ScalarQuantizer Q>
[[nodiscard]] GptqResult<Q> gptq_impl(std::string_view kWhere, const Q& q, const Granularity& granularity,
                                      MatrixRef w, const Eigen::MatrixXd& hessian, const GptqOptions& opt,
                                      const std::vector<typename Q::Params>* grid) {
  detail::check_gptq_input(kWhere, w, hessian, opt);
  const Index rows = w.rows(), cols = w.cols();
  if (opt.fit.clip_search) {
    require_range(kWhere, "options.fit.clip_min_ratio", opt.fit.clip_min_ratio, 0.01f, 1.0f);
    require_range(kWhere, "options.fit.clip_steps", opt.fit.clip_steps, 1, 1000);
  }
  require_range(kWhere, "options.fit.refine_iterations", opt.fit.refine_iterations, 0, 1000);
  const bool keeping = !opt.keep.empty();
  if (keeping && static_cast<Index>(opt.keep.size()) != rows * cols) {
    fail(kWhere, ": options.keep has ", opt.keep.size(), " flags for a ", rows, "x", cols, " matrix (",
         rows * cols, " expected)");
  }

  GptqResult<Q> result;
  GptqReport& rep = result.report;
  QuantizedMatrix<Q>& out = result.matrix;
  out.quantizer = q;
  out.layout = make_group_layout(granularity, rows, cols, kWhere);
  const GroupLayout& L = out.layout;
  out.codes.assign(static_cast<std::size_t>(rows * cols), 0);
  out.params.resize(static_cast<std::size_t>(L.num_param_sets()));
  rep.block_size = opt.block_size;
  rep.act_order = opt.act_order;

  // Dead inputs: H_ii = 1, weights 0.
  // Dead inputs: H_ii read as 1 (in the factorization too), weights 0.
  VectorXd diag = hessian.diagonal();
  RowMatrixXf work = w;
  for (Index i = 0; i < cols; ++i) {
    if (diag[i] == 0.0) {
      rep.dead_columns.push_back(i);
      diag[i] = 1.0;
      work.col(i).setZero();
    }
  }

  const Index gpr = L.groups_per_row();
  const bool upfront = L.per_tensor || gpr == 1 || opt.act_order || opt.static_groups || grid != nullptr;
  rep.static_groups = upfront;
  VectorXf col_importance;
  if (opt.hessian_importance) col_importance = diag.cast<float>();
  if (grid != nullptr) {
    if (static_cast<Index>(grid->size()) != L.num_param_sets()) {
      fail(kWhere, ": ", grid->size(), " parameter sets given for a ", rows, "x", cols, " matrix with ",
           L.num_param_sets(), " groups");
    }
    out.params = *grid;
  } else if (upfront) {
    QuantizeOptions qo;
    qo.fit = opt.fit;
    qo.column_importance = col_importance;
    RowMatrixXf fit_input;
    if (keeping) {
      // Kept weights take no part in the fit: importance 0, and their value replaced by another
      // weight of the same parameter set (so a min-max range does not see them either).
      qo.importance = RowMatrixXf::Ones(rows, cols);
      fit_input = work;
      std::vector<float> stand_in(static_cast<std::size_t>(L.num_param_sets()), 0.0f);
      std::vector<std::uint8_t> found(stand_in.size(), 0);
      for (Index r = 0; r < rows; ++r) {
        for (Index c = 0; c < cols; ++c) {
          const auto p = static_cast<std::size_t>(L.param_index(r, c));
          if (!opt.keep[static_cast<std::size_t>(r * cols + c)] && !found[p]) {
            stand_in[p] = work(r, c);
            found[p] = 1;
          }
        }
      }
      for (Index r = 0; r < rows; ++r) {
        for (Index c = 0; c < cols; ++c) {
          if (!opt.keep[static_cast<std::size_t>(r * cols + c)]) continue;
          qo.importance(r, c) = 0.0f;
          const auto p = static_cast<std::size_t>(L.param_index(r, c));
          if (found[p]) fit_input(r, c) = stand_in[p];
        }
      }
    }
    auto fitted = quantize_matrix(q, granularity, keeping ? MatrixRef(fit_input) : MatrixRef(work), qo);
    out.params = std::move(fitted.params);
  }

  // Visiting order (the factorization reads the Hessian through it; no permuted copy).
  std::vector<Index> perm(static_cast<std::size_t>(cols));
  std::iota(perm.begin(), perm.end(), Index{0});
  RowMatrixXf wp;
  if (opt.act_order) {
    std::stable_sort(perm.begin(), perm.end(), [&](Index a, Index b) { return diag[a] > diag[b]; });
    wp.resize(rows, cols);
    // Row by row (a gather inside one contiguous row), not column by column (a strided walk of
    // the whole matrix per column).
#if defined(_OPENMP)
#pragma omp parallel for schedule(static) if (rows * cols >= (Index{1} << 20))
#endif
    for (Index r = 0; r < rows; ++r) {
      const float* src = work.row(r).data();
      float* dst = wp.row(r).data();
      for (Index j = 0; j < cols; ++j) dst[j] = src[perm[static_cast<std::size_t>(j)]];
    }
    work.resize(0, 0);
  } else {
    wp = std::move(work);
  }
  const std::span<const Index> order = opt.act_order ? std::span<const Index>(perm) : std::span<const Index>();

  const Index group = L.per_tensor ? cols : L.group_size;
  const auto blocks = detail::gptq_blocks(cols, opt.block_size, group, !upfront && !opt.gptq_py_group_fit);
  const auto panels = detail::gptq_panels(blocks, group, !upfront, opt.block_size);

  const detail::GptqFactor factor = detail::damped_gptq_factor(kWhere, hessian, order, diag.mean(), panels, opt, rep);

  Index max_block = 0, max_panel = 0;
  for (const auto& bl : blocks) max_block = std::max(max_block, bl.second - bl.first);
  for (const auto& pn : panels) max_panel = std::max(max_panel, pn.second - pn.first);
  RowMatrixXf e1(rows, max_block);
  constexpr Index kTile = 16;  // rows per tile in the sweep (one AVX-512 vector of floats)
  RowMatrixXf orig(rows, max_panel);   // a panel's weights before any update
  RowMatrixXf decoded(rows, max_panel);  // and their quantized values
  RowMatrixXf s;
  rep.proxy_loss.setZero(rows);
  if (keeping) result.kept_values.setZero(rows, cols);
  const std::size_t ucols = static_cast<std::size_t>(cols);

  // Left-looking across panels, right-looking (gptq.py's lazy batches) inside one. Columns left
  // of the current panel hold D = W - Q; H = ŨŨᵀ turns their errors into the panel's
  // error-updated weights, the values gptq.py's right-looking updates would have left there:
  //   W_P ← W_P + (D Ũ[:p1, P]) U_PP.
  // (The conditional optimum of the panel's weights given the quantized columns before it.)
  std::size_t cur = 0, next_panel = 0;
  // Plain locals, not structured bindings: the OpenMP region below reads them (clang before 16
  // cannot capture a structured binding).
  for (const auto& block_range : blocks) {
    const Index i1 = block_range.first, i2 = block_range.second;
    if (next_panel < panels.size() && panels[next_panel].first == i1) {
      cur = next_panel++;
      const Index p1 = panels[cur].first, p2 = panels[cur].second;
      const Index pw = p2 - p1;
      orig.leftCols(pw) = wp.middleCols(p1, pw);
      if (p1 > 0) {
        s.noalias() = wp.leftCols(p1) * factor.ut.block(0, p1, p1, pw);
        wp.middleCols(p1, pw).noalias() += s * factor.panel_u[cur];
      }
    }
    const Index p1 = panels[cur].first, p2 = panels[cur].second;
    const RowMatrixXf& up = factor.panel_u[cur];
    const Index count = i2 - i1;
    const auto w1 = wp.middleCols(i1, count);
    std::exception_ptr error;
    // Rows in tiles of kTile, transposed so that one column of the tile is one vector: the
    // rows' column-by-column recurrences (quantize, then update the later columns) are
    // independent, so the tile runs them side by side instead of one latency-bound chain per
    // row, and the updates are full-width vector FMAs with a broadcast U entry.
    const Index tiles = (rows + kTile - 1) / kTile;
    // Threads only pay off for enough work per block (rows · count² / 2 multiply-adds).
    [[maybe_unused]] const bool parallel = tiles > 1 && rows * count * count >= (Index{1} << 22);
#if defined(_OPENMP)
#pragma omp parallel if (parallel)
#endif
    {
      std::vector<float> values;
      std::vector<float> weights;
      if (!upfront) {
        values.reserve(static_cast<std::size_t>(group));
        if (opt.hessian_importance) weights.reserve(static_cast<std::size_t>(group));
      }
      // The tile's columns (one vector of kTile rows each) and, side by side, its codes,
      // decoded values and scaled errors, written back to the row-major matrices once per tile:
      // the column loop below then stores whole vectors instead of one strided value per row.
      const std::size_t tsize = static_cast<std::size_t>(count * kTile);
      std::vector<float> tile(tsize), tile_dec(tsize), tile_err(tsize);
      std::vector<std::uint8_t> tile_codes(tsize);
      // Raw pointers in locals: the code stores are byte stores, which may alias anything, so
      // members reached through the shared objects would be reloaded after every one of them.
      std::uint8_t* const codes = out.codes.data();
      typename Q::Params* const params_base = out.params.data();
      float* const e1_data = e1.data();
      float* const dec_data = decoded.data();
      const Index e1_stride = e1.outerStride(), dec_stride = decoded.outerStride();
      const std::uint8_t* const keep = opt.keep.data();
#if defined(_OPENMP)
#pragma omp for schedule(static)
#endif
      for (Index t = 0; t < tiles; ++t) {
        try {
          const Index r0 = t * kTile, lanes = std::min(kTile, rows - r0);
          for (Index k = 0; k < count; ++k) {
            float* tk = tile.data() + k * kTile;
            for (Index l = 0; l < kTile; ++l) tk[l] = l < lanes ? w1(r0 + l, k) : 0.0f;
          }
          // Each lane's parameters for the current group, in a local array (padding lanes of a
          // last, partial tile repeat lane 0's, so every lane encodes with valid parameters).
          std::array<typename Q::Params, kTile> lp;
          Index lp_group = -1;
          Eigen::Array<double, kTile, 1> loss = Eigen::Array<double, kTile, 1>::Zero();
          // Eigen fixed-size arrays: the lane loops below must compile to whole vectors (a
          // plain float[16] is left scalar by GCC's SLP vectorizer).
          using Lanes = Eigen::Array<float, kTile, 1>;
          for (Index i = 0; i < count; ++i) {
            const Index j = i1 + i;                          // position in visiting order
            const Index c = perm[static_cast<std::size_t>(j)];  // original column
            const Index gcol = L.per_tensor ? 0 : c / L.group_size;
            const bool fit_group = !upfront && j % group == 0;
            const float* urow = up.row(j - p1).data() + (i1 - p1);  // U(j, i1 + k) = urow[k]
            const float* ti = tile.data() + i * kTile;
            const float u_ii = urow[i];
            if (fit_group) {
              for (Index l = 0; l < lanes; ++l) {
                const Index r = r0 + l;
                // Fit the group on its error-updated values: in-block columns from the tile,
                // the rest (a group wider than the block starts at a block start) from wp;
                // the group ends inside the panel, whose columns hold the updated weights.
                const Index g_end = std::min(cols, j + group);
                values.clear();
                weights.clear();
                // Kept weights are left out of the fit (unless the whole group is kept).
                for (int pass = 0; pass < 2 && values.empty(); ++pass) {
                  for (Index k = j; k < g_end; ++k) {
                    const Index ck = perm[static_cast<std::size_t>(k)];
                    if (pass == 0 && keeping && keep[r * cols + ck]) continue;
                    values.push_back(k < i2 && !opt.gptq_py_group_fit ? tile[static_cast<std::size_t>((k - i1) * kTile + l)]
                                                                      : wp(r, k));
                    if (opt.hessian_importance) weights.push_back(col_importance[ck]);
                  }
                }
                params_base[r * gpr + gcol] = q.fit(values, weights, opt.fit);
              }
            }
            if (fit_group || gcol != lp_group) {
              for (Index l = 0; l < kTile; ++l) {
                lp[static_cast<std::size_t>(l)] = params_base[L.per_tensor ? 0 : (r0 + (l < lanes ? l : 0)) * gpr + gcol];
              }
              lp_group = gcol;
            }
            float* const dec_i = tile_dec.data() + i * kTile;
            std::uint8_t* const codes_i = tile_codes.data() + i * kTile;
            for (Index l = 0; l < kTile; ++l) {
              const std::uint8_t code = q.encode(lp[static_cast<std::size_t>(l)], ti[l]);
              codes_i[l] = code;
              dec_i[l] = q.decode(lp[static_cast<std::size_t>(l)], code);
            }
            if (keeping) {
              for (Index l = 0; l < lanes; ++l) {
                const Index r = r0 + l;
                if (keep[r * cols + c]) {
                  result.kept_values(r, c) = ti[l];
                  dec_i[l] = ti[l];
                }
              }
            }
            const Lanes err = (Eigen::Map<const Lanes>(ti) - Eigen::Map<const Lanes>(dec_i)) / u_ii;
            Eigen::Map<Lanes>(tile_err.data() + i * kTile) = err;
            loss += err.template cast<double>().square();
            for (Index k = i + 1; k < count; ++k) {
              Eigen::Map<Lanes>(tile.data() + k * kTile) -= err * urow[k];
            }
          }
          // Write the tile's codes, decoded values and errors back, row by row.
          for (Index l = 0; l < lanes; ++l) {
            const Index r = r0 + l;
            std::uint8_t* const crow = codes + static_cast<std::size_t>(r) * ucols;
            float* const drow = dec_data + r * dec_stride + (i1 - p1);
            float* const erow = e1_data + r * e1_stride;
            for (Index i = 0; i < count; ++i) {
              const std::size_t ti = static_cast<std::size_t>(i * kTile + l);
              crow[perm[static_cast<std::size_t>(i1 + i)]] = tile_codes[ti];
              drow[i] = tile_dec[ti];
              erow[i] = tile_err[ti];
            }
          }
          for (Index l = 0; l < lanes; ++l) rep.proxy_loss[r0 + l] += loss[l];
        } catch (...) {
#if defined(_OPENMP)
#pragma omp critical(qtl_gptq_error)
#endif
          if (!error) error = std::current_exception();
        }
      }
    }
    if (error) std::rethrow_exception(error);
    if (i2 < p2) {
      wp.middleCols(i2, p2 - i2).noalias() -=
          e1.leftCols(count) * up.block(i1 - p1, i2 - p1, count, p2 - i2);
    }
    if (i2 == p2) wp.middleCols(p1, p2 - p1) = orig.leftCols(p2 - p1) - decoded.leftCols(p2 - p1);
  }
  rep.total_proxy_loss = rep.proxy_loss.sum();
  return result;
}

}  // namespace detail

/// GPTQ with the Hessian H = 2/n XᵀX given as a matrix [cols x cols] (symmetric, PSD).
template <ScalarQuantizer Q>
[[nodiscard]] GptqResult<Q> gptq(const Q& q, const Granularity& granularity, MatrixRef w,
                                 const Eigen::MatrixXd& hessian, const GptqOptions& opt = {}) {
  return detail::gptq_impl("gptq", q, granularity, w, hessian, opt, nullptr);
}

/// GPTQ on a fixed grid: every group's parameters given (`grid`, one per group of the layout,
/// row-major as QuantizedMatrix holds them), so only the codes are chosen, with GPTQ's error
/// feedback (static groups). For formats whose group parameters a solver cannot refit group by
/// group, e.g. the sub-blocks of a K-quant super-block (qtl/calib/gptq_ggml.hpp).
template <ScalarQuantizer Q>
[[nodiscard]] GptqResult<Q> gptq_on_grid(const Q& q, const Granularity& granularity, MatrixRef w,
                                         const Eigen::MatrixXd& hessian, const std::vector<typename Q::Params>& grid,
                                         const GptqOptions& opt = {}) {
  return detail::gptq_impl("gptq_on_grid", q, granularity, w, hessian, opt, &grid);
}

/// GPTQ with the statistics of a HessianAccumulator (reports the token count and whether the
/// Hessian is rank-deficient because there were fewer tokens than inputs).
template <ScalarQuantizer Q>
[[nodiscard]] GptqResult<Q> gptq(const Q& q, const Granularity& granularity, MatrixRef w,
                                 const HessianAccumulator& stats, const GptqOptions& opt = {}) {
  if (stats.in_features() != w.cols()) {
    fail("gptq: weights have ", w.cols(), " columns but the statistics have ",
         stats.in_features(), " inputs");
  }
  auto result = gptq(q, granularity, w, stats.hessian(), opt);
  result.report.tokens = stats.tokens();
  result.report.rank_deficient = stats.tokens() < w.cols();
  return result;
}

}  // namespace qtl::calib
