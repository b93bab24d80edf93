#include "qtl/io/llama2c.hpp"

#include <gtest/gtest.h>

#include <array>
#include <cstdint>
#include <cstring>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "data_path.hpp"
#include "temp_dir.hpp"

namespace {

namespace fs = std::filesystem;
using qtl::io::Llama2cCheckpoint;
using qtl::io::Llama2cConfig;

fs::path model_path() { return qtl::io::data_path("stories260K/stories260K.bin"); }

/// A fresh folder per test, removed at the end of the test.
using qtl::test::TempDir;

void write_chars(const fs::path& p, const std::vector<char>& bytes) {
  std::ofstream out(p, std::ios::binary);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

std::vector<char> read_chars(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

template <class T>
void append(std::vector<char>& out, T v) {
  const char* p = reinterpret_cast<const char*>(&v);
  out.insert(out.end(), p, p + sizeof(T));
}

/// A small synthetic checkpoint: header + `n_floats` floats with value f(i) = 0.001 * i.
std::vector<char> synthetic(const std::array<std::int32_t, 7>& header, std::int64_t n_floats) {
  std::vector<char> out;
  for (std::int32_t v : header) append(out, v);
  for (std::int64_t i = 0; i < n_floats; ++i) append(out, 0.001f * static_cast<float>(i));
  return out;
}

// dim 8, hidden 12, 2 layers, 2 heads, 1 kv head, vocab 10, seq_len 4: head_size 4, kv_dim 4.
constexpr std::array<std::int32_t, 7> kSmall = {8, 12, 2, 2, 1, 10, 4};
// Floats of kSmall without RoPE tables and classifier:
//   emb 10*8 + L*(8 + 64 + 32 + 32 + 64 + 8 + 96 + 96 + 96) + 8.
constexpr std::int64_t kSmallBody = 80 + 2 * (8 + 64 + 32 + 32 + 64 + 8 + 96 + 96 + 96) + 8;
constexpr std::int64_t kSmallRope = 4 * 4;  // 2 tables x seq_len x head_size/2
constexpr std::int64_t kSmallCls = 10 * 8;

std::string load_error(const fs::path& p) {
  try {
    (void)Llama2cCheckpoint::load(p);
  } catch (const qtl::Error& e) {
    return e.what();
  }
  return "<no error>";
}

TEST(Llama2cCheckpoint, RealModelConfig) {
  const auto ck = Llama2cCheckpoint::load(model_path());
  const Llama2cConfig& c = ck.config();
  EXPECT_EQ(c.dim, 64);
  EXPECT_EQ(c.hidden_dim, 172);
  EXPECT_EQ(c.n_layers, 5);
  EXPECT_EQ(c.n_heads, 8);
  EXPECT_EQ(c.n_kv_heads, 4);
  EXPECT_EQ(c.vocab_size, 512);
  EXPECT_EQ(c.seq_len, 512);
  EXPECT_TRUE(c.shared_classifier);
  EXPECT_EQ(c.head_size(), 8);
  EXPECT_EQ(c.kv_dim(), 32);
}

TEST(Llama2cCheckpoint, RealModelTensorShapes) {
  const auto ck = Llama2cCheckpoint::load(model_path());
  const auto& names = ck.tensor_names();
  ASSERT_EQ(names.size(), 1u + 9u * 5u + 1u);  // no "output": the classifier is shared
  EXPECT_EQ(names.front(), "tok_embeddings");
  EXPECT_EQ(names[1], "layers.0.attention_norm");
  EXPECT_EQ(names[6], "layers.0.wq");  // all 5 attention norms come first (file order)
  EXPECT_EQ(names.back(), "norm");
  EXPECT_FALSE(ck.has("output"));

  std::int64_t params = 0;
  for (const auto& n : names) {
    const auto t = ck.tensor(n);
    params += t.size();
  }
  EXPECT_EQ(params, 260032);  // the parameter count in data/README.md

  auto shape = [&](const std::string& n) {
    const auto t = ck.tensor(n);
    return std::pair<qtl::Index, qtl::Index>(t.rows(), t.cols());
  };
  using P = std::pair<qtl::Index, qtl::Index>;
  EXPECT_EQ(shape("tok_embeddings"), P(512, 64));
  EXPECT_EQ(shape("norm"), P(1, 64));
  for (int l = 0; l < 5; ++l) {
    const std::string pre = qtl::str_cat("layers.", l, ".");
    EXPECT_EQ(shape(pre + "attention_norm"), P(1, 64));
    EXPECT_EQ(shape(pre + "ffn_norm"), P(1, 64));
    EXPECT_EQ(shape(pre + "wq"), P(64, 64));
    EXPECT_EQ(shape(pre + "wk"), P(32, 64));
    EXPECT_EQ(shape(pre + "wv"), P(32, 64));
    EXPECT_EQ(shape(pre + "wo"), P(64, 64));
    EXPECT_EQ(shape(pre + "w1"), P(172, 64));
    EXPECT_EQ(shape(pre + "w2"), P(64, 172));
    EXPECT_EQ(shape(pre + "w3"), P(172, 64));
  }

  const auto lin = ck.linear_names();
  ASSERT_EQ(lin.size(), 35u);
  EXPECT_EQ(lin[0], "layers.0.wq");
  EXPECT_EQ(lin[3], "layers.0.wo");
  EXPECT_EQ(lin[6], "layers.0.w3");
  EXPECT_EQ(lin[7], "layers.1.wq");
  EXPECT_EQ(lin.back(), "layers.4.w3");
  for (const auto& n : lin) EXPECT_TRUE(ck.has(n)) << n;
}

TEST(Llama2cCheckpoint, RealModelValuesMatchRawFileOffsets) {
  const auto ck = Llama2cCheckpoint::load(model_path());
  std::ifstream in(model_path(), std::ios::binary);
  auto float_at = [&](std::int64_t float_index) {
    in.seekg(28 + 4 * float_index);
    float v = 0;
    in.read(reinterpret_cast<char*>(&v), 4);
    EXPECT_TRUE(in.good());
    return v;
  };
  // Offsets (in floats) computed from data/README.md's layout: emb 512*64, rms_att 5*64,
  // wq 5*64*64, wk 5*32*64, wv 5*32*64, wo 5*64*64, rms_ffn 5*64, w1 5*172*64, w2 5*64*172.
  EXPECT_EQ(ck.tensor("tok_embeddings")(0, 0), float_at(0));
  EXPECT_EQ(ck.tensor("tok_embeddings")(511, 63), float_at(512 * 64 - 1));
  const std::int64_t wq0 = 512 * 64 + 5 * 64;
  EXPECT_EQ(ck.tensor("layers.0.wq")(0, 1), float_at(wq0 + 1));
  EXPECT_EQ(ck.tensor("layers.2.wq")(3, 5), float_at(wq0 + 2 * 64 * 64 + 3 * 64 + 5));
  const std::int64_t w2_0 = wq0 + 5 * 64 * 64 + 2 * 5 * 32 * 64 + 5 * 64 * 64 + 5 * 64 +
                            5 * 172 * 64;
  EXPECT_EQ(ck.tensor("layers.4.w2")(63, 171), float_at(w2_0 + 4 * 64 * 172 + 63 * 172 + 171));
  const std::int64_t norm = w2_0 + 5 * 64 * 172 + 5 * 172 * 64;
  EXPECT_EQ(ck.tensor("norm")(0, 63), float_at(norm + 63));
  // RMSNorm gains of a trained model are positive and O(1); a misaligned read would not be.
  const auto gains = ck.tensor("norm");
  for (qtl::Index i = 0; i < gains.cols(); ++i) EXPECT_GT(gains(0, i), 0.0f) << i;
}

TEST(Llama2cCheckpoint, UnknownTensorNameIsAnErrorNamingIt) {
  const auto ck = Llama2cCheckpoint::load(model_path());
  EXPECT_FALSE(ck.has("layers.5.wq"));
  try {
    (void)ck.tensor("layers.5.wq");
    FAIL() << "expected qtl::Error";
  } catch (const qtl::Error& e) {
    EXPECT_NE(std::string(e.what()).find("'layers.5.wq'"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("layers.{0..4}"), std::string::npos) << e.what();
  }
}

TEST(Llama2cCheckpoint, CopyKeepsValidViews) {
  auto original = Llama2cCheckpoint::load(model_path());
  const float first = original.tensor("layers.1.w3")(2, 2);
  const Llama2cCheckpoint copy = original;
  original = Llama2cCheckpoint::load(model_path());
  EXPECT_EQ(copy.tensor("layers.1.w3")(2, 2), first);
}

TEST(Llama2cCheckpoint, SyntheticLayoutsWithAndWithoutRopeTables) {
  TempDir dir;
  write_chars(dir.file("with.bin"), synthetic(kSmall, kSmallBody + kSmallRope));
  write_chars(dir.file("without.bin"), synthetic(kSmall, kSmallBody));
  const auto a = Llama2cCheckpoint::load(dir.file("with.bin"));
  const auto b = Llama2cCheckpoint::load(dir.file("without.bin"));
  EXPECT_EQ(a.config().kv_dim(), 4);
  for (const auto& n : a.tensor_names()) EXPECT_TRUE(a.tensor(n) == b.tensor(n)) << n;
  EXPECT_EQ(a.tensor("norm")(0, 7), 0.001f * static_cast<float>(kSmallBody - 1));
}

TEST(Llama2cCheckpoint, SeparateClassifierAfterRopeTables) {
  TempDir dir;
  auto header = kSmall;
  header[5] = -10;  // negative vocab: wcls stored at the end
  write_chars(dir.file("cls.bin"), synthetic(header, kSmallBody + kSmallRope + kSmallCls));
  const auto ck = Llama2cCheckpoint::load(dir.file("cls.bin"));
  EXPECT_FALSE(ck.config().shared_classifier);
  EXPECT_EQ(ck.config().vocab_size, 10);
  ASSERT_TRUE(ck.has("output"));
  EXPECT_EQ(ck.tensor_names().back(), "output");
  const auto out = ck.tensor("output");
  EXPECT_EQ(out.rows(), 10);
  EXPECT_EQ(out.cols(), 8);
  EXPECT_EQ(out(0, 0), 0.001f * static_cast<float>(kSmallBody + kSmallRope));

  write_chars(dir.file("cls_norope.bin"), synthetic(header, kSmallBody + kSmallCls));
  const auto ck2 = Llama2cCheckpoint::load(dir.file("cls_norope.bin"));
  EXPECT_EQ(ck2.tensor("output")(0, 0), 0.001f * static_cast<float>(kSmallBody));
}

TEST(Llama2cCheckpoint, MissingFileNamesThePath) {
  TempDir dir;
  const std::string msg = load_error(dir.file("my_model.bin"));
  EXPECT_NE(msg.find("not found"), std::string::npos) << msg;
  EXPECT_NE(msg.find(dir.file("my_model.bin").string()), std::string::npos) << msg;
}

TEST(Llama2cCheckpoint, ShorterThanHeader) {
  TempDir dir;
  write_chars(dir.file("tiny.bin"), std::vector<char>(27, '\0'));
  const std::string msg = load_error(dir.file("tiny.bin"));
  EXPECT_NE(msg.find("27 bytes"), std::string::npos) << msg;
  EXPECT_NE(msg.find("28-byte header"), std::string::npos) << msg;
}

TEST(Llama2cCheckpoint, HeaderOnlyStatesExpectedBytes) {
  TempDir dir;
  const auto real = read_chars(model_path());
  write_chars(dir.file("header.bin"), std::vector<char>(real.begin(), real.begin() + 28));
  const std::string msg = load_error(dir.file("header.bin"));
  EXPECT_NE(msg.find("has 28 bytes"), std::string::npos) << msg;
  EXPECT_NE(msg.find("1056540"), std::string::npos) << msg;  // data/README.md's total size
}

TEST(Llama2cCheckpoint, TruncatedAndPaddedFilesStateBothSizes) {
  TempDir dir;
  auto real = read_chars(model_path());
  ASSERT_EQ(real.size(), 1056540u);
  auto cut = real;
  cut.resize(real.size() - 4);
  write_chars(dir.file("cut.bin"), cut);
  std::string msg = load_error(dir.file("cut.bin"));
  EXPECT_NE(msg.find("has 1056536 bytes"), std::string::npos) << msg;
  EXPECT_NE(msg.find("expects 1056540"), std::string::npos) << msg;

  auto padded = real;
  padded.push_back('\0');
  write_chars(dir.file("padded.bin"), padded);
  msg = load_error(dir.file("padded.bin"));
  EXPECT_NE(msg.find("has 1056541 bytes"), std::string::npos) << msg;
  EXPECT_NE(msg.find("expects 1056540"), std::string::npos) << msg;
}

TEST(Llama2cCheckpoint, AbsurdHeaders) {
  TempDir dir;
  struct Case {
    std::array<std::int32_t, 7> header;
    std::string expected;
  };
  const std::vector<Case> cases = {
      {{0, 12, 2, 2, 1, 10, 4}, "dim = 0"},
      {{8, -12, 2, 2, 1, 10, 4}, "hidden_dim = -12"},
      {{8, 12, 2, 2, 1, 0, 4}, "vocab_size = 0"},
      {{8, 12, 2, 2, 1, std::numeric_limits<std::int32_t>::min(), 4}, "vocab_size = -2147483648"},
      {{8, 12, (1 << 20) + 1, 2, 1, 10, 4}, "n_layers = 1048577"},
      {{8, 12, 2, 3, 1, 10, 4}, "dim = 8 is not divisible by n_heads = 3"},
      {{8, 12, 2, 2, 3, 10, 4}, "n_heads = 2 is not divisible by n_kv_heads = 3"},
      {{6, 12, 2, 2, 1, 10, 4}, "head_size = dim / n_heads = 3 is odd"},
      // Every field in range, but the implied size overflows 64 bits.
      {{1 << 20, 1 << 20, 1 << 20, 2, 1, 10, 4}, "overflow"},
      // A plausible 7B-sized header on a small file: a size error, and no huge allocation.
      {{4096, 11008, 32, 32, 32, 32000, 2048}, "expects 26430423068 bytes"},
  };
  for (const auto& c : cases) {
    write_chars(dir.file("bad.bin"), synthetic(c.header, 100));
    const std::string msg = load_error(dir.file("bad.bin"));
    EXPECT_NE(msg.find(c.expected), std::string::npos) << "want '" << c.expected << "' in: " << msg;
  }
}

TEST(Llama2cCheckpoint, NonFiniteWeightIsNamed) {
  TempDir dir;
  auto real = read_chars(model_path());
  // layers.1.wk(2, 3): after emb, rms_att, wq and layer 0's wk.
  const std::int64_t index = 512 * 64 + 5 * 64 + 5 * 64 * 64 + 32 * 64 + 2 * 64 + 3;
  const float nan = std::numeric_limits<float>::quiet_NaN();
  std::memcpy(real.data() + 28 + 4 * index, &nan, 4);
  write_chars(dir.file("nan.bin"), real);
  std::string msg = load_error(dir.file("nan.bin"));
  EXPECT_NE(msg.find("layers.1.wk"), std::string::npos) << msg;
  EXPECT_NE(msg.find("nan"), std::string::npos) << msg;
  EXPECT_NE(msg.find("(2, 3)"), std::string::npos) << msg;

  const float inf = std::numeric_limits<float>::infinity();
  std::memcpy(real.data() + 28 + 4 * index, &inf, 4);
  write_chars(dir.file("inf.bin"), real);
  msg = load_error(dir.file("inf.bin"));
  EXPECT_NE(msg.find("inf"), std::string::npos) << msg;
}

TEST(Llama2cCheckpoint, NanInIgnoredRopeTableIsAccepted) {
  TempDir dir;
  auto real = read_chars(model_path());
  const float nan = std::numeric_limits<float>::quiet_NaN();
  std::memcpy(real.data() + real.size() - 4, &nan, 4);  // last freq_cis_imag entry
  write_chars(dir.file("rope_nan.bin"), real);
  EXPECT_NO_THROW((void)Llama2cCheckpoint::load(dir.file("rope_nan.bin")));
}

TEST(Llama2cDataPath, EnvironmentOverridesCompileDefinition) {
  const char* old = std::getenv("QTL_DATA_DIR");
  const std::string saved = old ? old : "";
  ::setenv("QTL_DATA_DIR", "/some/where", 1);
  EXPECT_EQ(qtl::io::data_path("a/b.txt"), fs::path("/some/where/a/b.txt"));
  try {
    (void)qtl::io::require_data_file("tinystories_val_dev.txt");
    ADD_FAILURE() << "expected qtl::Error";
  } catch (const qtl::Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("/some/where/tinystories_val_dev.txt"), std::string::npos) << msg;
    EXPECT_NE(msg.find("roneneldan/TinyStories"), std::string::npos) << msg;
    EXPECT_NE(msg.find("first 500 stories"), std::string::npos) << msg;
  }
  try {
    (void)qtl::io::require_data_file("stories260K/tok512.bin");
    ADD_FAILURE() << "expected qtl::Error";
  } catch (const qtl::Error& e) {
    EXPECT_NE(std::string(e.what()).find("tinyllamas"), std::string::npos) << e.what();
  }
  if (old) {
    ::setenv("QTL_DATA_DIR", saved.c_str(), 1);
  } else {
    ::unsetenv("QTL_DATA_DIR");
  }
}

TEST(Llama2cDataPath, BundledFilesExist) {
  EXPECT_NO_THROW((void)qtl::io::require_data_file("stories260K/stories260K.bin"));
  EXPECT_NO_THROW((void)qtl::io::require_data_file("stories260K/tok512.bin"));
  EXPECT_NO_THROW((void)qtl::io::require_data_file("tinystories_val_dev.txt"));
}

}  // namespace
