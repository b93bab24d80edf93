// qtl/kernel/vq/kernel_matrix.hpp — a k-means vector-quantized matrix ready for the lookup
// kernels (kernel family 4, AQLM / VPTQ CPU style).
//
//   VQKernelMatrix k(pack_vq(quantize_vectors(KMeansVQ<4, 8>{}, {}, W)));  // repacks once
//   k.gemv(x, y);                        // y = W_hat x              (x: cols, y: rows)
//   k.gemm(X, ldx, m, Y, ldy, threads);  // Y = X W_hat^T, one token per row of X
//
// Strategies (qtl/kernel/vq/layout.hpp), chosen per matrix at construction by a cost model:
//   Table   per token, set and position j: L[j][k] = codebook[k] . x[jD .. jD+D) for all 2^bits
//           entries (fp32, 16 entries per FMA), then y_r = sum_j L[j][idx_rj] by in-register
//           table lookups (vpermi2b / vpermi2ps, qtl/kernel/vq/avx512.hpp) or gathers.
//           Pays when a codebook serves many rows.
//   Decode  gather codebook[idx_rj][d] for 16 (8) rows and FMA with x[jD + d]: D gathers per
//           16 rows and position, no table. Pays when each set has few rows (the table would be
//           built for 2^bits entries and read by only rows_per_set rows).
// Cost model, per token and position, counted in 16-row lookups (~8 cycles for a gather or a
// permute tree, against ~0.5 cycle for an FMA + store, so building 16 table entries of one
// coordinate costs ~1/8 lookup; the same ratio holds for the scalar path, 1 load + add per
// lookup against D loads + D multiply-adds per decode):
//   table  = (sets + min(sets, tiles)) * Kp * D / 128  +  ceil(rows / 16)   (Kp = max(2^bits, 16);
//            sets at the edge of a thread's set range are built twice: the min term)
//   decode = ceil(rows / 16) * D
// Table is chosen iff table < decode. E.g. 4096 x 4096 with one codebook: Table for every D and
// bits; rows_per_set = 16 with 256 entries: Decode. set_strategy() overrides it (tests use it).
//
// Accuracy. Every path sums each row in fp32: per chunk of positions two accumulators (even
// and odd positions), chunk sums added in order. Against the exact sum S = sum_c W_hat_rc x_c
// (standard recursive-summation analysis, Higham, ASNA 2nd ed., 3.1; gamma_n = n u / (1 - n u),
// u = 2^-24; A = sum_c |W_hat_rc x_c|):
//   Table   |y_r - S| <= gamma_{D + P} A      (D for one table entry, P = ceil(cols / D) for
//                                              the sum over positions)
//   Decode  |y_r - S| <= gamma_{D P} A        (one chain of multiply-adds over every weight; E8P
//                                              too: its weights are rounded as the reference's)
// Pessimistic worst cases; tests/kernel/vq_kernel_matrix_test.cpp checks them per row.
// The raw-pointer gemv/gemm validate nothing and never throw except std::bad_alloc for their
// scratch; the Eigen overloads validate shapes and finiteness first and throw qtl::Error.
// Results are bit-identical for every thread count (rows are split, never a row's sum) and,
// within one path, deterministic.
//
// KMeansVQ<D, B> matrices (a packed matrix with 2^bits x D fp16 words per set is taken as a
// KMeansVQ codebook: the format does not name its quantizer) and E8P matrices (D = 8, 16-bit
// indices, one fp16 scale per set) are accepted. E8P always decodes (a table of 2^16 codewords
// never pays). On the Avx512Vnni path of VBMI CPUs it decodes 64 rows at a time to exact int8
// multiples of s/4 by byte-plane lookups (vq_tiles_e8p_avx512vbmi in qtl/kernel/vq/avx512.hpp,
// the row scale applied once per chunk); on the other SIMD paths per row and position the grid
// row, a sign mask and the shift make the 8 weights, scale * (+-grid + shift) rounded exactly
// as gemv_e8p_reference does, FMA with x (one ymm per codeword, qtl/kernel/vq/avx2.hpp).
// Int8 activations (E8P only; VQKernelMatrix(packed, ActivationMode::Int8) or set_mode): every
// E8P weight is s/4 times an odd integer q in [-11, 11], so with the activations quantized per
// block of 32 columns as the uniform kernels' Int8 mode does (a_k, scale d_b;
// qtl/kernel/uniform/quantize_activations.hpp) the product is integer dot products:
//   y_r = s_r / 4 * sum_b d_b sum_{k in b} q_rk a_k
// computed as vq_tiles_e8p_int8_scalar documents (q + 11 unsigned into vpdpbusd, the offset's
// share subtracted per token and chunk). On VBMI + VNNI CPUs (Avx512Vnni path) the byte-plane
// decoder feeds vpdpbusd directly (vq_tiles_e8p_int8_avx512vbmi); the other x86 paths look each
// codeword up in a table of all 2^16 (qtl/kernel/vq/e8p_codewords.hpp) for vpmaddubsw
// (vq_tiles_e8p_int8_avx2), the portable path runs the plain C++ kernel; all give the same bits. Error: against the fp32 product, the int8 activation
// error sum_k |W_rk| (d_b / 2 + 2^-22 |x_k|); against the exact int8 product above,
// gamma_{blocks + chunks + 3} s_r / 4 sum_b d_b sum_k (|q_rk| + 22) |a_k| for the fp32 sums.
// K-means codebooks have no exact int8 form and stay on fp32 activations (set_mode throws).
// Residual VQ is left to qtl/kernel/vq/reference.hpp.
// Users include the family's public header, qtl/kernel/vq.hpp (it lists the files of
// qtl/kernel/vq/).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstring>
#include <string_view>

