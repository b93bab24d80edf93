// libFuzzer target for the C API's deserializer (qtl/c/matrix.hpp: qtl_deserialize's reader).
// The first byte of an input picks how the rest is read:
//   even: as is (so the checksum check itself is fuzzed);
//   odd:  with its last 8 bytes replaced by the valid checksum of the others, so the fuzzer
//         gets past the checksum into the header, payload and packed-format checks.
// Any input must either load or fail with qtl::Error. One that loads must multiply to finite
// values and serialize back to exactly the bytes it was read from. A crash, a sanitizer report,
// another exception or a mismatch is a bug.
//
// Built with clang; in a clang build with -DQTL_SANITIZE=address,undefined (CI's sanitizer
// build) it is the target qtl_fuzz_<name> (and qtl_fuzz_<name>_seeds). By hand, from the
// repository root:
//   clang++ -std=c++20 -O1 -g -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
//       -Iinclude -isystem /usr/include/eigen3 tests/fuzz/c_api_fuzz.cpp -o /tmp/c_api_fuzz
//   clang++ -std=c++20 -O1 -DQTL_C_API_FUZZ_SEEDS -Iinclude -isystem /usr/include/eigen3 \
//       tests/fuzz/c_api_fuzz.cpp -o /tmp/c_api_seeds
//   /tmp/c_api_seeds /tmp/c_api_seeds_dir && mkdir -p /tmp/c_api_corpus
//   /tmp/c_api_fuzz -max_total_time=600 -max_len=8192 /tmp/c_api_corpus /tmp/c_api_seeds_dir
// A crash leaves crash-<sha1> in the working folder: turn it into a test in
// tests/c/c_api_test.cpp. ctest's c_api_fuzz_smoke runs it for 20 s in that build.
#include "qtl/c/matrix.hpp"

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <vector>

#ifdef QTL_C_API_FUZZ_SEEDS
#include <filesystem>
#include <fstream>
#include <string>

#include "qtl/quant/quantize_matrix.hpp"
#endif

namespace {

void fuzz_one(const std::uint8_t* data, std::size_t size) {
  std::optional<qtl_matrix> loaded;
  try {
    loaded.emplace(qtl::c_api::deserialize(data, size));
  } catch (const qtl::Error&) {
    return;
  }
  const qtl_matrix& m = *loaded;
  // It loaded: it multiplies to finite values and writes back the same bytes.
  std::vector<float> x(static_cast<std::size_t>(m.cols) * 2), y(static_cast<std::size_t>(m.rows) * 2);
  for (std::size_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>(static_cast<int>(i % 7) - 3) * 0.25f;
  qtl::c_api::multiply(m, x.data(), static_cast<std::size_t>(m.cols), 2, y.data(), static_cast<std::size_t>(m.rows), 1);
  for (float v : y) {
    if (!std::isfinite(v)) std::abort();
  }
  const std::vector<std::uint8_t> again = qtl::c_api::serialize(m);
  if (again.size() != size || std::memcmp(again.data(), data, size) != 0) std::abort();
}

}  // namespace

#ifndef QTL_C_API_FUZZ_SEEDS

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  std::vector<std::uint8_t> input(data + 1, data + size);
  if ((data[0] & 1) && input.size() >= 8) {
    const std::uint64_t sum = qtl::c_api::fnv1a64(input.data(), input.size() - 8);
    std::memcpy(input.data() + input.size() - 8, &sum, 8);
  }
  fuzz_one(input.data(), input.size());
  return 0;
}

#else

namespace {

template <class Q>
void write_seed(const std::filesystem::path& dir, const std::string& name, const Q& q, qtl::c_api::FormatId id,
                qtl::Index rows, qtl::Index cols, const qtl::Granularity& g, bool int8, bool scales) {
  qtl::RowMatrixXf w(rows, cols);
  for (qtl::Index i = 0; i < w.size(); ++i) w.data()[i] = std::sin(0.37f * static_cast<float>(i)) * 0.1f;
  qtl_matrix m;
  m.format = id;
  m.rows = rows;
  m.cols = cols;
  m.activations = int8 ? qtl::kernel::ActivationMode::Int8 : qtl::kernel::ActivationMode::Fp32;
  if constexpr (qtl::c_api::kIsKQuant<Q>) {
    m.ggml.emplace(Q::kType, rows, cols, qtl::ggml::to_blocks(qtl::ggml::quantize_k(q, w)));
  } else {
    const auto qm = qtl::quantize_matrix(q, g, w);
    if constexpr (requires { Q::kType; }) {
      m.ggml.emplace(Q::kType, rows, cols, qtl::ggml::to_blocks(qm));
    } else if constexpr (requires { qtl::pack(qm); }) {
      m.uniform.emplace(qtl::pack(qm));
    } else {
      m.table.emplace(qtl::pack_table(qm));
    }
  }
  if (scales) m.input_scale = qtl::VectorXf::LinSpaced(cols, 0.5f, 2.0f);
  qtl::c_api::build_kernel(m);
  const std::vector<std::uint8_t> bytes = qtl::c_api::serialize(m);
  fuzz_one(bytes.data(), bytes.size());  // the seed itself must pass
  for (std::uint8_t mode : {0, 1}) {
    std::ofstream out(dir / (name + (mode ? "_resealed" : "")), std::ios::binary | std::ios::trunc);
    out.put(static_cast<char>(mode));
    out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) return 2;
  const std::filesystem::path dir = argv[1];
  std::filesystem::create_directories(dir);
  using qtl::c_api::FormatId;
  write_seed(dir, "uniform4", qtl::Uniform<4>{}, FormatId::Uniform4, 3, 40, qtl::PerGroup{8}, false, false);
  write_seed(dir, "uniform3_int8", qtl::Uniform<3>{}, FormatId::Uniform3, 2, 64, qtl::PerRow{}, true, true);
  write_seed(dir, "uniform8", qtl::Uniform<8>{}, FormatId::Uniform8, 2, 33, qtl::PerGroup{16}, true, false);
  write_seed(dir, "nf4", qtl::NF4{}, FormatId::NF4, 2, 48, qtl::PerGroup{16}, false, true);
  write_seed(dir, "ternary_int8", qtl::Ternary{}, FormatId::Ternary, 2, 32, qtl::PerGroup{32}, true, false);
  write_seed(dir, "log2_3", qtl::Log2<3>{}, FormatId::Log2_3, 2, 40, qtl::PerGroup{20}, false, false);
  write_seed(dir, "q4_1", qtl::ggml::GgmlQ4_1{}, FormatId::Q4_1, 2, 64, qtl::PerGroup{32}, false, false);
  write_seed(dir, "q8_0", qtl::ggml::GgmlQ8_0{}, FormatId::Q8_0, 1, 32, qtl::PerGroup{32}, false, true);
  write_seed(dir, "q4_K", qtl::ggml::GgmlQ4_K{}, FormatId::Q4_K, 2, 256, qtl::PerGroup{256}, false, false);
  write_seed(dir, "q6_K", qtl::ggml::GgmlQ6_K{}, FormatId::Q6_K, 1, 256, qtl::PerGroup{256}, false, true);
  return 0;
}

#endif
