// qtl/kernel/table_kernel_matrix.hpp — a table-format matrix ready for the table-decode kernels
// (kernel family 2: log2 / power grid, NF4, FP4, k-means codebooks, binary, residual binary,
// ternary; every scalar quantizer of <= 4 bits that is not uniform).
//
//   TableKernelMatrix k(pack_table(q));      // repacks once, picks the ISA path once
//   k.gemv(x, y, threads);                   // y = W_hat x          (x: cols, y: rows)
//   k.gemm(X, ldx, m, Y, ldy, threads);      // Y = X W_hat^T, one token per row of X
//
// W_hat(r, c) = T_p[code(r, c)] exactly as the scalar reference decodes it
// (qtl/kernel/reference_table.hpp); activations stay fp32, products and sums are fp32 FMAs, so
// the result equals the reference up to float rounding of the sums:
//   |y_r - y_ref_r| <= (chain + 5) 2^-24 sum_c |W_hat(r, c) x_c|  (+ 2^-24 |y_ref_r|, the
//   reference's own rounding), chain = the kernel slices of a row (~ cols / 16): each of 16
//   lanes is one FMA chain over the row's slices, then 4 pairwise additions.
// Layout: qtl/kernel/layout_table.hpp. Paths: table_avx512.hpp (Avx512 and Avx512Vnni: one
// vpermps per 16 codes), table_avx2.hpp (two vpermps + blend), table_portable.hpp. GEMMs of 8
// or more tokens decode each 4-row x 512-column panel once and reuse it for every token.
// Activations are fp32 only: there is no int8-activation mode (the layout puts one code per
// 32-bit lane per slice, which suits vpermps, not vpshufb + vpdpbusd).
// The raw-pointer gemv/gemm validate nothing and never throw except std::bad_alloc for their
// activation scratch; the Eigen overloads validate shapes and finiteness first and throw
// qtl::Error. Results are bit-identical for every thread count (qtl/kernel/threading.hpp).
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstring>
#include <string_view>

#include "qtl/core/error.hpp"
#include "qtl/core/types.hpp"
#include "qtl/core/validate.hpp"
#include "qtl/detail/aligned_buffer.hpp"
#include "qtl/format/table_packed.hpp"
#include "qtl/kernel/checked_kernel.hpp"
#include "qtl/kernel/cpu_features.hpp"
#include "qtl/kernel/layout_table.hpp"
#include "qtl/kernel/table_avx2.hpp"
#include "qtl/kernel/table_avx512.hpp"
#include "qtl/kernel/table_portable.hpp"
#include "qtl/kernel/threading.hpp"

namespace qtl::kernel {

/// Signature shared by every path: tiles [t0, t1) x all m tokens of Y = X W^T, from the
/// prepared activations xk (m rows of kernel_cols() floats, stride ldx).
using TableTilesFn = void (*)(const TableKernelView&, const float*, std::ptrdiff_t, std::ptrdiff_t, float*,
                              std::ptrdiff_t, std::ptrdiff_t, std::ptrdiff_t) noexcept;

/// The kernel function of `path` (the portable one where a path is not compiled in).
[[nodiscard]] inline TableTilesFn table_tiles_function(KernelPath path) noexcept {
#if (defined(__GNUC__) || defined(__clang__)) && defined(__x86_64__)
  switch (path) {
    case KernelPath::Avx2: return &table_tiles_avx2;
    case KernelPath::Avx512:
    case KernelPath::Avx512Vnni: return &table_tiles_avx512;
    case KernelPath::Portable: break;
  }
#else
  (void)path;
#endif
  return &table_tiles_portable;
}

/// Writes tokens [n0, n1) of X (row stride ldx) in kernel column order: each group starts at
/// its first slice, padding columns are 0 (xk must hold zeros there already, or be written
/// whole here: this writes every kernel column).
inline void prepare_table_activations(const TableKernelView& w, const float* x, std::ptrdiff_t ldx,
                                      std::ptrdiff_t n0, std::ptrdiff_t n1, float* xk) noexcept {
  const std::ptrdiff_t kc = w.kernel_cols();
  for (std::ptrdiff_t n = n0; n < n1; ++n) {
    float* dst = xk + n * kc;
    const float* src = x + n * ldx;
    for (std::ptrdiff_t g = 0; g < w.groups; ++g) {
      const std::ptrdiff_t c0 = w.group_col_begin[g], c1 = w.group_col_begin[g + 1];
      const std::ptrdiff_t k0 = std::ptrdiff_t{w.group_slice_begin[g]} * kTableSliceCols;
      const std::ptrdiff_t k1 = std::ptrdiff_t{w.group_slice_begin[g + 1]} * kTableSliceCols;
      std::memcpy(dst + k0, src + c0, sizeof(float) * static_cast<std::size_t>(c1 - c0));
      std::fill(dst + k0 + (c1 - c0), dst + k1, 0.0f);
    }
  }
}

class TableKernelMatrix : public CheckedKernel<TableKernelMatrix> {
 public:
  static constexpr std::string_view kName = "TableKernelMatrix";
  using CheckedKernel<TableKernelMatrix>::gemv;  // checked Eigen overloads (checked_kernel.hpp)
  using CheckedKernel<TableKernelMatrix>::gemm;

