#include <gtest/gtest.h>
#include <qtl/quant/binary.hpp>
#include <qtl/quant/quantize_matrix.hpp>

#include <cmath>
#include <limits>
#include <vector>

#include "quant/family_test_util.hpp"
#include "test_util.hpp"

namespace {

// sum w (x - alpha sign(x))^2 for a given alpha
double binary_error(std::span<const float> x, std::span<const float> w, double alpha) {
  double e = 0.0;
  for (std::size_t i = 0; i < x.size(); ++i) {
    const double d = x[i] - (x[i] >= 0 ? alpha : -alpha);
    e += (w.empty() ? 1.0 : w[i]) * d * d;
  }
  return e;
}

TEST(Binary, AlphaIsTheClosedFormOptimum) {
  for (unsigned seed = 0; seed < 10; ++seed) {
    const auto g = qtl::test::gaussian(1, 100, seed, 0.1f);
    const auto iw = qtl::test::uniform_random(1, 100, seed + 50, 0.0f, 3.0f);
    std::span<const float> x(g.data(), 100), imp(iw.data(), 100);
    double sa = 0.0, swa = 0.0, sw = 0.0;
    for (int i = 0; i < 100; ++i) {
      sa += std::fabs(x[i]);
      swa += imp[i] * std::fabs(x[i]);
      sw += imp[i];
    }
    const qtl::Binary<> q;
    const auto p = q.fit(x, {});
    EXPECT_EQ(p.scale, qtl::detail::round_to_half(static_cast<float>(sa / 100)));
    const auto pw = q.fit(x, imp);
    EXPECT_EQ(pw.scale, qtl::detail::round_to_half(static_cast<float>(swa / sw)));
    // and it is the minimizer: moving alpha either way increases the (weighted) error
    const double a = swa / sw;
    EXPECT_LT(binary_error(x, imp, a), binary_error(x, imp, a * 1.01));
    EXPECT_LT(binary_error(x, imp, a), binary_error(x, imp, a * 0.99));
    qtl::test::expect_nearest_levels(q, p, x);
  }
}

TEST(Binary, MeanShiftLevelsAndNearest) {
  const auto g = qtl::test::gaussian(1, 64, 3, 0.1f);
  std::vector<float> x(g.data(), g.data() + 64);
  for (auto& v : x) v += 0.3f;  // a shifted group: the shift must find it
  const qtl::Binary<true> q;
  const auto p = q.fit(x, {});
  double mu = 0.0;
  for (float v : x) mu += v;
  mu /= 64;
  double a = 0.0;
  for (float v : x) a += std::fabs(v - mu);
  a /= 64;
  EXPECT_EQ(p.lo, qtl::detail::round_to_half(static_cast<float>(mu - a)));
  EXPECT_EQ(p.hi, qtl::detail::round_to_half(static_cast<float>(mu + a)));
  qtl::test::expect_nearest_levels(q, p, x);
  const auto m0 = qtl::quantize_matrix(qtl::Binary<false>{}, qtl::PerRow{}, Eigen::Map<qtl::RowMatrixXf>(x.data(), 1, 64));
  const auto m1 = qtl::quantize_matrix(q, qtl::PerRow{}, Eigen::Map<qtl::RowMatrixXf>(x.data(), 1, 64));
  EXPECT_LT(qtl::test::matrix_sse(m1, Eigen::Map<qtl::RowMatrixXf>(x.data(), 1, 64)),
            0.5 * qtl::test::matrix_sse(m0, Eigen::Map<qtl::RowMatrixXf>(x.data(), 1, 64)));
}

TEST(ResidualBinary, TwoPlanesNearestAndBetterThanOne) {
  for (unsigned seed = 0; seed < 10; ++seed) {
    const auto g = qtl::test::gaussian(1, 128, seed, 0.05f);
    std::span<const float> x(g.data(), 128);
    const qtl::ResidualBinary q;
    const auto p = q.fit(x, {}, qtl::FitOptions{.refine_iterations = 2});
    qtl::test::expect_nearest_levels(q, p, x);
    // the levels are a two-plane decomposition: l[b1 | b2<<1] = mu + a1 s1 + a2 s2 (fp16-rounded)
    const double mu = 0.25 * (p.levels[0] + p.levels[1] + p.levels[2] + p.levels[3]);
    const double a1 = 0.25 * (p.levels[1] - p.levels[0] + p.levels[3] - p.levels[2]);
    const double a2 = 0.25 * (p.levels[2] - p.levels[0] + p.levels[3] - p.levels[1]);
    EXPECT_GT(a1, 0);
    EXPECT_GE(a1, a2 * (1 - 1e-3));
    for (int c = 0; c < 4; ++c) {
      EXPECT_NEAR(p.levels[c], mu + ((c & 1) ? a1 : -a1) + ((c & 2) ? a2 : -a2), 1e-3 * a1);
    }
    // greedy planes (the plain fit) are never better than the refined fit
    const qtl::FitOptions greedy;
    EXPECT_LE(qtl::detail::weighted_sse(q, p, x, {}),
              qtl::detail::weighted_sse(q, q.fit(x, {}, greedy), x, {}));
    const qtl::Binary<true> one;
    EXPECT_LT(qtl::detail::weighted_sse(q, p, x, {}), 0.5 * qtl::detail::weighted_sse(one, one.fit(x, {}), x, {}));
  }
}

TEST(Binary, BadInputAndZeroGroups) {
  const std::vector<float> empty;
  EXPECT_THROW((void)qtl::Binary<>{}.fit(empty, {}), qtl::Error);
  EXPECT_THROW((void)qtl::ResidualBinary{}.fit(empty, {}), qtl::Error);
  const std::vector<float> nan = {0.1f, std::numeric_limits<float>::quiet_NaN()};
  EXPECT_THROW((void)qtl::Binary<true>{}.fit(nan, {}), qtl::Error);
  EXPECT_THROW((void)qtl::ResidualBinary{}.fit(nan, {}), qtl::Error);
  const std::vector<float> zeros(8, 0.0f);
  const auto p = qtl::Binary<>{}.fit(zeros, {});
  EXPECT_EQ(p.scale, 0.0f);  // all-zero group decodes exactly
  EXPECT_EQ(qtl::Binary<>::decode(p, qtl::Binary<>::encode(p, 0.0f)), 0.0f);
  const std::vector<float> big = {1e6f, -1e6f};
  EXPECT_THROW((void)qtl::Binary<>{}.fit(big, {}), qtl::Error);  // alpha beyond fp16
}

}  // namespace
