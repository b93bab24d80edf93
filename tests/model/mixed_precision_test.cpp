// Mixed precision under a bits-per-weight budget (qtl/model/mixed_precision.hpp): the exact
// knapsack on small tables checked against brute force, and the whole path on the real model.
#include <gtest/gtest.h>
#include <qtl/model/mixed_precision.hpp>
#include <qtl/model/recipes.hpp>
#include <qtl/model/sequential.hpp>

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <random>

#include "model/real_model_fixture.hpp"
#include "test_util.hpp"

namespace {

namespace m = qtl::model;

/// The factory of per-precision recipes named `name`.
m::PrecisionRecipeFactory recipe_factory(std::string name) {
  return [name](const m::Precision& p) {
    m::RecipeSpec spec;
    spec.name = p.recipe.empty() ? name : p.recipe;
    spec.bits = p.bits;
    spec.group = p.group;
    return m::make_recipe(spec);
  };
}

/// A table of `n` matrices of random sizes with candidates 2/3/4 bits (+0.75 bits of group
/// parameters) and a KL that falls with the bits, at random per-matrix sensitivities.
m::SensitivityTable random_table(int n, unsigned seed) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int> size(1, 40);
  std::uniform_real_distribution<double> sens(0.1, 10.0);
  m::SensitivityTable t;
  t.candidates = {{2, 32}, {3, 32}, {4, 32}};
  for (int i = 0; i < n; ++i) {
    m::MatrixSensitivity s;
    s.name = qtl::str_cat("m", i);
    s.weights = 32 * size(rng);
    const double k = sens(rng);
    for (int b : {2, 3, 4}) {
      s.bits_per_weight.push_back(b + 0.75);
      s.kl.push_back(k * std::pow(4.0, -b) * (1.0 + 0.1 * sens(rng)));
      s.delta_nll.push_back(s.kl.back());
    }
    t.matrices.push_back(std::move(s));
  }
  return t;
}

TEST(AllocateBits, IsTheExactOptimumWithinTheBudget) {
  for (unsigned seed = 0; seed < 20; ++seed) {
    const auto t = random_table(6, seed);
    double n = 0;
    for (const auto& s : t.matrices) n += static_cast<double>(s.weights);
    for (double target : {2.9, 3.3, 3.75, 4.2, 4.75}) {
      const auto a = m::allocate_bits(t, target);
      // Brute force over all 3^6 choices.
      double best = std::numeric_limits<double>::infinity();
      for (int code = 0; code < 729; ++code) {
        double bits = 0, kl = 0;
        for (int i = 0, c = code; i < 6; ++i, c /= 3) {
          bits += t.matrices[static_cast<std::size_t>(i)].bits_per_weight[static_cast<std::size_t>(c % 3)] *
                  static_cast<double>(t.matrices[static_cast<std::size_t>(i)].weights);
          kl += t.matrices[static_cast<std::size_t>(i)].kl[static_cast<std::size_t>(c % 3)];
        }
        if (bits <= std::floor(target * n)) best = std::min(best, kl);
      }
      EXPECT_LE(a.bits_per_weight, target) << "seed " << seed << " target " << target;
      EXPECT_NEAR(a.predicted_kl, best, 1e-12 * best) << "seed " << seed << " target " << target;
      // The reported bits are the choices' bits, counted as bits_per_weight counts them.
      double bits = 0;
      for (std::size_t i = 0; i < a.choice.size(); ++i) {
        bits += t.matrices[i].bits_per_weight[a.choice[i]] * static_cast<double>(t.matrices[i].weights);
      }
      EXPECT_NEAR(a.bits_per_weight, bits / n, 1e-12);
    }
  }
}

TEST(AllocateBits, MoreBudgetNeverPredictsWorse) {
  const auto t = random_table(30, 7);
  double prev = std::numeric_limits<double>::infinity();
  for (double target = 2.75; target <= 4.76; target += 0.05) {
    const auto a = m::allocate_bits(t, target);
    EXPECT_LE(a.predicted_kl, prev * (1 + 1e-12)) << target;
    prev = a.predicted_kl;
  }
}

