// HQQ (qtl/quant/hqq.hpp): the half-quadratic lp fit of uniform group parameters, on the real
// model's weights and on small exact cases.
#include <gtest/gtest.h>
#include <qtl/quant/hqq.hpp>
#include <qtl/quant/quantize_matrix.hpp>
#include <qtl/quant/uniform.hpp>

#include <cmath>
#include <cstdio>
#include <limits>
#include <vector>

#include "quant/stories_checkpoint.hpp"
#include "test_util.hpp"

namespace {

using qtl::HqqOptions;
using qtl::HqqTrace;
using qtl::Index;

/// Every group of a real matrix: HQQ's objective never rises along its trace, starts at
/// min-max RTN's value, and falls on at least `min_improved` of the groups.
template <int B, qtl::Mode M>
void expect_monotone_on_real_weights(const char* tensor, double min_improved) {
  const qtl::Uniform<B, M> q;
  const qtl::RowMatrixXf w = qtl::test::stories_checkpoint().tensor(tensor);
  int groups = 0, improved = 0;
  double start = 0, end = 0;
  for (Index r = 0; r < w.rows(); ++r) {
    for (Index c0 = 0; c0 < w.cols(); c0 += 32) {
      const Index n = std::min<Index>(32, w.cols() - c0);
      const std::vector<float> x(w.row(r).data() + c0, w.row(r).data() + c0 + n);
      HqqTrace trace;
      const auto p = qtl::hqq_fit(q, x, HqqOptions{}, &trace);
      ASSERT_FALSE(trace.objective.empty());
      EXPECT_DOUBLE_EQ(trace.objective.front(), (qtl::hqq_objective<B, M>(q.fit(x, {}), x, 0.7f)));
      for (std::size_t i = 1; i < trace.objective.size(); ++i) {
        EXPECT_LT(trace.objective[i], trace.objective[i - 1]) << tensor << " row " << r << " group " << c0 / 32;
      }
      EXPECT_DOUBLE_EQ(trace.objective.back(), (qtl::hqq_objective<B, M>(p, x, 0.7f)));
      ++groups;
      improved += trace.objective.size() > 1;
      start += trace.objective.front();
      end += trace.objective.back();
    }
  }
  EXPECT_GE(improved, min_improved * groups) << tensor;
  EXPECT_LT(end, start) << tensor;
  std::printf("[ real ] hqq %-12s %-12s lp objective %.4g -> %.4g, %d/%d groups improved\n", q.name().c_str(), tensor,
              start, end, improved, groups);
}

TEST(Hqq, ObjectiveFallsMonotonicallyOnRealWeights) {
  // Asymmetric codes move scale and zero point: most groups improve. Symmetric codes move the
  // scale only, and fewer groups have a better one.
  expect_monotone_on_real_weights<2, qtl::Mode::Asymmetric>("layers.0.wq", 0.5);
  expect_monotone_on_real_weights<3, qtl::Mode::Asymmetric>("layers.2.w2", 0.5);
  expect_monotone_on_real_weights<4, qtl::Mode::Asymmetric>("layers.4.w1", 0.5);
  expect_monotone_on_real_weights<3, qtl::Mode::Symmetric>("layers.1.wo", 0.25);
}

TEST(Hqq, ZeroIterationsIsMinMaxAndZeroPointsStayIntegers) {
  const qtl::RowMatrixXf w = qtl::test::gaussian(16, 96, 5);
  HqqOptions none;
  none.iterations = 0;
  const qtl::Uniform<3> q;
  const auto a = qtl::quantize_matrix_hqq(q, qtl::PerGroup{32}, w, none);
  const auto b = qtl::quantize_matrix(q, qtl::PerGroup{32}, w);
  EXPECT_EQ(a.codes, b.codes);
  EXPECT_EQ(a.params, b.params);
  const auto h = qtl::quantize_matrix_hqq(q, qtl::PerGroup{32}, w);
  for (const auto& p : h.params) {
    EXPECT_EQ(p.zero, std::nearbyint(p.zero));
    EXPECT_GE(p.zero, 0.0f);
    EXPECT_LE(p.zero, 7.0f);
    EXPECT_EQ(p.scale, qtl::detail::round_to_half(p.scale));
  }
  // Codes are the quantizer's own encoding under the fitted parameters, for every granularity.
  for (const qtl::Granularity g : {qtl::Granularity{qtl::PerTensor{}}, qtl::Granularity{qtl::PerRow{}},
                                   qtl::Granularity{qtl::PerGroup{40}}}) {
    const auto m = qtl::quantize_matrix_hqq(q, g, w);
    for (Index r = 0; r < w.rows(); ++r) {
      for (Index c = 0; c < w.cols(); ++c) ASSERT_EQ(m.code(r, c), q.encode(m.params_at(r, c), w(r, c)));
    }
  }
}

// One outlier in a group: the lp fit gives up on it for a tighter grid on the rest, which the
// squared-error min-max grid cannot.
TEST(Hqq, TradesAnOutlierForTheBulk) {
  std::vector<float> x;
  for (int i = 0; i < 31; ++i) x.push_back(-0.1f + 0.2f * static_cast<float>(i) / 30.0f);
  x.push_back(1.0f);
  const qtl::Uniform<3> q;
  const auto mm = q.fit(x, {});
  const auto h = qtl::hqq_fit(q, x);
  double bulk_mm = 0, bulk_h = 0;
  for (int i = 0; i < 31; ++i) {
    bulk_mm += std::fabs(x[i] - q.decode(mm, q.encode(mm, x[i])));
    bulk_h += std::fabs(x[i] - q.decode(h, q.encode(h, x[i])));
  }
  EXPECT_LT(bulk_h, bulk_mm);
  EXPECT_LT((qtl::hqq_objective<3, qtl::Mode::Asymmetric>(h, x, 0.7f)),
            (qtl::hqq_objective<3, qtl::Mode::Asymmetric>(mm, x, 0.7f)));
}

TEST(Hqq, BadInputIsAnErrorNamingTheValue) {
  const qtl::Uniform<4> q;
  const std::vector<float> x{0.1f, -0.2f, 0.3f};
  HqqOptions o;
  o.p = 0.0f;
  EXPECT_NE(qtl::test::error_of([&] { (void)qtl::hqq_fit(q, x, o); }).find("p must be in (0, 2], got 0"),
            std::string::npos);
  o = {};
  o.beta = -1.0f;
  EXPECT_NE(qtl::test::error_of([&] { (void)qtl::hqq_fit(q, x, o); }).find("beta"), std::string::npos);
  o = {};
  o.kappa = 0.5f;
  EXPECT_NE(qtl::test::error_of([&] { (void)qtl::hqq_fit(q, x, o); }).find("kappa"), std::string::npos);
  o = {};
  o.iterations = -2;
  EXPECT_NE(qtl::test::error_of([&] { (void)qtl::hqq_fit(q, x, o); }).find("-2"), std::string::npos);
  const std::vector<float> bad{0.1f, std::numeric_limits<float>::quiet_NaN()};
  EXPECT_NE(qtl::test::error_of([&] { (void)qtl::hqq_fit(q, bad); }).find("value 1"), std::string::npos);
  EXPECT_NE(qtl::test::error_of([&] { (void)qtl::hqq_fit(q, std::vector<float>{}); }).find("empty"),
            std::string::npos);
}

}  // namespace
