#include <gtest/gtest.h>
#include <qtl/kernel/table/reference.hpp>
#include <qtl/quant/binary.hpp>
#include <qtl/quant/codebook.hpp>
#include <qtl/quant/log2.hpp>
#include <qtl/quant/ternary.hpp>

#include "test_util.hpp"

namespace {

template <class Q>
void gemv_equals_dequantized_product(const Q& q, const qtl::Granularity& g, qtl::Index rows, qtl::Index cols) {
  const auto w = qtl::test::gaussian(rows, cols, 21, 0.05f);
  const auto m = qtl::quantize_matrix(q, g, w);
  const auto p = qtl::pack_table(m);
  const qtl::RowMatrixXf wq = qtl::dequantize(m);
  // every weight the kernel decodes equals the dequantized matrix bit for bit
  const auto v = p.view();
  for (qtl::Index r = 0; r < rows; ++r) {
    for (qtl::Index c = 0; c < cols; ++c) ASSERT_EQ(qtl::kernel::table_weight(v, r, c), wq(r, c)) << q.name();
  }
  const qtl::VectorXf x = qtl::test::gaussian(cols, 1, 5);
  const Eigen::VectorXd ref = wq.cast<double>() * x.cast<double>();
  const qtl::VectorXf y = qtl::gemv_table_reference(p, x);
  for (qtl::Index r = 0; r < rows; ++r) EXPECT_NEAR(y[r], ref[r], 1e-5 * (1 + std::fabs(ref[r]))) << q.name();
  const qtl::RowMatrixXf X = qtl::test::gaussian(3, cols, 6);
  const qtl::RowMatrixXf Y = qtl::gemm_table_reference(p, X);
  const Eigen::MatrixXd R = X.cast<double>() * wq.cast<double>().transpose();
  EXPECT_LT((Y.cast<double>() - R).cwiseAbs().maxCoeff(), 1e-5 * (1 + R.cwiseAbs().maxCoeff()));
}

template <class Q>
void all_shapes(const Q& q) {
  gemv_equals_dequantized_product(q, qtl::PerGroup{32}, 9, 112);  // short last group, padded last block
  gemv_equals_dequantized_product(q, qtl::PerRow{}, 1, 17);
  gemv_equals_dequantized_product(q, qtl::PerTensor{}, 5, 64);
}

TEST(ReferenceTable, GemvEqualsProductWithDequantizedMatrix) {
  all_shapes(qtl::Log2<3>{});
  all_shapes(qtl::Log2<4, qtl::Log2Base::Sqrt2>{});
  all_shapes(qtl::PowerGrid<4>{1.25f});
  all_shapes(qtl::NF4{});
  all_shapes(qtl::FP4{});
  all_shapes(qtl::ScaledCodebook<2>{qtl::DecodeTable{-1.0f, -0.2f, 0.3f, 0.9f}});
  all_shapes(qtl::KMeansCodebook<2>{});
  all_shapes(qtl::KMeansCodebook<4>{});
  all_shapes(qtl::Binary<false>{});
  all_shapes(qtl::Binary<true>{});
  all_shapes(qtl::ResidualBinary{});
  all_shapes(qtl::Ternary{qtl::TernaryRule::MseOptimal});
}

TEST(ReferenceTable, CheckedEntryPointsRejectBadActivations) {
  const auto p = qtl::pack_table(qtl::quantize_matrix(qtl::NF4{}, qtl::PerRow{}, qtl::test::gaussian(3, 8, 1)));
  EXPECT_THROW((void)qtl::gemv_table_reference(p, qtl::VectorXf::Ones(7)), qtl::Error);
  qtl::VectorXf x = qtl::VectorXf::Ones(8);
  x[2] = std::numeric_limits<float>::quiet_NaN();
  EXPECT_THROW((void)qtl::gemv_table_reference(p, x), qtl::Error);
  EXPECT_THROW((void)qtl::gemm_table_reference(p, qtl::RowMatrixXf::Ones(2, 9)), qtl::Error);
}

}  // namespace
