// qtl/model/ggml_presets.hpp — llama-quantize's file types (Q4_0, Q4_K_M, ...) as per-tensor
// type plans, with the same choices llama-quantize makes for a llama-architecture model.
//
// The rules reproduce llama.cpp's llama_tensor_get_type (src/llama-quant.cpp, the release that
// node-llama-cpp 3.21.1 ships) for dense llama models, without user overrides:
//   * output.weight, and token_embd.weight when it is also the classifier: Q6_K, or Q8_0 when
//     the file type is Q8_0 or the row length does not fit the file type's block;
//   * token_embd.weight otherwise: the file type's type (Q4_K for TQ1_0 / TQ2_0);
//   * attn_v, attn_output, ffn_down: the K-quant mixes' extra bits (use_more_bits layers, the
//     first layers, n_gqa >= 4), and Q4_0 / Q5_0 with an imatrix give ffn_down of the first
//     n_layer/8 layers Q4_1 / Q5_1;
//   * then the fallback for rows that do not fit the type's block: Q2_K, Q3_K, TQ1_0, TQ2_0 ->
//     Q4_0; Q4_K -> Q5_0; Q5_K -> Q5_1; Q6_K -> Q8_0; a 32-block type keeps its type; and F16
//     when even the fallback does not fit (stories260K's 172-wide ffn_down).
// Norms (1-D tensors) stay F32.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "qtl/core/error.hpp"
#include "qtl/quant/ggml_types.hpp"

