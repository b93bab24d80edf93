// qtl/calib/gptq_ggml.hpp — GPTQ into llama.cpp's K-quants (q2_K ... q6_K).
//
// A K-quant super-block of 256 weights stores one fp16 d (and dmin) and per sub-block of 16 or
// 32 weights a scale (and min) quantized to 4-8 bits against d: its grid is fitted over the
// whole super-block at once, so a solver cannot refit it group by group as GPTQ does with the
// scalar formats. gptq_k therefore runs in two steps:
//   1. the grid: KQuantizer<T>::fit on every super-block of W (ggml's reference fit, its
//      importance path when importance is given: llama-quantize --imatrix's grid, or qtl's clip
//      search around it with fit.clip_search);
//   2. the codes: GPTQ on that fixed grid (calib::gptq_on_grid over KSubBlockQuantizer<T>,
//      static groups, act-order allowed), so each weight's rounding error is fed back into the
//      weights not yet quantized, as in every other GPTQ.
// The result is a KQuantizedMatrix<T> whose to_blocks() bytes ggml decodes.
#pragma once

#include <vector>

#include "qtl/calib/gptq.hpp"
#include "qtl/core/error.hpp"
#include "qtl/core/types.hpp"
#include "qtl/quant/ggml_quantizers.hpp"
#include "qtl/quant/quantize_matrix.hpp"

namespace qtl::calib {

template <ggml::Type T>
struct GptqKResult {
  ggml::KQuantizedMatrix<T> matrix;
  GptqReport report;
};

/// GPTQ into the K-quant T for W [rows x cols] (cols a multiple of 256) with the Hessian
/// [cols x cols]. `grid_options` is the super-block fit's (importance, clip search); opt is
/// GPTQ's (opt.fit is not used: the grid is fixed). Throws qtl::Error on bad shapes or values.
template <ggml::Type T>
[[nodiscard]] GptqKResult<T> gptq_k(const ggml::KQuantizer<T>& q, MatrixRef w, const Eigen::MatrixXd& hessian,
                                    const QuantizeOptions& grid_options = {}, const GptqOptions& opt = {}) {
  using Sub = ggml::KSubBlockQuantizer<T>;
  GptqKResult<T> out;
  out.matrix = ggml::quantize_k(q, w, grid_options);  // checks shape, values and importance
  const Index rows = w.rows(), cols = w.cols(), subs_per_row = cols / Sub::kGroup;
  std::vector<typename Sub::Params> grid(static_cast<std::size_t>(rows * subs_per_row));
  for (Index r = 0; r < rows; ++r) {
    for (Index g = 0; g < subs_per_row; ++g) {
      const auto& sb = out.matrix.params[static_cast<std::size_t>(r * (cols / 256) + g * Sub::kGroup / 256)];
      grid[static_cast<std::size_t>(r * subs_per_row + g)] =
          Sub::of(sb, static_cast<int>((g * Sub::kGroup % 256) / Sub::kGroup));
    }
  }
  auto res = gptq_on_grid(Sub{}, PerGroup{Sub::kGroup}, w, hessian, grid, opt);
  // Codes in the same row-major order; in a sub-block of scale 0 any code decodes alike.
  out.matrix.codes = std::move(res.matrix.codes);
  out.report = std::move(res.report);
  return out;
}

}  // namespace qtl::calib
