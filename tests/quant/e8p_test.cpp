#include <gtest/gtest.h>
#include <qtl/quant/e8p.hpp>

#include <cmath>
#include <limits>
#include <set>
#include <vector>

#include "test_util.hpp"

namespace {

using qtl::E8P;

TEST(E8P, CodebookStructure) {
  const auto& A = E8P::abs_grid();
  std::set<std::vector<int>> abs_set;
  int n10 = 0, n12 = 0;
  for (int a = 0; a < 256; ++a) {
    std::vector<int> v;
    double norm = 0;
    for (int d = 0; d < 8; ++d) {
      const float x = A[a * 8 + d];
      EXPECT_TRUE(x == 0.5f || x == 1.5f || x == 2.5f);
      v.push_back(int(2 * x));
      norm += x * x;
    }
    abs_set.insert(v);
    if (norm <= 10) ++n10;
    if (norm == 12) ++n12;
  }
  EXPECT_EQ(abs_set.size(), 256u);
  EXPECT_EQ(n10, 227);
  EXPECT_EQ(n12, 29);
  // all 2^16 codewords are distinct points of D8^ +- 1/4 (coordinates sum to an even integer)
  std::set<std::vector<int>> all;
  float c[8];
  for (std::uint32_t i = 0; i < 65536; ++i) {
    E8P::codeword(i, c);
    const float shift = (i >> 15) ? 0.25f : -0.25f;
    double sum = 0;
    std::vector<int> v;
    for (int d = 0; d < 8; ++d) {
      sum += c[d] - shift;
      v.push_back(int(std::lround(4 * c[d])));
    }
    ASSERT_EQ(std::fmod(std::fabs(sum), 2.0), 0.0) << i;
    all.insert(v);
  }
  EXPECT_EQ(all.size(), 65536u);
}

double dist(const float* x, const float* c, const float* w) {
  double s = 0;
  for (int d = 0; d < 8; ++d) s += (w ? w[d] : 1.0) * double(x[d] - c[d]) * double(x[d] - c[d]);
  return s;
}

TEST(E8P, NearestEqualsBruteForceOverAllCodewords) {
  std::vector<float> grid(65536 * 8);
  for (std::uint32_t i = 0; i < 65536; ++i) E8P::codeword(i, grid.data() + i * 8);
  const E8P::Params p{1.0f};
  for (int trial = 0; trial < 64; ++trial) {
    const auto x = qtl::test::gaussian(1, 8, 1000 + trial, trial < 32 ? 1.0f : 2.5f);
    const auto w = qtl::test::uniform_random(1, 8, 2000 + trial, 0.05f, 3.0f);
    for (const float* wt : {static_cast<const float*>(nullptr), w.data()}) {
      double best = std::numeric_limits<double>::infinity();
      std::uint32_t arg = 0;
      for (std::uint32_t i = 0; i < 65536; ++i) {
        const double e = dist(x.data(), grid.data() + i * 8, wt);
        if (e < best) {
          best = e;
          arg = i;
        }
      }
      const auto idx = E8P::encode(p, x.data(), wt);
      const double got = dist(x.data(), grid.data() + idx * 8, wt);
      ASSERT_NEAR(got, best, 1e-5 * (1 + best)) << trial;  // encode compares in float
      if (got > best) {
        EXPECT_EQ(idx, arg);
      }
    }
  }
}

TEST(E8P, ScaleFitAndBadInput) {
  const auto w = qtl::test::gaussian(4, 64, 3, 0.02f);
  const auto m = qtl::quantize_vectors(E8P{}, qtl::VQGranularity{1}, w);
  EXPECT_EQ(m.params.size(), 4u);
  for (const auto& p : m.params) EXPECT_EQ(p.scale, qtl::detail::round_to_half(p.scale));
  EXPECT_DOUBLE_EQ(qtl::bits_per_weight(m), (4.0 * 8 * 16 + 4 * 16.0) / (4.0 * 64));
  const double sq = 10 * std::log10(w.squaredNorm() / (w - qtl::dequantize(m)).squaredNorm());
  EXPECT_GT(sq, 7.0);  // Gaussian data at 2 bits: E8P is near 8.5 dB
  const std::vector<float> x(12, 1.0f);
  EXPECT_THROW((void)E8P{}.fit(x, {}), qtl::Error);
  std::vector<float> y(8, 1.0f);
  y[2] = std::numeric_limits<float>::infinity();
  EXPECT_THROW((void)E8P{}.fit(y, {}), qtl::Error);
  EXPECT_THROW((void)E8P{}.fit(std::vector<float>{}, {}), qtl::Error);
}

}  // namespace
