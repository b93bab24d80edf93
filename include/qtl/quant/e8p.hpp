// qtl/quant/e8p.hpp — QuIP#'s E8P codebook: 8-dimensional vectors at 2 bits per weight.
//
// (Tseng et al., "QuIP#: even better LLM quantization with Hadamard incoherence and lattice
// codebooks", ICML 2024; the codebook of quip-sharp's lib/codebook/latticee8_padded12.py.)
//
// The codebook is a subset of E8 + 1/4 with 2^16 entries, decodable from a 256-entry table:
//   D8^ = D8 + 1/2: vectors of (Z + 1/2)^8 whose coordinates sum to an even integer.
//   A = 256 "absolute" vectors with entries in {1/2, 3/2, 5/2}: the 227 absolute-value patterns
//       of D8^ points with squared norm <= 10, then 29 patterns of norm 12 (five 3/2 and three
//       1/2) chosen by QuIP# (with one repeated entry of its list replaced); the table is
//       qtl/quant/e8p_grid.hpp, which the kernels read as well.
//   A codeword is  c = sigma o a + t,  a in A, sigma in {-1, +1}^8, t in {-1/4, +1/4}:
//       sigma o a must lie in D8^, i.e. the number of negative signs has the parity of sum(a)
//       (flipping a half-odd coordinate changes the sum by an odd integer), so 7 sign bits
//       determine the 8th.
// 16-bit index (this library's bit order):
//   bits 0..7   the entry of A
//   bits 8..14  bit 8 + (j - 1) set <=> coordinate j (1..7) is negative
//               (coordinate 0 is negative <=> popcount(bits 8..14) + sum(a) is odd)
//   bit 15      t = +1/4 if set, -1/4 if clear
// Weights: x ~ s * c with one fp16 scale s per parameter set (16 bits).
//
// Exact nearest codeword, in the weighted norm sum_d w_d (u_d - c_d)^2 with u = x / s: for each
// shift t and each a in A, the best signs maximize sum_d sigma_d w_d a_d y_d (y = u - t): take
// sigma_d = sign(y_d); if that breaks the parity, flip the one coordinate with the smallest
// w_d a_d |y_d| (flipping any odd number of coordinates costs at least that much). Comparing
// sum w a^2 - 2 * score over the 2 x 256 candidates finds the exact minimum over all 2^16
// codewords (tests check it against brute force).
//
// The scale is fitted per set: the best of s = c * rms_w(x), c in {0.6, 0.8, 1, 1.2, 1.4}, then
// up to 3 rounds of the least-squares scale for the chosen codewords, s = sum w x c / sum w c^2,
// each kept only if the weighted error falls; s is rounded to fp16. QuIP# applies E8P after incoherence processing
// (random Hadamard rotations make the weights close to Gaussian); applied to raw weights, as
// here, it quantizes whatever distribution the weights have.
#pragma once

#include <algorithm>
#include <array>
#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>
#include <span>
#include <string>
#include <vector>

#include "qtl/core/error.hpp"
#include "qtl/core/validate.hpp"
#include "qtl/detail/fp16.hpp"
#include "qtl/quant/e8p_grid.hpp"
#include "qtl/quant/vector.hpp"

namespace qtl {

class E8P {
 public:
  static constexpr int kDim = 8;
  static constexpr int kBits = 16;
  static constexpr std::size_t kParamWords = 1;
  static constexpr int kAbsEntries = E8PGrid::kEntries;

  struct Params {
    float scale = 1.0f;  ///< fp16, > 0
    friend bool operator==(const Params&, const Params&) = default;
  };

  /// The 256 absolute vectors, 8 floats each (entries 0.5, 1.5, 2.5).
  [[nodiscard]] static const std::array<float, kAbsEntries * 8>& abs_grid() noexcept { return kE8PGrid.abs; }
  /// sum(a) mod 2 for each absolute vector (1 = odd: an odd number of negative signs).
  [[nodiscard]] static const std::array<std::uint8_t, kAbsEntries>& abs_parity() noexcept { return kE8PGrid.parity; }

  [[nodiscard]] std::string name() const { return "e8p"; }
  [[nodiscard]] static constexpr double param_bits() noexcept { return 16.0; }

  /// The unscaled codeword of an index.
  static void codeword(std::uint32_t index, float* out) noexcept {
    const E8PGrid& T = kE8PGrid;
    const std::uint32_t a = index & 0xFFu, signs = (index >> 8) & 0x7Fu;
    const float shift = (index >> 15) & 1u ? 0.25f : -0.25f;
    const bool neg0 = ((std::popcount(signs) + T.parity[a]) & 1) != 0;
    for (int d = 0; d < 8; ++d) {
      const bool neg = d == 0 ? neg0 : ((signs >> (d - 1)) & 1u) != 0;
      const float v = T.abs[a * 8 + static_cast<std::uint32_t>(d)];
      out[d] = (neg ? -v : v) + shift;
    }
  }

  static void decode(const Params& p, std::uint32_t index, float* out) noexcept {
    codeword(index, out);
    for (int d = 0; d < 8; ++d) out[d] *= p.scale;
  }

