// Activation preparation: the int8 quantizer's error bound, exact zeros, and SIMD == scalar bits.
#include <gtest/gtest.h>
#include <qtl/kernels.hpp>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "test_util.hpp"

namespace {

using qtl::kernel::kBlockCols;

TEST(QuantizeActivations, BlockErrorIsAtMostHalfAStep) {
  std::mt19937 rng(1);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (int trial = 0; trial < 200; ++trial) {
    float x[kBlockCols];
    const float scale = std::exp(normal(rng) * 4.0f);
    for (float& v : x) v = normal(rng) * scale;
    if (trial % 7 == 0) x[trial % kBlockCols] = 50.0f * scale;  // an outlier
    std::int8_t q[kBlockCols];
    float d = -1.0f;
    const int sum = qtl::kernel::quantize_block_int8(x, q, &d);
    float amax = 0.0f;
    for (float v : x) amax = std::max(amax, std::abs(v));
    ASSERT_EQ(d, amax / 127.0f);
    int expected_sum = 0;
    for (int i = 0; i < kBlockCols; ++i) {
      ASSERT_GE(q[i], -127);
      ASSERT_LE(q[i], 127);
      // |x - d a| <= d / 2 + 2^-22 |x| (the documented bound, with the product's rounding).
      ASSERT_LE(std::abs(double(x[i]) - double(d) * q[i]), 0.5 * d + 0x1p-22 * std::abs(x[i])) << i;
      expected_sum += q[i];
    }
    ASSERT_EQ(sum, expected_sum);
  }
}

TEST(QuantizeActivations, ZeroBlockAndHalfEvenRounding) {
  float x[kBlockCols] = {};
  std::int8_t q[kBlockCols];
  float d = 1.0f;
  EXPECT_EQ(qtl::kernel::quantize_block_int8(x, q, &d), 0);
  EXPECT_EQ(d, 0.0f);
  for (std::int8_t v : q) EXPECT_EQ(v, 0);
  // max 127 makes the step exactly 1: 2.5 -> 2 and 3.5 -> 4 (ties to even), -0.5 -> 0.
  x[0] = 127.0f;
  x[1] = 2.5f;
  x[2] = 3.5f;
  x[3] = -0.5f;
  x[4] = -1.5f;
  qtl::kernel::quantize_block_int8(x, q, &d);
  EXPECT_EQ(d, 1.0f);
  EXPECT_EQ(q[0], 127);
  EXPECT_EQ(q[1], 2);
  EXPECT_EQ(q[2], 4);
  EXPECT_EQ(q[3], 0);
  EXPECT_EQ(q[4], -2);
}

TEST(QuantizeActivations, TinyBlocksKeepTheBoundAndExactZeros) {
  // A max below 127 / FLT_MAX (~7.5e-37) made 127 / max infinite and 0 * inf NaN: the zeros of
  // such a block came out as garbage (and differently in the vector versions). Every path now
  // scales the block by 2^64 first; the bound holds relative to the block's own max.
  for (const float mag : {1e-20f, 3e-37f, 1e-38f, 1e-42f, 1.4e-45f}) {
    float x[kBlockCols] = {};
    for (int i = 0; i < kBlockCols; i += 3) x[i] = mag * static_cast<float>((i % 7) - 3) / 3.0f;
    x[1] = mag;
    std::int8_t qs[kBlockCols], qp[kBlockCols];
    float ds = -1.0f, dp = -2.0f;
    const int ss = qtl::kernel::quantize_block_int8(x, qs, &ds);
    const int sp = qtl::kernel::quantize_block_int8_portable(x, qp, &dp);
    ASSERT_EQ(qs[1], 127) << mag;
    int expected_sum = 0;
    for (int i = 0; i < kBlockCols; ++i) {
      if (x[i] == 0.0f) {
        ASSERT_EQ(qs[i], 0) << mag << " " << i;
      }
      // The bound of the header, plus what a subnormal d loses (it is rounded to 2^-149).
      ASSERT_LE(std::abs(double(x[i]) - double(ds) * qs[i]), 0.5 * ds + 0x1p-22 * std::abs(x[i]) + 127 * 0x1p-149)
          << mag << " " << i;
      expected_sum += qs[i];
    }
    ASSERT_EQ(ss, expected_sum) << mag;
    ASSERT_EQ(ss, sp) << mag;
    ASSERT_EQ(std::memcmp(&ds, &dp, sizeof(float)), 0) << mag;
    ASSERT_EQ(std::memcmp(qs, qp, kBlockCols), 0) << mag;
#if defined(QTL_X86_64)
    if (__builtin_cpu_supports("avx2")) {
      std::int8_t qa[kBlockCols];
      float da = -3.0f;
      ASSERT_EQ(qtl::kernel::quantize_block_int8_avx2(x, qa, &da), ss) << mag;
      ASSERT_EQ(std::memcmp(&ds, &da, sizeof(float)), 0) << mag;
      ASSERT_EQ(std::memcmp(qs, qa, kBlockCols), 0) << mag;
    }
#endif
  }
}

TEST(QuantizeActivations, PortableBlockQuantizerIsBitIdenticalToScalar) {
  // The xsimd version (what prepare() uses without AVX2: older x86, AArch64) on random blocks,
  // exact ties (max 127: step 1), zeros, and magnitudes from 1e-30 to 1e30.
  std::mt19937 rng(5);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (int trial = 0; trial < 500; ++trial) {
    float x[kBlockCols];
    const float scale = std::exp(normal(rng) * 15.0f);
    for (float& v : x) v = normal(rng) * scale;
    if (trial % 5 == 0) {
      x[0] = 127.0f;
      for (int i = 1; i < kBlockCols; ++i) x[i] = 0.5f * static_cast<float>(static_cast<int>(rng() % 255) - 127);
    }
    if (trial % 11 == 0) std::fill(x, x + kBlockCols, 0.0f);
    if (trial % 13 == 0) x[trial % kBlockCols] = -0.0f;
    std::int8_t qs[kBlockCols], qp[kBlockCols];
    float ds = -1.0f, dp = -2.0f;
    const int ss = qtl::kernel::quantize_block_int8(x, qs, &ds);
    const int sp = qtl::kernel::quantize_block_int8_portable(x, qp, &dp);
    ASSERT_EQ(ss, sp) << trial;
    ASSERT_EQ(std::memcmp(&ds, &dp, sizeof(float)), 0) << trial;
    ASSERT_EQ(std::memcmp(qs, qp, kBlockCols), 0) << trial;
  }
}

TEST(QuantizeActivations, SimdPreparationIsBitIdenticalToScalar) {
  const auto w = qtl::test::gaussian(20, 300, 3, 0.1f);
  const auto packed = qtl::pack(qtl::quantize_matrix(qtl::Uniform<4>{}, qtl::PerGroup{48}, w));
  const qtl::kernel::UniformKernelMatrix k(packed);
  const auto view = k.view();
  auto x = qtl::test::gaussian(13, 300, 4);
  x.block(2, 0, 1, 64).setZero();
  x(5, 7) = 1e30f;
  x(6, 8) = -1e-30f;
  x.block(7, 64, 1, 64) *= 1e-39f;  // blocks below 127 / FLT_MAX
  qtl::kernel::PreparedActivations simd, scalar;
  simd.allocate(view, 13, qtl::kernel::ActivationMode::Int8);
  scalar.allocate(view, 13, qtl::kernel::ActivationMode::Int8);
  scalar.allow_simd(false);
  simd.prepare(view, x.data(), x.outerStride(), 0, 13);
  scalar.prepare(view, x.data(), x.outerStride(), 0, 13);
  for (std::ptrdiff_t n = 0; n < 13; ++n) {
    for (std::ptrdiff_t kc = 0; kc < view.blocks * kBlockCols; ++kc) {
      const float a = simd.effective(n, kc), b = scalar.effective(n, kc);
      ASSERT_EQ(std::memcmp(&a, &b, sizeof a), 0) << n << " " << kc;
    }
  }
}

// A matrix with one zero point z (symmetric codes) gets zsum = -z * (block sum of the int8
// codes) per token and block, which the AVX-512 VNNI kernels start their integer sums from; one
// with several zero points gets none, nor does Fp32 mode.
TEST(QuantizeActivations, ZeroPointSumsOnlyForOneZeroPoint) {
  const auto w = qtl::test::gaussian(20, 300, 5, 0.1f);
  const qtl::kernel::UniformKernelMatrix sym(qtl::pack(qtl::quantize_matrix(qtl::Uniform<4, qtl::Mode::Symmetric>{}, qtl::PerGroup{32}, w)));
  const qtl::kernel::UniformKernelMatrix asym(qtl::pack(qtl::quantize_matrix(qtl::Uniform<4>{}, qtl::PerGroup{32}, w)));
  ASSERT_EQ(sym.view().uniform_zero, 8);
  ASSERT_EQ(asym.view().uniform_zero, -1);
  const auto x = qtl::test::gaussian(13, 300, 6);
  qtl::kernel::PreparedActivations a;
  a.allocate(asym.view(), 13, qtl::kernel::ActivationMode::Int8);
  a.prepare(asym.view(), x.data(), x.outerStride(), 0, 13);
  EXPECT_EQ(a.view().zsum, nullptr);
  a.allocate(sym.view(), 13, qtl::kernel::ActivationMode::Fp32);
  a.prepare(sym.view(), x.data(), x.outerStride(), 0, 13);
  EXPECT_EQ(a.view().zsum, nullptr);
  const auto v = sym.view();
  a.allocate(v, 13, qtl::kernel::ActivationMode::Int8);
  a.prepare(v, x.data(), x.outerStride(), 0, 13);
  const auto set = a.view();
  ASSERT_NE(set.zsum, nullptr);
  for (std::ptrdiff_t n = 0; n < 13; ++n) {
    const auto ch = qtl::kernel::token_chunk(13, n);
    const auto chunk = set.chunk(ch.begin);
    for (std::ptrdiff_t b = 0; b < v.blocks; ++b) {
      int sum = 0;
      for (std::ptrdiff_t k = 0; k < kBlockCols; ++k) {
        const float d = a.block_scale(n, b);
        sum += d == 0.0f ? 0 : static_cast<int>(std::lround(a.effective(n, b * kBlockCols + k) / d));
      }
      ASSERT_EQ(chunk.zsum[b * ch.width + (n - ch.begin)], -8 * sum) << "token " << n << " block " << b;
    }
  }
}

TEST(QuantizeActivations, TokenChunksCoverEveryTokenOnce) {
  for (std::ptrdiff_t m = 1; m <= 40; ++m) {
    std::ptrdiff_t n = 0;
    while (n < m) {
      const auto ch = qtl::kernel::token_chunk(m, n);
      ASSERT_EQ(ch.begin, n);
      ASSERT_TRUE(ch.width == 8 || ch.width == 4 || ch.width == 2 || ch.width == 1);
      for (std::ptrdiff_t j = 0; j < ch.width; ++j) {
        ASSERT_EQ(qtl::kernel::token_chunk(m, n + j).begin, n);
        ASSERT_EQ(qtl::kernel::token_chunk(m, n + j).width, ch.width);
      }
      n += ch.width;
    }
    ASSERT_EQ(n, m);
  }
}

}  // namespace
