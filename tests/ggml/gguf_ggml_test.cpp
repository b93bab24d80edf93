// qtl's GGUF reader and writer (qtl/io/gguf.hpp) against llama.cpp's own gguf API in
// libggml-base: a file qtl writes is read by gguf_init_from_file, a file ggml's writer makes is
// read by qtl, and in both directions every key, value, tensor name, type, shape, offset and
// byte must agree.
#include <gtest/gtest.h>

#include <ggml.h>
#include <gguf.h>

#include <dlfcn.h>

#include <algorithm>
#include <cstddef>
#include <cstdlib>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "temp_dir.hpp"
#include <qtl/io/gguf.hpp>

namespace {

namespace gguf = qtl::gguf;
using qtl::ggml::Type;
using qtl::test::TempDir;

struct GgufDeleter {
  void operator()(gguf_context* c) const { gguf_free(c); }
};
struct GgmlDeleter {
  void operator()(ggml_context* c) const { ggml_free(c); }
};
using GgufPtr = std::unique_ptr<gguf_context, GgufDeleter>;
using GgmlPtr = std::unique_ptr<ggml_context, GgmlDeleter>;

std::vector<std::byte> pattern(std::size_t n, int seed) {
  std::vector<std::byte> out(n);
  for (std::size_t i = 0; i < n; ++i) {
    out[i] = static_cast<std::byte>((i * 29 + static_cast<std::size_t>(seed) * 11) % 253);
  }
  return out;
}

template <class T>
void expect_scalar(const gguf::Value& v, T ggml_value, const std::string& key) {
  ASSERT_TRUE(std::holds_alternative<T>(v.v)) << key;
  EXPECT_EQ(std::get<T>(v.v), ggml_value) << key;
}

template <class T>
void expect_array_data(const gguf::Array& a, const void* data, const std::string& key) {
  const auto* p = static_cast<const T*>(data);
  for (std::size_t i = 0; i < a.items.size(); ++i) {
    ASSERT_TRUE(std::holds_alternative<T>(a.items[i].v)) << key;
    EXPECT_EQ(std::get<T>(a.items[i].v), p[i]) << key << "[" << i << "]";
  }
}

/// Every key, value and tensor of `g` (with its data loaded into `data_ctx`) equals `f`'s.
void expect_same(const gguf_context* g, ggml_context* data_ctx, const gguf::File& f) {
  EXPECT_EQ(gguf_get_version(g), f.version());
  EXPECT_EQ(gguf_get_alignment(g), f.alignment());
  ASSERT_EQ(gguf_get_n_kv(g), static_cast<std::int64_t>(f.metadata().size()));
  for (std::int64_t i = 0; i < gguf_get_n_kv(g); ++i) {
    const gguf::KeyValue& kv = f.metadata()[static_cast<std::size_t>(i)];
    const std::string& key = kv.key;
    ASSERT_EQ(gguf_get_key(g, i), key);
    const gguf_type t = gguf_get_kv_type(g, i);
    ASSERT_EQ(static_cast<std::uint32_t>(t), static_cast<std::uint32_t>(kv.value.type())) << key;
    switch (t) {
      case GGUF_TYPE_UINT8: expect_scalar(kv.value, gguf_get_val_u8(g, i), key); break;
      case GGUF_TYPE_INT8: expect_scalar(kv.value, gguf_get_val_i8(g, i), key); break;
      case GGUF_TYPE_UINT16: expect_scalar(kv.value, gguf_get_val_u16(g, i), key); break;
      case GGUF_TYPE_INT16: expect_scalar(kv.value, gguf_get_val_i16(g, i), key); break;
      case GGUF_TYPE_UINT32: expect_scalar(kv.value, gguf_get_val_u32(g, i), key); break;
      case GGUF_TYPE_INT32: expect_scalar(kv.value, gguf_get_val_i32(g, i), key); break;
      case GGUF_TYPE_FLOAT32: expect_scalar(kv.value, gguf_get_val_f32(g, i), key); break;
      case GGUF_TYPE_BOOL: expect_scalar(kv.value, gguf_get_val_bool(g, i), key); break;
      case GGUF_TYPE_UINT64: expect_scalar(kv.value, gguf_get_val_u64(g, i), key); break;
      case GGUF_TYPE_INT64: expect_scalar(kv.value, gguf_get_val_i64(g, i), key); break;
      case GGUF_TYPE_FLOAT64: expect_scalar(kv.value, gguf_get_val_f64(g, i), key); break;
      case GGUF_TYPE_STRING: expect_scalar(kv.value, std::string(gguf_get_val_str(g, i)), key); break;
      case GGUF_TYPE_ARRAY: {
        const auto& a = std::get<gguf::Array>(kv.value.v);
        const gguf_type at = gguf_get_arr_type(g, i);
        ASSERT_EQ(static_cast<std::uint32_t>(at), static_cast<std::uint32_t>(a.type)) << key;
        ASSERT_EQ(gguf_get_arr_n(g, i), a.items.size()) << key;
        if (at == GGUF_TYPE_STRING) {
          for (std::size_t k = 0; k < a.items.size(); ++k) {
            EXPECT_EQ(std::get<std::string>(a.items[k].v), gguf_get_arr_str(g, i, k)) << key;
          }
          break;
        }
        if (a.items.empty()) break;
        const void* data = gguf_get_arr_data(g, i);
        switch (at) {
          case GGUF_TYPE_UINT8: expect_array_data<std::uint8_t>(a, data, key); break;
          case GGUF_TYPE_INT8: expect_array_data<std::int8_t>(a, data, key); break;
          case GGUF_TYPE_UINT16: expect_array_data<std::uint16_t>(a, data, key); break;
          case GGUF_TYPE_INT16: expect_array_data<std::int16_t>(a, data, key); break;
          case GGUF_TYPE_UINT32: expect_array_data<std::uint32_t>(a, data, key); break;
          case GGUF_TYPE_INT32: expect_array_data<std::int32_t>(a, data, key); break;
          case GGUF_TYPE_FLOAT32: expect_array_data<float>(a, data, key); break;
          case GGUF_TYPE_UINT64: expect_array_data<std::uint64_t>(a, data, key); break;
          case GGUF_TYPE_INT64: expect_array_data<std::int64_t>(a, data, key); break;
          case GGUF_TYPE_FLOAT64: expect_array_data<double>(a, data, key); break;
          case GGUF_TYPE_BOOL: {  // stored as int8 by both
            const auto* p = static_cast<const std::int8_t*>(data);
            for (std::size_t k = 0; k < a.items.size(); ++k) {
              EXPECT_EQ(std::get<bool>(a.items[k].v), p[k] != 0) << key << "[" << k << "]";
            }
            break;
          }
          default: ADD_FAILURE() << key << ": array type " << at;
        }
        break;
      }
      default: ADD_FAILURE() << key << ": type " << t;
    }
  }

  ASSERT_EQ(gguf_get_n_tensors(g), static_cast<std::int64_t>(f.tensors().size()));
  EXPECT_EQ(gguf_get_data_offset(g), f.data_offset());
  for (std::int64_t i = 0; i < gguf_get_n_tensors(g); ++i) {
    const gguf::TensorInfo& info = f.tensors()[static_cast<std::size_t>(i)];
    const std::string name = gguf_get_tensor_name(g, i);
    ASSERT_EQ(name, info.name);
    EXPECT_EQ(static_cast<std::uint32_t>(gguf_get_tensor_type(g, i)),
              static_cast<std::uint32_t>(info.type)) << name;
    const std::int64_t* ne = gguf_get_tensor_ne(g, i);
    for (std::size_t d = 0; d < 4; ++d) {  // ggml pads the shape with 1s to 4 dimensions
      EXPECT_EQ(ne[d], d < info.shape.size() ? info.shape[d] : 1) << name << " dim " << d;
    }
    EXPECT_EQ(gguf_get_tensor_offset(g, i), info.offset) << name;
    EXPECT_EQ(gguf_get_tensor_size(g, i), info.n_bytes) << name;
    const ggml_tensor* t = ggml_get_tensor(data_ctx, name.c_str());
    ASSERT_NE(t, nullptr) << name;
    ASSERT_EQ(ggml_nbytes(t), info.n_bytes) << name;
    const gguf::TensorView v = f.tensor(name);
    EXPECT_EQ(std::memcmp(t->data, v.bytes.data(), v.bytes.size()), 0) << name;
  }
}

/// `f` written anew by qtl's writer: its metadata and tensors in the same order.
void rewrite(const gguf::File& f, const std::filesystem::path& path) {
  gguf::Writer w(path);
  for (const gguf::KeyValue& kv : f.metadata()) w.set(kv.key, kv.value);
  for (const gguf::TensorInfo& t : f.tensors()) w.add_tensor(t.name, t.type, t.shape);
  for (const gguf::TensorInfo& t : f.tensors()) w.write_tensor(t.name, f.view(t).bytes);
  w.finish();
}

std::vector<std::byte> file_bytes(const std::filesystem::path& path) {
  const gguf::File f = gguf::File::open(path);  // any bytes will do: map, then copy
  std::vector<std::byte> out(f.size());
  std::ifstream in(path, std::ios::binary);
  in.read(reinterpret_cast<char*>(out.data()), static_cast<std::streamsize>(out.size()));
  return out;
}

/// gguf_init_from_file with the tensor data loaded into a ggml context.
std::pair<GgufPtr, GgmlPtr> ggml_read(const std::filesystem::path& path) {
  ggml_context* data = nullptr;
  gguf_init_params params{/*no_alloc=*/false, /*ctx=*/&data};
  GgufPtr g(gguf_init_from_file(path.c_str(), params));
  return {std::move(g), GgmlPtr(data)};
}

TEST(GgufGgml, GgmlReadsWhatQtlWrites) {
  for (std::uint32_t alignment : {32u, 64u}) {
    TempDir dir;
    const auto path = dir.file("qtl.gguf");
    using gguf::Array;
    struct Decl {
      std::string name;
      Type type;
      std::vector<std::int64_t> shape;
      std::size_t bytes;
    };
    const std::vector<Decl> tensors = {
        {"token_embd.weight", Type::Q8_0, {64, 3}, 3 * 2 * 34},
        {"blk.0.attn_norm.weight", Type::F32, {5}, 20},
        {"blk.0.attn_q.weight", Type::Q4_0, {32, 2, 1}, 2 * 18},
        {"blk.0.ffn_up.weight", Type::Q4_K, {256, 2}, 2 * 144},
        {"blk.0.ffn_gate.weight", Type::Q6_K, {256}, 210},
        {"blk.0.ffn_down.weight", Type::F16, {3, 2, 2, 2}, 24 * 2},
        {"blk.0.attn_k.weight", Type::BF16, {4, 2}, 16},
        {"blk.0.attn_v.weight", Type::TQ2_0, {256}, 66},
        {"output.weight", Type::F32, {8, 1}, 32},
    };
    {
      gguf::Writer w(path);
      w.set("general.architecture", std::string("llama"));
      w.set("general.alignment", alignment);
      w.set("t.u8", std::uint8_t{200});
      w.set("t.i8", std::int8_t{-100});
      w.set("t.u16", std::uint16_t{60000});
      w.set("t.i16", std::int16_t{-30000});
      w.set("t.u32", std::uint32_t{4000000000u});
      w.set("t.i32", std::int32_t{-2000000000});
      w.set("t.f32", 1.5f);
      w.set("t.bool", true);
      w.set("t.string", std::string("h\xc3\xa9llo"));
      w.set("t.u64", std::uint64_t{18000000000000000000ull});
      w.set("t.i64", std::int64_t{-9000000000000000000ll});
      w.set("t.f64", 2.718281828459045);
      w.set("t.arr_u8", Array::of(std::vector<std::uint8_t>{0, 1, 255}));
      w.set("t.arr_i8", Array::of(std::vector<std::int8_t>{-128, 127}));
      w.set("t.arr_u16", Array::of(std::vector<std::uint16_t>{1, 65535}));
      w.set("t.arr_i16", Array::of(std::vector<std::int16_t>{-32768, 5}));
      w.set("t.arr_u32", Array::of(std::vector<std::uint32_t>{1, 2, 3}));
      w.set("t.arr_i32", Array::of(std::vector<std::int32_t>{-1, 0, 1}));
      w.set("t.arr_f32", Array::of(std::vector<float>{0.25f, -1e30f, 3.0f}));
      w.set("t.arr_bool", Array::of(std::vector<bool>{true, false, true}));
      w.set("t.arr_string", Array::of(std::vector<std::string>{"<s>", "", "\xe2\x96\x81the"}));
      w.set("t.arr_u64", Array::of(std::vector<std::uint64_t>{0, ~0ull}));
      w.set("t.arr_i64", Array::of(std::vector<std::int64_t>{-5, 5}));
      w.set("t.arr_f64", Array::of(std::vector<double>{1e-300, -0.5}));
      w.set("t.arr_empty", Array::of(std::vector<float>{}));
      for (const auto& t : tensors) w.add_tensor(t.name, t.type, t.shape);
      for (std::size_t i = 0; i < tensors.size(); ++i) {
        w.write_tensor(tensors[i].name, pattern(tensors[i].bytes, static_cast<int>(i)));
      }
      w.finish();
    }
    const gguf::File f = gguf::File::open(path);
    auto [g, data] = ggml_read(path);
    ASSERT_NE(g, nullptr) << "gguf_init_from_file refused qtl's file (alignment " << alignment << ")";
    expect_same(g.get(), data.get(), f);
    for (std::size_t i = 0; i < tensors.size(); ++i) {  // and the bytes are the ones written
      const auto v = f.tensor(tensors[i].name);
      const auto expected = pattern(tensors[i].bytes, static_cast<int>(i));
      EXPECT_TRUE(std::equal(v.bytes.begin(), v.bytes.end(), expected.begin(), expected.end()));
    }
  }
}

TEST(GgufGgml, QtlReadsWhatGgmlWrites) {
  TempDir dir;
  const auto path = dir.file("ggml.gguf");
  {
    GgufPtr g(gguf_init_empty());
    gguf_set_val_str(g.get(), "general.architecture", "llama");
    gguf_set_val_u8(g.get(), "t.u8", 7);
    gguf_set_val_i8(g.get(), "t.i8", -7);
    gguf_set_val_u16(g.get(), "t.u16", 700);
    gguf_set_val_i16(g.get(), "t.i16", -700);
    gguf_set_val_u32(g.get(), "t.u32", 70000);
    gguf_set_val_i32(g.get(), "t.i32", -70000);
    gguf_set_val_f32(g.get(), "t.f32", 0.125f);
    gguf_set_val_bool(g.get(), "t.bool", false);
    gguf_set_val_u64(g.get(), "t.u64", 1ull << 40);
    gguf_set_val_i64(g.get(), "t.i64", -(1ll << 40));
    gguf_set_val_f64(g.get(), "t.f64", -3.25);
    const std::vector<float> scores = {0.5f, -1.5f, 2.5f};
    gguf_set_arr_data(g.get(), "t.scores", GGUF_TYPE_FLOAT32, scores.data(), scores.size());
    const std::vector<std::int32_t> types = {1, 2, 3, 6};
    gguf_set_arr_data(g.get(), "t.types", GGUF_TYPE_INT32, types.data(), types.size());
    const std::vector<std::uint8_t> u8s = {9, 8};
    gguf_set_arr_data(g.get(), "t.u8s", GGUF_TYPE_UINT8, u8s.data(), u8s.size());
    const std::vector<std::int8_t> flags = {1, 0, 1};
    gguf_set_arr_data(g.get(), "t.flags", GGUF_TYPE_BOOL, flags.data(), flags.size());
    std::vector<const char*> tokens = {"<unk>", "<s>", "hello"};
    gguf_set_arr_str(g.get(), "t.tokens", tokens.data(), tokens.size());

    ggml_init_params ip{/*mem_size=*/1 << 20, /*mem_buffer=*/nullptr, /*no_alloc=*/false};
    GgmlPtr ctx(ggml_init(ip));
    struct Decl {
      const char* name;
      ggml_type type;
      std::vector<std::int64_t> ne;
    };
    const std::vector<Decl> decls = {
        {"a.f32", GGML_TYPE_F32, {7, 3}},
        {"b.q4_0", GGML_TYPE_Q4_0, {64, 2}},
        {"c.q8_0", GGML_TYPE_Q8_0, {32, 1, 3}},
        {"d.q5_k", GGML_TYPE_Q5_K, {256}},
        {"e.f16", GGML_TYPE_F16, {2, 2, 2, 2}},
    };
    int seed = 0;
    for (const Decl& d : decls) {
      ggml_tensor* t = ggml_new_tensor(ctx.get(), d.type, static_cast<int>(d.ne.size()), d.ne.data());
      ggml_set_name(t, d.name);
      const auto bytes = pattern(ggml_nbytes(t), seed++);
      std::memcpy(t->data, bytes.data(), bytes.size());
      gguf_add_tensor(g.get(), t);
    }
    ASSERT_TRUE(gguf_write_to_file(g.get(), path.c_str(), /*only_meta=*/false));
  }
  const gguf::File f = gguf::File::open(path);
  EXPECT_EQ(f.get_string("general.architecture"), "llama");
  EXPECT_EQ(f.get_array<std::string>("t.tokens"), (std::vector<std::string>{"<unk>", "<s>", "hello"}));
  EXPECT_EQ(f.get_array<float>("t.scores"), (std::vector<float>{0.5f, -1.5f, 2.5f}));
  EXPECT_EQ(f.tensor("c.q8_0").type, Type::Q8_0);
  EXPECT_EQ(std::vector<std::int64_t>(f.tensor("c.q8_0").shape.begin(), f.tensor("c.q8_0").shape.end()),
            (std::vector<std::int64_t>{32, 1, 3}));
  auto [g, data] = ggml_read(path);
  ASSERT_NE(g, nullptr);
  expect_same(g.get(), data.get(), f);

  // Both writers lay a file out the same way: qtl's rewrite of ggml's file is byte for byte equal.
  const auto again = dir.file("again.gguf");
  rewrite(f, again);
  EXPECT_TRUE(file_bytes(again) == file_bytes(path));
}

/// llama.cpp's source tree: $QTL_LLAMA_CPP_SRC, else found from where libggml-base was loaded
/// (cmake/qtlLlamaCpp.cmake: <dir>/node_modules/@node-llama-cpp/linux-x64/bins/linux-x64/ holds
/// the libraries, <dir>/src the source).
std::filesystem::path llama_cpp_src() {
  if (const char* env = std::getenv("QTL_LLAMA_CPP_SRC")) return env;
  Dl_info info{};
  if (dladdr(reinterpret_cast<void*>(&gguf_init_empty), &info) == 0 || info.dli_fname == nullptr) {
    return {};
  }
  std::filesystem::path p = std::filesystem::weakly_canonical(info.dli_fname).parent_path();
  for (int i = 0; i < 5; ++i) p = p.parent_path();
  return p / "src";
}

// Real files written by llama.cpp's Python converter (gguf-py): the tokenizer test vocabularies
// in llama.cpp's models/ folder (versions 2 and 3), each with tens of thousands of strings in
// arrays.
TEST(GgufGgml, ReadsLlamaCppVocabularyFiles) {
  const auto models = llama_cpp_src() / "models";
  std::vector<std::filesystem::path> files;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(models, ec)) {
    const std::string name = e.path().filename().string();
    if (name.starts_with("ggml-vocab-") && e.path().extension() == ".gguf") files.push_back(e.path());
  }
  if (files.empty()) GTEST_SKIP() << "no ggml-vocab-*.gguf in " << models;
  std::sort(files.begin(), files.end());
  for (const auto& path : files) {
    SCOPED_TRACE(path.string());
    const gguf::File f = gguf::File::open(path);
    auto [g, data] = ggml_read(path);
    ASSERT_NE(g, nullptr);
    expect_same(g.get(), data.get(), f);
    EXPECT_GT(f.get_array<std::string>("tokenizer.ggml.tokens").size(), 1000u);
    // qtl's rewrite equals the original but for the padding that llama.cpp's writer (and qtl's)
    // adds after the infos even without tensors, and gguf-py does not.
    TempDir dir;
    const auto again = dir.file("again.gguf");
    rewrite(f, again);
    const auto original = file_bytes(path);
    auto rewritten = file_bytes(again);
    ASSERT_GE(rewritten.size(), original.size());
    EXPECT_LT(rewritten.size() - original.size(), f.alignment());
    EXPECT_TRUE(std::all_of(rewritten.begin() + static_cast<std::ptrdiff_t>(original.size()),
                            rewritten.end(), [](std::byte b) { return b == std::byte{0}; }));
    rewritten.resize(original.size());
    ASSERT_EQ(rewritten[4], std::byte{3});  // qtl writes version 3; a few of these files are v2
    rewritten[4] = original[4];
    EXPECT_TRUE(rewritten == original);
  }
}

}  // namespace
