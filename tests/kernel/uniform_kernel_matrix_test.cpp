// Every kernel path the CPU supports against the scalar reference (qtl/kernel/uniform/reference.hpp),
// and the portable (xsimd) tiles also against the scalar tiles (uniform_tiles_scalar).
#include <gtest/gtest.h>
#include "data_path.hpp"
#include <qtl/io/llama2c.hpp>
#include <qtl/io/llama2c.hpp>
#include <qtl/kernels.hpp>

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
using qtl::kernel::ActivationMode;
using qtl::kernel::KernelPath;
using qtl::kernel::UniformKernelMatrix;

// Worst-case float error of the kernels' sums: (chain + 8) units of roundoff, times two for the
// rounding of the reference itself, relative to sum_c s * (q + z) * |x_c| (the magnitudes the
// kernels add before the zero-point subtraction).


// The AMX tile GEMM (qtl/kernel/uniform/amx.hpp) runs for int8 activations of at least
// kAmxMinTokens (32) tokens on the Avx512Vnni path where the CPU and the OS allow it: checked
// as one more "path".
bool amx_runs(KernelPath path, ActivationMode mode, Index m) {
  return path == KernelPath::Avx512Vnni && mode == ActivationMode::Int8 && qtl::kernel::amx_usable() &&
         m >= UniformKernelMatrix::kAmxMinTokens;
}

template <int B, qtl::Mode M>
void check_all_paths(const Case& cs, const qtl::RowMatrixXf& w, const qtl::RowMatrixXf& x,
                     const char* what, bool amx_only = false) {
  const auto q = qtl::quantize_matrix(qtl::Uniform<B, M>{}, cs.g, w);
  const auto packed = qtl::pack(q);
  const auto wv = packed.view();
  const Index m = x.rows();
  // Reference: exact activations, and magnitudes for the float tolerance.
  qtl::RowMatrixXf ref(m, cs.rows);
  qtl::kernel::gemm_uniform_reference(wv, x.data(), x.outerStride(), m, ref.data(), ref.outerStride());
  const qtl::RowMatrixXf wq = qtl::dequantize(q);
  qtl::RowMatrixXf mag_w(cs.rows, cs.cols);  // s * (q + z) per weight
  for (Index r = 0; r < cs.rows; ++r) {
    for (Index c = 0; c < cs.cols; ++c) {
      const auto& p = q.params_at(r, c);
      mag_w(r, c) = std::abs(p.scale) * (static_cast<float>(q.code(r, c)) + std::abs(p.zero));
    }
  }
  const qtl::RowMatrixXd mag_exact = x.cwiseAbs().cast<double>() * mag_w.transpose().cast<double>();
  const double chain = static_cast<double>(cs.cols + 8);

  for (KernelPath path : qtl::kernel::supported_kernel_paths()) {
    for (ActivationMode mode : {ActivationMode::Fp32, ActivationMode::Int8}) {
     for (bool amx : {false, true}) {
      if (amx ? !amx_runs(path, mode, m) : amx_only) continue;
      SCOPED_TRACE(testing::Message() << what << " " << B << "-bit " << (M == qtl::Mode::Symmetric ? "sym" : "asym")
                                      << " " << cs.rows << "x" << cs.cols << " " << qtl::to_string(cs.g)
                                      << " m=" << m << " path=" << qtl::kernel::to_string(path)
                                      << " mode=" << (mode == ActivationMode::Fp32 ? "fp32" : "int8")
                                      << (amx ? " amx" : ""));
      UniformKernelMatrix k(packed, mode, path);
      k.set_amx(amx);
      qtl::RowMatrixXf y(m, cs.rows);
      k.gemm(x.data(), x.outerStride(), m, y.data(), y.outerStride(), 1);
      qtl::kernel::PreparedActivations acts;
      const auto kv = k.view();
      acts.allocate(kv, m, mode);
      acts.prepare(kv, x.data(), x.outerStride(), 0, m);
      // The portable (xsimd) path also against the scalar tiles on the same activations: both
      // lie within the tolerance below of the reference, so within twice it of each other.
      const bool portable = path == KernelPath::Portable;
      qtl::RowMatrixXf ys(m, cs.rows);
      if (portable) qtl::kernel::uniform_tiles_scalar(kv, acts.view(), ys.data(), ys.outerStride(), 0, kv.tiles);
      if (mode == ActivationMode::Fp32) {
        for (Index n = 0; n < m; ++n) {
          for (Index r = 0; r < cs.rows; ++r) {
            const double tol = 2.0 * chain * kUnit * mag_exact(n, r) + 1e-30;
            ASSERT_LE(std::abs(double(y(n, r)) - double(ref(n, r))), tol) << "token " << n << " row " << r;
            if (portable) {
              ASSERT_LE(std::abs(double(y(n, r)) - double(ys(n, r))), 2.0 * tol) << "scalar, token " << n << " row " << r;
            }
          }
        }
        continue;
      }
      // Int8: (1) equals the reference evaluated on the same int8 activations, to float rounding;
      // (2) stays within the documented bound of the exact reference.
      const auto kcol = qtl::test::kernel_columns(kv);
      for (Index n = 0; n < m; ++n) {
        for (Index r = 0; r < cs.rows; ++r) {
          double yq = 0.0, mag_q = 0.0, bound = 0.0;
          for (Index c = 0; c < cs.cols; ++c) {
            const Index kc = kcol[static_cast<std::size_t>(c)];
            const double xe = acts.effective(n, kc);
            yq += double(wq(r, c)) * xe;
            mag_q += double(mag_w(r, c)) * std::abs(xe);
            const double d = acts.block_scale(n, kc / 32);
            bound += std::abs(double(wq(r, c))) * (0.5 * d + 0x1p-22 * std::abs(double(x(n, c))));
          }
          const double tol_q = 2.0 * chain * kUnit * mag_q + 1e-30;
          ASSERT_LE(std::abs(double(y(n, r)) - yq), tol_q) << "token " << n << " row " << r;
          if (portable) {
            ASSERT_LE(std::abs(double(y(n, r)) - double(ys(n, r))), 2.0 * tol_q) << "scalar, token " << n << " row " << r;
          }
          const double tol_exact = bound + tol_q + 2.0 * chain * kUnit * mag_exact(n, r);
          ASSERT_LE(std::abs(double(y(n, r)) - double(ref(n, r))), tol_exact) << "token " << n << " row " << r;
        }
      }
     }
    }
  }
}

