// qtl's ggml block codecs (qtl/quant/ggml_blocks.hpp) against llama.cpp's own libggml-base:
// every decoder gives ggml's to_float bit for bit on random blocks, every reference quantizer
// writes ggml_quantize_chunk's bytes on random and real weights, and the quantizer policies
// (qtl/quant/ggml_quantizers.hpp) driven by quantize_matrix write llama-quantize's bytes.
#include <gtest/gtest.h>

#include <ggml.h>

#include <array>
#include <bit>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "calib/real_inputs.hpp"
#include "data_path.hpp"
#include <qtl/calib/gptq_ggml.hpp>
#include <qtl/quant/ggml_blocks.hpp>
#include <qtl/io/llama2c.hpp>
#include <qtl/quant/ggml_quantizers.hpp>
#include <qtl/quant/quantize_matrix.hpp>

namespace {

namespace g = qtl::ggml;
using g::Type;

ggml_type to_ggml(Type t) { return static_cast<ggml_type>(static_cast<std::uint32_t>(t)); }

/// Index of the first float whose bits differ, or -1.
std::ptrdiff_t first_bit_mismatch(const std::vector<float>& a, const std::vector<float>& b) {
  if (a.size() != b.size()) return 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (std::bit_cast<std::uint32_t>(a[i]) != std::bit_cast<std::uint32_t>(b[i])) {
      return static_cast<std::ptrdiff_t>(i);
    }
  }
  return -1;
}

std::ptrdiff_t first_byte_mismatch(const std::vector<std::byte>& a, const std::vector<std::byte>& b) {
  if (a.size() != b.size()) return 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (a[i] != b[i]) return static_cast<std::ptrdiff_t>(i);
  }
  return -1;
}

/// Byte offsets of the fp16 fields of a block.
std::vector<std::size_t> fp16_fields(Type t) {
  switch (t) {
    case Type::Q4_0: case Type::Q5_0: case Type::Q8_0: case Type::IQ4_NL: return {0};
    case Type::Q4_1: case Type::Q5_1: case Type::Q4_K: case Type::Q5_K: return {0, 2};
    case Type::Q2_K: return {offsetof(g::BlockQ2_K, d), offsetof(g::BlockQ2_K, dmin)};
    case Type::Q3_K: return {offsetof(g::BlockQ3_K, d)};
    case Type::Q6_K: return {offsetof(g::BlockQ6_K, d)};
    case Type::TQ1_0: return {offsetof(g::BlockTQ1_0, d)};
    case Type::TQ2_0: return {offsetof(g::BlockTQ2_0, d)};
    default: return {};
  }
}

/// Random bytes for `blocks` blocks of t, with every fp16 scale field a finite fp16 value
/// (normal, subnormal, zero, either sign).
std::vector<std::byte> random_blocks(Type t, std::size_t blocks, std::mt19937& rng) {
  const auto info = g::type_info(t);
  std::vector<std::byte> bytes(blocks * static_cast<std::size_t>(info.type_size));
  std::uniform_int_distribution<int> byte(0, 255);
  for (auto& b : bytes) b = static_cast<std::byte>(byte(rng));
  std::uniform_int_distribution<int> half(0, 0xFFFF);
  for (std::size_t i = 0; i < blocks; ++i) {
    for (std::size_t off : fp16_fields(t)) {
      std::uint16_t h = 0;
      do {
        h = static_cast<std::uint16_t>(half(rng));
      } while ((h & 0x7C00u) == 0x7C00u);
      std::memcpy(bytes.data() + i * static_cast<std::size_t>(info.type_size) + off, &h, 2);
    }
  }
  return bytes;
}

std::vector<float> ggml_decode(Type t, const std::vector<std::byte>& bytes, std::size_t n) {
  std::vector<float> out(n);
  if (t == Type::F32) {
    std::memcpy(out.data(), bytes.data(), bytes.size());
    return out;
  }
  const auto* traits = ggml_get_type_traits(to_ggml(t));
  EXPECT_NE(traits->to_float, nullptr) << g::type_name(t);
  traits->to_float(bytes.data(), out.data(), static_cast<std::int64_t>(n));
  return out;
}

std::vector<float> qtl_decode(Type t, const std::vector<std::byte>& bytes, std::size_t n) {
  std::vector<float> out(n);
  g::dequantize_row(t, bytes, out);
  return out;
}

