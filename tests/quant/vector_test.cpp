#include <gtest/gtest.h>
#include <qtl/format/vq_packed.hpp>
#include <qtl/quant/vector.hpp>

#include <cmath>
#include <limits>
#include <vector>

#include "test_util.hpp"

namespace {

TEST(KMeansVectors, ObjectiveNeverIncreasesAndIsReproducible) {
  for (unsigned seed = 0; seed < 4; ++seed) {
    for (int dim : {2, 4, 8}) {
      const auto x = qtl::test::gaussian(1, 300 * dim, seed + 10 * dim, 1.0f);
      const auto w = qtl::test::uniform_random(1, 300 * dim, seed + 77, 0.0f, 2.0f);
      std::span<const float> xs(x.data(), x.size()), ws(w.data(), w.size());
      const auto a = qtl::kmeans_vectors(xs, ws, dim, 32, {.iterations = 40, .seed = seed});
      for (std::size_t i = 1; i < a.objective.size(); ++i) {
        EXPECT_LE(a.objective[i], a.objective[i - 1] * (1 + 1e-12)) << "dim " << dim << " it " << i;
      }
      EXPECT_LT(a.objective.back(), 0.9 * a.objective.front());
      const auto b = qtl::kmeans_vectors(xs, ws, dim, 32, {.iterations = 40, .seed = seed});
      EXPECT_EQ(a.centroids, b.centroids);
      EXPECT_EQ(a.objective, b.objective);
      const auto c = qtl::kmeans_vectors(xs, ws, dim, 32, {.iterations = 40, .seed = seed + 1000});
      EXPECT_NE(a.centroids, c.centroids);  // the seed matters
    }
  }
}

TEST(KMeansVQ, EncodeIsTheWeightedNearestCodeword) {
  const auto w = qtl::test::gaussian(16, 64, 3, 0.1f);
  const qtl::KMeansVQ<4, 6> q;
  const auto m = qtl::quantize_vectors(q, {}, w);
  const auto& p = m.params[0];
  const auto imp = qtl::test::uniform_random(1, 4, 5, 0.1f, 3.0f);
  for (qtl::Index r = 0; r < 16; ++r) {
    for (qtl::Index j = 0; j < 16; ++j) {
      const float* v = w.data() + r * 64 + j * 4;
      for (const float* wt : {static_cast<const float*>(nullptr), imp.data()}) {
        const auto idx = q.encode(p, v, wt);
        auto dist = [&](std::uint32_t k) {
          double s = 0;
          for (int d = 0; d < 4; ++d) s += (wt ? wt[d] : 1.0) * std::pow(v[d] - p.codebook[k * 4 + d], 2);
          return s;
        };
        for (std::uint32_t k = 0; k < 64; ++k) ASSERT_LE(dist(idx), dist(k) * (1 + 1e-6) + 1e-12);
      }
    }
  }
}

TEST(KMeansVQ, PaddingIsIgnoredAndCounted) {
  const auto w = qtl::test::gaussian(20, 30, 4, 0.1f);  // 30 = 3 x 8 + 6: the last vector has 2 padding slots
  const qtl::KMeansVQ<8, 4> q;
  const auto m = qtl::quantize_vectors(q, qtl::VQGranularity{10}, w);
  EXPECT_EQ(m.layout.vectors_per_row(), 4);
  EXPECT_EQ(m.params.size(), 2u);
  const double expected = (20.0 * 4 * 4 + 2 * 16.0 * 8 * 16) / (20.0 * 30);
  EXPECT_DOUBLE_EQ(qtl::bits_per_weight(m), expected);
  // the padding coordinates have weight 0, so making them huge changes nothing
  qtl::RowMatrixXf wide(20, 32);
  wide.setConstant(1e3f);
  wide.leftCols(30) = w;
  qtl::VQOptions opt;
  opt.column_importance = qtl::VectorXf::Ones(32);
  opt.column_importance.tail(2).setZero();
  const auto m2 = qtl::quantize_vectors(q, qtl::VQGranularity{10}, wide, opt);
  EXPECT_EQ(m2.indices, m.indices);
  EXPECT_EQ(m2.params[0].codebook.size(), m.params[0].codebook.size());
  const qtl::RowMatrixXf d = qtl::dequantize(m), d2 = qtl::dequantize(m2);
  EXPECT_EQ(d, d2.leftCols(30));
}

TEST(KMeansVQ, ImportanceWeightingReducesWeightedError) {
  const auto w = qtl::test::gaussian(32, 64, 6, 0.1f);
  qtl::VQOptions opt;
  opt.column_importance = qtl::test::uniform_random(64, 1, 7, 0.0f, 1.0f).col(0);
  for (int c = 0; c < 64; c += 8) opt.column_importance[c] = 50.0f;  // a few salient inputs
  const qtl::KMeansVQ<2, 5> q;
  const auto plain = qtl::dequantize(qtl::quantize_vectors(q, {}, w));
  const auto weighted = qtl::dequantize(qtl::quantize_vectors(q, {}, w, opt));
  auto werr = [&](const qtl::RowMatrixXf& wh) {
    return ((w - wh).array().square().rowwise() * opt.column_importance.transpose().array()).sum();
  };
  EXPECT_LT(werr(weighted), werr(plain));
}

TEST(ResidualVQ, SecondStageReducesTheError) {
  const auto w = qtl::test::gaussian(32, 64, 8, 0.1f);
  const qtl::KMeansVQ<4, 6> one;
  const qtl::ResidualVQ<qtl::KMeansVQ<4, 6>, qtl::KMeansVQ<4, 4>> two;
  const auto m1 = qtl::quantize_vectors(one, {}, w);
  const auto m2 = qtl::quantize_vectors(two, {}, w);
  EXPECT_LT((w - qtl::dequantize(m2)).squaredNorm(), 0.8 * (w - qtl::dequantize(m1)).squaredNorm());
  EXPECT_EQ(decltype(two)::kBits, 10);
  EXPECT_DOUBLE_EQ(qtl::bits_per_weight(m2), (32.0 * 16 * 10 + 16.0 * (64 * 4 + 16 * 4)) / (32.0 * 64));
  // the first stage of the residual index is the first quantizer's own choice
  for (std::size_t i = 0; i < m2.indices.size(); ++i) EXPECT_LT(m2.indices[i], 1u << 10);
}

// FixedParamsVQ: one codebook fitted on one matrix quantizes another with exactly that codebook
// and the same weighted-nearest encoding, and packs to V's format.
TEST(FixedParamsVQ, QuantizesWithTheGivenParametersAndPacksAsTheInner) {
  const qtl::KMeansVQ<4, 4> v;
  const auto fitted = qtl::quantize_vectors(v, {}, qtl::test::gaussian(16, 32, 3));
  const qtl::FixedParamsVQ<qtl::KMeansVQ<4, 4>> fixed(v, fitted.params.front());
  const qtl::RowMatrixXf w = qtl::test::gaussian(8, 30, 4);  // 30 columns: padded last vector
  const auto m = qtl::quantize_vectors(fixed, {2}, w);
  ASSERT_EQ(m.params.size(), 4u);
  for (const auto& p : m.params) EXPECT_EQ(p, fitted.params.front());
  float vec[4], wt[4];
  for (qtl::Index r = 0; r < w.rows(); ++r) {
    for (qtl::Index j = 0; j < m.layout.vectors_per_row(); ++j) {
      for (int d = 0; d < 4; ++d) {
        const bool real = j * 4 + d < w.cols();
        vec[d] = real ? w(r, j * 4 + d) : 0.0f;
        wt[d] = real ? 1.0f : 0.0f;
      }
      EXPECT_EQ(m.index(r, j), v.encode(fitted.params.front(), vec, wt));
    }
  }
  const auto packed = qtl::pack_vq(m);
  const auto back = qtl::unpack_vq(packed, v);  // the packed bytes are KMeansVQ<4, 4>'s
  EXPECT_EQ(qtl::dequantize(back), qtl::dequantize(m));
  EXPECT_EQ(fixed.name(), v.name());
  EXPECT_EQ(fixed.param_bits(), v.param_bits());
}

TEST(VectorQuantization, BadInput) {
  auto name = [](auto v) { return v.name(); };
  EXPECT_THROW((void)qtl::visit_kmeans_vq(3, 4, {}, name), qtl::Error);   // unsupported D
  EXPECT_THROW((void)qtl::visit_kmeans_vq(16, 4, {}, name), qtl::Error);
  EXPECT_THROW((void)qtl::visit_kmeans_vq(4, 0, {}, name), qtl::Error);   // bits out of range
  EXPECT_THROW((void)qtl::visit_kmeans_vq(4, 13, {}, name), qtl::Error);
  EXPECT_EQ(qtl::visit_kmeans_vq(8, 8, {}, name), "vq8x8");
  // 4 x 16 weights = 16 4-vectors cannot fit a 32-entry codebook
  EXPECT_THROW((void)qtl::quantize_vectors(qtl::KMeansVQ<4, 5>{}, {}, qtl::test::gaussian(4, 16, 1)), qtl::Error);
  EXPECT_NO_THROW((void)qtl::quantize_vectors(qtl::KMeansVQ<4, 4>{}, {}, qtl::test::gaussian(4, 16, 1)));
  qtl::RowMatrixXf w = qtl::test::gaussian(8, 16, 1);
  w(1, 1) = std::numeric_limits<float>::quiet_NaN();
  EXPECT_THROW((void)qtl::quantize_vectors(qtl::KMeansVQ<2, 2>{}, {}, w), qtl::Error);
  EXPECT_THROW((void)qtl::quantize_vectors(qtl::KMeansVQ<2, 2>{}, {}, qtl::RowMatrixXf(0, 4)), qtl::Error);
  EXPECT_THROW((void)qtl::quantize_vectors(qtl::KMeansVQ<2, 2>{}, {-1}, qtl::test::gaussian(8, 16, 1)), qtl::Error);
  qtl::VQOptions opt;
  opt.column_importance = qtl::VectorXf::Ones(15);
  EXPECT_THROW((void)qtl::quantize_vectors(qtl::KMeansVQ<2, 2>{}, {}, qtl::test::gaussian(8, 16, 1), opt), qtl::Error);
  const std::vector<float> x(6, 1.0f);
  EXPECT_THROW((void)qtl::kmeans_vectors(x, {}, 4, 1), qtl::Error);  // not whole vectors
  EXPECT_THROW((void)qtl::kmeans_vectors(x, {}, 2, 4), qtl::Error);  // 3 vectors, 4 entries
}

}  // namespace
