// qtl/model/partial_binary_linear.hpp — a partial-binary matrix (PB-LLM: binary weights plus an
// 8-bit correction at the salient positions, qtl/quant/partial_binary.hpp) as a model layer.
//
//   y = B x + C x
// B runs on the packed kernels make_packed_linear picks for a binary table (the table-decode
// kernel with fp32 activations, the bit-plane LUT kernel with int8 activations); C is sparse
// (a few percent of the weights) and is applied in fp32 from a CSR copy of its values d_r · q.
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "qtl/core/error.hpp"
#include "qtl/core/types.hpp"
#include "qtl/model/quantized_linear.hpp"
#include "qtl/quant/partial_binary.hpp"

namespace qtl::model {

class PartialBinaryLinear final : public LinearOp {
 public:
  /// Throws qtl::Error when m is inconsistent (check_partial_binary) or its binary part cannot be packed.
  explicit PartialBinaryLinear(const PartialBinaryMatrix& m, const KernelOptions& options = {})
      : binary_(checked_binary(m, options)), bits_per_weight_(qtl::detail::partial_binary_bits_per_weight(m)) {  // checked_binary checked m
    offsets_.assign(static_cast<std::size_t>(m.rows()) + 1, 0);
    for_each_correction(m, [&](Index r, Index, float) { ++offsets_[static_cast<std::size_t>(r) + 1]; });
    for (std::size_t r = 0; r < static_cast<std::size_t>(m.rows()); ++r) offsets_[r + 1] += offsets_[r];
    columns_.resize(offsets_.back());
    coef_.resize(offsets_.back());
    std::vector<std::size_t> next(offsets_.begin(), offsets_.end() - 1);
    for_each_correction(m, [&](Index r, Index c, float v) {
      const std::size_t i = next[static_cast<std::size_t>(r)]++;
      columns_[i] = c;
      coef_[i] = v;
    });
    description_ = str_cat("partial binary ", m.rows(), "x", m.cols(), ", ", coef_.size(),
                           " salient weights in fp32 beside ", binary_->describe());
  }
  PartialBinaryLinear(const PartialBinaryLinear& o)
      : binary_(o.binary_->clone()),
        offsets_(o.offsets_),
        columns_(o.columns_),
        coef_(o.coef_),
        bits_per_weight_(o.bits_per_weight_),
        description_(o.description_) {}

  [[nodiscard]] Index in_features() const override { return binary_->in_features(); }
  [[nodiscard]] Index out_features() const override { return binary_->out_features(); }
  /// Y [T x rows] = X [T x cols] (B + C)ᵀ. X is validated by the binary kernel (shape, finite).
  [[nodiscard]] RowMatrixXf forward(MatrixRef x) const override {
    RowMatrixXf y = binary_->forward(x);
    const Index rows = out_features();
    for (Index t = 0; t < x.rows(); ++t) {
      const float* xt = x.row(t).data();
      float* yt = y.row(t).data();
      for (Index r = 0; r < rows; ++r) {
        float acc = 0.0f;
        for (std::size_t i = offsets_[static_cast<std::size_t>(r)]; i < offsets_[static_cast<std::size_t>(r) + 1]; ++i) {
          acc += coef_[i] * xt[columns_[i]];
        }
        yt[r] += acc;
      }
    }
    return y;
  }
  [[nodiscard]] std::unique_ptr<LinearOp> clone() const override {
    return std::make_unique<PartialBinaryLinear>(*this);
  }
  [[nodiscard]] std::string describe() const override { return description_; }
  /// Bits per weight of the stored form (binary codes, alphas, row scales, salient positions and values).
  [[nodiscard]] double bits_per_weight() const noexcept { return bits_per_weight_; }
  /// The binary part's layer (its kernel is visible through a dynamic_cast to PackedLinear<K>).
  [[nodiscard]] const LinearOp& binary() const noexcept { return *binary_; }
  [[nodiscard]] std::size_t salient_count() const noexcept { return coef_.size(); }

 private:
  static std::unique_ptr<LinearOp> checked_binary(const PartialBinaryMatrix& m, const KernelOptions& options) {
    check_partial_binary("PartialBinaryLinear", m);
    return make_packed_linear(m.binary, options);
  }

  std::unique_ptr<LinearOp> binary_;
  std::vector<std::size_t> offsets_;  // CSR of C, rows + 1
  std::vector<Index> columns_;
  std::vector<float> coef_;           // d_r · q
  double bits_per_weight_;
  std::string description_;
};

}  // namespace qtl::model
