#include "qtl/io/gguf.hpp"

#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <initializer_list>
#include <limits>
#include <span>
#include <string>
#include <type_traits>
#include <vector>

#include "temp_dir.hpp"

namespace {

namespace fs = std::filesystem;
namespace gguf = qtl::gguf;
using qtl::ggml::Type;
using qtl::test::TempDir;

std::vector<std::byte> read_bytes(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::vector<char> c{std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
  std::vector<std::byte> out(c.size());
  std::memcpy(out.data(), c.data(), c.size());
  return out;
}

void write_bytes(const fs::path& p, std::span<const std::byte> bytes) {
  std::ofstream out(p, std::ios::binary);
  out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
}

/// Deterministic tensor contents: byte i of tensor `seed` is (i * 31 + seed * 7) mod 251.
std::vector<std::byte> pattern(std::size_t n, int seed) {
  std::vector<std::byte> out(n);
  for (std::size_t i = 0; i < n; ++i) out[i] = static_cast<std::byte>((i * 31 + static_cast<std::size_t>(seed) * 7) % 251);
  return out;
}

/// A GGUF file built field by field, for inputs the Writer refuses to make.
struct Raw {
  std::vector<std::byte> b;

  template <class T>
  Raw& put(T x) {
    const auto* p = reinterpret_cast<const std::byte*>(&x);
    b.insert(b.end(), p, p + sizeof(T));
    return *this;
  }
  Raw& str(std::string_view s) {
    put<std::uint64_t>(s.size());
    const auto* p = reinterpret_cast<const std::byte*>(s.data());
    b.insert(b.end(), p, p + s.size());
    return *this;
  }
  Raw& header(std::uint64_t n_tensors, std::uint64_t n_kv, std::uint32_t version = 3) {
    str_raw("GGUF");
    put(version);
    put(n_tensors);
    return put(n_kv);
  }
  Raw& str_raw(std::string_view s) {
    const auto* p = reinterpret_cast<const std::byte*>(s.data());
    b.insert(b.end(), p, p + s.size());
    return *this;
  }
  Raw& kv_u32(std::string_view key, std::uint32_t v) {
    str(key);
    put<std::uint32_t>(4);
    return put(v);
  }
  Raw& kv_str(std::string_view key, std::string_view v) {
    str(key);
    put<std::uint32_t>(8);
    return str(v);
  }
  Raw& tensor(std::string_view name, std::initializer_list<std::uint64_t> dims, std::uint32_t type,
              std::uint64_t offset) {
    str(name);
    put<std::uint32_t>(static_cast<std::uint32_t>(dims.size()));
    for (auto d : dims) put(d);
    put(type);
    return put(offset);
  }
  Raw& pad(std::size_t alignment = 32) {
    while (b.size() % alignment != 0) b.push_back(std::byte{0});
    return *this;
  }
  Raw& zeros(std::size_t n) {
    b.insert(b.end(), n, std::byte{0});
    return *this;
  }
};

std::string parse_error(std::span<const std::byte> bytes) {
  try {
    (void)gguf::File::from_memory(bytes, "t.gguf");
  } catch (const qtl::Error& e) {
    return e.what();
  }
  return "<no error>";
}

void expect_error(const Raw& r, std::initializer_list<std::string_view> parts) {
  const std::string msg = parse_error(r.b);
  for (std::string_view part : parts) {
    EXPECT_NE(msg.find(part), std::string::npos) << "message: " << msg << "\nmissing: " << part;
  }
}

constexpr std::uint32_t kF32 = 0;
constexpr std::uint32_t kQ4_0 = 2;

// ---------------------------------------------------------------------------------------------
// Round trips

/// Every metadata value type, arrays of each, a nested array and an empty one.
std::vector<gguf::KeyValue> all_metadata() {
  using gguf::Array;
  using gguf::Value;
  using gguf::ValueType;
  Array nested{ValueType::Array, {Array::of(std::vector<std::int32_t>{1, -2, 3}),
                                  Array::of(std::vector<std::int32_t>{}),
                                  Array::of(std::vector<std::int32_t>{7})}};
  return {
      {"general.architecture", std::string("llama")},
      {"t.u8", std::uint8_t{200}},
      {"t.i8", std::int8_t{-100}},
      {"t.u16", std::uint16_t{60000}},
      {"t.i16", std::int16_t{-30000}},
      {"t.u32", std::uint32_t{4000000000u}},
      {"t.i32", std::int32_t{-2000000000}},
      {"t.f32", 1.5f},
      {"t.bool_true", true},
      {"t.bool_false", false},
      {"t.string", std::string("h\xc3\xa9llo\n")},
      {"t.empty_string", std::string()},
      {"t.u64", std::uint64_t{18000000000000000000ull}},
      {"t.i64", std::int64_t{-9000000000000000000ll}},
      {"t.f64", 2.718281828459045},
      {"t.arr_u8", Array::of(std::vector<std::uint8_t>{0, 1, 255})},
      {"t.arr_i8", Array::of(std::vector<std::int8_t>{-128, 127})},
      {"t.arr_u16", Array::of(std::vector<std::uint16_t>{1, 65535})},
      {"t.arr_i16", Array::of(std::vector<std::int16_t>{-32768, 5})},
      {"t.arr_u32", Array::of(std::vector<std::uint32_t>{1, 2, 3})},
      {"t.arr_i32", Array::of(std::vector<std::int32_t>{-1, 0, 1})},
      {"t.arr_f32", Array::of(std::vector<float>{0.25f, -1e30f, 3.0f})},
      {"t.arr_bool", Array::of(std::vector<bool>{true, false, true})},
      {"t.arr_string", Array::of(std::vector<std::string>{"<s>", "", "▁the"})},
      {"t.arr_u64", Array::of(std::vector<std::uint64_t>{0, ~0ull})},
      {"t.arr_i64", Array::of(std::vector<std::int64_t>{std::numeric_limits<std::int64_t>::min()})},
      {"t.arr_f64", Array::of(std::vector<double>{1e-300, -0.5})},
      {"t.arr_nested", nested},
      {"t.arr_empty", Array::of(std::vector<float>{})},
  };
}

struct DeclaredTensor {
  std::string name;
  Type type;
  std::vector<std::int64_t> shape;
  std::size_t n_bytes;
};

std::vector<DeclaredTensor> some_tensors() {
  return {
      {"token_embd.weight", Type::Q8_0, {64, 3}, 3 * 2 * 34},
      {"blk.0.attn_norm.weight", Type::F32, {5}, 20},
      {"blk.0.attn_q.weight", Type::Q4_0, {32, 2, 1}, 2 * 18},
      {"blk.0.ffn_up.weight", Type::Q4_K, {256, 2}, 2 * 144},
      {"blk.0.ffn_down.weight", Type::F16, {3, 2, 2, 2}, 24 * 2},
      {"output.weight", Type::F32, {8, 1}, 32},
  };
}

void write_model(const fs::path& path, const std::vector<gguf::KeyValue>& kvs,
                 const std::vector<DeclaredTensor>& tensors) {
  gguf::Writer w(path);
  for (const auto& kv : kvs) w.set(kv.key, kv.value);
  for (const auto& t : tensors) w.add_tensor(t.name, t.type, t.shape);
  for (std::size_t i = 0; i < tensors.size(); ++i) {
    w.write_tensor(tensors[i].name, pattern(tensors[i].n_bytes, static_cast<int>(i)));
  }
  w.finish();
}

TEST(Gguf, RoundTripEveryValueTypeAndSeveralTensorTypes) {
  TempDir dir;
  const auto path = dir.file("model.gguf");
  const auto kvs = all_metadata();
  const auto tensors = some_tensors();
  write_model(path, kvs, tensors);

  const gguf::File f = gguf::File::open(path);
  EXPECT_EQ(f.version(), 3u);
  EXPECT_EQ(f.alignment(), 32u);
  EXPECT_EQ(f.data_offset() % 32, 0u);
  ASSERT_EQ(f.metadata().size(), kvs.size());
  for (std::size_t i = 0; i < kvs.size(); ++i) {
    EXPECT_EQ(f.metadata()[i].key, kvs[i].key);
    EXPECT_EQ(f.metadata()[i].value.type(), kvs[i].value.type()) << kvs[i].key;
    EXPECT_TRUE(f.metadata()[i].value == kvs[i].value) << kvs[i].key;
  }
  ASSERT_EQ(f.tensors().size(), tensors.size());
  std::uint64_t expected_offset = 0;
  for (std::size_t i = 0; i < tensors.size(); ++i) {
    const gguf::TensorInfo& info = f.tensors()[i];
    EXPECT_EQ(info.name, tensors[i].name);
    EXPECT_EQ(info.offset, expected_offset);  // back to back, each padded, as llama.cpp lays out
    expected_offset += (tensors[i].n_bytes + 31) / 32 * 32;
    const gguf::TensorView v = f.tensor(tensors[i].name);
    EXPECT_EQ(v.name, tensors[i].name);
    EXPECT_EQ(v.type, tensors[i].type);
    EXPECT_EQ(std::vector<std::int64_t>(v.shape.begin(), v.shape.end()), tensors[i].shape);
    std::int64_t n = 1;
    for (auto d : tensors[i].shape) n *= d;
    EXPECT_EQ(v.n_elements, n);
    const auto expected = pattern(tensors[i].n_bytes, static_cast<int>(i));
    ASSERT_EQ(v.bytes.size(), expected.size()) << tensors[i].name;
    EXPECT_TRUE(std::equal(v.bytes.begin(), v.bytes.end(), expected.begin())) << tensors[i].name;
    // The mapping is page-aligned, so each tensor's bytes are aligned in memory too.
    EXPECT_EQ(reinterpret_cast<std::uintptr_t>(v.bytes.data()) % 32, 0u) << tensors[i].name;
  }
  EXPECT_EQ(f.size(), f.data_offset() + expected_offset);
  EXPECT_FALSE(f.find_tensor("missing").has_value());
  EXPECT_EQ(f.find("missing"), nullptr);
}

TEST(Gguf, TypedGetters) {
  TempDir dir;
  const auto path = dir.file("model.gguf");
  write_model(path, all_metadata(), {});
  const gguf::File f = gguf::File::open(path);
  EXPECT_EQ(f.get_string("general.architecture"), "llama");
  EXPECT_EQ(f.get_u32("t.u32"), 4000000000u);
  EXPECT_EQ(f.get_u32("t.u8"), 200u);  // any integer type that fits
  EXPECT_EQ(f.get_i32("t.i16"), -30000);
  EXPECT_EQ(f.get_u64("t.u64"), 18000000000000000000ull);
  EXPECT_EQ(f.get_i64("t.i64"), -9000000000000000000ll);
  EXPECT_EQ(f.get_int<std::uint8_t>("t.u8"), 200);
  EXPECT_EQ(f.get_f32("t.f32"), 1.5f);
  EXPECT_EQ(f.get_f64("t.f64"), 2.718281828459045);
  EXPECT_EQ(f.get_f64("t.f32"), 1.5);
  EXPECT_TRUE(f.get_bool("t.bool_true"));
  EXPECT_FALSE(f.get_bool("t.bool_false"));
  EXPECT_EQ(f.get_array<float>("t.arr_f32"), (std::vector<float>{0.25f, -1e30f, 3.0f}));
  EXPECT_EQ(f.get_array<double>("t.arr_f32"), (std::vector<double>{0.25, -1e30f, 3.0}));
  EXPECT_EQ(f.get_array<std::string>("t.arr_string"), (std::vector<std::string>{"<s>", "", "▁the"}));
  EXPECT_EQ(f.get_array<int>("t.arr_u8"), (std::vector<int>{0, 1, 255}));
  EXPECT_EQ(f.get_array<std::int64_t>("t.arr_u32"), (std::vector<std::int64_t>{1, 2, 3}));
  EXPECT_EQ(f.get_array<bool>("t.arr_bool"), (std::vector<bool>{true, false, true}));
  EXPECT_TRUE(f.get_array<float>("t.arr_empty").empty());
  EXPECT_EQ(f.get_array("t.arr_nested").items.size(), 3u);

  const auto error = [&](auto&& get) -> std::string {
    try {
      get();
    } catch (const qtl::Error& e) {
      return e.what();
    }
    return "<no error>";
  };
  EXPECT_NE(error([&] { (void)f.get_u32("nope"); }).find("no metadata key 'nope'"), std::string::npos);
  EXPECT_NE(error([&] { (void)f.get_u32("general.architecture"); })
                .find("key 'general.architecture' has type string, not an integer"),
            std::string::npos);
  EXPECT_NE(error([&] { (void)f.get_u32("t.i32"); }).find("-2000000000 (int32) does not fit"),
            std::string::npos);
  EXPECT_NE(error([&] { (void)f.get_i32("t.u32"); }).find("4000000000 (uint32) does not fit"),
            std::string::npos);
  EXPECT_NE(error([&] { (void)f.get_int<std::int8_t>("t.u8"); }).find("200 (uint8) does not fit"),
            std::string::npos);
  EXPECT_NE(error([&] { (void)f.get_f32("t.f64"); }).find("has type float64, not float32"),
            std::string::npos);
  EXPECT_NE(error([&] { (void)f.get_bool("t.u8"); }).find("has type uint8, not bool"), std::string::npos);
  EXPECT_NE(error([&] { (void)f.get_string("t.arr_string"); })
                .find("has type array of string, not string"),
            std::string::npos);
  EXPECT_NE(error([&] { (void)f.get_array<int>("t.arr_f32"); })
                .find("has type array of float32, not an array of integers"),
            std::string::npos);
  EXPECT_NE(error([&] { (void)f.get_array<std::uint8_t>("t.arr_i8"); })
                .find("element 0 = -128 (int8) does not fit"),
            std::string::npos);
  EXPECT_NE(error([&] { (void)f.get_array<std::string>("t.arr_empty"); })
                .find("has type array of float32, not an array of string"),
            std::string::npos);
}

TEST(Gguf, AlignmentKeyAndMoves) {
  TempDir dir;
  const auto path = dir.file("aligned.gguf");
  {
    gguf::Writer w(path);
    w.set("general.alignment", std::uint32_t{256});
    w.add_tensor("a", Type::F32, {3});
    w.add_tensor("b", Type::F32, {2});
    w.write_tensor("a", pattern(12, 1));
    w.write_tensor("b", pattern(8, 2));
    w.finish();
  }
  gguf::File f = gguf::File::open(path);
  EXPECT_EQ(f.alignment(), 256u);
  EXPECT_EQ(f.data_offset() % 256, 0u);
  EXPECT_EQ(f.tensors()[1].offset, 256u);
  const auto bytes_before = f.tensor("b").bytes;
  gguf::File moved = std::move(f);
  EXPECT_EQ(moved.tensor("b").bytes.data(), bytes_before.data());  // the mapping moved along
  EXPECT_TRUE(std::equal(bytes_before.begin(), bytes_before.end(), pattern(8, 2).begin()));
}

TEST(Gguf, FromMemoryMatchesOpen) {
  TempDir dir;
  const auto path = dir.file("m.gguf");
  write_model(path, all_metadata(), some_tensors());
  const auto bytes = read_bytes(path);
  const auto a = gguf::File::open(path);
  const auto b = gguf::File::from_memory(bytes);
  ASSERT_EQ(a.metadata().size(), b.metadata().size());
  for (std::size_t i = 0; i < a.metadata().size(); ++i) {
    EXPECT_TRUE(a.metadata()[i].value == b.metadata()[i].value);
  }
  for (const auto& t : a.tensors()) {
    const auto va = a.tensor(t.name);
    const auto vb = b.tensor(t.name);
    EXPECT_TRUE(std::equal(va.bytes.begin(), va.bytes.end(), vb.bytes.begin(), vb.bytes.end()));
  }
}

TEST(Gguf, RewriteIsByteIdentical) {
  TempDir dir;
  const auto path = dir.file("a.gguf");
  const auto again = dir.file("b.gguf");
  write_model(path, all_metadata(), some_tensors());
  {
    const gguf::File f = gguf::File::open(path);
    gguf::Writer w(again);
    for (const auto& kv : f.metadata()) w.set(kv.key, kv.value);
    for (const auto& t : f.tensors()) w.add_tensor(t.name, t.type, t.shape);
    for (const auto& t : f.tensors()) w.write_tensor(t.name, f.view(t).bytes);
    w.finish();
  }
  EXPECT_TRUE(read_bytes(path) == read_bytes(again));
}

TEST(Gguf, ReadsVersion2) {
  Raw r;
  r.header(1, 1, 2).kv_str("general.name", "v2").tensor("w", {4}, kF32, 0).pad().zeros(16);
  const auto f = gguf::File::from_memory(r.b);
  EXPECT_EQ(f.version(), 2u);
  EXPECT_EQ(f.get_string("general.name"), "v2");
  EXPECT_EQ(f.tensor("w").bytes.size(), 16u);
}

// ---------------------------------------------------------------------------------------------
// Writer behaviour

TEST(GgufWriter, DestroyedBeforeFinishLeavesTargetUntouched) {
  TempDir dir;
  const auto path = dir.file("keep.gguf");
  const std::vector<std::byte> old = pattern(100, 9);
  write_bytes(path, old);
  {
    gguf::Writer w(path);
    w.set("general.name", std::string("new"));
    w.add_tensor("a", Type::F32, {4});
    w.write_tensor("a", pattern(16, 0));
  }
  EXPECT_EQ(read_bytes(path), old);
  std::size_t n_files = 0;
  for ([[maybe_unused]] const auto& e : fs::directory_iterator(path.parent_path())) ++n_files;
  EXPECT_EQ(n_files, 1u) << "the temporary file was left behind";
}

TEST(GgufWriter, FinishReplacesTarget) {
  TempDir dir;
  const auto path = dir.file("replace.gguf");
  write_bytes(path, pattern(100, 9));
  write_model(path, {{"general.name", std::string("new")}}, some_tensors());
  EXPECT_EQ(gguf::File::open(path).get_string("general.name"), "new");
  std::size_t n_files = 0;
  for ([[maybe_unused]] const auto& e : fs::directory_iterator(path.parent_path())) ++n_files;
  EXPECT_EQ(n_files, 1u);
}

std::string writer_error(const std::function<void(gguf::Writer&)>& f) {
  TempDir dir;
  try {
    gguf::Writer w(dir.file("w.gguf"));
    f(w);
  } catch (const qtl::Error& e) {
    return e.what();
  }
  return "<no error>";
}

TEST(GgufWriter, RefusesMisuse) {
  const auto has = [](const std::string& msg, std::string_view part) {
    EXPECT_NE(msg.find(part), std::string::npos) << msg;
  };
  has(writer_error([](gguf::Writer& w) {
        w.add_tensor("a", Type::F32, {4});
        w.add_tensor("b", Type::F32, {4});
        w.write_tensor("b", pattern(16, 0));
      }),
      "the next tensor in declaration order is 'a'");
  has(writer_error([](gguf::Writer& w) {
        w.add_tensor("a", Type::F32, {4});
        w.write_tensor("a", pattern(15, 0));
      }),
      "takes 16 bytes, got 15");
  has(writer_error([](gguf::Writer& w) {
        w.add_tensor("a", Type::F32, {4});
        w.write_tensor("a", pattern(16, 0));
        w.set("k", 1.0f);
      }),
      "set after the first write_tensor");
  has(writer_error([](gguf::Writer& w) {
        w.add_tensor("a", Type::F32, {4});
        w.add_tensor("b", Type::F32, {4});
        w.write_tensor("a", pattern(16, 0));
        w.finish();
      }),
      "1 of 2 tensors unwritten (next: 'b')");
  has(writer_error([](gguf::Writer& w) { w.add_tensor("a", Type::Q4_0, {33}); }),
      "row length ne0 = 33 is not a multiple of q4_0's block size 32");
  has(writer_error([](gguf::Writer& w) {
        w.add_tensor("a", Type::F32, {4});
        w.add_tensor("a", Type::F32, {4});
      }),
      "tensor 'a' is declared twice");
  has(writer_error([](gguf::Writer& w) { w.add_tensor(std::string(64, 'x'), Type::F32, {4}); }),
      "more than llama.cpp's 63");
  has(writer_error([](gguf::Writer& w) { w.add_tensor("a", Type::F32, {1, 1, 1, 1, 1}); }),
      "has 5 dimensions");
  has(writer_error([](gguf::Writer& w) {
        w.add_tensor("a", Type::F32, {std::int64_t{1} << 32, std::int64_t{1} << 32});
      }),
      "overflows 64 bits");
  has(writer_error([](gguf::Writer& w) { w.set("general.alignment", std::uint32_t{48}); }),
      "48 is not a nonzero power of two");
  has(writer_error([](gguf::Writer& w) { w.set("general.alignment", std::uint64_t{64}); }),
      "must be uint32, got uint64");
  has(writer_error([](gguf::Writer& w) {
        w.set("k", gguf::Array{gguf::ValueType::F32, {1.0f, std::int32_t{2}}});
      }),
      "element 1 has type int32, the array's element type is float32");
  has(writer_error([](gguf::Writer& w) { w.finish(); w.finish(); }), "finish called twice");
}

TEST(GgufWriter, SetReplacesInPlace) {
  TempDir dir;
  const auto path = dir.file("r.gguf");
  {
    gguf::Writer w(path);
    w.set("a", std::uint32_t{1});
    w.set("b", std::uint32_t{2});
    w.set("a", std::string("again"));
    w.finish();
  }
  const auto f = gguf::File::open(path);
  ASSERT_EQ(f.metadata().size(), 2u);
  EXPECT_EQ(f.metadata()[0].key, "a");
  EXPECT_EQ(f.get_string("a"), "again");
}

// ---------------------------------------------------------------------------------------------
// Bad input: every one a qtl::Error naming the field and its value.

TEST(GgufBadInput, EveryTruncationThrows) {
  TempDir dir;
  const auto path = dir.file("small.gguf");
  // The last tensor's size is a multiple of the alignment: the file has no trailing padding,
  // so every proper prefix lacks bytes the file needs.
  write_model(path,
              {{"general.architecture", std::string("llama")},
               {"t.arr", gguf::Array::of(std::vector<std::string>{"a", "bc"})},
               {"t.nested", gguf::Array{gguf::ValueType::Array,
                                        {gguf::Array::of(std::vector<std::int16_t>{1, 2})}}},
               {"t.f", 0.5f},
               {"t.b", true}},
              {{"a", Type::Q4_0, {32}, 18}, {"b", Type::F32, {8}, 32}});
  const auto bytes = read_bytes(path);
  ASSERT_EQ(parse_error(bytes), "<no error>");
  for (std::size_t n = 0; n < bytes.size(); ++n) {
    // A copy of exactly n bytes, so that a read past the end is a sanitizer error, not luck.
    const std::vector<std::byte> prefix(bytes.begin(), bytes.begin() + static_cast<std::ptrdiff_t>(n));
    const std::string msg = parse_error(prefix);
    EXPECT_NE(msg, "<no error>") << "prefix of " << n << " bytes parsed";
    EXPECT_EQ(msg.rfind("gguf: 't.gguf': ", 0), 0u) << msg;
  }
  // The mapped path too, for a few lengths (0 bytes: nothing to map).
  for (std::size_t n : {std::size_t{0}, std::size_t{3}, std::size_t{24}, bytes.size() - 1}) {
    const auto p = dir.file(qtl::str_cat("prefix", n, ".gguf"));
    write_bytes(p, std::span(bytes).first(n));
    EXPECT_THROW((void)gguf::File::open(p), qtl::Error) << n;
  }
}

TEST(GgufBadInput, MissingFileOrFolder) {
  EXPECT_THROW((void)gguf::File::open("/nonexistent/x.gguf"), qtl::Error);
  TempDir dir;
  EXPECT_THROW((void)gguf::File::open(dir.file("")), qtl::Error);  // a folder
  EXPECT_THROW(gguf::Writer(dir.file("missing/x.gguf")), qtl::Error);
}

static_assert(!std::is_copy_constructible_v<gguf::File> && std::is_move_constructible_v<gguf::File> &&
              std::is_move_assignable_v<gguf::File>);

TEST(GgufBadInput, WrongMagic) {
  Raw r;
  r.str_raw("GGML").put<std::uint32_t>(3).put<std::uint64_t>(0).put<std::uint64_t>(0);
  expect_error(r, {"magic is 'GGML', not 'GGUF'"});
}

TEST(GgufBadInput, Version1And4) {
  Raw v1, v4, v0;
  v1.header(0, 0, 1);
  v4.header(0, 0, 4);
  v0.header(0, 0, 0);
  expect_error(v1, {"version 1 is not supported"});
  expect_error(v4, {"version 4 is not supported"});
  expect_error(v0, {"version 0 is not supported"});
}

TEST(GgufBadInput, AbsurdCounts) {
  Raw kv, tensors;
  kv.header(0, std::uint64_t{1} << 60).zeros(64);
  tensors.header(std::uint64_t{1} << 60, 0).zeros(64);
  expect_error(kv, {"metadata kv count 1152921504606846976 is absurd"});
  expect_error(tensors, {"tensor count 1152921504606846976 is absurd"});
  Raw arr;
  arr.header(0, 1).str("k").put<std::uint32_t>(9).put<std::uint32_t>(4).put<std::uint64_t>(1000).zeros(40);
  expect_error(arr, {"array count 1000 of uint32", "only 40 bytes are left"});
  Raw arr_strings;  // 8 bytes per string length at least
  arr_strings.header(0, 1).str("k").put<std::uint32_t>(9).put<std::uint32_t>(8).put<std::uint64_t>(6).zeros(40);
  expect_error(arr_strings, {"array count 6 of string"});
}

TEST(GgufBadInput, StringLengthPastEnd) {
  Raw key, value, name;
  key.header(0, 1).put<std::uint64_t>(~0ull).zeros(8);
  value.header(0, 1).str("general.name").put<std::uint32_t>(8).put<std::uint64_t>(100).zeros(10);
  name.header(1, 0).put<std::uint64_t>(1000).str_raw("w").zeros(40);
  expect_error(key, {"metadata kv 0: the key has length 18446744073709551615", "past the end"});
  expect_error(value, {"'general.name': the string value has length 100", "10 bytes left"});
  expect_error(name, {"tensor info 0: the tensor name has length 1000"});
}

TEST(GgufBadInput, DimensionsOverflow) {
  Raw r;
  r.header(1, 0).tensor("w", {std::uint64_t{1} << 32, std::uint64_t{1} << 32}, kF32, 0).pad();
  expect_error(r, {"tensor 'w'", "4294967296 x 4294967296 overflows 64 bits"});
  Raw bytes;  // elements fit int64, bytes do not
  bytes.header(1, 0).tensor("w", {std::uint64_t{1} << 31, std::uint64_t{1} << 31}, kF32, 0).pad();
  expect_error(bytes, {"tensor 'w'", "size in bytes", "overflows 64 bits"});
  Raw negative;
  negative.header(1, 0).tensor("w", {~0ull}, kF32, 0).pad();
  expect_error(negative, {"dimension 0 is 18446744073709551615, more than int64 holds"});
  Raw dims;
  dims.header(1, 0).tensor("w", {1, 1, 1, 1, 1}, kF32, 0).pad();
  expect_error(dims, {"n_dims 5 is more than 4"});
}

TEST(GgufBadInput, OffsetOutsideFile) {
  Raw r;
  r.header(1, 0).tensor("w", {4}, kF32, 32).pad().zeros(32);
  expect_error(r, {"tensor 'w': bytes [32, 32 + 16)", "outside the file", "holds 32 bytes"});
  Raw huge;
  huge.header(1, 0).tensor("w", {4}, kF32, ~0ull - 31).pad().zeros(32);
  expect_error(huge, {"tensor 'w': bytes [18446744073709551584", "outside the file"});
  Raw data;  // the data section itself starts past the end
  data.header(1, 0).tensor("w", {0}, kF32, 0);
  expect_error(data, {"data section: starts at", "past the end of the file"});
}

TEST(GgufBadInput, OverlappingTensors) {
  Raw r;
  r.header(2, 0).tensor("a", {16}, kF32, 0).tensor("b", {4}, kF32, 32).pad().zeros(64);
  expect_error(r, {"tensors 'a' (bytes [0, 64)) and 'b' (bytes [32, 48)) overlap"});
  Raw ok;  // zero-size tensors overlap nothing
  ok.header(2, 0).tensor("a", {8}, kF32, 0).tensor("b", {0, 3}, kF32, 0).pad().zeros(32);
  EXPECT_EQ(parse_error(ok.b), "<no error>");
}

TEST(GgufBadInput, MisalignedOffset) {
  Raw r;
  r.header(1, 0).tensor("blk.0.attn_q.weight", {4}, kF32, 16).pad().zeros(64);
  expect_error(r, {"tensor 0 'blk.0.attn_q.weight': offset 16 is not a multiple of the alignment 32"});
  Raw a64;
  a64.header(1, 1).kv_u32("general.alignment", 64).tensor("w", {4}, kF32, 32).pad(64).zeros(64);
  expect_error(a64, {"offset 32 is not a multiple of the alignment 64"});
}

TEST(GgufBadInput, UnknownTypes) {
  Raw tensor;
  tensor.header(1, 0).tensor("w", {4}, 999, 0).pad().zeros(32);
  expect_error(tensor, {"tensor 0 'w': ggml type 999 is unknown"});
  Raw value;
  value.header(0, 1).str("k").put<std::uint32_t>(13).zeros(8);
  expect_error(value, {"metadata kv 0 'k': the value type is 13, not a GGUF value type"});
  Raw element;
  element.header(0, 1).str("k").put<std::uint32_t>(9).put<std::uint32_t>(77).put<std::uint64_t>(0);
  expect_error(element, {"the array element type is 77"});
}

TEST(GgufBadInput, DuplicateTensorNames) {
  Raw r;
  r.header(2, 0).tensor("w", {8}, kF32, 0).tensor("w", {8}, kF32, 32).pad().zeros(64);
  expect_error(r, {"tensor 1 'w': duplicate tensor name (also tensor 0)"});
}

TEST(GgufBadInput, DuplicateKeys) {
  Raw r;
  r.header(0, 2).kv_u32("general.x", 1).kv_u32("general.x", 2);
  expect_error(r, {"metadata kv 1 'general.x': duplicate key (also kv 0)"});
}

TEST(GgufBadInput, EmptyNames) {
  Raw key, tensor;
  key.header(0, 1).kv_u32("", 1);
  tensor.header(1, 0).tensor("", {8}, kF32, 0).pad().zeros(32);
  expect_error(key, {"the key is empty"});
  expect_error(tensor, {"the tensor name is empty"});
}

TEST(GgufBadInput, RowLengthNotAMultipleOfTheBlock) {
  Raw r;
  r.header(1, 0).tensor("w", {33, 2}, kQ4_0, 0).pad().zeros(128);
  expect_error(r, {"tensor 'w': row length ne0 = 33 is not a multiple of q4_0's block size 32"});
}

TEST(GgufBadInput, BadAlignment) {
  for (std::uint32_t a : {0u, 3u, 48u}) {
    Raw r;
    r.header(0, 1).kv_u32("general.alignment", a);
    expect_error(r, {qtl::str_cat("alignment ", a, " is not a nonzero power of two")});
  }
  Raw typed;
  typed.header(0, 1).str("general.alignment").put<std::uint32_t>(10).put<std::uint64_t>(32);
  expect_error(typed, {"'general.alignment': has type uint64, must be uint32"});
}

TEST(GgufBadInput, BoolNotZeroOrOne) {
  Raw r;
  r.header(0, 1).str("k").put<std::uint32_t>(7).put<std::uint8_t>(2);
  expect_error(r, {"bool value at offset", "is 2, not 0 or 1"});
}

TEST(GgufBadInput, ArraysNestedTooDeep) {
  Raw r;
  r.header(0, 1).str("k").put<std::uint32_t>(9);
  for (int i = 0; i < 40; ++i) r.put<std::uint32_t>(9).put<std::uint64_t>(1);
  r.put<std::uint32_t>(0).put<std::uint64_t>(0);
  expect_error(r, {"arrays nested deeper than 16 levels"});
}

}  // namespace
