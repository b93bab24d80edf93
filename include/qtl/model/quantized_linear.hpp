// qtl/model/quantized_linear.hpp — linear layers that multiply straight from packed low-bit codes.
//
// A quantized model replaces each DenseLinear by a PackedLinear: the weights stay packed, and
// every forward call runs a kernel on the packed codes (uniform formats: the SIMD kernels of
// qtl/kernel/uniform/kernel_matrix.hpp; table formats: the table-decode kernels of
// qtl/kernel/table/kernel_matrix.hpp, fp32 activations). Nothing here dequantizes a whole
// matrix to fp32.
#pragma once

#include <memory>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "qtl/format/packed_matrix.hpp"
#include "qtl/format/table_packed.hpp"
#include "qtl/kernel/lut.hpp"
#include "qtl/kernel/table.hpp"
#include "qtl/kernel/table/reference.hpp"
#include "qtl/kernel/uniform.hpp"
#include "qtl/model/ggml_linear.hpp"
#include "qtl/model/transformer.hpp"
#include "qtl/quant/ggml_quantizers.hpp"
#include "qtl/quant/quantize_matrix.hpp"
#include "qtl/quant/uniform.hpp"

namespace qtl::model {

/// Anything a PackedLinear can multiply with: Y [T x rows] = X [T x cols] W_hat^T.
template <class K>
concept LinearKernel = std::copy_constructible<K> && requires(const K& k, MatrixRef x, int threads) {
  { k.rows() } -> std::convertible_to<Index>;
  { k.cols() } -> std::convertible_to<Index>;
  { k.gemm(x, threads) } -> std::same_as<RowMatrixXf>;
};

/// The table format through its scalar reference kernel (an oracle; make_packed_linear uses
/// kernel::TableKernelMatrix).
class TableReferenceKernel {
 public:
  explicit TableReferenceKernel(TablePackedMatrix m) : m_(std::move(m)) {}
  [[nodiscard]] Index rows() const { return m_.rows(); }
  [[nodiscard]] Index cols() const { return m_.cols(); }
  [[nodiscard]] RowMatrixXf gemm(MatrixRef x, int /*threads*/) const {
    return gemm_table_reference(m_, x);
  }
  [[nodiscard]] const TablePackedMatrix& matrix() const { return m_; }

 private:
  TablePackedMatrix m_;
};

template <LinearKernel K>
class PackedLinear final : public LinearOp {
 public:
  PackedLinear(K kernel, double bits_per_weight, std::string description, int threads = 1)
      : kernel_(std::move(kernel)),
        bits_per_weight_(bits_per_weight),
        description_(std::move(description)),
        threads_(threads) {}

  [[nodiscard]] Index in_features() const override { return kernel_.cols(); }
  [[nodiscard]] Index out_features() const override { return kernel_.rows(); }
  [[nodiscard]] RowMatrixXf forward(MatrixRef x) const override { return kernel_.gemm(x, threads_); }
  [[nodiscard]] std::unique_ptr<LinearOp> clone() const override {
    return std::make_unique<PackedLinear>(*this);
  }
  [[nodiscard]] std::string describe() const override { return description_; }
  [[nodiscard]] std::vector<Index> scale_group_bounds() const override {
    if constexpr (requires { kernel_.scale_group_bounds(); }) {
      return kernel_.scale_group_bounds();
    } else {
      return {};
    }
  }
  void multiply_group_scales(std::span<const float> m) override {
    if constexpr (requires { kernel_.multiply_group_scales(m); }) {
      kernel_.multiply_group_scales(m);
    } else {
      LinearOp::multiply_group_scales(m);
    }
  }

  /// Bits per weight of the stored form (codes + scales + zeros + tables + extras).
  [[nodiscard]] double bits_per_weight() const { return bits_per_weight_; }
  [[nodiscard]] const K& kernel() const { return kernel_; }