// precisions_of: each matrix by name at its chosen candidate; a plan of another table is named.
TEST(AllocateBits, PrecisionsOfNamesEachMatrixAndRejectsAForeignPlan) {
  const auto t = random_table(5, 11);
  const auto a = m::allocate_bits(t, 3.3);
  const auto p = m::precisions_of(t, a);
  ASSERT_EQ(p.size(), 5u);
  for (std::size_t i = 0; i < 5; ++i) {
    EXPECT_EQ(p.at(t.matrices[i].name).bits, t.candidates[a.choice[i]].bits) << t.matrices[i].name;
  }
  m::BitAllocation shorter = a;
  shorter.choice.pop_back();
  EXPECT_NE(qtl::test::error_of([&] { (void)m::precisions_of(t, shorter); }).find("4 choices for 5 matrices"),
            std::string::npos);
  m::BitAllocation beyond = a;
  beyond.choice[2] = 3;
  EXPECT_NE(qtl::test::error_of([&] { (void)m::precisions_of(t, beyond); }).find("m2 has choice 3 of 3 candidates"),
            std::string::npos);
}

TEST(AllocateBits, BadBudgetsAreErrorsNamingTheValue) {
  const auto t = random_table(4, 3);
  EXPECT_NE(qtl::test::error_of([&] { (void)m::allocate_bits(t, 2.5); }).find("above the target 2.5"),
            std::string::npos);
  EXPECT_NE(qtl::test::error_of([&] { (void)m::allocate_bits(t, std::nan("")); }).find("got nan"),
            std::string::npos);
  EXPECT_NE(qtl::test::error_of([&] { (void)m::allocate_bits(m::SensitivityTable{}, 3.0); }).find("empty"),
            std::string::npos);
}

// On the real model with round-to-nearest (no calibration pass, fast under sanitizers): every
// matrix's KL falls as its bits rise, and the mixed model honours its budget, counts its bits
// like the driver, and beats the uniform model of the same size on held-out text.
TEST(MixedPrecision, OnTheRealModelMeetsTheBudgetAndBeatsUniformBits) {
  const auto& f = qtl::test::fixture();
  const auto calibration = f.calibration(0, 8);
  const std::vector<std::vector<int>> scoring(calibration.begin(), calibration.begin() + 4);
  const auto make = recipe_factory("rtn");
  m::SensitivityOptions so;
  so.candidates = {{2, 0}, {3, 0}, {4, 0}, {8, 0}};
  const auto table = m::measure_sensitivity(f.fp32, calibration, scoring, so, make);
  ASSERT_EQ(table.matrices.size(), f.fp32.linear_names().size());
  for (const auto& s : table.matrices) {
    for (std::size_t c = 1; c < s.kl.size(); ++c) {
      EXPECT_LT(s.kl[c], s.kl[c - 1]) << s.name << " at " << m::to_string(table.candidates[c]);
    }
  }
  // The budget is exactly what uniform 3-bit codes per row take.
  const auto uniform_recipe = make({3, 0});
  m::SequentialReport uniform_report;
  const auto u = m::quantize_sequential(f.fp32, calibration, *uniform_recipe, {}, &uniform_report);
  const double target = uniform_report.bits_per_weight();
  const auto plan = m::allocate_bits(table, target);
  EXPECT_LE(plan.bits_per_weight, target);
  const m::MixedPrecisionRecipe mixed("rtn-mixed", table, plan, make);
  m::SequentialReport report;
  const auto q = m::quantize_sequential(f.fp32, calibration, mixed, {}, &report);
  EXPECT_NEAR(report.bits_per_weight(), plan.bits_per_weight, 1e-9);
  const auto eval = f.eval_slice(250, 24);
  const double kl_mixed = m::kl_divergence(f.fp32, q, f.tokenizer, eval).mean_kl;
  const double kl_uniform = m::kl_divergence(f.fp32, u, f.tokenizer, eval).mean_kl;
  EXPECT_LT(kl_mixed, kl_uniform) << "mixed " << plan.bits_per_weight << " vs uniform "
                                  << uniform_report.bits_per_weight() << " bits/weight";
  std::printf("[ real ] rtn 3-bit per row: KL %.4f at %.3f bits/weight; mixed: KL %.4f at %.3f\n", kl_uniform,
              uniform_report.bits_per_weight(), kl_mixed, plan.bits_per_weight);
}

