// qtl/c/matrix.hpp — the C API's matrix handle (qtl_matrix of qtl/c/qtl.h), its serialized
// layout and its products; qtl/c/implementation.hpp adds quantization and the C functions.
// (Separate so that the deserializer's fuzz target compiles without the calibration code.)
//
// A qtl_matrix holds a format's packed form (PackedMatrix, TablePackedMatrix or ggml's block
// bytes), the kernel built from it once (UniformKernelMatrix, TableKernelMatrix or
// LutKernelMatrix; ggml types multiply with their fp32 decode, as model::GgmlLinear does), and
// the AWQ input scales when the method chose them (x is divided by them before the product).
// Serialization writes the packed form, so a load rebuilds exactly the kernel that was saved.
#pragma once

#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <exception>
#include <new>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "qtl/c/qtl.h"
#include "qtl/core/error.hpp"
#include "qtl/core/types.hpp"
#include "qtl/format/packed_matrix.hpp"
#include "qtl/format/table_packed.hpp"
#include "qtl/kernel/common/cpu_features.hpp"
#include "qtl/kernel/lut.hpp"
#include "qtl/kernel/table.hpp"
#include "qtl/kernel/uniform.hpp"
#include "qtl/model/ggml_linear.hpp"
#include "qtl/quant/codebook.hpp"
#include "qtl/quant/ggml_quantizers.hpp"
#include "qtl/quant/log2.hpp"
#include "qtl/quant/ternary.hpp"
#include "qtl/quant/uniform.hpp"

namespace qtl::c_api {

/// Serialized format ids (part of the layout: never renumber).
enum class FormatId : std::uint32_t {
  Uniform2 = 1, Uniform3 = 2, Uniform4 = 3, Uniform8 = 4, Uniform5 = 5, Uniform6 = 6,
  NF4 = 16, Log2_2 = 17, Log2_3 = 18, Log2_4 = 19, Ternary = 20,
  Q4_0 = 64, Q4_1 = 65, Q5_0 = 66, Q5_1 = 67, Q8_0 = 68, IQ4_NL = 69, TQ1_0 = 70, TQ2_0 = 71,
  Q2_K = 72, Q3_K = 73, Q4_K = 74, Q5_K = 75, Q6_K = 76,
};

struct FormatName {
  std::string_view name;
  FormatId id;
};
inline constexpr FormatName kFormats[] = {
    {"uniform2", FormatId::Uniform2}, {"uniform3", FormatId::Uniform3}, {"uniform4", FormatId::Uniform4},
    {"uniform5", FormatId::Uniform5}, {"uniform6", FormatId::Uniform6}, {"uniform8", FormatId::Uniform8},
    {"nf4", FormatId::NF4},           {"log2-2", FormatId::Log2_2},
    {"log2-3", FormatId::Log2_3},     {"log2-4", FormatId::Log2_4},     {"ternary", FormatId::Ternary},
    {"q4_0", FormatId::Q4_0},         {"q4_1", FormatId::Q4_1},         {"q5_0", FormatId::Q5_0},
    {"q5_1", FormatId::Q5_1},         {"q8_0", FormatId::Q8_0},         {"iq4_nl", FormatId::IQ4_NL},
    {"tq1_0", FormatId::TQ1_0},       {"tq2_0", FormatId::TQ2_0},       {"q2_K", FormatId::Q2_K},
    {"q3_K", FormatId::Q3_K},         {"q4_K", FormatId::Q4_K},         {"q5_K", FormatId::Q5_K},
    {"q6_K", FormatId::Q6_K},
};

[[nodiscard]] inline std::optional<FormatId> format_id(std::string_view name) {
  for (const auto& f : kFormats) {
    if (f.name == name) return f.id;
  }
  return std::nullopt;
}
[[nodiscard]] inline std::optional<FormatId> format_id(std::uint32_t raw) {
  for (const auto& f : kFormats) {
    if (static_cast<std::uint32_t>(f.id) == raw) return f.id;
  }
  return std::nullopt;
}
[[nodiscard]] inline const char* format_name(FormatId id) {
  for (const auto& f : kFormats) {
    if (f.id == id) return f.name.data();  // string literals: NUL-terminated
  }
  return "?";
}

/// Calls f with a value of the quantizer the format names.
template <class F>
decltype(auto) with_quantizer(FormatId id, F&& f) {
  switch (id) {
    case FormatId::Uniform2: return f(Uniform<2>{});
    case FormatId::Uniform3: return f(Uniform<3>{});
    case FormatId::Uniform4: return f(Uniform<4>{});
    case FormatId::Uniform5: return f(Uniform<5>{});
    case FormatId::Uniform6: return f(Uniform<6>{});
    case FormatId::Uniform8: return f(Uniform<8>{});
    case FormatId::NF4: return f(NF4{});
    case FormatId::Log2_2: return f(Log2<2>{});
    case FormatId::Log2_3: return f(Log2<3>{});
    case FormatId::Log2_4: return f(Log2<4>{});
    case FormatId::Ternary: return f(Ternary{});
    case FormatId::Q4_0: return f(ggml::GgmlQ4_0{});
    case FormatId::Q4_1: return f(ggml::GgmlQ4_1{});
    case FormatId::Q5_0: return f(ggml::GgmlQ5_0{});
    case FormatId::Q5_1: return f(ggml::GgmlQ5_1{});
    case FormatId::Q8_0: return f(ggml::GgmlQ8_0{});
    case FormatId::IQ4_NL: return f(ggml::GgmlIQ4_NL{});
    case FormatId::TQ1_0: return f(ggml::GgmlTQ1_0{});
    case FormatId::TQ2_0: return f(ggml::GgmlTQ2_0{});
    case FormatId::Q2_K: return f(ggml::GgmlQ2_K{});
    case FormatId::Q3_K: return f(ggml::GgmlQ3_K{});
    case FormatId::Q4_K: return f(ggml::GgmlQ4_K{});
    case FormatId::Q5_K: return f(ggml::GgmlQ5_K{});
    case FormatId::Q6_K: return f(ggml::GgmlQ6_K{});
  }
  fail("qtl_c: unknown format id ", static_cast<std::uint32_t>(id));
}

template <class Q>
inline constexpr bool kIsGgml = requires { Q::kType; };
/// llama.cpp's K-quants (super-blocks of 256 with quantized sub-block scales).
template <class Q>
inline constexpr bool kIsKQuant = false;
template <ggml::Type T>
inline constexpr bool kIsKQuant<ggml::KQuantizer<T>> = true;

/// An error a caller made in what it passed (QTL_ERROR_INVALID_ARGUMENT) or in bytes it asked
/// to load (QTL_ERROR_CORRUPT_DATA).
struct CorruptData : Error {
  using Error::Error;
};

}  // namespace qtl::c_api

