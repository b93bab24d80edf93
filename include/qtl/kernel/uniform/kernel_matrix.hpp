// qtl/kernel/uniform/kernel_matrix.hpp — a uniform-quantized matrix ready for the fast kernels.
//
//   UniformKernelMatrix k(packed, ActivationMode::Int8);   // repacks once, picks the ISA path once
//   k.gemv(x, y);                        // y = W_hat x              (x: cols, y: rows)
//   k.gemm(X, ldx, m, Y, ldy, threads);  // Y = X W_hat^T, one token per row of X
//
// Activation modes (qtl/kernel/uniform/quantize_activations.hpp):
//   Fp32  exact fp32 activations; equals the scalar reference up to float rounding.
//   Int8  activations quantized per block of 32 to int8 (scale max|x|/127) and multiplied with
//         integer dot products; deviates from the exact product by at most
//           |y_r - y_exact_r| <= sum_c |W_hat(r, c)| (d_b(c) / 2 + 2^-22 |x_c|)  + float rounding,
//         d_b = max |x| over the 32-column block of c (see uniform/quantize_activations.hpp).
// AMX: on CPUs with AMX-INT8 tiles (Sapphire Rapids and later; amx_usable()), the Avx512Vnni
// path runs Int8 GEMMs of at least 32 tokens on them (qtl/kernel/uniform/amx.hpp): the same
// int8 activations and integer block products, another float summation order, the same bound.
// set_amx(false) or QTL_AMX=0 keeps them on the vector kernels.
// The raw-pointer gemv/gemm validate nothing and never throw except std::bad_alloc for their
// scratch; the Eigen overloads validate shapes and finiteness first and throw qtl::Error.
// Results are bit-identical for every thread count (qtl/kernel/common/threading.hpp) and, within one
// path, deterministic.
// Users include the family's public header, qtl/kernel/uniform.hpp (it lists the files of
// qtl/kernel/uniform/).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <span>
#include <string_view>
#include <vector>

#include "qtl/core/error.hpp"
#include "qtl/core/types.hpp"
#include "qtl/core/validate.hpp"
#include "qtl/format/packed_matrix.hpp"
#include "qtl/kernel/common/checked_kernel.hpp"
#include "qtl/kernel/common/cpu_features.hpp"
#include "qtl/kernel/common/separate.hpp"
#include "qtl/kernel/common/threading.hpp"
#include "qtl/kernel/uniform/layout.hpp"
#include "qtl/kernel/uniform/portable.hpp"
#include "qtl/kernel/uniform/amx_activations.hpp"
#include "qtl/kernel/uniform/quantize_activations.hpp"
#if !defined(QTL_KERNELS_DECLARE_ONLY_UNIFORM)
#include "qtl/kernel/uniform/amx.hpp"
#include "qtl/kernel/uniform/avx2.hpp"
#include "qtl/kernel/uniform/avx512.hpp"
#endif

namespace qtl::kernel {

/// Signature shared by every path: tiles [t0, t1) x all tokens of Y = X W^T.
using UniformTilesFn = void (*)(const UniformKernelView&, const ActivationSet&, float*, std::ptrdiff_t,
                                std::ptrdiff_t, std::ptrdiff_t) noexcept;

/// The AMX tile kernel's signature (qtl/kernel/uniform/amx.hpp): tiles [t0, t1) x all tokens,
/// with amx_scratch_bytes() of the caller's scratch.
using UniformAmxFn = void (*)(const UniformKernelView&, const AmxActivationSet&, float*, std::ptrdiff_t,
                              std::ptrdiff_t, std::ptrdiff_t, std::uint8_t*) noexcept;

#if defined(QTL_KERNELS_DECLARE_ONLY_UNIFORM)
/// The kernel function of `path`; compiled in the program's kernels TU (qtl/kernel/common/separate.hpp).
[[nodiscard]] UniformTilesFn uniform_tiles_function(KernelPath path) noexcept;
/// The AMX kernel, or null where it is not compiled in; compiled in the kernels TU.
[[nodiscard]] UniformAmxFn uniform_amx_function() noexcept;
#else
namespace detail_dispatch {
#if defined(QTL_HAVE_X86_KERNELS)
inline void tiles_avx512bw(const UniformKernelView& w, const ActivationSet& a, float* y,
                           std::ptrdiff_t ldy, std::ptrdiff_t t0, std::ptrdiff_t t1) noexcept {
  uniform_tiles_avx512(w, a, y, ldy, t0, t1, false);
}
inline void tiles_avx512vnni(const UniformKernelView& w, const ActivationSet& a, float* y,
                             std::ptrdiff_t ldy, std::ptrdiff_t t0, std::ptrdiff_t t1) noexcept {
  uniform_tiles_avx512(w, a, y, ldy, t0, t1, true);
}
#endif
}  // namespace detail_dispatch

/// The kernel function of `path` (the portable one where a path is not compiled in).
[[nodiscard]] QTL_KERNEL_ENTRY UniformTilesFn uniform_tiles_function(KernelPath path) noexcept {
#if defined(QTL_HAVE_X86_KERNELS)
  switch (path) {
    case KernelPath::Avx2: return &uniform_tiles_avx2;
    case KernelPath::AvxVnni: return &uniform_tiles_avxvnni;
    case KernelPath::Avx512: return &detail_dispatch::tiles_avx512bw;
    case KernelPath::Avx512Vnni: return &detail_dispatch::tiles_avx512vnni;
    case KernelPath::Portable: break;
  }
#else
  (void)path;
#endif
  return &uniform_tiles_portable;
}

/// The AMX kernel, or null where it is not compiled in (x86-64 GCC/Clang only).
[[nodiscard]] QTL_KERNEL_ENTRY UniformAmxFn uniform_amx_function() noexcept {
#if defined(QTL_HAVE_X86_KERNELS)
  return &uniform_tiles_amx;
#else
  return nullptr;
#endif
}
#endif

class UniformKernelMatrix : public CheckedKernel<UniformKernelMatrix> {
 public:
  static constexpr std::string_view kName = "UniformKernelMatrix";
  using CheckedKernel<UniformKernelMatrix>::gemv;
  using CheckedKernel<UniformKernelMatrix>::gemm;

