// libFuzzer target for the llama2.c checkpoint reader (qtl/io/llama2c.hpp) and the tokenizer
// (qtl/model/tokenizer.hpp). The first byte of an input picks what the rest is:
//   0: a llama2.c checkpoint file; when it loads, the Transformer is built from it and runs
//      one token;
//   1: a llama2.c tokenizer file; when it loads, its own pieces and a few fixed texts are
//      encoded, every id must be in range and decode;
//   2: text, encoded by a small fixed vocabulary without byte fallback (unknown characters map
//      to <unk>) and by one with byte fallback.
// Any input must either work or throw qtl::Error; a crash, a sanitizer report, an id out of range
// or another exception is a bug.
//
// Built with clang; in a clang build with -DQTL_SANITIZE=address,undefined (CI's sanitizer
// build) it is the target qtl_fuzz_<name> (and qtl_fuzz_<name>_seeds). By hand, from the
// repository root:
//   clang++ -std=c++20 -O1 -g -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
//       -Iinclude -isystem /usr/include/eigen3 tests/fuzz/model_fuzz.cpp -o /tmp/model_fuzz
//   clang++ -std=c++20 -O1 -DQTL_MODEL_FUZZ_SEEDS -Iinclude -isystem /usr/include/eigen3 \
//       tests/fuzz/model_fuzz.cpp -o /tmp/model_seeds
//   /tmp/model_seeds /tmp/model_seeds_dir && mkdir -p /tmp/model_corpus
//   /tmp/model_fuzz -max_total_time=600 -max_len=8192 /tmp/model_corpus /tmp/model_seeds_dir
// A crash leaves crash-<sha1> in the working folder: turn it into a test in
// tests/io/llama2c_test.cpp or tests/model/tokenizer_test.cpp. ctest's model_fuzz_smoke runs
// it for 20 s in that build (tests/CMakeLists.txt).
#include "qtl/io/llama2c.hpp"
#include "qtl/model/tokenizer.hpp"
#include "qtl/model/transformer.hpp"

#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>
#include <vector>

namespace {

namespace m = qtl::model;

std::uint64_t sink = 0;

/// A per-process scratch file (the readers take paths).
const std::filesystem::path& scratch() {
  static const std::filesystem::path p =
      std::filesystem::temp_directory_path() / ("qtl_model_fuzz_" + std::to_string(::getpid()) + ".bin");
  return p;
}

void write_file(const std::filesystem::path& p, const std::uint8_t* data, std::size_t size) {
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
  if (!out) std::abort();
}

void check_encode(const m::Tokenizer& t, std::string_view text) {
  try {
    for (bool bos : {false, true}) {
      const std::vector<int> ids = t.encode(text, bos);
      for (int id : ids) {
        if (id < 0 || id >= t.vocab_size()) std::abort();
        sink += t.piece(id).size();
      }
    }
  } catch (const qtl::Error&) {
    // an unencodable character in a vocabulary without byte fallback or <unk>
  }
}

[[maybe_unused]] void fuzz_checkpoint(const std::uint8_t* data, std::size_t size) {
  write_file(scratch(), data, size);
  const auto ckpt = qtl::io::Llama2cCheckpoint::load(scratch());
  const m::Transformer model(ckpt);
  const qtl::RowMatrixXf logits = model.forward(std::vector<int>{0});
  if (logits.rows() != 1 || logits.cols() != model.config().vocab_size) std::abort();
  sink += static_cast<std::uint64_t>(logits.size());
}

[[maybe_unused]] void fuzz_tokenizer(const std::uint8_t* data, std::size_t size) {
  write_file(scratch(), data, size);
  const m::Tokenizer t = m::Tokenizer::load(scratch());
  std::string all;
  for (int id = 0; id < t.vocab_size() && all.size() < 4096; ++id) all += t.piece(id);
  check_encode(t, all);
  check_encode(t, "Once upon a time, there was a little girl.\n");
  check_encode(t, "\xC3\xA9\xE2\x96\x81 \xF0\x9F\x99\x82 \xFF\x80");
}

[[maybe_unused]] const m::Tokenizer& small_vocab(bool byte_fallback) {
  static const m::Tokenizer plain = m::Tokenizer::from_pieces(
      {"<unk>", "<s>", "</s>", "\xE2\x96\x81", "a", "b", "ab", "\xE2\x96\x81" "a", "c", "\xC3\xA9"},
      {0, 0, 0, -1, -2, -2, -1.5f, -1, -3, -4}, {}, 0, 1, 2, "fuzz vocabulary");
  static const m::Tokenizer bytes = [] {
    std::vector<std::string> pieces = {"<unk>", "<s>", "</s>"};
    std::vector<float> scores = {0, 0, 0};
    for (int b = 0; b < 256; ++b) {
      char name[8];
      std::snprintf(name, sizeof name, "<0x%02X>", b);
      pieces.emplace_back(name);
      scores.push_back(0);
    }
    for (const char* p : {"\xE2\x96\x81", "a", "b", "ab", "\xE2\x96\x81" "a"}) {
      pieces.emplace_back(p);
      scores.push_back(-static_cast<float>(pieces.size()));
    }
    return m::Tokenizer::from_pieces(std::move(pieces), std::move(scores), {}, 0, 1, 2, "fuzz byte vocabulary");
  }();
  return byte_fallback ? bytes : plain;
}

}  // namespace