template <int B>
void check_bits(const Case& cs, const qtl::RowMatrixXf& w, const qtl::RowMatrixXf& x, const char* what,
                bool amx_only = false) {
  check_all_paths<B, qtl::Mode::Asymmetric>(cs, w, x, what, amx_only);
  check_all_paths<B, qtl::Mode::Symmetric>(cs, w, x, what, amx_only);
}

void check_every_format(const Case& cs, const qtl::RowMatrixXf& w, const qtl::RowMatrixXf& x, const char* what,
                        bool amx_only = false) {
  check_bits<2>(cs, w, x, what, amx_only);
  check_bits<3>(cs, w, x, what, amx_only);
  check_bits<4>(cs, w, x, what, amx_only);
  check_bits<5>(cs, w, x, what, amx_only);
  check_bits<6>(cs, w, x, what, amx_only);
  check_bits<8>(cs, w, x, what, amx_only);
}

// Codes at their extremes against activations at +-127, for `tokens` tokens.
void check_extremes(Index tokens, bool amx_only) {
  std::mt19937 rng(7);
  std::bernoulli_distribution coin(0.5);
  const Case cs{37, 200, qtl::PerGroup{64}};
  qtl::RowMatrixXf w_sign(cs.rows, cs.cols), x_sign(tokens, cs.cols);
  for (auto& v : w_sign.reshaped()) v = coin(rng) ? 1.0f : -1.0f;
  for (auto& v : x_sign.reshaped()) v = coin(rng) ? 3.0f : -3.0f;
  check_every_format(cs, w_sign, x_sign, "signs", amx_only);
  const qtl::RowMatrixXf w_pos = qtl::RowMatrixXf::Constant(cs.rows, cs.cols, 0.5f);
  const qtl::RowMatrixXf x_pos = qtl::RowMatrixXf::Constant(tokens, cs.cols, 2.0f);
  const qtl::RowMatrixXf x_neg = -x_pos;
  check_every_format(cs, w_pos, x_pos, "all positive", amx_only);
  check_every_format(cs, w_pos, x_neg, "all negative", amx_only);
}

// Where the AMX GEMM cannot run there is nothing of it to check: say so instead of passing.
#define QTL_REQUIRE_AMX()                                                                   \
  if (!qtl::kernel::amx_usable() || !qtl::kernel::path_supported(KernelPath::Avx512Vnni)) \
  GTEST_SKIP() << "no AMX-INT8 tiles usable on this machine"