  UniformKernelMatrix() = default;

  /// Repacks `w` into the kernel layout. Throws qtl::Error if w is empty or `path` cannot run
  /// on this CPU (the default path is the best one, or QTL_KERNEL_PATH's).
  explicit UniformKernelMatrix(const PackedMatrix& w, ActivationMode mode = ActivationMode::Int8,
                               KernelPath path = default_kernel_path()) {
    constexpr std::string_view kWhere = "UniformKernelMatrix";
    require_nonempty(kWhere, "packed matrix", w.rows(), w.cols());
    if (!is_packable_bits(w.bits())) fail(kWhere, ": bits must be 2, 3, 4, 5, 6 or 8, got ", w.bits());
    if (w.cols() > (Index{1} << 30)) fail(kWhere, ": at most 2^30 columns, got ", w.cols());
    layout_ = UniformKernelLayout(w.view());
    mode_ = mode;
    set_path(path);
  }

  [[nodiscard]] Index rows() const noexcept { return layout_.view().rows; }
  [[nodiscard]] Index cols() const noexcept { return layout_.view().cols; }
  [[nodiscard]] int bits() const noexcept { return layout_.view().bits; }
  [[nodiscard]] ActivationMode mode() const noexcept { return mode_; }
  /// Bytes of the kernel layout (what one GEMV streams).
  [[nodiscard]] std::size_t bytes() const noexcept { return layout_.bytes(); }
  [[nodiscard]] UniformKernelView view() const noexcept { return layout_.view(); }

  void set_mode(ActivationMode mode) noexcept { mode_ = mode; }

  /// Column bounds of the scale groups of every row: groups + 1 entries, group g = columns
  /// [b[g], b[g+1]). Empty when one scale serves the whole matrix (per-tensor codes): that
  /// scale cannot change per row.
  [[nodiscard]] std::vector<Index> scale_group_bounds() const {
    if (layout_.shared_params()) return {};
    const UniformKernelView v = layout_.view();
    return std::vector<Index>(v.group_col_begin, v.group_col_begin + v.groups + 1);
  }

  /// Multiplies the scale of row r's group g by m[r * groups + g] in place, rounded to fp16
  /// (the stored form, so the matrix's size in bits does not change): W(r, c) becomes
  /// m[r, g(c)] W(r, c) up to that rounding. Throws qtl::Error, changing nothing, for a size
  /// other than rows x groups, a factor that is not finite and > 0, a scale that would leave
  /// fp16's range, or a per-tensor matrix.
  void multiply_group_scales(std::span<const float> m) {
    constexpr std::string_view kWhere = "UniformKernelMatrix::multiply_group_scales";
    if (layout_.shared_params()) fail(kWhere, ": one scale serves the whole ", rows(), "x", cols(), " matrix");
    const UniformKernelView v = layout_.view();
    require_size(kWhere, "m", static_cast<Index>(m.size()), v.rows * v.groups);
    for (std::ptrdiff_t row = 0; row < v.rows; ++row) {
      for (std::ptrdiff_t g = 0; g < v.groups; ++g) {
        const float f = m[static_cast<std::size_t>(row * v.groups + g)];
        if (!(std::isfinite(f) && f > 0.0f)) fail(kWhere, ": factor (", row, ", ", g, ") must be finite and > 0, got ", f);
        const float s = qtl::detail::half_to_float(v.scales(row / kTileRows, g)[row % kTileRows]) * f;
        if (!std::isfinite(qtl::detail::half_to_float(qtl::detail::float_to_half(s)))) {
          fail(kWhere, ": the scale of (", row, ", ", g, ") times ", f, " leaves fp16's range");
        }
      }
    }
    layout_.multiply_scales(m.data());
  }
  // Work units (set_min_work_per_thread): 16-row tiles x 32-column blocks x tokens, ~0.5k
  // multiply-adds each; default 2048 per thread (a few microseconds).
  static constexpr std::ptrdiff_t kDefaultMinWorkPerThread = 2048;

