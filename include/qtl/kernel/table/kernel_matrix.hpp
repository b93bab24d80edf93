// qtl/kernel/table/kernel_matrix.hpp — a table-format matrix ready for the table-decode kernels
// (kernel family 2: log2 / power grid, NF4, FP4, k-means codebooks, binary, residual binary,
// ternary; every scalar quantizer of <= 4 bits that is not uniform).
//
//   TableKernelMatrix k(pack_table(q));      // repacks once, picks the ISA path once
//   TableKernelMatrix k8(pack_table(q), ActivationMode::Int8);   // int8 activations
//   k.gemv(x, y, threads);                   // y = W_hat x          (x: cols, y: rows)
//   k.gemm(X, ldx, m, Y, ldy, threads);      // Y = X W_hat^T, one token per row of X
//
// Fp32 mode (the default). W_hat(r, c) = T_p[code(r, c)] exactly as the scalar reference
// decodes it (qtl/kernel/table/reference.hpp); activations stay fp32, products and sums are fp32
// FMAs, so the result equals the reference up to float rounding of the sums:
//   |y_r - y_ref_r| <= (chain + 5) 2^-24 sum_c |W_hat(r, c) x_c|  (+ 2^-24 |y_ref_r|, the
//   reference's own rounding), chain = the kernel slices of a row (~ cols / 16): each of 16
//   lanes is one FMA chain over the row's slices, then 4 pairwise additions.
// Layout: qtl/kernel/table/layout.hpp (built by table/repack.hpp). Paths: table/avx512.hpp
// (Avx512 and Avx512Vnni: one vpermps per 16 codes), table/avx2.hpp (two vpermps + blend),
// table/portable.hpp. GEMMs of 8 or more tokens decode each 4-row x 512-column panel once and
// reuse it for every token.
//
// Int8 mode (ScaledShared tables: log2 / power grid, NF4, FP4, binary, ternary). The shared
// table T (16 floats, m = max |T|) is rounded once to int8, T8[k] = round(T[k] / e) with e = m / 127
// or coarser where that is exact (round_table_to_int8), and the codes are repacked into the
// uniform kernels' tile layout (qtl/kernel/uniform/layout.hpp) with the 16-byte code map
// T8 + 128 and zero point 128, so a weight is
//   W8(r, c) = s_p * e * T8[code],   |W8 - W_hat| <= |s_p| m / 254
// (exact for binary, ternary and power grids of up to 7 octaves, whose tables are multiples of e). The uniform int8 kernels run
// it unchanged but for one vpshufb per 64 codes (vpdpbusd with VNNI, the sign trick without);
// the outputs are multiplied by e at the end. Activations are quantized per 32-column block as
// in the uniform kernels, so (uniform/kernel_matrix.hpp's bound with W8, plus the table rounding)
//   |y_r - y_ref_r| <= sum_c |W8(r, c)| (d_b(c) / 2 + 2^-22 |x_c|) + sum_c |s_p(r, c)| m |x_c| / 254
//                      + float rounding.
// 1-bit codes are stored as 2-bit tiles (the bit-plane LUT kernel, lut/kernel_matrix.hpp, is
// the compact 1-bit int8 kernel). PerSet tables (k-means codebooks, residual binary) have a
// table per row and group, which one byte shuffle per 16 rows cannot read: they run fp32 only,
// and asking for Int8 is a qtl::Error.
// The raw-pointer gemv/gemm validate nothing and never throw except std::bad_alloc for their
// activation scratch; the Eigen overloads validate shapes and finiteness first and throw
// qtl::Error. Results are bit-identical for every thread count (qtl/kernel/common/threading.hpp).
// Users include the family's public header, qtl/kernel/table.hpp (it lists the files of
// qtl/kernel/table/).
#pragma once

#include "qtl/kernel/common/target.hpp"

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string_view>

