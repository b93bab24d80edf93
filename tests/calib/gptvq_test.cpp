#include <gtest/gtest.h>
#include <qtl/calib/gptvq.hpp>
#include <qtl/quant/metrics.hpp>
#include <qtl/quant/vector.hpp>

#include <cstdio>

#include "calib/calib_test_util.hpp"
#include "calib/real_inputs.hpp"

namespace {

using qtl::Index;
using qtl::RowMatrixXf;
using qtl::calib::gptvq;

TEST(Gptvq, BeatsPlainVectorQuantizationAndReportsTheExactProxyLoss) {
  const RowMatrixXf x = qtl::test::gaussian(600, 100, 1) * qtl::test::gaussian(100, 100, 2) +
                        0.3f * qtl::test::gaussian(600, 100, 3);
  const RowMatrixXf w = qtl::test::gaussian(64, 100, 4);  // 100 = 25 vectors of 4
  qtl::calib::HessianAccumulator acc(100);
  acc.add_batch(x);
  const qtl::KMeansVQ<4, 8> v;  // 2 bits per weight
  const auto res = gptvq(v, qtl::VQGranularity{0}, w, acc);
  const RowMatrixXf g = qtl::dequantize(res.matrix);
  qtl::VQOptions vo;
  const Eigen::MatrixXd h = acc.hessian();
  vo.column_importance = h.diagonal().cast<float>();
  const RowMatrixXf plain = qtl::dequantize(qtl::quantize_vectors(v, qtl::VQGranularity{0}, w, vo));
  // Codebooks are fixed up front (no codebook update as in GPTVQ), so the gain is modest: 0.224
  // vs 0.246 here.
  EXPECT_LT(qtl::relative_output_error(w, g, x), qtl::relative_output_error(w, plain, x));
  Eigen::MatrixXd hd = h;
  hd.diagonal().array() += res.report.damping;
  for (Index r = 0; r < w.rows(); r += 7) {
    const Eigen::VectorXd d = (w.row(r) - g.row(r)).transpose().cast<double>();
    const double direct = d.dot(hd * d);
    EXPECT_NEAR(res.report.proxy_loss[r], direct, 2e-3 * direct) << r;
  }
  EXPECT_EQ(res.report.tokens, 600);
}

TEST(Gptvq, BadInputThrows) {
  const RowMatrixXf w = qtl::test::gaussian(16, 32, 1);
  qtl::calib::GptqOptions opt;
  opt.act_order = true;
  EXPECT_THROW((void)gptvq(qtl::KMeansVQ<2, 4>{}, qtl::VQGranularity{0}, w, Eigen::MatrixXd::Identity(32, 32), opt),
               qtl::Error);
  EXPECT_THROW((void)gptvq(qtl::KMeansVQ<2, 4>{}, qtl::VQGranularity{0}, w, Eigen::MatrixXd::Identity(31, 31)),
               qtl::Error);
}

// Every linear layer of the real model, 2 bits per weight (D = 4, 256 codewords per matrix): GPTVQ's
// held-out output error must be below plain (Hessian-weighted) vector quantization's.
TEST(GptvqRealModel, BeatsPlainVectorQuantization) {
  const auto& model = qtl::test::real_model();
  const qtl::KMeansVQ<4, 8> v;
  double sum_plain = 0, sum_g = 0;
  for (const auto& l : model.layers) {
    const auto res = gptvq(v, qtl::VQGranularity{0}, l.weight, l.stats);
    qtl::VQOptions vo;
    vo.column_importance = l.stats.hessian().diagonal().cast<float>();
    const RowMatrixXf plain = qtl::dequantize(qtl::quantize_vectors(v, qtl::VQGranularity{0}, l.weight, vo));
    const double e_plain = qtl::relative_output_error(l.weight, plain, l.eval);
    const double e_g = qtl::relative_output_error(l.weight, qtl::dequantize(res.matrix), l.eval);
    EXPECT_LT(e_g, e_plain) << l.name;
    sum_plain += e_plain * e_plain;
    sum_g += e_g * e_g;
  }
  std::printf("[ real ] %s  plain %.5f  gptvq %.5f (sum of squared relative output errors, held out)\n",
              v.name().c_str(), sum_plain, sum_g);
}

}  // namespace