#ifndef QTL_MODEL_FUZZ_SEEDS

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  try {
    switch (data[0] % 3) {
      case 0: fuzz_checkpoint(data + 1, size - 1); break;
      case 1: fuzz_tokenizer(data + 1, size - 1); break;
      default: {
        const std::string_view text(reinterpret_cast<const char*>(data + 1), size - 1);
        check_encode(small_vocab(false), text);
        check_encode(small_vocab(true), text);
      }
    }
  } catch (const qtl::Error&) {
  }
  return 0;
}

#else  // a program that writes the seed corpus into the folder argv[1]

namespace {

void put_i32(std::string& out, std::int32_t v) { out.append(reinterpret_cast<const char*>(&v), 4); }
void put_f32(std::string& out, float v) { out.append(reinterpret_cast<const char*>(&v), 4); }

/// A valid tiny checkpoint: dim 8, hidden 16, n_layers layers, 2 heads, kv_heads, vocab 6.
std::string checkpoint(int n_layers, int kv_heads, bool shared, bool rope) {
  const int dim = 8, hidden = 16, heads = 2, vocab = 6, seq = 4, head = dim / heads, kv = dim / heads * kv_heads;
  std::string out(1, '\0');
  for (int v : {dim, hidden, n_layers, heads, kv_heads, shared ? vocab : -vocab, seq}) put_i32(out, v);
  const long floats = static_cast<long>(vocab) * dim +
                      static_cast<long>(n_layers) * (2 * dim + 2 * dim * dim + 2 * kv * dim + 3 * hidden * dim) + dim +
                      (rope ? static_cast<long>(seq) * head : 0) + (shared ? 0 : static_cast<long>(vocab) * dim);
  for (long i = 0; i < floats; ++i) put_f32(out, static_cast<float>((i * 37) % 17 - 8) / 16.0f);
  return out;
}

std::string tokenizer(bool byte_tokens) {
  std::string out(1, '\1');
  put_i32(out, 8);
  std::vector<std::string> pieces = {"<unk>", "<s>", "</s>"};
  if (byte_tokens) {
    for (int b = 0; b < 256; ++b) {
      char name[8];
      std::snprintf(name, sizeof name, "<0x%02X>", b);
      pieces.emplace_back(name);
    }
  }
  for (const char* p : {" ", "a", "b", " a", "ab", "\xC3\xA9"}) pieces.emplace_back(p);
  for (std::size_t i = 0; i < pieces.size(); ++i) {
    put_f32(out, -static_cast<float>(i));
    put_i32(out, static_cast<std::int32_t>(pieces[i].size()));
    out += pieces[i];
  }
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s <seed folder>\n", argv[0]);
    return 2;
  }
  namespace fs = std::filesystem;
  const fs::path dir = argv[1];
  fs::create_directories(dir);
  const auto put = [&](const char* name, const std::string& bytes) {
    std::ofstream(dir / name, std::ios::binary) << bytes;
  };
  put("ckpt_shared_rope", checkpoint(1, 2, true, true));
  put("ckpt_separate", checkpoint(2, 1, false, false));
  put("tok_plain", tokenizer(false));
  put("tok_bytes", tokenizer(true));
  put("text_ascii", std::string("\2Once upon a time, a bab\n"));
  put("text_utf8", std::string("\2\xC3\xA9 \xE2\x96\x81" "ab \xF0\x9F\x99\x82 \xFF"));
  return 0;
}

#endif
