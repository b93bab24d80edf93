// Shared helpers for the calibration tests: correlated activations, an exact "identity"
// quantizer, and layer inputs captured from the real model.
#pragma once

#include <qtl/calib/hessian.hpp>
#include <qtl/core/types.hpp>
#include <qtl/quant/concepts.hpp>
#include <qtl/quant/metrics.hpp>
#include <qtl/quant/quantize_matrix.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <span>
#include <string>
#include <vector>

#include "test_util.hpp"

namespace qtl::test {

/// Activations with correlated channels and channel magnitudes spread over two decades, like a
/// transformer layer's inputs: X = Z · M · diag(m), Z Gaussian [tokens x k], M [k x in].
inline RowMatrixXf correlated_activations(Index tokens, Index in, unsigned seed, Index k = 0) {
  if (k == 0) k = in;
  const RowMatrixXf z = gaussian(tokens, k, seed);
  const RowMatrixXf mix = gaussian(k, in, seed + 1) / std::sqrt(static_cast<float>(k));
  RowMatrixXf x = z * mix + 0.3f * gaussian(tokens, in, seed + 2);
  std::mt19937 rng(seed + 3);
  std::uniform_real_distribution<float> e(-1.0f, 1.0f);
  for (Index c = 0; c < in; ++c) x.col(c) *= std::pow(10.0f, e(rng));
  return x;
}

/// The statistics (Hessian, mean |x|) of one batch of activations.
inline calib::LayerStatistics statistics_of(const RowMatrixXf& x) {
  calib::HessianAccumulator acc(x.cols());
  acc.add_batch(x);
  return acc.statistics();
}

/// Output error ||X Wᵀ - X Ŵᵀ|| / ||X Wᵀ|| of plain round-to-nearest over groups of 32 on the
/// min-max grid (no refinement: the grid GPTQ and AWQ start from).
template <class Q>
double rtn_output_error(const Q& q, const RowMatrixXf& w, const RowMatrixXf& x) {
  return relative_output_error(w, dequantize(quantize_matrix(q, PerGroup{32}, w)), x);
}

/// A quantizer that loses nothing: a group's parameters are its own values (at most 256), and a
/// code is the index of the value. With it every calibration pipeline must reproduce W exactly.
class ExactTable {
 public:
  static constexpr int kBits = 8;
  struct Params {
    std::vector<float> values;
  };
  [[nodiscard]] std::string name() const { return "exact-table"; }
  [[nodiscard]] static double param_bits() { return 0.0; }
  [[nodiscard]] Params fit(std::span<const float> x, std::span<const float>,
                           const FitOptions& = {}) const {
    Params p;
    p.values.assign(x.begin(), x.end());
    std::sort(p.values.begin(), p.values.end());
    p.values.erase(std::unique(p.values.begin(), p.values.end()), p.values.end());
    if (p.values.size() > 256) throw std::runtime_error("ExactTable: more than 256 values");
    return p;
  }
  [[nodiscard]] static std::uint8_t encode(const Params& p, float x) {
    std::size_t best = 0;
    for (std::size_t i = 1; i < p.values.size(); ++i) {
      if (std::fabs(p.values[i] - x) < std::fabs(p.values[best] - x)) best = i;
    }
    return static_cast<std::uint8_t>(best);
  }
  [[nodiscard]] static float decode(const Params& p, std::uint8_t code) {
    return p.values[code];
  }
};
static_assert(ScalarQuantizer<ExactTable>);

}  // namespace qtl::test