std::vector<std::byte> ggml_quantize(Type t, const std::vector<float>& x, std::int64_t n_per_row,
                                     const float* imatrix = nullptr) {
  const std::int64_t rows = static_cast<std::int64_t>(x.size()) / n_per_row;
  std::vector<std::byte> out(static_cast<std::size_t>(rows) * ggml_row_size(to_ggml(t), n_per_row));
  const std::size_t written = ggml_quantize_chunk(to_ggml(t), x.data(), out.data(), 0, rows, n_per_row, imatrix);
  EXPECT_EQ(written, out.size());
  return out;
}

std::vector<std::byte> qtl_quantize(Type t, const std::vector<float>& x) {
  const auto info = g::type_info(t);
  std::vector<std::byte> out(x.size() / static_cast<std::size_t>(info.block_size) *
                             static_cast<std::size_t>(info.type_size));
  g::quantize_row_reference(t, x, out);
  return out;
}

const std::vector<Type> kDecoded = {Type::F32,  Type::F16,  Type::BF16, Type::Q4_0,  Type::Q4_1,
                                    Type::Q5_0, Type::Q5_1, Type::Q8_0, Type::IQ4_NL, Type::Q2_K,
                                    Type::Q3_K, Type::Q4_K, Type::Q5_K, Type::Q6_K,  Type::TQ1_0,
                                    Type::TQ2_0};

TEST(GgmlBlocks, GeometryMatchesGgml) {
  for (Type t : kDecoded) {
    const auto info = g::type_info(t);
    const auto* traits = ggml_get_type_traits(to_ggml(t));
    EXPECT_EQ(info.block_size, traits->blck_size) << info.name;
    EXPECT_EQ(static_cast<std::size_t>(info.type_size), traits->type_size) << info.name;
    EXPECT_EQ(std::string(info.name), std::string(traits->type_name));
  }
}

TEST(GgmlBlocks, DecodersMatchGgmlBitForBitOnRandomBlocks) {
  std::mt19937 rng(1234);
  for (Type t : kDecoded) {
    const auto info = g::type_info(t);
    for (int trial = 0; trial < 20; ++trial) {
      const std::size_t blocks = static_cast<std::size_t>(info.block_size == 1 ? 4096 : 64);
      const auto bytes = info.quantized ? random_blocks(t, blocks, rng) : random_blocks(t, blocks, rng);
      const std::size_t n = blocks * static_cast<std::size_t>(info.block_size);
      const auto want = ggml_decode(t, bytes, n);
      const auto got = qtl_decode(t, bytes, n);
      const auto i = first_bit_mismatch(want, got);
      ASSERT_EQ(i, -1) << info.name << " trial " << trial << ": value " << i << " ggml "
                       << want[static_cast<std::size_t>(i)] << " qtl " << got[static_cast<std::size_t>(i)];
    }
  }
}

TEST(GgmlBlocks, HalfNaNsComeOutAsGgmlDoes) {
  std::vector<std::byte> bytes;
  for (std::uint32_t h = 0; h < 0x10000u; ++h) {
    const auto v = static_cast<std::uint16_t>(h);
    bytes.push_back(static_cast<std::byte>(v & 0xFF));
    bytes.push_back(static_cast<std::byte>(v >> 8));
  }
  for (Type t : {Type::F16, Type::BF16}) {
    const auto want = ggml_decode(t, bytes, 0x10000);
    const auto got = qtl_decode(t, bytes, 0x10000);
    EXPECT_EQ(first_bit_mismatch(want, got), -1) << g::type_name(t);
  }
}

// ---- reference quantizers ------------------------------------------------------------------

const g::TypeInfo& info_of(Type t) {
  static std::vector<g::TypeInfo> infos(g::kGgmlTypes.begin(), g::kGgmlTypes.end());
  for (const auto& i : infos) {
    if (i.type == t) return i;
  }
  return infos[0];
}