#include "qtl/core/error.hpp"
#include "qtl/core/types.hpp"
#include "qtl/core/validate.hpp"
#include "qtl/detail/aligned_buffer.hpp"
#include "qtl/format/vq_packed.hpp"
#include "qtl/kernel/common/checked_kernel.hpp"
#include "qtl/kernel/common/cpu_features.hpp"
#include "qtl/kernel/common/separate.hpp"
#include "qtl/kernel/common/threading.hpp"
#include "qtl/kernel/uniform/quantize_activations.hpp"
#include "qtl/kernel/vq/layout.hpp"
#include "qtl/kernel/vq/portable.hpp"
#include "qtl/kernel/vq/repack.hpp"
#if !defined(QTL_KERNELS_DECLARE_ONLY_VQ)
#include "qtl/kernel/vq/avx2.hpp"
#include "qtl/kernel/vq/avx512.hpp"
#endif
#include "qtl/quant/e8p.hpp"

namespace qtl::kernel {

/// The per-path kernel functions (by default the portable path's, qtl/kernel/vq/portable.hpp).
struct VQKernelFunctions {
  void (*build_table)(const VQKernelView&, const VQChunkTask&, float*) noexcept = &vq_build_table_portable;
  void (*tiles_table)(const VQKernelView&, const VQChunkTask&, std::ptrdiff_t, std::ptrdiff_t) noexcept = &vq_tiles_table_portable;
  void (*tiles_decode)(const VQKernelView&, const VQChunkTask&, std::ptrdiff_t, std::ptrdiff_t) noexcept = &vq_tiles_decode_portable;
  void (*tiles_e8p)(const VQKernelView&, const VQChunkTask&, std::ptrdiff_t, std::ptrdiff_t) noexcept = &vq_tiles_e8p_portable;
  /// E8P with int8 activations (ActivationMode::Int8).
  void (*tiles_e8p_int8)(const VQKernelView&, const VQChunkTask&, std::ptrdiff_t, std::ptrdiff_t) noexcept = &vq_tiles_e8p_int8_scalar;
};

/// The plain C++ kernels (the *_scalar functions of qtl/kernel/vq/portable.hpp): what tests and
/// benchmarks compare the xsimd portable path with, through VQKernelMatrix::gemm_using.
[[nodiscard]] inline VQKernelFunctions vq_scalar_functions() noexcept {
  return {&vq_build_table_scalar, &vq_tiles_table_scalar, &vq_tiles_decode_scalar, &vq_tiles_e8p_scalar,
          &vq_tiles_e8p_int8_scalar};
}

/// The kernel functions of `path`. No integer dot products here, so Avx512Vnni is the Avx512 code
/// plus, where the CPU has AVX512_VBMI (every VNNI CPU since Ice Lake; not Cascade Lake), the
/// byte-plane table lookups for 8-bit indices (vq/avx512.hpp); Avx512 keeps the fp32 permutes,
/// so both stay testable on one machine.
#if defined(QTL_KERNELS_DECLARE_ONLY_VQ)
[[nodiscard]] VQKernelFunctions vq_kernel_functions(KernelPath path) noexcept;
#else
[[nodiscard]] QTL_KERNEL_ENTRY VQKernelFunctions vq_kernel_functions(KernelPath path) noexcept {
  VQKernelFunctions f;
#if defined(QTL_HAVE_X86_VQ_KERNELS)
  switch (path) {
    case KernelPath::Avx2:
    case KernelPath::AvxVnni:
      f = {&vq_build_table_avx2, &vq_tiles_table_avx2, &vq_tiles_decode_avx2, &vq_tiles_e8p_avx2, &vq_tiles_e8p_int8_avx2};
      break;
    case KernelPath::Avx512:
      f = {&vq_build_table_avx512, &vq_tiles_table_avx512, &vq_tiles_decode_avx512, &vq_tiles_e8p_avx2,
           &vq_tiles_e8p_int8_avx2};
      break;
    case KernelPath::Avx512Vnni:
      if (vq_cpu_has_vbmi()) {
        f = {&vq_build_table_avx512vbmi, &vq_tiles_table_avx512vbmi, &vq_tiles_decode_avx512, &vq_tiles_e8p_avx512vbmi,
             &vq_tiles_e8p_int8_avx512vbmi};
      } else {
        f = {&vq_build_table_avx512, &vq_tiles_table_avx512, &vq_tiles_decode_avx512, &vq_tiles_e8p_avx2,
             &vq_tiles_e8p_int8_avx2};
      }
      break;
    case KernelPath::Portable: break;
  }
#else
  (void)path;
#endif
  return f;
}
#endif

/// The cost model of the header comment.
[[nodiscard]] inline VQStrategy vq_choose_strategy(const VQKernelView& w) noexcept {
  if (w.e8p) return VQStrategy::Decode;  // 2^16 codewords: a table never pays
  const double sets = static_cast<double>(w.sets + std::min(w.sets, w.tiles));
  const double units = static_cast<double>((w.rows + 15) / 16);  // 16-row gather vectors
  const double table = sets * static_cast<double>(w.Kp) * w.dim / 128.0 + units;
  const double decode = units * w.dim;
  return table < decode ? VQStrategy::Table : VQStrategy::Decode;
}

class VQKernelMatrix : public CheckedKernel<VQKernelMatrix> {
 public:
  static constexpr std::string_view kName = "VQKernelMatrix";
  using CheckedKernel<VQKernelMatrix>::gemv;  // the checked Eigen overloads (common/checked_kernel.hpp)
  using CheckedKernel<VQKernelMatrix>::gemm;

