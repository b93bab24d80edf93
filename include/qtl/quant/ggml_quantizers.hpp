// qtl/quant/ggml_quantizers.hpp — llama.cpp's block types as quantizer policies, so qtl's
// solvers quantize straight into bytes that ggml decodes:
//   BlockQuantizer    q8_0, q4_0, q4_1, q5_0, q5_1, iq4_nl   ScalarQuantizer, PerGroup{32}
//   TernaryQuantizer  tq1_0, tq2_0                           ScalarQuantizer, PerGroup{256}
//   KQuantizer        q2_K .. q6_K    super-blocks of 256 with index-aware encode / decode
// (sections below), each with to_blocks / from_blocks between qtl's codes and ggml's bytes.
// The ScalarQuantizers run under every solver (RTN, clip search, importance, GPTQ, AWQ).
//
// 32-wide types: a group is one ggml block. decode() is ggml's dequantize, float for float:
//   q4_0  x = (q - 8) * d          q5_0  x = (q - 16) * d        q8_0  x = (q - 128) * d
//   q4_1  x = q * d + m            q5_1  x = q * d + m           (q * d is exact: an FMA rounds the same)
//   iq4_nl x = d * kIq4nlValues[q]
// with d and m fp16 values, so a QuantizedMatrix packs into blocks exactly (to_blocks) and
// dequantize(matrix) == ggml::dequantize_row(to_blocks(matrix)) bit for bit.
//
// fit() with default FitOptions is llama.cpp's reference quantizer for the type (what
// llama-quantize writes without an importance matrix): ggml fits d, stores fp16(d), and encodes
// with id = 1/d of the *unrounded* d (q4_0: code = min(15, trunc(x * id + 8.5)); q8_0:
// roundf(x * id); q4_1: trunc((x - min) * id + 0.5), min unrounded too), so Params keeps id and
// min beside the fp16 values; encode() applies that rule to any float, clamped to the code range
// (GPTQ re-encodes values its error feedback has moved). RTN through quantize_matrix therefore
// writes llama-quantize's bytes; for iq4_nl fit() is quantize_iq4_nl's scale search (15 trial
// grids, each refitted by weighted least squares with weights x^2, or with an importance
// matrix qw * sqrt(2 mean(x^2) + x^2)), so column importance given as the imatrix gives
// llama-quantize --imatrix's bytes as well.
//
// With FitOptions::clip_search, fit() then searches the scale (and for q4_1 / q5_1 the range)
// for the lowest importance-weighted squared error sum w (x - x_hat)^2, starting from the
// reference result and keeping a candidate only if it lowers the error: scales r * d for r on
// the clip grid and r = 1 + k/80, k = 1..9 (make_qx_quants looks up to 11% wider); for q4_1 /
// q5_1 make_qkx3_quants' 37 steps from the minimum and ranges trimmed at either end. Each
// candidate is also refitted by weighted least squares (scale, or scale and offset) for the
// codes it gives, and the best is refined refine_iterations more times. Candidates encode with
// id = 1 / fp16(d) and min = fp16(m): the nearest level of what decodes.
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "qtl/core/error.hpp"
#include "qtl/core/validate.hpp"
#include "qtl/detail/fp16.hpp"
#include "qtl/quant/ggml_blocks.hpp"
#include "qtl/quant/concepts.hpp"
#include "qtl/quant/granularity.hpp"
#include "qtl/quant/quantize_matrix.hpp"
#include "qtl/quant/scalar_fit.hpp"

namespace qtl::ggml {

/// A 32-wide ggml block type as a ScalarQuantizer (see the header comment).
template <Type T>
class BlockQuantizer {
  static_assert(T == Type::Q4_0 || T == Type::Q4_1 || T == Type::Q5_0 || T == Type::Q5_1 ||
                    T == Type::Q8_0 || T == Type::IQ4_NL,
                "ggml::BlockQuantizer: the type must be q4_0, q4_1, q5_0, q5_1, q8_0 or iq4_nl");

 public:
  static constexpr Type kType = T;
  static constexpr int kBlock = 32;
  static constexpr bool kAffine = (T == Type::Q4_1 || T == Type::Q5_1);
  static constexpr int kBits = T == Type::Q8_0 ? 8 : (T == Type::Q5_0 || T == Type::Q5_1) ? 5 : 4;
  static constexpr int kMaxCode = (1 << kBits) - 1;
  /// The code of x = 0 in the symmetric types (q - zero multiplies d).
  static constexpr int kZero = (T == Type::Q4_0) ? 8 : (T == Type::Q5_0) ? 16 : (T == Type::Q8_0) ? 128 : 0;

  struct Params {
    float d = 0.0f;    ///< fp16 scale, as stored in the block
    float m = 0.0f;    ///< fp16 offset (q4_1, q5_1; 0 otherwise), as stored
    float id = 0.0f;   ///< encode: ggml's 1/d of the unrounded d (0 when d = 0)
    float min = 0.0f;  ///< encode: the unrounded offset (q4_1, q5_1)
    friend bool operator==(const Params&, const Params&) = default;
  };

  [[nodiscard]] std::string name() const { return str_cat("ggml-", type_name(T)); }
  /// fp16 d, plus fp16 m for q4_1 / q5_1: with kBits, exactly the block's bits per weight.
  [[nodiscard]] static constexpr double param_bits() noexcept { return kAffine ? 32.0 : 16.0; }

