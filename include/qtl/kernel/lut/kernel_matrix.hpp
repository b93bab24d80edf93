// qtl/kernel/lut/kernel_matrix.hpp — 1-bit and ternary matrices for the lookup-table kernels
// (kernel family 3: T-MAC / bitnet.cpp TL style; layout and equations in
// qtl/kernel/lut/layout.hpp).
//
//   LutKernelMatrix k(pack_table(quantize_matrix(Ternary{}, PerGroup{128}, W)));  // or Binary<>,
//   LutKernelMatrix k(pack_ternary_base3(q));                    // Binary<true>, base-3 ternary
//   k.gemv(x, y, threads);                 // y = W_hat x            (x: cols, y: rows)
//   k.gemm(X, ldx, m, Y, ldy, threads);    // Y = X W_hat^T, one token per row of X
//
// Accepted weights (everything else throws qtl::Error when constructed, naming why): the table
// format's 1-bit scaled {-1, +1} (Binary<false>), 1-bit per-group {lo, hi} (Binary<true>, the mean
// shift) and 2-bit scaled {-1, 0, +1, 0} (Ternary), and base-3 ternary (TernaryPackedMatrix).
// Their tables are affine in one or two bit planes, so the decomposition is exact.
//
// Activations: per block of 32 kernel columns, int8 with d_b = max|x| / 127 (qtl/kernel/
// uniform/quantize_activations.hpp), then per 4 activations the 16 sums sum_i +-a_i as exact int16
// split into two byte tables. All integer arithmetic is exact, so the only deviation from the exact
// product is the activation rounding plus float rounding:
//   |y_r - y_exact_r| <= sum_c |W_hat(r, c)| (d_b(c) / 2 + 2^-22 |x_c|)  + float rounding,
// d_b(c) = max |x| over the 32-column kernel block of c (the same bound as UniformKernelMatrix's
// Int8 mode; tests/kernel/lut_kernel_matrix_test.cpp enforces it). Every path computes the same
// integers and the same float steps in the same order: results are bit-identical across paths
// and thread counts.
// The raw-pointer gemv/gemm validate nothing and never throw except std::bad_alloc for their
// scratch; the Eigen overloads validate shapes, finiteness and threads and throw qtl::Error.
// Users include the family's public header, qtl/kernel/lut.hpp (it lists the files of
// qtl/kernel/lut/).
#pragma once

#include "qtl/kernel/common/target.hpp"

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string_view>
#include <vector>

#include "qtl/core/error.hpp"
#include "qtl/core/types.hpp"
#include "qtl/core/validate.hpp"
#include "qtl/format/table_packed.hpp"
#include "qtl/format/ternary_packed.hpp"
#include "qtl/kernel/common/checked_kernel.hpp"
#include "qtl/kernel/common/cpu_features.hpp"
#include "qtl/kernel/common/separate.hpp"
#include "qtl/kernel/lut/layout.hpp"
#include "qtl/kernel/lut/portable.hpp"
#if !defined(QTL_KERNELS_DECLARE_ONLY_LUT)
#include "qtl/kernel/lut/avx2.hpp"
#include "qtl/kernel/lut/avx512.hpp"
#include "qtl/kernel/lut/avx512vnni.hpp"
#endif
#include "qtl/kernel/common/threading.hpp"
#include "qtl/kernel/uniform/quantize_activations.hpp"