  /// Whether gemm runs int8 products of at least kAmxMinTokens (32) tokens on AMX tiles
  /// (qtl/kernel/uniform/amx.hpp). On by default on the Avx512Vnni path where amx_usable();
  /// set_path resets it to that default.
  [[nodiscard]] bool amx() const noexcept { return amx_fn_ != nullptr; }
  /// Turns the AMX GEMM on or off. Throws qtl::Error, changing nothing, when turning it on
  /// where it cannot run (no AMX-INT8, not granted by the OS, QTL_AMX=0, or a path other than
  /// Avx512Vnni).
  void set_amx(bool on) {
    if (!on) {
      amx_fn_ = nullptr;
      return;
    }
    const UniformAmxFn fn = amx_function_for(path());
    if (fn == nullptr) {
      fail(kName, "::set_amx: AMX tiles cannot run here (CPU AMX-INT8: ", cpu_features().amx_int8 ? "yes" : "no",
           ", usable: ", amx_usable() ? "yes" : "no", ", path: ", to_string(path()), ")");
    }
    amx_fn_ = fn;
  }
  /// The fewest tokens a gemm hands to AMX (fewer run on the vector path). An A tile holds 16,
  /// but at 16 tokens the tile kernel was no faster than the vector one (4096 x 14336, 4-bit:
  /// 0.91x with 2 threads, 1.02x with 1; 24 tokens 1.01x / 1.06x; 32 tokens 1.33x / 1.44x).
  static constexpr Index kAmxMinTokens = 2 * kAmxTokens;

  /// y[0..rows) = W_hat x[0..cols). x must be finite. Unchecked.
  void gemv(const float* x, float* y, int threads = 1) const { gemm(x, cols(), 1, y, rows(), threads); }

  /// Y = X W_hat^T: X is m x cols (row stride ldx), Y is m x rows (row stride ldy). Unchecked.
  void gemm(const float* x, Index ldx, Index m, float* y, Index ldy, int threads = 1) const {
    if (m <= 0) return;
    const UniformKernelView w = layout_.view();
    // Below the minimum work (tile-blocks x tokens) per thread (a few microseconds), starting
    // threads costs more than it saves; the result does not depend on the thread count anyway.
    const std::ptrdiff_t work = w.tiles * w.blocks * m;
    threads = thread_count(work, threads, kDefaultMinWorkPerThread);
    if (amx_fn_ != nullptr && mode_ == ActivationMode::Int8 && m >= kAmxMinTokens) {
      gemm_amx(x, ldx, m, y, ldy, threads);
      return;
    }
    PreparedActivations acts;
    acts.allocate(w, m, mode_);
    parallel_for(m, threads, [&](std::ptrdiff_t n0, std::ptrdiff_t n1) { acts.prepare(w, x, ldx, n0, n1); });
    const ActivationSet a = acts.view();
    const UniformTilesFn fn = fn_;
    parallel_for(w.tiles, threads, [&](std::ptrdiff_t t0, std::ptrdiff_t t1) { fn(w, a, y, ldy, t0, t1); });
  }

 private:
  friend class CheckedKernel<UniformKernelMatrix>;
  void select_path(KernelPath path) noexcept {
    fn_ = uniform_tiles_function(path);
    amx_fn_ = amx_function_for(path);
  }

  static UniformAmxFn amx_function_for(KernelPath path) noexcept {
    return path == KernelPath::Avx512Vnni && amx_usable() ? uniform_amx_function() : nullptr;
  }

  // Int8 GEMM on AMX tiles: activations in the tile layout, each thread a contiguous range of
  // weight tiles with its own decode scratch.
  void gemm_amx(const float* x, Index ldx, Index m, float* y, Index ldy, int threads) const {
    const UniformKernelView w = layout_.view();
    AmxActivations acts;
    acts.allocate(w, m);
    parallel_for(m, threads, [&](std::ptrdiff_t n0, std::ptrdiff_t n1) { acts.prepare(w, x, ldx, n0, n1); });
    const AmxActivationSet a = acts.view();
    const std::ptrdiff_t parts = std::min<std::ptrdiff_t>(threads, w.tiles);
    const std::size_t per = amx_scratch_bytes();
    detail::AlignedBuffer scratch(per * static_cast<std::size_t>(parts));
    const UniformAmxFn fn = amx_fn_;
    parallel_for(parts, static_cast<int>(parts), [&](std::ptrdiff_t i0, std::ptrdiff_t i1) {
      for (std::ptrdiff_t i = i0; i < i1; ++i) {
        fn(w, a, y, ldy, w.tiles * i / parts, w.tiles * (i + 1) / parts, scratch.data() + per * static_cast<std::size_t>(i));
      }
    });
  }

  UniformKernelLayout layout_;
  ActivationMode mode_ = ActivationMode::Int8;
  UniformTilesFn fn_ = &uniform_tiles_portable;
  UniformAmxFn amx_fn_ = nullptr;
};

}  // namespace qtl::kernel
