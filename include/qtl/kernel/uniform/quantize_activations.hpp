// qtl/kernel/uniform/quantize_activations.hpp — activations laid out for the uniform kernels.
//
// Both activation modes first gather x into the kernel's column order (qtl/kernel/
// uniform/layout.hpp): kernel block b of group g holds columns cb[g] + 32 (b - gb[g]) + i, and
// columns past the group's end are 0. Per token this gives `blocks * 32` values, plus one sum
// per group for the zero-point term:
//   Fp32: x_k = the gathered floats;   gsum[g] = sum_{c in g} x_c            (summed in double)
//   Int8: per block of 32, d_b = max|x| / 127 and a_c = clamp(round_half_even(x_c * 127 / max|x|),
//         -127, 127), so x_c = d_b a_c + e_c with |e_c| <= d_b / 2 (plus float rounding of the
//         product, |e_c| <= d_b/2 + 2^-22 |x_c|); a block of zeros has d_b = 0 and a = 0.
//         gsum[g] = sum_{b in g} d_b A_b with A_b = sum_{c in b} a_c       (summed in double)
//         zsum[b] = -z A_b, only when the layout has one zero point z (uniform_zero >= 0):
//         the exact integer zero-point term of the block, for the AVX-512 VNNI GEMM.
//         A block whose max|x| is below 2^-64 is first multiplied by 2^64 (exact: a power of two,
//         far from overflow) and d_b by 2^-64 after: 127 / max|x| overflows to infinity below
//         127 / FLT_MAX (~7.5e-37) and 0 * inf is NaN. Above 2^-64 nothing changes.
// The int8 code range is symmetric (-127..127, as ggml's Q8_0) so activations need no zero point.
// Every kernel path sees the same int8 activations (the paths differ only in how they add): the
// block quantizer has a scalar reference (quantize_block_int8) and two vector versions, one over
// xsimd batches (any CPU) and one for AVX2, which give the same bits.
#pragma once

#include "qtl/kernel/common/target.hpp"

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

#if defined(QTL_X86_64)
#include <immintrin.h>
#endif

#include "qtl/kernel/common/portable_simd.hpp"
#include "qtl/kernel/uniform/layout.hpp"

namespace qtl::kernel {

enum class ActivationMode { Fp32, Int8 };

/// Tokens are processed in chunks of 8, then one chunk each of 4, 2 and 1 for the rest
/// (13 = 8 + 4 + 1): the width W of the chunk holding token n depends only on m and n.
struct TokenChunk {
  std::ptrdiff_t begin = 0;
  int width = 0;
};
[[nodiscard]] inline TokenChunk token_chunk(std::ptrdiff_t m, std::ptrdiff_t n) noexcept {
  const std::ptrdiff_t full = m / 8 * 8;
  if (n < full) return {n / 8 * 8, 8};
  std::ptrdiff_t begin = full;
  for (int w : {4, 2, 1}) {
    if (m - begin >= w) {
      if (n < begin + w) return {begin, w};
      begin += w;
    }
  }
  return {begin, 1};  // not reached for n < m
}

/// Plain view of one chunk of W prepared tokens. Within a chunk the tokens are interleaved so a
/// kernel reaches every token from one base pointer with constant offsets (FBGEMM's packed A):
///   q[b*32*W + 4*t*W + 4*n + i]  int8 code of token n, kernel column 32 b + 4 t + i
///   x[(32*b + k)*W + n]          fp32 value of token n, kernel column 32 b + k
///   d[b*W + n]                   int8 block scale of token n, block b
///   zsum[b*W + n]                -uniform_zero * (sum of the int8 codes of token n, block b)
///   gsum[g*W + n]                group sum of token n, group g
struct ActivationView {
  const float* x = nullptr;            ///< Fp32 mode, else null
  const std::int8_t* q = nullptr;      ///< Int8 mode, else null
  const float* d = nullptr;            ///< Int8 mode, else null
  const std::int32_t* zsum = nullptr;  ///< Int8 mode with a uniform zero point, else null
  const float* gsum = nullptr;
  int width = 1;
};

/// Plain view of all m prepared tokens: what the kernels receive.
struct ActivationSet {
  const float* x = nullptr;
  const std::int8_t* q = nullptr;
  const float* d = nullptr;
  const std::int32_t* zsum = nullptr;
  const float* gsum = nullptr;
  std::ptrdiff_t m = 0, blocks = 0, groups = 0;

