// The C API (qtl/c/qtl.h, libqtl_c) against the C++ API it wraps: for every format and method,
// qtl_quantize + qtl_gemv/qtl_gemm give the C++ pipeline's product bit for bit; serialized
// matrices load back to the same product and the same bytes; every bad argument and every
// damaged or truncated byte sequence is a status with a message naming the value. The matrices
// are the bundled model's layers with inputs captured on its calibration stories.
// (tests/c/consumer/ is the same API from C, through an installed package.)
#include "recipe_instances.hpp"  // first: calibrate_group is compiled in the recipe libraries
#include <gtest/gtest.h>
#include <qtl/c/qtl.h>
#include <qtl/calib/gptq_ggml.hpp>
#include <qtl/calib/pipeline.hpp>
#include <qtl/format/packed_matrix.hpp>
#include <qtl/format/table_packed.hpp>
#include <qtl/kernel/lut.hpp>
#include <qtl/kernel/table.hpp>
#include <qtl/kernel/uniform.hpp>
#include <qtl/model/ggml_linear.hpp>
#include <qtl/model/quantize_file.hpp>
#include <qtl/quant/codebook.hpp>
#include <qtl/quant/ggml_quantizers.hpp>
#include <qtl/quant/log2.hpp>
#include <qtl/quant/ternary.hpp>
#include <qtl/quant/uniform.hpp>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <string>
#include <thread>
#include <vector>

#include "calib/real_inputs.hpp"
#include "data_path.hpp"
#include "temp_dir.hpp"
#include "test_util.hpp"