  [[nodiscard]] static float decode(const Params& p, std::uint8_t code) noexcept {
    if constexpr (T == Type::IQ4_NL) {
      return p.d * static_cast<float>(kIq4nlValues[code & 15u]);
    } else if constexpr (kAffine) {
      return static_cast<float>(code) * p.d + p.m;  // exact product: an FMA rounds the same
    } else {
      return static_cast<float>(static_cast<int>(code) - kZero) * p.d;
    }
  }

  [[nodiscard]] static std::uint8_t encode(const Params& p, float x) noexcept {
    if constexpr (T == Type::Q4_0) return rule::code_q4_0(x, p.id);
    if constexpr (T == Type::Q5_0) return rule::code_q5_0(x, p.id);
    if constexpr (T == Type::Q8_0) return rule::code_q8_0(x, p.id);
    if constexpr (T == Type::Q4_1) return rule::code_q4_1(x, p.min, p.id);
    if constexpr (T == Type::Q5_1) return rule::code_q5_1(x, p.min, p.id);
    if constexpr (T == Type::IQ4_NL) return rule::code_iq4_nl(x, p.id);
  }

  /// Params as ggml's reference quantizer fits them for the block x (importance: iq4_nl only,
  /// as its imatrix; the other types' reference ignores it).
  [[nodiscard]] Params fit_reference(std::span<const float> x, std::span<const float> importance) const {
    (void)importance;
    BlockScale s;
    if constexpr (T == Type::Q4_0) s = rule::q4_0(x);
    if constexpr (T == Type::Q5_0) s = rule::q5_0(x);
    if constexpr (T == Type::Q8_0) s = rule::q8_0(x);
    if constexpr (T == Type::Q4_1) s = rule::q4_1(x);
    if constexpr (T == Type::Q5_1) s = rule::q5_1(x);
    if constexpr (T == Type::IQ4_NL) s = rule::iq4_nl(x, importance);
    Params p;
    p.d = to_half(s.d, "scale");
    p.id = s.id;
    if constexpr (kAffine) {
      p.m = to_half(s.min, "minimum");
      p.min = s.min;
    }
    return p;
  }

  /// Fits one block of 32 values (see the header comment). Throws qtl::Error for a group that
  /// is not 32 values, a value that is NaN or infinite, bad importance, or a block whose scale
  /// or minimum does not fit fp16.
  [[nodiscard]] Params fit(std::span<const float> x, std::span<const float> importance,
                           const FitOptions& opt = {}) const {
    const std::string where = name();
    qtl::detail::check_group(where, x, importance);
    if (x.size() != kBlock) {
      fail(where, ": a group is one ggml block of 32 values (quantize with PerGroup{32} and a "
                  "column count that is a multiple of 32), got a group of ",
           x.size());
    }
    const Params reference = fit_reference(x, importance);
    const auto error = [&](const Params& p) { return qtl::detail::weighted_sse(*this, p, x, importance); };
    // the clip grid: each candidate, and the least-squares refit for the codes it gives
    const auto grid = [&](auto&& consider) {
      auto candidate = [&](const std::optional<Params>& p) {
        if (!p) return;
        consider(*p);
        if (const auto refit = least_squares(*p, x, importance)) consider(*refit);
      };
      const int steps = std::max(opt.clip_steps, 1);
      auto ratio = [&](int i) {
        return 1.0f - (1.0f - opt.clip_min_ratio) * static_cast<float>(i) / static_cast<float>(steps);
      };
      if constexpr (kAffine) {
        float lo = x[0], hi = x[0];
        for (float v : x) {
          lo = std::min(lo, v);
          hi = std::max(hi, v);
        }
        const float range = hi - lo;
        if (range > 0.0f) {
          const auto levels = static_cast<float>(kMaxCode);
          // make_qkx3_quants' grid: steps of range / (nmax - 0.9 + 0.05 k) from the minimum
          for (int k = 0; k <= 36; ++k) candidate(affine_params(lo, range / (levels - 0.9f + 0.05f * static_cast<float>(k))));
          for (int i = 1; i <= steps; ++i) {
            const float cut = (1.0f - ratio(i)) * range;  // trimmed from the top, the bottom, or half each
            for (const auto& [a, b] : {std::array<float, 2>{0.0f, cut}, std::array<float, 2>{cut, 0.0f},
                                       std::array<float, 2>{0.5f * cut, 0.5f * cut}}) {
              candidate(affine_params(lo + a, (hi - b - (lo + a)) / levels));
            }
          }
        }
      } else {
        const float d0 = reference.d;
        if (d0 != 0.0f) {
          candidate(reference);
          for (int i = 1; i <= steps; ++i) candidate(scale_params(d0 * ratio(i)));
          for (int k = 1; k <= 9; ++k) {  // up to 11% wider, as far as make_qx_quants looks for q4_0
            candidate(scale_params(d0 * (1.0f + static_cast<float>(k) / 80.0f)));
          }
        }
      }
    };
    return qtl::detail::search_fit(reference, opt, error, grid,
                                   [&](const Params& best) { return least_squares(best, x, importance); });
  }

 private:
  /// The level a code stands for, before the scale: q - zero, or the iq4_nl table entry.
  [[nodiscard]] static double level(std::uint8_t code) noexcept {
    if constexpr (T == Type::IQ4_NL) return kIq4nlValues[code & 15u];
    return static_cast<double>(static_cast<int>(code) - kZero);
  }

  static float to_half(float v, std::string_view what) {
    const float h = qtl::detail::round_to_half(v);
    if (!std::isfinite(h)) {
      fail("ggml-", type_name(T), ": the block's ", what, " ", v, " is too large for fp16 (max 65504)");
    }
    return h;
  }

