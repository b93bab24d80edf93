#include <gtest/gtest.h>
#include <qtl/kernel/vq/reference.hpp>

#include "test_util.hpp"

namespace {

template <class V, class Plain>
void check(const V& v, qtl::VQGranularity g, qtl::Index rows, qtl::Index cols, Plain plain) {
  const auto w = qtl::test::gaussian(rows, cols, 31, 0.05f);
  const auto m = qtl::quantize_vectors(v, g, w);
  const auto p = qtl::pack_vq(m);
  const qtl::RowMatrixXf wq = qtl::dequantize(m);
  const qtl::VectorXf x = qtl::test::gaussian(cols, 1, 3);
  const Eigen::VectorXd ref = wq.cast<double>() * x.cast<double>();
  const qtl::VectorXf y = qtl::gemv_vq_reference(p, v, x);
  qtl::VectorXf y2(rows);
  plain(qtl::view(p), x.data(), y2.data());
  for (qtl::Index r = 0; r < rows; ++r) {
    EXPECT_NEAR(y[r], ref[r], 1e-5 * (1 + std::fabs(ref[r]))) << v.name();
    EXPECT_EQ(y2[r], y[r]) << v.name();  // the plain-data oracle agrees exactly
  }
}

TEST(ReferenceVQ, GemvEqualsProductWithDequantizedMatrix) {
  auto codebook = [](const qtl::PackedVQView& w, const float* x, float* y) { qtl::kernel::gemv_vq_codebook_reference(w, x, y); };
  auto e8p = [](const qtl::PackedVQView& w, const float* x, float* y) {
    qtl::kernel::gemv_e8p_reference(w, qtl::E8P::abs_grid().data(), qtl::E8P::abs_parity().data(), x, y);
  };
  check(qtl::KMeansVQ<2, 4>{}, {}, 7, 33, codebook);
  check(qtl::KMeansVQ<4, 6>{}, {4}, 16, 70, codebook);
  check(qtl::KMeansVQ<8, 5>{}, {}, 40, 172, codebook);
  check(qtl::E8P{}, {1}, 6, 172, e8p);
  check(qtl::E8P{}, {}, 4, 64, e8p);
  // the generic entry point covers compositions
  const qtl::ResidualVQ<qtl::E8P, qtl::KMeansVQ<8, 4>> rvq;
  const auto w = qtl::test::gaussian(16, 64, 2, 0.05f);
  const auto m = qtl::quantize_vectors(rvq, {}, w);
  const qtl::VectorXf x = qtl::test::gaussian(64, 1, 3);
  const Eigen::VectorXd ref = qtl::dequantize(m).cast<double>() * x.cast<double>();
  const qtl::VectorXf y = qtl::gemv_vq_reference(qtl::pack_vq(m), rvq, x);
  for (int r = 0; r < 16; ++r) EXPECT_NEAR(y[r], ref[r], 1e-5 * (1 + std::fabs(ref[r])));
  EXPECT_THROW((void)qtl::gemv_vq_reference(qtl::pack_vq(m), rvq, qtl::VectorXf::Ones(63)), qtl::Error);
  EXPECT_THROW((void)qtl::gemv_vq_reference(qtl::pack_vq(m), qtl::E8P{}, x), qtl::Error);
}

}  // namespace
