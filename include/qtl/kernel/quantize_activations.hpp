// qtl/kernel/quantize_activations.hpp — activations laid out for the uniform kernels.
//
// Both activation modes first gather x into the kernel's column order (qtl/kernel/
// layout_uniform.hpp): kernel block b of group g holds columns cb[g] + 32 (b - gb[g]) + i, and
// columns past the group's end are 0. Per token this gives `blocks * 32` values, plus one sum
// per group for the zero-point term:
//   Fp32: x_k = the gathered floats;   gsum[g] = sum_{c in g} x_c            (summed in double)
//   Int8: per block of 32, d_b = max|x| / 127 and a_c = clamp(round_half_even(x_c * 127 / max|x|),
//         -127, 127), so x_c = d_b a_c + e_c with |e_c| <= d_b / 2 (plus float rounding of the
//         product, |e_c| <= d_b/2 + 2^-22 |x_c|); a block of zeros has d_b = 0 and a = 0.
//         gsum[g] = sum_{b in g} d_b A_b with A_b = sum_{c in b} a_c       (summed in double)
// The int8 code range is symmetric (-127..127, as ggml's Q8_0) so activations need no zero point.
// Everything here is plain C++, the same for every kernel path, so every path sees the same int8
// activations and the paths differ only in how they add.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "qtl/kernel/layout_uniform.hpp"

namespace qtl::kernel {

enum class ActivationMode { Fp32, Int8 };

/// Plain view of prepared activations for a run of tokens (token n at offset n * stride).
struct ActivationView {
  const float* x = nullptr;          ///< Fp32: blocks * 32 floats per token
  const std::int8_t* q = nullptr;    ///< Int8: blocks * 32 codes per token
  const float* d = nullptr;          ///< Int8: blocks scales per token
  const float* gsum = nullptr;       ///< groups sums per token
  std::ptrdiff_t x_stride = 0;       ///< blocks * 32
  std::ptrdiff_t d_stride = 0;       ///< blocks
  std::ptrdiff_t g_stride = 0;       ///< groups

  [[nodiscard]] ActivationView token(std::ptrdiff_t n) const noexcept {
    ActivationView v = *this;
    if (x) v.x = x + n * x_stride;
    if (q) v.q = q + n * x_stride;
    if (d) v.d = d + n * d_stride;
    v.gsum = gsum + n * g_stride;
    return v;
  }
};

/// Gathers one token's x (cols floats) into kernel order: xk[blocks * 32], gsum[groups].
inline void gather_activations(const UniformKernelView& w, const float* x, float* xk,
                               float* gsum) noexcept {
  for (std::ptrdiff_t g = 0; g < w.groups; ++g) {
    const std::ptrdiff_t c0 = w.group_col_begin[g], c1 = w.group_col_begin[g + 1];
    float* dst = xk + static_cast<std::ptrdiff_t>(w.group_block_begin[g]) * kBlockCols;
    const std::ptrdiff_t padded = (w.group_block_begin[g + 1] - w.group_block_begin[g]) * kBlockCols;
    double s = 0.0;
    for (std::ptrdiff_t c = c0; c < c1; ++c) {
      dst[c - c0] = x[c];
      s += static_cast<double>(x[c]);
    }
    for (std::ptrdiff_t i = c1 - c0; i < padded; ++i) dst[i] = 0.0f;
    gsum[g] = static_cast<float>(s);
  }
}

/// Quantizes 32 floats to int8 with one scale (see the header comment); returns sum of codes.
inline int quantize_block_int8(const float* x, std::int8_t* q, float* d) noexcept {
  float amax = 0.0f;
  for (int i = 0; i < kBlockCols; ++i) amax = std::max(amax, std::fabs(x[i]));
  if (amax == 0.0f) {
    for (int i = 0; i < kBlockCols; ++i) q[i] = 0;
    *d = 0.0f;
    return 0;
  }
  const float inv = 127.0f / amax;
  int sum = 0;
  for (int i = 0; i < kBlockCols; ++i) {
    // nearbyint rounds half to even in the default rounding mode.
    const float v = std::clamp(std::nearbyint(x[i] * inv), -127.0f, 127.0f);
    q[i] = static_cast<std::int8_t>(v);
    sum += static_cast<int>(v);
  }
  *d = amax / 127.0f;
  return sum;
}

/// Owns prepared activations for m tokens.
class PreparedActivations {
 public:
  /// Prepares X (m tokens, row n at x + n * ldx, cols floats each, all finite) in `mode`.
  /// Tokens [n_begin, n_end) only: callers may split tokens across threads on one object made
  /// with `allocate`.
  void allocate(const UniformKernelView& w, std::ptrdiff_t m, ActivationMode mode) {
    mode_ = mode;
    blocks_ = w.blocks;
    groups_ = w.groups;
    const auto n = static_cast<std::size_t>(m);
    const auto nk = static_cast<std::size_t>(w.blocks * kBlockCols);
    x_.resize(n * nk);
    gsum_.resize(n * static_cast<std::size_t>(w.groups));
    if (mode == ActivationMode::Int8) {
      q_.resize(n * nk);
      d_.resize(n * static_cast<std::size_t>(w.blocks));
    }
  }