  /// Params decoding with scale fp16(d), encoding to the nearest level; nullopt when fp16(d)
  /// is 0 or not finite.
  [[nodiscard]] static std::optional<Params> scale_params(float d) noexcept {
    const float h = qtl::detail::round_to_half(d);
    if (h == 0.0f || !std::isfinite(h)) return std::nullopt;
    Params p;
    p.d = h;
    p.id = 1.0f / h;
    return p;
  }
  [[nodiscard]] static std::optional<Params> affine_params(float min, float d) noexcept {
    auto p = scale_params(d);
    if (!p) return std::nullopt;
    p->m = qtl::detail::round_to_half(min);
    if (!std::isfinite(p->m)) return std::nullopt;
    p->min = p->m;
    return p;
  }

  /// The weighted least-squares scale (and offset) for the codes `p` gives x.
  [[nodiscard]] std::optional<Params> least_squares(const Params& p, std::span<const float> x,
                                                    std::span<const float> importance) const {
    double sw = 0, sl = 0, sll = 0, sx = 0, slx = 0;
    for (std::size_t i = 0; i < x.size(); ++i) {
      const double w = qtl::detail::weight_at(importance, i);
      const std::uint8_t c = encode(p, x[i]);
      const double l = kAffine ? static_cast<double>(c) : level(c);
      sw += w;
      sl += w * l;
      sll += w * l * l;
      sx += w * x[i];
      slx += w * l * x[i];
    }
    if constexpr (kAffine) {
      const double det = sw * sll - sl * sl;
      if (!(det > 0.0)) return std::nullopt;
      const double d = (sw * slx - sl * sx) / det;
      const double m = (sll * sx - sl * slx) / det;
      if (!std::isfinite(d) || !std::isfinite(m)) return std::nullopt;
      return affine_params(static_cast<float>(m), static_cast<float>(d));
    } else {
      if (!(sll > 0.0)) return std::nullopt;
      const double d = slx / sll;
      if (!std::isfinite(d)) return std::nullopt;
      return scale_params(static_cast<float>(d));
    }
  }
};

using GgmlQ4_0 = BlockQuantizer<Type::Q4_0>;
using GgmlQ4_1 = BlockQuantizer<Type::Q4_1>;
using GgmlQ5_0 = BlockQuantizer<Type::Q5_0>;
using GgmlQ5_1 = BlockQuantizer<Type::Q5_1>;
using GgmlQ8_0 = BlockQuantizer<Type::Q8_0>;
using GgmlIQ4_NL = BlockQuantizer<Type::IQ4_NL>;

static_assert(ScalarQuantizer<GgmlQ4_0> && ScalarQuantizer<GgmlQ4_1> && ScalarQuantizer<GgmlQ5_0> &&
              ScalarQuantizer<GgmlQ5_1> && ScalarQuantizer<GgmlQ8_0> && ScalarQuantizer<GgmlIQ4_NL>);

namespace detail {
template <class Q>
concept GgmlBlockQuantizer = requires { Q::kType; } && std::same_as<Q, BlockQuantizer<Q::kType>>;

inline void check_block_layout(std::string_view where, const GroupLayout& L) {
  if (L.per_tensor || L.group_size != 32 || L.cols % 32 != 0) {
    fail(where, ": ggml blocks need groups of 32 columns and a column count that is a multiple of 32; got ",
         L.per_tensor ? std::string("one group per tensor") : str_cat("groups of ", L.group_size), " and ",
         L.cols, " columns");
  }
}
}  // namespace detail

/// The matrix as ggml stores the tensor: rows of blocks, row-major, rows * cols / 32 blocks of
/// type_size bytes. Throws qtl::Error unless the matrix was quantized with PerGroup{32} and
/// cols is a multiple of 32.
template <detail::GgmlBlockQuantizer Q>
[[nodiscard]] std::vector<std::byte> to_blocks(const QuantizedMatrix<Q>& m) {
  const GroupLayout& L = m.layout;
  detail::check_block_layout("ggml::to_blocks", L);
  const auto bytes = static_cast<std::size_t>(type_info(Q::kType).type_size);
  const Index gpr = L.groups_per_row();
  std::vector<std::byte> out(static_cast<std::size_t>(L.rows * gpr) * bytes);
  for (Index r = 0; r < L.rows; ++r) {
    for (Index g = 0; g < gpr; ++g) {
      const auto block = static_cast<std::size_t>(r * gpr + g);
      const auto& p = m.params[block];
      const std::span<const std::uint8_t> codes(m.codes.data() + r * L.cols + g * 32, 32);
      pack_block32(Q::kType, p.d, p.m, codes, std::span<std::byte>(out).subspan(block * bytes, bytes));
    }
  }
  return out;
}

/// The inverse of to_blocks: a rows x cols matrix of Q's codes and params from ggml's bytes
/// (Params::id = 1/d and min = m, as no unrounded values are stored). Throws qtl::Error when
/// cols is not a positive multiple of 32, rows < 1, or the byte count does not match.
template <detail::GgmlBlockQuantizer Q>
[[nodiscard]] QuantizedMatrix<Q> from_blocks(std::span<const std::byte> src, Index rows, Index cols,
                                             const Q& q = {}) {
  constexpr std::string_view kWhere = "ggml::from_blocks";
  if (rows < 1 || cols < 1) fail(kWhere, ": matrix must be non-empty, got ", rows, "x", cols);
  QuantizedMatrix<Q> m;
  m.quantizer = q;
  m.layout = make_group_layout(PerGroup{32}, rows, cols, kWhere);
  detail::check_block_layout(kWhere, m.layout);
  const auto bytes = static_cast<std::size_t>(type_info(Q::kType).type_size);
  const Index gpr = m.layout.groups_per_row();
  const auto blocks = static_cast<std::size_t>(rows * gpr);
  if (src.size() != blocks * bytes) {
    fail(kWhere, ": a ", rows, "x", cols, " ", type_name(Q::kType), " matrix takes ", blocks * bytes,
         " bytes, got ", src.size());
  }
  m.codes.resize(static_cast<std::size_t>(rows * cols));
  m.params.resize(blocks);
  for (Index r = 0; r < rows; ++r) {
    for (Index g = 0; g < gpr; ++g) {
      const auto block = static_cast<std::size_t>(r * gpr + g);
      auto& p = m.params[block];
      unpack_block32(Q::kType, src.subspan(block * bytes, bytes), p.d, p.m,
                     std::span<std::uint8_t>(m.codes.data() + r * cols + g * 32, 32));
      p.id = p.d != 0.0f ? 1.0f / p.d : 0.0f;
      p.min = p.m;
    }
  }
  return m;
}

// ---- ternary super-blocks (tq1_0, tq2_0) ---------------------------------------------------
//
// x = (code - 1) * d, code in {0, 1, 2}, one fp16 d per 256 values: position-free, so these are
// ScalarQuantizers (use PerGroup{256}; GPTQ and AWQ run on them). fit() with default options is
// ggml's reference: d = absmax, code = lroundf(x / absmax) + 1 with 1/absmax unrounded; with
// clip_search the scale is searched down the clip grid and refitted by weighted least squares
// (ternary codes for most weights sit at 0, so a scale below absmax usually lowers the error).
// kBits is 2 (codes 0..2); tq2_0 stores 2 bits per code, tq1_0 packs 5 trits per byte (240
// codes in 48 bytes, the last 16 in 4 bytes: 52 bytes per 256 codes), so kCodeBits = 1.625 and
// with the fp16 d, 1.6875 bits per weight, as ggml counts them.

template <Type T>
class TernaryQuantizer {
  static_assert(T == Type::TQ1_0 || T == Type::TQ2_0, "ggml::TernaryQuantizer: the type must be tq1_0 or tq2_0");

