#include <gtest/gtest.h>
#include <qtl/kernels.hpp>

#include <limits>

#include "test_util.hpp"

namespace {

template <int B, qtl::Mode M>
void reference_matches_eigen(qtl::Index rows, qtl::Index cols, qtl::Index tokens, const qtl::Granularity& g,
                             unsigned seed) {
  const auto w = qtl::test::gaussian(rows, cols, seed, 0.1f);
  const auto q = qtl::quantize_matrix(qtl::Uniform<B, M>{}, g, w);
  const auto p = qtl::pack(q);
  const qtl::RowMatrixXf wq = qtl::dequantize(q);
  const auto x = qtl::test::gaussian(tokens, cols, seed + 1);
  const qtl::RowMatrixXf expected = x * wq.transpose();
  const auto y = qtl::gemm_reference(p, x);
  const float tol = 1e-5f * (1.0f + expected.cwiseAbs().maxCoeff());
  ASSERT_LE((y - expected).cwiseAbs().maxCoeff(), tol) << B << " bits " << rows << "x" << cols;
  const qtl::VectorXf x0 = x.row(0).transpose();
  const auto y0 = qtl::gemv_reference(p, x0);
  ASSERT_LE((y0 - expected.row(0).transpose()).cwiseAbs().maxCoeff(), tol);
}

TEST(ReferenceKernels, GemvGemmEqualEigenWithDequantizedMatrix) {
  unsigned seed = 0;
  for (auto [rows, cols] : {std::pair<qtl::Index, qtl::Index>{1, 1}, {1, 33}, {7, 1}, {13, 172}, {64, 64}, {5, 100}}) {
    for (const qtl::Granularity& g : {qtl::Granularity{qtl::PerTensor{}}, qtl::Granularity{qtl::PerRow{}},
                                      qtl::Granularity{qtl::PerGroup{32}}, qtl::Granularity{qtl::PerGroup{20}}}) {
      for (qtl::Index tokens : {1, 3}) {
        reference_matches_eigen<2, qtl::Mode::Asymmetric>(rows, cols, tokens, g, ++seed);
        reference_matches_eigen<3, qtl::Mode::Symmetric>(rows, cols, tokens, g, ++seed);
        reference_matches_eigen<4, qtl::Mode::Asymmetric>(rows, cols, tokens, g, ++seed);
        reference_matches_eigen<4, qtl::Mode::Symmetric>(rows, cols, tokens, g, ++seed);
        reference_matches_eigen<8, qtl::Mode::Asymmetric>(rows, cols, tokens, g, ++seed);
      }
    }
  }
}

TEST(ReferenceKernels, BadActivationsThrow) {
  const auto w = qtl::test::gaussian(4, 40, 1);
  const auto p = qtl::pack(qtl::quantize_matrix(qtl::Uniform<4>{}, qtl::PerGroup{32}, w));
  EXPECT_THROW((void)qtl::gemv_reference(p, qtl::VectorXf::Ones(39)), qtl::Error);
  EXPECT_THROW((void)qtl::gemm_reference(p, qtl::RowMatrixXf::Ones(2, 41)), qtl::Error);
  qtl::VectorXf x = qtl::VectorXf::Ones(40);
  x[5] = std::numeric_limits<float>::quiet_NaN();
  EXPECT_THROW((void)qtl::gemv_reference(p, x), qtl::Error);
}

}  // namespace
