#include <gtest/gtest.h>
#include <qtl/quant/codebook.hpp>
#include <qtl/quant/uniform.hpp>

#include <cmath>
#include <limits>
#include <vector>

#include "quant/family_test_util.hpp"
#include "test_util.hpp"

namespace {

TEST(FixedCodebook, NearestLevelAndTables) {
  for (unsigned seed = 0; seed < 10; ++seed) {
    const auto w = qtl::test::gaussian(1, 64, seed, 0.03f);
    std::span<const float> x(w.data(), 64);
    for (bool search : {false, true}) {
      const qtl::FitOptions opt = search ? qtl::FitOptions::searched() : qtl::FitOptions{};
      const qtl::NF4 nf4;
      const auto p = nf4.fit(x, {}, opt);
      qtl::test::expect_nearest_levels(nf4, p, x);
      const qtl::FP4 fp4;
      const auto q = fp4.fit(x, {}, opt);
      qtl::test::expect_nearest_levels(fp4, q, x);
    }
  }
  // NF4 is symmetric-ish around an exact zero; FP4's E2M1 table decodes sign/exponent/mantissa
  EXPECT_EQ(qtl::NF4Levels::kLevels[7], 0.0f);
  for (int c = 0; c < 16; ++c) {
    const int e = (c >> 1) & 3, m = c & 1;
    const float mag = e == 0 ? 0.5f * m : (1.0f + 0.5f * m) * std::ldexp(1.0f, e - 1);
    EXPECT_EQ(qtl::FP4Levels::kLevels[c], (c & 8) ? -mag : mag) << c;
  }
  // absmax maps to the largest level: 1 for NF4, 6 for FP4
  const std::vector<float> v = {0.25f, -1.5f, 0.75f, 1.0f};
  EXPECT_EQ(qtl::NF4{}.fit(v, {}, qtl::FitOptions{}).scale, 1.5f);
  EXPECT_EQ(qtl::FP4{}.fit(v, {}, qtl::FitOptions{}).scale, 0.25f);
}

TEST(KMeans1d, ObjectiveNeverIncreasesAndIsReproducible) {
  for (unsigned seed = 0; seed < 8; ++seed) {
    const auto w = qtl::test::gaussian(1, 500, 100 + seed, 1.0f);
    const auto imp = qtl::test::uniform_random(1, 500, 200 + seed, 0.0f, 2.0f);
    std::span<const float> x(w.data(), 500), iw(imp.data(), 500);
    for (int k : {2, 4, 8, 16}) {
      const auto a = qtl::kmeans_1d(x, iw, k, {.iterations = 100, .seed = seed});
      ASSERT_GE(a.objective.size(), 2u);
      for (std::size_t i = 1; i < a.objective.size(); ++i) {
        EXPECT_LE(a.objective[i], a.objective[i - 1] * (1 + 1e-12)) << "k=" << k << " it=" << i;
      }
      EXPECT_LT(a.objective.back(), a.objective.front());
      const auto b = qtl::kmeans_1d(x, iw, k, {.iterations = 100, .seed = seed});
      EXPECT_EQ(a.centroids, b.centroids);
      EXPECT_EQ(a.objective, b.objective);
      ASSERT_EQ(a.centroids.size(), static_cast<std::size_t>(k));
      EXPECT_TRUE(std::is_sorted(a.centroids.begin(), a.centroids.end()));
    }
  }
}

TEST(KMeans1d, ImportanceWeightingPullsCentroids) {
  // two clusters; the heavily weighted points must be fitted better
  std::vector<float> x, w;
  for (int i = 0; i < 50; ++i) {
    x.push_back(-1.0f + 0.01f * i);
    w.push_back(1.0f);
    x.push_back(1.0f + 0.01f * i);
    w.push_back(i == 49 ? 1000.0f : 1.0f);
  }
  const auto r = qtl::kmeans_1d(x, w, 2, {});
  EXPECT_NEAR(r.centroids[1], 1.49, 0.02);
  const auto u = qtl::kmeans_1d(x, {}, 2, {});
  EXPECT_NEAR(u.centroids[1], 1.245, 0.01);
}

TEST(KMeansCodebook, NearestLevelAndBeatsUniformOnGaussianData) {
  const auto w = qtl::test::gaussian(8, 256, 5, 0.02f);
  for (int r = 0; r < 8; ++r) {
    std::span<const float> x(w.data() + r * 256, 256);
    const qtl::KMeansCodebook<3> q;
    const auto p = q.fit(x, {});
    EXPECT_TRUE(std::is_sorted(p.levels.begin(), p.levels.begin() + 8));
    for (int k = 0; k < 8; ++k) EXPECT_EQ(p.levels[k], qtl::detail::round_to_half(p.levels[k]));
    qtl::test::expect_nearest_levels(q, p, x);
  }
  // per-row 3-bit tables vs 3-bit uniform per row: the fitted levels win on the same data
  const auto km = qtl::quantize_matrix(qtl::KMeansCodebook<3>{}, qtl::PerRow{}, w);
  const auto un = qtl::quantize_matrix(qtl::Uniform<3>{}, qtl::PerRow{}, w);
  EXPECT_LT(qtl::test::matrix_sse(km, w), qtl::test::matrix_sse(un, w));
  EXPECT_DOUBLE_EQ(qtl::bits_per_weight(km), 3.0 + 8 * 16.0 / 256.0);
  // reproducible for a seed
  const auto km2 = qtl::quantize_matrix(qtl::KMeansCodebook<3>{{.seed = 0}}, qtl::PerRow{}, w);
  EXPECT_EQ(km.codes, km2.codes);
}

TEST(KMeansCodebook, PerTensorTableSeesTheWholeTensor) {
  const auto w = qtl::test::gaussian(6, 40, 8, 1.0f);
  const auto m = qtl::quantize_matrix(qtl::KMeansCodebook<4>{}, qtl::PerTensor{}, w);
  ASSERT_EQ(m.params.size(), 1u);
  std::vector<float> all(w.data(), w.data() + w.size());
  const auto p = qtl::KMeansCodebook<4>{}.fit(all, {});
  EXPECT_EQ(m.params[0], p);
}

TEST(KMeansCodebook, BadInput) {
  const qtl::KMeansCodebook<4> q;
  const std::vector<float> few(15, 1.0f);  // 16 entries need >= 16 values
  EXPECT_THROW((void)q.fit(few, {}), qtl::Error);
  EXPECT_THROW((void)qtl::kmeans_1d(few, {}, 16, {}), qtl::Error);
  EXPECT_THROW((void)qtl::kmeans_1d(few, {}, 0, {}), qtl::Error);
  EXPECT_THROW((void)q.fit(std::vector<float>{}, {}), qtl::Error);
  std::vector<float> x(32, 0.5f);
  x[3] = std::numeric_limits<float>::quiet_NaN();
  EXPECT_THROW((void)q.fit(x, {}), qtl::Error);
  x[3] = -std::numeric_limits<float>::infinity();
  EXPECT_THROW((void)q.fit(x, {}), qtl::Error);
  auto name = [](auto c) { return c.name(); };
  EXPECT_THROW((void)qtl::visit_kmeans_codebook(0, {}, name), qtl::Error);
  EXPECT_THROW((void)qtl::visit_kmeans_codebook(5, {}, name), qtl::Error);
  EXPECT_EQ(qtl::visit_kmeans_codebook(2, {}, name), "kmeans2");
  // group of 12 columns with a 16-entry table: the short last group cannot fit it
  EXPECT_THROW((void)qtl::quantize_matrix(q, qtl::PerGroup{16}, qtl::test::gaussian(2, 28, 1)), qtl::Error);
  // fewer distinct values than entries is fine (duplicate levels)
  const std::vector<float> same(40, 0.25f);
  const auto p = q.fit(same, {});
  qtl::test::expect_nearest_levels(q, p, same);
  EXPECT_EQ(q.decode(p, q.encode(p, 0.25f)), 0.25f);
}

}  // namespace

