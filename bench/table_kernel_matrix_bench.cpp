// Benchmarks of the table-decode kernels (qtl/kernel/table/kernel_matrix.hpp) against limits
// measured in the same run (bench_limits.hpp) and against the uniform kernels at equal bits.
//
// Lines run in fp32-activation mode (mode:0) or in the int8 mode (mode:1; shared tables only:
// the table rounded to int8, the uniform int8 kernels with a code map). Every line carries:
//   gemv  GBps, bw_frac   bytes of the kernel layout / time / read bandwidth at that thread count
//                         (the larger of a fresh local measurement and the start-up one)
//         uni_fp32_us, uni_int8_us, ratio_fp32, ratio_int8
//                         the UniformKernelMatrix GEMV (fp32 resp. int8 activations) at the same
//                         bits (2 for the 1-bit table: uniform codes have no 1-bit format) and
//                         group, timed in the same line over its own copies; ratio = table time /
//                         uniform time (PERF target: <= 1.3)
//   gemm  GOPs, peak_frac 2 M N K / time / fp32 FMA peak (mode:0) or int8 dot-product peak
//                         (mode:1, PERF target for W4A8: >= 0.5); eigen_GOPs, vs_eigen = Eigen's
//                         fp32 GEMM on the same shape timed in the same line
// GEMV weights are cycled over copies totalling more than 4 x L3, so every call streams from DRAM.
// The portable lines compare the xsimd portable kernel (table_tiles_portable, batches of the
// arch this file is compiled for: AVX-512 under -march=native, SSE2 on plain x86-64, NEON on
// AArch64) with the same tiles one lane at a time (table_tiles_scalar): fp32 mode, one thread,
// kernel only (activations prepared once, outside the loop), one matrix (cache-resident where it
// fits, so bw_frac = GBps / the one-thread read bandwidth of start-up is a floor); speedup =
// scalar time / xsimd time, each scalar line right before its xsimd line.
//
//   build/bench/table_kernel_matrix_bench --benchmark_filter='gemv.*kind:0'
//   build/bench/table_kernel_matrix_bench --benchmark_filter='mode:1'
//   build/bench/table_kernel_matrix_bench --benchmark_filter=portable
#include <benchmark/benchmark.h>

#include <qtl/format/packed_matrix.hpp>
#include <qtl/format/table_packed.hpp>
#include <qtl/kernel/table.hpp>
#include <qtl/kernel/uniform.hpp>
#include <qtl/quant/binary.hpp>
#include <qtl/quant/codebook.hpp>
#include <qtl/quant/log2.hpp>
#include <qtl/quant/ternary.hpp>
#include <qtl/quant/uniform.hpp>

#include "bench_common.hpp"
#include "bench_limits.hpp"

#include <Eigen/Core>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

