// qtl/calib/gptvq.hpp — GPTQ for vector quantizers: D columns at a time (GPTVQ, van Baalen et
// al. 2024; VPTQ, Liu et al., EMNLP'24).
//
// The sweep is GPTQ's (qtl/calib/gptq.hpp: U the upper Cholesky factor of (H + λI)⁻¹, lazy
// blocks, one GEMM per block), except that at the first column of each D-vector the whole vector
// — its current, error-updated values — is encoded at once, with coordinate weights 1 / U_jj²
// (the inverse of the conditional variances GPTQ divides by; GPTVQ weights its assignment by the
// inverse Hessian's diagonal the same way). Then the vector's columns are visited one by one as
// in GPTQ with their codeword coordinates as q: e_j = (w_j − q_j) / U_jj, w_k −= e_j U_jk. So
// the error of every coordinate, including the ones fixed together, is fed forward exactly,
// and the proxy loss Σ e_j² = (w − q)ᵀ (H + λI)(w − q) still holds per row.
//
// Codebooks (one per set of rows_per_set rows, VQGranularity) are fitted up front on W, each
// coordinate weighted by diag(H) (VPTQ's Hessian-weighted k-means), so the result is a plain
// VQMatrix<V> that dequantize / bits_per_weight / the packers read unchanged. There is no
// act-order: a vector is D consecutive inputs. Padding coordinates (cols not a multiple of D)
// carry weight 0 and value 0, as in quantize_vectors.
#pragma once

#include <algorithm>
#include <cmath>
#include <exception>
#include <string_view>
#include <vector>

#include "qtl/calib/gptq.hpp"
#include "qtl/calib/hessian.hpp"
#include "qtl/core/error.hpp"
#include "qtl/core/types.hpp"
#include "qtl/core/validate.hpp"
#include "qtl/quant/vector.hpp"

