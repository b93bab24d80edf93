// Every table-decode kernel path the CPU supports against the scalar reference
// (qtl/kernel/table/reference.hpp), and the portable path's plain C++ twin (table_tiles_scalar)
// too, on real quantizers of 1..4 bits in both table forms.
#include <gtest/gtest.h>
#include <qtl/kernel/table.hpp>
#include <qtl/kernel/table/layout.hpp>
#include <qtl/kernel/table/reference.hpp>
#include <qtl/model/quantized_linear.hpp>
#include <qtl/quant/binary.hpp>
#include <qtl/quant/codebook.hpp>
#include <qtl/quant/log2.hpp>
#include <qtl/quant/ternary.hpp>

#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <variant>
#include <vector>

#include "kernel_test_util.hpp"
#include "test_util.hpp"

namespace {

using qtl::Index;
using qtl::test::kUnit;
using qtl::test::Case;
using qtl::kernel::KernelPath;
using qtl::kernel::TableKernelMatrix;

std::vector<KernelPath> supported_paths() { return qtl::kernel::supported_kernel_paths(); }



// Kernel vs reference for every supported path. Bound (qtl/kernel/table/kernel_matrix.hpp): each
// output is 16 fp32 FMA chains of `slices` terms, then 4 pairwise additions, over exact weights;
// the reference sums exactly in double and rounds once. So
//   |y - ref| <= (slices + 5) u sum_c |w x| + u |ref|   (u = 2^-24);
// the test allows twice the first term.
template <class Q>
void check_table_paths(const Q& quantizer, const Case& cs, const qtl::RowMatrixXf& x, unsigned seed) {
  const auto w = qtl::test::gaussian(cs.rows, cs.cols, seed, 0.05f);
  const auto q = qtl::quantize_matrix(quantizer, cs.g, w);
  const auto packed = qtl::pack_table(q);
  const auto pv = packed.view();
  const Index m = x.rows();
  qtl::RowMatrixXf ref(m, cs.rows);
  qtl::kernel::gemm_table_reference(pv, x.data(), x.outerStride(), m, ref.data(), ref.outerStride());
  qtl::RowMatrixXd wabs(cs.rows, cs.cols);
  for (Index r = 0; r < cs.rows; ++r) {
    for (Index c = 0; c < cs.cols; ++c) wabs(r, c) = std::abs(double(qtl::kernel::table_weight(pv, r, c)));
  }
  const qtl::RowMatrixXd mag = x.cwiseAbs().cast<double>() * wabs.transpose();

  for (KernelPath path : supported_paths()) {
    SCOPED_TRACE(testing::Message() << quantizer.name() << " " << cs.rows << "x" << cs.cols << " "
                                    << qtl::to_string(cs.g) << " m=" << m << " path=" << qtl::kernel::to_string(path));
    const TableKernelMatrix k(packed, path);
    ASSERT_EQ(k.rows(), cs.rows);
    ASSERT_EQ(k.cols(), cs.cols);
    ASSERT_EQ(k.bits(), Q::kBits);
    ASSERT_EQ(k.path(), path);
    const double chain = double(k.view().slices + 5);
    qtl::RowMatrixXf y = qtl::RowMatrixXf::Constant(m, cs.rows, -7.0f);
    k.gemm(x.data(), x.outerStride(), m, y.data(), y.outerStride(), 1);
    for (Index n = 0; n < m; ++n) {
      for (Index r = 0; r < cs.rows; ++r) {
        const double tol = 2.0 * chain * kUnit * mag(n, r) + kUnit * std::abs(double(ref(n, r))) + 1e-30;
        ASSERT_LE(std::abs(double(y(n, r)) - double(ref(n, r))), tol) << "token " << n << " row " << r;
      }
    }
    if (path == KernelPath::Portable) {
      // The portable path is xsimd code; its plain C++ twin (table_tiles_scalar) meets the same bound.
      const auto kv = k.view();
      std::vector<float> xk(static_cast<std::size_t>(m * kv.kernel_cols()), 0.0f);
      qtl::kernel::prepare_table_activations(kv, x.data(), x.outerStride(), 0, m, xk.data());
      qtl::RowMatrixXf ys(m, cs.rows);
      qtl::kernel::table_tiles_scalar(kv, xk.data(), kv.kernel_cols(), m, ys.data(), ys.outerStride(), 0, kv.tiles);
      for (Index n = 0; n < m; ++n) {
        for (Index r = 0; r < cs.rows; ++r) {
          const double tol = 2.0 * chain * kUnit * mag(n, r) + kUnit * std::abs(double(ref(n, r))) + 1e-30;
          ASSERT_LE(std::abs(double(ys(n, r)) - double(ref(n, r))), tol) << "scalar tiles, token " << n << " row " << r;
        }
      }
    }
    // Token tiling does not change a result: each token alone (the GEMV path) gives the same bits.
    for (Index n = 0; n < m; ++n) {
      std::vector<float> yn(static_cast<std::size_t>(cs.rows));
      k.gemv(x.row(n).data(), yn.data(), 1);
      for (Index r = 0; r < cs.rows; ++r) ASSERT_EQ(yn[static_cast<std::size_t>(r)], y(n, r)) << "token " << n;
    }
  }
}

const std::vector<Case>& cases() {
  static const std::vector<Case> c = {
      {1, 1, qtl::PerTensor{}},     {1, 33, qtl::PerRow{}},        {17, 1, qtl::PerRow{}},
      {13, 172, qtl::PerGroup{32}}, {9, 300, qtl::PerGroup{64}},   {6, 200, qtl::PerGroup{48}},
      {7, 100, qtl::PerGroup{7}},   {5, 1100, qtl::PerRow{}},      {10, 530, qtl::PerTensor{}},
      {3, 1030, qtl::PerGroup{128}},
  };
  return c;
}

// Fewest values in a parameter group of this case (k-means needs 2^bits of them to fit).
Index min_group_values(const Case& cs) {
  if (std::holds_alternative<qtl::PerTensor>(cs.g)) return cs.rows * cs.cols;
  if (std::holds_alternative<qtl::PerRow>(cs.g)) return cs.cols;
  const Index gs = std::min(std::get<qtl::PerGroup>(cs.g).size, cs.cols);
  return cs.cols % gs == 0 ? gs : cs.cols % gs;
}

template <class Q>
bool fits(const Q& quantizer, const Case& cs) {
  return std::string(quantizer.name()).rfind("kmeans", 0) != 0 || min_group_values(cs) >= (Index{1} << Q::kBits);
}

template <class Q>
void check_quantizer(const Q& quantizer) {
  unsigned seed = 100;
  for (const Case& cs : cases()) {
    if (!fits(quantizer, cs)) continue;
    for (Index m : {1, 5, 17}) {
      if (m == 17 && cs.rows * cs.cols > 6000) continue;  // keeps the sanitizer pass short
      const auto x = qtl::test::gaussian(m, cs.cols, ++seed);
      check_table_paths(quantizer, cs, x, ++seed);
    }
  }
}

TEST(TableKernelMatrix, OneBitMatchesReference) {
  check_quantizer(qtl::Binary<false>{});  // scaled-shared
  check_quantizer(qtl::Binary<true>{});   // per-set
  check_quantizer(qtl::KMeansCodebook<1>{});
}

TEST(TableKernelMatrix, TwoBitMatchesReference) {
  check_quantizer(qtl::Ternary{qtl::TernaryRule::AbsMean});  // scaled-shared
  check_quantizer(qtl::Log2<2>{});
  check_quantizer(qtl::ResidualBinary{});                   // per-set
  check_quantizer(qtl::KMeansCodebook<2>{});
}

TEST(TableKernelMatrix, ThreeBitMatchesReference) {
  check_quantizer(qtl::Log2<3>{});  // scaled-shared
  check_quantizer(qtl::KMeansCodebook<3>{});
}

TEST(TableKernelMatrix, FourBitMatchesReference) {
  check_quantizer(qtl::NF4{});  // scaled-shared
  check_quantizer(qtl::Log2<4, qtl::Log2Base::Sqrt2>{});
  check_quantizer(qtl::KMeansCodebook<4>{});  // per-set
}

TEST(TableKernelMatrix, ManyTokensMatchReferenceAndGemv) {
  // More tokens than one GEMM pass holds (64 on AVX-512), and a token count that leaves a
  // remainder for every register block.
  const qtl::RowMatrixXf x = qtl::test::gaussian(70, 150, 71);
  check_table_paths(qtl::NF4{}, {9, 150, qtl::PerGroup{32}}, x, 72);
  check_table_paths(qtl::KMeansCodebook<3>{}, {6, 600, qtl::PerGroup{64}}, qtl::test::gaussian(67, 600, 73), 74);
}

TEST(TableKernelMatrix, LayoutHoldsEveryCode) {
  // The documented bit order: table_kernel_code reads back each code at its kernel column.
  for (const Case& cs : cases()) {
    const auto w = qtl::test::gaussian(cs.rows, cs.cols, 3, 1.0f);
    auto check = [&](const auto& quantizer) {
      if (!fits(quantizer, cs)) return;
      const auto q = qtl::quantize_matrix(quantizer, cs.g, w);
      const auto packed = qtl::pack_table(q);
      const qtl::kernel::TableKernelLayout layout(packed.view());
      const auto v = layout.view();
      for (Index r = 0; r < cs.rows; ++r) {
        for (Index g = 0; g < v.groups; ++g) {
          for (Index c = v.group_col_begin[g]; c < v.group_col_begin[g + 1]; ++c) {
            const Index kc = Index{v.group_slice_begin[g]} * 16 + (c - v.group_col_begin[g]);
            ASSERT_EQ(qtl::kernel::table_kernel_code(v, r / 4, int(r % 4), kc), int(q.code(r, c)))
                << quantizer.name() << " row " << r << " col " << c;
          }
        }
      }
    };
    check(qtl::Binary<false>{});
    check(qtl::Ternary{});
    check(qtl::KMeansCodebook<3>{});
    check(qtl::NF4{});
  }
}

TEST(TableKernelMatrix, ResultsAreBitIdenticalForAnyThreadCount) {
  const Case cs{203, 300, qtl::PerGroup{64}};
  const auto w = qtl::test::gaussian(cs.rows, cs.cols, 21, 0.05f);
  const auto x = qtl::test::gaussian(13, cs.cols, 22);
  const auto nf4 = qtl::pack_table(qtl::quantize_matrix(qtl::NF4{}, cs.g, w));
  const auto km3 = qtl::pack_table(qtl::quantize_matrix(qtl::KMeansCodebook<3>{}, cs.g, w));
  for (const auto* packed : {&nf4, &km3}) {
    for (KernelPath path : supported_paths()) {
      TableKernelMatrix k(*packed, path);
      qtl::test::expect_thread_count_independent(k, x, qtl::kernel::to_string(path));
      // and token 0 of the 13-token GEMM is the GEMV too
      const qtl::RowMatrixXf y = k.gemm(x, 1);
      const qtl::VectorXf v = k.gemv(qtl::VectorXf(x.row(0).transpose()), 1);
      ASSERT_EQ(std::memcmp(y.data(), v.data(), sizeof(float) * std::size_t(v.size())), 0);
    }
  }
}

TEST(TableKernelMatrix, StridedActivationsAndOutputs) {
  const auto w = qtl::test::gaussian(11, 70, 51, 0.1f);
  const auto packed = qtl::pack_table(qtl::quantize_matrix(qtl::NF4{}, qtl::PerGroup{32}, w));
  const auto x = qtl::test::gaussian(6, 80, 52);  // ldx = 80 > cols
  for (KernelPath path : supported_paths()) {
    const TableKernelMatrix k(packed, path);
    qtl::RowMatrixXf y = qtl::RowMatrixXf::Constant(6, 15, 99.0f);  // ldy = 15 > rows
    k.gemm(x.data(), 80, 6, y.data(), 15, 2);
    const qtl::RowMatrixXf yc = k.gemm(x.leftCols(70), 1);
    for (Index n = 0; n < 6; ++n) {
      for (Index r = 0; r < 11; ++r) ASSERT_EQ(y(n, r), yc(n, r));
      for (Index r = 11; r < 15; ++r) ASSERT_EQ(y(n, r), 99.0f) << "wrote past rows";
    }
  }
}

TEST(TableKernelMatrix, CheckedEntryPointsRejectBadInput) {
  const auto w = qtl::test::gaussian(8, 40, 41, 0.1f);
  const auto packed = qtl::pack_table(qtl::quantize_matrix(qtl::NF4{}, qtl::PerGroup{16}, w));
  const TableKernelMatrix k(packed);
  EXPECT_EQ(k.bits(), 4);
  EXPECT_GT(k.bytes(), std::size_t{8 * 40 / 2});
  qtl::test::expect_checked_entry_points_reject_bad_input(k, 8, 40);
  EXPECT_THROW(TableKernelMatrix(qtl::TablePackedMatrix{}), qtl::Error);
  for (KernelPath p : qtl::kernel::kAllKernelPaths) {
    TableKernelMatrix kp(packed, KernelPath::Portable);
    if (qtl::kernel::path_supported(p)) {
      EXPECT_NO_THROW(kp.set_path(p));
      EXPECT_EQ(kp.path(), p);
    } else {
      EXPECT_THROW(kp.set_path(p), qtl::Error);
      EXPECT_THROW(TableKernelMatrix(packed, p), qtl::Error);
    }
  }
  // Zero activations give exactly zero.
  EXPECT_EQ(k.gemv(qtl::VectorXf::Zero(40)), qtl::VectorXf::Zero(8));
}

}  // namespace