/// The opaque handle of qtl/c/qtl.h.
struct qtl_matrix {
  qtl::c_api::FormatId format{};
  qtl::Index rows = 0, cols = 0;
  qtl::kernel::ActivationMode activations = qtl::kernel::ActivationMode::Fp32;
  std::optional<qtl::PackedMatrix> uniform;
  std::optional<qtl::kernel::UniformKernelMatrix> uniform_kernel;
  std::optional<qtl::TablePackedMatrix> table;
  std::optional<qtl::kernel::TableKernelMatrix> table_kernel;
  std::optional<qtl::kernel::LutKernelMatrix> lut_kernel;
  std::optional<qtl::model::GgmlLinear> ggml;
  qtl::VectorXf input_scale;  ///< empty, or cols scales: the product reads x / input_scale
};

namespace qtl::c_api {

inline std::string& last_error() {
  thread_local std::string message;
  return message;
}

/// Runs f, turning every exception into a status and this thread's message.
template <class F>
qtl_status guarded(std::string_view where, qtl_status on_error, F&& f) noexcept {
  try {
    f();
    return QTL_OK;
  } catch (const CorruptData& e) {
    last_error() = e.what();
    return QTL_ERROR_CORRUPT_DATA;
  } catch (const Error& e) {
    last_error() = e.what();
    return on_error;
  } catch (const std::bad_alloc&) {
    last_error() = str_cat(where, ": out of memory");
    return QTL_ERROR_OUT_OF_MEMORY;
  } catch (const std::exception& e) {
    last_error() = str_cat(where, ": ", e.what());
    return QTL_ERROR_INTERNAL;
  } catch (...) {
    last_error() = str_cat(where, ": unknown error");
    return QTL_ERROR_INTERNAL;
  }
}

inline void require_pointer(std::string_view where, const void* p, std::string_view what) {
  if (p == nullptr) fail(where, ": ", what, " is NULL");
}

/// Builds the kernel of m's packed form for m.activations.
inline void build_kernel(qtl_matrix& m) {
  using kernel::ActivationMode;
  const bool int8 = m.activations == ActivationMode::Int8;
  if (m.uniform) {
    m.uniform_kernel.emplace(*m.uniform, m.activations);
  } else if (m.table) {
    if (int8 && kernel::lut_representable(*m.table)) {
      m.lut_kernel.emplace(*m.table);
    } else if (int8 && !kernel::TableKernelMatrix::int8_supported(*m.table)) {
      fail("qtl_c: ", format_name(m.format), " has no int8-activation kernel; use QTL_ACTIVATIONS_FP32");
    } else {
      m.table_kernel.emplace(*m.table, m.activations);
    }
  } else if (m.ggml && int8) {
    fail("qtl_c: ", format_name(m.format),
         " multiplies with fp32 activations only (its product runs on ggml's fp32 decode); use QTL_ACTIVATIONS_FP32");
  }
}

// ---- serialization -------------------------------------------------------------------------

inline constexpr std::size_t kHeaderBytes = 48;

/// AWQ's input scales lie within [2^-40, 2^40] (far wider than any it chooses): outside, x / s
/// could overflow on ordinary inputs.
[[nodiscard]] inline bool input_scale_ok(float s) noexcept { return s >= 0x1p-40f && s <= 0x1p40f; }
inline constexpr std::uint32_t kFlagInt8 = 1u, kFlagInputScale = 2u, kFlagPerTensor = 4u;

[[nodiscard]] inline std::uint64_t fnv1a64(const std::uint8_t* p, std::size_t n) noexcept {
  std::uint64_t h = 14695981039346656037ULL;
  for (std::size_t i = 0; i < n; ++i) h = (h ^ p[i]) * 1099511628211ULL;
  return h;
}

class Writer {
 public:
  void bytes(const void* p, std::size_t n) {
    const auto* b = static_cast<const std::uint8_t*>(p);
    out_.insert(out_.end(), b, b + n);
  }
  template <class T>
  void put(T v) {  // little-endian hosts only (checked at compile time below)
    bytes(&v, sizeof v);
  }
  template <class T>
  void array(const std::vector<T>& v) {
    if (!v.empty()) bytes(v.data(), v.size() * sizeof(T));
  }
  std::vector<std::uint8_t>& data() { return out_; }

