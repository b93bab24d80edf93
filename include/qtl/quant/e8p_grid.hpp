// qtl/quant/e8p_grid.hpp — the 256 absolute vectors of QuIP#'s E8P codebook and their parities.
//
// E8P (qtl/quant/e8p.hpp) decodes a 16-bit index through this table: bits 0..7 pick an absolute
// vector a (entries 1/2, 3/2, 5/2), the sign and shift bits do the rest. The quantizer and the
// kernels (qtl/kernel/vq/*.hpp, which decode E8P matrices) read the same table, so it lives here
// on its own: plain data and plain C++, no Eigen (kernel code includes it).
//
// The table, in order:
//   entries 0..226    the absolute-value patterns of D8^ = D8 + 1/2 points with squared norm
//                     <= 10: entries e + 1/2, e in {0, 1, 2}, enumerated with coordinate 0 most
//                     significant (7/2 alone squares to 12.25 > 10)
//   entries 227..255  QuIP#'s 29 norm-12 padding entries (five 3/2 and three 1/2, see below)
// parity[a] = sum(a) mod 2 (an integer for every entry): 1 means a codeword built on a has an odd
// number of negative signs.
// Computed at compile time.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>

namespace qtl {

/// E8P's absolute vectors: abs[a * 8 + d] is coordinate d of entry a; parity[a] = sum(a) mod 2.
struct E8PGrid {
  static constexpr int kEntries = 256;
  std::array<float, kEntries * 8> abs{};
  std::array<std::uint8_t, kEntries> parity{};
};

namespace detail {

constexpr E8PGrid make_e8p_grid() noexcept {
  E8PGrid out;
  int n = 0;
  // absolute values of D8^ with squared norm <= 10
  for (int code = 0; code < 6561; ++code) {
    int e[8], c = code;
    for (int d = 7; d >= 0; --d) {
      e[d] = c % 3;
      c /= 3;
    }
    double norm = 0.0;
    for (int d = 0; d < 8; ++d) norm += (e[d] + 0.5) * (e[d] + 0.5);
    if (norm > 10.0) continue;
    for (int d = 0; d < 8; ++d) out.abs[static_cast<std::size_t>(n * 8 + d)] = static_cast<float>(e[d]) + 0.5f;
    ++n;
  }
  // QuIP#'s 29 norm-12 padding entries (2 x value: 3 = 3/2, 1 = 1/2). quip-sharp's list
  // repeats {1,3,3,3,1,1,3,3} (its 22nd and 28th rows), which leaves 256 codewords duplicated;
  // the 22nd row here is {3,1,3,3,1,1,3,3}, the entry its block of six (first four
  // coordinates 3,1,3,3) is missing, so all 2^16 codewords are distinct.
  constexpr std::uint8_t kNorm12[29][8] = {
      {3, 1, 1, 1, 3, 3, 3, 3}, {1, 3, 1, 1, 3, 3, 3, 3}, {1, 1, 3, 1, 3, 3, 3, 3},
      {1, 1, 1, 3, 3, 3, 3, 3}, {3, 3, 3, 1, 3, 3, 1, 1}, {3, 3, 3, 1, 3, 1, 3, 1},
      {3, 3, 3, 1, 1, 3, 3, 1}, {3, 3, 3, 1, 3, 1, 1, 3}, {3, 3, 3, 1, 1, 3, 1, 3},
      {3, 3, 3, 1, 1, 1, 3, 3}, {3, 3, 1, 3, 3, 3, 1, 1}, {3, 3, 1, 3, 3, 1, 3, 1},
      {3, 3, 1, 3, 1, 3, 3, 1}, {3, 3, 1, 3, 3, 1, 1, 3}, {3, 3, 1, 3, 1, 3, 1, 3},
      {3, 3, 1, 3, 1, 1, 3, 3}, {3, 1, 3, 3, 3, 3, 1, 1}, {3, 1, 3, 3, 3, 1, 3, 1},
      {3, 1, 3, 3, 1, 3, 3, 1}, {3, 1, 3, 3, 3, 1, 1, 3}, {3, 1, 3, 3, 1, 3, 1, 3},
      {3, 1, 3, 3, 1, 1, 3, 3}, {1, 3, 3, 3, 3, 3, 1, 1}, {1, 3, 3, 3, 3, 1, 3, 1},
      {1, 3, 3, 3, 1, 3, 3, 1}, {1, 3, 3, 3, 3, 1, 1, 3}, {1, 3, 3, 3, 1, 3, 1, 3},
      {1, 3, 3, 3, 1, 1, 3, 3}, {3, 3, 1, 1, 3, 3, 3, 1}};
  for (const auto& row : kNorm12) {
    for (int d = 0; d < 8; ++d) out.abs[static_cast<std::size_t>(n * 8 + d)] = 0.5f * row[d];
    ++n;
  }
  // Every entry sums to an integer (eight half-odd values), exact in double: truncating it is
  // rounding it.
  for (int a = 0; a < E8PGrid::kEntries; ++a) {
    double s = 0.0;
    for (int d = 0; d < 8; ++d) s += out.abs[static_cast<std::size_t>(a * 8 + d)];
    out.parity[static_cast<std::size_t>(a)] = static_cast<std::uint8_t>(static_cast<long>(s) & 1);
  }
  return out;
}

}  // namespace detail

/// The table (one object for the whole program: an inline variable).
inline constexpr E8PGrid kE8PGrid = detail::make_e8p_grid();
static_assert(kE8PGrid.abs[0] == 0.5f && kE8PGrid.abs[255 * 8 + 7] == 0.5f && kE8PGrid.parity[0] == 0,
              "E8P grid: 256 entries, the first all 1/2, the last QuIP#'s final padding row");

}  // namespace qtl
