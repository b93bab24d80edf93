// GPTQ and Hessian accumulation on a 4096 x 4096 layer (PERF.md's calibration target):
// 4-bit, group 128, 2048 calibration rows. Run with OMP_NUM_THREADS=2 (Eigen's GEMM and GPTQ's
// row-parallel block sweep both use OpenMP).
//
//   BM_HessianAccumulate  HessianAccumulator::add_batch of 2048 x 4096 activations
//   BM_EigenGemmXtX       the same product XᵀX as one plain Eigen fp32 GEMM (the yardstick:
//                         "Hessian accumulation at least 50% of Eigen GEMM speed")
//   BM_GptqFactorize      gptq()'s factorization: Cholesky + U's diagonal blocks (part of BM_Gptq)
//   BM_UpperCholeskyOfInverse  the full factor of H⁻¹ (Cholesky + triangular inverse), for comparison
//   BM_Gptq               gptq() from the Hessian to the quantized matrix (target <= 1 s);
//                         counters: output error of GPTQ and RTN on the calibration rows
#include <benchmark/benchmark.h>
#include <qtl/calib/gptq.hpp>
#include <qtl/calib/hessian.hpp>
#include <qtl/quant/metrics.hpp>
#include <qtl/quant/uniform.hpp>

#include <random>

namespace {

using qtl::Index;
using qtl::RowMatrixXf;

constexpr Index kIn = 4096, kOut = 4096, kTokens = 2048;

RowMatrixXf gaussian(Index rows, Index cols, unsigned seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  RowMatrixXf m(rows, cols);
  for (auto& v : m.reshaped()) v = normal(rng);
  return m;
}

// Correlated activations with channel magnitudes over a decade, like a real layer's inputs.
const RowMatrixXf& activations() {
  static const RowMatrixXf x = [] {
    const Index k = 512;
    RowMatrixXf m = gaussian(kTokens, k, 1) * (gaussian(k, kIn, 2) / std::sqrt(float(k)));
    m += 0.3f * gaussian(kTokens, kIn, 3);
    std::mt19937 rng(4);
    std::uniform_real_distribution<float> e(-0.5f, 0.5f);
    for (Index c = 0; c < kIn; ++c) m.col(c) *= std::pow(10.0f, e(rng));
    return m;
  }();
  return x;
}
const RowMatrixXf& weights() {
  static const RowMatrixXf w = gaussian(kOut, kIn, 5) * 0.02f;
  return w;
}
const Eigen::MatrixXd& hessian() {
  static const Eigen::MatrixXd h = [] {
    qtl::calib::HessianAccumulator acc(kIn);
    acc.add_batch(activations());
    return acc.hessian();
  }();
  return h;
}

void BM_HessianAccumulate(benchmark::State& state) {
  const RowMatrixXf& x = activations();
  for (auto _ : state) {
    qtl::calib::HessianAccumulator acc(kIn);
    acc.add_batch(x);
    benchmark::DoNotOptimize(acc.tokens());
  }
  // Flops of the full product XᵀX (2 n in²), so the rate compares directly with the GEMM below.
  state.counters["GFLOP/s(XtX-equiv)"] = benchmark::Counter(
      2.0 * kTokens * double(kIn) * kIn * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["threads"] = Eigen::nbThreads();
}
BENCHMARK(BM_HessianAccumulate)->Unit(benchmark::kMillisecond)->UseRealTime()->MinTime(2.0);

void BM_EigenGemmXtX(benchmark::State& state) {
  const RowMatrixXf& x = activations();
  Eigen::MatrixXf h(kIn, kIn);
  for (auto _ : state) {
    h.noalias() = x.transpose() * x;
    benchmark::DoNotOptimize(h.data());
  }
  state.counters["GFLOP/s"] = benchmark::Counter(2.0 * kTokens * double(kIn) * kIn * 1e-9,
                                                 benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_EigenGemmXtX)->Unit(benchmark::kMillisecond)->UseRealTime()->MinTime(2.0);

// The factorization gptq() runs: one Cholesky, Ũ, and U's diagonal 128-blocks.
void BM_GptqFactorize(benchmark::State& state) {
  const Eigen::MatrixXd& h = hessian();
  const double lambda = 0.01 * h.diagonal().mean();
  const auto blocks = qtl::calib::detail::gptq_blocks(kIn, 128, 128, true);
  const auto panels = qtl::calib::detail::gptq_panels(blocks, 128, true, 128);
  qtl::calib::detail::GptqFactor f;
  for (auto _ : state) {
    const bool ok = qtl::calib::detail::gptq_factor<float>(h, {}, lambda, 1e-6, panels, f,
                                                            qtl::calib::detail::factor_threads());
    benchmark::DoNotOptimize(ok);
  }
}
BENCHMARK(BM_GptqFactorize)->Unit(benchmark::kMillisecond)->UseRealTime()->MinTime(2.0);

// For comparison: the whole upper Cholesky factor of H⁻¹ (Cholesky + full triangular inverse),
// gptq.py's factor, which gptq() used before panels (GPTVQ still does).
void BM_UpperCholeskyOfInverse(benchmark::State& state) {
  const Eigen::MatrixXd& h = hessian();
  const double lambda = 0.01 * h.diagonal().mean();
  RowMatrixXf u;
  for (auto _ : state) {
    const bool ok = qtl::calib::detail::upper_cholesky_of_inverse<float>(h, lambda, 1e-6, u);
    benchmark::DoNotOptimize(ok);
  }
}
BENCHMARK(BM_UpperCholeskyOfInverse)->Unit(benchmark::kMillisecond)->UseRealTime()->MinTime(2.0);

void BM_Gptq(benchmark::State& state) {
  const RowMatrixXf& w = weights();
  const Eigen::MatrixXd& h = hessian();
  const qtl::Uniform<4> q;
  qtl::calib::GptqOptions opt;
  opt.act_order = state.range(0) != 0;
  RowMatrixXf wq;
  for (auto _ : state) {
    auto res = qtl::calib::gptq(q, qtl::PerGroup{128}, w, h, opt);
    benchmark::DoNotOptimize(res.matrix.codes.data());
    state.PauseTiming();
    wq = qtl::dequantize(res.matrix);
    state.ResumeTiming();
  }
  qtl::QuantizeOptions ro;
  ro.fit.refine_iterations = 0;
  const RowMatrixXf rtn = qtl::dequantize(qtl::quantize_matrix(q, qtl::PerGroup{128}, w, ro));
  const RowMatrixXf xs = activations().topRows(512);
  state.counters["out_err_gptq"] = qtl::relative_output_error(w, wq, xs);
  state.counters["out_err_rtn"] = qtl::relative_output_error(w, rtn, xs);
  state.counters["threads"] = Eigen::nbThreads();
}
BENCHMARK(BM_Gptq)->Arg(0)->Arg(1)->ArgName("act_order")->Unit(benchmark::kMillisecond)->UseRealTime()->MinTime(3.0);

}  // namespace

BENCHMARK_MAIN();