 private:
  K kernel_;
  double bits_per_weight_;
  std::string description_;
  int threads_;
};

/// How a quantized layer multiplies: activation handling of the uniform kernels.
struct KernelOptions {
  /// Fp32: exact fp32 activations (weight-only quantization, as GPTQ/AWQ report it).
  /// Int8: activations quantized per block of 32 on the fly (W·A8 integer dot products).
  kernel::ActivationMode activations = kernel::ActivationMode::Fp32;
  int threads = 1;
};

/// Packs a quantized matrix in the format its quantizer calls for and wraps it in a LinearOp:
/// uniform codes -> PackedMatrix on the SIMD uniform kernels; table quantizers -> table format on
/// the table-decode kernels. With int8 activations, binary and ternary tables run on the
/// bit-plane lookup kernels (LutKernelMatrix, W1A8 / W1.58A8), other shared-table formats (log2,
/// NF4, FP4) on the table kernels' int8 mode (table rounded to int8, uniform int8 kernels with a
/// code map), and per-set codebooks keep fp32 activations (they have no int8 mode).
/// llama.cpp's block types (q8_0, q4_0, ...) keep their ggml bytes (GgmlLinear).
template <ScalarQuantizer Q>
[[nodiscard]] std::unique_ptr<LinearOp> make_packed_linear(const QuantizedMatrix<Q>& q,
                                                           const KernelOptions& options = {}) {
  const double bpw = bits_per_weight(q);
  const std::string what = str_cat(q.quantizer.name(), " ", q.rows(), "x", q.cols());
  if constexpr (requires { ggml::to_blocks(q); }) {
    return std::make_unique<GgmlLinear>(Q::kType, q.rows(), q.cols(), ggml::to_blocks(q));
  } else if constexpr (requires { pack(q); }) {
    kernel::UniformKernelMatrix k(pack(q), options.activations);
    return std::make_unique<PackedLinear<kernel::UniformKernelMatrix>>(
        std::move(k), bpw,
        str_cat(what, options.activations == kernel::ActivationMode::Int8 ? " (int8 activations)" : ""),
        options.threads);
  } else if constexpr (TableQuantizer<Q>) {
    TablePackedMatrix packed = pack_table(q);
    if (options.activations == kernel::ActivationMode::Int8 && kernel::lut_representable(packed)) {
      return std::make_unique<PackedLinear<kernel::LutKernelMatrix>>(
          kernel::LutKernelMatrix(packed), bpw, str_cat(what, " (bit-plane LUT, int8 activations)"), options.threads);
    }
    if (options.activations == kernel::ActivationMode::Int8 && kernel::TableKernelMatrix::int8_supported(packed)) {
      return std::make_unique<PackedLinear<kernel::TableKernelMatrix>>(
          kernel::TableKernelMatrix(packed, kernel::ActivationMode::Int8), bpw,
          str_cat(what, " (int8 table, int8 activations)"), options.threads);
    }
    return std::make_unique<PackedLinear<kernel::TableKernelMatrix>>(kernel::TableKernelMatrix(packed), bpw,
                                                                     what, options.threads);
  } else {
    fail("make_packed_linear: ", q.quantizer.name(), " has no packed kernel format (uniform codes pack at 2, 3, 4 "
         "or 8 bits; table formats at <= 4 bits)");
  }
}

namespace detail {
template <int Bits>
[[nodiscard]] std::unique_ptr<LinearOp> ggml_blocks_on_kernel(const GgmlLinear& g, const KernelOptions& options) {
  using U = Uniform<Bits, Mode::Symmetric>;
  const Index rows = g.out_features(), cols = g.in_features();
  const auto block_bytes = static_cast<std::size_t>(ggml::type_info(g.type()).type_size);
  QuantizedMatrix<U> q;
  q.layout = make_group_layout(PerGroup{32}, rows, cols, "ggml_linear_on_kernel");
  q.codes.resize(static_cast<std::size_t>(rows * cols));
  q.params.resize(static_cast<std::size_t>(q.layout.num_param_sets()));
  const std::span<const std::byte> bytes(g.bytes());
  std::uint8_t codes[32];
  for (std::size_t b = 0; b < q.params.size(); ++b) {  // row-major blocks, as GroupLayout's sets
    float d = 0.0f, m = 0.0f;
    ggml::unpack_block32(g.type(), bytes.subspan(b * block_bytes, block_bytes), d, m, codes);
    q.params[b].scale = d;
    q.params[b].zero = static_cast<float>(U::kSymmetricZero);
    std::copy(codes, codes + 32, q.codes.begin() + static_cast<std::ptrdiff_t>(b * 32));
  }
  return make_packed_linear(q, options);
}
}  // namespace detail

/// llama.cpp's Q4_0, Q5_0 and Q8_0 tensors on qtl's uniform kernels, re-encoded exactly: each
/// block's fp16 scale d and 32 codes become one symmetric group of 32 (q4_0: w = d (code - 8);
/// q5_0: w = d (code - 16), the 5-bit code being the 4-bit one and its high bit; q8_0:
/// w = d q = d ((q + 128) - 128)), so the packed weights decode to ggml's to_float bit for bit
/// and the product runs on the W4/W5/W8 kernels (with int8 activations, as llama.cpp rounds
/// activations to q8_0 for these types). Returns null for every other type: their layouts
/// (k-quants' 16- and 32-wide sub-block scales and minimums under one 256-block scale, q4_1 and
/// q5_1's offsets, which are no integer multiple of the scale) have no exact form in qtl's
/// packed format, and they keep GgmlLinear's product (or see ggml_linear_requantized).
[[nodiscard]] inline std::unique_ptr<LinearOp> ggml_linear_on_kernel(const GgmlLinear& g, const KernelOptions& options = {}) {
  switch (g.type()) {
    case ggml::Type::Q4_0: return detail::ggml_blocks_on_kernel<4>(g, options);
    case ggml::Type::Q5_0: return detail::ggml_blocks_on_kernel<5>(g, options);
    case ggml::Type::Q8_0: return detail::ggml_blocks_on_kernel<8>(g, options);
    default: return nullptr;
  }
}

namespace detail {
template <int Bits>
[[nodiscard]] std::unique_ptr<LinearOp> requantized_on_kernel(MatrixRef w, const KernelOptions& options) {
  return make_packed_linear(quantize_matrix(Uniform<Bits, Mode::Symmetric>{}, PerGroup{32}, w), options);
}
}  // namespace detail

/// Weights rounded to qtl's symmetric `bits`-bit code (4, 5, 6 or 8) in groups of 32, on the
/// uniform kernels: what runs a tensor ggml_linear_on_kernel cannot hold exactly (llama-quantize's
/// Q6_K classifier, k-quant linears) on a kernel, at the price of a second rounding of its
/// decoded weights `w`. That rounding's error is about the code's own at that width (the grids
/// differ): re-rounding a Q6_K tensor to 6 bits about doubles its squared error (2.06x on
/// Gaussian weights; 6.5 bits per weight read against Q6_K's 6.56); to 8 bits it adds about
/// 1/16 of it (8.5 bits per weight).
/// Throws qtl::Error for another width, or as quantize_matrix does for non-finite weights.
/// (A template only so that a translation unit that never calls it does not compile its four
/// widths' quantizers, qtl/core/types.hpp.)
template <class Deferred = void>
[[nodiscard]] std::unique_ptr<LinearOp> ggml_linear_requantized(MatrixRef w, int bits,
                                                                       const KernelOptions& options = {}) {
  switch (bits) {
    case 4: return detail::requantized_on_kernel<4>(w, options);
    case 5: return detail::requantized_on_kernel<5>(w, options);
    case 6: return detail::requantized_on_kernel<6>(w, options);
    case 8: return detail::requantized_on_kernel<8>(w, options);
    default: fail("ggml_linear_requantized: bits must be 4, 5, 6 or 8, got ", bits);
  }
}

}  // namespace qtl::model
