// The kernel layout: documented bit order, parameters per tile, per-group block padding.
#include <gtest/gtest.h>
#include <qtl/kernels.hpp>

#include <random>

#include "test_util.hpp"

namespace {

using qtl::Index;

template <int B, qtl::Mode M>
void check_layout(Index rows, Index cols, const qtl::Granularity& g, unsigned seed) {
  const auto w = qtl::test::gaussian(rows, cols, seed, 0.1f);
  const auto q = qtl::quantize_matrix(qtl::Uniform<B, M>{}, g, w);
  const auto packed = qtl::pack(q);
  const qtl::kernel::UniformKernelLayout layout(packed.view());
  const auto v = layout.view();
  ASSERT_EQ(v.tiles, (rows + 15) / 16);
  ASSERT_EQ(v.params_bytes % 64, 0);
  ASSERT_EQ(v.tile_bytes % 64, 0);
  ASSERT_EQ(reinterpret_cast<std::uintptr_t>(v.data) % 64, 0u);
  ASSERT_EQ(v.group_col_begin[v.groups], cols);
  // One zero point for every parameter set (symmetric, or asymmetric per tensor): the tiles hold
  // the 32 bytes of scales per group only and the zero point is kept once outside them.
  bool one_zero = true;
  for (const auto& p : q.params) one_zero = one_zero && p.zero == q.params[0].zero;
  ASSERT_EQ(v.group_params_bytes, one_zero ? 32 : 48);
  ASSERT_EQ(v.shared_zeros != nullptr, one_zero);
  ASSERT_EQ(v.uniform_zero, one_zero ? static_cast<int>(q.params[0].zero) : -1);
  if (M == qtl::Mode::Symmetric) {
    ASSERT_EQ(v.uniform_zero, 1 << (B - 1));
  }
  ASSERT_EQ(v.params_bytes, (v.groups * v.group_params_bytes + 63) / 64 * 64);
  ASSERT_EQ(v.tile_bytes, v.params_bytes + v.blocks * 64 * B);
  for (Index gi = 0; gi < v.groups; ++gi) {
    const Index width = v.group_col_begin[gi + 1] - v.group_col_begin[gi];
    ASSERT_EQ(v.group_block_begin[gi + 1] - v.group_block_begin[gi], (width + 31) / 32);
  }
  for (Index t = 0; t < v.tiles; ++t) {
    for (int r = 0; r < 16; ++r) {
      const Index row = t * 16 + r;
      for (Index gi = 0; gi < v.groups; ++gi) {
        const std::uint16_t* scale = v.scales(t, gi);
        const std::uint8_t* zero = v.zeros(t, gi);
        for (Index c = v.group_col_begin[gi]; c < v.group_col_begin[gi + 1]; ++c) {
          const Index kc = c - v.group_col_begin[gi];
          const int code = qtl::kernel::tile_code(B, v.block(t, v.group_block_begin[gi] + kc / 32), r, static_cast<int>(kc % 32));
          if (row >= rows) {
            ASSERT_EQ(code, 0);
            continue;
          }
          ASSERT_EQ(code, q.code(row, c)) << row << "," << c;
          const auto& qp = q.params_at(row, c);
          ASSERT_EQ(qtl::detail::half_to_float(scale[r]), qp.scale);
          ASSERT_EQ(static_cast<float>(zero[r]), qp.zero);
        }
        if (row >= rows) {
          ASSERT_EQ(scale[r], 0);
          if (v.shared_zeros == nullptr) {
            ASSERT_EQ(zero[r], 0);
          }
        }
      }
    }
  }
}

TEST(LayoutUniform, CodesAndParamsLandWhereTheCommentSays) {
  unsigned seed = 1;
  for (auto [rows, cols] : {std::pair<Index, Index>{1, 1}, {17, 172}, {33, 64}, {5, 257}}) {
    for (const qtl::Granularity& g : {qtl::Granularity{qtl::PerTensor{}}, qtl::Granularity{qtl::PerRow{}},
                                      qtl::Granularity{qtl::PerGroup{7}}, qtl::Granularity{qtl::PerGroup{64}}}) {
      check_layout<2, qtl::Mode::Asymmetric>(rows, cols, g, ++seed);
      check_layout<3, qtl::Mode::Asymmetric>(rows, cols, g, ++seed);
      check_layout<4, qtl::Mode::Symmetric>(rows, cols, g, ++seed);
      check_layout<5, qtl::Mode::Asymmetric>(rows, cols, g, ++seed);
      check_layout<6, qtl::Mode::Symmetric>(rows, cols, g, ++seed);
      check_layout<8, qtl::Mode::Asymmetric>(rows, cols, g, ++seed);
    }
  }
}

TEST(LayoutUniform, TileCodeInvertsSetTileCodeForEveryPosition) {
  std::mt19937 rng(5);
  for (int bits : {2, 3, 4, 5, 6, 8}) {
    std::uint8_t block[512] = {};
    int codes[16][32];
    for (int r = 0; r < 16; ++r) {
      for (int k = 0; k < 32; ++k) {
        codes[r][k] = static_cast<int>(rng() % (1u << bits));
        qtl::kernel::set_tile_code(bits, block, r, k, codes[r][k]);
      }
    }
    for (int r = 0; r < 16; ++r)
      for (int k = 0; k < 32; ++k) ASSERT_EQ(qtl::kernel::tile_code(bits, block, r, k), codes[r][k]);
    // Operand t lane r (bytes 4r..4r+3 of vector t) holds columns 4t..4t+3 of row r: check the
    // 4-bit placement by hand for one position (row 3, column 21: t = 5 -> vector 1, high nibble).
    if (bits == 4) {
      ASSERT_EQ((block[64 * 1 + 4 * 3 + 1] >> 4) & 15, codes[3][21]);
    }
    if (bits == 2) {
      ASSERT_EQ((block[64 * 1 + 4 * 3 + 1] >> 4) & 3, codes[3][21]);  // t = 5: vector 1, bits 4..5
    }
    if (bits == 5) {  // low nibble as 4-bit; bit 4 is bit t = 5 of the plane at byte 256
      ASSERT_EQ(((block[64 * 1 + 4 * 3 + 1] >> 4) & 15) | ((block[256 + 4 * 3 + 1] >> 5) & 1) << 4, codes[3][21]);
    }
    if (bits == 6) {  // bits 4..5 as a 2-bit operand t = 5 of the planes at byte 256
      ASSERT_EQ(((block[64 * 1 + 4 * 3 + 1] >> 4) & 15) | ((block[256 + 64 * 1 + 4 * 3 + 1] >> 4) & 3) << 4, codes[3][21]);
    }
  }
}

}  // namespace