/// Rows of n values, each block drawn at its own scale, with the corner cases ggml's rules
/// meet: all-zero blocks, a block of one repeated value, ties in magnitude of opposite sign,
/// one outlier, tiny (fp16-subnormal) scales.
std::vector<float> random_rows(std::size_t n, std::size_t rows, std::mt19937& rng) {
  std::vector<float> x(n * rows);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::uniform_int_distribution<int> kind(0, 9);
  std::uniform_real_distribution<float> log_scale(-9.0f, 3.0f);
  for (std::size_t b = 0; b < x.size() / 32; ++b) {
    float* p = x.data() + b * 32;
    const float s = std::pow(10.0f, log_scale(rng));
    const int k = kind(rng);
    for (int j = 0; j < 32; ++j) p[j] = s * normal(rng);
    if (k == 0) {
      for (int j = 0; j < 32; ++j) p[j] = 0.0f;
    } else if (k == 1) {
      for (int j = 0; j < 32; ++j) p[j] = s;
    } else if (k == 2) {
      p[3] = 4 * s;
      p[17] = -4 * s;
    } else if (k == 3) {
      p[7] = 50 * s;
    } else if (k == 4) {
      for (int j = 0; j < 32; ++j) p[j] = std::round(p[j] * 4) / 4 * s;  // on a grid: exact ties
    }
  }
  return x;
}

/// The real stories260K weights of every 64-wide linear matrix, concatenated.
const std::vector<float>& real_weights() {
  static const std::vector<float> w = [] {
    const auto ck = qtl::io::Llama2cCheckpoint::load(qtl::io::require_data_file("stories260K/stories260K.bin"));
    std::vector<float> out;
    for (const auto& name : ck.linear_names()) {
      const auto m = ck.tensor(name);
      if (m.cols() != 64) continue;
      out.insert(out.end(), m.data(), m.data() + m.size());
    }
    return out;
  }();
  return w;
}

const std::vector<Type> kReference = {Type::F32,  Type::F16,  Type::BF16,   Type::Q4_0,  Type::Q4_1,
                                      Type::Q5_0, Type::Q5_1, Type::Q8_0,   Type::IQ4_NL, Type::Q2_K,
                                      Type::Q3_K, Type::Q4_K, Type::Q5_K,   Type::Q6_K,  Type::TQ1_0,
                                      Type::TQ2_0};

TEST(GgmlBlocks, ReferenceQuantizersWriteGgmlsBytesOnRandomRows) {
  std::mt19937 rng(99);
  for (Type t : kReference) {
    const auto& info = info_of(t);
    const std::size_t n = info.block_size == 256 ? 512 : 256;
    for (int trial = 0; trial < 20; ++trial) {
      const auto x = random_rows(n, 8, rng);
      const auto want = ggml_quantize(t, x, static_cast<std::int64_t>(n));
      const auto got = qtl_quantize(t, x);
      const auto i = first_byte_mismatch(want, got);
      ASSERT_EQ(i, -1) << info.name << " trial " << trial << ": byte " << i << " (block "
                       << i / info.type_size << ")";
    }
  }
}

TEST(GgmlBlocks, ReferenceQuantizersWriteGgmlsBytesOnRealWeights) {
  const auto& w = real_weights();
  ASSERT_GT(w.size(), 10000u);
  for (Type t : kReference) {
    const auto& info = info_of(t);
    const std::size_t n = info.block_size == 256 ? 256 : 64;
    const std::vector<float> x(w.begin(), w.begin() + static_cast<std::ptrdiff_t>(w.size() / n * n));
    const auto want = ggml_quantize(t, x, static_cast<std::int64_t>(n));
    const auto got = qtl_quantize(t, x);
    EXPECT_EQ(first_byte_mismatch(want, got), -1) << info.name;
    // and both decode to the same floats
    EXPECT_EQ(first_bit_mismatch(ggml_decode(t, want, x.size()), qtl_decode(t, got, x.size())), -1) << info.name;
  }
}

TEST(GgmlBlocks, ImportanceRowQuantizersWriteGgmlsBytes) {
  std::mt19937 rng(41);
  const auto& w = real_weights();
  for (Type t : {Type::Q4_0, Type::Q4_1, Type::Q5_0, Type::Q5_1, Type::IQ4_NL, Type::Q2_K, Type::Q3_K, Type::Q4_K,
                 Type::Q5_K, Type::Q6_K}) {
    const std::size_t n = 512;
    for (int trial = 0; trial < 3; ++trial) {
      const std::vector<float> x = trial == 0 ? std::vector<float>(w.begin(), w.begin() + n * 16) : random_rows(n, 8, rng);
      std::uniform_real_distribution<float> u(0.0f, 3.0f);
      std::vector<float> imp(n);
      for (auto& v : imp) v = u(rng);
      imp[5] = 0.0f;
      const auto want = ggml_quantize(t, x, static_cast<std::int64_t>(n), imp.data());
      std::vector<std::byte> got(want.size());
      const std::size_t row_bytes = want.size() / (x.size() / n);
      for (std::size_t r = 0; r < x.size() / n; ++r) {
        g::quantize_row_importance(t, std::span<const float>(x.data() + r * n, n), imp,
                                   std::span<std::byte>(got.data() + r * row_bytes, row_bytes));
      }
      const auto i = first_byte_mismatch(want, got);
      EXPECT_EQ(i, -1) << g::type_name(t) << " trial " << trial << " byte " << i;
    }
  }
}

