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
// only the block's columns; the block's errors E [rows x B] reach the rest of the matrix in one
// GEMM, W[:, i2:] -= E · U[i1:i2, i2:]. Rows are independent inside a block (each row only reads
// U), so blocks run in parallel over rows (OpenMP) and the GEMM is Eigen's (threaded too).
//
// U without three factorizations: with J the reversal permutation and J H J = L Lᵀ,
// H⁻¹ = J L⁻ᵀ L⁻¹ J = UᵀU for U = J L⁻¹ J, which is upper triangular with a positive diagonal,
// hence exactly the upper Cholesky factor of H⁻¹ that gptq.py computes with
// cholesky → cholesky_inverse → cholesky(upper). One Cholesky plus one triangular inverse.
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
#include <cmath>
#include <cstdint>
#include <exception>
#include <numeric>
#include <span>
#include <string_view>
#include <vector>

#include <Eigen/Cholesky>
#include <Eigen/Core>

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
  FitOptions fit{.clip_search = false, .clip_steps = 20, .clip_min_ratio = 0.5f,
                 .refine_iterations = 0};
  /// Weight each weight's error by diag(H) when fitting group parameters.
  bool hessian_importance = false;
  /// Reproduce gptq.py's group fit exactly: plain blocks, and a group that starts inside a block
  /// is fitted on the weights as they were at the block's start (without the block's own
  /// pending updates). Off: groups are fitted on fully updated weights.
  bool gptq_py_group_fit = false;
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
};