namespace {

using qtl::Index;
using qtl::RowMatrixXf;
namespace calib = qtl::calib;

/// A matrix handle freed at scope exit.
struct Owned {
  qtl_matrix* m = nullptr;
  Owned() = default;
  Owned(const Owned&) = delete;
  Owned& operator=(const Owned&) = delete;
  ~Owned() { qtl_matrix_free(m); }
};

std::vector<std::uint8_t> serialized(const qtl_matrix* m) {
  std::size_t size = 0;
  EXPECT_EQ(qtl_serialize(m, nullptr, 0, &size), QTL_OK) << qtl_last_error();
  std::vector<std::uint8_t> bytes(size);
  EXPECT_EQ(qtl_serialize(m, bytes.data(), bytes.size(), &size), QTL_OK) << qtl_last_error();
  return bytes;
}

std::string last() { return qtl_last_error(); }

RowMatrixXf c_gemm(const qtl_matrix* m, const RowMatrixXf& x, int threads = 1) {
  std::size_t rows = 0, cols = 0;
  EXPECT_EQ(qtl_matrix_info(m, &rows, &cols, nullptr, nullptr), QTL_OK);
  RowMatrixXf y(x.rows(), static_cast<Index>(rows));
  EXPECT_EQ(qtl_gemm(m, x.data(), cols, static_cast<std::size_t>(x.rows()), y.data(), rows, threads), QTL_OK)
      << qtl_last_error();
  return y;
}

void expect_bitwise_equal(const RowMatrixXf& a, const RowMatrixXf& b, const std::string& what) {
  ASSERT_EQ(a.rows(), b.rows()) << what;
  ASSERT_EQ(a.cols(), b.cols()) << what;
  EXPECT_EQ(std::memcmp(a.data(), b.data(), static_cast<std::size_t>(a.size()) * sizeof(float)), 0)
      << what << ": max |difference| " << (a - b).cwiseAbs().maxCoeff();
}

const qtl::test::RealLayer& layer() {
  static const auto& model = qtl::test::real_model(4, 2);
  return model.layers[1];  // layers.0.wk: 32 x 64
}

// ---- the C++ side of each comparison -------------------------------------------------------

struct Expected {
  RowMatrixXf y;
  qtl::VectorXf input_scale;
};

template <class Q>
qtl::QuantizedMatrix<Q> cpp_quantize(const Q& q, const qtl::Granularity& g, const RowMatrixXf& w, qtl_method method,
                                     const RowMatrixXf& calib_x, qtl::VectorXf& input_scale) {
  if (method == QTL_METHOD_RTN || method == QTL_METHOD_CLIP_SEARCH) {
    qtl::QuantizeOptions qo;
    qo.fit = method == QTL_METHOD_CLIP_SEARCH ? qtl::FitOptions::searched() : qtl::FitOptions{};
    return qtl::quantize_matrix(q, g, w, qo);
  }
  calib::HessianAccumulator acc(w.cols());
  acc.add_batch(calib_x);
  calib::Pipeline r;
  if (method == QTL_METHOD_GPTQ) {
    r.solver = calib::GptqOptions{.damp_fraction = 0.01};
  } else {
    r.awq = true;
    r.solver = calib::RtnOptions{};
  }
  auto layers = calib::calibrate_group(q, g, std::vector<RowMatrixXf>{w}, acc.statistics(), r);
  for (const auto& step : layers.front().transform.steps()) {
    const auto& s = std::get<calib::ChannelScale>(step).scales;
    input_scale = input_scale.size() == 0 ? s : qtl::VectorXf(input_scale.cwiseProduct(s));
  }
  return std::move(layers.front().matrix);
}

/// The C++ API's product for the same format, method and activations as the C call.
template <class Q>
RowMatrixXf cpp_product(const Q& q, const qtl::Granularity& g, const RowMatrixXf& w, qtl_method method,
                        const RowMatrixXf& calib_x, bool int8, const RowMatrixXf& x) {
  qtl::VectorXf s;
  const auto qm = cpp_quantize(q, g, w, method, calib_x, s);
  RowMatrixXf xs = x;
  if (s.size() > 0) xs.array().rowwise() /= s.transpose().array();
  const auto mode = int8 ? qtl::kernel::ActivationMode::Int8 : qtl::kernel::ActivationMode::Fp32;
  if constexpr (requires { Q::kType; }) {
    const qtl::model::GgmlLinear lin(Q::kType, w.rows(), w.cols(), qtl::ggml::to_blocks(qm));
    return xs * lin.weight().transpose();
  } else if constexpr (requires { qtl::pack(qm); }) {
    return qtl::kernel::UniformKernelMatrix(qtl::pack(qm), mode).gemm(xs, 1);
  } else {
    const qtl::TablePackedMatrix p = qtl::pack_table(qm);
    if (int8 && qtl::kernel::lut_representable(p)) return qtl::kernel::LutKernelMatrix(p).gemm(xs, 1);
    return qtl::kernel::TableKernelMatrix(p, mode).gemm(xs, 1);
  }
}

struct Case {
  const char* format;
  int group;
  bool int8;
};

template <class Q>
void check_against_cpp(const Q& q, const Case& c) {
  const RowMatrixXf& w = layer().weight;
  const RowMatrixXf& calib_x = layer().calib;
  const RowMatrixXf x = layer().eval.topRows(5);
  const bool ggml = requires { Q::kType; };
  const qtl::Granularity g = ggml ? qtl::Granularity(qtl::PerGroup{c.group == 0 ? 32 : c.group})
                             : c.group == 0 ? qtl::Granularity(qtl::PerRow{})
                                            : qtl::Granularity(qtl::PerGroup{c.group});
  for (qtl_method method : {QTL_METHOD_RTN, QTL_METHOD_CLIP_SEARCH, QTL_METHOD_GPTQ, QTL_METHOD_AWQ}) {
    const std::string what = std::string(c.format) + " group " + std::to_string(c.group) + " method " +
                             std::to_string(int(method)) + (c.int8 ? " int8" : " fp32");
    qtl_quantize_options o;
    qtl_quantize_options_init(&o);
    o.format = c.format;
    o.group_size = c.group;
    o.method = method;
    o.kernel_activations = c.int8 ? QTL_ACTIVATIONS_INT8 : QTL_ACTIVATIONS_FP32;
    if (method == QTL_METHOD_GPTQ || method == QTL_METHOD_AWQ) {
      o.activations = calib_x.data();
      o.tokens = static_cast<std::size_t>(calib_x.rows());
    }
    Owned m;
    ASSERT_EQ(qtl_quantize(w.data(), static_cast<std::size_t>(w.rows()), static_cast<std::size_t>(w.cols()), &o, &m.m),
              QTL_OK)
        << what << ": " << qtl_last_error();
    const RowMatrixXf y = c_gemm(m.m, x);
    expect_bitwise_equal(y, cpp_product(q, g, w, method, calib_x, c.int8, x), what);
    // GEMV (one token: the kernels' M = 1 path, which may sum in another order than M > 1).
    RowMatrixXf y1(1, w.rows());
    ASSERT_EQ(qtl_gemv(m.m, x.data(), y1.data(), 2), QTL_OK) << qtl_last_error();
    expect_bitwise_equal(y1, cpp_product(q, g, w, method, calib_x, c.int8, RowMatrixXf(x.topRows(1))), what + " gemv");

    // Serialized and loaded back: the same product, and the same bytes once more.
    const std::vector<std::uint8_t> bytes = serialized(m.m);
    Owned back;
    ASSERT_EQ(qtl_deserialize(bytes.data(), bytes.size(), &back.m), QTL_OK) << what << ": " << qtl_last_error();
    expect_bitwise_equal(c_gemm(back.m, x), y, what + " after a round trip");
    EXPECT_EQ(serialized(back.m), bytes) << what;
    double bpw = 0, bpw_back = 0;
    const char* name = nullptr;
    ASSERT_EQ(qtl_matrix_info(m.m, nullptr, nullptr, &bpw, &name), QTL_OK);
    ASSERT_EQ(qtl_matrix_info(back.m, nullptr, nullptr, &bpw_back, nullptr), QTL_OK);
    EXPECT_STREQ(name, c.format);
    EXPECT_EQ(bpw, bpw_back);
    EXPECT_GT(bpw, 1.0);
    EXPECT_LT(bpw, 16.0);
  }
}

TEST(CApi, EveryFormatAndMethodMatchesTheCppApiBitForBit) {
  check_against_cpp(qtl::Uniform<2>{}, {"uniform2", 32, false});
  check_against_cpp(qtl::Uniform<3>{}, {"uniform3", 16, true});
  check_against_cpp(qtl::Uniform<4>{}, {"uniform4", 32, true});
  check_against_cpp(qtl::Uniform<4>{}, {"uniform4", 0, false});
  check_against_cpp(qtl::Uniform<5>{}, {"uniform5", 32, true});
  check_against_cpp(qtl::Uniform<6>{}, {"uniform6", 0, false});
  check_against_cpp(qtl::Uniform<8>{}, {"uniform8", 64, true});
  check_against_cpp(qtl::NF4{}, {"nf4", 32, false});
  check_against_cpp(qtl::NF4{}, {"nf4", 32, true});
  check_against_cpp(qtl::Log2<2>{}, {"log2-2", 32, false});
  check_against_cpp(qtl::Log2<3>{}, {"log2-3", 32, false});
  check_against_cpp(qtl::Log2<4>{}, {"log2-4", 16, true});
  check_against_cpp(qtl::Ternary{}, {"ternary", 32, true});
  check_against_cpp(qtl::Ternary{}, {"ternary", 64, false});
  check_against_cpp(qtl::ggml::GgmlQ4_0{}, {"q4_0", 0, false});
  check_against_cpp(qtl::ggml::GgmlQ4_1{}, {"q4_1", 32, false});
  check_against_cpp(qtl::ggml::GgmlQ5_0{}, {"q5_0", 0, false});
  check_against_cpp(qtl::ggml::GgmlQ5_1{}, {"q5_1", 0, false});
  check_against_cpp(qtl::ggml::GgmlQ8_0{}, {"q8_0", 0, false});
  check_against_cpp(qtl::ggml::GgmlIQ4_NL{}, {"iq4_nl", 0, false});
}

/// K-quants (super-blocks of 256): the C call's bytes are the C++ API's (ggml::quantize_k for
/// RTN and clip search, calib::gptq_k on the diag(H)-importance grid for GPTQ), bit for bit.
template <qtl::ggml::Type T>
void check_k_quant(const char* name) {
  // The real layer's 32 x 64 weights as 8 rows of 256, its inputs four tokens to a row.
  const RowMatrixXf w = Eigen::Map<const RowMatrixXf>(layer().weight.data(), 8, 256);
  const Index tokens = layer().calib.rows() / 4;
  ASSERT_GE(tokens, 64);
  ASSERT_GE(layer().eval.rows(), 12);
  const RowMatrixXf calib_x = Eigen::Map<const RowMatrixXf>(layer().calib.data(), tokens, 256);
  const RowMatrixXf x = Eigen::Map<const RowMatrixXf>(layer().eval.data(), 3, 256);
  const qtl::ggml::KQuantizer<T> q;
  for (qtl_method method : {QTL_METHOD_RTN, QTL_METHOD_CLIP_SEARCH, QTL_METHOD_GPTQ}) {
    const std::string what = std::string(name) + " method " + std::to_string(int(method));
    qtl_quantize_options o;
    qtl_quantize_options_init(&o);
    o.format = name;
    o.group_size = 0;
    o.method = method;
    qtl::QuantizeOptions grid;
    std::vector<std::byte> expected;
    if (method == QTL_METHOD_GPTQ) {
      o.activations = calib_x.data();
      o.tokens = static_cast<std::size_t>(tokens);
      calib::HessianAccumulator acc(256);
      acc.add_batch(calib_x);
      const calib::LayerStatistics stats = acc.statistics();
      grid.column_importance = stats.hessian.diagonal().cast<float>().cwiseMax(0.0f);
      expected = qtl::ggml::to_blocks(calib::gptq_k(q, w, stats.hessian, grid, calib::GptqOptions{}).matrix);
    } else {
      grid.fit = method == QTL_METHOD_CLIP_SEARCH ? qtl::FitOptions::searched() : qtl::FitOptions{};
      expected = qtl::ggml::to_blocks(qtl::ggml::quantize_k(q, w, grid));
    }
    Owned m;
    ASSERT_EQ(qtl_quantize(w.data(), 8, 256, &o, &m.m), QTL_OK) << what << ": " << qtl_last_error();
    const std::vector<std::uint8_t> bytes = serialized(m.m);
    // The payload: the ggml type (u32), then its blocks.
    ASSERT_EQ(bytes.size(), 48 + 4 + expected.size() + 8) << what;
    std::uint32_t type = 0;
    std::memcpy(&type, bytes.data() + 48, 4);
    EXPECT_EQ(type, static_cast<std::uint32_t>(T)) << what;
    EXPECT_EQ(std::memcmp(bytes.data() + 52, expected.data(), expected.size()), 0) << what;
    const qtl::model::GgmlLinear lin(T, 8, 256, expected);
    const RowMatrixXf y = c_gemm(m.m, x);
    expect_bitwise_equal(y, RowMatrixXf(x * lin.weight().transpose()), what);
    Owned back;
    ASSERT_EQ(qtl_deserialize(bytes.data(), bytes.size(), &back.m), QTL_OK) << what << ": " << qtl_last_error();
    expect_bitwise_equal(c_gemm(back.m, x), y, what + " after a round trip");
    double bpw = 0;
    const char* got_name = nullptr;
    ASSERT_EQ(qtl_matrix_info(back.m, nullptr, nullptr, &bpw, &got_name), QTL_OK);
    EXPECT_STREQ(got_name, name);
    EXPECT_EQ(bpw, qtl::ggml::type_bits_per_weight(T)) << what;
  }
  qtl_quantize_options o;
  qtl_quantize_options_init(&o);
  o.format = name;
  o.group_size = 0;
  o.method = QTL_METHOD_AWQ;
  o.activations = calib_x.data();
  o.tokens = static_cast<std::size_t>(tokens);
  qtl_matrix* m = nullptr;
  EXPECT_EQ(qtl_quantize(w.data(), 8, 256, &o, &m), QTL_ERROR_INVALID_ARGUMENT);
  EXPECT_NE(last().find(std::string("AWQ is not available for ") + name), std::string::npos) << last();
  o.method = QTL_METHOD_RTN;
  o.activations = nullptr;
  o.group_size = 32;
  EXPECT_EQ(qtl_quantize(w.data(), 8, 256, &o, &m), QTL_ERROR_INVALID_ARGUMENT);
  EXPECT_NE(last().find("group_size must be 0 or 256, got 32"), std::string::npos) << last();
  o.group_size = 256;
  EXPECT_EQ(qtl_quantize(layer().weight.data(), 32, 64, &o, &m), QTL_ERROR_INVALID_ARGUMENT);
  EXPECT_NE(last().find("needs cols a multiple of 256, got 64"), std::string::npos) << last();
  EXPECT_EQ(m, nullptr);
}

TEST(CApi, KQuantsMatchTheCppApiBitForBit) {
  using qtl::ggml::Type;
  check_k_quant<Type::Q2_K>("q2_K");
  check_k_quant<Type::Q3_K>("q3_K");
  check_k_quant<Type::Q4_K>("q4_K");
  check_k_quant<Type::Q5_K>("q5_K");
  check_k_quant<Type::Q6_K>("q6_K");
}

TEST(CApi, GgmlTernaryTypesRoundTrip) {
  // tq1_0 / tq2_0 have 256-weight blocks: a 16 x 256 matrix.
  const RowMatrixXf w = qtl::test::gaussian(16, 256, 7, 0.05f);
  const RowMatrixXf x = qtl::test::gaussian(3, 256, 8);
  for (const char* f : {"tq1_0", "tq2_0"}) {
    qtl_quantize_options o;
    qtl_quantize_options_init(&o);
    o.format = f;
    o.group_size = 0;
    Owned m;
    ASSERT_EQ(qtl_quantize(w.data(), 16, 256, &o, &m.m), QTL_OK) << qtl_last_error();
    const RowMatrixXf y = c_gemm(m.m, x);
    const auto bytes = serialized(m.m);
    Owned back;
    ASSERT_EQ(qtl_deserialize(bytes.data(), bytes.size(), &back.m), QTL_OK) << qtl_last_error();
    expect_bitwise_equal(c_gemm(back.m, x), y, f);
    EXPECT_LT((y - x * w.transpose()).norm(), 0.9 * (x * w.transpose()).norm()) << f;
  }
}

TEST(CApi, ResultsDoNotDependOnThreadsAndCallsRunConcurrently) {
  const RowMatrixXf& w = layer().weight;
  const auto rows = static_cast<std::size_t>(w.rows()), cols = static_cast<std::size_t>(w.cols());
  const RowMatrixXf x = layer().eval.topRows(8);
  qtl_quantize_options o;
  qtl_quantize_options_init(&o);
  o.method = QTL_METHOD_GPTQ;
  o.activations = layer().calib.data();
  o.tokens = static_cast<std::size_t>(layer().calib.rows());
  o.kernel_activations = QTL_ACTIVATIONS_INT8;
  Owned one, two;
  ASSERT_EQ(qtl_quantize(w.data(), rows, cols, &o, &one.m), QTL_OK) << qtl_last_error();
  o.threads = 2;
  ASSERT_EQ(qtl_quantize(w.data(), rows, cols, &o, &two.m), QTL_OK) << qtl_last_error();
  EXPECT_EQ(serialized(one.m), serialized(two.m));
  const RowMatrixXf y = c_gemm(one.m, x, 1);
  expect_bitwise_equal(c_gemm(one.m, x, 2), y, "2 threads");
  std::vector<RowMatrixXf> results(4);
  std::vector<std::thread> threads;
  for (auto& r : results) threads.emplace_back([&] { r = c_gemm(one.m, x, 1); });
  for (auto& t : threads) t.join();
  for (const auto& r : results) expect_bitwise_equal(r, y, "concurrent");
}

TEST(CApi, AHessianServesAsWellAsTheActivations) {
  const RowMatrixXf& w = layer().weight;
  const auto rows = static_cast<std::size_t>(w.rows()), cols = static_cast<std::size_t>(w.cols());
  calib::HessianAccumulator acc(w.cols());
  acc.add_batch(layer().calib);
  const Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor> h = acc.hessian();
  qtl_quantize_options o;
  qtl_quantize_options_init(&o);
  o.method = QTL_METHOD_GPTQ;
  o.activations = layer().calib.data();
  o.tokens = static_cast<std::size_t>(layer().calib.rows());
  Owned from_x, from_h, rtn;
  ASSERT_EQ(qtl_quantize(w.data(), rows, cols, &o, &from_x.m), QTL_OK) << qtl_last_error();
  o.activations = nullptr;
  o.tokens = 0;
  o.hessian = h.data();
  ASSERT_EQ(qtl_quantize(w.data(), rows, cols, &o, &from_h.m), QTL_OK) << qtl_last_error();
  EXPECT_EQ(serialized(from_x.m), serialized(from_h.m));  // GPTQ reads nothing but H
  o.method = QTL_METHOD_AWQ;
  Owned awq;
  ASSERT_EQ(qtl_quantize(w.data(), rows, cols, &o, &awq.m), QTL_OK) << qtl_last_error();
  o.method = QTL_METHOD_RTN;
  o.hessian = nullptr;
  ASSERT_EQ(qtl_quantize(w.data(), rows, cols, &o, &rtn.m), QTL_OK) << qtl_last_error();
  // On held-out inputs, GPTQ's and AWQ's outputs are closer to the fp32 layer's than RTN's.
  const RowMatrixXf x = layer().eval;
  const RowMatrixXf exact = x * w.transpose();
  const double e_rtn = (c_gemm(rtn.m, x) - exact).squaredNorm();
  EXPECT_LT((c_gemm(from_h.m, x) - exact).squaredNorm(), 0.9 * e_rtn);
  EXPECT_LT((c_gemm(awq.m, x) - exact).squaredNorm(), e_rtn);
}

// ---- errors --------------------------------------------------------------------------------

TEST(CApiErrors, BadArgumentsAreStatusesWithMessagesNamingTheValue) {
  const RowMatrixXf w = qtl::test::gaussian(8, 64, 1);
  qtl_quantize_options o;
  qtl_quantize_options_init(&o);
  qtl_matrix* m = reinterpret_cast<qtl_matrix*>(0x1);  // must be reset to NULL on failure
  EXPECT_EQ(qtl_quantize(nullptr, 8, 64, &o, &m), QTL_ERROR_INVALID_ARGUMENT);
  EXPECT_EQ(m, nullptr);
  EXPECT_NE(last().find("weights is NULL"), std::string::npos) << last();
  EXPECT_EQ(qtl_quantize(w.data(), 8, 64, nullptr, &m), QTL_ERROR_INVALID_ARGUMENT);
  EXPECT_NE(last().find("options is NULL"), std::string::npos) << last();
  EXPECT_EQ(qtl_quantize(w.data(), 8, 64, &o, nullptr), QTL_ERROR_INVALID_ARGUMENT);
  EXPECT_NE(last().find("out is NULL"), std::string::npos) << last();
  EXPECT_EQ(qtl_quantize(w.data(), 0, 64, &o, &m), QTL_ERROR_INVALID_ARGUMENT);
  EXPECT_NE(last().find("0x64"), std::string::npos) << last();
  o.format = "uniform7";
  EXPECT_EQ(qtl_quantize(w.data(), 8, 64, &o, &m), QTL_ERROR_INVALID_ARGUMENT);
  EXPECT_NE(last().find("unknown format 'uniform7'"), std::string::npos) << last();
  o.format = "q4_0";
  o.group_size = 64;
  EXPECT_EQ(qtl_quantize(w.data(), 8, 64, &o, &m), QTL_ERROR_INVALID_ARGUMENT);
  EXPECT_NE(last().find("got 64"), std::string::npos) << last();
  o.group_size = 0;
  o.kernel_activations = QTL_ACTIVATIONS_INT8;
  EXPECT_EQ(qtl_quantize(w.data(), 8, 64, &o, &m), QTL_ERROR_INVALID_ARGUMENT);
  EXPECT_NE(last().find("fp32 activations only"), std::string::npos) << last();
  qtl_quantize_options_init(&o);
  o.group_size = -3;
  EXPECT_EQ(qtl_quantize(w.data(), 8, 64, &o, &m), QTL_ERROR_INVALID_ARGUMENT);
  EXPECT_NE(last().find("-3"), std::string::npos) << last();
  qtl_quantize_options_init(&o);
  o.method = static_cast<qtl_method>(9);
  EXPECT_EQ(qtl_quantize(w.data(), 8, 64, &o, &m), QTL_ERROR_INVALID_ARGUMENT);
  EXPECT_NE(last().find("unknown method 9"), std::string::npos) << last();
  o.method = QTL_METHOD_GPTQ;
  EXPECT_EQ(qtl_quantize(w.data(), 8, 64, &o, &m), QTL_ERROR_INVALID_ARGUMENT);
  EXPECT_NE(last().find("needs calibration activations or a hessian"), std::string::npos) << last();
  const RowMatrixXf x = qtl::test::gaussian(10, 64, 2);
  o.activations = x.data();
  o.tokens = 10;
  o.damp = -1;
  EXPECT_EQ(qtl_quantize(w.data(), 8, 64, &o, &m), QTL_ERROR_INVALID_ARGUMENT);
  EXPECT_NE(last().find("damp must be in [0, 10], got -1"), std::string::npos) << last();
  qtl_quantize_options_init(&o);
  RowMatrixXf bad = w;
  bad(3, 5) = std::numeric_limits<float>::quiet_NaN();
  EXPECT_EQ(qtl_quantize(bad.data(), 8, 64, &o, &m), QTL_ERROR_INVALID_ARGUMENT);
  EXPECT_NE(last().find("(3, 5)"), std::string::npos) << last();

  Owned ok;
  ASSERT_EQ(qtl_quantize(w.data(), 8, 64, &o, &ok.m), QTL_OK) << last();
  RowMatrixXf y(1, 8);
  RowMatrixXf xin = qtl::test::gaussian(1, 64, 3);
  EXPECT_EQ(qtl_gemv(nullptr, xin.data(), y.data(), 1), QTL_ERROR_INVALID_ARGUMENT);
  EXPECT_NE(last().find("matrix is NULL"), std::string::npos) << last();
  EXPECT_EQ(qtl_gemv(ok.m, xin.data(), y.data(), 0), QTL_ERROR_INVALID_ARGUMENT);
  EXPECT_NE(last().find("threads must be >= 1, got 0"), std::string::npos) << last();
  xin(0, 7) = std::numeric_limits<float>::infinity();
  EXPECT_EQ(qtl_gemv(ok.m, xin.data(), y.data(), 1), QTL_ERROR_INVALID_ARGUMENT);
  EXPECT_NE(last().find("x(0, 7) is inf"), std::string::npos) << last();
  EXPECT_EQ(qtl_gemm(ok.m, xin.data(), 32, 1, y.data(), 8, 1), QTL_ERROR_INVALID_ARGUMENT);
  EXPECT_NE(last().find("ldx 32 is below cols 64"), std::string::npos) << last();
  std::size_t size = 0;
  EXPECT_EQ(qtl_serialize(ok.m, nullptr, 0, nullptr), QTL_ERROR_INVALID_ARGUMENT);
  ASSERT_EQ(qtl_serialize(ok.m, nullptr, 0, &size), QTL_OK);
  std::vector<std::uint8_t> small(size - 1);
  EXPECT_EQ(qtl_serialize(ok.m, small.data(), small.size(), &size), QTL_ERROR_BUFFER_TOO_SMALL);
  EXPECT_NE(last().find(std::to_string(size)), std::string::npos) << last();
  qtl_matrix_free(nullptr);  // a no-op
}

TEST(CApiErrors, EveryTruncationAndEveryDamagedByteIsCorruptData) {
  const RowMatrixXf w = qtl::test::gaussian(4, 64, 5);
  for (const char* f : {"uniform3", "nf4", "q4_1"}) {
    qtl_quantize_options o;
    qtl_quantize_options_init(&o);
    o.format = f;
    o.group_size = f[0] == 'q' ? 0 : 32;
    Owned m;
    ASSERT_EQ(qtl_quantize(w.data(), 4, 64, &o, &m.m), QTL_OK) << qtl_last_error();
    const auto bytes = serialized(m.m);
    for (std::size_t n = 0; n < bytes.size(); ++n) {
      qtl_matrix* back = nullptr;
      ASSERT_EQ(qtl_deserialize(bytes.data(), n, &back), QTL_ERROR_CORRUPT_DATA) << f << " first " << n << " bytes";
      EXPECT_EQ(back, nullptr);
      EXPECT_NE(last().find("qtl_deserialize"), std::string::npos) << last();
    }
    for (std::size_t i = 0; i < bytes.size(); ++i) {
      auto damaged = bytes;
      damaged[i] ^= 0x10;
      qtl_matrix* back = nullptr;
      ASSERT_EQ(qtl_deserialize(damaged.data(), damaged.size(), &back), QTL_ERROR_CORRUPT_DATA) << f << " byte " << i;
    }
  }
  qtl_matrix* back = nullptr;
  EXPECT_EQ(qtl_deserialize(nullptr, 10, &back), QTL_ERROR_INVALID_ARGUMENT);
  EXPECT_NE(last().find("data is NULL"), std::string::npos) << last();
  const char junk[64] = "GGUF and then some bytes that are not a qtl matrix at all.....";
  EXPECT_EQ(qtl_deserialize(junk, sizeof junk, &back), QTL_ERROR_CORRUPT_DATA);
  EXPECT_NE(last().find("no QTLM magic"), std::string::npos) << last();
}

/// FNV-1a as the layout defines it, to forge a valid checksum over crafted contents.
void reseal(std::vector<std::uint8_t>& b) {
  std::uint64_t h = 14695981039346656037ULL;
  for (std::size_t i = 0; i + 8 < b.size(); ++i) h = (h ^ b[i]) * 1099511628211ULL;
  std::memcpy(b.data() + b.size() - 8, &h, 8);
}

TEST(CApiErrors, CraftedContentsWithAValidChecksumAreStillChecked) {
  const RowMatrixXf w = qtl::test::gaussian(4, 40, 6);  // 40 columns: 24 padding codes per row
  qtl_quantize_options o;
  qtl_quantize_options_init(&o);
  o.format = "uniform4";
  o.group_size = 8;
  Owned m;
  ASSERT_EQ(qtl_quantize(w.data(), 4, 40, &o, &m.m), QTL_OK) << qtl_last_error();
  const auto bytes = serialized(m.m);
  auto expect_corrupt = [&](std::size_t offset, std::uint8_t value, const std::string& needle) {
    auto b = bytes;
    b[offset] = value;
    reseal(b);
    qtl_matrix* back = nullptr;
    EXPECT_EQ(qtl_deserialize(b.data(), b.size(), &back), QTL_ERROR_CORRUPT_DATA) << "offset " << offset;
    EXPECT_NE(last().find(needle), std::string::npos) << last();
    qtl_matrix_free(back);
  };
  expect_corrupt(4, 2, "layout version 2");
  expect_corrupt(8, 99, "unknown format id 99");
  expect_corrupt(8, 1, "4-bit asymmetric codes in a uniform2 matrix");
  expect_corrupt(32, 0, "group size 0");
  expect_corrupt(36, 1, "reserved field is 1");
  // Codes of row 0 start at payload offset 8 (48 + 8): block 1 of row 0 holds padding codes.
  const std::size_t block1 = 48 + 8 + 16;
  expect_corrupt(block1 + 15, static_cast<std::uint8_t>(bytes[block1 + 15] ^ 0x11), "padding code");
  // The scales follow the 4 x 2 x 16 code bytes: an fp16 infinity.
  const std::size_t scales = 48 + 8 + 4 * 2 * 16;
  {
    auto b = bytes;
    b[scales] = 0x00;
    b[scales + 1] = 0x7c;
    reseal(b);
    qtl_matrix* back = nullptr;
    EXPECT_EQ(qtl_deserialize(b.data(), b.size(), &back), QTL_ERROR_CORRUPT_DATA);
    EXPECT_NE(last().find("scale 0 is not finite"), std::string::npos) << last();
  }
  // A zero point past 15 (the zeros follow the 20 scales).
  expect_corrupt(scales + 2 * 20, 16, "zero point 16");

  // An AWQ input scale so small that x / s would overflow (found by tests/fuzz/c_api_fuzz.cpp).
  const RowMatrixXf x = qtl::test::gaussian(64, 40, 9);
  qtl_quantize_options_init(&o);
  o.format = "nf4";
  o.group_size = 8;
  o.method = QTL_METHOD_AWQ;
  o.activations = x.data();
  o.tokens = 64;
  Owned awq;
  ASSERT_EQ(qtl_quantize(w.data(), 4, 40, &o, &awq.m), QTL_OK) << qtl_last_error();
  auto b = serialized(awq.m);
  const float tiny = 1e-30f;
  std::memcpy(b.data() + b.size() - 8 - 40 * sizeof(float), &tiny, sizeof tiny);
  reseal(b);
  qtl_matrix* back = nullptr;
  EXPECT_EQ(qtl_deserialize(b.data(), b.size(), &back), QTL_ERROR_CORRUPT_DATA);
  EXPECT_NE(last().find("input scale 0 is 1e-30"), std::string::npos) << last();
}

// ---- whole model files ---------------------------------------------------------------------

namespace model_files {

std::vector<char> file_bytes(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

struct Progress {
  std::vector<double> fractions;
  int stop_after = -1;  ///< >= 0: ask to stop at that call
  static int callback(double fraction, const char* message, void* user) {
    auto* p = static_cast<Progress*>(user);
    EXPECT_NE(message, nullptr);
    p->fractions.push_back(fraction);
    return p->stop_after >= 0 && static_cast<int>(p->fractions.size()) > p->stop_after ? 1 : 0;
  }
};

TEST(CApiModelFile, WritesTheSameFileAsTheCppCallAndReportsProgress) {
  const qtl::test::TempDir dir;
  const auto input = qtl::io::require_data_file("stories260K/stories260K.bin");
  const auto text = qtl::io::require_data_file("tinystories_val_dev.txt");
  qtl_model_options o;
  qtl_model_options_init(&o);
  o.recipe = "gptq";
  o.calibration_text = text.c_str();
  o.calib_first = 0;
  o.calib_last = 3;
  Progress progress;
  o.progress = &Progress::callback;
  o.user = &progress;
  const auto c_out = dir.file("c.gguf");
  double bpw = 0.0;
  ASSERT_EQ(qtl_quantize_model_file(input.c_str(), c_out.c_str(), "Q4_0", &o, &bpw), QTL_OK) << qtl_last_error();
  EXPECT_GT(bpw, 4.5);  // q4_0 layers, and llama-quantize's wider types for the embeddings
  EXPECT_LT(bpw, 8.5);
  ASSERT_GE(progress.fractions.size(), 3u);
  for (std::size_t i = 1; i < progress.fractions.size(); ++i) EXPECT_GE(progress.fractions[i], progress.fractions[i - 1]);
  EXPECT_EQ(progress.fractions.back(), 1.0);

  qtl::model::QuantizeFileOptions co;
  co.input = input;
  co.output = dir.file("cpp.gguf");
  co.type = "Q4_0";
  co.recipe = "gptq";
  co.calibration_text = text;
  co.calib_first = 0;
  co.calib_last = 3;
  const auto r = qtl::model::quantize_model_file(co);
  EXPECT_EQ(r.bits_per_weight, bpw);
  EXPECT_EQ(file_bytes(c_out), file_bytes(co.output));  // byte for byte the same file
}

TEST(CApiModelFile, ErrorsNameTheValueAndCancellingLeavesNoFile) {
  const qtl::test::TempDir dir;
  const auto input = qtl::io::require_data_file("stories260K/stories260K.bin");
  const auto text = qtl::io::require_data_file("tinystories_val_dev.txt");
  const auto out = dir.file("out.gguf");
  qtl_model_options o;
  qtl_model_options_init(&o);
  EXPECT_EQ(qtl_quantize_model_file(input.c_str(), out.c_str(), "Q4_Z", &o, nullptr), QTL_ERROR_INVALID_ARGUMENT);
  EXPECT_NE(last().find("Q4_Z"), std::string::npos) << last();
  EXPECT_EQ(qtl_quantize_model_file("/nonexistent/model.bin", out.c_str(), "Q8_0", &o, nullptr),
            QTL_ERROR_INVALID_ARGUMENT);
  EXPECT_NE(last().find("/nonexistent/model.bin"), std::string::npos) << last();
  EXPECT_EQ(qtl_quantize_model_file(input.c_str(), out.c_str(), "Q4_K_M", &o, nullptr), QTL_ERROR_INVALID_ARGUMENT);
  EXPECT_NE(last().find("no calibration text"), std::string::npos) << last();
  o.recipe = "gptq-fancy";
  EXPECT_EQ(qtl_quantize_model_file(input.c_str(), out.c_str(), "Q8_0", &o, nullptr), QTL_ERROR_INVALID_ARGUMENT);
  EXPECT_NE(last().find("unknown recipe 'gptq-fancy'"), std::string::npos) << last();
  o.recipe = "gptq";
  o.calibration_text = text.c_str();
  o.calib_first = 5;
  o.calib_last = 2;
  EXPECT_EQ(qtl_quantize_model_file(input.c_str(), out.c_str(), "Q8_0", &o, nullptr), QTL_ERROR_INVALID_ARGUMENT);
  EXPECT_NE(last().find("5-2"), std::string::npos) << last();
  EXPECT_EQ(qtl_quantize_model_file(nullptr, out.c_str(), "Q8_0", &o, nullptr), QTL_ERROR_INVALID_ARGUMENT);
  EXPECT_NE(last().find("input is NULL"), std::string::npos) << last();
  o.calib_first = 0;
  o.calib_last = 1;
  Progress progress;
  progress.stop_after = 2;
  o.progress = &Progress::callback;
  o.user = &progress;
  EXPECT_EQ(qtl_quantize_model_file(input.c_str(), out.c_str(), "Q8_0", &o, nullptr), QTL_ERROR_CANCELLED);
  EXPECT_NE(last().find("cancelled"), std::string::npos) << last();
  EXPECT_EQ(progress.fractions.size(), 3u);
  EXPECT_FALSE(std::filesystem::exists(out));
}

}  // namespace model_files

}  // namespace