  /// The chunk of tokens starting at `begin` (a chunk start: see token_chunk).
  [[nodiscard]] ActivationView chunk(std::ptrdiff_t begin) const noexcept {
    ActivationView v;
    v.width = token_chunk(m, begin).width;
    if (x) v.x = x + begin * blocks * kBlockCols;
    if (q) v.q = q + begin * blocks * kBlockCols;
    if (d) v.d = d + begin * blocks;
    if (zsum) v.zsum = zsum + begin * blocks;
    v.gsum = gsum + begin * groups;
    return v;
  }
};

/// Gathers one token's x (cols floats) into kernel order: xk[blocks * 32], and gsum[groups]
/// unless gsum is null.
inline void gather_activations(const UniformKernelView& w, const float* x, float* xk,
                               float* gsum) noexcept {
  for (std::ptrdiff_t g = 0; g < w.groups; ++g) {
    const std::ptrdiff_t c0 = w.group_col_begin[g], c1 = w.group_col_begin[g + 1];
    float* dst = xk + static_cast<std::ptrdiff_t>(w.group_block_begin[g]) * kBlockCols;
    const std::ptrdiff_t padded = (w.group_block_begin[g + 1] - w.group_block_begin[g]) * kBlockCols;
    std::memcpy(dst, x + c0, static_cast<std::size_t>(c1 - c0) * sizeof(float));
    for (std::ptrdiff_t i = c1 - c0; i < padded; ++i) dst[i] = 0.0f;
    if (gsum == nullptr) continue;
    double s = 0.0;
    for (std::ptrdiff_t c = c0; c < c1; ++c) s += static_cast<double>(x[c]);
    gsum[g] = static_cast<float>(s);
  }
}

/// Blocks with max|x| below kTinyBlockMax are scaled by kTinyBlockUp first (see the header).
inline constexpr float kTinyBlockMax = 0x1p-64f, kTinyBlockUp = 0x1p64f, kTinyBlockDown = 0x1p-64f;

/// Quantizes 32 floats to int8 with one scale (see the header comment); returns sum of codes.
inline int quantize_block_int8(const float* x, std::int8_t* q, float* d) noexcept {
  float amax = 0.0f;
  for (int i = 0; i < kBlockCols; ++i) amax = std::max(amax, std::fabs(x[i]));
  if (amax == 0.0f) {
    for (int i = 0; i < kBlockCols; ++i) q[i] = 0;
    *d = 0.0f;
    return 0;
  }
  const bool tiny = amax < kTinyBlockMax;
  const float up = tiny ? kTinyBlockUp : 1.0f;
  if (tiny) amax *= up;
  const float inv = 127.0f / amax;
  int sum = 0;
  for (int i = 0; i < kBlockCols; ++i) {
    // nearbyint rounds half to even in the default rounding mode.
    const float v = std::clamp(std::nearbyint((tiny ? x[i] * up : x[i]) * inv), -127.0f, 127.0f);
    q[i] = static_cast<std::int8_t>(v);
    sum += static_cast<int>(v);
  }
  *d = tiny ? amax / 127.0f * kTinyBlockDown : amax / 127.0f;
  return sum;
}

/// quantize_block_int8 over xsimd batches (qtl/kernel/common/portable_simd.hpp): the same
/// operations (max of |x|, one IEEE product x * (127 / max), round half to even, clamp), so the
/// same bits (a test checks it).
inline int quantize_block_int8_portable(const float* x, std::int8_t* q, float* d) noexcept {
  using F32 = PortableBatch<float>;
  using I32 = PortableBatch<std::int32_t>;
  constexpr int kLanes = static_cast<int>(F32::size);
  static_assert(kBlockCols % kLanes == 0);
  constexpr int kVecs = kBlockCols / kLanes;
  F32 v[kVecs];
  F32 m(0.0f);
  for (int i = 0; i < kVecs; ++i) {
    v[i] = F32::load_unaligned(x + kLanes * i);
    m = xsimd::max(m, xsimd::abs(v[i]));
  }
  alignas(64) float lanes[kLanes];
  m.store_aligned(lanes);
  float amax = 0.0f;
  for (float l : lanes) amax = std::max(amax, l);
  if (amax == 0.0f) {
    std::memset(q, 0, kBlockCols);
    *d = 0.0f;
    return 0;
  }
  const bool tiny = amax < kTinyBlockMax;
  if (tiny) {
    amax *= kTinyBlockUp;
    for (int i = 0; i < kVecs; ++i) v[i] = v[i] * F32(kTinyBlockUp);
  }
  const F32 inv(127.0f / amax);
  // Rounding to int32 (ties to even) then clamping equals rounding and clamping in float: the
  // rounded values are integers far inside int32.
  const I32 lo(-127), hi(127);
  I32 sum(0);
  alignas(64) std::int32_t r[kBlockCols];
  for (int i = 0; i < kVecs; ++i) {
    const I32 t = xsimd::min(xsimd::max(xsimd::nearbyint_as_int(v[i] * inv), lo), hi);
    sum += t;
    t.store_aligned(r + kLanes * i);
  }
  for (int k = 0; k < kBlockCols; ++k) q[k] = static_cast<std::int8_t>(r[k]);
  *d = tiny ? amax / 127.0f * kTinyBlockDown : amax / 127.0f;
  return xsimd::hadd(sum);
}

#if defined(QTL_X86_64)
/// quantize_block_int8 with AVX2: the same operations in the same order (max of |x|, one IEEE
/// product x * (127 / max), round half to even, clamp), so codes, scale and sum are bit-identical
/// to the scalar function (a test checks it); only faster. (256-bit on purpose: GCC 12's masked
/// AVX-512 float intrinsics raise false -Wuninitialized warnings in user code.)
__attribute__((target("avx2"))) inline int quantize_block_int8_avx2(const float* x, std::int8_t* q,
                                                                    float* d) noexcept {
  const __m256 sign = _mm256_set1_ps(-0.0f);
  __m256 v[4], a[4];
  for (int i = 0; i < 4; ++i) {
    v[i] = _mm256_loadu_ps(x + 8 * i);
    a[i] = _mm256_andnot_ps(sign, v[i]);
  }
  __m256 m = _mm256_max_ps(_mm256_max_ps(a[0], a[1]), _mm256_max_ps(a[2], a[3]));
  m = _mm256_max_ps(m, _mm256_permute2f128_ps(m, m, 1));
  m = _mm256_max_ps(m, _mm256_permute_ps(m, 0x4E));
  m = _mm256_max_ps(m, _mm256_permute_ps(m, 0xB1));
  float amax = _mm256_cvtss_f32(m);
  if (amax == 0.0f) {
    std::memset(q, 0, kBlockCols);
    *d = 0.0f;
    return 0;
  }
  const bool tiny = amax < kTinyBlockMax;
  if (tiny) {
    amax *= kTinyBlockUp;
    for (__m256& vi : v) vi = _mm256_mul_ps(vi, _mm256_set1_ps(kTinyBlockUp));
  }
  const __m256 inv = _mm256_set1_ps(127.0f / amax);
  const __m256 lo = _mm256_set1_ps(-127.0f), hi = _mm256_set1_ps(127.0f);
  __m256i r[4];
  for (int i = 0; i < 4; ++i) {
    const __m256 t = _mm256_round_ps(_mm256_mul_ps(v[i], inv), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    r[i] = _mm256_cvtps_epi32(_mm256_min_ps(_mm256_max_ps(t, lo), hi));
  }
  // packs interleave 128-bit lanes: dwords come out as r0[0:4] r1[0:4] r2[0:4] r3[0:4] r0[4:8] ...
  const __m256i b = _mm256_packs_epi16(_mm256_packs_epi32(r[0], r[1]), _mm256_packs_epi32(r[2], r[3]));
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(q),
                      _mm256_permutevar8x32_epi32(b, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7)));
  alignas(32) std::int32_t lanes[8];
  _mm256_store_si256(reinterpret_cast<__m256i*>(lanes),
                     _mm256_add_epi32(_mm256_add_epi32(r[0], r[1]), _mm256_add_epi32(r[2], r[3])));
  int sum = 0;
  for (std::int32_t l : lanes) sum += l;
  *d = tiny ? amax / 127.0f * kTinyBlockDown : amax / 127.0f;
  return sum;
}
#endif

