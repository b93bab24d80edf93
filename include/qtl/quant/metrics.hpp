// qtl/quant/metrics.hpp — how far a quantized matrix is from the original.
//
//   mse(W, W_hat)        = mean (W - W_hat)^2
//   sqnr_db(W, W_hat)    = 10 log10( sum W^2 / sum (W - W_hat)^2 )     (+inf when exact)
//   relative_output_error(W, W_hat, X) = ||(W - W_hat) X^T||_F / ||W X^T||_F
// where X is [tokens x in] (one activation per row). The output error is what calibration
// minimizes; SQNR ignores which inputs matter. Sums are accumulated in double.
#pragma once

#include <cmath>
#include <limits>

#include "qtl/core/error.hpp"
#include "qtl/core/types.hpp"
#include "qtl/core/validate.hpp"

namespace qtl {

namespace detail {
inline void require_same_shape(std::string_view where, MatrixRef a, MatrixRef b) {
  require_nonempty(where, "reference", a.rows(), a.cols());
  require_shape(where, "approximation", b.rows(), b.cols(), a.rows(), a.cols());
}
}  // namespace detail

[[nodiscard]] inline double mse(MatrixRef w, MatrixRef w_hat) {
  detail::require_same_shape("mse", w, w_hat);
  return (w.cast<double>() - w_hat.cast<double>()).squaredNorm() / static_cast<double>(w.size());
}

[[nodiscard]] inline double sqnr_db(MatrixRef w, MatrixRef w_hat) {
  detail::require_same_shape("sqnr_db", w, w_hat);
  const double signal = w.cast<double>().squaredNorm();
  const double noise = (w.cast<double>() - w_hat.cast<double>()).squaredNorm();
  if (noise == 0.0) return std::numeric_limits<double>::infinity();
  return 10.0 * std::log10(signal / noise);
}

[[nodiscard]] inline double relative_output_error(MatrixRef w, MatrixRef w_hat, MatrixRef x) {
  constexpr std::string_view kWhere = "relative_output_error";
  detail::require_same_shape(kWhere, w, w_hat);
  require_nonempty(kWhere, "activations", x.rows(), x.cols());
  if (x.cols() != w.cols()) {
    fail(kWhere, ": activations have ", x.cols(), " columns but the weights have ", w.cols(),
         " inputs");
  }
  const Eigen::MatrixXd xd = x.cast<double>();
  const double den = (w.cast<double>() * xd.transpose()).norm();
  const double num = ((w.cast<double>() - w_hat.cast<double>()) * xd.transpose()).norm();
  if (den == 0.0) return num == 0.0 ? 0.0 : std::numeric_limits<double>::infinity();
  return num / den;
}

}  // namespace qtl
