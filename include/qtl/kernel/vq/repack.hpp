// qtl/kernel/vq/repack.hpp — repacks a vector-quantized matrix into the kernel layout, once.
//
// The layout and the plain view the kernels read are in qtl/kernel/vq/layout.hpp; this header
// builds them from a PackedVQView (qtl/format/vq_packed.hpp) of KMeansVQ<D, B> or E8P and owns
// the buffers (indices, fp32 codebooks or E8P scales, lane sets).
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <utility>

#include "qtl/detail/aligned_buffer.hpp"
#include "qtl/detail/fp16.hpp"
#include "qtl/format/vq_packed.hpp"
#include "qtl/kernel/vq/layout.hpp"
#include "qtl/quant/e8p.hpp"

namespace qtl::kernel {

/// Repacked indices + fp32 codebooks of a KMeansVQ matrix (layout: qtl/kernel/vq/layout.hpp).
class VQKernelLayout {
 public:
  VQKernelLayout() = default;

  /// `w` must be a valid KMeansVQ view: dim 2, 4 or 8, bits 1..12, words_per_set = 2^bits * dim,
  /// rows, cols >= 1 (VQKernelMatrix checks this and that the codebooks are finite).
  explicit VQKernelLayout(const PackedVQView& w) {
    VQKernelView& v = view_;
    v.dim = w.dim;
    v.bits = w.bits;
    v.e8p = w.dim == 8 && w.bits == E8P::kBits && w.words_per_set == 1;
    v.K = v.e8p ? 0 : std::ptrdiff_t{1} << w.bits;
    v.Kp = std::max<std::ptrdiff_t>(v.K, 16);
    v.rows = w.rows;
    v.cols = w.cols;
    v.positions = w.vectors_per_row;
    v.rows_per_set = w.rows_per_set;
    v.sets = (w.rows + w.rows_per_set - 1) / w.rows_per_set;
    v.tiles = (w.rows + kVQTileRows - 1) / kVQTileRows;
    v.chunk = vq_chunk_positions(v.Kp, v.positions);
    v.chunks = (v.positions + v.chunk - 1) / v.chunk;
    const auto n_idx = static_cast<std::size_t>(v.tiles * kVQTileRows * v.positions);
    const std::size_t idx_size = v.bits <= 8 ? 1 : 2;
    idx_ = qtl::detail::AlignedBuffer(n_idx * idx_size);
    for (std::ptrdiff_t c = 0; c < v.chunks; ++c) {
      const std::ptrdiff_t len = v.chunk_len(c);
      for (std::ptrdiff_t t = 0; t < v.tiles; ++t) {
        for (int lane = 0; lane < kVQTileRows; ++lane) {
          const std::ptrdiff_t r = t * kVQTileRows + lane;
          if (r >= w.rows) continue;  // padding rows keep index 0
          const std::uint8_t* row = w.indices + r * w.row_bytes;
          for (std::ptrdiff_t jj = 0; jj < len; ++jj) {
            const std::uint32_t ix = read_packed_index(row, c * v.chunk + jj, w.bits);
            const auto e = static_cast<std::size_t>(v.chunk_offset(c) + (t * len + jj) * kVQTileRows + lane);
            if (idx_size == 1) {
              idx_.data()[e] = static_cast<std::uint8_t>(ix);
            } else {
              const auto ix16 = static_cast<std::uint16_t>(ix);
              std::memcpy(idx_.data() + 2 * e, &ix16, 2);
            }
          }
        }
      }
    }
    const auto D = static_cast<std::size_t>(v.dim);
    const auto K = static_cast<std::size_t>(v.K), Kp = static_cast<std::size_t>(v.Kp);
    const auto S = static_cast<std::size_t>(v.sets);
    cb_ = qtl::detail::AlignedBuffer(S * K * D * sizeof(float));
    cbt_ = qtl::detail::AlignedBuffer(S * D * Kp * sizeof(float));
    auto* cb = reinterpret_cast<float*>(cb_.data());
    auto* cbt = reinterpret_cast<float*>(cbt_.data());
    for (std::size_t s = 0; s < S; ++s) {
      const std::uint16_t* words = w.params + s * static_cast<std::size_t>(w.words_per_set);
      for (std::size_t k = 0; k < K; ++k) {
        for (std::size_t d = 0; d < D; ++d) {
          const float f = qtl::detail::half_to_float(words[k * D + d]);
          cb[(s * K + k) * D + d] = f;
          cbt[(s * D + d) * Kp + k] = f;
        }
      }
    }
    if (v.e8p) {
      scale_ = qtl::detail::AlignedBuffer(S * sizeof(float));
      for (std::size_t s = 0; s < S; ++s) reinterpret_cast<float*>(scale_.data())[s] = qtl::detail::half_to_float(w.params[s]);
    }
    lane_set_ = qtl::detail::AlignedBuffer(static_cast<std::size_t>(v.tiles * kVQTileRows) * sizeof(std::int32_t));
    auto* ls = reinterpret_cast<std::int32_t*>(lane_set_.data());
    for (std::ptrdiff_t r = 0; r < v.tiles * kVQTileRows; ++r) ls[r] = static_cast<std::int32_t>(v.set_of_row(r));
    rebind();
  }

  VQKernelLayout(const VQKernelLayout& o)
      : view_(o.view_), idx_(o.idx_), cb_(o.cb_), cbt_(o.cbt_), lane_set_(o.lane_set_), scale_(o.scale_) {
    rebind();
  }
  VQKernelLayout& operator=(const VQKernelLayout& o) {
    if (this != &o) {
      VQKernelLayout copy(o);
      *this = std::move(copy);
    }
    return *this;
  }
  VQKernelLayout(VQKernelLayout&& o) noexcept = default;
  VQKernelLayout& operator=(VQKernelLayout&& o) noexcept = default;

  [[nodiscard]] const VQKernelView& view() const noexcept { return view_; }
  /// Bytes one GEMV streams: the indices, one fp32 copy of the codebooks and the lane sets.
  [[nodiscard]] std::size_t bytes() const noexcept { return idx_.size() + cb_.size() + lane_set_.size() + scale_.size(); }
  /// Bytes of the indices alone.
  [[nodiscard]] std::size_t index_bytes() const noexcept { return idx_.size(); }

 private:
  // AlignedBuffer moves keep their heap pointers, so only copies need rebinding.
  void rebind() noexcept {
    view_.idx8 = view_.bits <= 8 ? idx_.data() : nullptr;
    view_.idx16 = view_.bits > 8 ? reinterpret_cast<const std::uint16_t*>(idx_.data()) : nullptr;
    view_.cb = reinterpret_cast<const float*>(cb_.data());
    view_.cbt = reinterpret_cast<const float*>(cbt_.data());
    view_.lane_set = reinterpret_cast<const std::int32_t*>(lane_set_.data());
    view_.e8p_scale = reinterpret_cast<const float*>(scale_.data());
    view_.e8p_grid = view_.e8p ? E8P::abs_grid().data() : nullptr;
    view_.e8p_parity = view_.e8p ? E8P::abs_parity().data() : nullptr;
  }

  VQKernelView view_{};
  qtl::detail::AlignedBuffer idx_;
  qtl::detail::AlignedBuffer cb_;
  qtl::detail::AlignedBuffer cbt_;
  qtl::detail::AlignedBuffer lane_set_;
  qtl::detail::AlignedBuffer scale_;
};

}  // namespace qtl::kernel