const std::vector<Case>& adversarial_cases() {
  static const std::vector<Case> cases = {
      {1, 1, qtl::PerTensor{}},      {1, 33, qtl::PerRow{}},        {17, 1, qtl::PerGroup{7}},
      {13, 172, qtl::PerGroup{7}},   {13, 172, qtl::PerGroup{32}},  {33, 172, qtl::PerRow{}},
      {16, 64, qtl::PerTensor{}},    {31, 100, qtl::PerGroup{48}},  {20, 96, qtl::PerGroup{128}},
      {40, 300, qtl::PerGroup{64}},  {5, 257, qtl::PerGroup{128}},  {9, 31, qtl::PerGroup{16}},
  };
  return cases;
}

TEST(UniformKernelMatrix, EveryPathMatchesReferenceOnAdversarialShapes) {
  unsigned seed = 100;
  for (const Case& cs : adversarial_cases()) {
    for (Index m : {1, 3, 13}) {
      const auto w = qtl::test::gaussian(cs.rows, cs.cols, ++seed, 0.05f);
      const auto x = qtl::test::gaussian(m, cs.cols, ++seed);
      check_every_format(cs, w, x, "gaussian");
    }
  }
}

TEST(UniformKernelMatrix, AmxGemmMatchesReferenceOnAdversarialShapes) {
  QTL_REQUIRE_AMX();
  // Exactly two chunks of 16 tokens, and 2 chunks + 5 (a padded last chunk); shapes with
  // padded rows, padded columns, groups of 7 (one block each) and one group per row.
  unsigned seed = 300;
  for (const Case& cs : adversarial_cases()) {
    for (Index m : {32, 37}) {
      const auto w = qtl::test::gaussian(cs.rows, cs.cols, ++seed, 0.05f);
      const auto x = qtl::test::gaussian(m, cs.cols, ++seed);
      check_every_format(cs, w, x, "gaussian", true);
    }
  }
}

