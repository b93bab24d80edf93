// FitOptions means the same for every scalar family that takes them (qtl/quant/concepts.hpp):
// the plain fit without options, the clip grid with clip_search, least-squares refits with
// refine_iterations, each step never raising the importance-weighted squared error, and the
// refits working with or without the clip search.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <span>
#include <string>
#include <vector>

#include "test_util.hpp"
#include <qtl/quant/binary.hpp>
#include <qtl/quant/codebook.hpp>
#include <qtl/quant/ggml_quantizers.hpp>
#include <qtl/quant/log2.hpp>
#include <qtl/quant/quantize_matrix.hpp>
#include <qtl/quant/uniform.hpp>

namespace {

namespace g = qtl::ggml;

template <class Q>
Q make() {
  if constexpr (std::is_same_v<Q, qtl::PowerGrid<3>>) {
    return qtl::PowerGrid<3>{0.7f};
  } else {
    return Q{};
  }
}

template <class Q>
constexpr int group_size() {
  if constexpr (std::is_same_v<Q, g::GgmlTQ2_0>) return 256;
  return 32;
}

template <class Q>
class FitOptionsTest : public ::testing::Test {};

using Families = ::testing::Types<qtl::Uniform<3>, qtl::Uniform<4, qtl::Mode::Symmetric>, qtl::NF4, qtl::FP4,
                                  qtl::Log2<3>, qtl::Log2<3, qtl::Log2Base::Sqrt2>, qtl::PowerGrid<3>,
                                  qtl::ResidualBinary, g::GgmlQ4_0, g::GgmlQ4_1, g::GgmlIQ4_NL,
                                  g::GgmlTQ2_0>;
TYPED_TEST_SUITE(FitOptionsTest, Families);

TYPED_TEST(FitOptionsTest, EachStepNeverRaisesTheErrorAndRefitsWorkWithoutTheClipSearch) {
  using Q = TypeParam;
  const Q q = make<Q>();
  constexpr int n = group_size<Q>();
  const qtl::FitOptions plain, refit{.refine_iterations = 2}, clip{.clip_search = true},
      both = qtl::FitOptions::searched();
  std::mt19937 rng(11);
  std::uniform_real_distribution<float> imp(0.0f, 4.0f);
  int refit_better = 0, clip_better = 0;
  constexpr int kGroups = 60;
  for (int t = 0; t < kGroups; ++t) {
    // heavy-tailed groups (cubed Gaussians), where neither min-max nor absmax is the best scale
    auto w = qtl::test::gaussian(1, n, 100 + static_cast<unsigned>(t), 0.05f);
    for (auto& v : w.reshaped()) v = v * v * v * 400.0f;
    std::vector<float> weights;
    if (t % 2) {
      weights.resize(n);
      for (auto& v : weights) v = imp(rng);
    }
    const std::span<const float> x(w.data(), n);
    auto err = [&](const qtl::FitOptions& o) { return qtl::detail::weighted_sse(q, q.fit(x, weights, o), x, weights); };
    const double e_plain = err(plain), e_refit = err(refit), e_clip = err(clip), e_both = err(both);
    const double tol = 1e-12 * (e_plain + 1e-30);
    ASSERT_LE(e_refit, e_plain + tol) << q.name() << " group " << t;
    ASSERT_LE(e_clip, e_plain + tol) << q.name() << " group " << t;
    ASSERT_LE(e_both, e_clip + tol) << q.name() << " group " << t;
    refit_better += e_refit < e_plain * (1 - 1e-9);
    clip_better += e_both < e_plain * (1 - 1e-9);
    // no options is the plain fit, whatever the clip grid's settings
    EXPECT_EQ(q.fit(x, weights, plain), q.fit(x, weights, qtl::FitOptions{.clip_steps = 3, .clip_min_ratio = 0.9f}))
        << q.name();
  }
  // the refits act without clip_search too (a family that skipped them there would show 0)
  EXPECT_GT(refit_better, 0) << q.name();
  EXPECT_GT(clip_better, kGroups / 10) << q.name();
}

TEST(FitOptions, NegativeRefineIterationsAreRejectedByName) {
  const auto w = qtl::test::gaussian(4, 64, 3);
  qtl::QuantizeOptions opt;
  opt.fit.refine_iterations = -1;
  try {
    (void)qtl::quantize_matrix(qtl::Uniform<4>{}, qtl::PerGroup{32}, w, opt);
    FAIL() << "expected qtl::Error";
  } catch (const qtl::Error& e) {
    EXPECT_NE(std::string(e.what()).find("refine_iterations"), std::string::npos) << e.what();
  }
}

}  // namespace
