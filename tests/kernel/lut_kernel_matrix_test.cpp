// The lookup-table kernels (qtl/kernel/lut/kernel_matrix.hpp): every path the CPU supports
// against the scalar references (qtl/kernel/table/reference.hpp, lut/reference_ternary.hpp) within
// the derived int8 bound, every SIMD path bit-identical to the portable (xsimd) one and that one to
// the plain C++ tiles (lut_tiles_scalar), both ternary formats,
// thread-count independence and the error cases.
#include <gtest/gtest.h>
#include <qtl/model/quantized_linear.hpp>
#include <qtl/format/table_packed.hpp>
#include <qtl/format/ternary_packed.hpp>
#include <qtl/kernel/lut.hpp>
#include <qtl/kernel/lut/avx2.hpp>  // build_lut_group_avx2, tested directly
#include <qtl/kernel/lut/reference_ternary.hpp>
#include <qtl/kernel/table/reference.hpp>
#include <qtl/quant/binary.hpp>
#include <qtl/quant/codebook.hpp>
#include <qtl/quant/log2.hpp>
#include <qtl/quant/quantize_matrix.hpp>
#include <qtl/quant/ternary.hpp>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "kernel_test_util.hpp"
#include "test_util.hpp"

namespace {

using qtl::Index;
using qtl::test::kUnit;
using qtl::test::Case;
using qtl::kernel::KernelPath;
using qtl::kernel::LutKernelMatrix;
using qtl::kernel::LutWeights;


/// What the kernels multiply with: x_c -> d_b a_c (int8 per 32-column kernel block), computed
/// here from the documented rule (qtl/kernel/uniform/quantize_activations.hpp), with d_b per column.
struct Effective {
  qtl::RowMatrixXd x;  // m x cols
  qtl::RowMatrixXd d;  // m x cols: the block scale of column c
};
Effective effective_activations(const qtl::kernel::LutKernelView& v, const qtl::RowMatrixXf& x) {
  Effective e{qtl::RowMatrixXd::Zero(x.rows(), x.cols()), qtl::RowMatrixXd::Zero(x.rows(), x.cols())};
  for (Index n = 0; n < x.rows(); ++n) {
    for (Index g = 0; g < v.groups; ++g) {
      const Index c0 = v.group_col_begin[g], c1 = v.group_col_begin[g + 1];
      for (Index cb = c0; cb < c1; cb += 32) {
        float buf[32] = {};
        std::int8_t q[32];
        float d = 0.0f;
        for (Index i = 0; i < 32 && cb + i < c1; ++i) buf[i] = x(n, cb + i);
        qtl::kernel::quantize_block_int8(buf, q, &d);
        for (Index i = 0; i < 32 && cb + i < c1; ++i) {
          e.x(n, cb + i) = static_cast<double>(d) * q[i];
          e.d(n, cb + i) = d;
        }
      }
    }
  }
  return e;
}

/// Checks every supported path: (1) against the exact product on the kernels' own int8
/// activations, to float rounding; (2) against the exact reference within the int8 bound
///   sum_c |W(r, c)| (d_b / 2 + 2^-22 |x_c|) + float rounding;
/// (3) SIMD paths bit-identical to the portable path.
/// `w_hat` is the dequantized matrix, `amp` bounds |c| + |m| per weight (|W| without mean shift).
template <class Packed>
void check_lut_paths(const Packed& packed, const qtl::RowMatrixXf& w_hat, const qtl::RowMatrixXf& amp,
                 const qtl::RowMatrixXf& ref, const qtl::RowMatrixXf& x, const char* what) {
  const Index rows = w_hat.rows(), cols = w_hat.cols(), m = x.rows();
  const LutKernelMatrix k0(packed, KernelPath::Portable);
  const auto v = k0.view();
  const Effective e = effective_activations(v, x);
  const qtl::RowMatrixXd yq = e.x * w_hat.cast<double>().transpose();
  const qtl::RowMatrixXd mag_q = e.x.cwiseAbs() * amp.cast<double>().transpose();
  const qtl::RowMatrixXd mag_x = x.cast<double>().cwiseAbs() * amp.cast<double>().transpose();
  const qtl::RowMatrixXd bound =
      (0.5 * e.d + 0x1p-22 * x.cast<double>().cwiseAbs()) * w_hat.cast<double>().cwiseAbs().transpose();
  const double chain = static_cast<double>(v.blocks + v.groups + 8);
  qtl::RowMatrixXf y_portable(m, rows);
  for (KernelPath path : qtl::kernel::supported_kernel_paths()) {
    SCOPED_TRACE(testing::Message() << what << " " << rows << "x" << cols << " m=" << m
                                    << " path=" << qtl::kernel::to_string(path));
    const LutKernelMatrix k(packed, path);
    qtl::RowMatrixXf y(m, rows);
    k.gemm(x.data(), x.outerStride(), m, y.data(), y.outerStride(), 1);
    for (Index n = 0; n < m; ++n) {
      for (Index r = 0; r < rows; ++r) {
        const double tol_q = 2.0 * chain * kUnit * mag_q(n, r) + 1e-30;
        ASSERT_LE(std::abs(double(y(n, r)) - yq(n, r)), tol_q) << "token " << n << " row " << r;
        const double tol = bound(n, r) + tol_q + 2.0 * chain * kUnit * mag_x(n, r);
        ASSERT_LE(std::abs(double(y(n, r)) - double(ref(n, r))), tol) << "token " << n << " row " << r;
      }
    }
    if (path == KernelPath::Portable) {
      y_portable = y;
      // The plain C++ tiles (lut_tiles_scalar) on the same prepared activations: the same bits.
      const auto kv = k.view();
      qtl::kernel::PreparedLutActivations acts;
      acts.allocate(kv, m);
      acts.prepare(kv, x.data(), x.outerStride(), 0, m);
      qtl::RowMatrixXf ys(m, rows);
      qtl::kernel::lut_tiles_scalar(kv, acts.view(), ys.data(), ys.outerStride(), 0, kv.tiles);
      ASSERT_EQ(std::memcmp(ys.data(), y.data(), sizeof(float) * std::size_t(y.size())), 0)
          << "the scalar tiles differ from the portable (xsimd) ones";
    } else {
      ASSERT_EQ(std::memcmp(y.data(), y_portable.data(), sizeof(float) * std::size_t(y.size())), 0)
          << "differs from the portable path";
    }
    // gemv is the 1-token gemm
    qtl::VectorXf yv(rows);
    k.gemv(x.data(), yv.data(), 1);
    ASSERT_EQ(std::memcmp(yv.data(), y.data(), sizeof(float) * std::size_t(rows)), 0);
  }
}

template <class Q>
void check_table(const Q& quantizer, const qtl::Granularity& g, const qtl::RowMatrixXf& w, const qtl::RowMatrixXf& x,
                 const char* what) {
  const auto q = qtl::quantize_matrix(quantizer, g, w);
  const auto packed = qtl::pack_table(q);
  const qtl::RowMatrixXf w_hat = qtl::dequantize(q);
  qtl::RowMatrixXf amp = w_hat.cwiseAbs();
  if constexpr (Q::kTableForm == qtl::TableForm::PerSet) {
    for (Index r = 0; r < w.rows(); ++r) {
      for (Index c = 0; c < w.cols(); ++c) {
        const auto& p = q.params[static_cast<std::size_t>(q.layout.param_index(r, c))];
        amp(r, c) = std::max(std::abs(p.lo), std::abs(p.hi));
      }
    }
  }
  qtl::RowMatrixXf ref(x.rows(), w.rows());
  qtl::kernel::gemm_table_reference(packed.view(), x.data(), x.outerStride(), x.rows(), ref.data(), ref.outerStride());
  check_lut_paths(packed, w_hat, amp, ref, x, what);
}

void check_ternary_base3(const qtl::Granularity& g, const qtl::RowMatrixXf& w, const qtl::RowMatrixXf& x,
                         const char* what) {
  const auto q = qtl::quantize_matrix(qtl::Ternary{}, g, w);
  const auto packed = qtl::pack_ternary_base3(q);
  const qtl::RowMatrixXf w_hat = qtl::dequantize(q);
  qtl::RowMatrixXf ref(x.rows(), w.rows());
  qtl::kernel::gemm_ternary_reference(packed.view(), x.data(), x.outerStride(), x.rows(), ref.data(), ref.outerStride());
  check_lut_paths(packed, w_hat, w_hat.cwiseAbs(), ref, x, what);
  // the same weights through the table format give the same bits
  const LutKernelMatrix a(packed), b(qtl::pack_table(q));
  ASSERT_EQ(a.weights(), LutWeights::Ternary);
  ASSERT_EQ(a.bytes(), b.bytes());
  const qtl::RowMatrixXf ya = a.gemm(x), yb = b.gemm(x);
  ASSERT_EQ(std::memcmp(ya.data(), yb.data(), sizeof(float) * std::size_t(ya.size())), 0);
}

void check_every_kind(const qtl::Granularity& g, const qtl::RowMatrixXf& w, const qtl::RowMatrixXf& x,
                      const char* what) {
  check_table(qtl::Binary<false>{}, g, w, x, what);
  check_table(qtl::Binary<true>{}, g, w, x, what);
  check_table(qtl::Ternary{}, g, w, x, what);
  check_ternary_base3(g, w, x, what);
}


TEST(LutKernelMatrix, EveryPathMatchesReferenceOnAdversarialShapes) {
  // rows not a multiple of the 32/64-row tiles, cols not a multiple of 32 or the group,
  // one row, one column, groups narrower than a block, per tensor / per row.
  const std::vector<Case> cases = {
      {1, 1, qtl::PerTensor{}},     {1, 33, qtl::PerRow{}},       {17, 1, qtl::PerGroup{7}},
      {13, 172, qtl::PerGroup{7}},  {33, 172, qtl::PerRow{}},     {64, 64, qtl::PerTensor{}},
      {65, 100, qtl::PerGroup{48}}, {31, 257, qtl::PerGroup{128}}, {129, 96, qtl::PerGroup{32}},
      {70, 300, qtl::PerGroup{64}}, {96, 128, qtl::PerGroup{128}},
  };
  unsigned seed = 300;
  for (const Case& cs : cases) {
    // 1 and 3 tokens: activation tables on every path; 7: the AVX-512 VNNI GEMM's 4-, 2- and
    // 1-token register blocks (lut_activation_form).
    for (Index m : {1, 3, 7}) {
      const auto w = qtl::test::gaussian(cs.rows, cs.cols, ++seed, 0.05f);
      const auto x = qtl::test::gaussian(m, cs.cols, ++seed);
      check_every_kind(cs.g, w, x, "gaussian");
    }
  }
}

// With 4 or more tokens the kernels visit (tile, token) pairs in chunks of 16 tokens x 512 rows
// x about 32 blocks of whole groups (qtl/kernel/lut/layout.hpp, lut_run_tiles). Several chunks
// of each, a partial last one of each, groups of 2 and of 32 blocks and one group per row: every
// path must still give the plain C++ tiles' bits (check_lut_paths), and each token its own GEMV's.
TEST(LutKernelMatrix, BlockedGemmGivesEveryTokenItsGemvBits) {
  const std::vector<Case> cases = {
      {600, 1100, qtl::PerGroup{64}}, {530, 700, qtl::PerGroup{48}}, {520, 1030, qtl::PerRow{}},
      {97, 2048, qtl::PerGroup{1024}},
  };
  unsigned seed = 900;
  for (const Case& cs : cases) {
    const auto w = qtl::test::gaussian(cs.rows, cs.cols, ++seed, 0.05f);
    const auto x = qtl::test::gaussian(37, cs.cols, ++seed);
    check_every_kind(cs.g, w, x, "blocked");
    const auto tern = qtl::pack_table(qtl::quantize_matrix(qtl::Ternary{}, cs.g, w));
    const auto shift = qtl::pack_table(qtl::quantize_matrix(qtl::Binary<true>{}, cs.g, w));
    for (KernelPath path : qtl::kernel::supported_kernel_paths()) {
      for (const auto* packed : {&tern, &shift}) {
        SCOPED_TRACE(testing::Message() << cs.rows << "x" << cs.cols << " path=" << qtl::kernel::to_string(path));
        const LutKernelMatrix k(*packed, path);
        const qtl::RowMatrixXf y = k.gemm(x);
        qtl::VectorXf yv(cs.rows);
        for (Index n = 0; n < x.rows(); ++n) {
          k.gemv(x.row(n).data(), yv.data(), 1);
          ASSERT_EQ(std::memcmp(yv.data(), y.row(n).data(), sizeof(float) * std::size_t(cs.rows)), 0) << "token " << n;
        }
      }
    }
  }
}

TEST(LutKernelMatrix, ExtremeTablesStayExact) {
  // Activations at +-127 everywhere and weights all of one sign make every table entry +-508,
  // the int16 limits of the lo/hi split; random signs exercise every index.
  std::mt19937 rng(7);
  std::bernoulli_distribution coin(0.5);
  const Case cs{100, 200, qtl::PerGroup{64}};
  qtl::RowMatrixXf w_sign(cs.rows, cs.cols), x_sign(4, cs.cols);
  for (auto& v : w_sign.reshaped()) v = coin(rng) ? 1.0f : -1.0f;
  for (auto& v : x_sign.reshaped()) v = coin(rng) ? 3.0f : -3.0f;
  check_every_kind(cs.g, w_sign, x_sign, "signs");
  const qtl::RowMatrixXf w_pos = qtl::RowMatrixXf::Constant(cs.rows, cs.cols, 0.5f);
  const qtl::RowMatrixXf x_pos = qtl::RowMatrixXf::Constant(2, cs.cols, 2.0f);
  check_every_kind(cs.g, w_pos, x_pos, "all positive");
  check_every_kind(cs.g, w_pos, qtl::RowMatrixXf(-x_pos), "all negative");
  check_every_kind(cs.g, qtl::RowMatrixXf(-w_pos), x_pos, "negative weights");
  // ternary with many exact zeros (|w| below alpha / 2)
  qtl::RowMatrixXf w_zero = qtl::test::gaussian(cs.rows, cs.cols, 8, 0.05f);
  for (Index r = 0; r < cs.rows; ++r) w_zero.row(r).segment(r % 50, 60).setZero();
  check_every_kind(cs.g, w_zero, qtl::test::gaussian(3, cs.cols, 9), "zeros");
}

TEST(LutKernelMatrix, OutliersAndZeroBlocksStayWithinTheInt8Bound) {
  const Case cs{72, 160, qtl::PerGroup{32}};
  const auto w = qtl::test::gaussian(cs.rows, cs.cols, 11, 0.05f);
  auto x = qtl::test::gaussian(5, cs.cols, 12);
  for (Index n = 0; n < x.rows(); ++n) {
    x(n, 3 + 32 * (n % 4)) = 1000.0f;
    x.block(n, 128, 1, 32).setZero();
  }
  check_every_kind(cs.g, w, x, "outliers");
}

TEST(LutKernelMatrix, ResultsAreBitIdenticalForAnyThreadCount) {
  const auto w = qtl::test::gaussian(300, 200, 21, 0.05f);
  const auto x = qtl::test::gaussian(5, 200, 22);
  const auto tern = qtl::pack_table(qtl::quantize_matrix(qtl::Ternary{}, qtl::PerGroup{64}, w));
  const auto bin = qtl::pack_table(qtl::quantize_matrix(qtl::Binary<true>{}, qtl::PerGroup{64}, w));
  for (KernelPath path : qtl::kernel::supported_kernel_paths()) {
    for (const auto* packed : {&tern, &bin}) {
      LutKernelMatrix k(*packed, path);
      qtl::test::expect_thread_count_independent(k, x, qtl::kernel::to_string(path));
    }
  }
}

TEST(LutKernelMatrix, LayoutHoldsTheDocumentedBits) {
  // Decode the layout by hand from the header comment and compare with the codes.
  const auto w = qtl::test::gaussian(70, 100, 31, 0.05f);
  const auto q = qtl::quantize_matrix(qtl::Ternary{}, qtl::PerGroup{48}, w);
  const LutKernelMatrix k(qtl::pack_ternary_base3(q), KernelPath::Portable);
  const auto v = k.view();
  ASSERT_EQ(v.tile_rows, 32);
  ASSERT_EQ(v.groups, 3);
  ASSERT_EQ(v.blocks, 5);  // 48 -> 2 blocks, 48 -> 2, 4 -> 1
  for (Index r = 0; r < 70; ++r) {
    for (Index c = 0; c < 100; ++c) {
      const Index g = c / 48, kc = c % 48;
      const Index b = v.group_block_begin[g] + kc / 32;
      const int col = static_cast<int>(kc % 32);
      const std::uint8_t* unit = v.block(r / 32, b) + 64 * ((col % 16) / 4);
      const int shift = 4 * (col / 16) + col % 4;
      const int rr = static_cast<int>(r % 32);
      const int pu = (unit[16 * (rr / 8) + 2 * (rr % 8)] >> shift) & 1;
      const int pv = (unit[16 * (rr / 8) + 2 * (rr % 8) + 1] >> shift) & 1;
      const int t = q.code(r, c);
      ASSERT_EQ((2 * pu - 1) + (2 * pv - 1), 2 * (t - 1)) << r << ", " << c;
    }
  }
  for (int s = 0; s < 32; ++s) {
    const Index r = qtl::kernel::lut_slot_row(LutWeights::Ternary, s);
    ASSERT_EQ(v.params(0, 1)[s], qtl::detail::float_to_half(q.params[std::size_t(r * 3 + 1)].scale));
  }
}

TEST(LutKernelMatrix, RejectsTablesWithoutBitPlanes) {
  const auto w = qtl::test::gaussian(8, 64, 41, 0.05f);
  auto expect_throw = [](auto&& make, const char* needle) {
    try {
      make();
      FAIL() << "no qtl::Error";
    } catch (const qtl::Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  const auto residual = qtl::pack_table(qtl::quantize_matrix(qtl::ResidualBinary{}, qtl::PerGroup{32}, w));
  expect_throw([&] { LutKernelMatrix k(residual); }, "bit planes");
  const auto log2 = qtl::pack_table(qtl::quantize_matrix(qtl::Log2<2>{}, qtl::PerGroup{32}, w));
  expect_throw([&] { LutKernelMatrix k(log2); }, "ternary");
  const auto log4 = qtl::pack_table(qtl::quantize_matrix(qtl::Log2<4>{}, qtl::PerGroup{32}, w));
  expect_throw([&] { LutKernelMatrix k(log4); }, "4-bit");
  expect_throw([] { LutKernelMatrix k(qtl::TablePackedMatrix{}); }, "LutKernelMatrix");
  EXPECT_FALSE(qtl::kernel::lut_representable(residual));
  EXPECT_FALSE(qtl::kernel::lut_representable(log2));
  EXPECT_FALSE(qtl::kernel::lut_representable(log4));
  EXPECT_TRUE(qtl::kernel::lut_representable(qtl::pack_table(qtl::quantize_matrix(qtl::Binary<>{}, qtl::PerGroup{32}, w))));
  EXPECT_TRUE(qtl::kernel::lut_representable(qtl::pack_table(qtl::quantize_matrix(qtl::Ternary{}, qtl::PerGroup{32}, w))));
  EXPECT_TRUE(qtl::kernel::lut_representable(qtl::pack_table(qtl::quantize_matrix(qtl::Binary<true>{}, qtl::PerGroup{32}, w))));

  const LutKernelMatrix k(qtl::pack_table(qtl::quantize_matrix(qtl::Binary<>{}, qtl::PerGroup{32}, w)));
  expect_throw([&] { (void)k.gemv(qtl::VectorXf::Zero(63)); }, "x");
  qtl::VectorXf nan = qtl::VectorXf::Zero(64);
  nan(5) = std::numeric_limits<float>::quiet_NaN();
  expect_throw([&] { (void)k.gemv(nan); }, "x");
  expect_throw([&] { (void)k.gemv(qtl::VectorXf::Zero(64), 0); }, "threads");
  expect_throw([&] { (void)k.gemm(qtl::RowMatrixXf::Zero(2, 65)); }, "65 columns");
  qtl::RowMatrixXf inf = qtl::RowMatrixXf::Zero(2, 64);
  inf(1, 3) = std::numeric_limits<float>::infinity();
  expect_throw([&] { (void)k.gemm(inf); }, "activations");
  expect_throw([&] { (void)k.gemm(qtl::RowMatrixXf::Zero(2, 64), -1); }, "threads");
  for (KernelPath p : qtl::kernel::kAllKernelPaths) {
    LutKernelMatrix kp = k;
    if (qtl::kernel::path_supported(p)) {
      kp.set_path(p);
      EXPECT_EQ(kp.path(), p);
    } else {
      expect_throw([&] { kp.set_path(p); }, "not supported");
    }
  }
}

TEST(LutKernelMatrix, TablesHoldTheSignedSumsAndSimdPreparationIsBitIdentical) {
  // Every entry of every table is sum_i +-a_i split into low / high bytes, for random and
  // extreme (+-127) activations; the AVX2 preparation writes the same bytes as the scalar one.
  const auto w = qtl::test::gaussian(40, 300, 61, 0.05f);
  const LutKernelMatrix k(qtl::pack_table(qtl::quantize_matrix(qtl::Ternary{}, qtl::PerGroup{96}, w)));
  const auto v = k.view();
  auto x = qtl::test::gaussian(3, 300, 62);
  for (Index c = 0; c < 300; c += 3) x(2, c) = (c % 2) ? 5.0f : -5.0f;
  qtl::kernel::PreparedLutActivations simd, scalar;
  simd.allocate(v, 3);
  scalar.allocate(v, 3);
  scalar.allow_simd(false);
  simd.prepare(v, x.data(), x.outerStride(), 0, 3);
  scalar.prepare(v, x.data(), x.outerStride(), 0, 3);
  const auto a = simd.view(), b = scalar.view();
  const auto n_tables = std::size_t(3 * v.blocks * qtl::kernel::kLutBlockTableBytes);
  ASSERT_EQ(std::memcmp(a.tables, b.tables, n_tables), 0);
  ASSERT_EQ(std::memcmp(a.d, b.d, sizeof(float) * std::size_t(3 * v.blocks)), 0);
  ASSERT_EQ(std::memcmp(a.gsum, b.gsum, sizeof(float) * std::size_t(3 * v.groups)), 0);
  std::mt19937 rng(63);
  for (int rep = 0; rep < 2000; ++rep) {
    std::int8_t q[4];
    for (auto& e : q) e = static_cast<std::int8_t>(rep < 16 ? ((rep >> (&e - q)) & 1 ? 127 : -127) : int(rng() % 255) - 127);
    std::uint8_t t[32];
    qtl::kernel::build_lut_group(q, t);
    for (int kk = 0; kk < 16; ++kk) {
      int expect = 0;
      for (int i = 0; i < 4; ++i) expect += ((kk >> i) & 1) ? q[i] : -q[i];
      ASSERT_EQ(qtl::kernel::lut_entry(t, kk), expect);
    }
#if defined(QTL_HAVE_X86_LUT_KERNELS)
    if (qtl::kernel::path_supported(KernelPath::Avx2)) {
      std::uint8_t t2[32];
      qtl::kernel::build_lut_group_avx2(q, t2);
      ASSERT_EQ(std::memcmp(t, t2, 32), 0);
    }
#endif
  }
}

// The codes form (what the AVX-512 VNNI GEMM reads) holds the very int8 activations the tables
// are built from, with the start of its sums -A_b (ternary: -2 A_b) and the same scales; the
// matrices pick it exactly for that path with at least kLutBlockedMinTokens tokens.
TEST(LutKernelMatrix, CodesFormHoldsTheTablesActivationsAndTheStartOfTheSums) {
  using qtl::kernel::LutActivationForm;
  using qtl::kernel::lut_entry;
  const auto w = qtl::test::gaussian(40, 300, 71, 0.05f);
  auto x = qtl::test::gaussian(5, 300, 72);
  for (Index c = 0; c < 300; c += 5) x(4, c) = (c % 2) ? 9.0f : -9.0f;  // codes at +-127
  const auto tern = qtl::pack_table(qtl::quantize_matrix(qtl::Ternary{}, qtl::PerGroup{80}, w));
  const auto bin = qtl::pack_table(qtl::quantize_matrix(qtl::Binary<true>{}, qtl::PerGroup{80}, w));
  for (const auto* packed : {&tern, &bin}) {
    const LutKernelMatrix k(*packed, KernelPath::Portable);
    const auto v = k.view();
    const int factor = v.kind == LutWeights::Ternary ? 2 : 1;
    qtl::kernel::PreparedLutActivations tables, codes;
    tables.allocate(v, 5);
    codes.allocate(v, 5, LutActivationForm::Codes);
    tables.prepare(v, x.data(), x.outerStride(), 0, 5);
    codes.prepare(v, x.data(), x.outerStride(), 0, 2);  // in two ranges, as the threads do
    codes.prepare(v, x.data(), x.outerStride(), 2, 5);
    const auto a = tables.view(), b = codes.view();
    ASSERT_EQ(a.q, nullptr);
    ASSERT_EQ(a.init, nullptr);
    ASSERT_EQ(b.tables, nullptr);
    ASSERT_NE(b.q, nullptr);
    ASSERT_EQ(std::memcmp(a.d, b.d, sizeof(float) * std::size_t(5 * v.blocks)), 0);
    ASSERT_EQ(std::memcmp(a.gsum, b.gsum, sizeof(float) * std::size_t(5 * v.groups)), 0);
    int extremes = 0;
    for (Index n = 0; n < 5; ++n) {
      for (Index blk = 0; blk < v.blocks; ++blk) {
        const std::uint8_t* tb = a.tables + (n * v.blocks + blk) * qtl::kernel::kLutBlockTableBytes;
        const std::int8_t* q = b.q + (n * v.blocks + blk) * qtl::kernel::kLutBlockCols;
        int sum = 0;
        for (int j = 0; j < qtl::kernel::kLutGroupsPerBlock; ++j) {
          const std::uint8_t* t = tb + j * qtl::kernel::kLutTableBytes;
          sum -= lut_entry(t, 0);  // entry 0 = -(sum of the group's 4 activations)
          for (int i = 0; i < 4; ++i) {
            // entry 2^i - entry 0 = 2 a_i
            ASSERT_EQ(2 * int(q[4 * j + i]), lut_entry(t, 1 << i) - lut_entry(t, 0)) << "token " << n << " block " << blk;
            extremes += std::abs(int(q[4 * j + i])) == 127;
          }
        }
        ASSERT_EQ(b.init[n * v.blocks + blk], -factor * sum) << "token " << n << " block " << blk;
      }
    }
    EXPECT_GT(extremes, 30);
  }
  for (KernelPath path : qtl::kernel::kAllKernelPaths) {
    for (std::ptrdiff_t m : {1, 3, 4, 64}) {
      const bool codes = path == KernelPath::Avx512Vnni && m >= qtl::kernel::kLutBlockedMinTokens;
      EXPECT_EQ(qtl::kernel::lut_activation_form(path, m), codes ? LutActivationForm::Codes : LutActivationForm::Tables);
    }
  }
}

TEST(LutKernelMatrix, ZeroActivationsGiveZeroAndBitsPerWeightAreHonest) {
  const auto w = qtl::test::gaussian(128, 4096, 51, 0.05f);
  const LutKernelMatrix t(qtl::pack_table(qtl::quantize_matrix(qtl::Ternary{}, qtl::PerGroup{128}, w)));
  const LutKernelMatrix b(qtl::pack_table(qtl::quantize_matrix(qtl::Binary<>{}, qtl::PerGroup{128}, w)));
  const double weights = 128.0 * 4096.0;
  EXPECT_NEAR(8.0 * double(t.bytes()) / weights, 2.0 + 16.0 / 128.0, 1e-9);
  EXPECT_NEAR(8.0 * double(b.bytes()) / weights, 1.0 + 16.0 / 128.0, 1e-9);
  const qtl::VectorXf y = t.gemv(qtl::VectorXf::Zero(4096));
  EXPECT_EQ(y.cwiseAbs().maxCoeff(), 0.0f);
}

TEST(LutKernelMatrix, PackedLinearWithInt8ActivationsRunsTheLutKernelForBinaryAndTernary) {
  namespace m = qtl::model;
  const auto w = qtl::test::gaussian(40, 96, 71, 0.1f);
  const auto x = qtl::test::gaussian(5, 96, 72);
  const m::KernelOptions int8{qtl::kernel::ActivationMode::Int8, 2};
  const auto tern = qtl::quantize_matrix(qtl::Ternary{}, qtl::PerGroup{32}, w);
  const auto op = m::make_packed_linear(tern, int8);
  const auto* lut = dynamic_cast<const m::PackedLinear<LutKernelMatrix>*>(op.get());
  ASSERT_NE(lut, nullptr) << op->describe();
  const qtl::RowMatrixXf expected = LutKernelMatrix(qtl::pack_table(tern)).gemm(x);
  EXPECT_TRUE(op->forward(x) == expected);
  // Fp32 activations, and tables without bit planes, stay on the table-decode kernel.
  const auto fp32 = m::make_packed_linear(tern, {qtl::kernel::ActivationMode::Fp32, 1});
  EXPECT_NE(dynamic_cast<const m::PackedLinear<qtl::kernel::TableKernelMatrix>*>(fp32.get()), nullptr);
  const auto nf4 = m::make_packed_linear(qtl::quantize_matrix(qtl::NF4{}, qtl::PerGroup{32}, w), int8);
  EXPECT_NE(dynamic_cast<const m::PackedLinear<qtl::kernel::TableKernelMatrix>*>(nf4.get()), nullptr);
}

}  // namespace
