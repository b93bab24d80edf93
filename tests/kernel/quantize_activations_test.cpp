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