  VQKernelMatrix() = default;

  /// Repacks a packed KMeansVQ matrix. Throws qtl::Error if it is empty, not a KMeansVQ matrix
  /// (dim 2, 4 or 8, 1..12 bits, 2^bits x dim words per set), has a non-finite codebook value,
  /// or `path` cannot run on this CPU.
  explicit VQKernelMatrix(const VQPackedMatrix& w, KernelPath path = default_kernel_path()) {
    constexpr std::string_view kWhere = "VQKernelMatrix";
    require_nonempty(kWhere, "packed matrix", w.rows(), w.cols());
    const int D = w.layout().dim, bits = w.bits();
    const bool e8p = D == 8 && bits == E8P::kBits && w.param_words_per_set() == E8P::kParamWords;
    if (!e8p) {
      if (D != 2 && D != 4 && D != 8) fail(kWhere, ": vector dimension must be 2, 4 or 8, got ", D);
      if (bits < 1 || bits > 12) fail(kWhere, ": index bits must be in [1, 12] (or 16 for E8P), got ", bits);
      if (w.param_words_per_set() != (std::size_t{1} << bits) * static_cast<std::size_t>(D)) {
        fail(kWhere, ": not a KMeansVQ or E8P matrix: ", w.param_words_per_set(), " parameter words per set, expected 2^",
             bits, " x ", D, " (residual VQ is not supported)");
      }
    }
    if (w.cols() > (Index{1} << 28)) fail(kWhere, ": at most 2^28 columns, got ", w.cols());
    for (std::uint16_t h : w.param_words()) {
      const float f = qtl::detail::half_to_float(h);
      if (!std::isfinite(f)) fail(kWhere, ": codebook value or scale ", f, " is not finite");
    }
    layout_ = VQKernelLayout(qtl::view(w));
    const VQKernelView& v = layout_.view();
    // the int8 mode's blocks of 4 positions never straddle a chunk (chunks of 256 positions)
    if (v.e8p && v.chunks > 1 && v.chunk % 4 != 0) fail(kWhere, ": internal: E8P chunk of ", v.chunk, " positions");
    // the codeword table of the AVX2 and plain C++ E8P kernels (512 KiB, once per process) is
    // built here, where std::bad_alloc can propagate, not inside the noexcept kernels
    if (v.e8p) (void)e8p_int8_codewords(v.e8p_grid, v.e8p_parity);
    std::ptrdiff_t span = 1;
    for (std::ptrdiff_t t = 0; t < v.tiles; ++t) {
      span = std::max<std::ptrdiff_t>(span, v.lane_set[t * kVQTileRows + kVQTileRows - 1] - v.lane_set[t * kVQTileRows] + 1);
    }
    max_sets_ = std::max<std::ptrdiff_t>(span, 2);
    strategy_ = vq_choose_strategy(v);
    set_path(path);
  }