TEST(GgmlBlocks, BadSizesAreErrorsNamingTheValues) {
  std::vector<float> x(40, 0.5f);
  std::vector<std::byte> dst(18 * 2);
  try {
    g::quantize_row_reference(Type::Q4_0, x, dst);
    FAIL() << "expected qtl::Error";
  } catch (const qtl::Error& e) {
    EXPECT_NE(std::string(e.what()).find("40"), std::string::npos) << e.what();
  }
  std::vector<float> y(64);
  std::vector<std::byte> src(35);
  try {
    g::dequantize_row(Type::Q4_0, src, y);
    FAIL() << "expected qtl::Error";
  } catch (const qtl::Error& e) {
    EXPECT_NE(std::string(e.what()).find("35"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("36"), std::string::npos) << e.what();
  }
  EXPECT_THROW(g::dequantize_row(Type::Q8_1, std::span<const std::byte>{}, std::span<float>{}), qtl::Error);
  std::vector<float> bad(32, 1.0f);
  bad[5] = std::nanf("");
  std::vector<std::byte> out(34);
  EXPECT_THROW(g::quantize_row_reference(Type::Q8_0, bad, out), qtl::Error);
}

// ---- the quantizer policies ----------------------------------------------------------------

template <class Q>
class GgmlPolicyTest : public ::testing::Test {};
using PolicyTypes = ::testing::Types<g::GgmlQ4_0, g::GgmlQ4_1, g::GgmlQ5_0, g::GgmlQ5_1, g::GgmlQ8_0, g::GgmlIQ4_NL>;
TYPED_TEST_SUITE(GgmlPolicyTest, PolicyTypes);

qtl::RowMatrixXf as_matrix(const std::vector<float>& x, qtl::Index cols) {
  const qtl::Index rows = static_cast<qtl::Index>(x.size()) / cols;
  return qtl::MatrixMap(x.data(), rows, cols);
}

/// sum_c imp[c] (w - w_hat)^2 over the matrix of rows of n_per_row values.
double weighted_error(const std::vector<float>& w, const std::vector<float>& wq, const std::vector<float>& imp) {
  double e = 0;
  for (std::size_t i = 0; i < w.size(); ++i) {
    const double d = double(w[i]) - wq[i];
    e += (imp.empty() ? 1.0 : imp[i % imp.size()]) * d * d;
  }
  return e;
}

TYPED_TEST(GgmlPolicyTest, RtnThroughQuantizeMatrixWritesLlamaQuantizesBytes) {
  using Q = TypeParam;
  std::mt19937 rng(7);
  const auto& w = real_weights();
  const std::vector<float> real(w.begin(), w.begin() + 64 * 512);
  for (const auto& [x, cols] : {std::pair{random_rows(256, 16, rng), qtl::Index{256}}, std::pair{real, qtl::Index{64}}}) {
    const auto m = qtl::quantize_matrix(Q{}, qtl::PerGroup{32}, as_matrix(x, cols));
    const auto want = ggml_quantize(Q::kType, x, cols);
    const auto got = g::to_blocks(m);
    const auto i = first_byte_mismatch(want, got);
    EXPECT_EQ(i, -1) << Q{}.name() << " cols " << cols << ": byte " << i;
    // what ggml decodes is what qtl's matrix holds
    const qtl::RowMatrixXf deq = qtl::dequantize(m);
    EXPECT_EQ(first_bit_mismatch(ggml_decode(Q::kType, got, x.size()),
                                 std::vector<float>(deq.data(), deq.data() + deq.size())),
              -1);
  }
}

TYPED_TEST(GgmlPolicyTest, ClipSearchWithImportanceAgainstLlamaQuantizeWithTheSameImatrix) {
  // With an importance matrix llama.cpp runs its own searches (make_qx_quants / make_qkx3_quants
  // with weights imatrix * sqrt(sigma2 + x^2), sigma2 over the whole row); qtl's clip search
  // minimizes sum imp (x - x_hat)^2 per block instead, so the bytes differ (except iq4_nl, whose
  // policy runs ggml's search, below): compare the importance-weighted error.
  using Q = TypeParam;
  const auto& w = real_weights();
  const std::vector<float> x(w.begin(), w.begin() + 64 * 512);
  std::mt19937 rng(3);
  std::uniform_real_distribution<float> u(0.05f, 4.0f);
  std::vector<float> imp(64);
  for (auto& v : imp) v = u(rng);
  qtl::QuantizeOptions opt;
  opt.column_importance = Eigen::Map<const qtl::VectorXf>(imp.data(), 64);
  opt.fit = qtl::FitOptions::searched();
  const auto m = qtl::quantize_matrix(Q{}, qtl::PerGroup{32}, as_matrix(x, 64), opt);
  const auto ours = ggml_decode(Q::kType, g::to_blocks(m), x.size());
  const auto theirs = ggml_decode(Q::kType, ggml_quantize(Q::kType, x, 64, imp.data()), x.size());
  const auto plain = ggml_decode(Q::kType, ggml_quantize(Q::kType, x, 64), x.size());
  const double e_ours = weighted_error(x, ours, imp), e_theirs = weighted_error(x, theirs, imp),
               e_plain = weighted_error(x, plain, imp);
  std::printf("%-12s weighted error: llama-quantize %.6g, with imatrix %.6g, qtl clip search %.6g\n",
              Q{}.name().c_str(), e_plain, e_theirs, e_ours);
  EXPECT_LT(e_ours, e_plain) << Q{}.name();
  EXPECT_LE(e_ours, e_theirs) << Q{}.name();
}

TEST(GgmlPolicy, Iq4nlWithColumnImportanceWritesLlamaQuantizeImatrixBytes) {
  std::mt19937 rng(11);
  const auto& w = real_weights();
  const std::vector<float> real(w.begin(), w.begin() + 64 * 512);
  for (const auto& [x, cols] : {std::pair{random_rows(128, 16, rng), qtl::Index{128}}, std::pair{real, qtl::Index{64}}}) {
    std::uniform_real_distribution<float> u(0.0f, 3.0f);
    std::vector<float> imp(static_cast<std::size_t>(cols));
    for (auto& v : imp) v = u(rng);
    imp[3] = 0.0f;
    qtl::QuantizeOptions opt;
    opt.column_importance = Eigen::Map<const qtl::VectorXf>(imp.data(), cols);
    const auto m = qtl::quantize_matrix(g::GgmlIQ4_NL{}, qtl::PerGroup{32}, as_matrix(x, cols), opt);
    const auto want = ggml_quantize(Type::IQ4_NL, x, cols, imp.data());
    EXPECT_EQ(first_byte_mismatch(want, g::to_blocks(m)), -1) << "cols " << cols;
  }
}

// ---- K-quant policies ----------------------------------------------------------------------

template <class Q>
class GgmlKPolicyTest : public ::testing::Test {};
using KPolicyTypes = ::testing::Types<g::GgmlQ2_K, g::GgmlQ3_K, g::GgmlQ4_K, g::GgmlQ5_K, g::GgmlQ6_K>;
TYPED_TEST_SUITE(GgmlKPolicyTest, KPolicyTypes);

TYPED_TEST(GgmlKPolicyTest, RtnWritesLlamaQuantizesBytesAndDecodesAsGgml) {
  using Q = TypeParam;
  constexpr Type T = Q::kType;
  std::mt19937 rng(17);
  std::normal_distribution<float> normal(0.0f, 0.02f);
  std::vector<float> gauss(256 * 24);
  for (auto& v : gauss) v = normal(rng);
  const auto& w = real_weights();
  const std::vector<float> real(w.begin(), w.begin() + 256 * 128);
  for (const std::vector<float>* x : std::array<const std::vector<float>*, 2>{&gauss, &real}) {
    const auto m = g::quantize_k(Q{}, as_matrix(*x, 256));
    const auto got = g::to_blocks(m);
    const auto want = ggml_quantize(T, *x, 256);
    EXPECT_EQ(first_byte_mismatch(want, got), -1) << Q{}.name();
    const qtl::RowMatrixXf deq = g::dequantize(m);
    EXPECT_EQ(first_bit_mismatch(ggml_decode(T, got, x->size()), std::vector<float>(deq.data(), deq.data() + deq.size())),
              -1) << Q{}.name();
  }
}

TYPED_TEST(GgmlKPolicyTest, RtnWritesLlamaQuantizesBytesWhereSubBlockScalesAreZero) {
  // random_rows mixes blocks of 32 at scales 10^-9 .. 10^3 inside one super-block: many
  // sub-blocks get a stored scale of 0, where ggml keeps its first-pass quants.
  using Q = TypeParam;
  constexpr Type T = Q::kType;
  std::mt19937 rng(23);
  const auto x = random_rows(512, 8, rng);
  const auto m = g::quantize_k(Q{}, as_matrix(x, 512));
  const auto got = g::to_blocks(m);
  const auto want = ggml_quantize(T, x, 512);
  EXPECT_EQ(first_byte_mismatch(want, got), -1) << Q{}.name();
  EXPECT_EQ(first_bit_mismatch(ggml_decode(T, got, x.size()), ggml_decode(T, want, x.size())), -1) << Q{}.name();
}

TYPED_TEST(GgmlKPolicyTest, ClipSearchLowersTheWeightedErrorOfLlamaQuantizeImatrix) {
  // With importance, fit() starts from llama.cpp's imatrix result (byte-exact, test below) and the
  // sub-block scale search only keeps improvements of sum imp (x - x_hat)^2.
  using Q = TypeParam;
  constexpr Type T = Q::kType;
  const auto& w = real_weights();
  const std::vector<float> x(w.begin(), w.begin() + 256 * 128);
  std::mt19937 rng(5);
  std::uniform_real_distribution<float> u(0.05f, 4.0f);
  std::vector<float> imp(256);
  for (auto& v : imp) v = u(rng);
  qtl::QuantizeOptions opt;
  opt.column_importance = Eigen::Map<const qtl::VectorXf>(imp.data(), 256);
  opt.fit = qtl::FitOptions::searched();
  const auto ours = ggml_decode(T, g::to_blocks(g::quantize_k(Q{}, as_matrix(x, 256), opt)), x.size());
  const auto theirs = ggml_decode(T, ggml_quantize(T, x, 256, imp.data()), x.size());
  const auto plain = ggml_decode(T, ggml_quantize(T, x, 256), x.size());
  const double e_plain = weighted_error(x, plain, imp), e_ours = weighted_error(x, ours, imp),
               e_theirs = weighted_error(x, theirs, imp);
  std::printf("%-12s weighted error: llama-quantize %.6g, with imatrix %.6g, qtl clip search %.6g\n",
              Q{}.name().c_str(), e_plain, e_theirs, e_ours);
  EXPECT_LT(e_ours, e_theirs) << Q{}.name();
  EXPECT_LT(e_ours, e_plain) << Q{}.name();
}

TYPED_TEST(GgmlKPolicyTest, ColumnImportanceWritesLlamaQuantizeImatrixBytes) {
  using Q = TypeParam;
  constexpr Type T = Q::kType;
  std::mt19937 rng(37);
  const auto& w = real_weights();
  const std::vector<float> real(w.begin(), w.begin() + 512 * 32);
  std::normal_distribution<float> normal(0.0f, 0.02f);
  std::vector<float> gauss(512 * 8);
  for (auto& v : gauss) v = normal(rng);
  for (const std::vector<float>* x : std::array<const std::vector<float>*, 3>{&real, &gauss, nullptr}) {
    const std::vector<float> mixed = x ? std::vector<float>{} : random_rows(512, 8, rng);
    const std::vector<float>& xs = x ? *x : mixed;
    std::uniform_real_distribution<float> u(0.0f, 3.0f);
    std::vector<float> imp(512);
    for (auto& v : imp) v = u(rng);
    imp[7] = 0.0f;
    qtl::QuantizeOptions opt;
    opt.column_importance = Eigen::Map<const qtl::VectorXf>(imp.data(), 512);
    const auto got = g::to_blocks(g::quantize_k(Q{}, as_matrix(xs, 512), opt));
    const auto want = ggml_quantize(T, xs, 512, imp.data());
    EXPECT_EQ(first_byte_mismatch(want, got), -1) << Q{}.name();
    // and the row function
    std::vector<std::byte> rows(want.size());
    const std::size_t row_bytes = want.size() / (xs.size() / 512);
    for (std::size_t r = 0; r < xs.size() / 512; ++r) {
      g::quantize_row_importance(T, std::span<const float>(xs.data() + r * 512, 512), imp,
                                 std::span<std::byte>(rows.data() + r * row_bytes, row_bytes));
    }
    EXPECT_EQ(first_byte_mismatch(want, rows), -1) << Q{}.name();
  }
}


// ---- ternary policies ----------------------------------------------------------------------

template <class Q>
class GgmlTernaryPolicyTest : public ::testing::Test {};
using TernaryTypes = ::testing::Types<g::GgmlTQ1_0, g::GgmlTQ2_0>;
TYPED_TEST_SUITE(GgmlTernaryPolicyTest, TernaryTypes);

TYPED_TEST(GgmlTernaryPolicyTest, RtnThroughQuantizeMatrixWritesLlamaQuantizesBytes) {
  using Q = TypeParam;
  std::mt19937 rng(29);
  const auto& w = real_weights();
  const std::vector<float> real(w.begin(), w.begin() + 256 * 64);
  for (const auto& [x, cols] : {std::pair{random_rows(512, 8, rng), qtl::Index{512}}, std::pair{real, qtl::Index{256}}}) {
    const auto m = qtl::quantize_matrix(Q{}, qtl::PerGroup{256}, as_matrix(x, cols));
    const auto got = g::to_blocks(m);
    EXPECT_EQ(first_byte_mismatch(ggml_quantize(Q::kType, x, cols), got), -1) << Q{}.name();
    const qtl::RowMatrixXf deq = qtl::dequantize(m);
    EXPECT_EQ(first_bit_mismatch(ggml_decode(Q::kType, got, x.size()),
                                 std::vector<float>(deq.data(), deq.data() + deq.size())),
              -1);
  }
}

// ---- GPTQ into K-quants -----------------------------------------------------------------------

/// A real layer with 256-wide rows: the four first layers' w1 side by side ([172 x 256]), read
/// by their four real inputs side by side (the same tokens), so y = sum of the four w1 outputs.
struct WideRealLayer {
  qtl::RowMatrixXf weight, calib, eval;
};

WideRealLayer wide_real_layer() {
  const auto& rm = qtl::test::real_model(32, 16);
  WideRealLayer out;
  std::vector<const qtl::test::RealLayer*> parts;
  for (int l = 0; l < 4; ++l) {
    for (const auto& layer : rm.layers) {
      if (layer.name == qtl::str_cat("layers.", l, ".w1")) parts.push_back(&layer);
    }
  }
  EXPECT_EQ(parts.size(), 4u);
  const qtl::Index rows = parts[0]->weight.rows(), in = parts[0]->weight.cols();
  out.weight.resize(rows, 4 * in);
  out.calib.resize(parts[0]->calib.rows(), 4 * in);
  out.eval.resize(parts[0]->eval.rows(), 4 * in);
  for (int k = 0; k < 4; ++k) {
    out.weight.middleCols(k * in, in) = parts[static_cast<std::size_t>(k)]->weight;
    out.calib.middleCols(k * in, in) = parts[static_cast<std::size_t>(k)]->calib;
    out.eval.middleCols(k * in, in) = parts[static_cast<std::size_t>(k)]->eval;
  }
  return out;
}

template <class K>
class GptqKQuantTest : public ::testing::Test {};
using GptqKTypes = ::testing::Types<g::GgmlQ2_K, g::GgmlQ3_K, g::GgmlQ4_K, g::GgmlQ5_K, g::GgmlQ6_K>;
TYPED_TEST_SUITE(GptqKQuantTest, GptqKTypes);

TYPED_TEST(GptqKQuantTest, LowersTheLayerErrorAgainstLlamaQuantizeWithTheSameImatrix) {
  // llama-quantize --imatrix quantizes with the importance mean(x^2) per input column (what
  // llama-imatrix collects); qtl's gptq_k fits the same grid (ggml's importance path, the same
  // bytes as ggml_quantize_chunk with that imatrix) and then chooses the codes with GPTQ's error
  // feedback. Measured on held-out tokens of the real model: ||X (W - W_hat)^T||^2.
  using K = TypeParam;
  const WideRealLayer layer = wide_real_layer();
  const qtl::Index rows = layer.weight.rows(), cols = layer.weight.cols();
  qtl::calib::HessianAccumulator stats(cols);
  stats.add_batch(layer.calib);
  const qtl::VectorXf imatrix =
      (layer.calib.cwiseProduct(layer.calib).colwise().sum() / static_cast<float>(layer.calib.rows())).transpose();
  const std::vector<float> x(layer.weight.data(), layer.weight.data() + layer.weight.size());

  const auto theirs_bytes = ggml_quantize(K::kType, x, cols, imatrix.data());
  qtl::QuantizeOptions grid;
  grid.column_importance = imatrix;
  // The grid alone (RTN on it) is llama-quantize's: the same bytes.
  const auto rtn = g::quantize_k(K{}, layer.weight, grid);
  EXPECT_EQ(first_byte_mismatch(theirs_bytes, g::to_blocks(rtn)), -1) << K{}.name();

  const auto res = qtl::calib::gptq_k(K{}, layer.weight, stats.hessian(), grid);
  const auto ours_bytes = g::to_blocks(res.matrix);
  EXPECT_EQ(ours_bytes.size(), theirs_bytes.size());
  const auto ours = ggml_decode(K::kType, ours_bytes, x.size());
  // What ggml decodes is what qtl's matrix holds.
  const qtl::RowMatrixXf deq = g::dequantize(res.matrix);
  EXPECT_EQ(first_bit_mismatch(ours, std::vector<float>(deq.data(), deq.data() + deq.size())), -1);
  const auto theirs = ggml_decode(K::kType, theirs_bytes, x.size());
  const auto plain = ggml_decode(K::kType, ggml_quantize(K::kType, x, cols), x.size());
  const auto output_error = [&](const std::vector<float>& w_hat) {
    const qtl::RowMatrixXf d = layer.weight - Eigen::Map<const qtl::RowMatrixXf>(w_hat.data(), rows, cols);
    return static_cast<double>((layer.eval * d.transpose()).squaredNorm());
  };
  const double e_ours = output_error(ours), e_theirs = output_error(theirs), e_plain = output_error(plain);
  std::printf("%-10s held-out output error: llama-quantize %.6g, with imatrix %.6g, qtl gptq_k %.6g (%.1f%% lower)\n",
              K{}.name().c_str(), e_plain, e_theirs, e_ours, 100.0 * (1.0 - e_ours / e_theirs));
  EXPECT_LT(e_ours, 0.9 * e_theirs) << K{}.name();
}

TEST(GptqKQuant, BadInputIsAnErrorNamingIt) {
  const qtl::RowMatrixXf w = qtl::RowMatrixXf::Random(4, 256);
  const Eigen::MatrixXd h = Eigen::MatrixXd::Identity(256, 256);
  EXPECT_THROW((void)qtl::calib::gptq_k(g::GgmlQ4_K{}, qtl::RowMatrixXf::Random(4, 200), h), qtl::Error);
  EXPECT_THROW((void)qtl::calib::gptq_k(g::GgmlQ4_K{}, w, Eigen::MatrixXd::Identity(128, 128)), qtl::Error);
  // A sub-block cannot be fitted alone.
  const std::vector<float> v(32, 1.0f);
  try {
    (void)g::KSubBlockQuantizer<Type::Q4_K>{}.fit(v, {});
    ADD_FAILURE() << "no error";
  } catch (const qtl::Error& e) {
    EXPECT_NE(std::string(e.what()).find("super-block"), std::string::npos) << e.what();
  }
  // A grid of the wrong size is named.
  std::vector<g::KSubBlockQuantizer<Type::Q4_K>::Params> grid(3);
  try {
    (void)qtl::calib::gptq_on_grid(g::KSubBlockQuantizer<Type::Q4_K>{}, qtl::PerGroup{32}, w, h, grid);
    ADD_FAILURE() << "no error";
  } catch (const qtl::Error& e) {
    EXPECT_NE(std::string(e.what()).find("3 parameter sets"), std::string::npos) << e.what();
  }
}

}  // namespace