#include "qtl/core/error.hpp"
#include "qtl/core/types.hpp"
#include "qtl/core/validate.hpp"
#include "qtl/detail/aligned_buffer.hpp"
#include "qtl/format/table_packed.hpp"
#include "qtl/kernel/common/checked_kernel.hpp"
#include "qtl/kernel/common/cpu_features.hpp"
#include "qtl/kernel/common/separate.hpp"
#include "qtl/kernel/table/layout.hpp"
#include "qtl/kernel/table/portable.hpp"
#include "qtl/kernel/table/repack.hpp"
#if !defined(QTL_KERNELS_DECLARE_ONLY_TABLE)
#include "qtl/kernel/table/avx2.hpp"
#include "qtl/kernel/table/avx512.hpp"
#endif
#include "qtl/kernel/common/threading.hpp"
#include "qtl/kernel/uniform/kernel_matrix.hpp"

namespace qtl::kernel {

/// Signature shared by every path: tiles [t0, t1) x all m tokens of Y = X W^T, from the
/// prepared activations xk (m rows of kernel_cols() floats, stride ldx).
using TableTilesFn = void (*)(const TableKernelView&, const float*, std::ptrdiff_t, std::ptrdiff_t, float*,
                              std::ptrdiff_t, std::ptrdiff_t, std::ptrdiff_t) noexcept;

#if defined(QTL_KERNELS_DECLARE_ONLY_TABLE)
/// The kernel function of `path`; compiled in the program's kernels TU (qtl/kernel/common/separate.hpp).
[[nodiscard]] TableTilesFn table_tiles_function(KernelPath path) noexcept;
#else
/// The kernel function of `path` (the portable one where a path is not compiled in).
[[nodiscard]] QTL_KERNEL_ENTRY TableTilesFn table_tiles_function(KernelPath path) noexcept {
#if defined(QTL_X86_64)
  switch (path) {
    case KernelPath::Avx2:
    case KernelPath::AvxVnni: return &table_tiles_avx2;
    case KernelPath::Avx512:
    case KernelPath::Avx512Vnni: return &table_tiles_avx512;
    case KernelPath::Portable: break;
  }
#else
  (void)path;
#endif
  return &table_tiles_portable;
}
#endif

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

/// The int8 rounding of a shared table (int8 mode): T8 and its step e (T ~= e T8).
struct Int8Table {
  std::int8_t t8[16] = {};
  float step = 1.0f;
};

/// Rounds the first 2^bits entries of `table` to int8 (entries past them are 0): e = m / k for
/// the smallest k <= 127 that makes every entry an exact multiple of e (binary: k = 1; a power
/// grid down to 2^-j m: k = 2^j), else k = 127; T8 = round(T / e), so |e T8 - T| <= m / 254.
[[nodiscard]] inline Int8Table round_table_to_int8(const float* table, int bits) noexcept {
  Int8Table out;
  const int n = 1 << bits;
  float m = 0.0f;
  for (int j = 0; j < n; ++j) m = std::max(m, std::abs(table[j]));
  if (!(m > 0.0f)) return out;  // all zero: T8 = 0
  auto exact_with = [&](float step) {
    for (int j = 0; j < n; ++j) {
      if (std::nearbyint(table[j] / step) * step != table[j]) return false;
    }
    return true;
  };
  int k = 1;
  while (k < 127 && !exact_with(m / static_cast<float>(k))) ++k;
  out.step = m / static_cast<float>(k);
  for (int j = 0; j < n; ++j) {
    out.t8[j] = static_cast<std::int8_t>(std::clamp(std::nearbyint(table[j] / out.step), -127.0f, 127.0f));
  }
  return out;
}

class TableKernelMatrix : public CheckedKernel<TableKernelMatrix> {
 public:
  static constexpr std::string_view kName = "TableKernelMatrix";
  using CheckedKernel<TableKernelMatrix>::gemv;  // checked Eigen overloads (common/checked_kernel.hpp)
  using CheckedKernel<TableKernelMatrix>::gemm;