namespace {

TEST(TableKernelMatrix, PackedLinearOfATableQuantizerRunsTheTableKernel) {
  const auto w = qtl::test::gaussian(24, 100, 61, 0.1f);
  const auto q = qtl::quantize_matrix(qtl::NF4{}, qtl::PerGroup{32}, w);
  const auto op = qtl::model::make_packed_linear(q, {qtl::kernel::ActivationMode::Fp32, 2});
  const auto* linear = dynamic_cast<const qtl::model::PackedLinear<TableKernelMatrix>*>(op.get());
  ASSERT_NE(linear, nullptr) << op->describe();
  EXPECT_EQ(linear->kernel().path(), qtl::kernel::default_kernel_path());
  const auto x = qtl::test::gaussian(9, 100, 62);
  const qtl::RowMatrixXf y = op->forward(x);
  const qtl::RowMatrixXf ref = qtl::gemm_table_reference(qtl::pack_table(q), x);
  const qtl::RowMatrixXf mag = x.cwiseAbs() * qtl::dequantize(q).cwiseAbs().transpose();
  for (Index n = 0; n < 9; ++n) {
    for (Index r = 0; r < 24; ++r) {
      const double tol = 2.0 * (100.0 / 16 + 8) * kUnit * mag(n, r) + kUnit * std::abs(double(ref(n, r)));
      ASSERT_LE(std::abs(double(y(n, r)) - double(ref(n, r))), tol);
    }
  }
}

}  // namespace
