// qtl/core/validate.hpp — argument checks used by every public entry point.
//
// Each helper takes `where` (the public function's name) and `what` (the argument's name) so
// the message reads "where: what ...". They are for cold paths only.
#pragma once

#include <cmath>
#include <cstddef>
#include <span>
#include <string_view>

#include "qtl/core/error.hpp"
#include "qtl/core/types.hpp"

namespace qtl {

/// Throws unless every element of the dense expression is finite; names the first bad entry.
template <class Derived>
void require_finite(std::string_view where, std::string_view what,
                    const Eigen::DenseBase<Derived>& m) {
  for (Index r = 0; r < m.rows(); ++r) {
    for (Index c = 0; c < m.cols(); ++c) {
      const auto v = m(r, c);
      if (!std::isfinite(static_cast<double>(v))) {
        fail(where, ": ", what, " must be finite, got ", v, " at (", r, ", ", c, ")");
      }
    }
  }
}

/// Throws unless every value in the span is finite; names the first bad index.
inline void require_finite(std::string_view where, std::string_view what,
                           std::span<const float> values) {
  for (std::size_t i = 0; i < values.size(); ++i) {
    if (!std::isfinite(values[i])) {
      fail(where, ": ", what, " must be finite, got ", values[i], " at index ", i);
    }
  }
}

/// Throws if the matrix has zero rows or zero columns.
inline void require_nonempty(std::string_view where, std::string_view what, Index rows,
                             Index cols) {
  if (rows <= 0 || cols <= 0) {
    fail(where, ": ", what, " must be non-empty, got ", rows, "x", cols);
  }
}

/// Throws unless rows x cols equals the expected shape.
inline void require_shape(std::string_view where, std::string_view what, Index rows, Index cols,
                          Index expected_rows, Index expected_cols) {
  if (rows != expected_rows || cols != expected_cols) {
    fail(where, ": ", what, " must be ", expected_rows, "x", expected_cols, ", got ", rows, "x",
         cols);
  }
}

/// Throws unless n equals the expected size.
inline void require_size(std::string_view where, std::string_view what, Index n, Index expected) {
  if (n != expected) fail(where, ": ", what, " must have size ", expected, ", got ", n);
}

/// Throws unless lo <= value <= hi.
template <class T>
void require_range(std::string_view where, std::string_view what, T value, T lo, T hi) {
  if (!(value >= lo && value <= hi)) {
    fail(where, ": ", what, " must be in [", lo, ", ", hi, "], got ", value);
  }
}

/// Throws unless every value is >= 0 and finite (importance weights, statistics).
template <class Derived>
void require_nonnegative(std::string_view where, std::string_view what,
                         const Eigen::DenseBase<Derived>& m) {
  require_finite(where, what, m);
  for (Index r = 0; r < m.rows(); ++r) {
    for (Index c = 0; c < m.cols(); ++c) {
      if (m(r, c) < 0) {
        fail(where, ": ", what, " must be >= 0, got ", m(r, c), " at (", r, ", ", c, ")");
      }
    }
  }
}

/// Which importance weights a quantize_* call was given.
struct ImportanceGiven {
  bool column = false;   ///< options.column_importance: one weight per input column
  bool element = false;  ///< options.importance: one weight per matrix element
};

/// The importance options every quantize_* function takes (QuantizeOptions, the VQ and
/// partial-binary options: fields column_importance and importance), checked against a
/// rows x cols matrix: each empty, or of the right size with finite values >= 0.
template <class Options>
ImportanceGiven require_importance(std::string_view where, const Options& opt, Index rows, Index cols) {
  const ImportanceGiven given{opt.column_importance.size() > 0, opt.importance.size() > 0};
  if (given.column) {
    require_size(where, "column_importance", opt.column_importance.size(), cols);
    require_nonnegative(where, "column_importance", opt.column_importance);
  }
  if (given.element) {
    require_shape(where, "importance", opt.importance.rows(), opt.importance.cols(), rows, cols);
    require_nonnegative(where, "importance", opt.importance);
  }
  return given;
}

}  // namespace qtl
