// qtl/model/vq_recipe.hpp — vector-quantized layers in the model: GPTVQ with k-means codebooks
// or QuIP#'s E8P lattice codebook, run on the VQ lookup kernels (qtl/kernel/vq/kernel_matrix.hpp).
//
// Per linear layer (quantize_vq_layer), in order:
//   1. optional target change (GPTAQ, calib::asymmetric_target): W ← W*;
//   2. optional randomized Hadamard of the inputs (QuIP#'s incoherence processing on the input
//      side; calib::RandomizedHadamard, run online per token as in rotate-gptq): W ← W R;
//   3. optional row normalization: s_r = fp16(rms of row r), W ← diag(1/s) W, so that one
//      codebook can serve rows and matrices of any magnitude; y_r = s_r (Ŵ x)_r at inference;
//   4. calib::gptvq: GPTQ's error feedback D columns at a time, each vector encoded in the
//      inverse-Hessian-weighted norm (GPTVQ, van Baalen et al. 2024; for E8P with D = 8 this is
//      QuIP#'s BlockLDLQ with block size 8, Tseng et al. 2024, §4).
// The forward pass is y = s ⊙ (Ŵ (T x)): Ŵ packed (pack_vq) on VQKernelMatrix, s a per-row
// fp16 multiply (RowScaledKernel), T the online transform (TransformedLinear). Activations are
// fp32; with KernelOptions{Int8} E8P layers take int8 activations (VQKernelMatrix's Int8 mode:
// the lattice weights are exact int8 multiples), k-means codebooks stay fp32 (no exact int8 form).
//
// Codebooks. KMeansVQ<D, B> holds 2^B x D fp16 values. On stories260K (226,560 linear weights)
// a 256 x 4 codebook per matrix would cost 16,384 bits per 2,048-11,008 weights, 1.5-8 bits per
// weight, so VQRecipe can fit ONE codebook for the whole model (share_codebook): in prepare(),
// on every linear's rows as steps 2-3 leave them (unweighted k-means: no statistics exist yet),
// and each matrix is then quantized with it through FixedParamsVQ. Bits per weight are counted
// honestly: the indices (padding vectors included), 16 bits per row scale, and the codebook's
// bits divided over every weight that shares it (per-matrix codebooks: over the matrix's own).
// E8P needs no codebook storage: one fp16 scale per set of rows (per row here).
#pragma once

#include <cmath>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "qtl/calib/gptvq.hpp"
#include "qtl/calib/hadamard.hpp"
#include "qtl/calib/hessian.hpp"
#include "qtl/calib/transform.hpp"
#include "qtl/core/error.hpp"
#include "qtl/core/validate.hpp"
#include "qtl/detail/fp16.hpp"
#include "qtl/format/vq_packed.hpp"
#include "qtl/kernel/vq.hpp"
#include "qtl/model/calibrated_recipe.hpp"
#include "qtl/model/quantized_linear.hpp"
#include "qtl/model/sequential.hpp"
#include "qtl/quant/e8p.hpp"
#include "qtl/quant/vector.hpp"

namespace qtl::model {

/// y = s ⊙ (K x): a kernel's outputs scaled per row (fp32 multiply after the kernel's sum).
template <LinearKernel K>
class RowScaledKernel {
 public:
  RowScaledKernel(K inner, VectorXf scale) : inner_(std::move(inner)), scale_(std::move(scale)) {
    if (scale_.size() != inner_.rows()) {
      fail("RowScaledKernel: ", scale_.size(), " row scales for a kernel of ", inner_.rows(), " rows");
    }
    require_finite("RowScaledKernel", "row scales", scale_);
  }
  [[nodiscard]] Index rows() const { return inner_.rows(); }
  [[nodiscard]] Index cols() const { return inner_.cols(); }
  [[nodiscard]] RowMatrixXf gemm(MatrixRef x, int threads) const {
    RowMatrixXf y = inner_.gemm(x, threads);
    y.array().rowwise() *= scale_.transpose().array();
    return y;
  }
  [[nodiscard]] const K& inner() const noexcept { return inner_; }
  [[nodiscard]] const VectorXf& scale() const noexcept { return scale_; }

