// qtl/kernel/table/portable.hpp — the portable path of the table-decode kernels, over xsimd.
//
// Same layout and arithmetic as the x86 paths (qtl/kernel/table/layout.hpp): 16 float lanes
// per row and token (lane j adds the products of kernel columns 16 s + j, s = 0, 1, ...), the
// weight of a lane is the group's 16-entry table at the code (lookup16_f32,
// qtl/kernel/common/portable_simd.hpp), and the lanes are added at the end of the row,
// pairwise (8 + 8, 4 + 4, 2 + 2, 1 + 1). The 16 lanes are 16 / L batches of L floats
// (PortableArch). Runs on any CPU the program was compiled for and is tested, like the x86
// paths, against the scalar reference (qtl/kernel/table/reference.hpp); table_tiles_scalar is
// the same computation one lane at a time.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

#include "qtl/detail/fp16.hpp"
#include "qtl/kernel/common/portable_simd.hpp"
#include "qtl/kernel/common/separate.hpp"
#include "qtl/kernel/table/layout.hpp"

namespace qtl::kernel {

/// The replicated 16-entry kernel table of parameter slot q: T16[i] = T[i mod 2^bits].
inline void table_kernel_entries(const TableKernelView& w, std::ptrdiff_t q, float* t16) noexcept {
  const int n = 1 << w.bits;
  for (int k = 0; k < 16; ++k) {
    t16[k] = w.form == TableForm::ScaledShared ? w.scales[q] * w.shared16[k]
                                               : detail::half_to_float(w.tables[(q << w.bits) + k % n]);
  }
}

namespace detail_table_portable {

using namespace portable_batches;
inline constexpr int kLanes = static_cast<int>(U32::size);
inline constexpr int kVecs = kTableSliceCols / kLanes;
static_assert(kTableSliceCols % kLanes == 0, "a batch must hold a divisor of the 16 slice lanes");

/// Row i of tile t, token x (kernel order), as 16 lanes of kVecs batches, reduced pairwise.
template <int Bits>
inline float row_xsimd(const TableKernelView& w, std::ptrdiff_t t, int i, const float* x) noexcept {
  constexpr int kSc = table_chunk_slices(Bits);
  constexpr std::uint32_t kMask = (1u << Bits) - 1u;
  F32 acc[kVecs];
  for (int v = 0; v < kVecs; ++v) acc[v] = F32(0.0f);
  alignas(64) float t16[16];
  for (std::ptrdiff_t g = 0; g < w.groups; ++g) {
    table_kernel_entries(w, w.param_index(t, g, i), t16);
    U32 lo[kVecs];  // the codes of slice s at the low bits
    for (std::ptrdiff_t s = w.group_slice_begin[g]; s < w.group_slice_begin[g + 1]; ++s) {
      const int k = static_cast<int>(s % kSc);
      const std::uint8_t* ch = w.chunk(t, s / kSc, i);
      // Shift each chunk's lanes once where a run of slices starts, then by Bits per slice.
      if (k == 0 || s == w.group_slice_begin[g]) {
        for (int v = 0; v < kVecs; ++v) lo[v] = load_u32(ch + 4 * kLanes * v) >> (Bits * k);
      }
      const float* xs = x + kTableSliceCols * s;
      for (int v = 0; v < kVecs; ++v) {
        const U32 idx = lo[v] & U32(kMask);
        lo[v] = lo[v] >> Bits;
        acc[v] = xsimd::fma(lookup16_f32(t16, idx), F32::load_unaligned(xs + kLanes * v), acc[v]);
      }
    }
  }
  alignas(64) float lanes[16];
  for (int v = 0; v < kVecs; ++v) acc[v].store_aligned(lanes + kLanes * v);
  for (int h = 8; h >= 1; h /= 2) {
    for (int j = 0; j < h; ++j) lanes[j] += lanes[j + h];
  }
  return lanes[0];
}

template <int Bits>
inline void tiles_xsimd(const TableKernelView& w, const float* xk, std::ptrdiff_t ldx, std::ptrdiff_t m, float* y,
                        std::ptrdiff_t ldy, std::ptrdiff_t t0, std::ptrdiff_t t1) noexcept {
  for (std::ptrdiff_t t = t0; t < t1; ++t) {
    for (int i = 0; i < kTableTileRows; ++i) {
      const std::ptrdiff_t row = t * kTableTileRows + i;
      if (row >= w.rows) break;
      for (std::ptrdiff_t n = 0; n < m; ++n) y[n * ldy + row] = row_xsimd<Bits>(w, t, i, xk + n * ldx);
    }
  }
}

template <int Bits>
inline void decode_slice(const std::uint8_t* ch, int k, int* codes) noexcept {
  std::uint32_t lane[16];
  std::memcpy(lane, ch, 64);
  for (int j = 0; j < 16; ++j) codes[j] = static_cast<int>((lane[j] >> (Bits * k)) & ((1u << Bits) - 1u));
}

template <int Bits>
inline void tiles(const TableKernelView& w, const float* xk, std::ptrdiff_t ldx, std::ptrdiff_t m, float* y,
                  std::ptrdiff_t ldy, std::ptrdiff_t t0, std::ptrdiff_t t1) noexcept {
  constexpr int kSc = table_chunk_slices(Bits);
  for (std::ptrdiff_t t = t0; t < t1; ++t) {
    for (int i = 0; i < kTableTileRows; ++i) {
      const std::ptrdiff_t row = t * kTableTileRows + i;
      if (row >= w.rows) break;
      for (std::ptrdiff_t n = 0; n < m; ++n) {
        const float* x = xk + n * ldx;
        float acc[16] = {};
        for (std::ptrdiff_t g = 0; g < w.groups; ++g) {
          float t16[16];
          table_kernel_entries(w, w.param_index(t, g, i), t16);
          for (std::ptrdiff_t s = w.group_slice_begin[g]; s < w.group_slice_begin[g + 1]; ++s) {
            int codes[16];
            decode_slice<Bits>(w.chunk(t, s / kSc, i), static_cast<int>(s % kSc), codes);
            for (int j = 0; j < 16; ++j) acc[j] += t16[codes[j]] * x[16 * s + j];
          }
        }
        // Pairwise, as the SIMD reductions do (8 + 8, 4 + 4, 2 + 2, 1 + 1).
        for (int h = 8; h >= 1; h /= 2) {
          for (int j = 0; j < h; ++j) acc[j] += acc[j + h];
        }
        y[n * ldy + row] = acc[0];
      }
    }
  }
}

}  // namespace detail_table_portable

/// Y[n * ldy + row] for the rows of tiles [t0, t1) and tokens [0, m), over xsimd batches.
/// xk: the prepared activations (m rows of w.kernel_cols() floats, stride ldx).
#if defined(QTL_KERNELS_DECLARE_ONLY_TABLE)
// Compiled in the program's kernels TU (qtl/kernel/common/separate.hpp).
void table_tiles_portable(const TableKernelView& w, const float* xk, std::ptrdiff_t ldx, std::ptrdiff_t m,
                          float* y, std::ptrdiff_t ldy, std::ptrdiff_t t0, std::ptrdiff_t t1) noexcept;
#else
QTL_KERNEL_ENTRY void table_tiles_portable(const TableKernelView& w, const float* xk, std::ptrdiff_t ldx, std::ptrdiff_t m,
                                           float* y, std::ptrdiff_t ldy, std::ptrdiff_t t0, std::ptrdiff_t t1) noexcept {
  switch (w.bits) {
    case 1: detail_table_portable::tiles_xsimd<1>(w, xk, ldx, m, y, ldy, t0, t1); break;
    case 2: detail_table_portable::tiles_xsimd<2>(w, xk, ldx, m, y, ldy, t0, t1); break;
    case 3: detail_table_portable::tiles_xsimd<3>(w, xk, ldx, m, y, ldy, t0, t1); break;
    case 4: detail_table_portable::tiles_xsimd<4>(w, xk, ldx, m, y, ldy, t0, t1); break;
    default: break;
  }
}
#endif

/// The same one lane at a time, in plain C++ (the baseline table_tiles_portable is compared with).
inline void table_tiles_scalar(const TableKernelView& w, const float* xk, std::ptrdiff_t ldx, std::ptrdiff_t m,
                               float* y, std::ptrdiff_t ldy, std::ptrdiff_t t0, std::ptrdiff_t t1) noexcept {
  switch (w.bits) {
    case 1: detail_table_portable::tiles<1>(w, xk, ldx, m, y, ldy, t0, t1); break;
    case 2: detail_table_portable::tiles<2>(w, xk, ldx, m, y, ldy, t0, t1); break;
    case 3: detail_table_portable::tiles<3>(w, xk, ldx, m, y, ldy, t0, t1); break;
    case 4: detail_table_portable::tiles<4>(w, xk, ldx, m, y, ldy, t0, t1); break;
    default: break;
  }
}

}  // namespace qtl::kernel
