#include <gtest/gtest.h>
#include <qtl/quant/quantize_matrix.hpp>
#include <qtl/quant/ternary.hpp>

#include <cmath>
#include <limits>
#include <vector>

#include "quant/family_test_util.hpp"
#include "test_util.hpp"

namespace {

using qtl::Ternary;
using qtl::TernaryRule;

TEST(Ternary, AbsMeanIsBitNetRule) {
  const auto g = qtl::test::gaussian(1, 96, 4, 0.1f);
  std::span<const float> x(g.data(), 96);
  const Ternary q(TernaryRule::AbsMean);
  const auto p = q.fit(x, {});
  double s = 0.0;
  for (float v : x) s += std::fabs(v);
  EXPECT_EQ(p.scale, qtl::detail::round_to_half(static_cast<float>(s / 96)));
  for (float v : x) {
    // RoundClip(x / alpha, -1, 1)
    const float t = std::clamp(std::nearbyint(v / p.scale), -1.0f, 1.0f);
    if (std::fabs(std::fabs(v / p.scale) - 0.5f) > 1e-6f) {
      EXPECT_EQ(q.decode(p, q.encode(p, v)), t * p.scale);
    }
  }
  qtl::test::expect_nearest_levels(q, p, x);
}

TEST(Ternary, MseThresholdSearchNeverWorseThanAbsMean) {
  int strictly_better = 0;
  for (unsigned seed = 0; seed < 40; ++seed) {
    auto g = seed % 2 ? qtl::test::gaussian(1, 64, seed, 0.1f) : qtl::test::uniform_random(1, 64, seed, -1, 1);
    if (seed % 5 == 0) g(0, 0) = 3.0f;  // an outlier
    const auto iw = qtl::test::uniform_random(1, 64, seed + 99, 0.0f, 1.0f);
    std::span<const float> x(g.data(), 64), imp(iw.data(), 64);
    for (bool weighted : {false, true}) {
      std::span<const float> w = weighted ? imp : std::span<const float>{};
      const Ternary am(TernaryRule::AbsMean), mse(TernaryRule::MseOptimal);
      const auto pa = am.fit(x, w), pm = mse.fit(x, w);
      const double ea = qtl::detail::weighted_sse(am, pa, x, w), em = qtl::detail::weighted_sse(mse, pm, x, w);
      EXPECT_LE(em, ea) << seed;
      if (em < ea * 0.999) ++strictly_better;
      qtl::test::expect_nearest_levels(mse, pm, x);
      // brute force over every support threshold and fp16 alpha grid near the optimum
      double brute = std::numeric_limits<double>::infinity();
      for (int i = 0; i < 64; ++i) {
        const double th = std::fabs(x[i]);
        double A = 0, B = 0;
        for (int j = 0; j < 64; ++j) {
          if (std::fabs(x[j]) >= th) {
            A += (weighted ? w[j] : 1.0) * std::fabs(x[j]);
            B += weighted ? w[j] : 1.0;
          }
        }
        if (B > 0) brute = std::min(brute, qtl::detail::weighted_sse(mse, Ternary::Params{qtl::detail::round_to_half(float(A / B))}, x, w));
      }
      EXPECT_LE(em, brute * (1 + 1e-9)) << seed;
    }
  }
  EXPECT_GT(strictly_better, 20);  // the search matters, it is not just absmean again
}

TEST(Ternary, BadInput) {
  const Ternary q;
  EXPECT_THROW((void)q.fit(std::vector<float>{}, {}), qtl::Error);
  const std::vector<float> inf = {0.1f, std::numeric_limits<float>::infinity()};
  EXPECT_THROW((void)q.fit(inf, {}), qtl::Error);
  EXPECT_THROW((void)Ternary(TernaryRule::MseOptimal).fit(inf, {}), qtl::Error);
  const std::vector<float> zeros(5, 0.0f);
  EXPECT_EQ(q.fit(zeros, {}).scale, 0.0f);
}

}  // namespace
