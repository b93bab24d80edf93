// qtl/c/implementation.hpp — the definitions behind qtl/c/qtl.h (the C API).
//
// Compiled once into the library qtl::qtl_c by the translation unit CMake generates; a C++
// program uses the C++ headers instead and does not include this one. Everything that crosses
// the boundary is plain C: exceptions stop here and become a qtl_status plus a per-thread
// message (the qtl::Error text).
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#if defined(_OPENMP)
#include <omp.h>
#endif

#include "qtl/c/matrix.hpp"
#include "qtl/c/qtl.h"
#include "qtl/calib/gptq_ggml.hpp"
#include "qtl/calib/hessian.hpp"
#include "qtl/calib/pipeline.hpp"
#include "qtl/model/quantize_file.hpp"
#include "qtl/quant/quantize_matrix.hpp"

#if !defined(QTL_VERSION_STRING)
#define QTL_VERSION_STRING "unknown"
#endif

namespace qtl::c_api {

/// The value stored in a C enum field, read without loading it as the enum type.
template <class E>
[[nodiscard]] int enum_bits(const E& field) noexcept {
  static_assert(sizeof(E) == sizeof(int));
  int v;
  std::memcpy(&v, &field, sizeof v);
  return v;
}

/// The statistics GPTQ and AWQ read: from calibration inputs, or from a given Hessian (AWQ's
/// mean |x| is then sqrt(mean x²) = sqrt(diag(H) / 2), as after a rotation).
inline calib::LayerStatistics layer_statistics(std::string_view where, Index cols, const qtl_quantize_options& o) {
  if (o.activations != nullptr && o.hessian != nullptr) fail(where, ": give activations or a hessian, not both");
  if (o.activations != nullptr) {
    if (o.tokens == 0) fail(where, ": activations given with tokens = 0");
    const auto x = Eigen::Map<const RowMatrixXf>(o.activations, static_cast<Index>(o.tokens), cols);
    require_finite(where, "activations", x);
    calib::HessianAccumulator acc(cols);
    acc.add_batch(x);
    return acc.statistics();
  }
  if (o.hessian == nullptr) {
    fail(where, ": method ", o.method == QTL_METHOD_GPTQ ? "GPTQ" : "AWQ",
         " needs calibration activations or a hessian (both are NULL)");
  }
  calib::LayerStatistics s;
  s.hessian = Eigen::Map<const Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>>(o.hessian, cols, cols);
  for (Index i = 0; i < cols; ++i) {
    for (Index j = 0; j < cols; ++j) {
      const double v = s.hessian(i, j);
      if (!std::isfinite(v)) fail(where, ": hessian(", i, ", ", j, ") is ", v);
      // Symmetric up to rounding (a product XᵀX need not be bitwise symmetric).
      const double scale = std::abs(o.hessian[i * cols + i]) + std::abs(o.hessian[j * cols + j]);
      if (std::abs(v - s.hessian(j, i)) > 1e-5 * scale) {
        fail(where, ": hessian is not symmetric: (", i, ", ", j, ") is ", v, ", (", j, ", ", i, ") is ", s.hessian(j, i));
      }
    }
    if (s.hessian(i, i) < 0.0) fail(where, ": hessian(", i, ", ", i, ") is negative: ", s.hessian(i, i));
  }
  s.mean_abs = (s.hessian.diagonal() / 2.0).cwiseSqrt();
  s.abs_max = s.mean_abs.cast<float>();
  s.tokens = std::max<std::int64_t>(cols, 1);  // unknown: reported only
  s.exact_channel_stats = false;
  return s;
}

/// The fit the CLIP_SEARCH method runs (RTN: plain min-max).
inline FitOptions fit_of(const qtl_quantize_options& o) {
  return o.method == QTL_METHOD_CLIP_SEARCH ? FitOptions::searched() : FitOptions{};
}

inline void require_no_statistics(std::string_view where, const qtl_quantize_options& o) {
  if (o.activations != nullptr || o.hessian != nullptr) {
    fail(where, ": method ", o.method == QTL_METHOD_RTN ? "RTN" : "CLIP_SEARCH", " uses no activations or hessian");
  }
}

inline void require_damp(std::string_view where, double damp) {
  if (!(damp >= 0.0 && damp <= 10.0)) fail(where, ": damp must be in [0, 10], got ", damp);
}

/// Quantizes with the scalar or ggml block quantizer q into m (its packed form and input scales).
template <class Q>
void quantize_scalar_into(const Q& q, const RowMatrixXf& w, const qtl_quantize_options& o, qtl_matrix& m) {
  constexpr std::string_view kWhere = "qtl_quantize";
  Granularity g = PerRow{};
  if constexpr (kIsGgml<Q>) {
    const Index block = ggml::type_info(Q::kType).block_size;
    if (o.group_size != 0 && o.group_size != block) {
      fail(kWhere, ": ", format_name(m.format), " has blocks of ", block, " weights; group_size must be 0 or ", block,
           ", got ", o.group_size);
    }
    if (w.cols() % block != 0) {
      fail(kWhere, ": ", format_name(m.format), " needs cols a multiple of ", block, ", got ", w.cols());
    }
    g = PerGroup{block};
  } else {
    if (o.group_size < 0) fail(kWhere, ": group_size must be >= 0, got ", o.group_size);
    if (o.group_size > 0) g = PerGroup{o.group_size};
  }

  QuantizedMatrix<Q> qm;
  if (o.method == QTL_METHOD_RTN || o.method == QTL_METHOD_CLIP_SEARCH) {
    require_no_statistics(kWhere, o);
    QuantizeOptions qo;
    qo.fit = fit_of(o);
    qm = quantize_matrix(q, g, w, qo);
  } else {
    const calib::LayerStatistics stats = layer_statistics(kWhere, w.cols(), o);
    calib::Pipeline r;
    r.name = o.method == QTL_METHOD_GPTQ ? "gptq" : "awq";
    if (o.method == QTL_METHOD_GPTQ) {
      require_damp(kWhere, o.damp);
      r.solver = calib::GptqOptions{.damp_fraction = o.damp};
    } else {
      r.awq = true;
      r.solver = calib::RtnOptions{};
    }
    auto layers = calib::calibrate_group(q, g, std::vector<RowMatrixXf>{w}, stats, r);
    calib::CalibratedLayer<Q>& layer = layers.front();
    for (const auto& step : layer.transform.steps()) {
      const auto* cs = std::get_if<calib::ChannelScale>(&step);  // AWQ's only step: a channel scaling
      if (cs == nullptr) fail(kWhere, ": AWQ returned an input transform step that is not a channel scaling");
      m.input_scale = m.input_scale.size() == 0 ? cs->scales : VectorXf(m.input_scale.cwiseProduct(cs->scales));
    }
    qm = std::move(layer.matrix);
    for (Index i = 0; i < m.input_scale.size(); ++i) {
      if (!input_scale_ok(m.input_scale[i])) fail(kWhere, ": AWQ chose input scale ", m.input_scale[i], " for column ", i);
    }
  }

  if constexpr (kIsGgml<Q>) {
    m.ggml.emplace(Q::kType, w.rows(), w.cols(), ggml::to_blocks(qm));
  } else if constexpr (requires { pack(qm); }) {
    m.uniform.emplace(pack(qm));
  } else {
    m.table.emplace(pack_table(qm));
  }
}

/// Quantizes into a K-quant: RTN is ggml's reference fit of each super-block; CLIP_SEARCH
/// searches clip ratios around it; GPTQ fits the grid with diag(H) as the importance (llama-
/// quantize --imatrix's grid) and then chooses the codes by GPTQ on that grid, as the whole-
/// model call does (calib::gptq_k). AWQ's input scales are not offered for K-quants.
template <ggml::Type T>
void quantize_k_into(const ggml::KQuantizer<T>& q, const RowMatrixXf& w, const qtl_quantize_options& o,
                     qtl_matrix& m) {
  constexpr std::string_view kWhere = "qtl_quantize";
  if (o.group_size != 0 && o.group_size != 256) {
    fail(kWhere, ": ", format_name(m.format), " has super-blocks of 256 weights; group_size must be 0 or 256, got ",
         o.group_size);
  }
  if (w.cols() % 256 != 0) fail(kWhere, ": ", format_name(m.format), " needs cols a multiple of 256, got ", w.cols());
  QuantizeOptions grid;
  std::vector<std::byte> bytes;
  if (o.method == QTL_METHOD_RTN || o.method == QTL_METHOD_CLIP_SEARCH) {
    require_no_statistics(kWhere, o);
    grid.fit = fit_of(o);
    bytes = ggml::to_blocks(ggml::quantize_k(q, w, grid));
  } else if (o.method == QTL_METHOD_GPTQ) {
    require_damp(kWhere, o.damp);
    const calib::LayerStatistics stats = layer_statistics(kWhere, w.cols(), o);
    grid.column_importance = stats.hessian.diagonal().cast<float>().cwiseMax(0.0f);
    calib::GptqOptions gopt;
    gopt.damp_fraction = o.damp;
    bytes = ggml::to_blocks(calib::gptq_k(q, w, stats.hessian, grid, gopt).matrix);
  } else {
    fail(kWhere, ": method AWQ is not available for ", format_name(m.format),
         " (a K-quant); use RTN, CLIP_SEARCH or GPTQ");
  }
  m.ggml.emplace(T, w.rows(), w.cols(), std::move(bytes));
}

/// Quantizes with quantizer q into m (its packed form and input scales).
template <class Q>
void quantize_into(const Q& q, const RowMatrixXf& w, const qtl_quantize_options& o, qtl_matrix& m) {
  if constexpr (kIsKQuant<Q>) {
    quantize_k_into(q, w, o, m);
  } else {
    quantize_scalar_into(q, w, o, m);
  }
}

}  // namespace qtl::c_api

