// qtl/quant/decode_table.hpp — the 16-entry decode table: the contract between every scalar
// quantizer of <= 4 bits and the table-decode kernels.
//
// Every scalar family of at most 4 bits (log2, power grid, NF4, FP4, fitted codebooks, binary,
// residual binary, ternary) decodes a code by looking it up in a per-group table:
//   x_hat(r, c) = T_p[code(r, c)],   p = the parameter set of (r, c),   T_p = decode_table(q, params_p)
// T_p has 16 float entries; entry k < 2^kBits equals q.decode(params_p, k) bit for bit, entries
// k >= 2^kBits are 0 (never produced by encode). A kernel loads T_p once per group and decodes
// 16 codes with one permute (vpermps on AVX2/AVX-512; an int8 variant after scaling).
//
// The table is stored in one of two forms (TableForm, qtl/quant/table_form.hpp), and the packed
// format (qtl/format/table_packed.hpp) keeps exactly that form, so the bits per weight stay honest:
//   ScaledShared  T_p[k] = s_p * L[k]: one fp16 scale s_p per group and one 16-entry float table
//                 L shared by the whole matrix (it depends only on the quantizer: log2 levels,
//                 power grid, NF4, FP4 E2M1, {-1, +1}, {-1, 0, +1}). The family's decode is written
//                 as the float product s_p * L[k], so the table reproduces it exactly.
//                 Requires: q.shared_table() -> std::array<float, 16>; Params has `scale`;
//                 q.params_from_scale(float) rebuilds the Params.
//   PerSet        T_p[k] = half_to_float(t_p[k]): 2^kBits fp16 entries per group (fitted k-means
//                 levels, binary with mean shift {lo, hi}, residual binary's 4 levels). The
//                 family's Params are those fp16 levels.
//                 Requires: Q::table_levels(params) -> std::array<float, 16> (fp16 values);
//                 q.params_from_levels(levels) rebuilds the Params.
#pragma once

#include <array>
#include <concepts>
#include <cstddef>
#include <cstdint>

#include "qtl/quant/concepts.hpp"
#include "qtl/quant/table_form.hpp"

namespace qtl {

inline constexpr int kDecodeTableSize = 16;
using DecodeTable = std::array<float, kDecodeTableSize>;

template <class Q>
concept ScaledSharedTable =
    ScalarQuantizer<Q> && (Q::kBits <= 4) && (Q::kTableForm == TableForm::ScaledShared) &&
    requires(const Q q, const typename Q::Params p, float s) {
      { q.shared_table() } -> std::same_as<DecodeTable>;
      { p.scale } -> std::convertible_to<float>;
      { q.params_from_scale(s) } -> std::same_as<typename Q::Params>;
    };

template <class Q>
concept PerSetTable =
    ScalarQuantizer<Q> && (Q::kBits <= 4) && (Q::kTableForm == TableForm::PerSet) &&
    requires(const Q q, const typename Q::Params p, const DecodeTable& t) {
      { q.table_levels(p) } -> std::same_as<DecodeTable>;
      { q.params_from_levels(t) } -> std::same_as<typename Q::Params>;
    };

/// A scalar quantizer whose groups decode through a 16-entry table.
template <class Q>
concept TableQuantizer = ScaledSharedTable<Q> || PerSetTable<Q>;

/// The 16-entry decode table of one group: entry k = q.decode(p, k) for k < 2^kBits, else 0.
template <TableQuantizer Q>
[[nodiscard]] DecodeTable decode_table(const Q& q, const typename Q::Params& p) {
  DecodeTable t{};
  for (int k = 0; k < (1 << Q::kBits); ++k) t[static_cast<std::size_t>(k)] = q.decode(p, static_cast<std::uint8_t>(k));
  return t;
}

}  // namespace qtl