  /// Exact weighted-nearest codeword of vec / scale (wt == nullptr: unweighted). The inner loop
  /// runs in float; candidates are compared by sum w (y - c)^2 up to float rounding.
  [[nodiscard]] static std::uint32_t encode(const Params& p, const float* vec, const float* wt) noexcept {
    const E8PGrid& T = kE8PGrid;
    float best = std::numeric_limits<float>::infinity();
    std::uint32_t best_index = 0;
    const float inv = 1.0f / p.scale;
    for (int s = 0; s < 2; ++s) {
      const float shift = s ? 0.25f : -0.25f;
      float w[8], ay[8];
      float yy = 0.0f;  // sum w y^2 differs between the two shifts
      int negs = 0;
      std::uint32_t sign_bits = 0;
      for (int d = 0; d < 8; ++d) {
        const float y = vec[d] * inv - shift;
        w[d] = wt ? wt[d] : 1.0f;
        ay[d] = w[d] * std::fabs(y);
        yy += w[d] * y * y;
        if (y < 0.0f) {
          ++negs;
          if (d > 0) sign_bits |= 1u << (d - 1);
        }
      }
      for (std::uint32_t a = 0; a < kAbsEntries; ++a) {
        const float* av = &T.abs[a * 8];
        float t[8];
        float score = 0.0f, norm = 0.0f;
        for (int d = 0; d < 8; ++d) {
          t[d] = av[d] * ay[d];
          score += t[d];
          norm += w[d] * av[d] * av[d];
        }
        std::uint32_t bits = sign_bits;
        if (((negs + T.parity[a]) & 1) != 0) {  // parity broken: flip the cheapest coordinate
          int min_d = 0;
          for (int d = 1; d < 8; ++d) min_d = t[d] < t[min_d] ? d : min_d;
          score -= 2.0f * t[min_d];
          if (min_d > 0) bits ^= 1u << (min_d - 1);
        }
        const float dist = yy + norm - 2.0f * score;
        if (dist < best) {
          best = dist;
          best_index = a | bits << 8 | static_cast<std::uint32_t>(s) << 15;
        }
      }
    }
    return best_index;
  }

  [[nodiscard]] Params fit(std::span<const float> x, std::span<const float> w) const {
    if (x.empty() || x.size() % 8 != 0) fail(name(), ": needs whole 8-vectors, got ", x.size(), " values");
    if (!w.empty() && w.size() != x.size()) fail(name(), ": ", w.size(), " weights for ", x.size(), " values");
    require_finite(name(), "values", x);
    require_finite(name(), "weights", w);
    double sw = 0.0, swx = 0.0;
    for (std::size_t i = 0; i < x.size(); ++i) {
      const double wi = w.empty() ? 1.0 : w[i];
      if (wi < 0.0) fail(name(), ": weights must be >= 0, got ", wi);
      sw += wi;
      swx += wi * x[i] * x[i];
    }
    if (!(sw > 0.0)) {  // all weights 0: fall back to the plain rms
      sw = static_cast<double>(x.size());
      swx = 0.0;
      for (float v : x) swx += static_cast<double>(v) * v;
      w = {};
    }
    const double rms = std::sqrt(swx / sw);
    if (!(rms > 0.0)) return Params{detail::half_to_float(1)};  // all zero: the smallest scale
    // coarse grid of s / rms, then least-squares refinement of s for the chosen codewords
    Params best{};
    double best_err = std::numeric_limits<double>::infinity();
    auto consider = [&](double scale) {
      Params p{detail::round_to_half(static_cast<float>(scale))};
      if (!std::isfinite(p.scale)) fail(name(), ": scale ", scale, " is too large for fp16");
      if (p.scale == 0.0f) p.scale = detail::half_to_float(1);
      const double err = error(p, x, w);
      if (err < best_err) {
        best_err = err;
        best = p;
        return true;
      }
      return false;
    };
    for (double c : {0.6, 0.8, 1.0, 1.2, 1.4}) consider(rms * c);
    for (int it = 0; it < 3; ++it) {
      double num = 0.0, den = 0.0;
      float cw[8];
      for (std::size_t i = 0; i < x.size(); i += 8) {
        const float* wt = w.empty() ? nullptr : w.data() + i;
        codeword(encode(best, x.data() + i, wt), cw);
        for (int d = 0; d < 8; ++d) {
          const double wd = wt ? wt[d] : 1.0;
          num += wd * x[i + static_cast<std::size_t>(d)] * cw[d];
          den += wd * cw[d] * cw[d];
        }
      }
      if (!(den > 0.0) || !(num > 0.0) || !consider(num / den)) break;
    }
    return best;
  }

  static void serialize(const Params& p, std::vector<std::uint16_t>& words) {
    words.push_back(detail::float_to_half(p.scale));
  }
  [[nodiscard]] static Params deserialize(const std::uint16_t* in) { return Params{detail::half_to_float(in[0])}; }

 private:
  static double error(const Params& p, std::span<const float> x, std::span<const float> w) {
    double e = 0.0;
    float dec[8];
    for (std::size_t i = 0; i < x.size(); i += 8) {
      const float* wt = w.empty() ? nullptr : w.data() + i;
      decode(p, encode(p, x.data() + i, wt), dec);
      for (int d = 0; d < 8; ++d) {
        const double r = static_cast<double>(x[i + static_cast<std::size_t>(d)]) - dec[d];
        e += (wt ? wt[d] : 1.0) * r * r;
      }
    }
    return e;
  }
};

}  // namespace qtl
