// Every vector-codebook kernel path the CPU supports against the scalar reference
// (qtl/kernel/vq/reference.hpp), and the plain C++ kernels (vq_scalar_functions) next to the
// portable xsimd ones, both strategies, adversarial shapes and sets.
#include <gtest/gtest.h>
#include <qtl/format/vq_packed.hpp>
#include <qtl/kernel/vq.hpp>
#include <qtl/kernel/vq/reference.hpp>
#include <qtl/quant/e8p.hpp>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <type_traits>
#include <vector>

#include "kernel_test_util.hpp"
#include "test_util.hpp"

namespace {

using qtl::Index;
using qtl::test::kUnit;
using qtl::kernel::KernelPath;
using qtl::kernel::VQKernelMatrix;
using qtl::kernel::VQStrategy;


// A packed KMeansVQ matrix with random indices and a random fp16 codebook per set (any bits:
// fitting k-means for 12-bit codebooks would make the test slow), and its dense W_hat.
struct TestMatrix {
  qtl::VQPackedMatrix packed;
  qtl::RowMatrixXf dense;
};

TestMatrix random_vq(int dim, int bits, Index rows, Index cols, Index rows_per_set, unsigned seed) {
  return qtl::visit_kmeans_vq(dim, bits, {}, [&](auto v) {
    using V = decltype(v);
    qtl::VQMatrix<V> m;
    m.quantizer = v;
    m.layout = qtl::VQLayout{rows, cols, V::kDim, rows_per_set == 0 ? rows : std::min(rows_per_set, rows)};
    std::mt19937 rng(seed);
    std::normal_distribution<float> nd(0.0f, 0.1f);
    m.indices.resize(static_cast<std::size_t>(rows * m.layout.vectors_per_row()));
    for (auto& i : m.indices) i = static_cast<std::uint32_t>(rng() & ((1u << V::kBits) - 1));
    m.params.resize(static_cast<std::size_t>(m.layout.num_sets()));
    for (auto& p : m.params) {
      p.codebook.resize(V::kParamWords);
      for (auto& c : p.codebook) c = qtl::detail::round_to_half(nd(rng));
    }
    return TestMatrix{qtl::pack_vq(m), qtl::dequantize(m)};
  });
}

// Y (m x rows) of every token against the double-accumulating reference, within
//   (n + 2) u sum_c |W_hat_rc x_c|,  n = D + P (Table) or D P (Decode, E8P):
// gamma_n for the kernel's fp32 sums (qtl/kernel/vq/kernel_matrix.hpp), plus the reference's own final
// rounding to float (<= u |y_r|) with margin.
void expect_near_reference(const TestMatrix& t, const qtl::RowMatrixXf& x, const qtl::RowMatrixXf& y,
                           const std::string& what, VQStrategy s) {
  const qtl::PackedVQView v = qtl::view(t.packed);
  const bool e8p = v.bits == 16;
  const double n = s == VQStrategy::Table && !e8p ? double(v.dim + v.vectors_per_row) : double(v.dim * v.vectors_per_row);
  const double bound_factor = (n + 2) * kUnit;
  const qtl::RowMatrixXf mag = x.cwiseAbs() * t.dense.cwiseAbs().transpose();
  std::vector<float> ref(static_cast<std::size_t>(v.rows));
  ASSERT_EQ(y.rows(), x.rows());
  ASSERT_EQ(y.cols(), v.rows);
  for (Index n = 0; n < x.rows(); ++n) {
    if (e8p) {
      qtl::kernel::gemv_e8p_reference(v, qtl::E8P::abs_grid().data(), qtl::E8P::abs_parity().data(), x.row(n).data(), ref.data());
    } else {
      qtl::kernel::gemv_vq_codebook_reference(v, x.row(n).data(), ref.data());
    }
    for (Index r = 0; r < v.rows; ++r) {
      const double tol = bound_factor * mag(n, r) + 1e-30;
      ASSERT_LE(std::abs(double(y(n, r)) - double(ref[static_cast<std::size_t>(r)])), tol)
          << what << " token " << n << " row " << r << " ref " << ref[static_cast<std::size_t>(r)];
    }
  }
}

// Whether the portable path's mul_add is fused (qtl/kernel/common/portable_simd.hpp): then its
// Table, Decode and E8P sums are rounded as the Avx2 and Avx512 paths' (vq/portable.hpp).
constexpr bool kPortableFused =
    std::is_base_of_v<xsimd::avx512f, qtl::kernel::PortableArch> ||
    std::is_base_of_v<xsimd::fma3<xsimd::avx2>, qtl::kernel::PortableArch> ||
    std::is_base_of_v<xsimd::fma3<xsimd::sse4_2>, qtl::kernel::PortableArch> ||
    std::is_base_of_v<xsimd::neon64, qtl::kernel::PortableArch>;

void check_all(const TestMatrix& t, Index m, unsigned seed, const std::string& what) {
  const qtl::RowMatrixXf x = qtl::test::gaussian(m, t.packed.cols(), seed);
  qtl::RowMatrixXf y_portable[2];
  for (KernelPath p : qtl::kernel::supported_kernel_paths()) {
    VQKernelMatrix k(t.packed, p);
    ASSERT_EQ(k.path(), p);
    for (VQStrategy s : {VQStrategy::Table, VQStrategy::Decode}) {
      k.set_strategy(s);
      const std::string tag = what + " path " + std::string(qtl::kernel::to_string(p)) + " " + qtl::kernel::to_string(s);
      const qtl::RowMatrixXf y = k.gemm(x);
      expect_near_reference(t, x, y, tag + " gemm", s);
      if (m == 1) {
        const qtl::VectorXf yv = k.gemv(qtl::VectorXf(x.row(0).transpose()));
        expect_near_reference(t, x, qtl::RowMatrixXf(yv.transpose()), tag + " gemv", s);
      }
      const int si = s == VQStrategy::Table ? 0 : 1;
      if (p == KernelPath::Portable) {
        // the portable path is xsimd code; its plain C++ twin (vq_scalar_functions) as well
        y_portable[si] = y;
        qtl::RowMatrixXf ys(m, t.packed.rows());
        k.gemm_using(qtl::kernel::vq_scalar_functions(), x.data(), x.outerStride(), m, ys.data(), ys.outerStride(), 1);
        expect_near_reference(t, x, ys, tag + " scalar gemm", s);
      } else if (kPortableFused && (p == KernelPath::Avx2 || p == KernelPath::Avx512)) {
        ASSERT_EQ(std::memcmp(y.data(), y_portable[si].data(), sizeof(float) * std::size_t(y.size())), 0)
            << tag << ": differs from the portable (xsimd, fused) path";
      }
    }
  }
}

TEST(VQKernelMatrix, RandomCodebooksEveryPathMatchesReference) {
  struct Shape {
    Index rows, cols, rows_per_set;
  };
  // 1 x 1; cols not a multiple of D or 16; rows not a multiple of the 64-row tile or of 16;
  // sets that do not divide the rows or a tile (5: several sets per 16 rows; 50: 64-row tiles
  // straddling sets, whose 16-row groups mostly do not); one set per tile (64); many positions
  // (several chunks of the lookup table).
  const Shape shapes[] = {{1, 1, 0}, {17, 37, 0}, {33, 70, 5}, {40, 29, 16}, {130, 45, 50}, {128, 20, 64}, {21, 1100, 20}};
  unsigned seed = 1;
  for (int dim : {2, 4, 8}) {
    for (int bits : {1, 3, 8, 10, 12}) {
      for (const Shape& s : shapes) {
        if (bits >= 10 && s.cols > 100) continue;  // keep the large-table cases small
        const TestMatrix t = random_vq(dim, bits, s.rows, s.cols, s.rows_per_set, seed++);
        const std::string what = "D " + std::to_string(dim) + " bits " + std::to_string(bits) + " shape " +
                                 std::to_string(s.rows) + "x" + std::to_string(s.cols) + "/" + std::to_string(s.rows_per_set);
        check_all(t, 1, seed, what + " m 1");
        check_all(t, 6, seed, what + " m 6");  // token blocks of 4 + 2
      }
    }
  }
}

// Matrices made by the real quantizer (k-means, few iterations to stay fast).
template <int D, int B>
void check_quantized(Index rows, Index cols, Index rows_per_set, unsigned seed) {
  const qtl::KMeansVQ<D, B> v(qtl::VectorKMeansOptions{3, seed});
  const auto w = qtl::test::gaussian(rows, cols, seed, 0.05f);
  const auto q = qtl::quantize_vectors(v, qtl::VQGranularity{rows_per_set}, w);
  const TestMatrix t{qtl::pack_vq(q), qtl::dequantize(q)};
  check_all(t, 1, seed + 1, v.name() + " quantized m 1");
  check_all(t, 5, seed + 2, v.name() + " quantized m 5");
  // the generic checked reference agrees too
  const qtl::VectorXf x = qtl::test::gaussian(1, cols, seed + 3).row(0).transpose();
  const qtl::VectorXf ref = qtl::gemv_vq_reference(t.packed, v, x);
  const qtl::VectorXf y = VQKernelMatrix(t.packed).gemv(x);
  const qtl::VectorXf mag = t.dense.cwiseAbs() * x.cwiseAbs();
  for (Index r = 0; r < rows; ++r) {
    EXPECT_LE(std::abs(y[r] - ref[r]), (D * t.packed.layout().vectors_per_row() + 2) * kUnit * mag[r] + 1e-30) << r;
  }
}

TEST(VQKernelMatrix, QuantizedMatricesMatchReference) {
  check_quantized<2, 4>(40, 37, 16, 3);   // padded last vector, sets not dividing rows
  check_quantized<4, 8>(64, 36, 0, 4);    // 2 bits/weight, one codebook
  check_quantized<8, 3>(9, 172, 4, 5);    // stories260K's 172 columns = 21 x 8 + 4
  check_quantized<2, 8>(19, 300, 0, 6);   // several chunks
}

TEST(VQKernelMatrix, E8PMatchesReference) {
  // sets not dividing the rows or a tile, a padded last vector (45 = 5 x 8 + 5), one column,
  // several chunks of positions (2100 columns = 263 positions, chunks of 256)
  struct Shape {
    Index rows, cols, rows_per_set;
  };
  unsigned seed = 30;
  for (const Shape& s : {Shape{37, 45, 5}, Shape{70, 64, 0}, Shape{3, 1, 1}, Shape{130, 120, 64}, Shape{10, 2100, 3}}) {
    const auto w = qtl::test::gaussian(s.rows, s.cols, seed, 0.05f);
    const auto q = qtl::quantize_vectors(qtl::E8P{}, qtl::VQGranularity{s.rows_per_set}, w);
    const TestMatrix t{qtl::pack_vq(q), qtl::dequantize(q)};
    EXPECT_EQ(VQKernelMatrix(t.packed).strategy(), VQStrategy::Decode);
    check_all(t, 1, seed + 1, "e8p " + std::to_string(s.rows) + "x" + std::to_string(s.cols) + " m 1");
    check_all(t, 6, seed + 2, "e8p " + std::to_string(s.rows) + "x" + std::to_string(s.cols) + " m 6");
    seed += 3;
  }
  const auto w = qtl::test::gaussian(100, 200, 5, 0.05f);
  const auto p = qtl::pack_vq(qtl::quantize_vectors(qtl::E8P{}, qtl::VQGranularity{9}, w));
  const qtl::RowMatrixXf x = qtl::test::gaussian(5, 200, 6);
  for (KernelPath path : qtl::kernel::supported_kernel_paths()) {
    VQKernelMatrix k(p, path);
    k.set_min_work_per_thread(1);
    const qtl::RowMatrixXf y1 = k.gemm(x, 1), y3 = k.gemm(x, 3);
    EXPECT_EQ(std::memcmp(y1.data(), y3.data(), sizeof(float) * static_cast<std::size_t>(y1.size())), 0);
  }
}

// E8P with int8 activations (ActivationMode::Int8). Every path gives the bits of the plain C++
// kernel (the same exact int32 block sums, then the same fp32 operations in the same order),
// which is held to the int8 reference (gemv_e8p_int8_reference, double) within its fp32
// rounding, gamma_{blocks + chunks + 3} of the reference's magnitude, and to the fp32 product
// within the int8 activation error: sum_k |W_rk| (d_b / 2 + 2^-22 |x_k|) (quantize_activations.hpp).
void check_e8p_int8(const TestMatrix& t, const qtl::RowMatrixXf& x, const std::string& what) {
  using qtl::kernel::ActivationMode;
  const qtl::PackedVQView v = qtl::view(t.packed);
  const Index m = x.rows();
  VQKernelMatrix ks(t.packed, ActivationMode::Int8, KernelPath::Portable);
  ASSERT_EQ(ks.mode(), ActivationMode::Int8);
  qtl::RowMatrixXf ys(m, v.rows);
  ks.gemm_using(qtl::kernel::vq_scalar_functions(), x.data(), x.outerStride(), m, ys.data(), ys.outerStride(), 1);
  const Index nb = (v.vectors_per_row * 8 + 31) / 32;
  const Index chunks = ks.view().chunks;
  const double gamma = double(nb + chunks + 3 + 2) * kUnit;
  std::vector<float> ref(static_cast<std::size_t>(v.rows));
  std::vector<double> bound(static_cast<std::size_t>(v.rows));
  for (Index n = 0; n < m; ++n) {
    qtl::kernel::gemv_e8p_int8_reference(v, qtl::E8P::abs_grid().data(), qtl::E8P::abs_parity().data(), x.row(n).data(),
                                         ref.data(), bound.data());
    // the int8 activation error of each column
    std::vector<float> xp(static_cast<std::size_t>(nb * 32), 0.0f), d(static_cast<std::size_t>(nb));
    std::vector<std::int8_t> a(static_cast<std::size_t>(nb * 32));
    for (Index c = 0; c < v.cols; ++c) xp[static_cast<std::size_t>(c)] = x(n, c);
    for (Index b = 0; b < nb; ++b) qtl::kernel::quantize_block_int8(xp.data() + 32 * b, a.data() + 32 * b, d.data() + b);
    for (Index r = 0; r < v.rows; ++r) {
      const double tol = gamma * bound[static_cast<std::size_t>(r)] + 1e-30;
      ASSERT_LE(std::abs(double(ys(n, r)) - double(ref[static_cast<std::size_t>(r)])), tol)
          << what << " scalar token " << n << " row " << r;
      double act = 0.0, mag = 0.0;
      for (Index c = 0; c < v.cols; ++c) {
        const double wa = std::abs(double(t.dense(r, c)));
        act += wa * (double(d[static_cast<std::size_t>(c / 32)]) / 2 + 0x1p-22 * std::abs(double(x(n, c))));
        mag += wa * std::abs(double(x(n, c)));
      }
      ASSERT_LE(std::abs(double(ref[static_cast<std::size_t>(r)]) - double((t.dense.row(r).cast<double>().dot(x.row(n).cast<double>())))),
                act * (1 + 1e-6) + 4 * kUnit * mag + 1e-30)
          << what << " int8 reference vs fp32, token " << n << " row " << r;
    }
  }
  for (KernelPath p : qtl::kernel::supported_kernel_paths()) {
    const VQKernelMatrix k(t.packed, ActivationMode::Int8, p);
    const qtl::RowMatrixXf y = k.gemm(x);
    ASSERT_EQ(std::memcmp(y.data(), ys.data(), sizeof(float) * std::size_t(y.size())), 0)
        << what << " path " << qtl::kernel::to_string(p) << ": differs from the plain C++ int8 kernel";
    if (m == 1) {
      const qtl::VectorXf yv = k.gemv(qtl::VectorXf(x.row(0).transpose()));
      ASSERT_EQ(std::memcmp(yv.data(), ys.data(), sizeof(float) * std::size_t(yv.size())), 0) << what << " gemv";
    }
  }
}

TEST(VQKernelMatrix, E8PInt8ActivationsMatchReferenceOnEveryPath) {
  // shapes as E8PMatchesReference, plus blocks of 32 cut by the end of a row (45, 100 columns)
  // and several chunks whose last block is partial (4100 = 512 positions + 4 columns); indices
  // from the quantizer and then all 2^16 codewords at random (every sign / shift / grid byte).
  struct Shape {
    Index rows, cols, rows_per_set;
  };
  unsigned seed = 60;
  for (const Shape& s : {Shape{37, 45, 5}, Shape{70, 64, 0}, Shape{3, 1, 1}, Shape{130, 100, 64}, Shape{10, 2100, 3},
                         Shape{65, 4100, 0}}) {
    const auto w = qtl::test::gaussian(s.rows, s.cols, seed, 0.05f);
    auto q = qtl::quantize_vectors(qtl::E8P{}, qtl::VQGranularity{s.rows_per_set}, w);
    for (int pass = 0; pass < 2; ++pass) {
      if (pass == 1) {
        std::mt19937 rng(seed);
        for (auto& i : q.indices) i = rng() & 0xFFFFu;
      }
      const TestMatrix t{qtl::pack_vq(q), qtl::dequantize(q)};
      const std::string what = qtl::str_cat("e8p int8 ", s.rows, "x", s.cols, pass ? " random indices" : "");
      for (Index m : {1, 6, 3}) check_e8p_int8(t, qtl::test::gaussian(m, s.cols, seed + unsigned(m)), qtl::str_cat(what, " m ", m));
      // a zero token, a token of one huge value among tiny ones, a token below 2^-64
      qtl::RowMatrixXf x = qtl::RowMatrixXf::Zero(3, s.cols);
      x(1, s.cols / 2) = 3e30f;
      for (Index c = 0; c < s.cols; ++c) {
        if (c != s.cols / 2) x(1, c) = 1e-3f * float(c % 7);
        x(2, c) = 1e-25f * float(c % 5 + 1);
      }
      check_e8p_int8(t, x, what + " extremes");
    }
    seed += 3;
  }
  // the thread count changes nothing; k-means codebooks have no int8 mode
  const auto w = qtl::test::gaussian(100, 300, 5, 0.05f);
  const auto p = qtl::pack_vq(qtl::quantize_vectors(qtl::E8P{}, qtl::VQGranularity{9}, w));
  for (KernelPath path : qtl::kernel::supported_kernel_paths()) {
    VQKernelMatrix k(p, qtl::kernel::ActivationMode::Int8, path);
    k.set_min_work_per_thread(1);
    qtl::test::expect_thread_count_independent(k, qtl::test::gaussian(5, 300, 6), qtl::kernel::to_string(path));
  }
  VQKernelMatrix kv(random_vq(4, 8, 20, 30, 0, 1).packed);
  EXPECT_THROW(kv.set_mode(qtl::kernel::ActivationMode::Int8), qtl::Error);
  EXPECT_EQ(kv.mode(), qtl::kernel::ActivationMode::Fp32);
}

TEST(VQKernelMatrix, BitIdenticalForAnyThreadCount) {
  // several 64-row tiles per thread, sets straddling tiles, several chunks
  const TestMatrix t = random_vq(4, 8, 300, 301, 7, 42);
  const TestMatrix t2 = random_vq(2, 5, 200, 1030, 0, 43);
  const TestMatrix t3 = random_vq(8, 8, 333, 40, 100, 44);
  for (const TestMatrix* tm : {&t, &t2, &t3}) {
    for (Index m : {1, 5}) {
      const qtl::RowMatrixXf x = qtl::test::gaussian(m, tm->packed.cols(), 9);
      for (KernelPath p : qtl::kernel::supported_kernel_paths()) {
        VQKernelMatrix k(tm->packed, p);
        for (VQStrategy s : {VQStrategy::Table, VQStrategy::Decode}) {
          k.set_strategy(s);
          qtl::test::expect_thread_count_independent(
              k, x, qtl::str_cat(qtl::kernel::to_string(p), " ", qtl::kernel::to_string(s), " m ", m));
        }
      }
    }
  }
}

TEST(VQKernelMatrix, RawGemmHonoursStrides) {
  const TestMatrix t = random_vq(4, 6, 35, 50, 0, 7);
  const qtl::RowMatrixXf x = qtl::test::gaussian(3, 64, 8);  // ldx 64 > cols 50
  const VQKernelMatrix k(t.packed);
  std::vector<float> y(3 * 40, -7.0f);  // ldy 40 > rows 35
  k.gemm(x.data(), 64, 3, y.data(), 40, 2);
  const qtl::RowMatrixXf ref = k.gemm(qtl::RowMatrixXf(x.leftCols(50)));
  for (Index n = 0; n < 3; ++n) {
    for (Index r = 0; r < 40; ++r) {
      if (r < 35) {
        EXPECT_EQ(y[static_cast<std::size_t>(n * 40 + r)], ref(n, r));
      } else {
        EXPECT_EQ(y[static_cast<std::size_t>(n * 40 + r)], -7.0f) << "wrote past the rows";
      }
    }
  }
}

TEST(VQKernelMatrix, CostModelPicksTableForSharedCodebooks) {
  const TestMatrix shared = random_vq(2, 8, 512, 8, 0, 1);
  EXPECT_EQ(VQKernelMatrix(shared.packed).strategy(), VQStrategy::Table);
  const TestMatrix per16 = random_vq(2, 8, 512, 8, 16, 2);
  EXPECT_EQ(VQKernelMatrix(per16.packed).strategy(), VQStrategy::Decode);
  const TestMatrix big = random_vq(4, 8, 4096, 64, 0, 3);
  const VQKernelMatrix kb(big.packed);
  EXPECT_EQ(kb.strategy(), VQStrategy::Table);
  // 8-bit indices stay one byte each: the layout streams 2 bits/weight plus the codebook
  EXPECT_EQ(kb.view().idx16, nullptr);
  EXPECT_LT(kb.bytes(), std::size_t{4096 * 16 + 256 * 4 * 4 + 4096 * 4 + 64});
}

TEST(VQKernelMatrix, RejectsBadInput) {
  const TestMatrix t = random_vq(4, 4, 20, 30, 0, 1);
  const VQKernelMatrix k(t.packed);
  EXPECT_THROW((void)k.gemv(qtl::VectorXf::Zero(29)), qtl::Error);
  qtl::VectorXf bad = qtl::VectorXf::Zero(30);
  bad[3] = std::numeric_limits<float>::quiet_NaN();
  EXPECT_THROW((void)k.gemv(bad), qtl::Error);
  bad[3] = std::numeric_limits<float>::infinity();
  EXPECT_THROW((void)k.gemv(bad), qtl::Error);
  EXPECT_THROW((void)k.gemv(qtl::VectorXf::Zero(30), 0), qtl::Error);
  EXPECT_THROW((void)k.gemm(qtl::RowMatrixXf::Zero(2, 31)), qtl::Error);
  EXPECT_THROW((void)k.gemm(qtl::RowMatrixXf::Zero(0, 30)), qtl::Error);
  EXPECT_THROW((void)k.gemm(qtl::RowMatrixXf::Zero(2, 30), -1), qtl::Error);
  qtl::RowMatrixXf xb = qtl::RowMatrixXf::Zero(2, 30);
  xb(1, 29) = std::numeric_limits<float>::infinity();
  EXPECT_THROW((void)k.gemm(xb), qtl::Error);
  EXPECT_EQ(k.gemv(qtl::VectorXf::Zero(30)), qtl::VectorXf::Zero(20));
  // residual VQ is neither a KMeansVQ codebook nor E8P
  const auto e8p_rvq = qtl::pack_vq(qtl::quantize_vectors(qtl::ResidualVQ<qtl::E8P, qtl::KMeansVQ<8, 2>>{}, {},
                                                          qtl::test::gaussian(4, 16, 2)));
  EXPECT_THROW(VQKernelMatrix{e8p_rvq}, qtl::Error);
  const auto rvq = qtl::pack_vq(qtl::quantize_vectors(qtl::ResidualVQ<qtl::KMeansVQ<2, 2>, qtl::KMeansVQ<2, 2>>{},
                                                      {}, qtl::test::gaussian(4, 16, 3)));
  EXPECT_THROW(VQKernelMatrix{rvq}, qtl::Error);
  EXPECT_THROW(VQKernelMatrix{qtl::VQPackedMatrix{}}, qtl::Error);
  // a non-finite codebook value
  qtl::VQMatrix<qtl::KMeansVQ<2, 1>> m;
  m.layout = qtl::VQLayout{2, 4, 2, 2};
  m.indices = {0, 1, 1, 0};
  m.params = {{{0.5f, 1.0f, std::numeric_limits<float>::infinity(), 2.0f}}};
  EXPECT_THROW(VQKernelMatrix{qtl::pack_vq(m)}, qtl::Error);
  // a path this CPU lacks
  VQKernelMatrix k2(t.packed, KernelPath::Portable);
  for (KernelPath p : qtl::kernel::kAllKernelPaths) {
    if (qtl::kernel::path_supported(p)) {
      EXPECT_NO_THROW(k2.set_path(p));
    } else {
      EXPECT_THROW(k2.set_path(p), qtl::Error);
      EXPECT_THROW(VQKernelMatrix(t.packed, p), qtl::Error);
    }
  }
}

}  // namespace
