// qtl/quant/quantize_matrix.hpp — quantize a weight matrix with any scalar policy.
//
// QuantizedMatrix<Q> is the exact, unpacked result: one code per weight (row-major) and one
// parameter set per group. It is what solvers produce and tests inspect; pack it once for the
// kernels (qtl/format). Round-to-nearest (RTN) is quantize_matrix with no calibration.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "qtl/core/error.hpp"
#include "qtl/core/types.hpp"
#include "qtl/core/validate.hpp"
#include "qtl/quant/concepts.hpp"
#include "qtl/quant/granularity.hpp"

namespace qtl {

template <ScalarQuantizer Q>
struct QuantizedMatrix {
  using Quantizer = Q;
  using Params = typename Q::Params;

  Q quantizer{};
  GroupLayout layout{};
  std::vector<std::uint8_t> codes;  ///< rows * cols, row-major
  std::vector<Params> params;       ///< layout.num_param_sets()

  [[nodiscard]] Index rows() const noexcept { return layout.rows; }
  [[nodiscard]] Index cols() const noexcept { return layout.cols; }
  [[nodiscard]] std::uint8_t code(Index r, Index c) const noexcept {
    return codes[static_cast<std::size_t>(r * layout.cols + c)];
  }
  [[nodiscard]] const Params& params_at(Index r, Index c) const noexcept {
    return params[static_cast<std::size_t>(layout.param_index(r, c))];
  }
  [[nodiscard]] float value(Index r, Index c) const noexcept {
    return quantizer.decode(params_at(r, c), code(r, c));
  }
};

/// Options of quantize_matrix. Importance (e.g. the Hessian diagonal or mean x^2 of each input)
/// weights the error that fitting minimizes; give it per column, per element, or not at all.
struct QuantizeOptions {
  FitOptions fit{};
  VectorXf column_importance;  ///< empty, or one weight >= 0 per column
  RowMatrixXf importance;      ///< empty, or one weight >= 0 per element (same shape as W)
};

/// quantize_matrix with another fit of each group's parameters: `fit(values, importance)`
/// returns the group's Params (importance empty when none was given). The rest (validation,
/// layout, gathering, encoding) is quantize_matrix's.
template <ScalarQuantizer Q, class Fit>
[[nodiscard]] QuantizedMatrix<Q> quantize_matrix_with(const Q& q, const Granularity& granularity, MatrixRef w,
                                                      const QuantizeOptions& opt, Fit&& fit,
                                                      std::string_view where = "quantize_matrix") {
  const std::string_view kWhere = where;
  require_nonempty(kWhere, "weights", w.rows(), w.cols());
  require_finite(kWhere, "weights", w);
  const ImportanceGiven given = require_importance(kWhere, opt, w.rows(), w.cols());
  const bool col_imp = given.column, elem_imp = given.element;
  if (opt.fit.clip_search) {
    require_range(kWhere, "fit.clip_min_ratio", opt.fit.clip_min_ratio, 0.01f, 1.0f);
    require_range(kWhere, "fit.clip_steps", opt.fit.clip_steps, 1, 1000);
  }
  require_range(kWhere, "fit.refine_iterations", opt.fit.refine_iterations, 0, 1000);

  QuantizedMatrix<Q> out;
  out.quantizer = q;
  out.layout = make_group_layout(granularity, w.rows(), w.cols(), kWhere);
  const GroupLayout& L = out.layout;
  out.codes.resize(static_cast<std::size_t>(L.rows * L.cols));
  out.params.resize(static_cast<std::size_t>(L.num_param_sets()));

  std::vector<float> values;
  std::vector<float> weights;
  auto importance_of = [&](Index r, Index c) -> float {
    float v = 1.0f;
    if (col_imp) v *= opt.column_importance[c];
    if (elem_imp) v *= opt.importance(r, c);
    return v;
  };
  auto gather = [&](Index r0, Index r1, Index c0, Index c1) {
    values.clear();
    weights.clear();
    for (Index r = r0; r < r1; ++r) {
      for (Index c = c0; c < c1; ++c) {
        values.push_back(w(r, c));
        if (col_imp || elem_imp) weights.push_back(importance_of(r, c));
      }
    }
  };
  auto encode_block = [&](Index r0, Index r1, Index c0, Index c1, const typename Q::Params& p) {
    for (Index r = r0; r < r1; ++r) {
      for (Index c = c0; c < c1; ++c) {
        out.codes[static_cast<std::size_t>(r * L.cols + c)] = q.encode(p, w(r, c));
      }
    }
  };

  if (L.per_tensor) {
    gather(0, L.rows, 0, L.cols);
    out.params[0] = fit(std::span<const float>(values), std::span<const float>(weights));
    encode_block(0, L.rows, 0, L.cols, out.params[0]);
    return out;
  }
  for (Index r = 0; r < L.rows; ++r) {
    for (Index g = 0; g < L.groups_per_row(); ++g) {
      const Index c0 = L.group_begin(g), c1 = c0 + L.group_width(g);
      gather(r, r + 1, c0, c1);
      auto& p = out.params[static_cast<std::size_t>(r * L.groups_per_row() + g)];
      p = fit(std::span<const float>(values), std::span<const float>(weights));
      encode_block(r, r + 1, c0, c1, p);
    }
  }
  return out;
}

/// Quantizes W [rows x cols] group by group: fit each group's parameters, then encode.
template <ScalarQuantizer Q>
[[nodiscard]] QuantizedMatrix<Q> quantize_matrix(const Q& q, const Granularity& granularity,
                                                 MatrixRef w, const QuantizeOptions& opt = {}) {
  return quantize_matrix_with(q, granularity, w, opt, [&](std::span<const float> v, std::span<const float> imp) {
    return q.fit(v, imp, opt.fit);
  });
}

/// The matrix the codes represent: W_hat(r, c) = decode(params(r, c), code(r, c)).
template <ScalarQuantizer Q>
[[nodiscard]] RowMatrixXf dequantize(const QuantizedMatrix<Q>& m) {
  RowMatrixXf out(m.rows(), m.cols());
  for (Index r = 0; r < m.rows(); ++r) {
    for (Index c = 0; c < m.cols(); ++c) out(r, c) = m.value(r, c);
  }
  return out;
}

/// Bits per weight of the information stored: codes plus every group's parameters.
template <ScalarQuantizer Q>
[[nodiscard]] double bits_per_weight(const QuantizedMatrix<Q>& m) {
  const double n = static_cast<double>(m.rows()) * static_cast<double>(m.cols());
  return (code_bits<Q>() * n +
          static_cast<double>(m.layout.num_param_sets()) * static_cast<double>(m.quantizer.param_bits())) /
         n;
}

}  // namespace qtl
