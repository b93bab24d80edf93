// Uniform quantizer properties on the real stories260K weights (not only Gaussian data):
// real matrices have outlier rows/columns and heavy tails that random data lacks.
#include <gtest/gtest.h>
#include "data_path.hpp"
#include "quant/stories_checkpoint.hpp"
#include <qtl/io/llama2c.hpp>
#include <qtl/kernels.hpp>

#include <cmath>

namespace {

using qtl::test::stories_checkpoint;

template <int B, qtl::Mode M>
void check_all_matrices() {
  using Q = qtl::Uniform<B, M>;
  for (const auto& name : stories_checkpoint().linear_names()) {
    const qtl::RowMatrixXf w = stories_checkpoint().tensor(name);
    qtl::QuantizeOptions plain;
    const auto q = qtl::quantize_matrix(Q{}, qtl::PerGroup{32}, w, plain);
    for (qtl::Index r = 0; r < w.rows(); ++r) {
      for (qtl::Index c = 0; c < w.cols(); ++c) {
        const auto& p = q.params_at(r, c);
        ASSERT_LE(q.code(r, c), Q::kMaxCode);
        const float lo = std::min(Q::decode(p, 0), Q::decode(p, Q::kMaxCode));
        const float hi = std::max(Q::decode(p, 0), Q::decode(p, Q::kMaxCode));
        const float x = w(r, c);
        if (x >= lo && x <= hi) {
          ASSERT_LE(std::fabs(x - q.value(r, c)), 0.5f * std::fabs(p.scale) * (1 + 1e-5f)) << name;
        }
        if constexpr (M == qtl::Mode::Asymmetric) {
          ASSERT_EQ(Q::decode(p, Q::encode(p, 0.0f)), 0.0f) << name;
        }
      }
    }
    // The clip search never increases the squared error of any group (importance: none).
    qtl::QuantizeOptions search;
    search.fit = qtl::FitOptions::searched();
    const auto s = qtl::quantize_matrix(Q{}, qtl::PerGroup{32}, w, search);
    const qtl::RowMatrixXf wq = qtl::dequantize(q), ws = qtl::dequantize(s);
    for (qtl::Index r = 0; r < w.rows(); ++r) {
      for (qtl::Index c0 = 0; c0 < w.cols(); c0 += 32) {
        const qtl::Index n = std::min<qtl::Index>(32, w.cols() - c0);
        const double e_plain = (w.row(r).segment(c0, n) - wq.row(r).segment(c0, n)).squaredNorm();
        const double e_search = (w.row(r).segment(c0, n) - ws.row(r).segment(c0, n)).squaredNorm();
        ASSERT_LE(e_search, e_plain * (1 + 1e-6) + 1e-12) << name << " row " << r << " group at " << c0;
      }
    }
  }
}

TEST(UniformRealWeights, PropertiesHoldOnEveryStories260KMatrix) {
  check_all_matrices<2, qtl::Mode::Asymmetric>();
  check_all_matrices<3, qtl::Mode::Asymmetric>();
  check_all_matrices<4, qtl::Mode::Asymmetric>();
  check_all_matrices<8, qtl::Mode::Asymmetric>();
  check_all_matrices<4, qtl::Mode::Symmetric>();
}

TEST(UniformRealWeights, SqnrRisesWithBitsAndClipSearchHelpsAtLowBits) {
  double prev = -1e9;
  for (int bits : {2, 3, 4, 8}) {
    double signal = 0, noise = 0, noise_clip = 0;
    for (const auto& name : stories_checkpoint().linear_names()) {
      const qtl::RowMatrixXf w = stories_checkpoint().tensor(name);
      qtl::QuantizeOptions clip;
      clip.fit = qtl::FitOptions::searched();
      qtl::visit_uniform(bits, qtl::Mode::Asymmetric, [&](auto q) {
        noise += (w - qtl::dequantize(qtl::quantize_matrix(q, qtl::PerGroup{32}, w))).squaredNorm();
        noise_clip += (w - qtl::dequantize(qtl::quantize_matrix(q, qtl::PerGroup{32}, w, clip))).squaredNorm();
        return 0;
      });
      signal += w.squaredNorm();
    }
    const double sqnr = 10 * std::log10(signal / noise);
    EXPECT_GT(sqnr, prev + 4.0) << bits << " bits";
    if (bits <= 4) {
      EXPECT_LT(noise_clip, noise) << bits << " bits";
    } else {
      EXPECT_LE(noise_clip, noise) << bits << " bits";
    }
    prev = sqnr;
  }
}

}  // namespace