namespace {

TEST(ScaledCodebook, SharedFittedTableWithGroupScales) {
  // rows of very different magnitude: one table per tensor needs per-group scales
  qtl::RowMatrixXf w = qtl::test::gaussian(16, 128, 9, 1.0f);
  for (int r = 0; r < 16; ++r) w.row(r) *= std::pow(1.5f, float(r - 8));
  const auto fit = qtl::fit_scaled_codebook<3>(qtl::PerGroup{64}, w);
  const auto table = fit.quantizer.shared_table();
  float m = 0;
  for (int k = 0; k < 8; ++k) m = std::max(m, std::fabs(table[k]));
  EXPECT_EQ(m, 1.0f);
  EXPECT_TRUE(std::is_sorted(table.begin(), table.begin() + 8));
  for (const auto& p : fit.matrix.params) qtl::test::expect_nearest_levels(fit.quantizer, p, std::vector<float>(w.data(), w.data() + 64));
  EXPECT_DOUBLE_EQ(fit.bits_per_weight(), 3.0 + 16.0 / 64 + 32.0 * 8 / (16 * 128));
  const double e_scaled = qtl::test::matrix_sse(fit.matrix, w);
  EXPECT_NEAR(fit.weighted_error, e_scaled, 1e-9 * e_scaled);
  // beats the per-tensor table (no scales) and uniform 3-bit with the same groups
  const auto tensor = qtl::quantize_matrix(qtl::KMeansCodebook<3>{}, qtl::PerTensor{}, w);
  const auto uni = qtl::quantize_matrix(qtl::Uniform<3>{}, qtl::PerGroup{64}, w);
  // the per-tensor table spends its levels on the large rows; summed per-row relative errors
  // show what the group scales buy
  auto rel = [&](const qtl::RowMatrixXf& wh) {
    double s = 0;
    for (int r = 0; r < 16; ++r) s += (w.row(r) - wh.row(r)).squaredNorm() / w.row(r).squaredNorm();
    return s;
  };
  EXPECT_LT(rel(qtl::dequantize(fit.matrix)), 0.2 * rel(qtl::dequantize(tensor)));
  EXPECT_LT(e_scaled, qtl::test::matrix_sse(uni, w));
  EXPECT_THROW(qtl::ScaledCodebook<2>(qtl::DecodeTable{}), qtl::Error);  // all-zero levels
  EXPECT_THROW((void)qtl::fit_scaled_codebook<4>(qtl::PerRow{}, qtl::RowMatrixXf::Zero(2, 4)), qtl::Error);
}

}  // namespace