  TableKernelMatrix() = default;

  /// Whether `w` can run with int8 activations (its table is ScaledShared).
  [[nodiscard]] static bool int8_supported(const TablePackedMatrix& w) noexcept {
    return w.form() == TableForm::ScaledShared;
  }

  /// Repacks `w` into the kernel layout of `mode`. Throws qtl::Error if w is empty, if `path`
  /// cannot run on this CPU (the default path is the best one, or QTL_KERNEL_PATH's), or if
  /// mode is Int8 and w's table is not ScaledShared.
  explicit TableKernelMatrix(const TablePackedMatrix& w, ActivationMode mode = ActivationMode::Fp32,
                             KernelPath path = default_kernel_path()) {
    constexpr std::string_view kWhere = "TableKernelMatrix";
    require_nonempty(kWhere, "table-packed matrix", w.rows(), w.cols());
    if (w.bits() < 1 || w.bits() > 4) fail(kWhere, ": bits must be 1..4, got ", w.bits());
    if (w.cols() > (Index{1} << 30)) fail(kWhere, ": at most 2^30 columns, got ", w.cols());
    rows_ = w.rows();
    cols_ = w.cols();
    bits_ = w.bits();
    form_ = w.form();
    mode_ = mode;
    if (mode == ActivationMode::Fp32) {
      layout_ = TableKernelLayout(w.view());
    } else {
      if (!int8_supported(w)) {
        fail(kWhere, ": int8 activations need a ScaledShared table (one shared table times a scale per group); "
             "this ", w.bits(), "-bit matrix has a table per parameter set (PerSet), which runs with fp32 activations");
      }
      int8_table_ = round_table_to_int8(w.shared_table().data(), w.bits());
      std::uint8_t map[16] = {};
      for (int k = 0; k < 16; ++k) map[k] = static_cast<std::uint8_t>(int8_table_.t8[k] + 128);
      const PackedTableView v = w.view();
      const auto block_bytes = static_cast<std::ptrdiff_t>(table_block_bytes(v.bits));
      int8_ = UniformKernelLayout(
          std::max(v.bits, 2), v.rows, v.cols, v.group_size, v.groups_per_row,
          [&](std::ptrdiff_t row, std::ptrdiff_t c) {
            return int{table_code_in_block(v.bits, v.codes + row * v.row_bytes + (c / kCodesPerBlock) * block_bytes,
                                           static_cast<int>(c % kCodesPerBlock))};
          },
          [&](std::ptrdiff_t p) { return v.scales[p]; }, std::uint8_t{128}, map);
    }
    set_path(path);
  }
  /// Fp32 mode on `path`.
  explicit TableKernelMatrix(const TablePackedMatrix& w, KernelPath path) : TableKernelMatrix(w, ActivationMode::Fp32, path) {}

  [[nodiscard]] Index rows() const noexcept { return rows_; }
  [[nodiscard]] Index cols() const noexcept { return cols_; }
  [[nodiscard]] int bits() const noexcept { return bits_; }
  [[nodiscard]] TableForm form() const noexcept { return form_; }
  [[nodiscard]] ActivationMode mode() const noexcept { return mode_; }
  /// Bytes of the kernel layout (what one GEMV streams).
  [[nodiscard]] std::size_t bytes() const noexcept {
    return mode_ == ActivationMode::Fp32 ? layout_.bytes() : int8_.bytes();
  }
  /// Fp32 mode's layout (empty in int8 mode).
  [[nodiscard]] TableKernelView view() const noexcept { return layout_.view(); }
  /// Int8 mode's layout: uniform tiles with a code map (empty in fp32 mode).
  [[nodiscard]] UniformKernelView int8_view() const noexcept { return int8_.view(); }
  /// Int8 mode's rounded table T8 and its step e (W8 = s_p * e * T8[code]).
  [[nodiscard]] const Int8Table& int8_table() const noexcept { return int8_table_; }