/// Quantizes one token gathered in kernel order (xk: blocks * 32 floats, gather_activations)
/// block by block: put(b, q, d, A) receives block b's 32 int8 codes, its scale and the sum of
/// its codes, and
/// gsum[g] = sum_{b in g} d_b A_b (summed in double). `simd` false uses the scalar
/// quantize_block_int8; every block quantizer gives the same bits.
template <class Put>
void quantize_token_int8(const UniformKernelView& w, const float* xk, bool simd, float* gsum, Put&& put) noexcept {
  std::int8_t q[kBlockCols];
#if defined(QTL_X86_64)
  const bool avx2 = simd && __builtin_cpu_supports("avx2");
#endif
  for (std::ptrdiff_t g = 0; g < w.groups; ++g) {
    double s = 0.0;
    for (std::ptrdiff_t b = w.group_block_begin[g]; b < w.group_block_begin[g + 1]; ++b) {
      float d = 0.0f;
      const float* xb = xk + b * kBlockCols;
#if defined(QTL_X86_64)
      const int sum = avx2 ? quantize_block_int8_avx2(xb, q, &d)
                      : simd ? quantize_block_int8_portable(xb, q, &d)
                             : quantize_block_int8(xb, q, &d);
#else
      const int sum = simd ? quantize_block_int8_portable(xb, q, &d) : quantize_block_int8(xb, q, &d);
#endif
      s += static_cast<double>(d) * static_cast<double>(sum);
      put(b, q, d, sum);
    }
    gsum[g] = static_cast<float>(s);
  }
}