 public:
  static constexpr Type kType = T;
  static constexpr int kBlock = 256;
  static constexpr int kBits = 2;
  static constexpr double kCodeBits = T == Type::TQ1_0 ? 52.0 * 8.0 / 256.0 : 2.0;
  static constexpr int kMaxCode = 2;

  struct Params {
    float d = 0.0f;   ///< fp16 scale, as stored
    float id = 0.0f;  ///< encode: 1/d of the unrounded d (0 when d = 0)
    friend bool operator==(const Params&, const Params&) = default;
  };

  [[nodiscard]] std::string name() const { return str_cat("ggml-", type_name(T)); }
  [[nodiscard]] static constexpr double param_bits() noexcept { return 16.0; }
  [[nodiscard]] static float decode(const Params& p, std::uint8_t code) noexcept {
    return static_cast<float>(static_cast<int>(code) - 1) * p.d;
  }
  [[nodiscard]] static std::uint8_t encode(const Params& p, float x) noexcept { return rule::code_ternary(x, p.id); }

  [[nodiscard]] Params fit(std::span<const float> x, std::span<const float> importance,
                           const FitOptions& opt = {}) const {
    const std::string where = name();
    qtl::detail::check_group(where, x, importance);
    if (x.size() != kBlock) {
      fail(where, ": a group is one ggml super-block of 256 values (quantize with PerGroup{256} and a column "
                  "count that is a multiple of 256), got a group of ",
           x.size());
    }
    const float amax = qtl::detail::abs_max(x);
    Params best;
    best.d = qtl::detail::round_to_half(amax);
    if (!std::isfinite(best.d)) fail(where, ": the block's scale ", amax, " is too large for fp16 (max 65504)");
    best.id = amax != 0.0f ? 1.0f / amax : 0.0f;
    if (amax == 0.0f) return best;
    auto scaled = [](double s) -> std::optional<Params> {  // a positive fp16 scale, encoded by 1/fp16(s)
      const float h = qtl::detail::round_to_half(static_cast<float>(s));
      if (!(h > 0.0f) || !std::isfinite(h)) return std::nullopt;
      return Params{h, 1.0f / h};
    };
    auto refit = [&](const Params& p) {  // s* = sum w x l / sum w l^2 for the codes p gives
      double num = 0.0, den = 0.0;
      for (std::size_t i = 0; i < x.size(); ++i) {
        const double l = static_cast<int>(encode(p, x[i])) - 1;
        const double w = qtl::detail::weight_at(importance, i);
        num += w * x[i] * l;
        den += w * l * l;
      }
      return scaled(den > 0.0 ? num / den : 0.0);
    };
    return qtl::detail::search_fit(
        best, opt, [&](const Params& p) { return qtl::detail::weighted_sse(*this, p, x, importance); },
        [&](auto&& consider) {
          const int steps = std::max(opt.clip_steps, 1);
          // ternary weights want scales far below absmax: the grid goes down to clip_min_ratio^2
          const float lowest = opt.clip_min_ratio * opt.clip_min_ratio;
          for (int i = 1; i <= 2 * steps; ++i) {
            const float r = 1.0f - (1.0f - lowest) * static_cast<float>(i) / static_cast<float>(2 * steps);
            const auto p = scaled(amax * r);
            if (!p) continue;
            consider(*p);
            if (const auto q = refit(*p)) consider(*q);
          }
        },
        refit);
  }
};

using GgmlTQ1_0 = TernaryQuantizer<Type::TQ1_0>;
using GgmlTQ2_0 = TernaryQuantizer<Type::TQ2_0>;
static_assert(ScalarQuantizer<GgmlTQ1_0> && ScalarQuantizer<GgmlTQ2_0>);

template <class Q>
concept GgmlTernaryQuantizer = requires { Q::kType; } && std::same_as<Q, TernaryQuantizer<Q::kType>>;

/// A matrix quantized with PerGroup{256} as ggml's tq1_0 / tq2_0 rows.
template <GgmlTernaryQuantizer Q>
[[nodiscard]] std::vector<std::byte> to_blocks(const QuantizedMatrix<Q>& m) {
  constexpr std::string_view kWhere = "ggml::to_blocks";
  const GroupLayout& L = m.layout;
  if (L.per_tensor || L.group_size != 256 || L.cols % 256 != 0) {
    fail(kWhere, ": ", type_name(Q::kType), " needs groups of 256 columns and a multiple of 256 columns; got ",
         L.per_tensor ? std::string("one group per tensor") : str_cat("groups of ", L.group_size), " and ", L.cols,
         " columns");
  }
  const auto bytes = static_cast<std::size_t>(type_info(Q::kType).type_size);
  std::vector<std::byte> out(m.params.size() * bytes);
  for (std::size_t i = 0; i < m.params.size(); ++i) {
    pack_ternary(Q::kType, m.params[i].d, std::span<const std::uint8_t>(m.codes.data() + i * 256, 256),
                 std::span<std::byte>(out).subspan(i * bytes, bytes));
  }
  return out;
}

/// The inverse of to_blocks for tq1_0 / tq2_0 (Params::id = 1/d).
template <GgmlTernaryQuantizer Q>
[[nodiscard]] QuantizedMatrix<Q> from_blocks(std::span<const std::byte> src, Index rows, Index cols, const Q& q = {}) {
  constexpr std::string_view kWhere = "ggml::from_blocks";
  if (rows < 1 || cols < 1 || cols % 256 != 0) {
    fail(kWhere, ": a ", type_name(Q::kType), " matrix needs rows >= 1 and a positive multiple of 256 columns, got ",
         rows, "x", cols);
  }
  const auto bytes = static_cast<std::size_t>(type_info(Q::kType).type_size);
  const auto blocks = static_cast<std::size_t>(rows * (cols / 256));
  if (src.size() != blocks * bytes) {
    fail(kWhere, ": a ", rows, "x", cols, " ", type_name(Q::kType), " matrix takes ", blocks * bytes, " bytes, got ",
         src.size());
  }
  QuantizedMatrix<Q> m;
  m.quantizer = q;
  m.layout = make_group_layout(PerGroup{256}, rows, cols, kWhere);
  m.codes.resize(static_cast<std::size_t>(rows * cols));
  m.params.resize(blocks);
  for (std::size_t i = 0; i < blocks; ++i) {
    auto& p = m.params[i];
    unpack_ternary(Q::kType, src.subspan(i * bytes, bytes), p.d, std::span<std::uint8_t>(m.codes.data() + i * 256, 256));
    p.id = p.d != 0.0f ? 1.0f / p.d : 0.0f;
  }
  return m;
}

// ---- K-quants: super-blocks of 256 with quantized sub-block scales -------------------------
//
// A K-quant block (q2_K .. q6_K) stores one fp16 d (and dmin) per 256 values and, per sub-block
// of 16 or 32 values, small integer scales (and mins) that multiply them:
//   q2_K, q4_K, q5_K   x = (d * sc_j) * q - (dmin * m_j)       (the products are exact)
//   q3_K               x = (d * sc_j) * (q - 4),   sc_j signed 6 bits
//   q6_K               x = (d * sc_j) * (q - 32),  sc_j int8
// A value's scale depends on its position in the group, which ScalarQuantizer's encode(p, x) /
// decode(p, code) cannot see, so these policies take the index i in [0, 256) as well:
//   params = q.fit(values[256], importance, options)    // the super-block
//   code   = q.encode(params, i, x)    // ggml's requantize rule for sub-block i / kSub:
//                                      // nearest_int((x + dm) / d) clamped
//   x_hat  = q.decode(params, i, code) // ggml's dequantize, float for float
// quantize_k / dequantize / to_blocks / from_blocks are their matrix functions (rows of whole
// super-blocks). fit() with default options is ggml's reference (quantize_row_q*_K_ref), so RTN
// writes llama-quantize's bytes (in a sub-block whose stored scale is 0 ggml keeps its first-pass
// quants, which Params keeps for encode to return); given importance it is ggml's importance
// path (quantize_row_q*_K_impl), so column importance = the imatrix gives llama-quantize
// --imatrix's bytes. With clip_search, each sub-block's integer scale (and min) is searched in
// +-kSearch steps around the reference with d and dmin fixed, for the lowest importance-weighted
// error of the requantized sub-block; the reference is a candidate, so the error never rises.
// RTN, importance and clip search work through quantize_k; GPTQ and the other solvers would
// need the position within the group passed to encode / decode to run on these.

template <Type T>
class KQuantizer {
  static_assert(T == Type::Q2_K || T == Type::Q3_K || T == Type::Q4_K || T == Type::Q5_K || T == Type::Q6_K,
                "ggml::KQuantizer: the type must be q2_K, q3_K, q4_K, q5_K or q6_K");

