#include <gtest/gtest.h>
#include <qtl/kernels.hpp>

#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "test_util.hpp"

namespace {

using qtl::Mode;

template <class Q>
void expect_uniform_properties(const Q& q, std::span<const float> x) {
  const auto p = q.fit(x, {});
  const float lo = std::min(q.decode(p, 0), q.decode(p, Q::kMaxCode));
  const float hi = std::max(q.decode(p, 0), q.decode(p, Q::kMaxCode));
  for (float v : x) {
    const auto code = q.encode(p, v);
    ASSERT_LE(code, Q::kMaxCode);
    const float err = std::fabs(v - q.decode(p, code));
    if (v >= lo && v <= hi) {
      // inside the clip range the error is at most half a step (plus float rounding)
      ASSERT_LE(err, 0.5f * std::fabs(p.scale) * (1.0f + 1e-5f)) << q.name() << " x=" << v;
    }
    // and the code is the nearest level (brute force over every code)
    float best = std::numeric_limits<float>::infinity();
    for (int c = 0; c <= Q::kMaxCode; ++c) {
      best = std::min(best, std::fabs(v - q.decode(p, static_cast<std::uint8_t>(c))));
    }
    ASSERT_LE(err, best * (1.0f + 1e-6f) + 1e-12f) << q.name() << " x=" << v;
  }
}

template <int B>
void properties_for_bits() {
  for (unsigned seed = 0; seed < 20; ++seed) {
    const auto w = qtl::test::gaussian(1, 64, seed + 100 * B, 0.05f);
    std::span<const float> x(w.data(), 64);
    expect_uniform_properties(qtl::Uniform<B, Mode::Asymmetric>{}, x);
    expect_uniform_properties(qtl::Uniform<B, Mode::Symmetric>{}, x);
  }
}

TEST(Uniform, CodesInRangeHalfStepErrorNearestLevel) {
  properties_for_bits<2>();
  properties_for_bits<3>();
  properties_for_bits<4>();
  properties_for_bits<5>();
  properties_for_bits<8>();
}

TEST(Uniform, ZeroIsExactInAsymmetricMode) {
  for (unsigned seed = 0; seed < 50; ++seed) {
    // shifted data: all positive or all negative groups are the hard case
    auto w = qtl::test::uniform_random(1, 33, seed, 0.1f + seed * 0.01f, 2.0f + seed * 0.1f);
    if (seed % 2) w = -w;
    std::span<const float> x(w.data(), 33);
    qtl::Uniform<3> q;
    const auto p = q.fit(x, {});
    EXPECT_EQ(q.decode(p, q.encode(p, 0.0f)), 0.0f) << "seed " << seed;
    qtl::Uniform<4> q4;
    const auto p4 = q4.fit(x, {});
    EXPECT_EQ(q4.decode(p4, q4.encode(p4, 0.0f)), 0.0f) << "seed " << seed;
  }
}

TEST(Uniform, ScaleIsFp16AndZeroIsInteger) {
  const auto w = qtl::test::gaussian(1, 128, 7, 3.0f);
  const auto p = qtl::Uniform<4>{}.fit(std::span<const float>(w.data(), 128), {});
  EXPECT_EQ(p.scale, qtl::detail::round_to_half(p.scale));
  EXPECT_EQ(p.zero, std::nearbyint(p.zero));
}

TEST(Uniform, SqnrRisesAboutSixDbPerBit) {
  const auto w = qtl::test::gaussian(64, 256, 42);
  auto sqnr = [&](auto q) { return qtl::sqnr_db(w, qtl::dequantize(qtl::quantize_matrix(q, qtl::PerGroup{64}, w))); };
  const double s2 = sqnr(qtl::Uniform<2>{}), s3 = sqnr(qtl::Uniform<3>{}), s4 = sqnr(qtl::Uniform<4>{}),
               s5 = sqnr(qtl::Uniform<5>{}), s8 = sqnr(qtl::Uniform<8>{});
  // 6.02 dB per bit in the high-resolution limit; 2 bits is far from it, so check 3..8.
  EXPECT_GT(s3, s2 + 3.0);
  EXPECT_NEAR(s4 - s3, 6.02, 1.0);
  EXPECT_NEAR(s5 - s4, 6.02, 1.0);
  EXPECT_NEAR((s8 - s5) / 3.0, 6.02, 1.0);
}

template <class Q>
void clip_search_never_worse(unsigned seed0) {
  Q q;
  std::mt19937 rng(seed0);
  std::uniform_real_distribution<float> imp(0.0f, 4.0f);
  const qtl::FitOptions search = qtl::FitOptions::searched();
  qtl::FitOptions plain;  // min-max RTN
  int strictly_better = 0;
  for (unsigned seed = 0; seed < 200; ++seed) {
    // heavy-tailed groups (Student-t like) where clipping pays off
    auto w = qtl::test::gaussian(1, 32, seed0 + seed);
    for (auto& v : w.reshaped()) v = v * v * v;
    std::vector<float> weights(32);
    for (auto& v : weights) v = imp(rng);
    std::span<const float> x(w.data(), 32);
    const double e_plain = Q::weighted_error(q.fit(x, weights, plain), x, weights);
    const double e_search = Q::weighted_error(q.fit(x, weights, search), x, weights);
    ASSERT_LE(e_search, e_plain * (1.0 + 1e-12)) << q.name() << " seed " << seed;
    strictly_better += e_search < e_plain * 0.999;
  }
  EXPECT_GT(strictly_better, 50) << q.name() << ": the search should matter on heavy tails";
}

TEST(Uniform, ClipSearchNeverIncreasesWeightedError) {
  clip_search_never_worse<qtl::Uniform<2>>(1);
  clip_search_never_worse<qtl::Uniform<3>>(2);
  clip_search_never_worse<qtl::Uniform<4>>(3);
  clip_search_never_worse<qtl::Uniform<4, Mode::Symmetric>>(4);
  clip_search_never_worse<qtl::Uniform<8>>(5);
}

TEST(Uniform, ImportanceShiftsErrorAwayFromImportantElements) {
  // Columns 0..7 of every group are 100x more important. Fitting with that importance must put
  // less error on them (and more on the rest) than fitting without it.
  const auto w = qtl::test::gaussian(128, 64, 9);
  qtl::VectorXf imp = qtl::VectorXf::Ones(64);
  for (int c = 0; c < 64; c += 32) imp.segment(c, 8).setConstant(100.0f);
  qtl::QuantizeOptions with;
  with.fit = qtl::FitOptions::searched();
  with.column_importance = imp;
  qtl::QuantizeOptions without;
  without.fit = qtl::FitOptions::searched();
  const auto a = qtl::dequantize(qtl::quantize_matrix(qtl::Uniform<3>{}, qtl::PerGroup{32}, w, with));
  const auto b = qtl::dequantize(qtl::quantize_matrix(qtl::Uniform<3>{}, qtl::PerGroup{32}, w, without));
  auto err_on = [&](const qtl::RowMatrixXf& wh, bool important) {
    double e = 0;
    for (int c = 0; c < 64; ++c)
      if ((imp[c] > 1.0f) == important) e += (w.col(c) - wh.col(c)).squaredNorm();
    return e;
  };
  EXPECT_LT(err_on(a, true), 0.8 * err_on(b, true));
  EXPECT_GT(err_on(a, false), err_on(b, false));
}

TEST(Uniform, RuntimeBitsOutsideRangeThrow) {
  EXPECT_THROW(qtl::visit_uniform(1, Mode::Asymmetric, [](auto q) { return q.kBits; }), qtl::Error);
  EXPECT_THROW(qtl::visit_uniform(9, Mode::Symmetric, [](auto q) { return q.kBits; }), qtl::Error);
  EXPECT_EQ(qtl::visit_uniform(3, Mode::Symmetric, [](auto q) { return q.kBits; }), 3);
  try {
    (void)qtl::visit_uniform(0, Mode::Asymmetric, [](auto q) { return q.kBits; });
  } catch (const qtl::Error& e) {
    EXPECT_NE(std::string(e.what()).find("got 0"), std::string::npos);
  }
}

TEST(Uniform, EmptyGroupAndMismatchedImportanceThrow) {
  qtl::Uniform<4> q;
  std::vector<float> x{1.0f, 2.0f}, imp{1.0f};
  EXPECT_THROW((void)q.fit(std::span<const float>(), {}), qtl::Error);
  EXPECT_THROW((void)q.fit(x, imp), qtl::Error);
}

TEST(Uniform, ConstantAndTinyGroupsAreHandled) {
  qtl::Uniform<4> q;
  std::vector<float> zeros(16, 0.0f), tiny(16, 1e-9f), big{60000.0f, -60000.0f};
  const auto pz = q.fit(zeros, {});
  EXPECT_EQ(q.decode(pz, q.encode(pz, 0.0f)), 0.0f);
  const auto pt = q.fit(tiny, {});
  EXPECT_NEAR(q.decode(pt, q.encode(pt, 1e-9f)), 1e-9f, 1e-7f);
  std::vector<float> huge{1e9f, -1e9f};
  EXPECT_THROW((void)q.fit(huge, {}), qtl::Error);
  EXPECT_NO_THROW((void)q.fit(big, {}));
}

}  // namespace
