// The table family's int8-activation mode (qtl/kernel/table/kernel_matrix.hpp): every path the
// CPU supports against the rounded-table weights W8 on the same int8 activations, and the
// documented bound against the exact fp32 reference.
#include <gtest/gtest.h>
#include <qtl/detail/fp16.hpp>
#include <qtl/kernel/table.hpp>
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
#include <vector>

#include "kernel_test_util.hpp"
#include "test_util.hpp"

namespace {

using qtl::Index;
using qtl::test::kUnit;
using qtl::test::Case;
using qtl::kernel::ActivationMode;
using qtl::kernel::KernelPath;
using qtl::kernel::TableKernelMatrix;



// Scale s_p of the parameter set holding (r, c).
double set_scale(const qtl::PackedTableView& v, Index r, Index c) {
  const Index p = v.groups_per_row == 0 ? 0 : r * v.groups_per_row + c / v.group_size;
  return double(qtl::detail::half_to_float(v.scales[p]));
}

template <class Q>
void check_int8(const Q& quantizer, const Case& cs, Index m, unsigned seed) {
  const auto w = qtl::test::gaussian(cs.rows, cs.cols, seed, 0.05f);
  const auto x = qtl::test::gaussian(m, cs.cols, seed + 1);
  const auto packed = qtl::pack_table(qtl::quantize_matrix(quantizer, cs.g, w));
  const auto pv = packed.view();
  ASSERT_TRUE(TableKernelMatrix::int8_supported(packed));
  qtl::RowMatrixXf ref(m, cs.rows);
  qtl::kernel::gemm_table_reference(pv, x.data(), x.outerStride(), m, ref.data(), ref.outerStride());
  double tmax = 0.0;
  for (int k = 0; k < (1 << Q::kBits); ++k) tmax = std::max(tmax, std::abs(double(pv.shared_table[k])));

  for (KernelPath path : qtl::kernel::supported_kernel_paths()) {
    SCOPED_TRACE(testing::Message() << quantizer.name() << " " << cs.rows << "x" << cs.cols << " "
                                    << qtl::to_string(cs.g) << " m=" << m << " path=" << qtl::kernel::to_string(path));
    const TableKernelMatrix k(packed, ActivationMode::Int8, path);
    ASSERT_EQ(k.mode(), ActivationMode::Int8);
    ASSERT_EQ(k.rows(), cs.rows);
    ASSERT_EQ(k.cols(), cs.cols);
    const auto& t8 = k.int8_table();
    int t8max = 0;
    for (int j = 0; j < (1 << Q::kBits); ++j) t8max = std::max(t8max, std::abs(int{t8.t8[j]}));
    ASSERT_GE(t8max, 1);
    ASSERT_FLOAT_EQ(t8.step * float(t8max), float(tmax));
    // W8 = s_p e T8[code], within |s_p| max|T| / 254 of the exact weight.
    qtl::RowMatrixXd w8(cs.rows, cs.cols);
    for (Index r = 0; r < cs.rows; ++r) {
      for (Index c = 0; c < cs.cols; ++c) {
        const double sp = set_scale(pv, r, c);
        w8(r, c) = sp * double(t8.step) * t8.t8[packed.code(r, c)];
        const double exact = double(qtl::kernel::table_weight(pv, r, c));
        ASSERT_LE(std::abs(w8(r, c) - exact), std::abs(sp) * tmax / 254.0 * (1 + 1e-6) + 1e-12)
            << "weight (" << r << ", " << c << ")";
      }
    }
    qtl::RowMatrixXf y = qtl::RowMatrixXf::Constant(m, cs.rows, -7.0f);
    k.gemm(x.data(), x.outerStride(), m, y.data(), y.outerStride(), 1);

    qtl::kernel::PreparedActivations acts;
    const auto kv = k.int8_view();
    acts.allocate(kv, m, ActivationMode::Int8);
    acts.prepare(kv, x.data(), x.outerStride(), 0, m);
    const auto kcol = qtl::test::kernel_columns(kv);
    const double chain = double(cs.cols + 8);
    for (Index n = 0; n < m; ++n) {
      for (Index r = 0; r < cs.rows; ++r) {
        // (1) W8 times the int8 activations, to float rounding (magnitudes before the
        // zero-point subtraction: the kernels add s e (T8 + 128) a d).
        double yq = 0.0, mag_q = 0.0, bound = 0.0, mag_exact = 0.0;
        for (Index c = 0; c < cs.cols; ++c) {
          const Index kc = kcol[static_cast<std::size_t>(c)];
          const double xe = acts.effective(n, kc);
          const double sp = std::abs(set_scale(pv, r, c));
          yq += w8(r, c) * xe;
          mag_q += sp * double(t8.step) * (std::abs(t8.t8[packed.code(r, c)]) + 128.0) * std::abs(xe);
          const double d = acts.block_scale(n, kc / 32);
          // (2) the documented bound of the header
          bound += std::abs(w8(r, c)) * (0.5 * d + 0x1p-22 * std::abs(double(x(n, c)))) +
                   sp * tmax * std::abs(double(x(n, c))) / 254.0;
          mag_exact += std::abs(double(qtl::kernel::table_weight(pv, r, c)) * double(x(n, c)));
        }
        const double tol_q = 2.0 * chain * kUnit * mag_q + kUnit * std::abs(yq) + 1e-30;
        ASSERT_LE(std::abs(double(y(n, r)) - yq), tol_q) << "token " << n << " row " << r;
        const double tol_exact = bound + tol_q + 2.0 * chain * kUnit * mag_exact;
        ASSERT_LE(std::abs(double(y(n, r)) - double(ref(n, r))), tol_exact) << "token " << n << " row " << r;
      }
    }
    // Each token alone (the GEMV path) gives the same bits.
    for (Index n = 0; n < m; ++n) {
      std::vector<float> yn(static_cast<std::size_t>(cs.rows));
      k.gemv(x.row(n).data(), yn.data(), 1);
      for (Index r = 0; r < cs.rows; ++r) ASSERT_EQ(yn[static_cast<std::size_t>(r)], y(n, r)) << "token " << n;
    }
  }
}

template <class Q>
void check_cases(const Q& quantizer) {
  static const std::vector<Case> cases = {
      {1, 1, qtl::PerTensor{}},   {1, 33, qtl::PerRow{}},       {17, 1, qtl::PerRow{}},
      {13, 172, qtl::PerGroup{32}}, {9, 300, qtl::PerGroup{64}}, {6, 200, qtl::PerGroup{48}},
      {7, 100, qtl::PerGroup{7}},  {33, 530, qtl::PerTensor{}}, {20, 1030, qtl::PerGroup{128}},
  };
  unsigned seed = 500;
  for (const Case& cs : cases) {
    for (Index m : {1, 3, 13}) {
      if (m == 13 && cs.rows * cs.cols > 6000) continue;  // keeps the sanitizer pass short
      check_int8(quantizer, cs, m, seed += 2);
    }
  }
}

TEST(TableKernelMatrixInt8, OneAndTwoBitMatchTheRoundedTable) {
  check_cases(qtl::Binary<false>{});
  check_cases(qtl::Ternary{qtl::TernaryRule::AbsMean});
  check_cases(qtl::Log2<2>{});
}

TEST(TableKernelMatrixInt8, ThreeAndFourBitMatchTheRoundedTable) {
  check_cases(qtl::Log2<3>{});
  check_cases(qtl::NF4{});
  check_cases(qtl::Log2<4, qtl::Log2Base::Sqrt2>{});
}

TEST(TableKernelMatrixInt8, BinaryTernaryAndPowerGridTablesRoundExactly) {
  const auto w = qtl::test::gaussian(8, 64, 9, 0.1f);
  for (const auto& packed : {qtl::pack_table(qtl::quantize_matrix(qtl::Binary<false>{}, qtl::PerRow{}, w)),
                             qtl::pack_table(qtl::quantize_matrix(qtl::Ternary{qtl::TernaryRule::AbsMean}, qtl::PerRow{}, w)),
                             qtl::pack_table(qtl::quantize_matrix(qtl::Log2<3>{}, qtl::PerRow{}, w))}) {
    const TableKernelMatrix k(packed, ActivationMode::Int8);
    for (int c = 0; c < (1 << packed.bits()); ++c) {
      EXPECT_EQ(float(k.int8_table().t8[c]) * k.int8_table().step, packed.shared_table()[c])
          << packed.bits() << "-bit code " << c;
    }
  }
  // NF4's levels are not multiples of a common step: rounded to 1/127 of the largest.
  const auto nf4 = qtl::pack_table(qtl::quantize_matrix(qtl::NF4{}, qtl::PerRow{}, w));
  const TableKernelMatrix k(nf4, ActivationMode::Int8);
  EXPECT_FLOAT_EQ(k.int8_table().step, 1.0f / 127.0f);
  for (int c = 0; c < 16; ++c) {
    EXPECT_LE(std::abs(float(k.int8_table().t8[c]) * k.int8_table().step - nf4.shared_table()[c]), 0.5f / 127.0f);
  }
}

TEST(TableKernelMatrixInt8, ResultsAreBitIdenticalForAnyThreadCount) {
  const auto w = qtl::test::gaussian(203, 300, 31, 0.05f);
  const auto x = qtl::test::gaussian(13, 300, 32);
  const auto packed = qtl::pack_table(qtl::quantize_matrix(qtl::NF4{}, qtl::PerGroup{64}, w));
  for (KernelPath path : qtl::kernel::supported_kernel_paths()) {
    TableKernelMatrix k(packed, ActivationMode::Int8, path);
    qtl::test::expect_thread_count_independent(k, x, qtl::kernel::to_string(path));
  }
}

TEST(TableKernelMatrixInt8, PerSetTablesAreRejectedByName) {
  const auto w = qtl::test::gaussian(8, 64, 11, 0.1f);
  const auto packed = qtl::pack_table(qtl::quantize_matrix(qtl::KMeansCodebook<3>{}, qtl::PerGroup{32}, w));
  EXPECT_FALSE(TableKernelMatrix::int8_supported(packed));
  try {
    (void)TableKernelMatrix(packed, ActivationMode::Int8);
    FAIL() << "expected qtl::Error";
  } catch (const qtl::Error& e) {
    EXPECT_NE(std::string(e.what()).find("PerSet"), std::string::npos) << e.what();
  }
  EXPECT_NO_THROW((void)TableKernelMatrix(packed, ActivationMode::Fp32));
}

TEST(TableKernelMatrixInt8, PackedLinearWithInt8ActivationsRunsTheInt8TableKernel) {
  const auto w = qtl::test::gaussian(24, 96, 13, 0.1f);
  const auto nf4 = qtl::quantize_matrix(qtl::NF4{}, qtl::PerGroup{32}, w);
  const auto op = qtl::model::make_packed_linear(nf4, {ActivationMode::Int8, 2});
  const auto* linear = dynamic_cast<const qtl::model::PackedLinear<TableKernelMatrix>*>(op.get());
  ASSERT_NE(linear, nullptr) << op->describe();
  EXPECT_EQ(linear->kernel().mode(), ActivationMode::Int8);
  const auto x = qtl::test::gaussian(5, 96, 14);
  const qtl::RowMatrixXf y = op->forward(x);
  const TableKernelMatrix direct(qtl::pack_table(nf4), ActivationMode::Int8);
  EXPECT_EQ(y, direct.gemm(x, 1));
  // A per-set codebook keeps fp32 activations.
  const auto km = qtl::quantize_matrix(qtl::KMeansCodebook<4>{}, qtl::PerGroup{32}, w);
  const auto op_km = qtl::model::make_packed_linear(km, {ActivationMode::Int8, 2});
  const auto* linear_km = dynamic_cast<const qtl::model::PackedLinear<TableKernelMatrix>*>(op_km.get());
  ASSERT_NE(linear_km, nullptr) << op_km->describe();
  EXPECT_EQ(linear_km->kernel().mode(), ActivationMode::Fp32);
}

TEST(TableKernelMatrixInt8, CheckedEntryPointsRejectBadInput) {
  const auto w = qtl::test::gaussian(8, 40, 41, 0.1f);
  const auto packed = qtl::pack_table(qtl::quantize_matrix(qtl::NF4{}, qtl::PerGroup{16}, w));
  const TableKernelMatrix k(packed, ActivationMode::Int8);
  EXPECT_EQ(k.mode(), ActivationMode::Int8);
  EXPECT_GT(k.bytes(), std::size_t{8 * 40 / 2});
  EXPECT_EQ(k.view().rows, 0);  // no fp32 layout in int8 mode
  qtl::test::expect_checked_entry_points_reject_bad_input(k, 8, 40);
  EXPECT_THROW(TableKernelMatrix(qtl::TablePackedMatrix{}, ActivationMode::Int8), qtl::Error);
  for (KernelPath p : qtl::kernel::kAllKernelPaths) {
    if (qtl::kernel::path_supported(p)) {
      TableKernelMatrix kp(packed, ActivationMode::Int8, KernelPath::Portable);
      EXPECT_NO_THROW(kp.set_path(p));
      EXPECT_EQ(kp.path(), p);
      // Zero activations give exactly zero on every path (no block-sum or zero-point residue).
      EXPECT_EQ(kp.gemv(qtl::VectorXf::Zero(40)), qtl::VectorXf::Zero(8)) << qtl::kernel::to_string(p);
    } else {
      EXPECT_THROW(TableKernelMatrix(packed, ActivationMode::Int8, p), qtl::Error);
    }
  }
}

}  // namespace
