// qtl/quant/granularity.hpp — which weights share one set of quantization parameters.
//
// Weights are [rows x cols] = [out x in]. A group is a run of consecutive columns of one row:
//   PerTensor     one parameter set for the whole matrix,
//   PerRow        one per output row,
//   PerGroup{G}   one per G consecutive inputs of a row. G need not divide cols: real models
//                 have rows like 172 = 4 x 43, so the last group of a row may be shorter
//                 (cols - G*floor((cols-1)/G) columns), as in GPTQ.
#pragma once

#include <algorithm>
#include <string>
#include <string_view>
#include <variant>

#include "qtl/core/error.hpp"
#include "qtl/core/types.hpp"

namespace qtl {

struct PerTensor {};
struct PerRow {};
struct PerGroup {
  Index size = 128;
};

using Granularity = std::variant<PerTensor, PerRow, PerGroup>;

[[nodiscard]] inline std::string to_string(const Granularity& g) {
  if (std::holds_alternative<PerTensor>(g)) return "per-tensor";
  if (std::holds_alternative<PerRow>(g)) return "per-row";
  return str_cat("group ", std::get<PerGroup>(g).size);
}

/// Where each weight's parameters live, resolved for one matrix shape.
/// Parameter sets are stored row-major: set (r, g) at r * groups_per_row + g; PerTensor has one.
struct GroupLayout {
  Index rows = 0;
  Index cols = 0;
  Index group_size = 0;  ///< columns per group (the last group of a row may be shorter)
  bool per_tensor = false;

  [[nodiscard]] Index groups_per_row() const noexcept {
    return group_size == 0 ? 0 : (cols + group_size - 1) / group_size;
  }
  [[nodiscard]] Index num_param_sets() const noexcept {
    return per_tensor ? 1 : rows * groups_per_row();
  }
  [[nodiscard]] Index param_index(Index r, Index c) const noexcept {
    return per_tensor ? 0 : r * groups_per_row() + c / group_size;
  }
  /// First column of group g (within a row) and its width.
  [[nodiscard]] Index group_begin(Index g) const noexcept { return g * group_size; }
  [[nodiscard]] Index group_width(Index g) const noexcept {
    const Index end = std::min(cols, (g + 1) * group_size);
    return end - g * group_size;
  }
  friend bool operator==(const GroupLayout&, const GroupLayout&) = default;
};

/// Resolves a granularity for a rows x cols matrix; throws qtl::Error on a bad group size.
[[nodiscard]] inline GroupLayout make_group_layout(const Granularity& g, Index rows, Index cols,
                                                   std::string_view where = "make_group_layout") {
  if (rows <= 0 || cols <= 0) fail(where, ": matrix must be non-empty, got ", rows, "x", cols);
  GroupLayout layout{rows, cols, cols, false};
  if (std::holds_alternative<PerTensor>(g)) {
    layout.per_tensor = true;
  } else if (const auto* pg = std::get_if<PerGroup>(&g)) {
    if (pg->size < 1) fail(where, ": group size must be >= 1, got ", pg->size);
    layout.group_size = std::min(pg->size, cols);
  }
  return layout;
}

/// A layout read back from stored parts (a packed matrix's from_parts): rows and cols >= 1 and,
/// unless per tensor, a group size in [1, cols]; returned with a per-tensor layout's group size
/// set to cols, as make_group_layout gives it. Throws qtl::Error naming the bad value.
[[nodiscard]] inline GroupLayout checked_stored_layout(std::string_view where, GroupLayout layout) {
  if (layout.rows < 1 || layout.cols < 1) fail(where, ": empty ", layout.rows, "x", layout.cols, " matrix");
  if (layout.per_tensor) {
    layout.group_size = layout.cols;
  } else if (layout.group_size < 1 || layout.group_size > layout.cols) {
    fail(where, ": group size ", layout.group_size, " for ", layout.cols, " columns");
  }
  return layout;
}

}  // namespace qtl