 private:
  K inner_;
  VectorXf scale_;
};

struct VQLayerOptions {
  bool rotate = false;  ///< randomized Hadamard on the inputs (online)
  std::uint64_t rotation_seed = 0x51ed5eedULL;  ///< one rotation per input width, as calib::Pipeline
  bool normalize_rows = false;  ///< fp16 per-row RMS scales (needed by a shared codebook)
  bool fp32_targets = false;    ///< GPTAQ: solve toward the unquantized model's outputs
  /// The solver: GPTVQ, whose options are calib::GptqOptions (damping, block size), the type a
  /// calib::Pipeline takes for GPTQ (qtl/calib/solver.hpp).
  calib::GptqOptions gptq{};
};

template <VectorQuantizer V>
struct VQLayerResult {
  VQMatrix<V> matrix;              ///< of the transformed, row-normalized weights
  VectorXf row_scale;              ///< empty, or one fp16 value per row
  calib::InputTransform transform; ///< T: the layer computes s ⊙ (Ŵ (T x))
  calib::GptqReport report;
};

/// The input transform VQLayerOptions asks for at a width of `cols` inputs.
[[nodiscard]] inline calib::InputTransform vq_input_transform(Index cols, const VQLayerOptions& opt) {
  calib::InputTransform t;
  if (opt.rotate) t.then(calib::RandomizedHadamard(cols, opt.rotation_seed));
  return t;
}

/// fp16 RMS of each row (1 for an all-zero row).
[[nodiscard]] inline VectorXf vq_row_scales(MatrixRef w) {
  VectorXf s(w.rows());
  for (Index r = 0; r < w.rows(); ++r) {
    const double ms = w.row(r).cast<double>().squaredNorm() / static_cast<double>(w.cols());
    const float h = qtl::detail::round_to_half(static_cast<float>(std::sqrt(ms)));
    s[r] = h > 0.0f && std::isfinite(h) ? h : 1.0f;
  }
  return s;
}

/// Steps 1-4 of the header comment for one layer. `stats.cross` must be set when
/// opt.fp32_targets. Throws qtl::Error (from the steps) on bad shapes or non-finite values.
template <VectorQuantizer V>
[[nodiscard]] VQLayerResult<V> quantize_vq_layer(const V& v, const VQGranularity& granularity, MatrixRef w,
                                                 const calib::LayerStatistics& stats, const VQLayerOptions& opt) {
  constexpr std::string_view kWhere = "quantize_vq_layer";
  require_nonempty(kWhere, "weights", w.rows(), w.cols());
  require_finite(kWhere, "weights", w);
  require_shape(kWhere, "hessian", stats.hessian.rows(), stats.hessian.cols(), w.cols(), w.cols());
  require_finite(kWhere, "hessian", stats.hessian);
  VQLayerResult<V> out;
  RowMatrixXf target;
  if (opt.fp32_targets) {
    if (stats.cross.size() == 0) fail(kWhere, ": fp32_targets needs the cross statistics (stats.cross)");
    target = calib::asymmetric_target(w, stats.hessian, stats.cross, opt.gptq.damp_fraction);
  } else {
    target = w;
  }
  out.transform = vq_input_transform(w.cols(), opt);
  Eigen::MatrixXd hessian = stats.hessian;
  if (!out.transform.is_identity()) {
    target = out.transform.apply_weights(target);
    calib::LayerStatistics s;
    s.hessian = stats.hessian;
    s.mean_abs = stats.mean_abs.size() ? stats.mean_abs : VectorXd::Zero(w.cols());
    s.abs_max = stats.abs_max.size() ? stats.abs_max : VectorXf::Zero(w.cols());
    hessian = out.transform.apply_statistics(std::move(s)).hessian;
  }
  if (opt.normalize_rows) {
    out.row_scale = vq_row_scales(target);
    target = out.row_scale.cwiseInverse().asDiagonal() * target;
  }
  auto r = calib::gptvq(v, granularity, target, hessian, opt.gptq);
  out.matrix = std::move(r.matrix);
  out.report = std::move(r.report);
  return out;
}

/// Stored bits per weight of a VQ layer: indices (padding included) + row scales + parameter
/// sets; `shared_param_weights` > 0: the parameters are one set shared by that many weights, and
/// this layer is charged its share.
template <VectorQuantizer V>
[[nodiscard]] double vq_layer_bits_per_weight(const VQLayerResult<V>& r, double shared_param_weights = 0.0) {
  const VQMatrix<V>& m = r.matrix;
  const double n = static_cast<double>(m.rows()) * static_cast<double>(m.cols());
  const double index_bits = static_cast<double>(m.rows()) * static_cast<double>(m.layout.vectors_per_row()) * V::kBits;
  const double scale_bits = 16.0 * static_cast<double>(r.row_scale.size());
  const double param_bits = shared_param_weights > 0.0
                                ? m.quantizer.param_bits() * n / shared_param_weights
                                : static_cast<double>(m.layout.num_sets()) * m.quantizer.param_bits();
  return (index_bits + scale_bits + param_bits) / n;
}

/// The layer on the VQ kernels: s ⊙ (Ŵ (T x)). options.activations Int8 applies to E8P layers
/// (the others have no int8 mode and keep fp32 activations).
template <VectorQuantizer V>
[[nodiscard]] std::unique_ptr<LinearOp> make_vq_linear(const VQLayerResult<V>& r, double bits_per_weight,
                                                       const KernelOptions& options = {}) {
  const int threads = options.threads;
  kernel::VQKernelMatrix k(pack_vq(r.matrix));
  const bool int8 = options.activations == kernel::ActivationMode::Int8 && k.view().e8p;
  if (int8) k.set_mode(kernel::ActivationMode::Int8);
  const std::string what = str_cat(r.matrix.quantizer.name(), " ", r.matrix.rows(), "x", r.matrix.cols(),
                                   r.row_scale.size() ? " with row scales" : "", " (VQ kernels",
                                   int8 ? ", int8 activations)" : ")");
  std::unique_ptr<LinearOp> op;
  if (r.row_scale.size()) {
    op = std::make_unique<PackedLinear<RowScaledKernel<kernel::VQKernelMatrix>>>(
        RowScaledKernel<kernel::VQKernelMatrix>(std::move(k), r.row_scale), bits_per_weight, what, threads);
  } else {
    op = std::make_unique<PackedLinear<kernel::VQKernelMatrix>>(std::move(k), bits_per_weight, what, threads);
  }
  if (r.transform.is_identity()) return op;
  return std::make_unique<TransformedLinear>(r.transform, std::move(op), std::nullopt);
}

/// GPTVQ / QuIP#-style recipe over any vector quantizer. share_codebook: fit V's parameters once
/// on the whole model in prepare() and quantize every matrix with them (see the header comment).
template <VectorQuantizer V>
class VQRecipe final : public Recipe {
 public:
  VQRecipe(std::string name, V quantizer, VQGranularity granularity, VQLayerOptions options, bool share_codebook,
           KernelOptions kernel = {})
      : name_(std::move(name)),
        v_(std::move(quantizer)),
        granularity_(granularity),
        opt_(std::move(options)),
        share_(share_codebook),
        kernel_(kernel) {}

