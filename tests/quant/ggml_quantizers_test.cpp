// ggml's 32-wide block types as qtl quantizer policies (qtl/quant/ggml_quantizers.hpp): the
// concept holds, encode/decode/pack round trips, quantize_matrix -> to_blocks ->
// ggml::dequantize_row equals qtl's dequantize bit for bit, clip search never raises the
// weighted error, GPTQ runs on them, and bad input is a qtl::Error; the same for the K-quant
// policies through quantize_k. The comparison with
// llama.cpp's own bytes is in tests/ggml/ggml_blocks_test.cpp.
#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "test_util.hpp"
#include <qtl/calib/gptq.hpp>
#include <qtl/quant/ggml_quantizers.hpp>
#include <qtl/quant/quantize_matrix.hpp>

namespace {

namespace g = qtl::ggml;

template <class Q>
class GgmlQuantizerTest : public ::testing::Test {};
using Types = ::testing::Types<g::GgmlQ4_0, g::GgmlQ4_1, g::GgmlQ5_0, g::GgmlQ5_1, g::GgmlQ8_0, g::GgmlIQ4_NL>;
TYPED_TEST_SUITE(GgmlQuantizerTest, Types);

/// Weights with the cases ggml's rules meet: blocks at very different scales, an all-zero
/// block, a constant block, an outlier.
qtl::RowMatrixXf test_weights(qtl::Index rows, qtl::Index cols, unsigned seed) {
  qtl::RowMatrixXf w = qtl::test::gaussian(rows, cols, seed);
  for (qtl::Index r = 0; r < rows; ++r) {
    w.row(r) *= std::pow(10.0f, static_cast<float>(r % 7) - 4.0f);
  }
  w.block(0, 0, 1, 32).setZero();
  w.block(1, 32, 1, 32).setConstant(0.25f);
  w(2, 5) = 40.0f;
  return w;
}

bool same_bits(const qtl::RowMatrixXf& a, const std::vector<float>& b) {
  if (static_cast<std::size_t>(a.size()) != b.size()) return false;
  for (qtl::Index i = 0; i < a.size(); ++i) {
    if (std::bit_cast<std::uint32_t>(a.data()[i]) != std::bit_cast<std::uint32_t>(b[static_cast<std::size_t>(i)])) {
      return false;
    }
  }
  return true;
}

double weighted_error(const qtl::RowMatrixXf& w, const qtl::RowMatrixXf& wq, const qtl::VectorXf& col_imp) {
  double e = 0;
  for (qtl::Index r = 0; r < w.rows(); ++r) {
    for (qtl::Index c = 0; c < w.cols(); ++c) {
      const double d = double(w(r, c)) - wq(r, c);
      e += (col_imp.size() ? col_imp[c] : 1.0) * d * d;
    }
  }
  return e;
}

TYPED_TEST(GgmlQuantizerTest, SatisfiesTheConceptWithTheBlockBits) {
  using Q = TypeParam;
  static_assert(qtl::ScalarQuantizer<Q>);
  const auto info = g::type_info(Q::kType);
  EXPECT_DOUBLE_EQ(Q::kBits + Q::param_bits() / 32.0, g::type_bits_per_weight(Q::kType));
  EXPECT_EQ(Q{}.name(), "ggml-" + std::string(info.name));
}

TYPED_TEST(GgmlQuantizerTest, DequantizeEqualsGgmlDecodeOfTheBlocksBitForBit) {
  using Q = TypeParam;
  const auto w = test_weights(12, 128, 7);
  for (bool clip : {false, true}) {
    qtl::QuantizeOptions opt;
    if (clip) opt.fit = qtl::FitOptions::searched();
    const auto m = qtl::quantize_matrix(Q{}, qtl::PerGroup{32}, w, opt);
    const auto bytes = g::to_blocks(m);
    ASSERT_EQ(bytes.size(), static_cast<std::size_t>(12 * 128 / 32 * g::type_info(Q::kType).type_size));
    std::vector<float> decoded(static_cast<std::size_t>(w.size()));
    g::dequantize_row(Q::kType, bytes, decoded);
    EXPECT_TRUE(same_bits(qtl::dequantize(m), decoded)) << Q{}.name() << " clip " << clip;
    // and back: from_blocks gives the same codes and decoded values
    const auto back = g::from_blocks<Q>(bytes, 12, 128);
    EXPECT_EQ(back.codes, m.codes);
    EXPECT_TRUE(same_bits(qtl::dequantize(back), decoded));
    EXPECT_EQ(g::to_blocks(back), bytes);
  }
}

TYPED_TEST(GgmlQuantizerTest, RtnIsTheReferenceQuantizer) {
  using Q = TypeParam;
  const auto w = test_weights(9, 96, 11);
  const auto bytes = g::to_blocks(qtl::quantize_matrix(Q{}, qtl::PerGroup{32}, w));
  std::vector<std::byte> ref(bytes.size());
  g::quantize_row_reference(Q::kType, std::span<const float>(w.data(), static_cast<std::size_t>(w.size())), ref);
  EXPECT_EQ(bytes, ref) << Q{}.name();
}

TYPED_TEST(GgmlQuantizerTest, EncodeTakesAnyFloatAndDecodeInvertsOnTheGrid) {
  using Q = TypeParam;
  const Q q;
  std::vector<float> x(32);
  for (int j = 0; j < 32; ++j) x[static_cast<std::size_t>(j)] = 0.1f * static_cast<float>(j - 13);
  const auto p = q.fit(x, {});
  for (float v : {-1e30f, -100.0f, -3.3f, 0.0f, 2.7f, 100.0f, 1e30f, std::nanf(""),
                  std::numeric_limits<float>::infinity()}) {
    const std::uint8_t c = q.encode(p, v);
    EXPECT_LE(int(c), Q::kMaxCode) << v;
  }
  // far outside the range: the end levels
  const std::uint8_t hi = q.encode(p, 1e30f), lo = q.encode(p, -1e30f);
  EXPECT_GE(q.decode(p, hi), q.decode(p, lo));
  // every decoded level encodes back to a code with the same value (the nearest level)
  for (int c = 0; c <= Q::kMaxCode; ++c) {
    const float v = q.decode(p, static_cast<std::uint8_t>(c));
    EXPECT_EQ(q.decode(p, q.encode(p, v)), v) << "code " << c;
  }
}

TYPED_TEST(GgmlQuantizerTest, PackUnpackRoundTrip) {
  using Q = TypeParam;
  std::mt19937 rng(5);
  std::uniform_int_distribution<int> code(0, Q::kMaxCode);
  const auto bytes = static_cast<std::size_t>(g::type_info(Q::kType).type_size);
  for (int trial = 0; trial < 50; ++trial) {
    std::vector<std::uint8_t> codes(32), back(32);
    for (auto& c : codes) c = static_cast<std::uint8_t>(code(rng));
    const float d = qtl::detail::round_to_half(0.01f * static_cast<float>(trial - 25));
    const float m = Q::kAffine ? qtl::detail::round_to_half(-0.3f * static_cast<float>(trial)) : 0.0f;
    std::vector<std::byte> blk(bytes);
    g::pack_block32(Q::kType, d, m, codes, blk);
    float d2 = 0, m2 = 0;
    g::unpack_block32(Q::kType, blk, d2, m2, back);
    EXPECT_EQ(back, codes);
    EXPECT_EQ(d2, d);
    EXPECT_EQ(m2, m);
    // the block decodes as the policy does
    std::vector<float> y(32);
    g::dequantize_row(Q::kType, blk, y);
    const typename Q::Params p{d, m, 0.0f, 0.0f};
    for (int j = 0; j < 32; ++j) {
      EXPECT_EQ(std::bit_cast<std::uint32_t>(y[static_cast<std::size_t>(j)]),
                std::bit_cast<std::uint32_t>(Q::decode(p, codes[static_cast<std::size_t>(j)])));
    }
  }
}

TYPED_TEST(GgmlQuantizerTest, ClipSearchNeverRaisesTheWeightedError) {
  using Q = TypeParam;
  const auto w = test_weights(16, 128, 3);
  qtl::VectorXf imp = qtl::test::uniform_random(1, 128, 9, 0.0f, 4.0f).row(0).transpose();
  for (bool with_imp : {false, true}) {
    qtl::QuantizeOptions base;
    if (with_imp) base.column_importance = imp;
    qtl::QuantizeOptions clip = base;
    clip.fit = qtl::FitOptions::searched();
    const auto rtn = qtl::dequantize(qtl::quantize_matrix(Q{}, qtl::PerGroup{32}, w, base));
    const auto searched = qtl::dequantize(qtl::quantize_matrix(Q{}, qtl::PerGroup{32}, w, clip));
    const qtl::VectorXf none;
    // per group: never worse; in total: better
    for (qtl::Index r = 0; r < w.rows(); ++r) {
      for (qtl::Index c0 = 0; c0 < w.cols(); c0 += 32) {
        const qtl::RowMatrixXf wg = w.block(r, c0, 1, 32);
        const qtl::VectorXf ig = with_imp ? qtl::VectorXf(imp.segment(c0, 32)) : none;
        EXPECT_LE(weighted_error(wg, searched.block(r, c0, 1, 32), ig),
                  weighted_error(wg, rtn.block(r, c0, 1, 32), ig) * (1 + 1e-12))
            << Q{}.name() << " row " << r << " group " << c0 / 32;
      }
    }
    EXPECT_LT(weighted_error(w, searched, with_imp ? imp : none), weighted_error(w, rtn, with_imp ? imp : none))
        << Q{}.name();
  }
}

TYPED_TEST(GgmlQuantizerTest, GptqWritesBlocksGgmlDecodesAsQtlDoes) {
  using Q = TypeParam;
  const qtl::Index rows = 8, cols = 64, n = 256;
  const auto w = qtl::test::gaussian(rows, cols, 21, 0.05f);
  const auto x = qtl::test::gaussian(n, cols, 22);
  const Eigen::MatrixXd h = (2.0 / n) * (x.cast<double>().transpose() * x.cast<double>());
  const auto res = qtl::calib::gptq(Q{}, qtl::PerGroup{32}, w, h);
  const auto bytes = g::to_blocks(res.matrix);
  std::vector<float> decoded(static_cast<std::size_t>(w.size()));
  g::dequantize_row(Q::kType, bytes, decoded);
  EXPECT_TRUE(same_bits(qtl::dequantize(res.matrix), decoded)) << Q{}.name();
  // GPTQ lowers the layer's output error against RTN with the same quantizer
  const auto rtn = qtl::dequantize(qtl::quantize_matrix(Q{}, qtl::PerGroup{32}, w));
  const double e_gptq = ((w - qtl::dequantize(res.matrix)) * x.transpose()).squaredNorm();
  const double e_rtn = ((w - rtn) * x.transpose()).squaredNorm();
  EXPECT_LT(e_gptq, e_rtn) << Q{}.name();
}

TYPED_TEST(GgmlQuantizerTest, BadInputIsAnError) {
  using Q = TypeParam;
  const Q q;
  std::vector<float> x(32, 0.5f);
  x[3] = std::nanf("");
  try {
    (void)q.fit(x, {});
    FAIL() << "expected qtl::Error";
  } catch (const qtl::Error& e) {
    EXPECT_NE(std::string(e.what()).find("not finite"), std::string::npos) << e.what();
  }
  x[3] = std::numeric_limits<float>::infinity();
  EXPECT_THROW((void)q.fit(x, {}), qtl::Error);
  std::vector<float> short_group(20, 0.5f);
  try {
    (void)q.fit(short_group, {});
    FAIL() << "expected qtl::Error";
  } catch (const qtl::Error& e) {
    EXPECT_NE(std::string(e.what()).find("20"), std::string::npos) << e.what();
  }
  std::vector<float> huge(32, 1e9f);
  huge[0] = -1e9f;
  EXPECT_THROW((void)q.fit(huge, {}), qtl::Error);
  // a row that is not whole blocks does not quantize; a tensor-wide group does not pack
  EXPECT_THROW((void)qtl::quantize_matrix(Q{}, qtl::PerGroup{32}, qtl::test::gaussian(2, 48, 1)), qtl::Error);
  EXPECT_THROW((void)g::to_blocks(qtl::quantize_matrix(Q{}, qtl::PerTensor{}, qtl::test::gaussian(1, 32, 1))),
               qtl::Error);
  qtl::RowMatrixXf wn = qtl::test::gaussian(2, 64, 1);
  wn(1, 7) = std::nanf("");
  EXPECT_THROW((void)qtl::quantize_matrix(Q{}, qtl::PerGroup{32}, wn), qtl::Error);
  std::vector<std::byte> few(10);
  EXPECT_THROW((void)g::from_blocks<Q>(few, 2, 64), qtl::Error);
  EXPECT_THROW((void)g::from_blocks<Q>(few, 2, 48), qtl::Error);
}

// ---- K-quants ------------------------------------------------------------------------------

template <class Q>
class GgmlKQuantizerTest : public ::testing::Test {};
using KTypes = ::testing::Types<g::GgmlQ2_K, g::GgmlQ3_K, g::GgmlQ4_K, g::GgmlQ5_K, g::GgmlQ6_K>;
TYPED_TEST_SUITE(GgmlKQuantizerTest, KTypes);

TYPED_TEST(GgmlKQuantizerTest, BlocksRoundTripAndDecodeAsDequantizeRow) {
  using Q = TypeParam;
  EXPECT_DOUBLE_EQ(Q::kBits + Q::param_bits() / 256.0, g::type_bits_per_weight(Q::kType));
  const auto w = test_weights(8, 512, 13);
  for (bool clip : {false, true}) {
    qtl::QuantizeOptions opt;
    if (clip) opt.fit = qtl::FitOptions::searched();
    const auto m = g::quantize_k(Q{}, w, opt);
    const auto bytes = g::to_blocks(m);
    std::vector<float> decoded(static_cast<std::size_t>(w.size()));
    g::dequantize_row(Q::kType, bytes, decoded);
    EXPECT_TRUE(same_bits(g::dequantize(m), decoded)) << Q{}.name() << " clip " << clip;
    const auto back = g::from_blocks<Q::kType>(bytes, 8, 512);
    EXPECT_EQ(back.codes, m.codes);
    EXPECT_EQ(g::to_blocks(back), bytes);
    EXPECT_TRUE(same_bits(g::dequantize(back), decoded));
    // re-encoding the decoded values with the stored params gives the same codes' values
    for (qtl::Index r = 0; r < 8; ++r) {
      for (qtl::Index c = 0; c < 512; c += 37) {
        const auto& p = back.params[static_cast<std::size_t>(r * 2 + c / 256)];
        const auto i = static_cast<std::size_t>(c % 256);
        const float v = back.value(r, c);
        EXPECT_EQ(Q::decode(p, i, Q::encode(p, i, v)), v) << r << "," << c;
      }
    }
  }
}

TYPED_TEST(GgmlKQuantizerTest, ClipSearchNeverRaisesTheWeightedError) {
  using Q = TypeParam;
  const auto w = test_weights(8, 256, 31);
  qtl::QuantizeOptions base;
  base.column_importance = qtl::test::uniform_random(1, 256, 4, 0.0f, 3.0f).row(0).transpose();
  qtl::QuantizeOptions clip = base;
  clip.fit = qtl::FitOptions::searched();
  const auto rtn = g::dequantize(g::quantize_k(Q{}, w, base));
  const auto searched = g::dequantize(g::quantize_k(Q{}, w, clip));
  for (qtl::Index r = 0; r < w.rows(); ++r) {
    const qtl::RowMatrixXf wr = w.row(r);
    EXPECT_LE(weighted_error(wr, searched.row(r), base.column_importance),
              weighted_error(wr, rtn.row(r), base.column_importance) * (1 + 1e-12))
        << Q{}.name() << " row " << r;
  }
  EXPECT_LT(weighted_error(w, searched, base.column_importance), weighted_error(w, rtn, base.column_importance));
}

TYPED_TEST(GgmlKQuantizerTest, EncodeTakesAnyFloat) {
  using Q = TypeParam;
  const auto w = test_weights(3, 256, 2);
  const auto p = Q{}.fit(std::span<const float>(w.data(), 256), {});
  for (float v : {-1e30f, -5.0f, 0.0f, 3.0f, 1e30f, std::nanf(""), std::numeric_limits<float>::infinity()}) {
    for (std::size_t i : {std::size_t{0}, std::size_t{100}, std::size_t{255}}) EXPECT_LE(int(Q::encode(p, i, v)), Q::kMaxCode);
  }
}

TYPED_TEST(GgmlKQuantizerTest, BadInputIsAnError) {
  using Q = TypeParam;
  EXPECT_THROW((void)g::quantize_k(Q{}, qtl::test::gaussian(2, 320, 1)), qtl::Error);
  qtl::RowMatrixXf wn = qtl::test::gaussian(2, 256, 1);
  wn(1, 9) = std::numeric_limits<float>::infinity();
  EXPECT_THROW((void)g::quantize_k(Q{}, wn), qtl::Error);
  std::vector<float> x(128, 0.1f);
  EXPECT_THROW((void)Q{}.fit(x, {}), qtl::Error);
  std::vector<std::byte> few(100);
  EXPECT_THROW((void)g::from_blocks<Q::kType>(few, 1, 256), qtl::Error);
  EXPECT_THROW((void)g::from_blocks<Q::kType>(few, 1, 200), qtl::Error);
}

// ---- ternary -------------------------------------------------------------------------------

template <class Q>
class GgmlTernaryTest : public ::testing::Test {};
using TernaryTypes = ::testing::Types<g::GgmlTQ1_0, g::GgmlTQ2_0>;
TYPED_TEST_SUITE(GgmlTernaryTest, TernaryTypes);

TYPED_TEST(GgmlTernaryTest, BlocksRoundTripClipSearchAndGptq) {
  using Q = TypeParam;
  static_assert(qtl::ScalarQuantizer<Q>);
  const auto w = test_weights(6, 512, 41);
  qtl::QuantizeOptions base;
  base.column_importance = qtl::test::uniform_random(1, 512, 6, 0.0f, 2.0f).row(0).transpose();
  qtl::QuantizeOptions clip = base;
  clip.fit = qtl::FitOptions::searched();
  const auto rtn = qtl::quantize_matrix(Q{}, qtl::PerGroup{256}, w, base);
  const auto searched = qtl::quantize_matrix(Q{}, qtl::PerGroup{256}, w, clip);
  // Bits per weight as ggml counts them (tq1_0: 1.6875, tq2_0: 2.0625), and as the blocks take.
  EXPECT_DOUBLE_EQ(qtl::bits_per_weight(rtn), g::type_bits_per_weight(Q::kType));
  EXPECT_DOUBLE_EQ(qtl::bits_per_weight(rtn), 8.0 * static_cast<double>(g::to_blocks(rtn).size()) /
                                                  static_cast<double>(w.size()));
  for (const auto* m : {&rtn, &searched}) {
    const auto bytes = g::to_blocks(*m);
    std::vector<float> decoded(static_cast<std::size_t>(w.size()));
    g::dequantize_row(Q::kType, bytes, decoded);
    EXPECT_TRUE(same_bits(qtl::dequantize(*m), decoded)) << Q{}.name();
    const auto back = g::from_blocks<Q>(bytes, 6, 512);
    EXPECT_EQ(back.codes, m->codes);
    EXPECT_EQ(g::to_blocks(back), bytes);
  }
  EXPECT_LT(weighted_error(w, qtl::dequantize(searched), base.column_importance),
            weighted_error(w, qtl::dequantize(rtn), base.column_importance));
  // GPTQ writes ternary blocks too
  const auto x = qtl::test::gaussian(300, 256, 8);
  const Eigen::MatrixXd h = (2.0 / 300) * (x.cast<double>().transpose() * x.cast<double>());
  const qtl::RowMatrixXf w2 = qtl::test::gaussian(4, 256, 9, 0.05f);
  const auto res = qtl::calib::gptq(Q{}, qtl::PerGroup{256}, w2, h);
  std::vector<float> decoded(static_cast<std::size_t>(w2.size()));
  g::dequantize_row(Q::kType, g::to_blocks(res.matrix), decoded);
  EXPECT_TRUE(same_bits(qtl::dequantize(res.matrix), decoded));
  EXPECT_THROW((void)qtl::quantize_matrix(Q{}, qtl::PerGroup{32}, w), qtl::Error);
  std::vector<std::byte> few(10);
  EXPECT_THROW((void)g::from_blocks<Q>(few, 1, 256), qtl::Error);
}

}  // namespace