 private:
  std::vector<std::uint8_t> out_;
};

class Reader {
 public:
  Reader(const std::uint8_t* p, std::size_t n) : p_(p), n_(n) {}
  template <class T>
  T get(std::string_view what) {
    T v;
    std::memcpy(&v, take(sizeof v, what), sizeof v);
    return v;
  }
  const std::uint8_t* take(std::size_t n, std::string_view what) {
    if (n > n_ - pos_) {
      throw CorruptData(str_cat("qtl_deserialize: truncated: ", what, " needs ", n, " bytes at offset ", pos_,
                                ", only ", n_ - pos_, " left"));
    }
    const std::uint8_t* r = p_ + pos_;
    pos_ += n;
    return r;
  }
  template <class T>
  std::vector<T> array(std::size_t count, std::string_view what) {
    if (count > (n_ - pos_) / sizeof(T)) {
      throw CorruptData(str_cat("qtl_deserialize: truncated: ", what, " needs ", count, " x ", sizeof(T),
                                " bytes at offset ", pos_, ", only ", n_ - pos_, " left"));
    }
    std::vector<T> v(count);
    if (count) std::memcpy(v.data(), take(count * sizeof(T), what), count * sizeof(T));
    return v;
  }
  [[nodiscard]] std::size_t left() const noexcept { return n_ - pos_; }
  [[nodiscard]] std::size_t offset() const noexcept { return pos_; }

