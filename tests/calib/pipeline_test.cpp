#include <gtest/gtest.h>
#include <qtl/calib/pipeline.hpp>
#include <qtl/quant/metrics.hpp>
#include <qtl/quant/uniform.hpp>

#include <cstdio>

#include "calib/calib_test_util.hpp"
#include "calib/real_inputs.hpp"

namespace {

using qtl::Index;
using qtl::RowMatrixXf;
using qtl::calib::calibrate;
using qtl::calib::Pipeline;
using qtl::calib::Solver;
using qtl::test::statistics_of;


std::vector<Pipeline> every_composition() {
  std::vector<Pipeline> out;
  for (int rotate = 0; rotate < 2; ++rotate)
    for (int smooth = 0; smooth < 2; ++smooth)
      for (int awq = 0; awq < 2; ++awq)
        for (Solver solver : {Solver::Rtn, Solver::Gptq})
          for (bool act : {false, true}) {
            Pipeline r;
            r.rotate = rotate;
            r.smoothquant = smooth;
            r.awq = awq;
            r.awq_options.clip_search = false;  // clipping is a quantization step, not a transform
            r.solver = solver;
            r.gptq.act_order = act;
            r.name = qtl::str_cat(rotate ? "rot+" : "", smooth ? "smooth+" : "", awq ? "awq+" : "",
                                  solver == Solver::Gptq ? (act ? "gptq-act" : "gptq") : "rtn");
            if (solver == Solver::Rtn && act) continue;
            out.push_back(r);
          }
  return out;
}

TEST(Calibrate, WithAnExactQuantizerEveryCompositionLeavesTheLayerUnchanged) {
  for (Index n : {64, 172}) {
    const RowMatrixXf x = qtl::test::correlated_activations(300, n, 1);
    const RowMatrixXf w = qtl::test::gaussian(24, n, 2);
    const auto st = statistics_of(x);
    const RowMatrixXf y = x * w.transpose();
    for (const Pipeline& r : every_composition()) {
      // SmoothQuant and AWQ scales spread the weights' values, so the exact table needs groups of
      // at most 256 distinct values: groups of 32.
      const auto layer = calibrate(qtl::test::ExactTable{}, qtl::PerGroup{32}, w, st, r);
      const RowMatrixXf y2 = layer.forward(x);
      EXPECT_LT((y - y2).norm() / y.norm(), 2e-6) << r.name << " n=" << n;
      EXPECT_LT((layer.effective_weight() - w).norm() / w.norm(), 2e-6) << r.name << " n=" << n;
      // the online transform, token by token, agrees with the batched one
      RowMatrixXf tx = x.topRows(1);
      layer.transform.apply(tx.data());
      EXPECT_LT((tx - layer.transform.apply_activations(x.topRows(1))).norm(), 1e-6 * tx.norm());
    }
  }
}

TEST(Calibrate, LowRankWithAnExactQuantizerIsZero) {
  const RowMatrixXf x = qtl::test::correlated_activations(200, 64, 3);
  const RowMatrixXf w = qtl::test::gaussian(16, 64, 4);
  Pipeline r;
  r.rotate = true;
  r.low_rank.rank = 4;
  const auto layer = calibrate(qtl::test::ExactTable{}, qtl::PerGroup{32}, w, statistics_of(x), r);
  ASSERT_TRUE(layer.low_rank.has_value());
  EXPECT_LT(layer.low_rank->dense().norm(), 1e-6 * w.norm());
  EXPECT_NEAR(layer.bits_per_weight() - qtl::bits_per_weight(layer.matrix), 16.0 * 4 * (16 + 64) / (16.0 * 64), 1e-12);
}

TEST(Calibrate, ReportsWhatRan) {
  const RowMatrixXf x = qtl::test::correlated_activations(200, 64, 5);
  const RowMatrixXf w = qtl::test::gaussian(16, 64, 6);
  Pipeline r;
  r.rotate = true;
  r.awq = true;
  const auto layer = calibrate(qtl::Uniform<3>{}, qtl::PerGroup{32}, w, statistics_of(x), r);
  ASSERT_TRUE(layer.gptq_report.has_value());
  ASSERT_TRUE(layer.awq_report.has_value());
  EXPECT_EQ(layer.transform.steps().size(), 2u);
  EXPECT_EQ(layer.gptq_report->tokens, 200);
  EXPECT_THROW((void)calibrate(qtl::Uniform<3>{}, qtl::PerGroup{32}, RowMatrixXf(w.leftCols(63)), statistics_of(x), r),
               qtl::Error);
}

// Real model: the composed recipes against RTN at 2 and 3 bits, held-out output error summed over
// every linear layer (each layer calibrated alone, inputs from the fp32 model).
// Every recipe must beat RTN over the whole model. Recipes with GPTQ and no rotation must also
// beat it on every single layer (error feedback against the layer's own Hessian). A rotation
// does not win on every layer of this model: its layers are only 64 (or 172) inputs wide with
// groups of 32, its weights have few outlier inputs for the rotation to spread, and the
// rotation mixes the two groups of a 64-wide row, so per-group ranges that were tight become
// wider on some layers. The number of layers where it loses is printed, not hidden.
TEST(CalibrateRealModel, RecipesBeatRtn) {
  const auto& model = qtl::test::real_model();
  auto total = [&](auto q, const Pipeline& r, bool per_layer_check, double* rtn_out) {
    double sum = 0, sum_rtn = 0;
    int losses = 0;
    for (const auto& l : model.layers) {
      const auto layer = calibrate(q, qtl::PerGroup{32}, l.weight, l.stats.statistics(), r);
      const double e = qtl::relative_output_error(l.weight, layer.effective_weight(), l.eval);
      Pipeline rtn;
      rtn.solver = Solver::Rtn;
      const auto base = calibrate(q, qtl::PerGroup{32}, l.weight, l.stats.statistics(), rtn);
      const double e_rtn = qtl::relative_output_error(l.weight, base.effective_weight(), l.eval);
      if (per_layer_check) {
        EXPECT_LT(e, e_rtn) << r.name << " " << q.name() << " " << l.name;
      }
      losses += e >= e_rtn;
      sum += e * e;
      sum_rtn += e_rtn * e_rtn;
    }
    *rtn_out = sum_rtn;
    std::printf("[ real ] %-16s %-12s loses to RTN on %d of %zu layers\n", r.name.c_str(), q.name().c_str(), losses,
                model.layers.size());
    return sum;
  };
  auto report = [&](auto q) {
    Pipeline rot;
    rot.name = "rotate+rtn";
    rot.rotate = true;
    rot.solver = Solver::Rtn;
    Pipeline gptq;
    Pipeline rot_gptq = gptq;
    rot_gptq.name = "rotate+gptq";
    rot_gptq.rotate = true;
    Pipeline rsq = rot_gptq;
    rsq.name = "rotate+awq+gptq";
    rsq.awq = true;
    Pipeline lq = gptq;
    lq.name = "gptq+lowrank4";
    lq.low_rank.rank = 4;
    for (const Pipeline* r : {&rot, &gptq, &rot_gptq, &rsq, &lq}) {
      double rtn = 0;
      const double e = total(q, *r, /*per_layer_check=*/!r->rotate, &rtn);
      std::printf("[ real ] %-16s %-12s rtn %.5f  recipe %.5f\n", r->name.c_str(), q.name().c_str(), rtn, e);
      EXPECT_LT(e, rtn) << r->name << " " << q.name();
    }
  };
  report(qtl::Uniform<2>{});
  report(qtl::Uniform<3>{});
}

}  // namespace