/// Owns prepared activations for m tokens.
class PreparedActivations {
 public:
  void allocate(const UniformKernelView& w, std::ptrdiff_t m, ActivationMode mode) {
    mode_ = mode;
    m_ = m;
    zero_ = -1;
    blocks_ = w.blocks;
    groups_ = w.groups;
    const auto n = static_cast<std::size_t>(m);
    const auto nk = static_cast<std::size_t>(w.blocks * kBlockCols);
    if (mode == ActivationMode::Fp32) {
      x_.resize(n * nk);
    } else {
      q_.resize(n * nk);
      d_.resize(n * static_cast<std::size_t>(w.blocks));
      zero_ = w.uniform_zero;
      if (zero_ >= 0) zsum_.resize(n * static_cast<std::size_t>(w.blocks));
    }
    gsum_.resize(n * static_cast<std::size_t>(w.groups));
  }

  /// Prepares tokens [n_begin, n_end) of X (row n at x + n * ldx, cols finite floats each).
  /// Distinct token ranges may be prepared concurrently.
  void prepare(const UniformKernelView& w, const float* x, std::ptrdiff_t ldx, std::ptrdiff_t n_begin,
               std::ptrdiff_t n_end) {
    const std::ptrdiff_t nk = w.blocks * kBlockCols;
    std::vector<float> xk(static_cast<std::size_t>(nk));
    std::vector<float> gs(static_cast<std::size_t>(w.groups));
    const bool int8 = mode_ == ActivationMode::Int8;
    for (std::ptrdiff_t n = n_begin; n < n_end; ++n) {
      const TokenChunk ch = token_chunk(m_, n);
      const std::ptrdiff_t W = ch.width, j = n - ch.begin;
      gather_activations(w, x + n * ldx, xk.data(), int8 ? nullptr : gs.data());
      float* gdst = gsum_.data() + ch.begin * w.groups;
      if (mode_ == ActivationMode::Fp32) {
        float* xdst = x_.data() + ch.begin * nk;
        for (std::ptrdiff_t k = 0; k < nk; ++k) xdst[k * W + j] = xk[static_cast<std::size_t>(k)];
        for (std::ptrdiff_t g = 0; g < w.groups; ++g) gdst[g * W + j] = gs[static_cast<std::size_t>(g)];
        continue;
      }
      std::int8_t* qdst = q_.data() + ch.begin * nk;
      float* ddst = d_.data() + ch.begin * w.blocks;
      std::int32_t* zdst = zero_ >= 0 ? zsum_.data() + ch.begin * w.blocks : nullptr;
      quantize_token_int8(w, xk.data(), simd_allowed_, gs.data(),
                          [&](std::ptrdiff_t b, const std::int8_t* q, float d, int sum) {
                            ddst[b * W + j] = d;
                            if (zdst != nullptr) zdst[b * W + j] = -zero_ * sum;  // |.| <= 255 * 32 * 127
                            if (W == 1) {
                              std::memcpy(qdst + b * kBlockCols, q, kBlockCols);
                            } else {
                              for (int t = 0; t < kBlockCols / 4; ++t) {
                                std::memcpy(qdst + b * kBlockCols * W + 4 * t * W + 4 * j, q + 4 * t, 4);
                              }
                            }
                          });
      for (std::ptrdiff_t g = 0; g < w.groups; ++g) gdst[g * W + j] = gs[static_cast<std::size_t>(g)];
    }
  }