  /// The same, with the activation mode (set_mode).
  VQKernelMatrix(const VQPackedMatrix& w, ActivationMode mode, KernelPath path = default_kernel_path())
      : VQKernelMatrix(w, path) {
    set_mode(mode);
  }

  [[nodiscard]] Index rows() const noexcept { return layout_.view().rows; }
  [[nodiscard]] Index cols() const noexcept { return layout_.view().cols; }
  [[nodiscard]] int dim() const noexcept { return layout_.view().dim; }
  [[nodiscard]] int bits() const noexcept { return layout_.view().bits; }
  [[nodiscard]] VQStrategy strategy() const noexcept { return strategy_; }
  [[nodiscard]] ActivationMode mode() const noexcept { return mode_; }
  /// Int8: activations quantized per block of 32 columns as the uniform kernels' Int8 mode does,
  /// integer dot products with the exact int8 E8P weights (see the header comment). E8P matrices
  /// only: a k-means codebook has no exact int8 form (throws qtl::Error).
  void set_mode(ActivationMode mode) {
    if (mode == ActivationMode::Int8 && !layout_.view().e8p) {
      fail(kName, "::set_mode: int8 activations run on E8P matrices only (this one: ", dim(), "-vectors, ", bits(),
           "-bit indices; k-means codebooks have no exact int8 form)");
    }
    mode_ = mode;
  }
  /// Bytes of the kernel layout one GEMV streams (indices, fp32 codebooks, lane sets).
  [[nodiscard]] std::size_t bytes() const noexcept { return layout_.bytes(); }
  [[nodiscard]] const VQKernelView& view() const noexcept { return layout_.view(); }

  /// Overrides the cost model's choice (both strategies compute the same product; E8P matrices
  /// always decode).
  void set_strategy(VQStrategy s) noexcept { strategy_ = s; }
  // Work units (set_min_work_per_thread): 16-row groups x positions x tokens, one lookup each;
  // default 8192 per thread.
  static constexpr std::ptrdiff_t kDefaultMinWorkPerThread = 8192;

