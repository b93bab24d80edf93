// qtl/calib/gptvq.hpp — GPTQ for vector quantizers: D columns at a time (GPTVQ, van Baalen et
// al. 2024; VPTQ, Liu et al., EMNLP'24).
//
// The sweep is GPTQ's (qtl/calib/gptq.hpp: U the upper Cholesky factor of (H + λI)⁻¹, needed
// only on each panel's diagonal block; earlier panels' errors arrive in one GEMM), except that
// at the first column of each D-vector the whole vector — its current, error-updated values —
// is encoded at once, with coordinate weights 1 / U_jj²
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
#include <utility>
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
  detail::check_gptq_input(kWhere, w, hessian, opt);
  const Index rows = w.rows(), cols = w.cols();
  if (opt.act_order) fail(kWhere, ": act_order does not apply to vector quantization (a vector is ", kDim,
                          " consecutive inputs)");

  GptvqResult<V> result;
  GptqReport& rep = result.report;
  rep.block_size = std::max(kDim, opt.block_size / kDim * kDim);
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

  // Codebooks up front, Hessian-diagonal weighted.
  VQOptions vo;
  vo.column_importance = diag.cast<float>();
  result.matrix = quantize_vectors(v, granularity, work, vo);
  VQMatrix<V>& out = result.matrix;
  const VQLayout& L = out.layout;
  const Index vpr = L.vectors_per_row();

  // Panels of block_size columns (a multiple of D: no vector straddles two), factored as in
  // gptq(): one Cholesky of J (H + λI) J and U on each panel's diagonal block only.
  const Index bs = rep.block_size;
  std::vector<std::pair<Index, Index>> panels;
  for (Index p1 = 0; p1 < cols; p1 += bs) panels.emplace_back(p1, std::min(cols, p1 + bs));
  const detail::GptqFactor factor = detail::damped_gptq_factor(kWhere, hessian, {}, diag.mean(), panels, opt, rep);

  // Left-looking across panels, GPTQ's column sweep inside one (see gptq(): the columns left of
  // a panel hold D = W - Q, and W_P += (D Ũ[:p1, P]) U_PP gives the panel its error-updated
  // weights).
  RowMatrixXf orig(rows, bs), decoded(rows, bs), s;
  rep.proxy_loss.setZero(rows);
  for (std::size_t pi = 0; pi < panels.size(); ++pi) {
    // Plain variables, not a structured binding: the OpenMP region below uses p1, and clang
    // before 16 cannot capture a binding there.
    const Index p1 = panels[pi].first;
    const Index count = panels[pi].second - p1;
    const RowMatrixXf& up = factor.panel_u[pi];
    orig.leftCols(count) = work.middleCols(p1, count);
    if (p1 > 0) {
      s.noalias() = work.leftCols(p1) * factor.ut.block(0, p1, p1, count);
      work.middleCols(p1, count).noalias() += s * up;
    }
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
          float* wr = work.row(r).data() + p1;
          float* dr = decoded.row(r).data();
          double loss = 0.0;
          for (Index i = 0; i < count; ++i) {
            const Index j = p1 + i;
            if (j % kDim == 0) {
              for (Index d = 0; d < kDim; ++d) {
                const bool real = j + d < cols;
                vec[d] = real ? wr[i + d] : 0.0f;
                const float ujj = real ? up(i + d, i + d) : 0.0f;
                wt[d] = real ? 1.0f / (ujj * ujj) : 0.0f;
              }
              const std::uint32_t index = v.encode(p, vec, wt);
              out.indices[static_cast<std::size_t>(r * vpr + j / kDim)] = index;
              v.decode(p, index, dec);
            }
            const float* urow = up.row(i).data();
            dr[i] = dec[j % kDim];
            const float err = (wr[i] - dr[i]) / urow[i];
            loss += static_cast<double>(err) * static_cast<double>(err);
            for (Index k = i + 1; k < count; ++k) wr[k] -= err * urow[k];
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
    work.middleCols(p1, count) = orig.leftCols(count) - decoded.leftCols(count);
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