  [[nodiscard]] ActivationSet view() const noexcept {
    ActivationSet v;
    if (mode_ == ActivationMode::Fp32) {
      v.x = x_.data();
    } else {
      v.q = q_.data();
      v.d = d_.data();
      if (zero_ >= 0) v.zsum = zsum_.data();
    }
    v.gsum = gsum_.data();
    v.m = m_;
    v.blocks = blocks_;
    v.groups = groups_;
    return v;
  }

  [[nodiscard]] std::ptrdiff_t tokens() const noexcept { return m_; }

  /// Tests only: false makes prepare() use the scalar quantize_block_int8 instead of a vector
  /// version (all give identical bits).
  void allow_simd(bool on) noexcept { simd_allowed_ = on; }

  /// The value the kernels multiply with for token n, kernel column k (tests use this):
  /// x_k in Fp32 mode, d_b a_k in Int8 mode.
  [[nodiscard]] float effective(std::ptrdiff_t n, std::ptrdiff_t k) const noexcept {
    const TokenChunk ch = token_chunk(m_, n);
    const std::ptrdiff_t W = ch.width, j = n - ch.begin, nk = blocks_ * kBlockCols;
    if (mode_ == ActivationMode::Fp32) return x_[static_cast<std::size_t>(ch.begin * nk + k * W + j)];
    const std::ptrdiff_t b = k / kBlockCols, t = (k % kBlockCols) / 4, i = k % 4;
    const std::int8_t code = q_[static_cast<std::size_t>(ch.begin * nk + b * kBlockCols * W + 4 * t * W + 4 * j + i)];
    return block_scale(n, b) * static_cast<float>(code);
  }
  /// Block scale d_b of token n (Int8 mode).
  [[nodiscard]] float block_scale(std::ptrdiff_t n, std::ptrdiff_t b) const noexcept {
    const TokenChunk ch = token_chunk(m_, n);
    return d_[static_cast<std::size_t>(ch.begin * blocks_ + b * ch.width + (n - ch.begin))];
  }

 private:
  ActivationMode mode_ = ActivationMode::Int8;
  bool simd_allowed_ = true;
  std::ptrdiff_t m_ = 0, blocks_ = 0, groups_ = 0;
  int zero_ = -1;
  std::vector<float> x_;
  std::vector<std::int8_t> q_;
  std::vector<float> d_;
  std::vector<std::int32_t> zsum_;
  std::vector<float> gsum_;
};

}  // namespace qtl::kernel