  /// y[0..rows) = W_hat x[0..cols). x must be finite. Unchecked.
  void gemv(const float* x, float* y, int threads = 1) const { gemm(x, cols(), 1, y, rows(), threads); }

  /// Y = X W_hat^T: X is m x cols (row stride ldx), Y is m x rows (row stride ldy). Unchecked.
  void gemm(const float* x, Index ldx, Index m, float* y, Index ldy, int threads = 1) const {
    gemm_using(fn_, x, ldx, m, y, ldy, threads);
  }

  /// gemm with the kernel functions `fn` instead of the path's (tests and benchmarks: e.g.
  /// vq_scalar_functions() against the portable path). fn must be able to run on this CPU.
  void gemm_using(const VQKernelFunctions& fn, const float* x, Index ldx, Index m, float* y, Index ldy,
                  int threads = 1) const {
    if (m <= 0 || rows() == 0) return;
    const VQKernelView& w = layout_.view();
    const bool table = strategy_ == VQStrategy::Table && !w.e8p;
    const bool int8 = mode_ == ActivationMode::Int8 && w.e8p;
    const std::ptrdiff_t work = w.tiles * (kVQTileRows / 16) * w.positions * m * (table ? 1 : w.dim);
    const auto T = static_cast<std::ptrdiff_t>(thread_count(work, threads, kDefaultMinWorkPerThread, w.tiles));
    // activations padded to whole vectors (zeros past cols: padding coordinates add nothing)
    // (to whole blocks of 32 for the int8 mode's block scales)
    const std::ptrdiff_t ldxp = (w.positions * w.dim + 31) / 32 * 32;
    qtl::detail::AlignedBuffer xbuf(static_cast<std::size_t>(m * ldxp) * sizeof(float));
    auto* xp = reinterpret_cast<float*>(xbuf.data());
    for (Index n = 0; n < m; ++n) std::memcpy(xp + n * ldxp, x + n * ldx, static_cast<std::size_t>(w.cols) * sizeof(float));
    const std::ptrdiff_t nb = ldxp / 32;
    qtl::detail::AlignedBuffer q8buf(int8 ? static_cast<std::size_t>(m * ldxp) : 0);
    qtl::detail::AlignedBuffer d8buf(int8 ? static_cast<std::size_t>(m * (nb + w.chunks)) * sizeof(float) : 0);
    auto* q8 = reinterpret_cast<std::int8_t*>(q8buf.data());
    auto* d8 = reinterpret_cast<float*>(d8buf.data());
    float* corr8 = int8 ? d8 + m * nb : nullptr;  // (no arithmetic on the null pointer of fp32 mode)
    if (int8) prepare_int8(xp, ldxp, m, q8, d8, corr8);
    qtl::detail::AlignedBuffer accbuf(static_cast<std::size_t>(w.tiles * kVQTileRows * kVQMaxTokens) * sizeof(float));
    auto* acc = reinterpret_cast<float*>(accbuf.data());
    const std::ptrdiff_t table_floats = table ? kVQMaxTokens * max_sets_ * w.chunk * w.Kp : 0;
    qtl::detail::AlignedBuffer tbuf(static_cast<std::size_t>(T * table_floats) * sizeof(float));
    auto* tables = reinterpret_cast<float*>(tbuf.data());
    const std::ptrdiff_t max_sets = max_sets_;
    parallel_for(w.tiles, static_cast<int>(T), [&](std::ptrdiff_t t0, std::ptrdiff_t t1) {
      std::ptrdiff_t i = 0;  // this chunk's number in parallel_for's split, for its table scratch
      while (w.tiles * i / T != t0) ++i;
      float* tab = tables + i * table_floats;
      for (Index n0 = 0; n0 < m; n0 += kVQMaxTokens) {
        const int nt = static_cast<int>(std::min<Index>(kVQMaxTokens, m - n0));
        // sub-ranges of tiles whose sets fit one table: [a, b) covers sets [sa, sa + max_sets)
        for (std::ptrdiff_t a = t0, b = t0; a < t1; a = b) {
          const std::ptrdiff_t sa = w.lane_set[a * kVQTileRows];
          b = a + 1;
          while (b < t1 && w.lane_set[b * kVQTileRows + kVQTileRows - 1] < sa + max_sets) ++b;
          VQChunkTask k;
          k.x = xp + n0 * ldxp;
          k.ldx = ldxp;
          k.nt = nt;
          k.table = tab;
          k.s0 = sa;
          k.nsets = w.lane_set[b * kVQTileRows - 1] - sa + 1;
          k.acc = acc;
          if (int8) {
            k.q8 = q8 + n0 * ldxp;
            k.ldq = ldxp;
            k.d8 = d8 + n0 * nb;
            k.ldd = nb;
            k.corr8 = corr8 + n0 * w.chunks;
          }
          for (std::ptrdiff_t c = 0; c < w.chunks; ++c) {
            k.c = c;
            k.first = c == 0;
            if (int8) {
              fn.tiles_e8p_int8(w, k, a, b);
            } else if (w.e8p) {
              fn.tiles_e8p(w, k, a, b);
            } else if (table) {
              fn.build_table(w, k, tab);
              fn.tiles_table(w, k, a, b);
            } else {
              fn.tiles_decode(w, k, a, b);
            }
          }
          for (int n = 0; n < nt; ++n) {
            float* yn = y + (n0 + n) * ldy;
            for (std::ptrdiff_t t = a; t < b; ++t) {
              const std::ptrdiff_t lanes = std::min<std::ptrdiff_t>(kVQTileRows, w.rows - t * kVQTileRows);
              std::memcpy(yn + t * kVQTileRows, acc + (t * kVQMaxTokens + n) * kVQTileRows, static_cast<std::size_t>(lanes) * sizeof(float));
            }
          }
        }
      }
    });
  }

