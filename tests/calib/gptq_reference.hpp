// GPTQ written the textbook way, independently of qtl/calib/gptq.hpp, to test it against.
#pragma once

#include <Eigen/LU>
#include <qtl/calib/hessian.hpp>
#include <qtl/quant/concepts.hpp>

#include <algorithm>
#include <numeric>
#include <vector>

namespace qtl::test {

// The textbook algorithm, written independently of the library: one column at a time, with the
// full inverse Hinv = (H + λI)⁻¹ updated by Gaussian elimination after each column (OBQ's form,
// the one GPTQ's Cholesky formulation is derived from). Group parameters are fitted on the
// current weights when a group starts (or up front for per-row / static groups).
struct ReferenceResult {
  qtl::RowMatrixXf q;      // dequantized weights
  double proxy = 0;   // Σ err² with err = (w - q) / sqrt(Hinv_ii)
};

template <class Q>
ReferenceResult reference_gptq(const Q& quant, Index group, const qtl::RowMatrixXf& w_in,
                               Eigen::MatrixXd h, double damp_fraction, bool act_order) {
  const Index rows = w_in.rows(), cols = w_in.cols();
  qtl::RowMatrixXf w = w_in;
  for (Index i = 0; i < cols; ++i) {
    if (h(i, i) == 0) {
      h(i, i) = 1;
      w.col(i).setZero();
    }
  }
  const bool upfront = act_order || group >= cols;
  const Index gpr = (cols + group - 1) / group;
  std::vector<typename Q::Params> params(static_cast<std::size_t>(rows * gpr));
  const qtl::FitOptions fo;  // the plain min-max grid
  auto fit = [&](Index r, Index g, const qtl::RowMatrixXf& from) {
    const Index c0 = g * group, c1 = std::min(cols, c0 + group);
    std::vector<float> v(from.row(r).data() + c0, from.row(r).data() + c1);
    params[static_cast<std::size_t>(r * gpr + g)] = quant.fit(v, {}, fo);
  };
  if (upfront) {
    for (Index r = 0; r < rows; ++r)
      for (Index g = 0; g < gpr; ++g) fit(r, g, w);
  }
  std::vector<Index> order(static_cast<std::size_t>(cols));
  std::iota(order.begin(), order.end(), 0);
  if (act_order) {
    std::stable_sort(order.begin(), order.end(), [&](Index a, Index b) { return h(a, a) > h(b, b); });
  }
  h.diagonal().array() += damp_fraction * h.diagonal().mean();
  Eigen::MatrixXd hinv = h.inverse();
  ReferenceResult res;
  res.q = qtl::RowMatrixXf::Zero(rows, cols);
  std::vector<bool> done(static_cast<std::size_t>(cols), false);
  for (Index step = 0; step < cols; ++step) {
    const Index c = order[static_cast<std::size_t>(step)];
    for (Index r = 0; r < rows; ++r) {
      if (!upfront && c % group == 0) fit(r, c / group, w);
      const auto& p = params[static_cast<std::size_t>(r * gpr + c / group)];
      const float qv = quant.decode(p, quant.encode(p, w(r, c)));
      res.q(r, c) = qv;
      const double err = (w(r, c) - qv) / hinv(c, c);
      res.proxy += (w(r, c) - qv) * err;
      for (Index k = 0; k < cols; ++k) {
        if (!done[static_cast<std::size_t>(k)] && k != c) w(r, k) -= static_cast<float>(err * hinv(c, k));
      }
    }
    done[static_cast<std::size_t>(c)] = true;
    // Remove column c from the inverse (Gaussian elimination).
    const Eigen::VectorXd col = hinv.col(c);
    hinv -= col * hinv.row(c) / hinv(c, c);
  }
  return res;
}

inline Eigen::MatrixXd hessian_of(const qtl::RowMatrixXf& x) {
  qtl::calib::HessianAccumulator acc(x.cols());
  acc.add_batch(x);
  return acc.hessian();
}

}  // namespace qtl::test