// ---- the C functions ---------------------------------------------------------------------

extern "C" {

QTL_C_EXPORT const char* qtl_version(void) { return QTL_VERSION_STRING; }

QTL_C_EXPORT const char* qtl_kernel_path(void) {
  static const std::string path(qtl::kernel::to_string(qtl::kernel::default_kernel_path()));
  return path.c_str();
}

QTL_C_EXPORT const char* qtl_last_error(void) { return qtl::c_api::last_error().c_str(); }

QTL_C_EXPORT void qtl_quantize_options_init(qtl_quantize_options* o) {
  if (o == nullptr) return;
  *o = qtl_quantize_options{};
  o->format = "uniform4";
  o->group_size = 32;
  o->method = QTL_METHOD_RTN;
  o->activations = nullptr;
  o->tokens = 0;
  o->hessian = nullptr;
  o->damp = 0.01;
  o->kernel_activations = QTL_ACTIVATIONS_FP32;
  o->threads = 1;
}

QTL_C_EXPORT qtl_status qtl_quantize(const float* weights, size_t rows, size_t cols, const qtl_quantize_options* options,
                                     qtl_matrix** out) {
  using namespace qtl;
  using namespace qtl::c_api;
  constexpr std::string_view kWhere = "qtl_quantize";
  return guarded(kWhere, QTL_ERROR_INVALID_ARGUMENT, [&] {
    require_pointer(kWhere, out, "out");
    *out = nullptr;
    require_pointer(kWhere, weights, "weights");
    require_pointer(kWhere, options, "options");
    require_pointer(kWhere, options->format, "options->format");
    if (rows < 1 || cols < 1) fail(kWhere, ": weights must be non-empty, got ", rows, "x", cols);
    if (rows > (std::size_t{1} << 31) || cols > (std::size_t{1} << 30)) fail(kWhere, ": shape ", rows, "x", cols, " is too large");
    const auto id = format_id(std::string_view(options->format));
    if (!id) fail(kWhere, ": unknown format '", options->format, "' (see qtl/c/qtl.h for the names)");
    // A C caller may store any int in an enum field; in C++ loading an out-of-range value as
    // the enum type is undefined, so the fields are checked through their bytes first.
    const int method = enum_bits(options->method), activations = enum_bits(options->kernel_activations);
    if (method < QTL_METHOD_RTN || method > QTL_METHOD_AWQ) fail(kWhere, ": unknown method ", method);
    if (activations != QTL_ACTIVATIONS_FP32 && activations != QTL_ACTIVATIONS_INT8) {
      fail(kWhere, ": unknown kernel_activations ", activations);
    }
    if (options->threads < 1) fail(kWhere, ": threads must be >= 1, got ", options->threads);
    const auto w = Eigen::Map<const RowMatrixXf>(weights, static_cast<Index>(rows), static_cast<Index>(cols));
    require_finite(kWhere, "weights", w);
    auto m = std::make_unique<qtl_matrix>();
    m->format = *id;
    m->rows = static_cast<Index>(rows);
    m->cols = static_cast<Index>(cols);
    m->activations = options->kernel_activations == QTL_ACTIVATIONS_INT8 ? kernel::ActivationMode::Int8
                                                                         : kernel::ActivationMode::Fp32;
#if defined(_OPENMP)
    const int saved_threads = omp_get_max_threads();
    omp_set_num_threads(options->threads);
    struct Restore {
      int n;
      ~Restore() { omp_set_num_threads(n); }
    } restore{saved_threads};
#endif
    const RowMatrixXf wm = w;
    with_quantizer(*id, [&](const auto& q) { quantize_into(q, wm, *options, *m); });
    build_kernel(*m);
    *out = m.release();
  });
}

QTL_C_EXPORT qtl_status qtl_matrix_info(const qtl_matrix* m, size_t* rows, size_t* cols, double* bits_per_weight,
                                        const char** format) {
  constexpr std::string_view kWhere = "qtl_matrix_info";
  return qtl::c_api::guarded(kWhere, QTL_ERROR_INVALID_ARGUMENT, [&] {
    qtl::c_api::require_pointer(kWhere, m, "matrix");
    if (rows) *rows = static_cast<size_t>(m->rows);
    if (cols) *cols = static_cast<size_t>(m->cols);
    if (bits_per_weight) *bits_per_weight = qtl::c_api::stored_bits_per_weight(*m);
    if (format) *format = qtl::c_api::format_name(m->format);
  });
}

QTL_C_EXPORT qtl_status qtl_gemv(const qtl_matrix* m, const float* x, float* y, int threads) {
  constexpr std::string_view kWhere = "qtl_gemv";
  return qtl::c_api::guarded(kWhere, QTL_ERROR_INVALID_ARGUMENT, [&] {
    qtl::c_api::require_pointer(kWhere, m, "matrix");
    qtl::c_api::require_pointer(kWhere, x, "x");
    qtl::c_api::require_pointer(kWhere, y, "y");
    qtl::c_api::multiply(*m, x, static_cast<size_t>(m->cols), 1, y, static_cast<size_t>(m->rows), threads);
  });
}

QTL_C_EXPORT qtl_status qtl_gemm(const qtl_matrix* m, const float* x, size_t ldx, size_t tokens, float* y, size_t ldy,
                                 int threads) {
  constexpr std::string_view kWhere = "qtl_gemm";
  return qtl::c_api::guarded(kWhere, QTL_ERROR_INVALID_ARGUMENT, [&] {
    qtl::c_api::require_pointer(kWhere, m, "matrix");
    if (tokens > 0) {
      qtl::c_api::require_pointer(kWhere, x, "x");
      qtl::c_api::require_pointer(kWhere, y, "y");
    }
    qtl::c_api::multiply(*m, x, ldx, tokens, y, ldy, threads);
  });
}

QTL_C_EXPORT qtl_status qtl_serialize(const qtl_matrix* m, void* buffer, size_t capacity, size_t* size) {
  constexpr std::string_view kWhere = "qtl_serialize";
  bool too_small = false;
  const qtl_status s = qtl::c_api::guarded(kWhere, QTL_ERROR_INVALID_ARGUMENT, [&] {
    qtl::c_api::require_pointer(kWhere, m, "matrix");
    qtl::c_api::require_pointer(kWhere, size, "size");
    const std::vector<std::uint8_t> bytes = qtl::c_api::serialize(*m);
    *size = bytes.size();
    if (buffer == nullptr) return;
    if (capacity < bytes.size()) {
      too_small = true;
      qtl::fail(kWhere, ": buffer of ", capacity, " bytes, the matrix needs ", bytes.size());
    }
    std::memcpy(buffer, bytes.data(), bytes.size());
  });
  return too_small ? QTL_ERROR_BUFFER_TOO_SMALL : s;
}

QTL_C_EXPORT qtl_status qtl_deserialize(const void* data, size_t size, qtl_matrix** out) {
  constexpr std::string_view kWhere = "qtl_deserialize";
  return qtl::c_api::guarded(kWhere, QTL_ERROR_INVALID_ARGUMENT, [&] {
    qtl::c_api::require_pointer(kWhere, out, "out");
    *out = nullptr;
    qtl::c_api::require_pointer(kWhere, data, "data");
    auto m = std::make_unique<qtl_matrix>(qtl::c_api::deserialize(static_cast<const std::uint8_t*>(data), size));
    *out = m.release();
  });
}

QTL_C_EXPORT void qtl_matrix_free(qtl_matrix* m) { delete m; }

QTL_C_EXPORT void qtl_model_options_init(qtl_model_options* o) {
  if (o == nullptr) return;
  *o = qtl_model_options{};
  o->recipe = nullptr;
  o->calibration_text = nullptr;
  o->calib_first = 0;
  o->calib_last = 249;
  o->tokenizer = nullptr;
  o->context = 0;
  o->progress = nullptr;
  o->user = nullptr;
}

QTL_C_EXPORT qtl_status qtl_quantize_model_file(const char* input, const char* output, const char* type,
                                                const qtl_model_options* options, double* bits_per_weight) {
  using namespace qtl;
  constexpr std::string_view kWhere = "qtl_quantize_model_file";
  bool cancelled = false;
  const qtl_status s = c_api::guarded(kWhere, QTL_ERROR_INVALID_ARGUMENT, [&] {
    c_api::require_pointer(kWhere, input, "input");
    c_api::require_pointer(kWhere, output, "output");
    c_api::require_pointer(kWhere, type, "type");
    c_api::require_pointer(kWhere, options, "options");
    model::QuantizeFileOptions o;
    o.input = input;
    o.output = output;
    o.type = type;
    if (options->recipe != nullptr) o.recipe = options->recipe;
    if (options->calibration_text != nullptr) o.calibration_text = options->calibration_text;
    o.calib_first = options->calib_first;
    o.calib_last = options->calib_last;
    if (options->tokenizer != nullptr) o.tokenizer = options->tokenizer;
    o.context = options->context;
    if (options->progress != nullptr) {
      o.progress = [&](double fraction, std::string_view line) {
        const std::string text(line);
        // A stop asked once the file is written (fraction 1) changes nothing: it is ignored.
        if (options->progress(fraction, text.c_str(), options->user) != 0 && fraction < 1.0) {
          cancelled = true;
          fail(kWhere, ": cancelled by the progress callback at ", fraction, " (", line, ")");
        }
      };
    }
    const model::QuantizeFileResult r = model::quantize_model_file(o);
    if (bits_per_weight != nullptr) *bits_per_weight = r.bits_per_weight;
  });
  return cancelled ? QTL_ERROR_CANCELLED : s;
}

}  // extern "C"
