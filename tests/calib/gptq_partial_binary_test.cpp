// PB-GPTQ (qtl/calib/gptq_partial_binary.hpp) and GPTQ's keep option it is built on.
#include <gtest/gtest.h>
#include <qtl/calib/gptq.hpp>
#include <qtl/calib/gptq_partial_binary.hpp>
#include <qtl/kernel/table/reference_partial_binary.hpp>
#include <qtl/quant/metrics.hpp>
#include <qtl/quant/partial_binary.hpp>
#include <qtl/quant/uniform.hpp>

#include <cstdio>
#include <random>
#include <vector>

#include "calib/real_inputs.hpp"
#include "test_util.hpp"

namespace {

using qtl::Index;
using qtl::RowMatrixXf;

// A well-conditioned, correlated Hessian 2/n X^T X.
Eigen::MatrixXd hessian_of(Index cols, unsigned seed) {
  const RowMatrixXf x = qtl::test::gaussian(4 * cols, cols, seed) +
                        0.5 * qtl::test::gaussian(4 * cols, 1, seed + 1).replicate(1, cols);
  return (2.0 / double(x.rows())) * (x.cast<double>().transpose() * x.cast<double>());
}

TEST(GptqKeep, KeptWeightsLeaveNoErrorAndTakeNoPartInTheFit) {
  const Index rows = 12, cols = 96;
  const RowMatrixXf w = qtl::test::gaussian(rows, cols, 3, 0.1f);
  const Eigen::MatrixXd h = hessian_of(cols, 4);
  std::vector<std::uint8_t> keep(static_cast<std::size_t>(rows * cols), 0);
  std::mt19937 rng(5);
  for (auto& k : keep) k = (rng() % 7) == 0;
  qtl::calib::GptqOptions opt;
  opt.keep = keep;
  const auto res = qtl::calib::gptq(qtl::Uniform<3>{}, qtl::PerGroup{32}, w, h, opt);
  ASSERT_EQ(res.kept_values.rows(), rows);
  ASSERT_EQ(res.kept_values.cols(), cols);
  const auto plain = qtl::calib::gptq(qtl::Uniform<3>{}, qtl::PerGroup{32}, w, h);
  EXPECT_LT(res.report.total_proxy_loss, plain.report.total_proxy_loss);  // kept weights cost nothing
  for (Index r = 0; r < rows; ++r) {
    // The first column is visited first: nothing has been fed onto it yet.
    if (keep[static_cast<std::size_t>(r * cols)]) {
      EXPECT_EQ(res.kept_values(r, 0), w(r, 0));
    }
    for (Index c = 0; c < cols; ++c) {
      if (!keep[static_cast<std::size_t>(r * cols + c)]) {
        EXPECT_EQ(res.kept_values(r, c), 0.0f);
      }
    }
  }
  // A huge kept weight does not stretch its group's range: the fit ignores it.
  RowMatrixXf w2 = w;
  std::vector<std::uint8_t> keep2(static_cast<std::size_t>(rows * cols), 0);
  w2(0, 5) = 100.0f;
  keep2[5] = 1;
  opt.keep = keep2;
  const auto res2 = qtl::calib::gptq(qtl::Uniform<3>{}, qtl::PerGroup{32}, w2, h, opt);
  EXPECT_LT(std::abs(res2.matrix.params_at(0, 5).scale), 1.0f);
  EXPECT_NEAR(res2.kept_values(0, 5), 100.0f, 1.0f);
  // Every weight kept: nothing is quantized away, so nothing is fed forward.
  std::vector<std::uint8_t> all(static_cast<std::size_t>(rows * cols), 1);
  opt.keep = all;
  const auto res3 = qtl::calib::gptq(qtl::Uniform<3>{}, qtl::PerGroup{32}, w, h, opt);
  EXPECT_EQ(res3.kept_values, w);
  EXPECT_EQ(res3.report.total_proxy_loss, 0.0);
  // Act-order (parameters fitted up front) honours the mask too.
  opt.keep = keep2;
  opt.act_order = true;
  const auto res4 = qtl::calib::gptq(qtl::Uniform<3>{}, qtl::PerGroup{32}, w2, h, opt);
  EXPECT_LT(std::abs(res4.matrix.params_at(0, 5).scale), 1.0f);
  // A mask of the wrong size is an error naming it.
  std::vector<std::uint8_t> bad(5, 0);
  opt.keep = bad;
  EXPECT_THROW((void)qtl::calib::gptq(qtl::Uniform<3>{}, qtl::PerGroup{32}, w, h, opt), qtl::Error);
}

TEST(GptqPartialBinary, ResultIsAConsistentPartialBinaryMatrix) {
  const Index rows = 16, cols = 128;
  const RowMatrixXf w = qtl::test::gaussian(rows, cols, 7, 0.1f);
  const Eigen::MatrixXd h = hessian_of(cols, 8);
  for (auto storage : {qtl::SalientStorage::SparseList, qtl::SalientStorage::ChannelMask}) {
    qtl::PartialBinaryOptions pb;
    pb.salient_fraction = 0.1;
    pb.storage = storage;
    const auto g = qtl::calib::gptq_partial_binary(qtl::PerGroup{32}, w, h, pb);
    pb.column_importance = h.diagonal().cast<float>();
    const auto rtn = qtl::quantize_partial_binary(qtl::PerGroup{32}, w, pb);
    // The same salient positions and the same storage, so the same bits per weight.
    EXPECT_EQ(g.matrix.salient_count(), rtn.salient_count());
    EXPECT_EQ(g.matrix.columns, rtn.columns);
    EXPECT_EQ(g.matrix.channels, rtn.channels);
    EXPECT_EQ(qtl::bits_per_weight(g.matrix), qtl::bits_per_weight(rtn));
    // Round trip through the packed form.
    EXPECT_EQ(qtl::unpack_partial_binary(qtl::pack_partial_binary(g.matrix)), g.matrix);
    EXPECT_GT(g.report.total_proxy_loss, 0.0);
  }
  EXPECT_THROW((void)qtl::calib::gptq_partial_binary(qtl::PerGroup{32}, w, hessian_of(cols - 1, 9)), qtl::Error);
  qtl::PartialBinaryOptions bad;
  bad.salient_fraction = 1.5;
  EXPECT_THROW((void)qtl::calib::gptq_partial_binary(qtl::PerGroup{32}, w, h, bad), qtl::Error);
}

// On every layer of the real model (Hessians from calibration stories, errors on held-out ones):
// PB-GPTQ's output error is below the RTN partial binarization's with the same salient weights.
TEST(GptqPartialBinary, BeatsRtnPartialBinarizationOnTheRealModel) {
  const auto& model = qtl::test::real_model();
  for (double fraction : {0.05, 0.2}) {
    double sum_rtn = 0, sum_gptq = 0;
    for (const auto& layer : model.layers) {
      qtl::PartialBinaryOptions pb;
      pb.salient_fraction = fraction;
      const auto g = qtl::calib::gptq_partial_binary(qtl::PerGroup{32}, layer.weight, layer.stats, pb);
      pb.column_importance = layer.stats.hessian().diagonal().cast<float>();
      const auto rtn = qtl::quantize_partial_binary(qtl::PerGroup{32}, layer.weight, pb);
      const double e_rtn = qtl::relative_output_error(layer.weight, qtl::dequantize(rtn), layer.eval);
      const double e_g = qtl::relative_output_error(layer.weight, qtl::dequantize(g.matrix), layer.eval);
      sum_rtn += e_rtn * e_rtn;
      sum_gptq += e_g * e_g;
      EXPECT_LT(e_g, e_rtn) << layer.name << " salient fraction " << fraction;
    }
    std::printf("[ real ] partial binary, %.0f%% salient: rtn %.5f  pb-gptq %.5f (sum of squared relative output errors)\n",
                100 * fraction, sum_rtn, sum_gptq);
  }
}

}  // namespace
