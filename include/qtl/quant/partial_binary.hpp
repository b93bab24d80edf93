// qtl/quant/partial_binary.hpp — partial binarization: a few salient weights (or input channels)
// at 8 bits, the rest binary (PB-LLM, Shang et al. 2023; PTQ1.61's structured channel mask).
//
// This family needs more than a per-group policy, so it has its own matrix-level result:
//   W_hat = B + C
//   B  a binary matrix, QuantizedMatrix<Binary<>> (sign x alpha per group) whose alphas are fitted
//      on the non-salient weights only (salient weights get importance 0 in the alpha fit);
//   C  an 8-bit correction at the salient positions: C(r, c) = d_r * q(r, c), q int8 in
//      [-127, 127], d_r = fp16(max_salient |W - B| in row r / 127), q = round(r / d_r) with
//      r = W(r, c) - B(r, c). Storing the residual (not the weight itself) keeps B dense, so
//      y = B x + C x: the binary GEMV runs unchanged and the correction is a sparse pass.
// Salience: score(r, c) = W(r, c)^2 * importance(r, c) (magnitude when no importance is given;
// the squared-weight-times-Hessian-diagonal criterion with a diagonal Hessian).
//   SparseList   the top `salient_fraction` of all weights by score, stored per row (CSR):
//                row offsets (uint32, rows + 1), column indices (uint16), int8 values.
//   ChannelMask  the top `salient_fraction` of input channels by sum_r score(r, c), stored as a
//                cols-bit mask plus a dense rows x channels int8 block (PTQ1.61's 1-D mask).
// Bits are counted honestly (bits_per_weight): B's signs for every weight and its fp16 alphas,
// the fp16 row scales d_r, and the sparse list (8 + 16 bits per entry + 32 per row offset) or
// the mask (1 bit per column) with its 8-bit block.
// The packed form is in qtl/format/partial_binary_packed.hpp, its reference GEMV in
// qtl/kernel/table/reference_partial_binary.hpp.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <string_view>
#include <vector>

#include "qtl/core/error.hpp"
#include "qtl/core/types.hpp"
#include "qtl/core/validate.hpp"
#include "qtl/detail/fp16.hpp"
#include "qtl/quant/binary.hpp"
#include "qtl/quant/quantize_matrix.hpp"

namespace qtl {

enum class SalientStorage { SparseList, ChannelMask };

struct PartialBinaryOptions {
  double salient_fraction = 0.05;  ///< of weights (SparseList) or of input channels (ChannelMask)
  SalientStorage storage = SalientStorage::SparseList;
  VectorXf column_importance;  ///< empty, or one weight >= 0 per column (e.g. the Hessian diagonal)
  RowMatrixXf importance;      ///< empty, or one weight >= 0 per element
};

struct PartialBinaryMatrix {
  QuantizedMatrix<Binary<>> binary;          ///< B: every weight's sign, alphas of non-salient weights
  SalientStorage storage = SalientStorage::SparseList;
  std::vector<float> row_scales;             ///< d_r, fp16 values, one per row
  // SparseList: CSR of the salient positions
  std::vector<std::uint32_t> row_offsets;    ///< rows + 1
  std::vector<std::uint16_t> columns;        ///< column of each entry, ascending within a row
  std::vector<std::int8_t> values;           ///< q of each entry (SparseList), or rows x channels (ChannelMask)
  // ChannelMask: the salient input channels, ascending
  std::vector<std::uint16_t> channels;

