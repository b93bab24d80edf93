// qtl/quant/ggml_types.hpp — ggml's tensor types as GGUF files number them: block size,
// bytes per block and name, for the types qtl reads and writes.
//
// The numeric values are ggml's `enum ggml_type` (ggml/include/ggml.h), which GGUF stores in
// each tensor info; they never change once published. A type is "known" to qtl when it has a
// row in kGgmlTypes; GGUF files with other types are reported by number and never misread.
//
// Plain data only (no Eigen): both the file reader and per-type block code include it.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string_view>

namespace qtl::ggml {

enum class Type : std::uint32_t {
  F32 = 0,
  F16 = 1,
  Q4_0 = 2,
  Q4_1 = 3,
  Q5_0 = 6,
  Q5_1 = 7,
  Q8_0 = 8,
  Q8_1 = 9,
  Q2_K = 10,
  Q3_K = 11,
  Q4_K = 12,
  Q5_K = 13,
  Q6_K = 14,
  Q8_K = 15,
  IQ4_NL = 20,
  I8 = 24,
  I16 = 25,
  I32 = 26,
  I64 = 27,
  F64 = 28,
  BF16 = 30,
  TQ1_0 = 34,
  TQ2_0 = 35,
};

struct TypeInfo {
  Type type;
  std::string_view name;        ///< ggml's type_name ("q4_0"), lower case as ggml prints it
  std::int64_t block_size;      ///< elements per block (1 for plain scalars)
  std::int64_t type_size;       ///< bytes per block
  bool quantized;
};

/// Every type qtl knows, with ggml's block geometry (ggml-common.h: QK4_0 = 32, QK_K = 256, ...).
inline constexpr std::array<TypeInfo, 23> kGgmlTypes{{
    {Type::F32, "f32", 1, 4, false},
    {Type::F16, "f16", 1, 2, false},
    {Type::Q4_0, "q4_0", 32, 2 + 16, true},
    {Type::Q4_1, "q4_1", 32, 2 + 2 + 16, true},
    {Type::Q5_0, "q5_0", 32, 2 + 4 + 16, true},
    {Type::Q5_1, "q5_1", 32, 2 + 2 + 4 + 16, true},
    {Type::Q8_0, "q8_0", 32, 2 + 32, true},
    {Type::Q8_1, "q8_1", 32, 4 + 32, true},
    {Type::Q2_K, "q2_K", 256, 256 / 16 + 256 / 4 + 2 + 2, true},
    {Type::Q3_K, "q3_K", 256, 256 / 8 + 256 / 4 + 12 + 2, true},
    {Type::Q4_K, "q4_K", 256, 2 + 2 + 12 + 256 / 2, true},
    {Type::Q5_K, "q5_K", 256, 2 + 2 + 12 + 256 / 8 + 256 / 2, true},
    {Type::Q6_K, "q6_K", 256, 256 / 2 + 256 / 4 + 256 / 16 + 2, true},
    {Type::Q8_K, "q8_K", 256, 4 + 256 + 2 * 256 / 16, true},
    {Type::IQ4_NL, "iq4_nl", 32, 2 + 16, true},
    {Type::I8, "i8", 1, 1, false},
    {Type::I16, "i16", 1, 2, false},
    {Type::I32, "i32", 1, 4, false},
    {Type::I64, "i64", 1, 8, false},
    {Type::F64, "f64", 1, 8, false},
    {Type::BF16, "bf16", 1, 2, false},
    {Type::TQ1_0, "tq1_0", 256, (256 - 4 * 256 / 64) / 5 + 256 / 64 + 2, true},
    {Type::TQ2_0, "tq2_0", 256, 2 + 256 / 4, true},
}};

/// The row of `t` in kGgmlTypes, or nullopt for a type number qtl does not know.
[[nodiscard]] constexpr std::optional<TypeInfo> type_info(std::uint32_t t) noexcept {
  for (const auto& i : kGgmlTypes) {
    if (static_cast<std::uint32_t>(i.type) == t) return i;
  }
  return std::nullopt;
}

[[nodiscard]] constexpr TypeInfo type_info(Type t) noexcept {
  for (const auto& i : kGgmlTypes) {
    if (i.type == t) return i;
  }
  return kGgmlTypes[0];  // unreachable: every enumerator has a row (checked below)
}

static_assert(type_info(Type::Q2_K).type_size == 84 && type_info(Type::Q3_K).type_size == 110 &&
                  type_info(Type::Q4_K).type_size == 144 && type_info(Type::Q5_K).type_size == 176 &&
                  type_info(Type::Q6_K).type_size == 210 && type_info(Type::Q8_K).type_size == 292 &&
                  type_info(Type::TQ1_0).type_size == 54 && type_info(Type::TQ2_0).type_size == 66,
              "ggml block sizes (ggml-common.h static_asserts)");

[[nodiscard]] constexpr std::string_view type_name(Type t) noexcept { return type_info(t).name; }

/// Bits per weight of a type's blocks (its scales included).
[[nodiscard]] constexpr double type_bits_per_weight(Type t) noexcept {
  const TypeInfo i = type_info(t);
  return 8.0 * static_cast<double>(i.type_size) / static_cast<double>(i.block_size);
}

}  // namespace qtl::ggml