 public:
  static constexpr Type kType = T;
  static constexpr int kBlock = 256;
  static constexpr int kSub = (T == Type::Q4_K || T == Type::Q5_K) ? 32 : 16;
  static constexpr int kSubBlocks = kBlock / kSub;
  static constexpr int kBits = T == Type::Q2_K ? 2 : T == Type::Q3_K ? 3 : T == Type::Q4_K ? 4 : T == Type::Q5_K ? 5 : 6;
  static constexpr int kMaxCode = (1 << kBits) - 1;
  static constexpr bool kAffine = (T == Type::Q2_K || T == Type::Q4_K || T == Type::Q5_K);
  /// The code of x = 0 in the symmetric types.
  static constexpr int kZero = T == Type::Q3_K ? 4 : T == Type::Q6_K ? 32 : 0;
  static constexpr int kSearch = 3;
  using Block = std::conditional_t<
      T == Type::Q2_K, BlockQ2_K,
      std::conditional_t<T == Type::Q3_K, BlockQ3_K,
                         std::conditional_t<T == Type::Q4_K, BlockQ4_K,
                                            std::conditional_t<T == Type::Q5_K, BlockQ5_K, BlockQ6_K>>>>;

  struct Params {
    Block header{};  ///< the block's d, dmin and sub-block scales (its quants are zero)
    std::array<float, 16> scale{};   ///< per sub-block: d * sc_j as ggml computes it
    std::array<float, 16> offset{};  ///< per sub-block: dmin * m_j (affine types; else 0)
    /// The quants the block fit gave: encode returns them in a sub-block whose scale is 0,
    /// where every code decodes to the same value but for the sign of zero.
    std::array<std::uint8_t, 256> fit_codes{};
  };