TEST(UniformKernelMatrix, AmxGemmExtremeCodesAndPanels) {
  QTL_REQUIRE_AMX();
  // Codes at their extremes against activations at +-127 (signed code - zero down to -255 for
  // 8 bits is why 8-bit codes stay unsigned), and 4200 columns: three panels of 2048 columns
  // (the last one partial), 17 tiles (two groups of tiles, the second of one padded tile).
  check_extremes(40, true);
  const Case wide{257, 4200, qtl::PerGroup{128}};
  const auto w = qtl::test::gaussian(wide.rows, wide.cols, 41, 0.05f);
  const auto x = qtl::test::gaussian(34, wide.cols, 42);
  check_bits<4>(wide, w, x, "panels", true);
  check_bits<8>(wide, w, x, "panels", true);
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
struct alignas(64) TileConfigBytes {
  std::uint8_t b[64] = {};
};
TileConfigBytes stored_tile_config() {
  TileConfigBytes c;
  __asm__ volatile("sttilecfg %0" : "=m"(c.b));
  return c;
}

TEST(UniformKernelMatrix, AmxGemmLeavesTheThreadsTileConfigurationAsItFoundIt) {
  QTL_REQUIRE_AMX();
  // Other AMX users (ggml's kernels) load a configuration once per thread and keep using it:
  // a GEMM on the same thread must put theirs back, and leave an unconfigured thread so.
  const auto packed = qtl::pack(qtl::quantize_matrix(qtl::Uniform<4>{}, qtl::PerGroup{32}, qtl::test::gaussian(40, 96, 61)));
  UniformKernelMatrix k(packed, ActivationMode::Int8, KernelPath::Avx512Vnni);
  ASSERT_TRUE(k.amx());
  const auto x = qtl::test::gaussian(40, 96, 62);
  (void)k.gemm(x, 1);
  EXPECT_EQ(stored_tile_config().b[0], 0) << "an unconfigured thread was left configured";
  TileConfigBytes theirs;
  theirs.b[0] = 1;  // palette 1, one tile of 3 rows x 12 bytes: unlike the kernel's
  theirs.b[16] = 12;
  theirs.b[48] = 3;
  __asm__ volatile("ldtilecfg %0" ::"m"(theirs.b));
  (void)k.gemm(x, 1);
  const TileConfigBytes after = stored_tile_config();
  __asm__ volatile("tilerelease" ::: "memory");
  EXPECT_EQ(std::memcmp(after.b, theirs.b, 64), 0) << "the thread's own configuration was not restored";
}
#endif

TEST(UniformKernelMatrix, AmxCanBeTurnedOffAndOnlyOnWhereItRuns) {
  const auto packed = qtl::pack(qtl::quantize_matrix(qtl::Uniform<4>{}, qtl::PerGroup{32}, qtl::test::gaussian(16, 64, 51)));
  UniformKernelMatrix k(packed, ActivationMode::Int8, KernelPath::Portable);
  EXPECT_FALSE(k.amx());
  EXPECT_THROW(k.set_amx(true), qtl::Error);
  EXPECT_FALSE(k.amx());
  k.set_amx(false);
  if (qtl::kernel::path_supported(KernelPath::Avx512Vnni)) {
    k.set_path(KernelPath::Avx512Vnni);
    EXPECT_EQ(k.amx(), qtl::kernel::amx_usable());
    k.set_amx(false);
    EXPECT_FALSE(k.amx());
    if (qtl::kernel::amx_usable()) {
      k.set_amx(true);
      EXPECT_TRUE(k.amx());
    } else {
      EXPECT_THROW(k.set_amx(true), qtl::Error);
    }
  }
}

TEST(UniformKernelMatrix, ExtremeCodesAndActivationsDoNotOverflow) {
  // Codes at 0 and 2^b - 1 against activations at +-127: the int16 sums of vpmaddubsw and the
  // sign trick of the 8-bit path at their limits; also all-positive weights (every code at the
  // maximum, zero point 0) against all-positive activations (every product at its maximum).
  check_extremes(8, false);
}

TEST(UniformKernelMatrix, OutliersAndZeroBlocksStayWithinTheInt8Bound) {
  // One huge activation per block makes the int8 step coarse for the rest (the bound follows
  // d_b); a block of zeros has d_b = 0 and must contribute exactly nothing.
  const Case cs{24, 160, qtl::PerGroup{32}};
  const auto w = qtl::test::gaussian(cs.rows, cs.cols, 11, 0.05f);
  auto x = qtl::test::gaussian(5, cs.cols, 12);
  for (Index n = 0; n < x.rows(); ++n) {
    x(n, 3 + 32 * (n % 4)) = 1000.0f;
    x.block(n, 128, 1, 32).setZero();
  }
  check_every_format(cs, w, x, "outliers");
}

TEST(UniformKernelMatrix, ResultsAreBitIdenticalForAnyThreadCount) {
  const Case cs{200, 300, qtl::PerGroup{64}};
  const auto w = qtl::test::gaussian(cs.rows, cs.cols, 21, 0.05f);
  const auto x = qtl::test::gaussian(13, cs.cols, 22);
  const auto packed = qtl::pack(qtl::quantize_matrix(qtl::Uniform<4>{}, cs.g, w));
  for (KernelPath path : qtl::kernel::supported_kernel_paths()) {
    for (ActivationMode mode : {ActivationMode::Fp32, ActivationMode::Int8}) {
      UniformKernelMatrix k(packed, mode, path);
      qtl::test::expect_thread_count_independent(k, x, qtl::kernel::to_string(path));
      if (amx_runs(path, mode, 40)) {  // the AMX GEMM: 3 chunks of tokens, tiles split unevenly
        const auto x40 = qtl::test::gaussian(40, cs.cols, 23);
        qtl::test::expect_thread_count_independent(k, x40, "amx");
      }
    }
  }
}

// A token gives the same bits alone (GEMV) and among others (GEMM chunks of 8, 4, 2, 1) on
// every vector path: the GEMM's one-block-group loop (registers instead of ybuf) and the zero
// point in the integer sums (one-zero-point matrices, VNNI) keep the GEMV's float steps. (The
// AMX GEMM sums in another order; it is off here.)
TEST(UniformKernelMatrix, EveryTokenOfAGemmHasItsGemvBits) {
  const auto w = qtl::test::gaussian(40, 300, 25, 0.05f);
  const auto x = qtl::test::gaussian(15, 300, 26);
  for (const qtl::Granularity& g : {qtl::Granularity{qtl::PerGroup{32}}, qtl::Granularity{qtl::PerGroup{7}},
                                    qtl::Granularity{qtl::PerGroup{128}}}) {
    const auto sym4 = qtl::pack(qtl::quantize_matrix(qtl::Uniform<4, qtl::Mode::Symmetric>{}, g, w));
    const auto asym4 = qtl::pack(qtl::quantize_matrix(qtl::Uniform<4>{}, g, w));
    const auto sym2 = qtl::pack(qtl::quantize_matrix(qtl::Uniform<2, qtl::Mode::Symmetric>{}, g, w));
    const auto sym8 = qtl::pack(qtl::quantize_matrix(qtl::Uniform<8, qtl::Mode::Symmetric>{}, g, w));
    for (const auto* packed : {&sym4, &asym4, &sym2, &sym8}) {
      for (KernelPath path : qtl::kernel::supported_kernel_paths()) {
        SCOPED_TRACE(testing::Message() << qtl::to_string(g) << " " << packed->bits() << "-bit zero "
                                        << UniformKernelMatrix(*packed).view().uniform_zero
                                        << " path=" << qtl::kernel::to_string(path));
        UniformKernelMatrix k(*packed, ActivationMode::Int8, path);
        k.set_amx(false);
        qtl::RowMatrixXf y(x.rows(), w.rows());
        k.gemm(x.data(), x.outerStride(), x.rows(), y.data(), y.outerStride(), 1);
        std::vector<float> yn(static_cast<std::size_t>(w.rows()));
        for (Index n = 0; n < x.rows(); ++n) {
          k.gemv(x.row(n).data(), yn.data(), 1);
          for (Index r = 0; r < w.rows(); ++r) ASSERT_EQ(yn[static_cast<std::size_t>(r)], y(n, r)) << "token " << n << " row " << r;
        }
      }
    }
  }
}

TEST(UniformKernelMatrix, RealModelWeightsMatchReference) {
  const auto ckpt = qtl::io::Llama2cCheckpoint::load(qtl::io::data_path("stories260K/stories260K.bin"));
  for (const char* name : {"layers.0.wq", "layers.2.w2", "layers.4.w1"}) {
    const qtl::RowMatrixXf w = ckpt.tensor(name);
    const Case cs{w.rows(), w.cols(), qtl::PerGroup{32}};
    const auto x = qtl::test::gaussian(9, w.cols(), 31);
    check_bits<4>(cs, w, x, name);
    check_bits<2>(cs, w, x, name);
    check_bits<5>(cs, w, x, name);
    if (qtl::kernel::amx_usable()) {  // and on AMX tiles, 2 chunks of tokens + 1
      const auto x33 = qtl::test::gaussian(33, w.cols(), 32);
      check_bits<4>(cs, w, x33, name, true);
      check_bits<8>(cs, w, x33, name, true);
    }
  }
}

// multiply_group_scales(m) leaves the kernel exactly as if the matrix had been quantized with
// each group's fp16 scale times m, rounded to fp16: same outputs, bit for bit, on every path.
template <int B, qtl::Mode M>
void check_scaled_groups(const Case& cs, unsigned seed) {
  const auto w = qtl::test::gaussian(cs.rows, cs.cols, seed, 0.05f);
  const auto x = qtl::test::gaussian(5, cs.cols, seed + 1);
  auto q = qtl::quantize_matrix(qtl::Uniform<B, M>{}, cs.g, w);
  const Index groups = q.layout.groups_per_row();
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> factor(0.7f, 1.3f);
  std::vector<float> m(static_cast<std::size_t>(cs.rows * groups));
  for (auto& f : m) f = factor(rng);
  for (Index r = 0; r < cs.rows; ++r) {
    for (Index g = 0; g < groups; ++g) {
      auto& p = q.params[static_cast<std::size_t>(r * groups + g)];
      p.scale = qtl::detail::half_to_float(qtl::detail::float_to_half(p.scale * m[static_cast<std::size_t>(r * groups + g)]));
    }
  }
  const auto original = qtl::pack(qtl::quantize_matrix(qtl::Uniform<B, M>{}, cs.g, w));
  const auto rescaled = qtl::pack(q);
  for (KernelPath path : qtl::kernel::supported_kernel_paths()) {
    for (ActivationMode mode : {ActivationMode::Fp32, ActivationMode::Int8}) {
      SCOPED_TRACE(testing::Message() << B << "-bit " << cs.rows << "x" << cs.cols << " " << qtl::to_string(cs.g)
                                      << " path=" << qtl::kernel::to_string(path));
      UniformKernelMatrix k(original, mode, path);
      const auto bounds = k.scale_group_bounds();
      ASSERT_EQ(static_cast<Index>(bounds.size()), groups + 1);
      EXPECT_EQ(bounds.front(), 0);
      EXPECT_EQ(bounds.back(), cs.cols);
      k.multiply_group_scales(m);
      const UniformKernelMatrix expected(rescaled, mode, path);
      ASSERT_EQ(k.bytes(), expected.bytes());
      EXPECT_EQ(std::memcmp(k.view().data, expected.view().data, k.bytes()), 0);
      qtl::RowMatrixXf y(x.rows(), cs.rows), ye(x.rows(), cs.rows);
      k.gemm(x.data(), x.outerStride(), x.rows(), y.data(), y.outerStride(), 1);
      expected.gemm(x.data(), x.outerStride(), x.rows(), ye.data(), ye.outerStride(), 1);
      EXPECT_EQ(y, ye);
    }
  }
}

TEST(UniformKernelMatrix, MultipliedGroupScalesAreTheScalesOfAnotherQuantization) {
  check_scaled_groups<4, qtl::Mode::Asymmetric>({13, 172, qtl::PerGroup{32}}, 51);
  check_scaled_groups<2, qtl::Mode::Asymmetric>({31, 100, qtl::PerGroup{48}}, 52);
  check_scaled_groups<3, qtl::Mode::Symmetric>({17, 64, qtl::PerRow{}}, 53);
  check_scaled_groups<8, qtl::Mode::Symmetric>({20, 96, qtl::PerGroup{7}}, 54);
  check_scaled_groups<6, qtl::Mode::Asymmetric>({19, 172, qtl::PerGroup{32}}, 55);
}

TEST(UniformKernelMatrix, MultiplyGroupScalesRejectsBadFactorsAndChangesNothing) {
  const auto w = qtl::test::gaussian(16, 64, 61, 0.05f);
  UniformKernelMatrix k(qtl::pack(qtl::quantize_matrix(qtl::Uniform<4>{}, qtl::PerGroup{32}, w)));
  const std::vector<std::uint8_t> before(k.view().data, k.view().data + k.bytes());
  std::vector<float> m(16 * 2, 1.0f);
  auto error = [&](std::vector<float> f) { return qtl::test::error_of([&] { k.multiply_group_scales(f); }); };
  EXPECT_NE(error(std::vector<float>(31, 1.0f)).find("m must have size 32, got 31"), std::string::npos);
  m[5] = 0.0f;
  EXPECT_NE(error(m).find("factor (2, 1) must be finite and > 0, got 0"), std::string::npos) << error(m);
  m[5] = std::numeric_limits<float>::quiet_NaN();
  EXPECT_NE(error(m).find("factor (2, 1)"), std::string::npos);
  m[5] = 1e30f;
  EXPECT_NE(error(m).find("leaves fp16's range"), std::string::npos) << error(m);
  EXPECT_EQ(std::memcmp(before.data(), k.view().data, k.bytes()), 0);
  // One scale for the whole matrix: no per-row scales to change.
  UniformKernelMatrix t(qtl::pack(qtl::quantize_matrix(qtl::Uniform<4>{}, qtl::PerTensor{}, w)));
  EXPECT_TRUE(t.scale_group_bounds().empty());
  EXPECT_NE(qtl::test::error_of([&] { t.multiply_group_scales(std::vector<float>(16, 1.0f)); })
                .find("one scale serves the whole 16x64 matrix"),
            std::string::npos);
}

TEST(UniformKernelMatrix, CheckedEntryPointsRejectBadInput) {
  const auto w = qtl::test::gaussian(8, 40, 41, 0.1f);
  const auto packed = qtl::pack(qtl::quantize_matrix(qtl::Uniform<4>{}, qtl::PerGroup{16}, w));
  const UniformKernelMatrix k(packed);
  EXPECT_EQ(k.bits(), 4);
  qtl::test::expect_checked_entry_points_reject_bad_input(k, 8, 40);
  EXPECT_THROW(UniformKernelMatrix(qtl::PackedMatrix{}), qtl::Error);
  // Zero activations give exactly zero in both modes.
  for (ActivationMode mode : {ActivationMode::Fp32, ActivationMode::Int8}) {
    const UniformKernelMatrix km(packed, mode);
    EXPECT_EQ(km.gemv(qtl::VectorXf::Zero(40)), qtl::VectorXf::Zero(8));
  }
}

}  // namespace
