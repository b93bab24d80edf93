// qtl/kernel/table/repack.hpp — repacks a table-packed matrix into the kernel layout, once.
//
// The layout and the plain view the kernels read are in qtl/kernel/table/layout.hpp; this header
// builds them from a PackedTableView (qtl/format/table_packed.hpp) and owns the buffers.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "qtl/detail/aligned_buffer.hpp"
#include "qtl/detail/fp16.hpp"
#include "qtl/format/table_packed.hpp"
#include "qtl/kernel/common/group_blocks.hpp"
#include "qtl/kernel/table/layout.hpp"

namespace qtl::kernel {

/// Owns a repacked table matrix.
class TableKernelLayout {
 public:
  TableKernelLayout() = default;

  /// Repacks a table-packed matrix (the caller has validated it: non-empty, bits 1..4).
  explicit TableKernelLayout(const PackedTableView& w) {
    bits_ = w.bits;
    form_ = w.form;
    rows_ = w.rows;
    cols_ = w.cols;
    geo_ = GroupBlocks(w.cols, w.groups_per_row <= 1 ? 1 : w.groups_per_row, w.group_size, kTableSliceCols);
    groups_ = geo_.groups;
    slices_ = geo_.blocks;
    const std::ptrdiff_t ns = slices_;
    const int sc = table_chunk_slices(bits_);
    chunks_ = (ns + sc - 1) / sc;
    tiles_ = (w.rows + kTableTileRows - 1) / kTableTileRows;
    const std::ptrdiff_t cb = table_chunk_bytes(bits_);
    codes_ = detail::AlignedBuffer(static_cast<std::size_t>(tiles_ * chunks_ * kTableTileRows * cb));
    const std::ptrdiff_t n_params = tiles_ * groups_ * kTableTileRows;
    const int n = 1 << bits_;
    if (form_ == TableForm::ScaledShared) {
      scales_.assign(static_cast<std::size_t>(n_params), 0.0f);
      for (int k = 0; k < 16; ++k) shared16_[static_cast<std::size_t>(k)] = w.shared_table[k % n];
    } else {
      tables_.assign(static_cast<std::size_t>(n_params << bits_), 0);
    }

    const std::ptrdiff_t src_block_bytes = static_cast<std::ptrdiff_t>(table_block_bytes(bits_));
    for (std::ptrdiff_t row = 0; row < w.rows; ++row) {
      const std::ptrdiff_t t = row / kTableTileRows;
      const int i = static_cast<int>(row % kTableTileRows);
      const std::uint8_t* src_row = w.codes + row * w.row_bytes;
      for (std::ptrdiff_t g = 0; g < groups_; ++g) {
        const std::ptrdiff_t p = w.groups_per_row == 0 ? 0 : row * w.groups_per_row + g;
        const std::ptrdiff_t q = (t * groups_ + g) * kTableTileRows + i;
        if (form_ == TableForm::ScaledShared) {
          scales_[static_cast<std::size_t>(q)] = detail::half_to_float(w.scales[p]);
        } else {
          for (int k = 0; k < n; ++k) tables_[static_cast<std::size_t>((q << bits_) + k)] = w.tables[(p << bits_) + k];
        }
        const std::ptrdiff_t c0 = geo_.col0(g), c1 = geo_.col1(g);
        for (std::ptrdiff_t c = c0; c < c1; ++c) {
          const int code = table_code_in_block(bits_, src_row + (c / kCodesPerBlock) * src_block_bytes,
                                               static_cast<int>(c % kCodesPerBlock));
          set_code(t, i, geo_.block0(g) * kTableSliceCols + (c - c0), code);
        }
      }
    }
  }

  [[nodiscard]] TableKernelView view() const noexcept {
    TableKernelView v;
    v.codes = codes_.data();
    v.scales = scales_.data();
    v.tables = tables_.data();
    v.shared16 = shared16_.data();
    v.bits = bits_;
    v.form = form_;
    v.rows = rows_;
    v.cols = cols_;
    v.tiles = tiles_;
    v.groups = groups_;
    v.slices = slices_;
    v.chunks = chunks_;
    v.group_slice_begin = geo_.block_begin.data();
    v.group_col_begin = geo_.col_begin.data();
    return v;
  }

  /// Bytes a GEMV reads: codes (padding included) and parameters.
  [[nodiscard]] std::size_t bytes() const noexcept {
    return codes_.size() + scales_.size() * sizeof(float) + tables_.size() * sizeof(std::uint16_t) +
           (form_ == TableForm::ScaledShared ? sizeof(shared16_) : 0);
  }

 private:
  void set_code(std::ptrdiff_t t, int i, std::ptrdiff_t kc, int code) noexcept {
    const int sc = table_chunk_slices(bits_);
    const std::ptrdiff_t cb = table_chunk_bytes(bits_);
    const std::ptrdiff_t s = kc / kTableSliceCols;
    const int j = static_cast<int>(kc % kTableSliceCols);
    const int k = static_cast<int>(s % sc);
    std::uint8_t* ch = codes_.data() + (t * chunks_ + s / sc) * kTableTileRows * cb + i * cb;
    const auto u = static_cast<std::uint32_t>(code);
    const std::uint32_t bits = (u & ((1u << bits_) - 1u)) << (bits_ * k);
    for (int b = 0; b < 4; ++b) ch[4 * j + b] = static_cast<std::uint8_t>(ch[4 * j + b] | (bits >> (8 * b)));
  }

  int bits_ = 0;
  TableForm form_ = TableForm::ScaledShared;
  std::ptrdiff_t rows_ = 0, cols_ = 0, tiles_ = 0, groups_ = 0, slices_ = 0, chunks_ = 0;
  GroupBlocks geo_;  // blocks = 16-column slices
  detail::AlignedBuffer codes_;
  std::vector<float> scales_;
  std::vector<std::uint16_t> tables_;
  std::array<float, 16> shared16_{};
};

}  // namespace qtl::kernel