  void prepare(const UniformKernelView& w, const float* x, std::ptrdiff_t ldx, std::ptrdiff_t n_begin,
               std::ptrdiff_t n_end) noexcept {
    const std::ptrdiff_t nk = w.blocks * kBlockCols;
    for (std::ptrdiff_t n = n_begin; n < n_end; ++n) {
      float* xk = x_.data() + n * nk;
      float* gs = gsum_.data() + n * w.groups;
      gather_activations(w, x + n * ldx, xk, gs);
      if (mode_ != ActivationMode::Int8) continue;
      std::int8_t* q = q_.data() + n * nk;
      float* d = d_.data() + n * w.blocks;
      for (std::ptrdiff_t g = 0; g < w.groups; ++g) {
        double s = 0.0;
        for (std::ptrdiff_t b = w.group_block_begin[g]; b < w.group_block_begin[g + 1]; ++b) {
          const int sum = quantize_block_int8(xk + b * kBlockCols, q + b * kBlockCols, d + b);
          s += static_cast<double>(d[b]) * static_cast<double>(sum);
        }
        gs[g] = static_cast<float>(s);
      }
    }
  }

  [[nodiscard]] ActivationView view() const noexcept {
    ActivationView v;
    v.x = mode_ == ActivationMode::Fp32 ? x_.data() : nullptr;
    v.q = mode_ == ActivationMode::Int8 ? q_.data() : nullptr;
    v.d = mode_ == ActivationMode::Int8 ? d_.data() : nullptr;
    v.gsum = gsum_.data();
    v.x_stride = blocks_ * kBlockCols;
    v.d_stride = blocks_;
    v.g_stride = groups_;
    return v;
  }

  /// The value the kernels multiply with for token n, kernel column k (tests use this):
  /// x_k in Fp32 mode, d_b a_k in Int8 mode.
  [[nodiscard]] float effective(std::ptrdiff_t n, std::ptrdiff_t k) const noexcept {
    const std::ptrdiff_t nk = blocks_ * kBlockCols;
    if (mode_ == ActivationMode::Fp32) return x_[static_cast<std::size_t>(n * nk + k)];
    return d_[static_cast<std::size_t>(n * blocks_ + k / kBlockCols)] *
           static_cast<float>(q_[static_cast<std::size_t>(n * nk + k)]);
  }
  /// Block scale d_b of token n (Int8 mode).
  [[nodiscard]] float block_scale(std::ptrdiff_t n, std::ptrdiff_t b) const noexcept {
    return d_[static_cast<std::size_t>(n * blocks_ + b)];
  }

 private:
  ActivationMode mode_ = ActivationMode::Int8;
  std::ptrdiff_t blocks_ = 0, groups_ = 0;
  std::vector<float> x_;
  std::vector<std::int8_t> q_;
  std::vector<float> d_;
  std::vector<float> gsum_;
};

}  // namespace qtl::kernel