// HIGGS's linear model (one noise probe per matrix) against the measured KL of every
// candidate: the same ordering of (matrix, precision) pairs nearly everywhere, and the same size.
TEST(MixedPrecision, LinearModelAgreesWithMeasuredSensitivities) {
  const auto& f = qtl::test::fixture();
  const auto calibration = f.calibration(0, 8);
  const std::vector<std::vector<int>> scoring(calibration.begin(), calibration.begin() + 4);
  const auto make = recipe_factory("rtn");
  m::SensitivityOptions so;
  so.candidates = {{2, 0}, {3, 0}, {4, 0}};
  const auto measured = m::measure_sensitivity(f.fp32, calibration, scoring, so, make);
  so.linear_model = true;
  const auto linear = m::measure_sensitivity(f.fp32, calibration, scoring, so, make);
  ASSERT_EQ(linear.matrices.size(), measured.matrices.size());
  std::vector<double> a, b;
  for (std::size_t i = 0; i < measured.matrices.size(); ++i) {
    EXPECT_EQ(linear.matrices[i].bits_per_weight, measured.matrices[i].bits_per_weight);
    for (std::size_t c = 0; c < so.candidates.size(); ++c) {
      a.push_back(measured.matrices[i].kl[c]);
      b.push_back(linear.matrices[i].kl[c]);
      if (c > 0) {
        EXPECT_LT(linear.matrices[i].kl[c], linear.matrices[i].kl[c - 1]) << measured.matrices[i].name;
      }
    }
  }
  // Spearman's rank correlation over every (matrix, candidate) pair.
  auto ranks = [](const std::vector<double>& v) {
    std::vector<std::size_t> idx(v.size());
    std::iota(idx.begin(), idx.end(), 0);
    std::sort(idx.begin(), idx.end(), [&](std::size_t x, std::size_t y) { return v[x] < v[y]; });
    std::vector<double> r(v.size());
    for (std::size_t k = 0; k < idx.size(); ++k) r[idx[k]] = static_cast<double>(k);
    return r;
  };
  const auto ra = ranks(a), rb = ranks(b);
  double d2 = 0;
  for (std::size_t k = 0; k < ra.size(); ++k) d2 += (ra[k] - rb[k]) * (ra[k] - rb[k]);
  const double n = static_cast<double>(ra.size());
  const double spearman = 1.0 - 6.0 * d2 / (n * (n * n - 1.0));
  std::vector<double> ratio;
  for (std::size_t k = 0; k < a.size(); ++k) ratio.push_back(b[k] / a[k]);
  std::nth_element(ratio.begin(), ratio.begin() + static_cast<std::ptrdiff_t>(ratio.size() / 2), ratio.end());
  const double median_ratio = ratio[ratio.size() / 2];
  std::printf("[ real ] linear model vs measured KL: Spearman %.4f over %zu pairs, median ratio %.3f\n", spearman,
              ra.size(), median_ratio);
  EXPECT_GT(spearman, 0.9);
  EXPECT_GT(median_ratio, 0.5);
  EXPECT_LT(median_ratio, 2.0);
}