  [[nodiscard]] std::string name() const { return str_cat("ggml-", type_name(T)); }
  /// The block's bits besides the quants, per super-block.
  [[nodiscard]] static constexpr double param_bits() noexcept {
    return 8.0 * static_cast<double>(sizeof(Block)) - static_cast<double>(kBits * kBlock);
  }

  [[nodiscard]] static float decode(const Params& p, std::size_t i, std::uint8_t code) noexcept {
    const std::size_t j = i / kSub;
    if constexpr (kAffine) {
      return p.scale[j] * static_cast<float>(code) - p.offset[j];  // exact product, as in q4_1
    } else {
      return p.scale[j] * static_cast<float>(static_cast<int>(code) - kZero);
    }
  }
  [[nodiscard]] static std::uint8_t encode(const Params& p, std::size_t i, float x) noexcept {
    const std::size_t j = i / kSub;
    if (p.scale[j] == 0.0f) return p.fit_codes[i & 255u];
    return requantize(p.scale[j], p.offset[j], x);
  }
  /// ggml's requantize rule for a sub-block of scale d != 0 and offset (0 for symmetric types):
  /// nearest_int((x + offset) / d) (+ kZero), clamped to the codes.
  [[nodiscard]] static std::uint8_t requantize(float d, float offset, float x) noexcept {
    float t = kAffine ? (x + offset) / d : x / d;
    // nearest_int is exact for |t| < 2^22; beyond the code range any value clamps the same way
    t = t > 1e6f ? 1e6f : (t < -1e6f ? -1e6f : t);
    if (!(t == t)) t = 0.0f;
    const int l = detail::nearest_int(t) + kZero;
    return static_cast<std::uint8_t>(std::max(0, std::min(kMaxCode, l)));
  }

  /// Params for a stored block header (its quants ignored).
  [[nodiscard]] static Params params_of(const Block& b) noexcept {
    Params p;
    unpack_quants(b, p.fit_codes.data());
    p.header = b;
    clear_quants(p.header);
    const float d = detail::fp16(b.d);
    for (int j = 0; j < kSubBlocks; ++j) {
      const SubScale s = sub_scale(b, j);
      p.scale[static_cast<std::size_t>(j)] = d * static_cast<float>(s.sc);
      if constexpr (kAffine) p.offset[static_cast<std::size_t>(j)] = detail::fp16(b.dmin) * static_cast<float>(s.m);
    }
    return p;
  }

  /// Fits one super-block of 256 values (see the section comment). Throws qtl::Error for a
  /// group that is not 256 values, a value that is NaN or infinite, or bad importance.
  [[nodiscard]] Params fit(std::span<const float> x, std::span<const float> importance,
                           const FitOptions& opt = {}) const {
    const std::string where = name();
    qtl::detail::check_group(where, x, importance);
    if (x.size() != kBlock) fail(where, ": a group is one ggml super-block of 256 values, got ", x.size());
    Block b{};
    const float* qw = importance.empty() ? nullptr : importance.data();
    if constexpr (T == Type::Q2_K) b = qw ? detail::quantize_q2_k_imatrix(x.data(), qw) : detail::quantize_q2_k(x.data());
    if constexpr (T == Type::Q3_K) b = qw ? detail::quantize_q3_k_imatrix(x.data(), qw) : detail::quantize_q3_k(x.data());
    if constexpr (T == Type::Q4_K) b = qw ? detail::quantize_q4_k_imatrix(x.data(), qw) : detail::quantize_q4_k(x.data());
    if constexpr (T == Type::Q5_K) b = qw ? detail::quantize_q5_k_imatrix(x.data(), qw) : detail::quantize_q5_k(x.data());
    if constexpr (T == Type::Q6_K) b = qw ? detail::quantize_q6_k_imatrix(x.data(), qw) : detail::quantize_q6_k(x.data());
    Params p = params_of(b);
    if (!opt.clip_search) return p;
    for (int j = 0; j < kSubBlocks; ++j) search_sub_block(p, j, x, importance);
    return p;
  }