namespace detail {

/// In place: L (lower triangular, column-major) ← L⁻¹, by blocks
///   [A 0; B C]⁻¹ = [A⁻¹ 0; −C⁻¹ B A⁻¹  C⁻¹],
/// two triangular products per level: n³/6 multiply-adds in GEMM-like kernels, a third of a
/// triangular solve against the identity.
template <class Mat>
void invert_lower_in_place(Eigen::Ref<Mat> l) {
  const Index n = l.rows();
  if (n <= 64) {
    Mat inv = Mat::Identity(n, n);
    l.template triangularView<Eigen::Lower>().solveInPlace(inv);
    l.template triangularView<Eigen::Lower>() = inv;
    return;
  }
  const Index h = n / 2;
  invert_lower_in_place<Mat>(l.block(0, 0, h, h));
  invert_lower_in_place<Mat>(l.block(h, h, n - h, n - h));
  Mat t = l.block(h, 0, n - h, h) * l.block(0, 0, h, h).template triangularView<Eigen::Lower>();
  l.block(h, 0, n - h, h).noalias() = -(l.block(h, h, n - h, n - h).template triangularView<Eigen::Lower>() * t);
}

/// Upper Cholesky factor U of (H + λI)⁻¹ through J H J = L Lᵀ, U = J L⁻¹ J. Returns false when
/// the factorization fails or a pivot carries less than `rel_tol` of its diagonal (numerically
/// singular). Works in Scalar = float or double; the result is float, row-major.
template <class Scalar>
bool upper_cholesky_of_inverse(const Eigen::MatrixXd& h, double lambda, double rel_tol,
                               RowMatrixXf& u) {
  using Mat = Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic>;
  const Index n = h.rows();
  Mat a = h.reverse().template cast<Scalar>();
  a.diagonal().array() += static_cast<Scalar>(lambda);
  const Eigen::Matrix<Scalar, Eigen::Dynamic, 1> diag = a.diagonal();
  Eigen::LLT<Eigen::Ref<Mat>> llt(a);  // in place: the lower triangle of `a` becomes L
  if (llt.info() != Eigen::Success) return false;
  for (Index i = 0; i < n; ++i) {
    const double p = static_cast<double>(a(i, i));
    if (!(p * p >= rel_tol * static_cast<double>(diag[i])) || !std::isfinite(p)) return false;
  }
  invert_lower_in_place<Mat>(a.block(0, 0, n, n));
  a.template triangularView<Eigen::StrictlyUpper>().setZero();
  if (!a.allFinite()) return false;
  u = a.reverse().template cast<float>();
  return true;
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

}  // namespace detail

/// GPTQ with the Hessian H = 2/n XᵀX given as a matrix [cols x cols] (symmetric, PSD).
template <ScalarQuantizer Q>
[[nodiscard]] GptqResult<Q> gptq(const Q& q, const Granularity& granularity, MatrixRef w,
                                 const Eigen::MatrixXd& hessian, const GptqOptions& opt = {}) {
  constexpr std::string_view kWhere = "gptq";
  require_nonempty(kWhere, "weights", w.rows(), w.cols());
  require_finite(kWhere, "weights", w);
  const Index rows = w.rows(), cols = w.cols();
  if (hessian.rows() != cols || hessian.cols() != cols) {
    fail(kWhere, ": weights have ", cols, " columns but the Hessian is ", hessian.rows(), "x",
         hessian.cols());
  }
  if (!hessian.allFinite()) require_finite(kWhere, "hessian", hessian);
  require_range(kWhere, "options.damp_fraction", opt.damp_fraction, 0.0, 1e6);
  require_range(kWhere, "options.damp_increment", opt.damp_increment, 1e-9, 1e6);
  require_range(kWhere, "options.block_size", opt.block_size, Index{1}, Index{1} << 20);
  if (opt.fit.clip_search) {
    require_range(kWhere, "options.fit.clip_min_ratio", opt.fit.clip_min_ratio, 0.01f, 1.0f);
    require_range(kWhere, "options.fit.clip_steps", opt.fit.clip_steps, 1, 1000);
  }
  for (Index i = 0; i < cols; ++i) {
    if (hessian(i, i) < 0.0) {
      fail(kWhere, ": the Hessian must be positive semi-definite, got diagonal ", hessian(i, i),
           " at ", i);
    }
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
  Eigen::MatrixXd h = hessian;
  RowMatrixXf work = w;
  for (Index i = 0; i < cols; ++i) {
    if (h(i, i) == 0.0) {
      rep.dead_columns.push_back(i);
      h(i, i) = 1.0;
      work.col(i).setZero();
    }
  }

  const Index gpr = L.groups_per_row();
  const bool upfront = L.per_tensor || gpr == 1 || opt.act_order || opt.static_groups;
  rep.static_groups = upfront;
  VectorXf col_importance;
  if (opt.hessian_importance) col_importance = h.diagonal().cast<float>();
  if (upfront) {
    QuantizeOptions qo;
    qo.fit = opt.fit;
    qo.column_importance = col_importance;
    auto fitted = quantize_matrix(q, granularity, work, qo);
    out.params = std::move(fitted.params);
  }

  // Visiting order.
  std::vector<Index> perm(static_cast<std::size_t>(cols));
  std::iota(perm.begin(), perm.end(), Index{0});
  if (opt.act_order) {
    std::stable_sort(perm.begin(), perm.end(),
                     [&](Index a, Index b) { return h(a, a) > h(b, b); });
  }
  Eigen::MatrixXd hp(cols, cols);
  RowMatrixXf wp(rows, cols);
  for (Index j = 0; j < cols; ++j) {
    wp.col(j) = work.col(perm[static_cast<std::size_t>(j)]);
    for (Index i = 0; i < cols; ++i) {
      hp(i, j) = h(perm[static_cast<std::size_t>(i)], perm[static_cast<std::size_t>(j)]);
    }
  }
  work.resize(0, 0);

  // Damped factorization, damping raised until it succeeds.
  const double mean_diag = hp.diagonal().mean();
  RowMatrixXf u;
  double frac = opt.damp_fraction;
  for (;;) {
    const double lambda = frac * mean_diag;
    if (detail::upper_cholesky_of_inverse<float>(hp, lambda, 1e-6, u)) break;
    if (detail::upper_cholesky_of_inverse<double>(hp, lambda, 1e-13, u)) {
      rep.factored_in_double = true;
      break;
    }
    ++rep.retries;
    frac += opt.damp_increment;
    if (frac > opt.max_damp_fraction) {
      fail(kWhere, ": the Hessian stays singular with damping ", frac - opt.damp_increment,
           " x mean diagonal (", mean_diag, "); options.max_damp_fraction = ",
           opt.max_damp_fraction);
    }
  }
  hp.resize(0, 0);
  rep.damp_fraction = frac;
  rep.damping = frac * mean_diag;

  const Index group = L.per_tensor ? cols : L.group_size;
  const auto blocks = detail::gptq_blocks(cols, opt.block_size, group, !upfront && !opt.gptq_py_group_fit);
  Index max_block = 0;
  for (const auto& b : blocks) max_block = std::max(max_block, b.second - b.first);
  RowMatrixXf w1(rows, max_block);
  RowMatrixXf e1(rows, max_block);
  rep.proxy_loss.setZero(rows);
  const std::size_t ucols = static_cast<std::size_t>(cols);

  for (const auto& [i1, i2] : blocks) {
    const Index count = i2 - i1;
    w1.leftCols(count) = wp.middleCols(i1, count);
    std::exception_ptr error;
    // Threads only pay off for enough work per block (rows · count² / 2 multiply-adds).
    [[maybe_unused]] const bool parallel = rows * count * count >= (Index{1} << 22);
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
#if defined(_OPENMP)
#pragma omp for schedule(static)
#endif
      for (Index r = 0; r < rows; ++r) {
        try {
          float* wr = w1.row(r).data();
          float* er = e1.row(r).data();
          double loss = 0.0;
          for (Index i = 0; i < count; ++i) {
            const Index j = i1 + i;                          // position in visiting order
            const Index c = perm[static_cast<std::size_t>(j)];  // original column
            auto& params = out.params[static_cast<std::size_t>(L.param_index(r, c))];
            if (!upfront && j % group == 0) {
              // Fit the group on its error-updated values: in-block columns from w1, the
              // rest (a group wider than the block starts at a block start) from wp.
              const Index g_end = std::min(cols, j + group);
              values.clear();
              weights.clear();
              for (Index k = j; k < g_end; ++k) {
                values.push_back(k < i2 && !opt.gptq_py_group_fit ? wr[k - i1] : wp(r, k));
                if (opt.hessian_importance) weights.push_back(col_importance[k]);
              }
              params = q.fit(values, weights, opt.fit);
            }
            const float x = wr[i];
            const std::uint8_t code = q.encode(params, x);
            out.codes[static_cast<std::size_t>(r) * ucols + static_cast<std::size_t>(c)] = code;
            const float* urow = u.row(j).data();
            const float err = (x - q.decode(params, code)) / urow[j];
            loss += static_cast<double>(err) * static_cast<double>(err);
            er[i] = err;
            for (Index k = i + 1; k < count; ++k) wr[k] -= err * urow[i1 + k];
          }
          rep.proxy_loss[r] += loss;
        } catch (...) {
#if defined(_OPENMP)
#pragma omp critical(qtl_gptq_error)
#endif
          if (!error) error = std::current_exception();
        }
      }
    }
    if (error) std::rethrow_exception(error);
    if (i2 < cols) {
      wp.rightCols(cols - i2).noalias() -= e1.leftCols(count) * u.block(i1, i2, count, cols - i2);
    }
  }
  rep.total_proxy_loss = rep.proxy_loss.sum();
  return result;
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