// A candidate may name another recipe: E8P vector codes beside uniform widths, each matrix
// quantized by the recipe its candidate names, its bits counted as that recipe counts them.
TEST(MixedPrecision, CandidatesFromOtherRecipesAreQuantizedByThem) {
  const auto& f = qtl::test::fixture();
  m::SensitivityTable table;
  table.candidates = {{2, 0}, {2, 0, "gptvq-e8p"}};
  EXPECT_EQ(m::to_string(table.candidates[1]), "gptvq-e8p 2-bit per row");
  m::BitAllocation plan;
  for (const auto& name : f.fp32.linear_names()) {
    m::MatrixSensitivity s;
    s.name = name;
    table.matrices.push_back(s);
    plan.choice.push_back(name.ends_with(".w2") || name.ends_with(".wq") ? 1 : 0);
  }
  const m::MixedPrecisionRecipe mixed("mixed", table, plan, recipe_factory("rtn"));
  m::SequentialReport report;
  const auto q = m::quantize_sequential(f.fp32, f.calibration(0, 4), mixed, {}, &report);
  ASSERT_EQ(report.layers.size(), plan.choice.size());
  int e8p = 0;
  for (const auto& l : report.layers) {  // in the driver's order, not linear_names()'
    const std::string op = q.linear(l.name).describe();
    if (l.name.ends_with(".w2") || l.name.ends_with(".wq")) {
      ++e8p;
      EXPECT_NE(op.find("e8p"), std::string::npos) << l.name << ": " << op;
      // 16 bits per 8 weights (the last vector of a 172-wide row padded) + an fp16 scale per row
      EXPECT_DOUBLE_EQ(l.bits_per_weight, l.name.ends_with(".w2") ? (22 * 16 + 16) / 172.0 : 2.25) << l.name;
    } else {
      EXPECT_NE(op.find("uniform2"), std::string::npos) << l.name << ": " << op;
    }
  }
  EXPECT_EQ(e8p, 10);
}

// Bad input is named before anything is calibrated or scored.
TEST(MixedPrecision, BadInputNamesTheValue) {
  const auto& f = qtl::test::fixture();
  const auto calibration = f.calibration(0, 2);
  const auto make = recipe_factory("rtn");
  auto error = [&](const m::SensitivityOptions& so, std::span<const std::vector<int>> scoring,
                   const m::PrecisionRecipeFactory& factory) {
    return qtl::test::error_of([&] { (void)m::measure_sensitivity(f.fp32, calibration, scoring, so, factory); });
  };
  m::SensitivityOptions so;
  so.candidates = {};
  EXPECT_NE(error(so, calibration, make).find("no candidate precisions"), std::string::npos);
  so.candidates = {{4, 0}};
  EXPECT_NE(error(so, {}, make).find("no scoring sequences"), std::string::npos);
  const std::vector<std::vector<int>> short_seq = {calibration[0], {1}};
  EXPECT_NE(error(so, short_seq, make).find("scoring sequence 1 has 1 tokens"), std::string::npos);
  so.linear_model = true;
  for (double t : {0.0, 1.5, std::numeric_limits<double>::quiet_NaN()}) {
    so.noise_relative_error = t;
    EXPECT_NE(error(so, calibration, make).find("noise_relative_error must be in (0, 1)"), std::string::npos) << t;
  }
  so.linear_model = false;
  so.threads = 0;
  EXPECT_NE(error(so, calibration, make).find("threads"), std::string::npos);
  so.threads = 1;
  EXPECT_NE(error(so, calibration, [](const m::Precision&) { return std::unique_ptr<m::Recipe>(); })
                .find("returned nothing for 4-bit per row"),
            std::string::npos);
  EXPECT_NE(error(so, calibration, recipe_factory("no-such-recipe")).find("unknown recipe 'no-such-recipe'"),
            std::string::npos);
  // allocate_bits: the target and the table
  const auto table = random_table(3, 1);
  for (double b : {0.0, -1.0, std::numeric_limits<double>::infinity()}) {
    EXPECT_NE(qtl::test::error_of([&] { (void)m::allocate_bits(table, b); }).find("must be finite and > 0"),
              std::string::npos) << b;
  }
  EXPECT_NE(qtl::test::error_of([&] { (void)m::allocate_bits(table, 1.0); }).find("cheapest choice"), std::string::npos);
  EXPECT_NE(qtl::test::error_of([&] { (void)m::allocate_bits(m::SensitivityTable{}, 3.0); }).find("empty"),
            std::string::npos);
}

TEST(MixedPrecision, RecipesThatFoldScalesAreRejected) {
  const auto& f = qtl::test::fixture();
  const auto calibration = f.calibration(0, 2);
  const auto make = recipe_factory("awq");
  m::SensitivityOptions so;
  so.candidates = {{4, 32}};
  EXPECT_NE(qtl::test::error_of([&] { (void)m::measure_sensitivity(f.fp32, calibration, calibration, so, make); })
                .find("folds input scales"),
            std::string::npos);
}

}  // namespace