 private:
  static void clear_quants(Block& b) noexcept {
    if constexpr (T == Type::Q6_K) {
      std::memset(b.ql, 0, sizeof b.ql);
      std::memset(b.qh, 0, sizeof b.qh);
    } else {
      std::memset(b.qs, 0, sizeof b.qs);
      if constexpr (T == Type::Q3_K) std::memset(b.hmask, 0, sizeof b.hmask);
      if constexpr (T == Type::Q5_K) std::memset(b.qh, 0, sizeof b.qh);
    }
  }
  static constexpr int kScaleLo = T == Type::Q3_K ? -32 : T == Type::Q6_K ? -128 : 0;
  static constexpr int kScaleHi = T == Type::Q2_K ? 15 : T == Type::Q3_K ? 31 : T == Type::Q6_K ? 127 : 63;

  [[nodiscard]] double sub_error(const Params& p, int j, std::span<const float> x,
                                 std::span<const float> importance) const {
    double err = 0.0;
    for (int k = j * kSub; k < (j + 1) * kSub; ++k) {
      const auto i = static_cast<std::size_t>(k);
      const double e = static_cast<double>(x[i]) - decode(p, i, encode(p, i, x[i]));
      err += qtl::detail::weight_at(importance, i) * e * e;
    }
    return err;
  }

  void search_sub_block(Params& p, int j, std::span<const float> x, std::span<const float> importance) const {
    const SubScale s0 = sub_scale(p.header, j);
    double best_err = sub_error(p, j, x, importance);
    SubScale best = s0;
    const int m_span = kAffine ? kSearch : 0;
    for (int dsc = -kSearch; dsc <= kSearch; ++dsc) {
      for (int dm = -m_span; dm <= m_span; ++dm) {
        const SubScale s{s0.sc + dsc, s0.m + dm};
        if (s.sc < kScaleLo || s.sc > kScaleHi || s.m < 0 || s.m > (kAffine ? kScaleHi : 0) || s == s0) continue;
        Params q = p;
        set_sub_scale(q.header, j, s);
        q = with_sub_block(q, j);
        const double err = sub_error(q, j, x, importance);
        if (err < best_err) {
          best_err = err;
          best = s;
        }
      }
    }
    set_sub_scale(p.header, j, best);
    p = with_sub_block(p, j);
  }

  /// p with sub-block j's scale and offset recomputed from its header.
  [[nodiscard]] static Params with_sub_block(Params p, int j) noexcept {
    const SubScale s = sub_scale(p.header, j);
    p.scale[static_cast<std::size_t>(j)] = detail::fp16(p.header.d) * static_cast<float>(s.sc);
    if constexpr (kAffine) p.offset[static_cast<std::size_t>(j)] = detail::fp16(p.header.dmin) * static_cast<float>(s.m);
    return p;
  }
};

/// One sub-block of a K-quant super-block on a fixed grid, as a ScalarQuantizer: Params are the
/// sub-block's scale and offset exactly as KQuantizer<T> decodes them, encode is its requantize
/// rule. For solvers that choose codes on a grid fitted beforehand by KQuantizer<T>::fit over
/// whole super-blocks (calib::gptq_on_grid, qtl/calib/gptq_ggml.hpp); a sub-block cannot be
/// fitted alone (its scales are quantized against the super-block's d), so fit() throws.
template <Type T>
class KSubBlockQuantizer {
  using K = KQuantizer<T>;

 public:
  static constexpr Type kType = T;
  static constexpr int kBits = K::kBits;
  static constexpr int kGroup = K::kSub;

  struct Params {
    float scale = 0.0f;   ///< d * sc_j
    float offset = 0.0f;  ///< dmin * m_j (affine types; else 0)
    friend bool operator==(const Params&, const Params&) = default;
  };

  [[nodiscard]] std::string name() const { return str_cat("ggml-", type_name(T), "-sub-block"); }
  [[nodiscard]] static constexpr double param_bits() noexcept { return K::param_bits() / K::kSubBlocks; }
  [[nodiscard]] Params fit(std::span<const float>, std::span<const float>, const FitOptions& = {}) const {
    fail(name(), ": a K-quant sub-block is fitted with its super-block (KQuantizer::fit); use a grid from it");
  }
  /// Sub-block j of super-block parameters p.
  [[nodiscard]] static Params of(const typename K::Params& p, int j) noexcept {
    return {p.scale[static_cast<std::size_t>(j)], p.offset[static_cast<std::size_t>(j)]};
  }
  [[nodiscard]] static std::uint8_t encode(const Params& p, float x) noexcept {
    // scale 0: every code decodes alike (kZero, as a symmetric sub-block of zeros holds)
    return p.scale == 0.0f ? static_cast<std::uint8_t>(K::kZero) : K::requantize(p.scale, p.offset, x);
  }
  [[nodiscard]] static float decode(const Params& p, std::uint8_t code) noexcept {
    if constexpr (K::kAffine) {
      return p.scale * static_cast<float>(code) - p.offset;
    } else {
      return p.scale * static_cast<float>(static_cast<int>(code) - K::kZero);
    }
  }
};

using GgmlQ2_K = KQuantizer<Type::Q2_K>;
using GgmlQ3_K = KQuantizer<Type::Q3_K>;
using GgmlQ4_K = KQuantizer<Type::Q4_K>;
using GgmlQ5_K = KQuantizer<Type::Q5_K>;
using GgmlQ6_K = KQuantizer<Type::Q6_K>;

/// A matrix quantized to a K-quant: one code per weight (row-major) and one Params per
/// super-block (row-major, cols / 256 per row).
template <Type T>
struct KQuantizedMatrix {
  KQuantizer<T> quantizer{};
  Index rows = 0;
  Index cols = 0;
  std::vector<std::uint8_t> codes;
  std::vector<typename KQuantizer<T>::Params> params;

