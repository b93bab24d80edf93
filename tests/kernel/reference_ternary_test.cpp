#include <gtest/gtest.h>
#include <qtl/kernel/lut/reference_ternary.hpp>

#include "test_util.hpp"

namespace {

TEST(ReferenceTernary, GemvEqualsProductWithDequantizedMatrix) {
  for (qtl::Index cols : {1, 5, 33, 172}) {
    const auto w = qtl::test::gaussian(6, cols, 8, 0.05f);
    const auto m = qtl::quantize_matrix(qtl::Ternary{}, qtl::PerGroup{32}, w);
    const auto p = qtl::pack_ternary_base3(m);
    const qtl::RowMatrixXf wq = qtl::dequantize(m);
    for (qtl::Index r = 0; r < 6; ++r) {
      for (qtl::Index c = 0; c < cols; ++c) ASSERT_EQ(qtl::kernel::ternary_weight(p.view(), r, c), wq(r, c));
    }
    const qtl::VectorXf x = qtl::test::gaussian(cols, 1, 9);
    const Eigen::VectorXd ref = wq.cast<double>() * x.cast<double>();
    const qtl::VectorXf y = qtl::gemv_ternary_reference(p, x);
    for (qtl::Index r = 0; r < 6; ++r) EXPECT_NEAR(y[r], ref[r], 1e-5 * (1 + std::fabs(ref[r])));
  }
  const auto p = qtl::pack_ternary_base3(qtl::quantize_matrix(qtl::Ternary{}, qtl::PerRow{}, qtl::test::gaussian(2, 5, 1)));
  EXPECT_THROW((void)qtl::gemv_ternary_reference(p, qtl::VectorXf::Ones(4)), qtl::Error);
}

}  // namespace