 private:
  const std::uint8_t* p_;
  std::size_t n_;
  std::size_t pos_ = 0;
};

static_assert(std::endian::native == std::endian::little, "qtl's serialized layout is little-endian");

[[nodiscard]] inline std::vector<std::uint8_t> serialize(const qtl_matrix& m) {
  Writer payload;
  GroupLayout layout{};
  if (m.uniform) {
    const PackedMatrix& p = *m.uniform;
    layout = p.layout();
    payload.put<std::uint32_t>(static_cast<std::uint32_t>(p.bits()));
    payload.put<std::uint32_t>(p.symmetric() ? 1u : 0u);
    payload.bytes(p.code_data(), static_cast<std::size_t>(p.rows() * p.row_bytes()));
    payload.array(p.scales());
    payload.array(p.zeros());
  } else if (m.table) {
    const TablePackedMatrix& p = *m.table;
    layout = p.layout();
    payload.put<std::uint32_t>(static_cast<std::uint32_t>(p.bits()));
    payload.put<std::uint32_t>(p.form() == TableForm::ScaledShared ? 0u : 1u);
    payload.bytes(p.code_data(), static_cast<std::size_t>(p.rows() * p.row_bytes()));
    if (p.form() == TableForm::ScaledShared) {
      payload.array(p.scales());
      payload.bytes(p.shared_table().data(), sizeof(DecodeTable));
    } else {
      payload.array(p.tables());
    }
  } else {
    const model::GgmlLinear& g = *m.ggml;
    layout = GroupLayout{m.rows, m.cols, ggml::type_info(g.type()).block_size, false};
    payload.put<std::uint32_t>(static_cast<std::uint32_t>(g.type()));
    payload.bytes(g.bytes().data(), g.bytes().size());
  }
  if (m.input_scale.size() > 0) payload.bytes(m.input_scale.data(), static_cast<std::size_t>(m.cols) * sizeof(float));

  Writer out;
  out.bytes("QTLM", 4);
  out.put<std::uint32_t>(QTL_C_SERIALIZED_VERSION);
  out.put<std::uint32_t>(static_cast<std::uint32_t>(m.format));
  std::uint32_t flags = 0;
  if (m.activations == kernel::ActivationMode::Int8) flags |= kFlagInt8;
  if (m.input_scale.size() > 0) flags |= kFlagInputScale;
  if (layout.per_tensor) flags |= kFlagPerTensor;
  out.put<std::uint32_t>(flags);
  out.put<std::uint64_t>(static_cast<std::uint64_t>(m.rows));
  out.put<std::uint64_t>(static_cast<std::uint64_t>(m.cols));
  out.put<std::uint32_t>(static_cast<std::uint32_t>(layout.per_tensor ? 0 : layout.group_size));
  out.put<std::uint32_t>(0);
  out.put<std::uint64_t>(static_cast<std::uint64_t>(payload.data().size()));
  out.array(payload.data());
  out.put<std::uint64_t>(fnv1a64(out.data().data(), out.data().size()));
  return std::move(out.data());
}

/// Reads a serialized matrix; every inconsistency is CorruptData naming the value.
[[nodiscard]] inline qtl_matrix deserialize(const std::uint8_t* data, std::size_t size) {
  constexpr std::string_view kWhere = "qtl_deserialize";
  auto corrupt = [&](auto&&... parts) { throw CorruptData(str_cat(kWhere, ": ", parts...)); };
  if (size < kHeaderBytes + 8) corrupt(size, " bytes is shorter than the ", kHeaderBytes + 8, "-byte minimum");
  if (std::memcmp(data, "QTLM", 4) != 0) corrupt("no QTLM magic at the start");
  Reader rd(data + 4, size - 4);
  const auto version = rd.get<std::uint32_t>("version");
  if (version != QTL_C_SERIALIZED_VERSION) corrupt("layout version ", version, " (this library reads ", QTL_C_SERIALIZED_VERSION, ")");
  const auto raw_format = rd.get<std::uint32_t>("format");
  const auto id = format_id(raw_format);
  if (!id) corrupt("unknown format id ", raw_format);
  const auto flags = rd.get<std::uint32_t>("flags");
  if (flags & ~(kFlagInt8 | kFlagInputScale | kFlagPerTensor)) corrupt("unknown flags 0x", flags);
  const auto rows = rd.get<std::uint64_t>("rows"), cols = rd.get<std::uint64_t>("cols");
  const auto group = rd.get<std::uint32_t>("group size");
  const auto reserved = rd.get<std::uint32_t>("reserved");
  const auto payload_bytes = rd.get<std::uint64_t>("payload size");
  if (reserved != 0) corrupt("reserved field is ", reserved, ", expected 0");
  if (payload_bytes != rd.left() - 8) {  // rd.left() >= 8: size >= kHeaderBytes + 8
    corrupt("payload size ", payload_bytes, " does not match the ", size, "-byte input (", rd.left() - 8,
            " payload bytes present)");
  }
  std::uint64_t stored_sum;
  std::memcpy(&stored_sum, data + size - 8, 8);
  const std::uint64_t sum = fnv1a64(data, size - 8);
  if (sum != stored_sum) corrupt("checksum mismatch (stored ", stored_sum, ", computed ", sum, "): the bytes are damaged");
  if (rows < 1 || cols < 1 || rows > (1ULL << 31) || cols > (1ULL << 30)) corrupt("bad shape ", rows, "x", cols);
  if (rows * cols > (1ULL << 40)) corrupt("shape ", rows, "x", cols, " is too large");

  qtl_matrix m;
  m.format = *id;
  m.rows = static_cast<Index>(rows);
  m.cols = static_cast<Index>(cols);
  m.activations = (flags & kFlagInt8) ? kernel::ActivationMode::Int8 : kernel::ActivationMode::Fp32;
  GroupLayout layout{m.rows, m.cols, static_cast<Index>(group), (flags & kFlagPerTensor) != 0};
  if (layout.per_tensor) {
    if (group != 0) corrupt("per-tensor matrix with group size ", group);
    layout.group_size = m.cols;
  } else if (group < 1 || group > cols) {
    corrupt("group size ", group, " for ", cols, " columns");
  }
  try {
    with_quantizer(*id, [&](const auto& q) {
      using Q = std::decay_t<decltype(q)>;
      if constexpr (kIsGgml<Q>) {
        const auto type = rd.get<std::uint32_t>("ggml type");
        if (type != static_cast<std::uint32_t>(Q::kType)) corrupt("ggml type ", type, " in a ", format_name(*id), " matrix");
        const ggml::TypeInfo info = ggml::type_info(Q::kType);
        if (layout.per_tensor || layout.group_size != info.block_size) corrupt("group size ", group, " for ", info.name);
        if (m.cols % info.block_size != 0) corrupt(info.name, " with ", cols, " columns");
        const std::size_t n = static_cast<std::size_t>(m.rows * (m.cols / info.block_size) * info.type_size);
        const std::uint8_t* p = rd.take(n, "ggml blocks");
        std::vector<std::byte> bytes(n);
        std::memcpy(bytes.data(), p, n);
        m.ggml.emplace(Q::kType, m.rows, m.cols, std::move(bytes));
        if (!m.ggml->weight().allFinite()) corrupt(info.name, " blocks decode to non-finite weights");
      } else if constexpr (requires { Q::kSymmetric; }) {
        const auto bits = rd.get<std::uint32_t>("bits");
        const auto sym = rd.get<std::uint32_t>("symmetric");
        if (bits != static_cast<std::uint32_t>(Q::kBits) || sym != (Q::kSymmetric ? 1u : 0u)) {
          corrupt(bits, "-bit ", sym ? "symmetric" : "asymmetric", " codes in a ", format_name(*id), " matrix");
        }
        const std::size_t n_sets = static_cast<std::size_t>(layout.num_param_sets());
        const std::size_t code_bytes =
            static_cast<std::size_t>(m.rows * ((m.cols + kCodesPerBlock - 1) / kCodesPerBlock)) * code_block_bytes(Q::kBits);
        const std::uint8_t* codes = rd.take(code_bytes, "codes");
        auto scales = rd.array<std::uint16_t>(n_sets, "scales");
        auto zeros = rd.array<std::uint8_t>(Q::kSymmetric ? 0 : n_sets, "zero points");
        m.uniform.emplace(PackedMatrix::from_parts(Q::kBits, Q::kSymmetric, layout, codes, code_bytes, std::move(scales),
                                                   std::move(zeros)));
      } else {
        const auto bits = rd.get<std::uint32_t>("bits");
        const auto form = rd.get<std::uint32_t>("table form");
        const bool shared = Q::kTableForm == TableForm::ScaledShared;
        if (bits != static_cast<std::uint32_t>(Q::kBits) || form != (shared ? 0u : 1u)) {
          corrupt(bits, "-bit table form ", form, " in a ", format_name(*id), " matrix");
        }
        const std::size_t n_sets = static_cast<std::size_t>(layout.num_param_sets());
        const std::size_t code_bytes =
            static_cast<std::size_t>(m.rows * ((m.cols + kCodesPerBlock - 1) / kCodesPerBlock)) * table_block_bytes(Q::kBits);
        const std::uint8_t* codes = rd.take(code_bytes, "codes");
        std::vector<std::uint16_t> scales, tables;
        DecodeTable table{};
        if constexpr (Q::kTableForm == TableForm::ScaledShared) {
          scales = rd.array<std::uint16_t>(n_sets, "scales");
          std::memcpy(table.data(), rd.take(sizeof(DecodeTable), "shared table"), sizeof(DecodeTable));
          if (table != q.shared_table()) corrupt("shared table differs from ", format_name(*id), "'s levels");
        } else {
          tables = rd.array<std::uint16_t>(n_sets << Q::kBits, "tables");
        }
        m.table.emplace(TablePackedMatrix::from_parts(Q::kBits, Q::kTableForm, layout, codes, code_bytes,
                                                      std::move(scales), table, std::move(tables)));
      }
    });
    if (flags & kFlagInputScale) {
      auto s = rd.array<float>(static_cast<std::size_t>(m.cols), "input scales");
      m.input_scale = Eigen::Map<const VectorXf>(s.data(), m.cols);
      for (Index i = 0; i < m.cols; ++i) {
        if (!input_scale_ok(m.input_scale[i])) corrupt("input scale ", i, " is ", m.input_scale[i], ", outside [2^-40, 2^40]");
      }
    }
    if (rd.left() != 8) corrupt(rd.left() - 8, " unread payload bytes at offset ", rd.offset() + 4);
    build_kernel(m);
  } catch (const CorruptData&) {
    throw;
  } catch (const Error& e) {  // from_parts and the kernels' own checks
    throw CorruptData(str_cat(kWhere, ": ", e.what()));
  }
  return m;
}

/// Y = X W_hat^T through m's kernel (X rows may be strided).
inline void multiply(const qtl_matrix& m, const float* x, std::size_t ldx, std::size_t tokens, float* y,
                     std::size_t ldy, int threads) {
  constexpr std::string_view kWhere = "qtl_gemm";
  if (threads < 1) fail(kWhere, ": threads must be >= 1, got ", threads);
  if (ldx < static_cast<std::size_t>(m.cols)) fail(kWhere, ": ldx ", ldx, " is below cols ", m.cols);
  if (ldy < static_cast<std::size_t>(m.rows)) fail(kWhere, ": ldy ", ldy, " is below rows ", m.rows);
  for (std::size_t t = 0; t < tokens; ++t) {
    for (Index c = 0; c < m.cols; ++c) {
      const float v = x[t * ldx + static_cast<std::size_t>(c)];
      if (!std::isfinite(v)) fail(kWhere, ": x(", t, ", ", c, ") is ", v);
    }
  }
  if (tokens == 0) return;
  const auto n = static_cast<Index>(tokens);
  // The AWQ input scales (or a contiguous copy for the dense ggml product).
  RowMatrixXf scaled;
  const float* xin = x;
  Index ld = static_cast<Index>(ldx);
  if (m.input_scale.size() > 0 || m.ggml) {
    scaled.resize(n, m.cols);
    for (Index t = 0; t < n; ++t) {
      const auto row = Eigen::Map<const Eigen::RowVectorXf>(x + t * ld, m.cols);
      if (m.input_scale.size() > 0) {
        scaled.row(t) = row.array() / m.input_scale.transpose().array();
      } else {
        scaled.row(t) = row;
      }
    }
    xin = scaled.data();
    ld = m.cols;
  }
  const auto ly = static_cast<Index>(ldy);
  if (m.uniform_kernel) {
    m.uniform_kernel->gemm(xin, ld, n, y, ly, threads);
  } else if (m.lut_kernel) {
    m.lut_kernel->gemm(xin, ld, n, y, ly, threads);
  } else if (m.table_kernel) {
    m.table_kernel->gemm(xin, ld, n, y, ly, threads);
  } else {
    const RowMatrixXf out = scaled * m.ggml->weight().transpose();
    for (Index t = 0; t < n; ++t) std::memcpy(y + t * ly, out.row(t).data(), static_cast<std::size_t>(m.rows) * sizeof(float));
  }
}

[[nodiscard]] inline double stored_bits_per_weight(const qtl_matrix& m) {
  double bits = m.uniform  ? m.uniform->storage_bits_per_weight()
                : m.table  ? m.table->storage_bits_per_weight()
                           : m.ggml->bits_per_weight();
  if (m.input_scale.size() > 0) bits += 32.0 / static_cast<double>(m.rows);
  return bits;
}

}  // namespace qtl::c_api


