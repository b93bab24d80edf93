// libFuzzer target for qtl::gguf::File (qtl/io/gguf.hpp): parses arbitrary bytes, then reads
// every metadata value through every getter and touches every tensor's bytes. Any input must
// either parse or throw qtl::Error; a crash, a sanitizer report or another exception is a bug.
//
// Built with clang; in a clang build with -DQTL_SANITIZE=address,undefined (CI's sanitizer
// build) it is the target qtl_fuzz_<name> (and qtl_fuzz_<name>_seeds). By hand, from the
// repository root:
//   clang++ -std=c++20 -O1 -g -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
//       -Iinclude tests/fuzz/gguf_fuzz.cpp -o /tmp/gguf_fuzz
//   clang++ -std=c++20 -O1 -DQTL_GGUF_FUZZ_SEEDS -Iinclude tests/fuzz/gguf_fuzz.cpp -o /tmp/gguf_seeds
//   /tmp/gguf_seeds /tmp/gguf_seeds_dir           # seed files made by qtl::gguf::Writer
//   mkdir -p /tmp/gguf_corpus
//   /tmp/gguf_fuzz -max_total_time=600 -jobs=1 -workers=1 /tmp/gguf_corpus /tmp/gguf_seeds_dir
// (new inputs go to the first folder). A crash leaves crash-<sha1> in the working folder:
// turn it into a test in tests/io/gguf_test.cpp. ctest's gguf_fuzz_smoke runs the same target
// for 20 s in that build (tests/CMakeLists.txt).
#include "qtl/io/gguf.hpp"

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <span>
#include <string>
#include <vector>

namespace {

namespace gguf = qtl::gguf;

std::uint64_t sink = 0;

void touch(const gguf::Value& v) {
  std::visit(
      [](const auto& x) {
        using T = std::remove_cvref_t<decltype(x)>;
        if constexpr (std::is_same_v<T, std::string>) {
          for (char c : x) sink += static_cast<unsigned char>(c);
        } else if constexpr (std::is_same_v<T, gguf::Array>) {
          for (const gguf::Value& item : x.items) {
            if (item.type() != x.type) std::abort();  // the parser promises uniform arrays
            touch(item);
          }
        } else if constexpr (std::is_floating_point_v<T>) {
          sink += x > 0 ? 1 : 0;  // a cast of NaN or of a large float to an integer is undefined
        } else {
          sink += static_cast<std::uint64_t>(x);
        }
      },
      v.v);
}

template <class F>
void try_get(F&& f) {
  try {
    f();
  } catch (const qtl::Error&) {
  }
}

void exercise(const gguf::File& f) {
  for (const gguf::KeyValue& kv : f.metadata()) {
    touch(kv.value);
    if (f.find(kv.key) != &kv.value) std::abort();
    try_get([&] { sink += f.get_u32(kv.key); });
    try_get([&] { sink += static_cast<std::uint64_t>(f.get_i64(kv.key)); });
    try_get([&] { sink += f.get_string(kv.key).size(); });
    try_get([&] { sink += static_cast<std::uint64_t>(f.get_f64(kv.key) != 0.0); });
    try_get([&] { sink += f.get_bool(kv.key); });
    try_get([&] { sink += f.get_array<std::int32_t>(kv.key).size(); });
    try_get([&] { sink += f.get_array<std::string>(kv.key).size(); });
    try_get([&] { sink += f.get_array<double>(kv.key).size(); });
  }
  for (const gguf::TensorInfo& t : f.tensors()) {
    const gguf::TensorView v = f.tensor(t.name);
    if (v.bytes.size() != t.n_bytes || v.shape.size() > 4) std::abort();
    for (std::byte b : v.bytes) sink += static_cast<std::uint8_t>(b);
  }
}

}  // namespace

#ifndef QTL_GGUF_FUZZ_SEEDS

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  try {
    const gguf::File f =
        gguf::File::from_memory(std::span(reinterpret_cast<const std::byte*>(data), size), "fuzz");
    exercise(f);
  } catch (const qtl::Error&) {
  }
  return 0;
}

#else  // a program that writes the seed corpus into the folder argv[1]

#include <filesystem>

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s <seed folder>\n", argv[0]);
    return 2;
  }
  namespace fs = std::filesystem;
  using qtl::ggml::Type;
  const fs::path dir = argv[1];
  fs::create_directories(dir);
  const auto bytes = [](std::size_t n, int seed) {
    std::vector<std::byte> out(n);
    for (std::size_t i = 0; i < n; ++i) out[i] = static_cast<std::byte>((i * 13 + static_cast<std::size_t>(seed)) & 0xFF);
    return out;
  };
  {
    gguf::Writer w(dir / "empty.gguf");
    w.finish();
  }
  {
    gguf::Writer w(dir / "metadata.gguf");
    w.set("general.architecture", std::string("llama"));
    w.set("u8", std::uint8_t{1});
    w.set("i8", std::int8_t{-1});
    w.set("u16", std::uint16_t{2});
    w.set("i16", std::int16_t{-2});
    w.set("u32", std::uint32_t{3});
    w.set("i32", std::int32_t{-3});
    w.set("f32", 0.5f);
    w.set("bool", true);
    w.set("u64", std::uint64_t{4});
    w.set("i64", std::int64_t{-4});
    w.set("f64", 0.25);
    w.set("tokens", gguf::Array::of(std::vector<std::string>{"<s>", "a", "bc"}));
    w.set("scores", gguf::Array::of(std::vector<float>{0.f, -1.f, -2.f}));
    w.set("types", gguf::Array::of(std::vector<std::int32_t>{1, 1, 2}));
    w.set("flags", gguf::Array::of(std::vector<bool>{true, false}));
    w.set("nested", gguf::Array{gguf::ValueType::Array,
                                {gguf::Array::of(std::vector<std::uint16_t>{1, 2}),
                                 gguf::Array::of(std::vector<std::uint16_t>{})}});
    w.finish();
  }
  {
    gguf::Writer w(dir / "tensors.gguf");
    w.set("general.name", std::string("t"));
    w.add_tensor("f32", Type::F32, {3, 2});
    w.add_tensor("q4_0", Type::Q4_0, {32});
    w.add_tensor("q8_0", Type::Q8_0, {32, 1, 1});
    w.add_tensor("f16", Type::F16, {2, 1, 1, 2});
    w.write_tensor("f32", bytes(24, 1));
    w.write_tensor("q4_0", bytes(18, 2));
    w.write_tensor("q8_0", bytes(34, 3));
    w.write_tensor("f16", bytes(8, 4));
    w.finish();
  }
  {
    gguf::Writer w(dir / "aligned64.gguf");
    w.set("general.alignment", std::uint32_t{64});
    w.add_tensor("q4_k", Type::Q4_K, {256});
    w.add_tensor("i32", Type::I32, {5});
    w.write_tensor("q4_k", bytes(144, 5));
    w.write_tensor("i32", bytes(20, 6));
    w.finish();
  }
  for (const auto& e : fs::directory_iterator(dir)) exercise(gguf::File::open(e.path()));
  return 0;
}

#endif