  [[nodiscard]] float value(Index r, Index c) const noexcept {
    const auto& p = params[static_cast<std::size_t>(r * (cols / 256) + c / 256)];
    return KQuantizer<T>::decode(p, static_cast<std::size_t>(c % 256), codes[static_cast<std::size_t>(r * cols + c)]);
  }
};

/// Quantizes W [rows x cols] super-block by super-block (cols a multiple of 256); importance
/// as quantize_matrix takes it (used by clip_search). Throws qtl::Error on a bad shape,
/// non-finite weights or bad importance.
template <Type T>
[[nodiscard]] KQuantizedMatrix<T> quantize_k(const KQuantizer<T>& q, MatrixRef w, const QuantizeOptions& opt = {}) {
  constexpr std::string_view kWhere = "ggml::quantize_k";
  require_nonempty(kWhere, "weights", w.rows(), w.cols());
  if (w.cols() % 256 != 0) {
    fail(kWhere, ": ", type_name(T), " rows are super-blocks of 256 values; got ", w.cols(), " columns");
  }
  require_finite(kWhere, "weights", w);
  const ImportanceGiven given = require_importance(kWhere, opt, w.rows(), w.cols());
  const bool col_imp = given.column, elem_imp = given.element;
  KQuantizedMatrix<T> m;
  m.quantizer = q;
  m.rows = w.rows();
  m.cols = w.cols();
  m.codes.resize(static_cast<std::size_t>(w.size()));
  m.params.resize(static_cast<std::size_t>(w.rows() * (w.cols() / 256)));
  std::vector<float> x(256), imp;
  for (Index r = 0; r < w.rows(); ++r) {
    for (Index b = 0; b < w.cols() / 256; ++b) {
      imp.clear();
      for (Index k = 0; k < 256; ++k) {
        const Index c = b * 256 + k;
        x[static_cast<std::size_t>(k)] = w(r, c);
        if (col_imp || elem_imp) {
          imp.push_back((col_imp ? opt.column_importance[c] : 1.0f) * (elem_imp ? opt.importance(r, c) : 1.0f));
        }
      }
      auto& p = m.params[static_cast<std::size_t>(r * (w.cols() / 256) + b)];
      p = q.fit(x, imp, opt.fit);
      for (Index k = 0; k < 256; ++k) {
        m.codes[static_cast<std::size_t>(r * w.cols() + b * 256 + k)] =
            KQuantizer<T>::encode(p, static_cast<std::size_t>(k), x[static_cast<std::size_t>(k)]);
      }
    }
  }
  return m;
}

template <Type T>
[[nodiscard]] RowMatrixXf dequantize(const KQuantizedMatrix<T>& m) {
  RowMatrixXf out(m.rows, m.cols);
  for (Index r = 0; r < m.rows; ++r) {
    for (Index c = 0; c < m.cols; ++c) out(r, c) = m.value(r, c);
  }
  return out;
}

/// The matrix as ggml stores the tensor: rows of super-blocks.
template <Type T>
[[nodiscard]] std::vector<std::byte> to_blocks(const KQuantizedMatrix<T>& m) {
  using Block = typename KQuantizer<T>::Block;
  std::vector<std::byte> out(m.params.size() * sizeof(Block));
  for (std::size_t i = 0; i < m.params.size(); ++i) {
    Block b = m.params[i].header;
    pack_quants(b, m.codes.data() + i * 256);
    std::memcpy(out.data() + i * sizeof(Block), &b, sizeof(Block));
  }
  return out;
}

/// The inverse of to_blocks. Throws qtl::Error when cols is not a positive multiple of 256,
/// rows < 1, or the byte count does not match.
template <Type T>
[[nodiscard]] KQuantizedMatrix<T> from_blocks(std::span<const std::byte> src, Index rows, Index cols) {
  using Block = typename KQuantizer<T>::Block;
  constexpr std::string_view kWhere = "ggml::from_blocks";
  if (rows < 1 || cols < 1 || cols % 256 != 0) {
    fail(kWhere, ": a ", type_name(T), " matrix needs rows >= 1 and a positive multiple of 256 columns, got ", rows,
         "x", cols);
  }
  const auto blocks = static_cast<std::size_t>(rows * (cols / 256));
  if (src.size() != blocks * sizeof(Block)) {
    fail(kWhere, ": a ", rows, "x", cols, " ", type_name(T), " matrix takes ", blocks * sizeof(Block), " bytes, got ",
         src.size());
  }
  KQuantizedMatrix<T> m;
  m.rows = rows;
  m.cols = cols;
  m.codes.resize(static_cast<std::size_t>(rows * cols));
  m.params.resize(blocks);
  for (std::size_t i = 0; i < blocks; ++i) {
    Block b;
    std::memcpy(&b, src.data() + i * sizeof(Block), sizeof(Block));
    unpack_quants(b, m.codes.data() + i * 256);
    m.params[i] = KQuantizer<T>::params_of(b);
  }
  return m;
}

}  // namespace qtl::ggml