 private:
  friend class CheckedKernel<VQKernelMatrix>;
  void select_path(KernelPath path) noexcept { fn_ = vq_kernel_functions(path); }

  /// Int8 mode: every token's padded activations (ldxp floats, zeros past cols) quantized per
  /// block of 32 (the uniform kernels' block quantizer: every version gives the same bits), and
  /// per token and chunk corr = kE8PInt8Offset * sum_b d_b A_b (summed in double).
  void prepare_int8(const float* xp, std::ptrdiff_t ldxp, Index m, std::int8_t* q8, float* d8, float* corr8) const {
    const VQKernelView& w = layout_.view();
    const std::ptrdiff_t nb = ldxp / 32;
#if defined(QTL_X86_64)
    const bool avx2 = __builtin_cpu_supports("avx2") != 0;
#endif
    for (Index n = 0; n < m; ++n) {
      for (std::ptrdiff_t c = 0; c < w.chunks; ++c) {
        double corr = 0.0;
        const std::ptrdiff_t b1 = std::min(nb, ((c + 1) * w.chunk * 8 + 31) / 32);
        for (std::ptrdiff_t b = c * w.chunk * 8 / 32; b < b1; ++b) {
          const float* xb = xp + n * ldxp + 32 * b;
          std::int8_t* qb = q8 + n * ldxp + 32 * b;
          float* db = d8 + n * nb + b;
#if defined(QTL_X86_64)
          const int sum = avx2 ? quantize_block_int8_avx2(xb, qb, db) : quantize_block_int8_portable(xb, qb, db);
#else
          const int sum = quantize_block_int8_portable(xb, qb, db);
#endif
          corr += static_cast<double>(*db) * static_cast<double>(sum);
        }
        corr8[n * w.chunks + c] = static_cast<float>(kE8PInt8Offset * corr);
      }
    }
  }

  VQKernelLayout layout_;
  VQStrategy strategy_ = VQStrategy::Table;
  ActivationMode mode_ = ActivationMode::Fp32;
  VQKernelFunctions fn_{};
  std::ptrdiff_t max_sets_ = 2;
};

}  // namespace qtl::kernel