namespace {

using qtl::Index;
using qtl::kernel::ActivationMode;
using qtl::kernel::TableKernelMatrix;
using qtl::kernel::UniformKernelMatrix;
using bench_common::random_vector;
using bench_limits::g_limits;
using bench_limits::l3_bytes;
using bench_limits::seconds_since;

constexpr Index kGroup = 128;

float fp16(float v) { return qtl::detail::half_to_float(qtl::detail::float_to_half(v)); }

// A random table matrix built directly as codes + fp16-exact parameters (speed does not depend
// on the values, and quantizing 58M weights per format would dominate the run).
template <class Q>
qtl::TablePackedMatrix random_table(Index rows, Index cols, unsigned seed) {
  qtl::QuantizedMatrix<Q> q;
  q.layout = qtl::make_group_layout(qtl::PerGroup{kGroup}, rows, cols);
  std::mt19937 rng(seed);
  q.codes.resize(static_cast<std::size_t>(rows * cols));
  for (auto& c : q.codes) c = static_cast<std::uint8_t>(rng() & ((1u << Q::kBits) - 1));
  const Index sets = q.layout.num_param_sets();
  q.params.reserve(static_cast<std::size_t>(sets));
  for (Index i = 0; i < sets; ++i) {
    if constexpr (Q::kTableForm == qtl::TableForm::ScaledShared) {
      q.params.push_back(Q::params_from_scale(fp16(0.01f + 0.001f * static_cast<float>(rng() % 16))));
    } else {
      qtl::DecodeTable t{};
      for (int k = 0; k < (1 << Q::kBits); ++k) t[static_cast<std::size_t>(k)] = fp16(0.01f * static_cast<float>(k) - 0.07f);
      q.params.push_back(Q::params_from_levels(t));
    }
  }
  return qtl::pack_table(q);
}

// Kinds of table matrix: name, bits.
struct Kind {
  const char* name;
  int bits;
};
constexpr Kind kKinds[] = {{"nf4", 4}, {"kmeans4-perset", 4}, {"log2-3", 3}, {"ternary-2", 2}, {"binary-1", 1}};

qtl::TablePackedMatrix random_kind(int kind, Index rows, Index cols, unsigned seed) {
  switch (kind) {
    case 0: return random_table<qtl::NF4>(rows, cols, seed);
    case 1: return random_table<qtl::KMeansCodebook<4>>(rows, cols, seed);
    case 2: return random_table<qtl::Log2<3>>(rows, cols, seed);
    case 3: return random_table<qtl::Ternary>(rows, cols, seed);
    default: return random_table<qtl::Binary<false>>(rows, cols, seed);
  }
}

// Copies of one table matrix (enough to exceed 4 x L3 when cycling). Cached for the last key.
const std::vector<TableKernelMatrix>& table_set(int kind, Index rows, Index cols, bool cycle, ActivationMode mode) {
  static std::string key;
  static std::vector<TableKernelMatrix> set;
  const std::string k = std::to_string(kind) + "/" + std::to_string(rows) + "/" + std::to_string(cols) + (cycle ? "c" : "") +
                        (mode == ActivationMode::Int8 ? "i8" : "");
  if (k != key) {
    set.clear();
    TableKernelMatrix one(random_kind(kind, rows, cols, 1234u + static_cast<unsigned>(kind)), mode);
    set = bench_common::copies_beyond_l3(one, cycle);
    key = k;
  }
  return set;
}

const std::vector<UniformKernelMatrix>& uniform_set(int bits, Index rows, Index cols) {
  static std::string key;
  static std::vector<UniformKernelMatrix> set;
  const std::string k = std::to_string(bits) + "/" + std::to_string(rows) + "/" + std::to_string(cols);
  if (k != key) {
    set.clear();
    set = bench_common::copies_beyond_l3(UniformKernelMatrix(bench_common::random_uniform_packed(bits, rows, cols, kGroup, 99u)));
    key = k;
  }
  return set;
}

// Seconds per GEMV of the uniform copies (cycled), best of 3 rounds of `iters` calls.
double uniform_gemv_seconds(std::vector<UniformKernelMatrix>& ks, ActivationMode mode, const float* x, float* y,
                            int threads, std::size_t iters) {
  for (auto& k : ks) k.set_mode(mode);
  double best = 1e30;
  for (int round = 0; round < 3; ++round) {
    std::size_t i = 0;
    const auto t0 = std::chrono::steady_clock::now();
    for (std::size_t it = 0; it < iters; ++it) {
      ks[i].gemv(x, y, threads);
      benchmark::DoNotOptimize(y);
      i = i + 1 == ks.size() ? 0 : i + 1;
    }
    best = std::min(best, seconds_since(t0) / static_cast<double>(iters));
  }
  return best;
}

// args: kind, rows, cols, threads, mode
void BM_gemv(benchmark::State& state) {
  const int kind = static_cast<int>(state.range(0));
  const Index rows = state.range(1), cols = state.range(2);
  const int threads = static_cast<int>(state.range(3));
  const ActivationMode mode = state.range(4) ? ActivationMode::Int8 : ActivationMode::Fp32;
  const auto& ks = table_set(kind, rows, cols, true, mode);
  const auto x = random_vector(static_cast<std::size_t>(cols), 5);
  std::vector<float> y(static_cast<std::size_t>(rows));
  const double local_limit = bench_limits::g_stream ? bench_limits::read_gbps(threads, 2) : 0.0;
  const double limit = std::max(local_limit, g_limits.read_gbps[threads]);
  std::size_t i = 0;
  const auto t0 = std::chrono::steady_clock::now();
  for (auto _ : state) {
    ks[i].gemv(x.data(), y.data(), threads);
    benchmark::DoNotOptimize(y.data());
    i = i + 1 == ks.size() ? 0 : i + 1;
  }
  const double secs = seconds_since(t0);
  const double per_call = secs / static_cast<double>(state.iterations());
  const double bytes = static_cast<double>(ks[0].bytes());
  const double gbps = bytes / per_call / 1e9;
  // The uniform kernel at the same bits and group, same shape, same thread count.
  const int ubits = std::max(kKinds[kind].bits, 2);
  std::vector<UniformKernelMatrix> us = uniform_set(ubits, rows, cols);
  const std::size_t iters = std::max<std::size_t>(2 * us.size(), 40);
  const double u_fp32 = uniform_gemv_seconds(us, ActivationMode::Fp32, x.data(), y.data(), threads, iters);
  const double u_int8 = uniform_gemv_seconds(us, ActivationMode::Int8, x.data(), y.data(), threads, iters);
  state.SetBytesProcessed(static_cast<std::int64_t>(bytes * static_cast<double>(state.iterations())));
  state.SetLabel(kKinds[kind].name);
  state.counters["us"] = 1e6 * per_call;
  state.counters["GBps"] = gbps;
  state.counters["bpw"] = 8.0 * bytes / (static_cast<double>(rows) * static_cast<double>(cols));
  state.counters["bits"] = kKinds[kind].bits;
  state.counters["threads"] = threads;
  state.counters["limit_GBps"] = limit;
  state.counters["local_limit_GBps"] = local_limit;
  state.counters["bw_frac"] = limit > 0 ? gbps / limit : 0.0;
  state.counters["uni_bits"] = ubits;
  state.counters["uni_bpw"] = 8.0 * static_cast<double>(us[0].bytes()) / (static_cast<double>(rows) * static_cast<double>(cols));
  state.counters["uni_fp32_us"] = 1e6 * u_fp32;
  state.counters["uni_int8_us"] = 1e6 * u_int8;
  state.counters["ratio_fp32"] = per_call / u_fp32;
  state.counters["ratio_int8"] = per_call / u_int8;
}

// args: kind, rows, cols, m, threads, mode
void BM_gemm(benchmark::State& state) {
  const int kind = static_cast<int>(state.range(0));
  const Index rows = state.range(1), cols = state.range(2), m = state.range(3);
  const int threads = static_cast<int>(state.range(4));
  const bool int8 = state.range(5) != 0;
  const TableKernelMatrix k = table_set(kind, rows, cols, false, int8 ? ActivationMode::Int8 : ActivationMode::Fp32)[0];
  const auto x = random_vector(static_cast<std::size_t>(m * cols), 6);
  std::vector<float> y(static_cast<std::size_t>(m * rows));
  const double local_limit = !bench_limits::g_stream ? 0.0
                             : int8 ? bench_limits::dot_gops(threads, 3'000'000)
                                    : bench_limits::fma_gflops(threads, 3'000'000);
  const double limit = std::max(local_limit, int8 ? g_limits.dot_gops[threads] : g_limits.fma_gflops[threads]);
  const auto t0 = std::chrono::steady_clock::now();
  for (auto _ : state) {
    k.gemm(x.data(), cols, m, y.data(), rows, threads);
    benchmark::DoNotOptimize(y.data());
  }
  const double secs = seconds_since(t0);
  const double ops = 2.0 * static_cast<double>(m) * static_cast<double>(rows) * static_cast<double>(cols);
  const double gops = ops * static_cast<double>(state.iterations()) / secs / 1e9;
  // Eigen fp32 GEMM on the same shape: Y = X W^T.
  Eigen::setNbThreads(threads);
  const qtl::RowMatrixXf w = qtl::RowMatrixXf::Random(rows, cols);
  const qtl::RowMatrixXf xm = qtl::RowMatrixXf::Random(m, cols);
  qtl::RowMatrixXf ym(m, rows);
  double eigen_best = 1e30;
  for (int rep = 0; rep < 5; ++rep) {
    const auto e0 = std::chrono::steady_clock::now();
    ym.noalias() = xm * w.transpose();
    benchmark::DoNotOptimize(ym.data());
    eigen_best = std::min(eigen_best, seconds_since(e0));
  }
  const double eigen_gops = ops / eigen_best / 1e9;
  state.SetLabel(kKinds[kind].name);
  state.counters["GOPs"] = gops;
  state.counters["threads"] = threads;
  state.counters["bits"] = kKinds[kind].bits;
  state.counters["limit_GOPs"] = limit;
  state.counters["peak_frac"] = limit > 0 ? gops / limit : 0.0;
  state.counters["eigen_GOPs"] = eigen_gops;
  state.counters["vs_eigen"] = gops / eigen_gops;
}

// args: kind, rows, cols, m, impl (0 scalar, 1 xsimd)
void BM_portable(benchmark::State& state) {
  const int kind = static_cast<int>(state.range(0));
  const Index rows = state.range(1), cols = state.range(2), m = state.range(3);
  const bool xsimd_path = state.range(4) != 0;
  const TableKernelMatrix k(random_kind(kind, rows, cols, 1234u + static_cast<unsigned>(kind)), ActivationMode::Fp32,
                            qtl::kernel::KernelPath::Portable);
  const auto w = k.view();
  const Index kc = w.kernel_cols();
  const auto x = random_vector(static_cast<std::size_t>(m * cols), 7);
  std::vector<float> xk(static_cast<std::size_t>(m * kc), 0.0f);
  qtl::kernel::prepare_table_activations(w, x.data(), cols, 0, m, xk.data());
  std::vector<float> y(static_cast<std::size_t>(m * rows));
  const auto fn = xsimd_path ? &qtl::kernel::table_tiles_portable : &qtl::kernel::table_tiles_scalar;
  bench_common::time_portable(
      state, {kind, rows, cols, m}, xsimd_path, static_cast<double>(k.bytes()), std::string(kKinds[kind].name) + " ",
      [&] {
        fn(w, xk.data(), kc, m, y.data(), rows, 0, w.tiles);
        benchmark::DoNotOptimize(y.data());
      },
      2.0 * static_cast<double>(m * rows * cols), g_limits.fma_gflops[1]);
}

void register_benchmarks() {
  bench_limits::register_limit_lines();
  for (auto [rows, cols] : std::vector<std::pair<Index, Index>>{{4096, 4096}, {4096, 14336}, {14336, 4096}}) {
    for (int mode : {0, 1}) {
      for (int kind = 0; kind < static_cast<int>(std::size(kKinds)); ++kind) {
        if (mode == 1 && kind == 1) continue;  // per-set tables have no int8 mode
        for (int threads : {1, 2}) {
          benchmark::RegisterBenchmark("gemv", BM_gemv)
              ->Args({kind, rows, cols, threads, mode})
              ->ArgNames({"kind", "rows", "cols", "threads", "mode"})
              ->UseRealTime()
              ->MinTime(0.2);
        }
      }
    }
  }
  for (int kind : {0, 1, 3}) {
    benchmark::RegisterBenchmark("gemm", BM_gemm)
        ->Args({kind, 4096, 14336, 64, 2, 0})
        ->ArgNames({"kind", "rows", "cols", "m", "threads", "mode"})
        ->UseRealTime()
        ->MinTime(0.5);
  }
  for (int kind : {0, 2}) {
    for (Index m : {8, 64, 512}) {
      benchmark::RegisterBenchmark("gemm", BM_gemm)
          ->Args({kind, 4096, 14336, m, 2, 1})
          ->ArgNames({"kind", "rows", "cols", "m", "threads", "mode"})
          ->UseRealTime()
          ->MinTime(0.5);
    }
  }
  // The portable path (fp32 mode), xsimd against scalar (each scalar line right before its xsimd line).
  for (Index m : {1, 8}) {
    for (int kind : {0, 2, 3}) {
      for (int impl : {0, 1}) {
        benchmark::RegisterBenchmark("portable", BM_portable)
            ->Args({kind, 4096, 4096, m, impl})
            ->ArgNames({"kind", "rows", "cols", "m", "xsimd"})
            ->UseRealTime()
            ->MinTime(0.2);
      }
    }
  }
}

}  // namespace

int main(int argc, char** argv) { return bench_common::run_main(argc, argv, register_benchmarks); }