namespace qtl::model {

/// A llama-quantize file type: its name, llama.cpp's llama_ftype number (general.file_type) and
/// its base tensor type.
struct GgmlPreset {
  std::string_view name;
  int ftype;
  ggml::Type base;
};

inline constexpr std::array<GgmlPreset, 20> kGgmlPresets{{
    {"F32", 0, ggml::Type::F32},         {"F16", 1, ggml::Type::F16},       {"BF16", 32, ggml::Type::BF16},
    {"Q4_0", 2, ggml::Type::Q4_0},       {"Q4_1", 3, ggml::Type::Q4_1},     {"Q8_0", 7, ggml::Type::Q8_0},
    {"Q5_0", 8, ggml::Type::Q5_0},       {"Q5_1", 9, ggml::Type::Q5_1},     {"Q2_K", 10, ggml::Type::Q2_K},
    {"Q3_K_S", 11, ggml::Type::Q3_K},    {"Q3_K_M", 12, ggml::Type::Q3_K},  {"Q3_K_L", 13, ggml::Type::Q3_K},
    {"Q4_K_S", 14, ggml::Type::Q4_K},    {"Q4_K_M", 15, ggml::Type::Q4_K},  {"Q5_K_S", 16, ggml::Type::Q5_K},
    {"Q5_K_M", 17, ggml::Type::Q5_K},    {"Q6_K", 18, ggml::Type::Q6_K},    {"IQ4_NL", 25, ggml::Type::IQ4_NL},
    {"TQ1_0", 36, ggml::Type::TQ1_0},    {"TQ2_0", 37, ggml::Type::TQ2_0},
}};

/// The preset called `name` (case-sensitive, as llama-quantize spells them; "Q4_K" and "Q3_K"
/// mean Q4_K_M and Q3_K_M, "Q5_K" Q5_K_M, as in llama-quantize). Throws qtl::Error listing the
/// known names otherwise.
[[nodiscard]] inline GgmlPreset ggml_preset(std::string_view name) {
  if (name == "Q4_K") name = "Q4_K_M";
  if (name == "Q3_K") name = "Q3_K_M";
  if (name == "Q5_K") name = "Q5_K_M";
  for (const auto& p : kGgmlPresets) {
    if (p.name == name) return p;
  }
  std::string known;
  for (const auto& p : kGgmlPresets) known += str_cat(known.empty() ? "" : ", ", p.name);
  fail("unknown type '", name, "'; known: ", known);
}

/// What llama-quantize's rules need to know of one tensor.
struct GgmlTensorRole {
  enum class Kind { TokenEmbd, Output, AttnQ, AttnK, AttnV, AttnOutput, FfnGate, FfnDown, FfnUp, Other };
  Kind kind = Kind::Other;
  int layer = 0;            ///< block index (for attn_v / ffn_down rules)
  std::int64_t cols = 0;    ///< row length (ggml's ne0)
};

/// The role of a GGUF tensor name ("blk.3.ffn_down.weight", "output.weight", ...).
[[nodiscard]] inline GgmlTensorRole::Kind ggml_tensor_kind(std::string_view gguf_name) {
  using K = GgmlTensorRole::Kind;
  if (gguf_name == "token_embd.weight") return K::TokenEmbd;
  if (gguf_name == "output.weight") return K::Output;
  constexpr std::array<std::pair<std::string_view, K>, 7> kinds = {{{".attn_q.weight", K::AttnQ},
                                                                     {".attn_k.weight", K::AttnK},
                                                                     {".attn_v.weight", K::AttnV},
                                                                     {".attn_output.weight", K::AttnOutput},
                                                                     {".ffn_gate.weight", K::FfnGate},
                                                                     {".ffn_down.weight", K::FfnDown},
                                                                     {".ffn_up.weight", K::FfnUp}}};
  for (const auto& [suffix, k] : kinds) {
    if (gguf_name.size() > suffix.size() && gguf_name.substr(gguf_name.size() - suffix.size()) == suffix) return k;
  }
  return K::Other;
}

/// llama-quantize's type for one 2-D weight of a dense llama model (see the header comment).
/// n_gqa = n_heads / n_kv_heads; `tied`: token_embd is also the classifier (no output.weight).
[[nodiscard]] inline ggml::Type ggml_preset_type(const GgmlPreset& preset, const GgmlTensorRole& t, int n_layers,
                                                 int n_gqa, bool tied, bool has_imatrix) {
  using T = ggml::Type;
  using K = GgmlTensorRole::Kind;
  const ggml::TypeInfo base_info = ggml::type_info(preset.base);
  if (!base_info.quantized) return preset.base;  // F32 / F16 / BF16: every weight
  const std::string_view f = preset.name;
  auto use_more_bits = [&](int i) { return i < n_layers / 8 || i >= 7 * n_layers / 8 || (i - n_layers / 8) % 3 == 2; };
  const int i = t.layer, n = n_layers;
  T type = preset.base;
  if (t.kind == K::Output || (tied && t.kind == K::TokenEmbd)) {
    if (t.cols % base_info.block_size != 0) {
      type = T::Q8_0;
    } else if (type != T::Q8_0) {
      type = T::Q6_K;
    }
  } else if (t.kind == K::TokenEmbd) {
    if (f == "TQ1_0" || f == "TQ2_0") type = T::Q4_K;
  } else if (t.kind == K::AttnV) {
    if (f == "Q2_K") type = n_gqa >= 4 ? T::Q4_K : T::Q3_K;
    else if (f == "Q3_K_M") type = i < 2 ? T::Q5_K : T::Q4_K;
    else if (f == "Q3_K_L") type = T::Q5_K;
    else if (f == "IQ4_NL" && n_gqa >= 4) type = T::Q5_K;
    else if ((f == "Q4_K_M" || f == "Q5_K_M") && use_more_bits(i)) type = T::Q6_K;
    else if (f == "Q4_K_S" && i < 4) type = T::Q5_K;
  } else if (t.kind == K::FfnDown) {
    if (f == "Q2_K") type = T::Q3_K;
    else if (f == "Q3_K_M") type = i < n / 16 ? T::Q5_K : T::Q4_K;
    else if (f == "Q3_K_L") type = T::Q5_K;
    else if (f == "Q4_K_M") { if (use_more_bits(i)) type = T::Q6_K; }
    else if (i < n / 8 && f == "IQ4_NL" && !has_imatrix) type = T::Q5_K;
    else if (f == "Q5_K_M" && use_more_bits(i)) type = T::Q6_K;
    else if (f == "Q4_K_S" && i < n / 8) type = T::Q5_K;
    else if ((f == "Q4_0" || f == "Q5_0") && has_imatrix && i < n / 8) type = f == "Q4_0" ? T::Q4_1 : T::Q5_1;
  } else if (t.kind == K::AttnOutput) {
    if (f == "Q2_K") type = T::Q3_K;
    else if (f == "Q3_K_M") type = T::Q4_K;
    else if (f == "Q3_K_L") type = T::Q5_K;
  }
  // Rows the type's block does not divide: llama-quantize's fallback.
  if (t.cols % ggml::type_info(type).block_size != 0) {
    switch (type) {
      case T::Q2_K:
      case T::Q3_K:
      case T::TQ1_0:
      case T::TQ2_0: type = T::Q4_0; break;
      case T::Q4_K: type = T::Q5_0; break;
      case T::Q5_K: type = T::Q5_1; break;
      case T::Q6_K: type = T::Q8_0; break;
      default: break;  // a 32-block type: nothing smaller to fall back to
    }
    if (t.cols % ggml::type_info(type).block_size != 0) type = T::F16;
  }
  return type;
}

}  // namespace qtl::model