namespace qtl::kernel {

/// Signature shared by every path: tiles [t0, t1) x all tokens of Y = X W^T.
using LutTilesFn = void (*)(const LutKernelView&, const LutActivationSet&, float*, std::ptrdiff_t, std::ptrdiff_t,
                            std::ptrdiff_t) noexcept;

#if defined(QTL_KERNELS_DECLARE_ONLY_LUT)
/// The kernel function of `path`; compiled in the program's kernels TU (qtl/kernel/common/separate.hpp).
[[nodiscard]] LutTilesFn lut_tiles_function(KernelPath path) noexcept;
/// build_lut_group_avx2 over `groups` consecutive groups of 4 int8 activations (AVX2 CPUs only).
void build_lut_groups_simd(const std::int8_t* q, std::uint8_t* out, int groups) noexcept;
#else
/// The kernel function of `path` (Avx512Vnni runs the Avx512 lookups on activation tables and
/// the vpdpbusd GEMM of qtl/kernel/lut/avx512vnni.hpp on activation codes).
[[nodiscard]] QTL_KERNEL_ENTRY LutTilesFn lut_tiles_function(KernelPath path) noexcept {
#if defined(QTL_HAVE_X86_LUT_KERNELS)
  switch (path) {
    case KernelPath::Avx2:
    case KernelPath::AvxVnni: return &lut_tiles_avx2;
    case KernelPath::Avx512: return &lut_tiles_avx512;
    case KernelPath::Avx512Vnni: return &lut_tiles_avx512vnni;
    case KernelPath::Portable: break;
  }
#else
  (void)path;
#endif
  return &lut_tiles_portable;
}

/// build_lut_group_avx2 over `groups` consecutive groups of 4 int8 activations (AVX2 CPUs only).
QTL_KERNEL_ENTRY void build_lut_groups_simd(const std::int8_t* q, std::uint8_t* out, int groups) noexcept {
#if defined(QTL_HAVE_X86_LUT_KERNELS)
  for (int j = 0; j < groups; ++j) build_lut_group_avx2(q + 4 * j, out + j * kLutTableBytes);
#else
  for (int j = 0; j < groups; ++j) build_lut_group(q + 4 * j, out + j * kLutTableBytes);
#endif
}
#endif

/// The activations `path`'s kernel takes for m tokens: the int8 codes on Avx512Vnni with at least
/// kLutBlockedMinTokens tokens (its vpdpbusd GEMM), else the lookup tables.
[[nodiscard]] constexpr LutActivationForm lut_activation_form(KernelPath path, std::ptrdiff_t m) noexcept {
  return path == KernelPath::Avx512Vnni && m >= kLutBlockedMinTokens ? LutActivationForm::Codes
                                                                     : LutActivationForm::Tables;
}

/// Whether a table-packed matrix decomposes into bit planes exactly (1-bit binary with or
/// without mean shift, 2-bit ternary {-alpha, 0, +alpha}): what LutKernelMatrix accepts.
[[nodiscard]] inline bool lut_representable(const TablePackedMatrix& w) noexcept {
  const DecodeTable& s = w.shared_table();
  if (w.bits() == 1) return w.form() == TableForm::PerSet || (s[0] == -1.0f && s[1] == 1.0f);
  return w.bits() == 2 && w.form() == TableForm::ScaledShared && s[0] == -1.0f && s[1] == 0.0f &&
         s[2] == 1.0f && s[3] == 0.0f;
}

/// The plane decomposition of a table-packed matrix; throws qtl::Error if it has none.
[[nodiscard]] inline LutWeights lut_weights_of(const TablePackedMatrix& w) {
  constexpr std::string_view kWhere = "LutKernelMatrix";
  const DecodeTable& s = w.shared_table();
  if (w.bits() == 1 && w.form() == TableForm::PerSet) return LutWeights::BinaryShift;
  if (w.bits() == 1 && w.form() == TableForm::ScaledShared) {
    if (s[0] == -1.0f && s[1] == 1.0f) return LutWeights::Binary;
    fail(kWhere, ": the 1-bit shared table {", s[0], ", ", s[1],
         "} is not {-1, +1}, so scale x table is not a sign plane");
  }
  if (w.bits() == 2 && w.form() == TableForm::ScaledShared) {
    if (s[0] == -1.0f && s[1] == 0.0f && s[2] == 1.0f && s[3] == 0.0f) return LutWeights::Ternary;
    fail(kWhere, ": the 2-bit shared table {", s[0], ", ", s[1], ", ", s[2], ", ", s[3],
         "} is not the ternary {-1, 0, +1, 0}; only binary and ternary tables decompose into bit planes exactly");
  }
  fail(kWhere, ": a ", w.bits(), "-bit ", w.form() == TableForm::PerSet ? "per-set" : "scaled-shared",
       " table is not exactly representable as bit planes (only 1-bit binary with or without mean shift and "
       "2-bit ternary {-alpha, 0, +alpha} are); use the table-decode kernel");
}

/// Per-token activations for the LUT kernels: lookup tables (see qtl/kernel/lut/layout.hpp) or,
/// for the VNNI GEMM, the int8 codes and the start of its sums, -A_b (ternary: -2 A_b)
/// (LutActivationForm; qtl/kernel/lut/avx512vnni.hpp).
class PreparedLutActivations {
 public:
  void allocate(const LutKernelView& w, std::ptrdiff_t m, LutActivationForm form = LutActivationForm::Tables) {
    m_ = m;
    blocks_ = w.blocks;
    groups_ = w.groups;
    form_ = form;
    const bool codes = form == LutActivationForm::Codes;
    tables_.resize(codes ? 0 : static_cast<std::size_t>(m * w.blocks * kLutBlockTableBytes));
    q_.resize(codes ? static_cast<std::size_t>(m * w.blocks * kLutBlockCols) : 0);
    init_.resize(codes ? static_cast<std::size_t>(m * w.blocks) : 0);
    d_.resize(static_cast<std::size_t>(m * w.blocks));
    gsum_.resize(static_cast<std::size_t>(m * w.groups));
  }

