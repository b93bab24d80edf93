// qtl/model/ggml_linear.hpp — a linear layer stored in one of llama.cpp's block formats.
//
// GgmlLinear keeps the layer's ggml tensor bytes exactly as they go into a GGUF file (rows of
// blocks, qtl/quant/ggml_blocks.hpp) and multiplies with their fp32 decode, which is ggml's own
// to_float bit for bit: the model qtl evaluates is the model llama.cpp loads. (The multiply is
// Eigen's fp32 GEMM on the decoded weights, a yardstick, not a low-bit kernel.)
// make_packed_linear builds one for any quantizer with a ggml block layout (q8_0, q4_0, ...).
#pragma once

#include <cstddef>
#include <memory>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "qtl/core/error.hpp"
#include "qtl/core/types.hpp"
#include "qtl/quant/ggml_blocks.hpp"
#include "qtl/quant/ggml_types.hpp"
#include "qtl/model/transformer.hpp"

namespace qtl::model {

class GgmlLinear final : public LinearOp {
 public:
  /// A rows x cols matrix from its ggml tensor bytes (each row: cols / block_size blocks).
  /// Throws qtl::Error when the type cannot be decoded or the sizes do not match.
  GgmlLinear(ggml::Type type, Index rows, Index cols, std::vector<std::byte> bytes)
      : type_(type), bytes_(std::move(bytes)), dense_(rows, cols) {
    constexpr std::string_view kWhere = "GgmlLinear";
    if (rows < 1 || cols < 1) fail(kWhere, ": matrix must be non-empty, got ", rows, "x", cols);
    const ggml::TypeInfo info = ggml::type_info(type);
    if (cols % info.block_size != 0) {
      fail(kWhere, ": ", info.name, " needs rows that are a multiple of ", info.block_size, " values, got ", cols);
    }
    const auto row_bytes = static_cast<std::size_t>(cols / info.block_size * info.type_size);
    if (bytes_.size() != row_bytes * static_cast<std::size_t>(rows)) {
      fail(kWhere, ": a ", rows, "x", cols, " ", info.name, " tensor takes ", row_bytes * static_cast<std::size_t>(rows),
           " bytes, got ", bytes_.size());
    }
    for (Index r = 0; r < rows; ++r) {
      ggml::dequantize_row(type, std::span<const std::byte>(bytes_).subspan(static_cast<std::size_t>(r) * row_bytes, row_bytes),
                           std::span<float>(dense_.row(r).data(), static_cast<std::size_t>(cols)));
    }
  }

  [[nodiscard]] Index in_features() const override { return dense_.cols(); }
  [[nodiscard]] Index out_features() const override { return dense_.rows(); }
  [[nodiscard]] RowMatrixXf forward(MatrixRef x) const override { return x * dense_.transpose(); }
  [[nodiscard]] std::unique_ptr<LinearOp> clone() const override { return std::make_unique<GgmlLinear>(*this); }
  [[nodiscard]] std::string describe() const override {
    return str_cat(ggml::type_name(type_), " ", dense_.rows(), "x", dense_.cols(), " (ggml blocks)");
  }

  [[nodiscard]] ggml::Type type() const { return type_; }
  /// The tensor's bytes as a GGUF file stores them.
  [[nodiscard]] const std::vector<std::byte>& bytes() const { return bytes_; }
  /// The decoded weights (ggml's to_float of bytes()).
  [[nodiscard]] const RowMatrixXf& weight() const { return dense_; }
  [[nodiscard]] double bits_per_weight() const { return ggml::type_bits_per_weight(type_); }

 private:
  ggml::Type type_;
  std::vector<std::byte> bytes_;
  RowMatrixXf dense_;
};

/// RTN into `type` with llama.cpp's reference quantizer (what llama-quantize writes without an
/// importance matrix), for the tensors no solver sees (e.g. the token embedding).
[[nodiscard]] inline std::vector<std::byte> ggml_quantize_reference(ggml::Type type, const RowMatrixXf& w) {
  const ggml::TypeInfo info = ggml::type_info(type);
  if (w.cols() % info.block_size != 0) {
    fail("ggml_quantize_reference: ", info.name, " needs rows that are a multiple of ", info.block_size,
         " values, got ", w.cols());
  }
  const auto row_bytes = static_cast<std::size_t>(w.cols() / info.block_size * info.type_size);
  std::vector<std::byte> out(row_bytes * static_cast<std::size_t>(w.rows()));
  for (Index r = 0; r < w.rows(); ++r) {
    ggml::quantize_row_reference(type, std::span<const float>(w.row(r).data(), static_cast<std::size_t>(w.cols())),
                                 std::span<std::byte>(out).subspan(static_cast<std::size_t>(r) * row_bytes, row_bytes));
  }
  return out;
}

}  // namespace qtl::model
