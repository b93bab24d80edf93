// Models in and out of GGUF: the bundled llama2.c model written by qtl and read back, the
// tokenizer from GGUF metadata, vocabularies without byte fallback, llama-quantize's per-tensor
// type choices, and a model quantized into ggml block types that reads back to the same numbers.
#include "recipe_instances.hpp"  // first: the recipe classes are compiled in qtl_recipe_instances
#include <gtest/gtest.h>
#include <qtl/io/gguf.hpp>
#include <qtl/model/ggml_presets.hpp>
#include <qtl/model/ggml_recipe.hpp>
#include <qtl/model/gguf_model.hpp>
#include <qtl/model/quantize_file.hpp>
#include <qtl/quant/uniform.hpp>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <fstream>
#include <iterator>
#include <limits>
#include <span>
#include <random>
#include <string>
#include <vector>

#include "model/real_model_fixture.hpp"
#include "model/tuned_file_options.hpp"
#include "temp_dir.hpp"
#include "test_util.hpp"

namespace {

namespace m = qtl::model;
using qtl::test::fixture;
using qtl::test::TempDir;

using qtl::test::error_of;

TEST(GgufModel, TensorNamesAreLlamaCpps) {
  EXPECT_EQ(m::gguf_tensor_name("layers.3.w2"), "blk.3.ffn_down.weight");
  EXPECT_EQ(m::gguf_tensor_name("layers.0.wq"), "blk.0.attn_q.weight");
  EXPECT_EQ(m::gguf_tensor_name("layers.4.w1"), "blk.4.ffn_gate.weight");
  EXPECT_EQ(m::gguf_tensor_name("layers.4.w3"), "blk.4.ffn_up.weight");
  EXPECT_EQ(m::gguf_tensor_name("layers.1.attention_norm"), "blk.1.attn_norm.weight");
  EXPECT_EQ(m::gguf_tensor_name("tok_embeddings"), "token_embd.weight");
  EXPECT_EQ(m::gguf_tensor_name("norm"), "output_norm.weight");
  EXPECT_NE(error_of([] { (void)m::gguf_tensor_name("layers.1.wz"); }).find("layers.1.wz"), std::string::npos);
}

TEST(GgufModel, Fp32RoundTripGivesTheSameModelAndTokenizer) {
  const auto& f = fixture();
  TempDir dir;
  m::write_gguf_model(dir.file("m.gguf"), f.fp32, f.tokenizer);
  const qtl::gguf::File file = qtl::gguf::File::open(dir.file("m.gguf"));
  EXPECT_EQ(file.get_string("general.architecture"), "llama");
  EXPECT_EQ(file.get_u32("llama.embedding_length"), 64u);
  EXPECT_EQ(file.get_u32("llama.feed_forward_length"), 172u);
  EXPECT_EQ(file.get_u32("llama.attention.head_count_kv"), 4u);
  EXPECT_EQ(file.get_u32("llama.rope.dimension_count"), 8u);
  EXPECT_FALSE(file.find_tensor("output.weight").has_value());  // tied classifier
  EXPECT_EQ(file.tensor("blk.0.ffn_down.weight").shape[0], 172);  // row length first
  EXPECT_EQ(file.tensor("blk.0.ffn_down.weight").shape[1], 64);

  const m::GgufModel back = m::load_gguf_model(dir.file("m.gguf"));
  EXPECT_TRUE(back.model.config().shared_classifier);
  EXPECT_EQ(back.model.config().seq_len, f.fp32.config().seq_len);
  for (const auto& name : f.fp32.linear_names()) {
    EXPECT_EQ(dynamic_cast<const m::DenseLinear&>(back.model.linear(name)).weight(),
              dynamic_cast<const m::DenseLinear&>(f.fp32.linear(name)).weight())
        << name;
  }
  ASSERT_EQ(back.tokenizer.vocab_size(), f.tokenizer.vocab_size());
  for (int i : {250, 300, 417}) {
    const auto ids = m::encode_story(f.tokenizer, f.stories[static_cast<std::size_t>(i)], 512).ids;
    EXPECT_EQ(m::encode_story(back.tokenizer, f.stories[static_cast<std::size_t>(i)], 512).ids, ids);
    EXPECT_EQ(back.model.forward(ids), f.fp32.forward(ids));  // the same weights, the same arithmetic
  }
  // llama.cpp's token types: <unk> 2, BOS/EOS control 3, bytes 6, pieces normal 1.
  EXPECT_EQ(file.get_array<std::int32_t>("tokenizer.ggml.token_type")[0], 2);
  EXPECT_EQ(file.get_array<std::int32_t>("tokenizer.ggml.token_type")[1], 3);
  EXPECT_EQ(file.get_array<std::int32_t>("tokenizer.ggml.token_type")[3 + 'a'], 6);
  EXPECT_EQ(file.get_array<std::int32_t>("tokenizer.ggml.token_type")[300], 1);
  // Spaces inside pieces are SentencePiece's U+2581, as llama.cpp expects them.
  const auto pieces = file.get_array<std::string>("tokenizer.ggml.tokens");
  const int the = *f.tokenizer.find(" the");
  EXPECT_EQ(pieces[static_cast<std::size_t>(the)], "\xE2\x96\x81the");
}

TEST(GgufModel, F16AndUnsupportedModelsAreReadOrRefused) {
  const auto& f = fixture();
  TempDir dir;
  m::GgufWriteOptions o;
  o.dense_type = [](std::string_view, qtl::Index, qtl::Index) { return qtl::ggml::Type::F16; };
  m::write_gguf_model(dir.file("h.gguf"), f.fp32, f.tokenizer, o);
  const m::GgufModel h = m::load_gguf_model(dir.file("h.gguf"));
  const auto& w = dynamic_cast<const m::DenseLinear&>(h.model.linear("layers.2.w2")).weight();
  const auto& w0 = dynamic_cast<const m::DenseLinear&>(f.fp32.linear("layers.2.w2")).weight();
  EXPECT_LE((w - w0).cwiseAbs().maxCoeff(), 1e-3f * w0.cwiseAbs().maxCoeff());
  EXPECT_NE(w, w0);  // really rounded to fp16

  // A file that is not a llama model, or one llama.cpp features qtl does not implement.
  auto rewrite_with = [&](const std::string& key, qtl::gguf::Value v) {
    const qtl::gguf::File src = qtl::gguf::File::open(dir.file("h.gguf"));
    qtl::gguf::Writer out(dir.file("x.gguf"));
    for (const auto& kv : src.metadata()) out.set(kv.key, kv.value);
    out.set(key, std::move(v));
    for (const auto& t : src.tensors()) out.add_tensor(t.name, t.type, t.shape);
    for (const auto& t : src.tensors()) out.write_tensor(t.name, src.view(t).bytes);
    out.finish();
    return error_of([&] { (void)m::load_gguf_model(dir.file("x.gguf")); });
  };
  EXPECT_NE(rewrite_with("general.architecture", std::string("gpt2")).find("gpt2"), std::string::npos);
  EXPECT_NE(rewrite_with("llama.rope.dimension_count", std::uint32_t{4}).find("partial"), std::string::npos);
  EXPECT_NE(rewrite_with("llama.feed_forward_length", std::uint32_t{100}).find("blk.0.ffn_gate.weight"), std::string::npos);
  EXPECT_NE(rewrite_with("tokenizer.ggml.model", std::string("gpt2")).find("gpt2"), std::string::npos);
  EXPECT_NE(rewrite_with("tokenizer.ggml.bos_token_id", std::uint32_t{9999}).find("9999"), std::string::npos);
}

// A SentencePiece vocabulary trained without byte fallback (like the 105-token ones small
// models use): characters without a piece become <unk>, or, without <unk>, an error naming
// the character and where it is.
TEST(Tokenizer, VocabularyWithoutByteFallback) {
  std::vector<std::string> pieces = {"<unk>", "<s>", "</s>", " ", "a", "b", "c", " a", "ab"};
  std::vector<float> scores = {0, 0, 0, -1, -2, -2, -2, -0.5f, -0.25f};
  const m::Tokenizer t = m::Tokenizer::from_pieces(pieces, scores, {}, 0, 1, 2, "tiny");
  EXPECT_FALSE(t.byte_fallback());
  EXPECT_EQ(t.vocab_size(), 9);
  EXPECT_EQ(t.encode("ab c"), std::vector<int>({1, 3, 8, 3, 6}));  // "ab" outscores " a"
  EXPECT_EQ(t.encode("a\xC3\xA9"), std::vector<int>({1, 7, 0}));  // é has no piece: <unk>
  EXPECT_EQ(t.decode(t.encode("ab c")), "ab c");
  EXPECT_EQ(t.token_type(0), m::Tokenizer::TokenType::Unknown);
  EXPECT_EQ(t.token_type(1), m::Tokenizer::TokenType::Control);

  const m::Tokenizer no_unk = m::Tokenizer::from_pieces(pieces, scores, {}, -1, 1, 2, "tiny");
  const std::string msg = error_of([&] { (void)no_unk.encode("ab\xC3\xA9"); });
  EXPECT_NE(msg.find("\xC3\xA9"), std::string::npos) << msg;
  EXPECT_NE(msg.find("0xC3 0xA9"), std::string::npos) << msg;
  EXPECT_NE(msg.find("at byte 2"), std::string::npos) << msg;

  EXPECT_NE(error_of([&] { (void)m::Tokenizer::from_pieces(pieces, {1.0f}, {}, 0, 1, 2, "x"); }).find("scores"),
            std::string::npos);
  EXPECT_NE(error_of([&] { (void)m::Tokenizer::from_pieces(pieces, scores, {}, 0, 1, 42, "x"); }).find("EOS id 42"),
            std::string::npos);
  std::vector<std::int32_t> bad_types(pieces.size(), 1);
  bad_types[4] = 6;  // "a" typed as a byte token
  EXPECT_NE(error_of([&] { (void)m::Tokenizer::from_pieces(pieces, scores, bad_types, 0, 1, 2, "x"); }).find("<0xNN>"),
            std::string::npos);
}

// llama-quantize's choices on stories260K's shapes (rows of 64 and 172 values; 5 layers; 8
// heads over 4 kv heads), as its own output files record them (see README).
TEST(GgmlPresets, LlamaQuantizeTypesForStories260K) {
  using T = qtl::ggml::Type;
  using K = m::GgmlTensorRole::Kind;
  auto type = [](std::string_view preset, K kind, int layer, std::int64_t cols, bool tied = false, bool imatrix = false) {
    return m::ggml_preset_type(m::ggml_preset(preset), {kind, layer, cols}, 5, 2, tied, imatrix);
  };
  for (auto p : {"Q4_0", "Q4_1", "Q5_0", "Q5_1", "IQ4_NL"}) {
    const T base = m::ggml_preset(p).base;
    EXPECT_EQ(type(p, K::AttnQ, 0, 64), base) << p;
    EXPECT_EQ(type(p, K::FfnGate, 3, 64), base) << p;
    EXPECT_EQ(type(p, K::TokenEmbd, 0, 64), base) << p;
    EXPECT_EQ(type(p, K::FfnDown, 0, 172), T::F16) << p;  // no 32-block divides 172
    EXPECT_EQ(type(p, K::Output, 0, 64), T::Q8_0) << p;   // Q6_K, whose 256-blocks fall back
    EXPECT_EQ(type(p, K::TokenEmbd, 0, 64, /*tied=*/true), T::Q8_0) << p;
  }
  EXPECT_EQ(type("Q8_0", K::Output, 0, 64), T::Q8_0);
  EXPECT_EQ(type("Q4_K_M", K::AttnQ, 0, 64), T::Q5_0);   // Q4_K falls back to Q5_0
  EXPECT_EQ(type("Q4_K_M", K::AttnV, 2, 64), T::Q8_0);   // use_more_bits: Q6_K -> Q8_0
  EXPECT_EQ(type("Q4_K_M", K::AttnV, 4, 64), T::Q8_0);
  EXPECT_EQ(type("Q4_K_M", K::AttnV, 0, 64), T::Q5_0);
  EXPECT_EQ(type("Q2_K", K::AttnQ, 0, 64), T::Q4_0);
  EXPECT_EQ(type("Q3_K_M", K::AttnOutput, 2, 64), T::Q5_0);  // Q4_K
  EXPECT_EQ(type("F16", K::AttnQ, 0, 64), T::F16);
  EXPECT_EQ(type("Q4_K_M", K::AttnQ, 0, 256), T::Q4_K);
  EXPECT_NE(error_of([] { (void)m::ggml_preset("Q7_0"); }).find("Q4_K_M"), std::string::npos);
}

// RTN and GPTQ into Q4_0 through the driver: the model qtl evaluates is the file it writes.
TEST(GgmlRecipe, QuantizedModelWritesAndReadsBackExactly) {
  const auto& f = fixture();
  const m::GgmlTypePlan plan = [](const std::string&, qtl::Index, qtl::Index cols) {
    return cols % 32 == 0 ? qtl::ggml::Type::Q4_0 : qtl::ggml::Type::F16;
  };
  const m::GgmlRecipe rtn("rtn", plan, qtl::calib::RtnOptions{}),
      gq("gptq", plan, qtl::calib::Pipeline{.solver = qtl::calib::gptq_clip_options()});
  EXPECT_FALSE(rtn.needs_calibration());
  const auto calib = f.calibration(0, 8);
  const auto eval = f.eval_slice(250, 8);
  TempDir dir;
  double ppl[2] = {0, 0};
  int k = 0;
  for (const m::Recipe* r : {static_cast<const m::Recipe*>(&rtn), static_cast<const m::Recipe*>(&gq)}) {
    const m::Transformer q = m::quantize_sequential(f.fp32, calib, *r);
    EXPECT_NE(q.linear("layers.0.wq").describe().find("q4_0"), std::string::npos);
    EXPECT_NE(dynamic_cast<const m::DenseLinear*>(&q.linear("layers.0.w2")), nullptr);  // F16 fallback
    m::write_gguf_model(dir.file("q.gguf"), q, f.tokenizer);
    const m::GgufModel back = m::load_gguf_model(dir.file("q.gguf"));
    EXPECT_EQ(qtl::gguf::File::open(dir.file("q.gguf")).tensor("blk.1.attn_k.weight").type, qtl::ggml::Type::Q4_0);
    const auto ids = m::encode_story(f.tokenizer, f.stories[260], 512).ids;
    EXPECT_EQ(back.model.forward(ids), q.forward(ids));  // the file decodes to the weights qtl ran
    ppl[k++] = m::perplexity(q, f.tokenizer, eval).perplexity;
  }
  EXPECT_LT(ppl[1], ppl[0]);  // GPTQ into the same blocks beats round-to-nearest
  const double fp32 = m::perplexity(f.fp32, f.tokenizer, eval).perplexity;
  EXPECT_GT(ppl[0], fp32);
}

TEST(GgufModel, Q4_0AndQ8_0GoOntoQtlKernelsWithTheSameWeights) {
  // ggml_linear_on_kernel re-encodes the blocks exactly: multiplying the identity with fp32
  // activations (s (c - z) per weight, nothing rounded) returns ggml's decode bit for bit.
  const qtl::RowMatrixXf w = qtl::RowMatrixXf::Random(40, 96);
  const qtl::RowMatrixXf eye = qtl::RowMatrixXf::Identity(96, 96);
  for (const qtl::ggml::Type type : {qtl::ggml::Type::Q4_0, qtl::ggml::Type::Q5_0, qtl::ggml::Type::Q8_0}) {
    const m::GgmlLinear g(type, 40, 96, m::ggml_quantize_reference(type, w));
    const auto op = m::ggml_linear_on_kernel(g);
    ASSERT_NE(op, nullptr) << qtl::ggml::type_name(type);
    EXPECT_NE(dynamic_cast<const m::PackedLinear<qtl::kernel::UniformKernelMatrix>*>(op.get()), nullptr);
    EXPECT_EQ(op->forward(eye), g.weight().transpose()) << qtl::ggml::type_name(type);
  }
  // Types whose layout the packed format cannot hold exactly stay as they are.
  EXPECT_EQ(m::ggml_linear_on_kernel(m::GgmlLinear(qtl::ggml::Type::Q4_1, 40, 96,
                                                   m::ggml_quantize_reference(qtl::ggml::Type::Q4_1, w))),
            nullptr);

  // A file of Q4_0 linears (F16 where 172-wide rows fit no block) and a Q8_0 token embedding,
  // which the classifier shares: loaded onto the kernels, the model runs the file's weights.
  const auto& f = fixture();
  const m::GgmlTypePlan plan = [](const std::string&, qtl::Index, qtl::Index cols) {
    return cols % 32 == 0 ? qtl::ggml::Type::Q4_0 : qtl::ggml::Type::F16;
  };
  const m::Transformer q = m::quantize_sequential(f.fp32, {}, m::GgmlRecipe("rtn", plan, qtl::calib::RtnOptions{}));
  TempDir dir;
  m::GgufWriteOptions wo;
  wo.dense_type = [](std::string_view name, qtl::Index, qtl::Index) {
    return name == "token_embd.weight" ? qtl::ggml::Type::Q8_0 : qtl::ggml::Type::F16;
  };
  m::write_gguf_model(dir.file("q.gguf"), q, f.tokenizer, wo);
  const m::Transformer decoded = m::load_gguf_model(dir.file("q.gguf")).model;
  EXPECT_EQ(decoded.classifier_op(), nullptr);
  const auto ids = m::encode_story(f.tokenizer, f.stories[260], 64).ids;
  const qtl::RowMatrixXf ref = decoded.forward(ids);
  const double scale = ref.cwiseAbs().maxCoeff();
  for (const auto act : {qtl::kernel::ActivationMode::Fp32, qtl::kernel::ActivationMode::Int8}) {
    const m::Transformer k =
        m::load_gguf_model(dir.file("q.gguf"), {.qtl_kernels = true, .kernel = {.activations = act}}).model;
    EXPECT_NE(dynamic_cast<const m::PackedLinear<qtl::kernel::UniformKernelMatrix>*>(&k.linear("layers.1.wk")), nullptr);
    EXPECT_NE(dynamic_cast<const m::DenseLinear*>(&k.linear("layers.1.w2")), nullptr);  // F16 stays fp32
    ASSERT_NE(k.classifier_op(), nullptr);
    EXPECT_NE(k.classifier_op()->describe().find("512x64"), std::string::npos) << k.classifier_op()->describe();
    const double d = (k.forward(ids) - ref).cwiseAbs().maxCoeff() / scale;
    // Same weights: fp32 activations differ by summation order only; int8 activations by their
    // rounding (2^-8 of each block's largest value), far less than Q4_0's own change.
    EXPECT_LT(d, act == qtl::kernel::ActivationMode::Fp32 ? 1e-5 : 2e-2);
    if (act == qtl::kernel::ActivationMode::Int8) {
      EXPECT_GT(d, 1e-6);  // the activations were rounded
    }
  }
  const std::string msg = error_of([&] {
    (void)m::load_gguf_model(dir.file("q.gguf"), {.qtl_kernels = true, .kernel = {.threads = 0}});
  });
  EXPECT_NE(msg.find("threads must be >= 1, got 0"), std::string::npos) << msg;
}

TEST(GgufModel, OtherQuantizedTypesGoOntoTheKernelsRoundedOnceMore) {
  // A Q6_K tensor (llama-quantize's classifier type) has no exact form in the packed format;
  // ggml_linear_requantized rounds its decoded weights once more. At 6 bits the second rounding
  // costs about as much as Q6_K's own error (squared: 2.06x Q6_K's alone in total here; group
  // 32's one scale is coarser than Q6_K's 16-wide sub-blocks); at 8 bits it adds a fraction.
  std::mt19937 rng(7);
  std::normal_distribution<float> normal;
  qtl::RowMatrixXf w(48, 512);
  for (qtl::Index i = 0; i < w.size(); ++i) w.data()[i] = normal(rng);
  const m::GgmlLinear q6k(qtl::ggml::Type::Q6_K, 48, 512, m::ggml_quantize_reference(qtl::ggml::Type::Q6_K, w));
  EXPECT_EQ(m::ggml_linear_on_kernel(q6k), nullptr);
  const qtl::RowMatrixXf eye = qtl::RowMatrixXf::Identity(512, 512);
  const double own = (q6k.weight() - w).squaredNorm();
  double added[2] = {0, 0};
  int k = 0;
  for (const int bits : {6, 8}) {
    const auto op = m::ggml_linear_requantized(q6k.weight(), bits);
    const auto* packed = dynamic_cast<const m::PackedLinear<qtl::kernel::UniformKernelMatrix>*>(op.get());
    ASSERT_NE(packed, nullptr);
    EXPECT_NEAR(packed->bits_per_weight(), bits + 0.5, 1e-9) << bits;  // codes + an fp16 scale per 32
    const qtl::RowMatrixXf back = op->forward(eye).transpose();
    added[k++] = (back - q6k.weight()).squaredNorm();
    const double total = (back - w).squaredNorm();
    EXPECT_GT(total, own) << bits;
    EXPECT_LT(total, 2.5 * own) << bits;
  }
  EXPECT_GT(added[0], 0.3 * own);  // 6 bits: a second rounding of about Q6_K's own size
  EXPECT_LT(added[1], 0.15 * own);  // 8 bits: 1/16 of it, give or take the grids
  EXPECT_NE(error_of([&] { (void)m::ggml_linear_requantized(w, 7); }).find("got 7"), std::string::npos);
  qtl::RowMatrixXf bad = q6k.weight();
  bad(3, 5) = std::numeric_limits<float>::quiet_NaN();
  for (const int bits : {4, 8}) {  // refused, the weight named, at any width
    const std::string nan_msg = error_of([&] { (void)m::ggml_linear_requantized(bad, bits); });
    EXPECT_NE(nan_msg.find("must be finite, got nan at (3, 5)"), std::string::npos) << nan_msg;
  }

  // In a file: Q4_1 linears (32-blocks whose offsets are no multiple of the scale) stay fp32
  // products unless requantize_bits is set, then run on the 8-bit kernel close to the decoded
  // weights; F16 tensors stay fp32 either way.
  const auto& f = fixture();
  const m::GgmlTypePlan plan = [](const std::string&, qtl::Index, qtl::Index cols) {
    return cols % 32 == 0 ? qtl::ggml::Type::Q4_1 : qtl::ggml::Type::F16;
  };
  const m::Transformer q = m::quantize_sequential(f.fp32, {}, m::GgmlRecipe("rtn", plan, qtl::calib::RtnOptions{}));
  TempDir dir;
  m::write_gguf_model(dir.file("q41.gguf"), q, f.tokenizer);
  const auto ids = m::encode_story(f.tokenizer, f.stories[262], 64).ids;
  const qtl::RowMatrixXf ref = m::load_gguf_model(dir.file("q41.gguf")).model.forward(ids);
  const m::Transformer plain = m::load_gguf_model(dir.file("q41.gguf"), {.qtl_kernels = true}).model;
  EXPECT_NE(dynamic_cast<const m::DenseLinear*>(&plain.linear("layers.1.wk")), nullptr);
  const m::Transformer re8 = m::load_gguf_model(dir.file("q41.gguf"), {.qtl_kernels = true, .requantize_bits = 8}).model;
  const auto* wk = dynamic_cast<const m::PackedLinear<qtl::kernel::UniformKernelMatrix>*>(&re8.linear("layers.1.wk"));
  ASSERT_NE(wk, nullptr);
  EXPECT_NE(wk->describe().find("uniform8"), std::string::npos) << wk->describe();
  EXPECT_NE(dynamic_cast<const m::DenseLinear*>(&re8.linear("layers.1.w2")), nullptr);  // F16
  const double d = (re8.forward(ids) - ref).cwiseAbs().maxCoeff() / ref.cwiseAbs().maxCoeff();
  EXPECT_GT(d, 1e-6);
  EXPECT_LT(d, 3e-2);
  const std::string msg = error_of([&] {
    (void)m::load_gguf_model(dir.file("q41.gguf"), {.qtl_kernels = true, .requantize_bits = 3});
  });
  EXPECT_NE(msg.find("requantize_bits must be 0 (off), 4, 5, 6 or 8, got 3"), std::string::npos) << msg;

  // A block scale of that file turned NaN (a corrupt or badly written file): refused with the
  // tensor's name, whether its weights would stay fp32 or be rounded onto the kernels.
  std::ifstream in(dir.file("q41.gguf"), std::ios::binary);
  std::vector<char> raw((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  in.close();
  const auto parsed = qtl::gguf::File::from_memory(std::as_bytes(std::span<const char>(raw)));
  const auto t = parsed.tensor("blk.1.attn_k.weight");
  ASSERT_EQ(t.type, qtl::ggml::Type::Q4_1);
  const auto at = static_cast<std::size_t>(reinterpret_cast<const char*>(t.bytes.data()) - raw.data()) + 20 * 7;
  const std::uint16_t nan_half = 0x7E00;  // block 7's fp16 scale d
  std::memcpy(raw.data() + at, &nan_half, sizeof(nan_half));
  std::ofstream(dir.file("nan.gguf"), std::ios::binary).write(raw.data(), static_cast<std::streamsize>(raw.size()));
  for (const int bits : {0, 8}) {
    const std::string nan_msg = error_of([&] {
      (void)m::load_gguf_model(dir.file("nan.gguf"), {.qtl_kernels = true, .requantize_bits = bits});
    });
    EXPECT_NE(nan_msg.find("tensor 'blk.1.attn_k.weight' holds NaN or Inf"), std::string::npos) << bits << nan_msg;
  }
}

TEST(GgufModel, AClassifierOpIsWhatTheFileHolds) {
  // A ggml-block classifier op is written as its bytes (untying the shared classifier), so the
  // file computes what the model computed; an op a GGUF cannot hold is refused by name.
  const auto& f = fixture();
  m::Transformer model = f.fp32;
  ASSERT_TRUE(model.config().shared_classifier);
  auto bytes = m::ggml_quantize_reference(qtl::ggml::Type::Q8_0, model.classifier());
  model.set_classifier_op(std::make_unique<m::GgmlLinear>(qtl::ggml::Type::Q8_0, 512, 64, bytes));
  TempDir dir;
  m::write_gguf_model(dir.file("c.gguf"), model, f.tokenizer);
  const qtl::gguf::File file = qtl::gguf::File::open(dir.file("c.gguf"));
  const qtl::gguf::TensorView out = file.tensor("output.weight");
  EXPECT_EQ(out.type, qtl::ggml::Type::Q8_0);
  EXPECT_TRUE(std::equal(out.bytes.begin(), out.bytes.end(), bytes.begin(), bytes.end()));
  const m::GgufModel back = m::load_gguf_model(dir.file("c.gguf"));
  EXPECT_FALSE(back.model.config().shared_classifier);
  const auto ids = m::encode_story(f.tokenizer, f.stories[261], 32).ids;
  EXPECT_EQ(back.model.forward(ids), model.forward(ids));

  model.set_classifier_op(m::make_packed_linear(qtl::quantize_matrix(qtl::Uniform<4>{}, qtl::PerGroup{32}, model.classifier())));
  const std::string msg = error_of([&] { m::write_gguf_model(dir.file("d.gguf"), model, f.tokenizer); });
  EXPECT_NE(msg.find("'classifier'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("cannot hold"), std::string::npos) << msg;
}

/// Mean KL(fp32 ‖ model) per token over the sequences.
double mean_kl_to_fp32(const m::Transformer& model, const std::vector<std::vector<int>>& seqs) {
  auto log_softmax = [](qtl::RowMatrixXf z) {
    for (qtl::Index t = 0; t < z.rows(); ++t) {
      const float zmax = z.row(t).maxCoeff();
      z.row(t).array() -= zmax + std::log((z.row(t).array() - zmax).exp().sum());
    }
    return z;
  };
  double sum = 0.0;
  qtl::Index tokens = 0;
  for (const auto& s : seqs) {
    const qtl::RowMatrixXf lp = log_softmax(fixture().fp32.forward(s)), lq = log_softmax(model.forward(s));
    sum += static_cast<double>((lp.array().exp() * (lp - lq).array()).sum());
    tokens += lp.rows();
  }
  return sum / static_cast<double>(tokens);
}

TEST(GgufModel, QuantizeFileWithTunedNormsChangesOnlyTheGains) {
  TempDir dir;
  m::QuantizeFileOptions o = qtl::test::q4_0_file_options(dir.file("plain.gguf"));
  const auto plain = m::quantize_model_file(o);
  EXPECT_FALSE(plain.finetune.has_value());
  o.output = dir.file("tuned.gguf");
  qtl::test::brief_finetune(o);
  const auto tuned = m::quantize_model_file(o);
  ASSERT_TRUE(tuned.finetune.has_value());
  EXPECT_LT(tuned.finetune->final_kl, tuned.finetune->start_kl);
  EXPECT_EQ(tuned.tensor_bytes, plain.tensor_bytes);
  EXPECT_EQ(std::filesystem::file_size(dir.file("tuned.gguf")), std::filesystem::file_size(dir.file("plain.gguf")));
  // Only the norm tensors differ, every one of them stays F32; nothing is left beside the file.
  const auto a = qtl::gguf::File::open(dir.file("plain.gguf")), b = qtl::gguf::File::open(dir.file("tuned.gguf"));
  ASSERT_EQ(a.tensors().size(), b.tensors().size());
  int changed = 0;
  for (const auto& t : a.tensors()) {
    const auto va = a.view(t), vb = b.tensor(t.name);
    ASSERT_EQ(va.bytes.size(), vb.bytes.size()) << t.name;
    const bool same = std::memcmp(va.bytes.data(), vb.bytes.data(), va.bytes.size()) == 0;
    const bool norm = t.name.find("norm") != std::string::npos;
    if (norm) {
      EXPECT_EQ(t.type, qtl::ggml::Type::F32) << t.name;
    } else {
      EXPECT_TRUE(same) << t.name;
    }
    changed += same ? 0 : 1;
  }
  EXPECT_GE(changed, 6);
  EXPECT_EQ(std::distance(std::filesystem::directory_iterator(dir.file("")), std::filesystem::directory_iterator()), 2);
  // The tuned file is closer to the fp32 model on stories it never saw.
  auto held_out = fixture().calibration(300, 4);
  for (auto& ids : held_out) ids.resize(std::min<std::size_t>(ids.size(), 128));
  const double kl_plain = mean_kl_to_fp32(m::load_gguf_model(dir.file("plain.gguf")).model, held_out);
  const double kl_tuned = mean_kl_to_fp32(m::load_gguf_model(dir.file("tuned.gguf")).model, held_out);
  EXPECT_LT(kl_tuned, kl_plain);
  // Tuning needs text even for a recipe that does not calibrate.
  o.calibration_text.clear();
  o.output = dir.file("none.gguf");
  EXPECT_NE(error_of([&] { (void)m::quantize_model_file(o); }).find("tuning the norm gains calibrates on text"),
            std::string::npos);
  EXPECT_FALSE(std::filesystem::exists(dir.file("none.gguf")));
}

TEST(GgufModel, LayersAGgufCannotHoldAreRefusedAndNothingIsWritten) {
  // A layer quantized to qtl's own packed format (not a ggml block type) has no GGUF tensor
  // type: write_gguf_model names it, and the file already at the path is left as it was.
  const auto& f = fixture();
  m::Transformer q = f.fp32;
  const auto& w = dynamic_cast<const m::DenseLinear&>(q.linear("layers.1.wo")).weight();
  q.set_linear("layers.1.wo", m::make_packed_linear(qtl::quantize_matrix(qtl::Uniform<4>{}, qtl::PerGroup{32}, w)));
  TempDir dir;
  const auto path = dir.file("model.gguf");
  { std::ofstream(path) << "previous contents"; }
  try {
    m::write_gguf_model(path, q, f.tokenizer);
    ADD_FAILURE() << "no error";
  } catch (const qtl::Error& e) {
    EXPECT_NE(std::string(e.what()).find("layers.1.wo"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("cannot hold"), std::string::npos) << e.what();
  }
  std::ifstream in(path);
  EXPECT_EQ(std::string(std::istreambuf_iterator<char>(in), {}), "previous contents");
}

TEST(GgmlRecipe, RowsTheTypeCannotHoldAreAnErrorNamingTheLayer) {
  // A plan that gives q4_0 (blocks of 32) to the 172-wide w2 rows instead of a fallback type.
  const auto& f = fixture();
  const m::GgmlTypePlan plan = [](const std::string&, qtl::Index, qtl::Index) { return qtl::ggml::Type::Q4_0; };
  const m::GgmlRecipe rtn("rtn", plan, qtl::calib::RtnOptions{});
  try {
    (void)m::quantize_sequential(f.fp32, f.calibration(0, 1), rtn);
    ADD_FAILURE() << "no error";
  } catch (const qtl::Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find(".w2"), std::string::npos) << msg;
    EXPECT_NE(msg.find("172"), std::string::npos) << msg;
    EXPECT_NE(msg.find("fallback"), std::string::npos) << msg;
  }
}

TEST(GgmlRecipe, KQuantsTakeRtnOrGptqAndSaySoForOtherSolvers) {
  // A k-quant's codes come from its super-block grid search, then GPTQ on that grid; a pipeline
  // whose solver is SignRound (or HQQ) has no k-quant form and is named, not silently replaced.
  // (stories260K has no 256-wide rows: one synthetic layer.)
  const m::GgmlTypePlan plan = [](const std::string&, qtl::Index, qtl::Index) { return qtl::ggml::Type::Q4_K; };
  const qtl::RowMatrixXf w = qtl::test::gaussian(8, 256, 41, 0.05f);
  const qtl::RowMatrixXf x = qtl::test::gaussian(300, 256, 42);
  qtl::calib::HessianAccumulator acc(256);
  acc.add_batch(x);
  const m::LayerCalibration layer{.name = "layers.0.w1", .weight = &w, .stats = &acc, .input_sample = &x};
  const m::GgmlRecipe sr("signround", plan, qtl::calib::Pipeline{.solver = qtl::calib::SignRoundOptions{}});
  EXPECT_TRUE(sr.needs_calibration());
  const std::string msg = qtl::test::error_of([&] { (void)sr.quantize(std::span(&layer, 1)); });
  EXPECT_NE(msg.find("q4_K (a k-quant)"), std::string::npos) << msg;
  EXPECT_NE(msg.find("not by SignRound"), std::string::npos) << msg;
  // GPTQ on the imatrix grid, the grid alone (RTN with imatrix) and plain RTN all run.
  const m::GgmlRecipe gq("gptq", plan, qtl::calib::Pipeline{}), im("i", plan, qtl::calib::RtnOptions{.imatrix = true}),
      rtn("r", plan, qtl::calib::RtnOptions{});
  EXPECT_NE(gq.quantize(std::span(&layer, 1)).front().note.find("gptq on the imatrix grid"), std::string::npos);
  EXPECT_EQ(im.quantize(std::span(&layer, 1)).front().note, "imatrix grid");
  EXPECT_TRUE(im.needs_calibration());
  EXPECT_FALSE(rtn.needs_calibration());
  EXPECT_EQ(rtn.quantize(std::span(&layer, 1)).size(), 1u);
}

}  // namespace