  /// Prepares tokens [n0, n1) of X (row n at x + n * ldx); distinct ranges may run concurrently.
  void prepare(const LutKernelView& w, const float* x, std::ptrdiff_t ldx, std::ptrdiff_t n0, std::ptrdiff_t n1) {
    // AVX2 quantization and tables are bit-identical to the scalar ones (tests check both).
    alignas(64) float xb[kLutBlockCols];
    alignas(64) std::int8_t q[kLutBlockCols];
#if defined(QTL_X86_64)
    const bool simd = simd_allowed_ && __builtin_cpu_supports("avx2");
#endif
    for (std::ptrdiff_t n = n0; n < n1; ++n) {
      const float* xn = x + n * ldx;
      const bool codes = form_ == LutActivationForm::Codes;
      std::uint8_t* tables = codes ? nullptr : tables_.data() + n * blocks_ * kLutBlockTableBytes;
      float* d = d_.data() + n * blocks_;
      for (std::ptrdiff_t g = 0; g < w.groups; ++g) {
        const std::ptrdiff_t c0 = w.group_col_begin[g], c1 = w.group_col_begin[g + 1];
        double s = 0.0;
        for (std::ptrdiff_t b = w.group_block_begin[g]; b < w.group_block_begin[g + 1]; ++b) {
          const std::ptrdiff_t cb = c0 + (b - w.group_block_begin[g]) * kLutBlockCols;
          const std::ptrdiff_t len = std::min<std::ptrdiff_t>(kLutBlockCols, c1 - cb);
          std::memcpy(xb, xn + cb, static_cast<std::size_t>(len) * sizeof(float));
          for (std::ptrdiff_t i = len; i < kLutBlockCols; ++i) xb[i] = 0.0f;
#if defined(QTL_X86_64)
          const int sum = simd ? quantize_block_int8_avx2(xb, q, d + b)
                          : simd_allowed_ ? quantize_block_int8_portable(xb, q, d + b)
                                          : quantize_block_int8(xb, q, d + b);
#else
          const int sum = simd_allowed_ ? quantize_block_int8_portable(xb, q, d + b) : quantize_block_int8(xb, q, d + b);
#endif
          s += static_cast<double>(d[b]) * static_cast<double>(sum);
          if (codes) {
            std::memcpy(q_.data() + (n * blocks_ + b) * kLutBlockCols, q, kLutBlockCols);
            init_[static_cast<std::size_t>(n * blocks_ + b)] = w.kind == LutWeights::Ternary ? -2 * sum : -sum;
            continue;
          }
          std::uint8_t* tb = tables + b * kLutBlockTableBytes;
#if defined(QTL_X86_64)
          if (simd) {
            build_lut_groups_simd(q, tb, kLutGroupsPerBlock);
            continue;
          }
#endif
          for (int j = 0; j < kLutGroupsPerBlock; ++j) build_lut_group(q + 4 * j, tb + j * kLutTableBytes);
        }
        gsum_[static_cast<std::size_t>(n * groups_ + g)] = static_cast<float>(s);
      }
    }
  }

  /// Tests only: false makes prepare() use the scalar quantization and table construction.
  void allow_simd(bool on) noexcept { simd_allowed_ = on; }

  [[nodiscard]] LutActivationSet view() const noexcept {
    const bool codes = form_ == LutActivationForm::Codes;
    return {codes ? nullptr : tables_.data(), d_.data(), gsum_.data(), m_, blocks_, groups_,
            codes ? q_.data() : nullptr, codes ? init_.data() : nullptr};
  }

 private:
  bool simd_allowed_ = true;
  std::ptrdiff_t m_ = 0, blocks_ = 0, groups_ = 0;
  LutActivationForm form_ = LutActivationForm::Tables;
  std::vector<std::uint8_t> tables_;
  std::vector<std::int8_t> q_;
  std::vector<std::int32_t> init_;
  std::vector<float> d_, gsum_;
};

class LutKernelMatrix : public CheckedKernel<LutKernelMatrix> {
 public:
  static constexpr std::string_view kName = "LutKernelMatrix";
  using CheckedKernel<LutKernelMatrix>::gemv;
  using CheckedKernel<LutKernelMatrix>::gemm;

  LutKernelMatrix() = default;