  // Work units (set_min_work_per_thread): fp32 mode counts 4-row tiles x 16-column slices x
  // tokens (64 multiply-adds each, default 4096 per thread), int8 mode 16-row tiles x 32-column
  // blocks x tokens (~0.5k each, default 2048).
  static constexpr std::ptrdiff_t kDefaultMinWorkPerThread = 4096;
  static constexpr std::ptrdiff_t kDefaultMinWorkPerThreadInt8 = 2048;

  /// y[0..rows) = W_hat x[0..cols). x must be finite. Unchecked.
  void gemv(const float* x, float* y, int threads = 1) const { gemm(x, cols(), 1, y, rows(), threads); }

  /// Y = X W_hat^T: X is m x cols (row stride ldx), Y is m x rows (row stride ldy). Unchecked.
  void gemm(const float* x, Index ldx, Index m, float* y, Index ldy, int threads = 1) const {
    if (m <= 0) return;
    if (mode_ == ActivationMode::Int8) {
      gemm_int8(x, ldx, m, y, ldy, threads);
      return;
    }
    const TableKernelView w = layout_.view();
    threads = thread_count(w.tiles * w.slices * m, threads, kDefaultMinWorkPerThread);
    const std::ptrdiff_t kc = w.kernel_cols();
    detail::AlignedBuffer xk_buf(sizeof(float) * static_cast<std::size_t>(m * kc));
    float* xk = reinterpret_cast<float*>(xk_buf.data());
    parallel_for(m, threads, [&](std::ptrdiff_t n0, std::ptrdiff_t n1) { prepare_table_activations(w, x, ldx, n0, n1, xk); });
    const TableTilesFn fn = fn_;
    parallel_for(w.tiles, threads, [&](std::ptrdiff_t t0, std::ptrdiff_t t1) { fn(w, xk, kc, m, y, ldy, t0, t1); });
  }

 private:
  friend class CheckedKernel<TableKernelMatrix>;
  void select_path(KernelPath path) noexcept {
    fn_ = table_tiles_function(path);
    int8_fn_ = uniform_tiles_function(path);
  }

  void gemm_int8(const float* x, Index ldx, Index m, float* y, Index ldy, int threads) const {
    const UniformKernelView w = int8_.view();
    threads = thread_count(w.tiles * w.blocks * m, threads, kDefaultMinWorkPerThreadInt8);
    PreparedActivations acts;
    acts.allocate(w, m, ActivationMode::Int8);
    parallel_for(m, threads, [&](std::ptrdiff_t n0, std::ptrdiff_t n1) { acts.prepare(w, x, ldx, n0, n1); });
    const ActivationSet a = acts.view();
    const UniformTilesFn fn = int8_fn_;
    const float e = int8_table_.step;
    parallel_for(w.tiles, threads, [&](std::ptrdiff_t t0, std::ptrdiff_t t1) {
      fn(w, a, y, ldy, t0, t1);
      const std::ptrdiff_t r0 = t0 * kTileRows, r1 = std::min<std::ptrdiff_t>(t1 * kTileRows, w.rows);
      for (std::ptrdiff_t n = 0; n < m; ++n) {
        float* yn = y + n * ldy;
        for (std::ptrdiff_t r = r0; r < r1; ++r) yn[r] *= e;
      }
    });
  }

  Index rows_ = 0, cols_ = 0;
  int bits_ = 0;
  TableForm form_ = TableForm::ScaledShared;
  ActivationMode mode_ = ActivationMode::Fp32;
  TableKernelLayout layout_;
  UniformKernelLayout int8_;
  Int8Table int8_table_;
  TableTilesFn fn_ = &table_tiles_portable;
  UniformTilesFn int8_fn_ = &uniform_tiles_portable;
};

}  // namespace qtl::kernel