namespace qtl::calib {

template <VectorQuantizer V>
struct GptvqResult {
  VQMatrix<V> matrix;
  GptqReport report;
};

/// GPTQ with a vector quantizer. Uses options.damp_*, options.block_size (rounded down to a
/// multiple of D, at least D); act_order, static_groups, fit and hessian_importance do not apply.
template <VectorQuantizer V>
[[nodiscard]] GptvqResult<V> gptvq(const V& v, const VQGranularity& granularity, MatrixRef w,
                                   const Eigen::MatrixXd& hessian, const GptqOptions& opt = {}) {
  constexpr std::string_view kWhere = "gptvq";
  constexpr Index kDim = V::kDim;
  require_nonempty(kWhere, "weights", w.rows(), w.cols());
  require_finite(kWhere, "weights", w);
  const Index rows = w.rows(), cols = w.cols();
  if (hessian.rows() != cols || hessian.cols() != cols) {
    fail(kWhere, ": weights have ", cols, " columns but the Hessian is ", hessian.rows(), "x", hessian.cols());
  }
  if (!hessian.allFinite()) require_finite(kWhere, "hessian", hessian);
  require_range(kWhere, "options.damp_fraction", opt.damp_fraction, 0.0, 1e6);
  require_range(kWhere, "options.damp_increment", opt.damp_increment, 1e-9, 1e6);
  require_range(kWhere, "options.block_size", opt.block_size, Index{1}, Index{1} << 20);
  if (opt.act_order) fail(kWhere, ": act_order does not apply to vector quantization (a vector is ", kDim,
                          " consecutive inputs)");
  for (Index i = 0; i < cols; ++i) {
    if (hessian(i, i) < 0.0) {
      fail(kWhere, ": the Hessian must be positive semi-definite, got diagonal ", hessian(i, i), " at ", i);
    }
  }

  GptvqResult<V> result;
  GptqReport& rep = result.report;
  rep.block_size = std::max(kDim, opt.block_size / kDim * kDim);
  Eigen::MatrixXd h = hessian;
  RowMatrixXf work = w;
  for (Index i = 0; i < cols; ++i) {
    if (h(i, i) == 0.0) {
      rep.dead_columns.push_back(i);
      h(i, i) = 1.0;
      work.col(i).setZero();
    }
  }

  // Codebooks up front, Hessian-diagonal weighted.
  VQOptions vo;
  vo.column_importance = h.diagonal().cast<float>();
  result.matrix = quantize_vectors(v, granularity, work, vo);
  VQMatrix<V>& out = result.matrix;
  const VQLayout& L = out.layout;
  const Index vpr = L.vectors_per_row();

  const double mean_diag = h.diagonal().mean();
  RowMatrixXf u;
  double frac = opt.damp_fraction;
  for (;;) {
    const double lambda = frac * mean_diag;
    if (detail::upper_cholesky_of_inverse<float>(h, lambda, 1e-6, u)) break;
    if (detail::upper_cholesky_of_inverse<double>(h, lambda, 1e-13, u)) {
      rep.factored_in_double = true;
      break;
    }
    ++rep.retries;
    frac += opt.damp_increment;
    if (frac > opt.max_damp_fraction) {
      fail(kWhere, ": the Hessian stays singular with damping ", frac - opt.damp_increment, " x mean diagonal");
    }
  }
  rep.damp_fraction = frac;
  rep.damping = frac * mean_diag;
  h.resize(0, 0);

  const Index bs = rep.block_size;
  RowMatrixXf w1(rows, bs), e1(rows, bs);
  rep.proxy_loss.setZero(rows);
  for (Index i1 = 0; i1 < cols; i1 += bs) {
    const Index i2 = std::min(cols, i1 + bs), count = i2 - i1;
    w1.leftCols(count) = work.middleCols(i1, count);
    std::exception_ptr error;
    [[maybe_unused]] const bool parallel = rows * count * count >= (Index{1} << 22);
#if defined(_OPENMP)
#pragma omp parallel if (parallel)
#endif
    {
      float vec[kDim], wt[kDim], dec[kDim];
#if defined(_OPENMP)
#pragma omp for schedule(static)
#endif
      for (Index r = 0; r < rows; ++r) {
        try {
          const auto& p = out.params[static_cast<std::size_t>(L.set_of_row(r))];
          float* wr = w1.row(r).data();
          float* er = e1.row(r).data();
          double loss = 0.0;
          for (Index i = 0; i < count; ++i) {
            const Index j = i1 + i;
            if (j % kDim == 0) {
              for (Index d = 0; d < kDim; ++d) {
                const bool real = j + d < cols;
                vec[d] = real ? wr[i + d] : 0.0f;
                const float ujj = real ? u(j + d, j + d) : 0.0f;
                wt[d] = real ? 1.0f / (ujj * ujj) : 0.0f;
              }
              const std::uint32_t index = v.encode(p, vec, wt);
              out.indices[static_cast<std::size_t>(r * vpr + j / kDim)] = index;
              v.decode(p, index, dec);
            }
            const float* urow = u.row(j).data();
            const float err = (wr[i] - dec[j % kDim]) / urow[j];
            loss += static_cast<double>(err) * static_cast<double>(err);
            er[i] = err;
            for (Index k = i + 1; k < count; ++k) wr[k] -= err * urow[i1 + k];
          }
          rep.proxy_loss[r] += loss;
        } catch (...) {
#if defined(_OPENMP)
#pragma omp critical(qtl_gptvq_error)
#endif
          if (!error) error = std::current_exception();
        }
      }
    }
    if (error) std::rethrow_exception(error);
    if (i2 < cols) {
      work.rightCols(cols - i2).noalias() -= e1.leftCols(count) * u.block(i1, i2, count, cols - i2);
    }
  }
  rep.total_proxy_loss = rep.proxy_loss.sum();
  rep.tokens = -1;
  return result;
}

/// With a HessianAccumulator's statistics.
template <VectorQuantizer V>
[[nodiscard]] GptvqResult<V> gptvq(const V& v, const VQGranularity& granularity, MatrixRef w,
                                   const HessianAccumulator& stats, const GptqOptions& opt = {}) {
  if (stats.in_features() != w.cols()) {
    fail("gptvq: weights have ", w.cols(), " columns but the statistics have ", stats.in_features(), " inputs");
  }
  auto result = gptvq(v, granularity, w, stats.hessian(), opt);
  result.report.tokens = stats.tokens();
  result.report.rank_deficient = stats.tokens() < w.cols();
  return result;
}

}  // namespace qtl::calib
