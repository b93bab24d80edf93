// Shared checks for the scalar quantizer families' tests.
#pragma once

#include <gtest/gtest.h>
#include <qtl/quant/quantize_matrix.hpp>

#include <cmath>
#include <cstdint>
#include <limits>
#include <span>

namespace qtl::test {

/// decode(encode(x)) is a nearest level: no code decodes closer to x (brute force).
template <class Q>
void expect_nearest_levels(const Q& q, const typename Q::Params& p, std::span<const float> x) {
  for (float v : x) {
    const auto code = q.encode(p, v);
    ASSERT_LT(code, 1 << Q::kBits) << q.name();
    const float err = std::fabs(v - q.decode(p, code));
    float best = std::numeric_limits<float>::infinity();
    for (int c = 0; c < (1 << Q::kBits); ++c) {
      best = std::min(best, std::fabs(v - q.decode(p, static_cast<std::uint8_t>(c))));
    }
    // The same level's distance may differ in the last bits between the two call sites: GCC
    // contracts |v - s * t[k]| into an FMA in one inlined copy and not in the other (-march=native
    // without -ffp-contract=off, TOOLCHAIN.md): by at most a few ulps of |v|. A wrong level is
    // off by a large part of a level spacing.
    const float slack = 8.0f * std::numeric_limits<float>::epsilon() * std::fabs(v) + 1e-12f;
    ASSERT_LE(err, best + slack) << q.name() << " x=" << v << " code=" << int(code);
  }
}

/// sum (w - w_hat)^2 of a quantized matrix against W.
template <class Q>
double matrix_sse(const QuantizedMatrix<Q>& m, MatrixRef w) {
  double e = 0.0;
  for (Index r = 0; r < w.rows(); ++r) {
    for (Index c = 0; c < w.cols(); ++c) {
      const double d = static_cast<double>(w(r, c)) - m.value(r, c);
      e += d * d;
    }
  }
  return e;
}

}  // namespace qtl::test