  [[nodiscard]] std::string name() const override { return name_; }
  [[nodiscard]] bool wants_fp32_targets() const override { return opt_.fp32_targets; }

  /// With share_codebook: fits the model-wide parameters on every linear's (transformed,
  /// normalized) rows. The recipe keeps them until the next prepare().
  void prepare(Transformer& model) const override {
    if (!share_) return;
    constexpr Index D = V::kDim;
    std::vector<float> x, wt;
    double weights = 0.0;
    for (const auto& name : model.linear_names()) {
      const auto* dense = dynamic_cast<const DenseLinear*>(&model.linear(name));
      if (dense == nullptr) fail("VQRecipe '", name_, "': '", name, "' is not a dense fp32 layer");
      RowMatrixXf w = vq_input_transform(dense->weight().cols(), opt_).apply_weights(dense->weight());
      if (opt_.normalize_rows) w = vq_row_scales(w).cwiseInverse().asDiagonal() * w;
      const Index vpr = (w.cols() + D - 1) / D;
      for (Index r = 0; r < w.rows(); ++r) {
        for (Index c = 0; c < vpr * D; ++c) {
          const bool real = c < w.cols();
          x.push_back(real ? w(r, c) : 0.0f);
          wt.push_back(real ? 1.0f : 0.0f);  // padding: weight 0
        }
      }
      weights += static_cast<double>(w.size());
    }
    shared_ = std::make_shared<const typename V::Params>(v_.fit(x, wt));
    shared_weights_ = weights;
  }

  /// The model-wide parameters prepare() fitted, or null (no prepare yet, or not shared).
  [[nodiscard]] const typename V::Params* shared_params() const noexcept { return shared_.get(); }

  [[nodiscard]] std::vector<QuantizedLayer> quantize(std::span<const LayerCalibration> group) const override {
    calib::LayerStatistics stats = group.front().stats->statistics();
    if (opt_.fp32_targets) {
      if (group.front().fp32_cross == nullptr) {
        fail("recipe '", name_, "': the driver supplied no fp32 cross statistics for '", group.front().name, "'");
      }
      stats.cross = *group.front().fp32_cross;
    }
    std::vector<QuantizedLayer> out;
    for (const auto& l : group) {
      if (share_) {
        if (!shared_) fail("recipe '", name_, "': the shared codebook is fitted in prepare(), which was not called");
        out.push_back(finish(quantize_vq_layer(FixedParamsVQ<V>(v_, *shared_), granularity_, *l.weight, stats, opt_),
                             shared_weights_));
      } else {
        out.push_back(finish(quantize_vq_layer(v_, granularity_, *l.weight, stats, opt_), 0.0));
      }
    }
    return out;
  }

 private:
  template <VectorQuantizer W>
  QuantizedLayer finish(const VQLayerResult<W>& r, double shared_weights) const {
    QuantizedLayer q;
    q.bits_per_weight = vq_layer_bits_per_weight(r, shared_weights);
    q.note = str_cat("damp ", r.report.damp_fraction, ", proxy loss ", r.report.total_proxy_loss);
    q.op = make_vq_linear(r, q.bits_per_weight, kernel_);
    return q;
  }

  std::string name_;
  V v_;
  VQGranularity granularity_;
  VQLayerOptions opt_;
  bool share_;
  KernelOptions kernel_;
  // Fitted by prepare() (the driver's hook before calibration), read by quantize().
  mutable std::shared_ptr<const typename V::Params> shared_;
  mutable double shared_weights_ = 0.0;
};

}  // namespace qtl::model