  TableKernelMatrix() = default;

  /// Repacks `w` into the kernel layout. Throws qtl::Error if w is empty or `path` cannot run
  /// on this CPU (the default path is the best one, or QTL_KERNEL_PATH's).
  explicit TableKernelMatrix(const TablePackedMatrix& w, KernelPath path = default_kernel_path()) {
    constexpr std::string_view kWhere = "TableKernelMatrix";
    require_nonempty(kWhere, "table-packed matrix", w.rows(), w.cols());
    if (w.bits() < 1 || w.bits() > 4) fail(kWhere, ": bits must be 1..4, got ", w.bits());
    if (w.cols() > (Index{1} << 30)) fail(kWhere, ": at most 2^30 columns, got ", w.cols());
    layout_ = TableKernelLayout(w.view());
    set_path(path);
  }

  [[nodiscard]] Index rows() const noexcept { return layout_.view().rows; }
  [[nodiscard]] Index cols() const noexcept { return layout_.view().cols; }
  [[nodiscard]] int bits() const noexcept { return layout_.view().bits; }
  [[nodiscard]] TableForm form() const noexcept { return layout_.view().form; }
  [[nodiscard]] KernelPath path() const noexcept { return path_; }
  /// Bytes of the kernel layout (what one GEMV streams).
  [[nodiscard]] std::size_t bytes() const noexcept { return layout_.bytes(); }
  [[nodiscard]] TableKernelView view() const noexcept { return layout_.view(); }

  /// The least work (4-row tiles x 16-column slices x tokens, 64 multiply-adds each) one thread
  /// is given; fewer threads than asked run below it. Default 4096 (a few microseconds).
  void set_min_work_per_thread(std::ptrdiff_t units) noexcept { min_work_per_thread_ = std::max<std::ptrdiff_t>(units, 1); }
  /// Switches the ISA path (no repacking: every path reads the same layout).
  void set_path(KernelPath path) {
    require_path(path);
    path_ = path;
    fn_ = table_tiles_function(path);
  }

  /// y[0..rows) = W_hat x[0..cols). x must be finite. Unchecked.
  void gemv(const float* x, float* y, int threads = 1) const { gemm(x, cols(), 1, y, rows(), threads); }

  /// Y = X W_hat^T: X is m x cols (row stride ldx), Y is m x rows (row stride ldy). Unchecked.
  void gemm(const float* x, Index ldx, Index m, float* y, Index ldy, int threads = 1) const {
    if (m <= 0) return;
    const TableKernelView w = layout_.view();
    const std::ptrdiff_t work = w.tiles * w.slices * m;
    threads = static_cast<int>(std::clamp<std::ptrdiff_t>(work / min_work_per_thread_, 1, std::max(threads, 1)));
    const std::ptrdiff_t kc = w.kernel_cols();
    detail::AlignedBuffer xk_buf(sizeof(float) * static_cast<std::size_t>(m * kc));
    float* xk = reinterpret_cast<float*>(xk_buf.data());
    parallel_for(m, threads, [&](std::ptrdiff_t n0, std::ptrdiff_t n1) { prepare_table_activations(w, x, ldx, n0, n1, xk); });
    const TableTilesFn fn = fn_;
    parallel_for(w.tiles, threads, [&](std::ptrdiff_t t0, std::ptrdiff_t t1) { fn(w, xk, kc, m, y, ldy, t0, t1); });
  }

 private:
  TableKernelLayout layout_;
  KernelPath path_ = KernelPath::Portable;
  TableTilesFn fn_ = &table_tiles_portable;
  std::ptrdiff_t min_work_per_thread_ = 4096;
};

}  // namespace qtl::kernel