  /// Repacks a 1-bit or ternary table-packed matrix. Throws qtl::Error if its table is not a
  /// bit-plane table (see lut_weights_of), it is empty, or `path` cannot run on this CPU.
  explicit LutKernelMatrix(const TablePackedMatrix& w, KernelPath path = default_kernel_path()) {
    require_nonempty("LutKernelMatrix", "packed matrix", w.rows(), w.cols());
    const LutWeights kind = lut_weights_of(w);
    const PackedTableView v = w.view();
    struct Source {
      const TablePackedMatrix& m;
      const PackedTableView& v;
      LutWeights kind;
      int bits(Index r, Index c) const noexcept {
        const int code = m.code(r, c);
        if (kind != LutWeights::Ternary) return code;
        return code == 0 ? 0 : code == 2 ? 3 : 1;  // planes u = [t >= 0], v = [t > 0]; code 3 decodes to 0
      }
      std::uint16_t param(Index r, Index g, int field) const noexcept {
        const Index p = v.groups_per_row == 0 ? 0 : r * v.groups_per_row + g;
        return kind == LutWeights::BinaryShift ? v.tables[2 * p + field] : v.scales[p];
      }
    };
    init(kind, w.rows(), w.cols(), w.layout().group_size, Source{w, v, kind}, path);
  }

  /// Repacks a base-3 packed ternary matrix.
  explicit LutKernelMatrix(const TernaryPackedMatrix& w, KernelPath path = default_kernel_path()) {
    require_nonempty("LutKernelMatrix", "packed matrix", w.rows(), w.cols());
    const PackedTernaryView v = w.view();
    struct Source {
      const TernaryPackedMatrix& m;
      const PackedTernaryView& v;
      int bits(Index r, Index c) const noexcept {
        const int t = m.code(r, c);
        return t == 0 ? 0 : t == 2 ? 3 : 1;
      }
      std::uint16_t param(Index r, Index g, int) const noexcept {
        return v.scales[v.groups_per_row == 0 ? 0 : r * v.groups_per_row + g];
      }
    };
    init(LutWeights::Ternary, w.rows(), w.cols(), w.layout().group_size, Source{w, v}, path);
  }

  [[nodiscard]] Index rows() const noexcept { return layout_.view().rows; }
  [[nodiscard]] Index cols() const noexcept { return layout_.view().cols; }
  [[nodiscard]] LutWeights weights() const noexcept { return layout_.view().kind; }
  /// Bytes of the kernel layout (what one GEMV streams).
  [[nodiscard]] std::size_t bytes() const noexcept { return layout_.bytes(); }
  [[nodiscard]] LutKernelView view() const noexcept { return layout_.view(); }

  // Work units (set_min_work_per_thread): tiles x blocks x tokens, ~1k lookups each; default
  // 1024 per thread.
  static constexpr std::ptrdiff_t kDefaultMinWorkPerThread = 1024;

  /// y[0..rows) = W_hat x[0..cols). x must be finite. Unchecked.
  void gemv(const float* x, float* y, int threads = 1) const { gemm(x, cols(), 1, y, rows(), threads); }

  /// Y = X W_hat^T: X is m x cols (row stride ldx), Y is m x rows (row stride ldy). Unchecked.
  void gemm(const float* x, Index ldx, Index m, float* y, Index ldy, int threads = 1) const {
    if (m <= 0) return;
    const LutKernelView w = layout_.view();
    const std::ptrdiff_t work = w.tiles * w.blocks * m;
    threads = thread_count(work, threads, kDefaultMinWorkPerThread);
    PreparedLutActivations acts;
    acts.allocate(w, m, lut_activation_form(path(), m));
    parallel_for(m, threads, [&](std::ptrdiff_t n0, std::ptrdiff_t n1) { acts.prepare(w, x, ldx, n0, n1); });
    const LutActivationSet a = acts.view();
    const LutTilesFn fn = fn_;
    parallel_for(w.tiles, threads, [&](std::ptrdiff_t t0, std::ptrdiff_t t1) { fn(w, a, y, ldy, t0, t1); });
  }

 private:
  template <class Source>
  void init(LutWeights kind, Index rows, Index cols, Index group_size, const Source& src, KernelPath path) {
    if (cols > (Index{1} << 30)) fail("LutKernelMatrix: at most 2^30 columns, got ", cols);
    set_path(path);  // before the repacking: an unsupported path fails fast
    layout_ = LutKernelLayout(kind, rows, cols, group_size, src);
  }

  friend class CheckedKernel<LutKernelMatrix>;
  void select_path(KernelPath path) noexcept { fn_ = lut_tiles_function(path); }

  LutKernelLayout layout_;
  LutTilesFn fn_ = &lut_tiles_portable;
};

}  // namespace qtl::kernel
