// qtl/calib/lowrank.hpp — low-rank compensation of the quantization error (ZeroQuant-V2's LoRC,
// LQER (Zhang et al., ICML'24), and the exact activation-weighted solution of QERA / SVD-LLM).
//
// With E = W − Ŵ [out x in], a rank-r correction A B (A [out x r], B [r x in]) is stored beside
// the quantized matrix and added in the forward pass: y = Ŵ x + A (B x). It minimizes
//   ||(E − A B) S||_F   through the SVD  E S = U Σ Vᵀ,  A = U_r Σ_r,  B = V_rᵀ S⁻¹,
// for a choice of S:
//   Scaling::None      S = I            (LoRC: the plain weight error)
//   Scaling::MeanAbs   S = diag(mean|x|) (LQER's activation-induced scale; a dead channel gets 1)
//   Scaling::Hessian   S = L, H = L Lᵀ   (H = 2/n XᵀX, damped by 1e-6·mean diag): the output error
//                      ||X (E − AB)ᵀ||² = (n/2)||(E − AB) L||², so this r is the best possible
// A and B are rounded to fp16, which is how they are stored: bits_per_weight counts
// 16 · r · (out + in) bits over out · in weights.
#pragma once

#include <algorithm>
#include <string_view>

#include <Eigen/Cholesky>
#include <Eigen/SVD>

#include "qtl/calib/hessian.hpp"
#include "qtl/core/error.hpp"
#include "qtl/core/types.hpp"
#include "qtl/core/validate.hpp"
#include "qtl/detail/fp16.hpp"

namespace qtl::calib {

struct LowRankOptions {
  enum class Scaling { None, MeanAbs, Hessian };
  Index rank = 8;
  Scaling scaling = Scaling::Hessian;
};

struct LowRankCorrection {
  RowMatrixXf a;  ///< [out x r], fp16 values
  RowMatrixXf b;  ///< [r x in], fp16 values

  [[nodiscard]] Index rank() const noexcept { return a.cols(); }
  /// The correction's outputs for activations [tokens x in]: X Bᵀ Aᵀ.
  [[nodiscard]] RowMatrixXf apply(MatrixRef x) const {
    if (x.cols() != b.cols()) {
      fail("LowRankCorrection::apply: activations have ", x.cols(), " columns, expected ", b.cols());
    }
    const RowMatrixXf t = x * b.transpose();
    return t * a.transpose();
  }
  /// A B as a dense matrix.
  [[nodiscard]] RowMatrixXf dense() const { return a * b; }
  /// Extra bits per weight of the [out x in] matrix it corrects.
  [[nodiscard]] double bits_per_weight() const noexcept {
    if (a.rows() == 0 || b.cols() == 0) return 0.0;
    return 16.0 * static_cast<double>(rank()) * static_cast<double>(a.rows() + b.cols()) /
           (static_cast<double>(a.rows()) * static_cast<double>(b.cols()));
  }
};

/// The rank-r correction of W − W_hat (both [out x in]) under the chosen scaling.
/// A function template only so that Eigen's BDCSVD is instantiated where it is called, not in
/// every translation unit that includes this header (qtl/core/types.hpp: "Deferred").
template <class Deferred = void>
[[nodiscard]] LowRankCorrection low_rank_correction(MatrixRef w, MatrixRef w_hat,
                                                           const LayerStatistics& stats,
                                                           const LowRankOptions& opt = {}) {
  constexpr std::string_view kWhere = "low_rank_correction";
  require_nonempty(kWhere, "weights", w.rows(), w.cols());
  require_shape(kWhere, "quantized weights", w_hat.rows(), w_hat.cols(), w.rows(), w.cols());
  require_finite(kWhere, "weights", w);
  require_finite(kWhere, "quantized weights", w_hat);
  const Index out = w.rows(), in = w.cols();
  require_range(kWhere, "options.rank", opt.rank, Index{0}, std::min(out, in));
  const Eigen::MatrixXd e = (w - w_hat).cast<double>();
  Eigen::MatrixXd es;      // E S
  Eigen::MatrixXd l;
  switch (opt.scaling) {
    case LowRankOptions::Scaling::None:
      es = e;
      break;
    case LowRankOptions::Scaling::MeanAbs: {
      require_size(kWhere, "statistics' mean|x|", stats.mean_abs.size(), in);
      VectorXd d = stats.mean_abs;
      for (Index i = 0; i < in; ++i) {
        if (!(d[i] > 0.0)) d[i] = 1.0;
      }
      es = e * d.asDiagonal();
      l = d.asDiagonal();
      break;
    }
    case LowRankOptions::Scaling::Hessian: {
      require_shape(kWhere, "statistics' Hessian", stats.hessian.rows(), stats.hessian.cols(), in, in);
      Eigen::MatrixXd h = stats.hessian;
      const double mean = h.diagonal().mean();
      for (Index i = 0; i < in; ++i) {
        if (h(i, i) == 0.0) h(i, i) = mean > 0 ? mean : 1.0;  // dead input: any positive value
      }
      h.diagonal().array() += 1e-6 * (mean > 0 ? mean : 1.0);
      Eigen::LLT<Eigen::MatrixXd> llt(h);
      if (llt.info() != Eigen::Success) fail(kWhere, ": the Hessian is not positive definite after damping");
      l = llt.matrixL();
      es = e * l;
      break;
    }
  }
  LowRankCorrection c;
  if (opt.rank == 0) {
    c.a.resize(out, 0);
    c.b.resize(0, in);
    return c;
  }
  Eigen::BDCSVD<Eigen::MatrixXd> svd(es, Eigen::ComputeThinU | Eigen::ComputeThinV);
  const Index r = opt.rank;
  const Eigen::MatrixXd a = svd.matrixU().leftCols(r) * svd.singularValues().head(r).asDiagonal();
  Eigen::MatrixXd bt = svd.matrixV().leftCols(r);  // [in x r]: B = btᵀ S⁻¹  <=>  Sᵀ Bᵀ = bt
  if (opt.scaling != LowRankOptions::Scaling::None) {
    if (opt.scaling == LowRankOptions::Scaling::Hessian) {
      l.transpose().triangularView<Eigen::Upper>().solveInPlace(bt);
    } else {
      bt = l.diagonal().cwiseInverse().asDiagonal() * bt;
    }
  }
  c.a = a.cast<float>();
  c.b = bt.transpose().cast<float>();
  for (auto& v : c.a.reshaped()) v = qtl::detail::round_to_half(v);
  for (auto& v : c.b.reshaped()) v = qtl::detail::round_to_half(v);
  return c;
}

}  // namespace qtl::calib
