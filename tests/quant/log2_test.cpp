#include <gtest/gtest.h>
#include <qtl/quant/log2.hpp>
#include <qtl/quant/uniform.hpp>

#include <cmath>
#include <limits>
#include <vector>

#include "quant/family_test_util.hpp"
#include "test_util.hpp"

namespace {

using qtl::Log2;
using qtl::Log2Base;

template <class Q>
void nearest_on_random_groups(const Q& q) {
  for (unsigned seed = 0; seed < 10; ++seed) {
    const auto w = qtl::test::gaussian(1, 64, seed + 7, 0.05f);
    std::span<const float> x(w.data(), 64);
    for (bool search : {false, true}) {
      const qtl::FitOptions opt = search ? qtl::FitOptions::searched() : qtl::FitOptions{};
      const auto p = q.fit(x, {}, opt);
      qtl::test::expect_nearest_levels(q, p, x);
      // values outside the fitted range and exactly on levels too
      std::vector<float> extra = {0.0f, -0.0f, 3.0f * p.scale, -5.0f * p.scale, 1e-30f, -1e-30f};
      for (int c = 0; c < Q::kCodes; ++c) extra.push_back(q.decode(p, static_cast<std::uint8_t>(c)));
      qtl::test::expect_nearest_levels(q, p, extra);
    }
  }
}

TEST(Log2, EncodeGivesTheNearestLevel) {
  nearest_on_random_groups(Log2<2>{});
  nearest_on_random_groups(Log2<3>{});
  nearest_on_random_groups(Log2<4>{});
  nearest_on_random_groups(Log2<6>{});
  nearest_on_random_groups(Log2<3, Log2Base::Sqrt2>{});
  nearest_on_random_groups(Log2<4, Log2Base::Sqrt2>{});
  nearest_on_random_groups(Log2<8, Log2Base::Sqrt2>{});
  nearest_on_random_groups(qtl::PowerGrid<3>{1.5f});
  nearest_on_random_groups(qtl::PowerGrid<4>{0.7f});
  nearest_on_random_groups(qtl::PowerGrid<4>{2.5f});
}

TEST(Log2, LevelsAreExactPowersOfTwoTimesTheScale) {
  using Q = Log2<4>;
  const auto w = qtl::test::gaussian(1, 32, 3, 0.1f);
  const auto p = Q{}.fit(std::span<const float>(w.data(), 32), {});
  EXPECT_EQ(p.scale, qtl::detail::round_to_half(p.scale));
  for (int c = 0; c < Q::kCodes; ++c) {
    const int m = c & Q::kMaxMagnitude;
    const float v = Q::decode(p, static_cast<std::uint8_t>(c));
    if (m == 0) {
      EXPECT_EQ(v, 0.0f);
      continue;
    }
    const float expected = std::ldexp(p.scale, -(Q::kMaxMagnitude - m));
    EXPECT_EQ(std::fabs(v), expected) << "code " << c;  // bit-exact power of two
    EXPECT_EQ(v < 0.0f, c >= 8);
    int e = 0;
    EXPECT_EQ(std::frexp(v / p.scale, &e), c >= 8 ? -0.5f : 0.5f);  // the ratio is +-2^k
  }
}

TEST(Log2, Sqrt2LevelsArePowersOfSqrt2TimesTheScale) {
  using Q = Log2<4, Log2Base::Sqrt2>;
  const Q::Params p{0.375f};
  for (int m = 1; m <= Q::kMaxMagnitude; ++m) {
    const int k = Q::kMaxMagnitude - m;
    const double expected = 0.375 * std::pow(std::sqrt(2.0), -k);
    EXPECT_NEAR(Q::decode(p, static_cast<std::uint8_t>(m)), expected, expected * 1e-7) << k;
    if (k % 2 == 0) {
      EXPECT_EQ(Q::decode(p, static_cast<std::uint8_t>(m)), std::ldexp(0.375f, -k / 2));
    }
    EXPECT_EQ(Q::decode(p, static_cast<std::uint8_t>(m | 8)), -Q::decode(p, static_cast<std::uint8_t>(m)));
  }
}

TEST(Log2, ScaleSearchNeverIncreasesTheError) {
  for (unsigned seed = 0; seed < 20; ++seed) {
    const auto w = qtl::test::gaussian(1, 128, seed, 0.02f);
    std::span<const float> x(w.data(), 128);
    const Log2<3> q;
    const qtl::FitOptions plain;
    const qtl::FitOptions search = qtl::FitOptions::searched();
    const double e0 = qtl::detail::weighted_sse(q, q.fit(x, {}, plain), x, {});
    const double e1 = qtl::detail::weighted_sse(q, q.fit(x, {}, search), x, {});
    EXPECT_LE(e1, e0);
  }
}

TEST(PowerGrid, GammaOneIsTheSymmetricUniformGrid) {
  const qtl::PowerGrid<4> q(1.0f);
  const qtl::PowerGrid<4>::Params p{0.5f};
  for (int c = 0; c < 15; ++c) {
    EXPECT_FLOAT_EQ(q.decode(p, static_cast<std::uint8_t>(c)), 0.5f * float(c - 7) / 7.0f);
  }
  EXPECT_EQ(q.decode(p, 15), 0.0f);
}

TEST(PowerGrid, ExponentSearchBeatsOrMatchesEveryGridPoint) {
  const auto w = qtl::test::gaussian(16, 64, 11, 0.05f);
  const auto fit = qtl::fit_power_grid<3>(qtl::PerGroup{32}, w);
  for (float g : qtl::default_power_gammas()) {
    const auto m = qtl::quantize_matrix(qtl::PowerGrid<3>{g}, qtl::PerGroup{32}, w);
    EXPECT_LE(fit.weighted_error, qtl::test::matrix_sse(m, w) * (1 + 1e-12)) << g;
  }
  // Gaussian weights want levels crowded near zero: gamma > 1 wins over uniform
  EXPECT_GT(fit.quantizer.gamma(), 1.0f);
  EXPECT_GT(fit.bits_per_weight(), 3.5);
}

TEST(Log2, BadInput) {
  const Log2<4> q;
  const std::vector<float> empty;
  EXPECT_THROW((void)q.fit(empty, {}), qtl::Error);
  const std::vector<float> nan = {1.0f, std::numeric_limits<float>::quiet_NaN()};
  EXPECT_THROW((void)q.fit(nan, {}), qtl::Error);
  const std::vector<float> inf = {1.0f, std::numeric_limits<float>::infinity()};
  EXPECT_THROW((void)q.fit(inf, {}), qtl::Error);
  const std::vector<float> x = {1.0f, 2.0f};
  const std::vector<float> bad_imp = {1.0f, -1.0f};
  EXPECT_THROW((void)q.fit(x, bad_imp), qtl::Error);
  EXPECT_THROW((void)q.fit(x, std::vector<float>{1.0f}), qtl::Error);
  auto name = [](auto q) { return q.name(); };
  EXPECT_THROW((void)qtl::visit_log2(1, Log2Base::Two, name), qtl::Error);
  EXPECT_THROW((void)qtl::visit_log2(9, Log2Base::Sqrt2, name), qtl::Error);
  EXPECT_EQ(qtl::visit_log2(3, Log2Base::Sqrt2, name), "log2sqrt2-3");
  EXPECT_THROW((void)qtl::visit_power_grid(1, 1.0f, name), qtl::Error);
  EXPECT_THROW(qtl::PowerGrid<4>{0.0f}, qtl::Error);
  EXPECT_THROW(qtl::PowerGrid<4>{std::numeric_limits<float>::quiet_NaN()}, qtl::Error);
  qtl::RowMatrixXf w = qtl::test::gaussian(4, 8, 1);
  w(2, 3) = std::numeric_limits<float>::infinity();
  EXPECT_THROW((void)qtl::quantize_matrix(q, qtl::PerGroup{4}, w), qtl::Error);
  EXPECT_THROW((void)qtl::quantize_matrix(q, qtl::PerGroup{0}, qtl::test::gaussian(4, 8, 1)), qtl::Error);
}

}  // namespace