  [[nodiscard]] Index rows() const noexcept { return binary.rows(); }
  [[nodiscard]] Index cols() const noexcept { return binary.cols(); }
  [[nodiscard]] std::size_t salient_count() const noexcept { return values.size(); }
  friend bool operator==(const PartialBinaryMatrix& a, const PartialBinaryMatrix& b) {
    return a.binary.layout == b.binary.layout && a.binary.codes == b.binary.codes &&
           a.binary.params == b.binary.params && a.storage == b.storage && a.row_scales == b.row_scales &&
           a.row_offsets == b.row_offsets && a.columns == b.columns && a.values == b.values &&
           a.channels == b.channels;
  }
};

namespace detail {

/// Validates opt against W and returns the salience importance (ones, times the column and
/// element importance given).
[[nodiscard]] inline RowMatrixXf partial_binary_importance(std::string_view where, MatrixRef w,
                                                           const PartialBinaryOptions& opt) {
  require_nonempty(where, "weights", w.rows(), w.cols());
  require_finite(where, "weights", w);
  require_range(where, "salient_fraction", opt.salient_fraction, 0.0, 0.999);
  if (w.cols() > 65535) fail(where, ": at most 65535 columns (16-bit column indices), got ", w.cols());
  const ImportanceGiven given = require_importance(where, opt, w.rows(), w.cols());
  const bool col_imp = given.column, elem_imp = given.element;
  RowMatrixXf imp = RowMatrixXf::Ones(w.rows(), w.cols());
  if (col_imp) imp.array().rowwise() *= opt.column_importance.transpose().array();
  if (elem_imp) imp.array() *= opt.importance.array();
  return imp;
}

/// The salient mask (row-major, 1 = salient) by score = W^2 * imp, and for ChannelMask the
/// salient channels in out.channels.
[[nodiscard]] inline std::vector<std::uint8_t> partial_binary_salient(MatrixRef w, const RowMatrixXf& imp,
                                                                      const PartialBinaryOptions& opt,
                                                                      PartialBinaryMatrix& out) {
  const Index R = w.rows(), C = w.cols();
  const RowMatrixXf score = w.array().square() * imp.array();
  std::vector<std::uint8_t> salient(static_cast<std::size_t>(R * C), 0);
  out.storage = opt.storage;
  if (opt.storage == SalientStorage::SparseList) {
    const auto n = static_cast<std::size_t>(std::llround(opt.salient_fraction * static_cast<double>(R * C)));
    std::vector<std::size_t> order(static_cast<std::size_t>(R * C));
    std::iota(order.begin(), order.end(), std::size_t{0});
    std::stable_sort(order.begin(), order.end(),
                     [&](std::size_t a, std::size_t b) { return score.data()[a] > score.data()[b]; });
    for (std::size_t i = 0; i < n; ++i) salient[order[i]] = 1;
  } else {
    const auto n = static_cast<std::size_t>(std::llround(opt.salient_fraction * static_cast<double>(C)));
    const Eigen::VectorXd col_score = score.cast<double>().colwise().sum().transpose();
    std::vector<Index> order(static_cast<std::size_t>(C));
    std::iota(order.begin(), order.end(), Index{0});
    std::stable_sort(order.begin(), order.end(), [&](Index a, Index b) { return col_score[a] > col_score[b]; });
    order.resize(n);
    std::sort(order.begin(), order.end());
    for (Index c : order) {
      out.channels.push_back(static_cast<std::uint16_t>(c));
      for (Index r = 0; r < R; ++r) salient[static_cast<std::size_t>(r * C + c)] = 1;
    }
  }
  return salient;
}

/// The 8-bit correction of target - B at the salient positions (out.binary already set).
inline void add_partial_binary_correction(std::string_view where, PartialBinaryMatrix& out,
                                          const std::vector<std::uint8_t>& salient, MatrixRef target) {
  const Index R = target.rows(), C = target.cols();
  out.row_scales.assign(static_cast<std::size_t>(R), 0.0f);
  out.row_offsets.assign(1, 0);
  out.values.clear();
  out.columns.clear();
  for (Index r = 0; r < R; ++r) {
    float m = 0.0f;
    for (Index c = 0; c < C; ++c) {
      if (salient[static_cast<std::size_t>(r * C + c)]) m = std::max(m, std::fabs(target(r, c) - out.binary.value(r, c)));
    }
    const float d = m > 0.0f ? detail::fp16_scale(where, m / 127.0f) : 0.0f;
    out.row_scales[static_cast<std::size_t>(r)] = d;
    for (Index c = 0; c < C; ++c) {
      if (!salient[static_cast<std::size_t>(r * C + c)]) continue;
      const float q = d > 0.0f ? std::nearbyint((target(r, c) - out.binary.value(r, c)) / d) : 0.0f;
      out.values.push_back(static_cast<std::int8_t>(std::clamp(q, -127.0f, 127.0f)));
      if (out.storage == SalientStorage::SparseList) out.columns.push_back(static_cast<std::uint16_t>(c));
    }
    if (out.storage == SalientStorage::SparseList) out.row_offsets.push_back(static_cast<std::uint32_t>(out.values.size()));
  }
  if (out.storage == SalientStorage::ChannelMask) out.row_offsets.clear();
}

}  // namespace detail

/// Quantizes W: salient selection, binary part fitted without the salient weights, 8-bit
/// residual correction at the salient positions. Throws qtl::Error on bad shapes, non-finite
/// values, a fraction outside [0, 1) or more than 65535 columns. (GPTQ with error feedback over
/// the binary part: qtl/calib/gptq_partial_binary.hpp.)
[[nodiscard]] inline PartialBinaryMatrix quantize_partial_binary(const Granularity& granularity, MatrixRef w,
                                                                 const PartialBinaryOptions& opt = {}) {
  constexpr std::string_view kWhere = "quantize_partial_binary";
  const RowMatrixXf imp = detail::partial_binary_importance(kWhere, w, opt);
  PartialBinaryMatrix out;
  const std::vector<std::uint8_t> salient = detail::partial_binary_salient(w, imp, opt, out);

  // binary part: salient weights take no part in the alpha fit
  QuantizeOptions qopt;
  qopt.importance = imp;
  for (std::size_t i = 0; i < salient.size(); ++i) {
    if (salient[i]) qopt.importance.data()[i] = 0.0f;
  }
  out.binary = quantize_matrix(Binary<>{}, granularity, w, qopt);
  detail::add_partial_binary_correction(kWhere, out, salient, w);
  return out;
}

namespace detail {

/// The checks both forms share: one row scale per row, and the sparse list (row offsets from 0,
/// non-decreasing, ending at the entry count; column indices < cols, ascending within a row)
/// or, for a channel mask, rows x channels values and no list.
inline void check_partial_binary_lists(std::string_view where, Index rows, Index cols, SalientStorage storage,
                                       std::size_t n_row_scales, const std::vector<std::uint32_t>& row_offsets,
                                       const std::vector<std::uint16_t>& columns, std::size_t n_values,
                                       std::size_t n_channels) {
  if (cols > 65535) fail(where, ": at most 65535 columns (16-bit column indices), got ", cols);
  if (n_row_scales != static_cast<std::size_t>(rows)) fail(where, ": ", n_row_scales, " row scales for ", rows, " rows");
  if (storage == SalientStorage::SparseList) {
    if (row_offsets.size() != static_cast<std::size_t>(rows) + 1) {
      fail(where, ": ", row_offsets.size(), " row offsets for ", rows, " rows (expected rows + 1)");
    }
    if (row_offsets.front() != 0) fail(where, ": row offsets must start at 0, got ", row_offsets.front());
    if (row_offsets.back() != n_values || columns.size() != n_values) {
      fail(where, ": the row offsets end at ", row_offsets.back(), " but there are ", columns.size(),
           " column indices and ", n_values, " values");
    }
    for (Index r = 0; r < rows; ++r) {
      const std::uint32_t b = row_offsets[static_cast<std::size_t>(r)], e = row_offsets[static_cast<std::size_t>(r) + 1];
      if (e < b) fail(where, ": row offsets decrease at row ", r, " (", b, " then ", e, ")");
      for (std::uint32_t i = b; i < e; ++i) {
        if (columns[i] >= cols) fail(where, ": column index ", columns[i], " of row ", r, " is out of range (", cols, " columns)");
        if (i > b && columns[i] <= columns[i - 1]) {
          fail(where, ": column indices of row ", r, " are not ascending (", columns[i - 1], " then ", columns[i], ")");
        }
      }
    }
  } else if (storage == SalientStorage::ChannelMask) {
    if (!row_offsets.empty() || !columns.empty()) {
      fail(where, ": a channel-mask matrix has no sparse list, got ", row_offsets.size(), " row offsets and ",
           columns.size(), " column indices");
    }
    if (n_values != static_cast<std::size_t>(rows) * n_channels) {
      fail(where, ": ", n_values, " values for ", rows, " rows x ", n_channels, " salient channels");
    }
  } else {
    fail(where, ": unknown salient storage ", static_cast<int>(storage));
  }
}

}  // namespace detail

/// Throws qtl::Error naming the first inconsistency of a partial-binary matrix built or read
/// elsewhere: the binary part's codes and parameter sets, the row scales (one finite value >= 0
/// per row), the sparse list, or the channels (< cols, strictly ascending) and their values.
inline void check_partial_binary(std::string_view where, const PartialBinaryMatrix& m) {
  const GroupLayout& l = m.binary.layout;
  if (l.rows <= 0 || l.cols <= 0 || static_cast<Index>(m.binary.codes.size()) != l.rows * l.cols ||
      static_cast<Index>(m.binary.params.size()) != l.num_param_sets()) {
    fail(where, ": the binary part is inconsistent: ", l.rows, "x", l.cols, " with ", m.binary.codes.size(),
         " codes and ", m.binary.params.size(), " parameter sets (expected ", l.num_param_sets(), ")");
  }
  detail::check_partial_binary_lists(where, m.rows(), m.cols(), m.storage, m.row_scales.size(), m.row_offsets,
                                     m.columns, m.values.size(), m.channels.size());
  for (std::size_t r = 0; r < m.row_scales.size(); ++r) {
    if (!std::isfinite(m.row_scales[r]) || m.row_scales[r] < 0.0f) {
      fail(where, ": row scale ", m.row_scales[r], " of row ", r, " is not a finite value >= 0");
    }
  }
  if (m.storage == SalientStorage::SparseList && !m.channels.empty()) {
    fail(where, ": a sparse-list matrix has no salient channels, got ", m.channels.size());
  }
  for (std::size_t j = 0; j < m.channels.size(); ++j) {
    if (m.channels[j] >= m.cols()) fail(where, ": salient channel ", m.channels[j], " is out of range (", m.cols(), " columns)");
    if (j > 0 && m.channels[j] <= m.channels[j - 1]) {
      fail(where, ": salient channels are not ascending (", m.channels[j - 1], " then ", m.channels[j], ")");
    }
  }
}

/// The correction C(r, c) of the salient entries, for each (r, c, value) in row order.
template <class F>
void for_each_correction(const PartialBinaryMatrix& m, F&& f) {
  if (m.storage == SalientStorage::SparseList) {
    for (Index r = 0; r < m.rows(); ++r) {
      for (std::uint32_t i = m.row_offsets[static_cast<std::size_t>(r)]; i < m.row_offsets[static_cast<std::size_t>(r) + 1]; ++i) {
        f(r, static_cast<Index>(m.columns[i]), m.row_scales[static_cast<std::size_t>(r)] * static_cast<float>(m.values[i]));
      }
    }
  } else {
    const std::size_t k = m.channels.size();
    for (Index r = 0; r < m.rows(); ++r) {
      for (std::size_t j = 0; j < k; ++j) {
        f(r, static_cast<Index>(m.channels[j]),
          m.row_scales[static_cast<std::size_t>(r)] * static_cast<float>(m.values[static_cast<std::size_t>(r) * k + j]));
      }
    }
  }
}

/// W_hat = B + C.
[[nodiscard]] inline RowMatrixXf dequantize(const PartialBinaryMatrix& m) {
  check_partial_binary("dequantize", m);
  RowMatrixXf out = dequantize(m.binary);
  for_each_correction(m, [&](Index r, Index c, float v) { out(r, c) += v; });
  return out;
}

namespace detail {
/// bits_per_weight below, for a matrix its caller has checked already.
[[nodiscard]] inline double partial_binary_bits_per_weight(const PartialBinaryMatrix& m) {
  const double n = static_cast<double>(m.rows()) * static_cast<double>(m.cols());
  double bits = bits_per_weight(m.binary) * n + 16.0 * static_cast<double>(m.rows());
  if (m.storage == SalientStorage::SparseList) {
    bits += 24.0 * static_cast<double>(m.values.size()) + 32.0 * static_cast<double>(m.rows() + 1);
  } else {
    bits += static_cast<double>(m.cols()) + 8.0 * static_cast<double>(m.values.size());
  }
  return bits / n;
}
}  // namespace detail

/// Stored bits per weight: signs + alphas, fp16 row scales, and the sparse list or the mask
/// with its 8-bit block (see the header comment).
[[nodiscard]] inline double bits_per_weight(const PartialBinaryMatrix& m) {
  check_partial_binary("bits_per_weight", m);
  return detail::partial_binary_bits_per_weight(m);
}

}  // namespace qtl
