// fp16 <-> fp32 rows (the half-precision KV cache's conversions): every path and the portable
// path's plain C++ twin against the scalar code of qtl/detail/fp16.hpp, bit for bit, on strided
// rows whose lengths leave SIMD tails; the attention products against a double reference.
#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>
#include <qtl/detail/fp16.hpp>
#include <qtl/kernel/common/fp16_rows.hpp>
#include <qtl/kernel/common/portable_simd.hpp>
#include <random>
#include <vector>

namespace {

using qtl::kernel::KernelPath;

TEST(Fp16Rows, EveryHalfWidensAsTheScalarCodeOnEveryPath) {
  // All 65536 bit patterns as 4096 rows of 16, read with a stride of 19 into rows of stride 21.
  constexpr std::ptrdiff_t kRows = 4096, kCols = 16, kSrc = 19, kDst = 21;
  std::vector<std::uint16_t> src(kRows * kSrc, 0);
  for (std::ptrdiff_t r = 0; r < kRows; ++r) {
    for (std::ptrdiff_t c = 0; c < kCols; ++c) src[r * kSrc + c] = static_cast<std::uint16_t>(r * kCols + c);
  }
  // Every path, then (-1) the scalar twin.
  std::vector<int> paths;
  for (KernelPath p : qtl::kernel::supported_kernel_paths()) paths.push_back(static_cast<int>(p));
  paths.push_back(-1);
  for (int pi : paths) {
    const auto p = static_cast<KernelPath>(pi < 0 ? 0 : pi);
    std::vector<float> dst(kRows * kDst, -1.0f);
    if (pi < 0) {
      qtl::kernel::fp16_rows_to_float_scalar(src.data(), kSrc, dst.data(), kDst, kRows, kCols);
    } else {
      qtl::kernel::fp16_rows_to_float(p, src.data(), kSrc, dst.data(), kDst, kRows, kCols);
    }
    int bad = 0;
    for (std::ptrdiff_t r = 0; r < kRows; ++r) {
      for (std::ptrdiff_t c = 0; c < kDst; ++c) {
        const float got = dst[r * kDst + c];
        if (c >= kCols) {
          bad += got != -1.0f;  // outside the rows: untouched
          continue;
        }
        const float want = qtl::detail::half_to_float(src[r * kSrc + c]);
        bad += std::isnan(want) ? !std::isnan(got) : std::bit_cast<std::uint32_t>(got) != std::bit_cast<std::uint32_t>(want);
      }
    }
    EXPECT_EQ(bad, 0) << (pi < 0 ? "scalar twin" : qtl::kernel::to_string(p));
  }
}

TEST(Fp16Rows, TheBitOperationWideningOfArchsWithoutAConversionInstructionIsExact) {
  // load_fp16's fallback for archs without vcvtph2ps / fcvtl (SSE2 builds without F16C), called
  // directly on this build's batch: every one of the 65536 halves, bit for bit (NaN as NaN).
  using A = qtl::kernel::PortableArch;
  using F32 = xsimd::batch<float, A>;
  std::vector<std::uint16_t> all(65536);
  for (std::size_t i = 0; i < all.size(); ++i) all[i] = static_cast<std::uint16_t>(i);
  int bad = 0;
  alignas(64) float lanes[F32::size];
  for (std::size_t i = 0; i < all.size(); i += F32::size) {
    qtl::kernel::detail_simd::load_fp16<A>(all.data() + i, xsimd::generic{}).store_aligned(lanes);
    for (std::size_t k = 0; k < F32::size; ++k) {
      const float want = qtl::detail::half_to_float(all[i + k]);
      const float got = lanes[k];
      bad += std::isnan(want) ? !std::isnan(got) : std::bit_cast<std::uint32_t>(got) != std::bit_cast<std::uint32_t>(want);
    }
  }
  EXPECT_EQ(bad, 0);
}

TEST(Fp16Rows, FloatsRoundAsTheScalarCodeOnEveryPath) {
  // Random magnitudes over fp16's whole range and beyond (subnormal halves, overflow to inf),
  // exact ties between two halves (ties to even), signed zeros and infinities; rows of 13
  // (a tail of 5 after the 8-wide step).
  std::mt19937 rng(3);
  std::uniform_real_distribution<float> exponent(-30.0f, 18.0f), unit(-1.0f, 1.0f);
  std::vector<float> v;
  for (int i = 0; i < 20000; ++i) v.push_back(unit(rng) * std::exp2(exponent(rng)));
  for (int i = 0; i < 2000; ++i) {  // halfway between consecutive halves
    const auto h = static_cast<std::uint16_t>(rng() % 0x7BFF);
    v.push_back(0.5f * (qtl::detail::half_to_float(h) + qtl::detail::half_to_float(static_cast<std::uint16_t>(h + 1))));
  }
  for (float x : {0.0f, -0.0f, 65504.0f, 65520.0f, -65520.0f, 65519.99f, 6.0e-8f, 2.9e-8f, 3.0e-8f,
                  std::numeric_limits<float>::infinity(), -std::numeric_limits<float>::infinity(),
                  std::numeric_limits<float>::min(), std::numeric_limits<float>::max()}) {
    v.push_back(x);
  }
  constexpr std::ptrdiff_t kCols = 13, kSrc = 15, kDst = 14;
  const std::ptrdiff_t rows = static_cast<std::ptrdiff_t>(v.size()) / kCols;
  std::vector<float> src(static_cast<std::size_t>(rows * kSrc), 0.0f);
  for (std::ptrdiff_t r = 0; r < rows; ++r) {
    for (std::ptrdiff_t c = 0; c < kCols; ++c) src[r * kSrc + c] = v[static_cast<std::size_t>(r * kCols + c)];
  }
  for (KernelPath p : qtl::kernel::supported_kernel_paths()) {
    std::vector<std::uint16_t> dst(static_cast<std::size_t>(rows * kDst), 0xABCD);
    qtl::kernel::float_rows_to_fp16(p, src.data(), kSrc, dst.data(), kDst, rows, kCols);
    int bad = 0, untouched = 0;
    for (std::ptrdiff_t r = 0; r < rows; ++r) {
      for (std::ptrdiff_t c = 0; c < kDst; ++c) {
        if (c >= kCols) {
          untouched += dst[r * kDst + c] == 0xABCD;
          continue;
        }
        bad += dst[r * kDst + c] != qtl::detail::float_to_half(src[r * kSrc + c]);
      }
    }
    EXPECT_EQ(bad, 0) << qtl::kernel::to_string(p);
    EXPECT_EQ(untouched, rows * (kDst - kCols)) << qtl::kernel::to_string(p);
  }
}

TEST(Fp16Rows, OneTokenAttentionProductsMatchADoubleReferenceOnEveryPath) {
  // scores = K q and out = Vᵀ p over strided fp16 rows, for head sizes with and without SIMD
  // tails (64 = one block of 64 columns; 72 = a block and 8; 13 = 8 and 5; 5 = scalar only) and
  // odd row counts (the dot's 2-row step and its last row). Every path sums in its own order:
  // held to float rounding against a double sum of the same fp16 values.
  std::mt19937 rng(11);
  std::normal_distribution<float> normal;
  for (const std::ptrdiff_t cols : {64, 72, 13, 5}) {
    for (const std::ptrdiff_t rows : {1, 2, 37}) {
      const std::ptrdiff_t stride = cols + 9;
      std::vector<std::uint16_t> kv(static_cast<std::size_t>(rows * stride));
      for (auto& h : kv) h = qtl::detail::float_to_half(normal(rng));
      std::vector<float> q(static_cast<std::size_t>(cols)), p(static_cast<std::size_t>(rows));
      for (auto& x : q) x = normal(rng);
      for (auto& x : p) x = std::abs(normal(rng));
      std::vector<double> want_dot(static_cast<std::size_t>(rows), 0.0), want_sum(static_cast<std::size_t>(cols), 0.0);
      double dot_mag = 0, sum_mag = 0;
      for (std::ptrdiff_t r = 0; r < rows; ++r) {
        for (std::ptrdiff_t c = 0; c < cols; ++c) {
          const double w = qtl::detail::half_to_float(kv[static_cast<std::size_t>(r * stride + c)]);
          want_dot[static_cast<std::size_t>(r)] += double{q[static_cast<std::size_t>(c)]} * w;
          want_sum[static_cast<std::size_t>(c)] += double{p[static_cast<std::size_t>(r)]} * w;
          dot_mag += std::abs(double{q[static_cast<std::size_t>(c)]} * w);
          sum_mag += std::abs(double{p[static_cast<std::size_t>(r)]} * w);
        }
      }
      std::vector<int> paths;  // every path, then (-1) the portable path's scalar twin
      for (KernelPath path : qtl::kernel::supported_kernel_paths()) paths.push_back(static_cast<int>(path));
      paths.push_back(-1);
      for (int pi : paths) {
        const auto path = static_cast<KernelPath>(pi < 0 ? 0 : pi);
        std::vector<float> dot(static_cast<std::size_t>(rows) + 1, -7.0f), sum(static_cast<std::size_t>(cols) + 1, -7.0f);
        if (pi < 0) {
          qtl::kernel::fp16_rows_dot_scalar(q.data(), kv.data(), stride, rows, cols, dot.data());
          qtl::kernel::fp16_rows_weighted_sum_scalar(p.data(), kv.data(), stride, rows, cols, sum.data());
        } else {
          qtl::kernel::fp16_rows_dot(path, q.data(), kv.data(), stride, rows, cols, dot.data());
          qtl::kernel::fp16_rows_weighted_sum(path, p.data(), kv.data(), stride, rows, cols, sum.data());
        }
        const auto where = testing::Message() << (pi < 0 ? "scalar twin" : qtl::kernel::to_string(path)) << " rows "
                                              << rows << " cols " << cols;
        for (std::ptrdiff_t r = 0; r < rows; ++r) {
          EXPECT_NEAR(dot[static_cast<std::size_t>(r)], want_dot[static_cast<std::size_t>(r)], 1e-6 * dot_mag) << where;
        }
        for (std::ptrdiff_t c = 0; c < cols; ++c) {
          EXPECT_NEAR(sum[static_cast<std::size_t>(c)], want_sum[static_cast<std::size_t>(c)], 1e-6 * sum_mag) << where;
        }
        EXPECT_EQ(dot.back(), -7.0f) << where;  // nothing written past the rows / columns
        EXPECT_EQ(sum.back(), -7.0f) << where;
      }
    }
  }
}

}  // namespace
