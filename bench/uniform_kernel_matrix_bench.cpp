// Benchmarks of the uniform (integer-affine) kernels against limits measured in the same run.
//
// Before any benchmark runs, main() measures this machine's limits (qtl PERF targets are ratios
// to these, because absolute times drift on shared machines):
//   read bandwidth  summing a buffer of max(4 x L3, 256 MiB) with 512-bit loads, 1 and 2 threads
//   fp32 FMA peak   12 independent zmm FMA chains per thread
//   int8 dot peak   12 independent zmm vpdpbusd chains per thread (one vpdpbusd = 128 ops)
// They are reported as the lines limit/... and every kernel line carries counters:
//   GBps, bw_frac (GEMV: bytes of the kernel layout / time / read bandwidth at that thread count)
//   GOPs, peak_frac (GEMM: 2 M N K / time / int8 dot peak (Int8 mode) or fp32 FMA peak)
// Each line also re-measures its own limit just before it runs (local_limit_*; the machine is
// shared and drifts); the fraction uses the larger of that and the start-up measurement.
// GEMV weights are cycled over copies totalling more than 4 x L3, so every call streams from DRAM.
//
// The portable lines compare the xsimd portable kernels with the scalar ones
// (--benchmark_filter=portable runs only them).
// Run (default set, a few minutes):
//   build/bench/uniform_kernel_matrix_bench --benchmark_format=json --benchmark_out=kernels.json
//   python3 bench/plot_roofline kernels.json roofline.png      (or: bench/plot_roofline ...)
#include <benchmark/benchmark.h>

#include <qtl/kernels.hpp>

#include "bench_common.hpp"
#include "bench_limits.hpp"


#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

namespace {

using qtl::Index;
using qtl::kernel::ActivationMode;
using qtl::kernel::UniformKernelMatrix;

// ---------------------------------------------------------------- limits (bench_limits.hpp)
using bench_common::random_vector;
using bench_limits::g_limits;
using bench_limits::l3_bytes;
using bench_limits::seconds_since;
inline double probe_read_gbps(int threads, int passes) { return bench_limits::read_gbps(threads, passes); }
inline double probe_dot_gops(int threads, long iters) { return bench_limits::dot_gops(threads, iters); }
inline double probe_fma_gflops(int threads, long iters) { return bench_limits::fma_gflops(threads, iters); }
inline bool probes_ok() { return bench_limits::g_stream != nullptr; }

// ---------------------------------------------------------------- matrices
// The set of copies for one (bits, rows, cols, group): enough to exceed 4 x L3. Cached for the
// last key. Group 128 unless told (group 32 is ggml's block and vs_ggml_bench's).
struct MatrixSet {
  std::vector<UniformKernelMatrix> copies;
};
const MatrixSet& matrix_set(int bits, Index rows, Index cols, bool cycle, Index group_size = 128) {
  static std::string key;
  static std::unique_ptr<MatrixSet> set;
  const std::string k = std::to_string(bits) + "/" + std::to_string(rows) + "/" + std::to_string(cols) + "/" +
                        std::to_string(group_size) + (cycle ? "c" : "");
  if (k != key) {
    set.reset();
    set = std::make_unique<MatrixSet>();
    const Index group = std::min<Index>(group_size, cols);
    set->copies = bench_common::copies_beyond_l3(
        UniformKernelMatrix(bench_common::random_uniform_packed(bits, rows, cols, group, 1234u + static_cast<unsigned>(bits))), cycle);
    key = k;
  }
  return *set;
}

// args: bits, rows, cols, threads, mode (0 fp32, 1 int8)
void BM_gemv(benchmark::State& state) {
  const int bits = static_cast<int>(state.range(0));
  const Index rows = state.range(1), cols = state.range(2);
  const int threads = static_cast<int>(state.range(3));
  const ActivationMode mode = state.range(4) ? ActivationMode::Int8 : ActivationMode::Fp32;
  const MatrixSet& set = matrix_set(bits, rows, cols, true);
  std::vector<UniformKernelMatrix> ks = set.copies;  // shares nothing: set_mode per copy is cheap
  for (auto& k : ks) k.set_mode(mode);
  const auto x = random_vector(static_cast<std::size_t>(cols), 5);
  std::vector<float> y(static_cast<std::size_t>(rows));
  // The limit right before this line (the machine is shared: its bandwidth drifts), and the
  // run-wide limit measured at start-up; the fraction uses the larger, i.e. the stricter one.
  const double local_limit = probes_ok() ? probe_read_gbps(threads, 2) : 0.0;
  const double limit = std::max(local_limit, g_limits.read_gbps[threads]);
  std::size_t i = 0;
  const auto t0 = std::chrono::steady_clock::now();
  for (auto _ : state) {
    ks[i].gemv(x.data(), y.data(), threads);
    benchmark::DoNotOptimize(y.data());
    i = i + 1 == ks.size() ? 0 : i + 1;
  }
  const double secs = seconds_since(t0);
  const double bytes = static_cast<double>(ks[0].bytes());
  const double gbps = bytes * static_cast<double>(state.iterations()) / secs / 1e9;
  state.SetBytesProcessed(static_cast<std::int64_t>(bytes * static_cast<double>(state.iterations())));
  state.counters["GBps"] = gbps;
  state.counters["weight_bytes"] = bytes;
  state.counters["GOPs"] = 2.0 * static_cast<double>(rows) * static_cast<double>(cols) * static_cast<double>(state.iterations()) / secs / 1e9;
  state.counters["us"] = 1e6 * secs / static_cast<double>(state.iterations());
  state.counters["bpw"] = 8.0 * bytes / (static_cast<double>(rows) * static_cast<double>(cols));
  state.counters["threads"] = threads;
  state.counters["bits"] = bits;
  state.counters["limit_GBps"] = limit;
  state.counters["local_limit_GBps"] = local_limit;
  state.counters["bw_frac"] = limit > 0 ? gbps / limit : 0.0;
}

// args: bits, rows, cols, m, threads, mode, amx (1: the int8 GEMM on AMX tiles, its limit the
// AMX probe's; 0: on the vector path, its limit the vpdpbusd probe's), group (columns)
void BM_gemm(benchmark::State& state) {
  const int bits = static_cast<int>(state.range(0));
  const Index rows = state.range(1), cols = state.range(2), m = state.range(3);
  const int threads = static_cast<int>(state.range(4));
  const ActivationMode mode = state.range(5) ? ActivationMode::Int8 : ActivationMode::Fp32;
  const bool amx = state.range(6) != 0;
  const Index group = state.range(7);
  UniformKernelMatrix k = matrix_set(bits, rows, cols, false, group).copies[0];
  k.set_mode(mode);
  k.set_amx(amx);
  const auto x = random_vector(static_cast<std::size_t>(m * cols), 6);
  std::vector<float> y(static_cast<std::size_t>(m * rows));
  const bool int8 = mode == ActivationMode::Int8;
  const double local_limit = !probes_ok() ? 0.0
                             : amx       ? bench_limits::amx_gops(threads, 300'000)
                             : int8      ? probe_dot_gops(threads, 3'000'000)
                                         : probe_fma_gflops(threads, 3'000'000);
  const double limit = std::max(local_limit, amx    ? g_limits.amx_gops[threads]
                                             : int8 ? g_limits.dot_gops[threads]
                                                    : g_limits.fma_gflops[threads]);
  const auto t0 = std::chrono::steady_clock::now();
  for (auto _ : state) {
    k.gemm(x.data(), cols, m, y.data(), rows, threads);
    benchmark::DoNotOptimize(y.data());
  }
  const double secs = seconds_since(t0);
  const double ops = 2.0 * static_cast<double>(m) * static_cast<double>(rows) * static_cast<double>(cols);
  const double gops = ops * static_cast<double>(state.iterations()) / secs / 1e9;
  state.counters["GOPs"] = gops;
  state.counters["weight_bytes"] = static_cast<double>(k.bytes());
  state.counters["threads"] = threads;
  state.counters["bits"] = bits;
  state.counters["amx"] = amx ? 1 : 0;
  state.counters["group"] = static_cast<double>(group);
  state.counters["limit_GOPs"] = limit;
  state.counters["local_limit_GOPs"] = local_limit;
  state.counters["peak_frac"] = limit > 0 ? gops / limit : 0.0;
}

// The portable kernels (xsimd batches of the arch this file is compiled for: AVX-512 under
// -march=native here, SSE2 for a plain x86-64 build, NEON on AArch64) against the same tiles
// computed one value at a time (uniform_tiles_scalar), one thread, kernel only (the activations
// are prepared once, outside the loop). args: bits, rows, cols, m, mode (0 fp32, 1 int8),
// impl (0 scalar, 1 xsimd). The counter speedup (xsimd lines) is scalar time / xsimd time.
void BM_portable(benchmark::State& state) {
  const int bits = static_cast<int>(state.range(0));
  const Index rows = state.range(1), cols = state.range(2), m = state.range(3);
  const ActivationMode mode = state.range(4) ? ActivationMode::Int8 : ActivationMode::Fp32;
  const bool xsimd_path = state.range(5) != 0;
  const UniformKernelMatrix& k = matrix_set(bits, rows, cols, false).copies[0];
  const auto w = k.view();
  const auto x = random_vector(static_cast<std::size_t>(m * cols), 7);
  qtl::kernel::PreparedActivations acts;
  acts.allocate(w, m, mode);
  acts.prepare(w, x.data(), cols, 0, m);
  const auto a = acts.view();
  std::vector<float> y(static_cast<std::size_t>(m * rows));
  const auto fn = xsimd_path ? &qtl::kernel::uniform_tiles_portable : &qtl::kernel::uniform_tiles_scalar;
  // peak_frac: of the int8 dot or the fp32 FMA peak.
  bench_common::time_portable(
      state, {state.range(0), rows, cols, m, state.range(4)}, xsimd_path, static_cast<double>(k.bytes()), "",
      [&] {
        fn(w, a, y.data(), rows, 0, w.tiles);
        benchmark::DoNotOptimize(y.data());
      },
      2.0 * static_cast<double>(m * rows * cols),
      mode == ActivationMode::Int8 ? g_limits.dot_gops[1] : g_limits.fma_gflops[1]);
}

// Eigen fp32 GEMM on the same shape: Y = X W^T.
void BM_eigen_gemm(benchmark::State& state) {
  const Index rows = state.range(0), cols = state.range(1), m = state.range(2);
  const int threads = static_cast<int>(state.range(3));
  Eigen::setNbThreads(threads);
  const qtl::RowMatrixXf w = qtl::RowMatrixXf::Random(rows, cols);
  const qtl::RowMatrixXf x = qtl::RowMatrixXf::Random(m, cols);
  qtl::RowMatrixXf y(m, rows);
  const double local_limit = probes_ok() ? probe_fma_gflops(threads, 3'000'000) : 0.0;
  const double limit = std::max(local_limit, g_limits.fma_gflops[threads]);
  const auto t0 = std::chrono::steady_clock::now();
  for (auto _ : state) {
    y.noalias() = x * w.transpose();
    benchmark::DoNotOptimize(y.data());
  }
  const double secs = seconds_since(t0);
  const double ops = 2.0 * static_cast<double>(m) * static_cast<double>(rows) * static_cast<double>(cols);
  const double gops = ops * static_cast<double>(state.iterations()) / secs / 1e9;
  state.counters["GOPs"] = gops;
  state.counters["weight_bytes"] = 4.0 * static_cast<double>(rows) * static_cast<double>(cols);
  state.counters["threads"] = threads;
  state.counters["bits"] = 32;
  state.counters["limit_GOPs"] = limit;
  state.counters["peak_frac"] = limit > 0 ? gops / limit : 0.0;
}

void register_benchmarks() {
  bench_limits::register_limit_lines();
  // GEMV: [rows x cols] = [out x in]. Real LLM layers, then the llama2.c model's (stories260K).
  const std::vector<std::pair<Index, Index>> shapes = {
      {4096, 4096}, {14336, 4096}, {4096, 14336}, {64, 64}, {172, 64}, {64, 172}, {512, 64}};
  for (auto [rows, cols] : shapes) {
    for (int bits : {2, 3, 4, 5, 6, 8}) {
      for (int threads : {1, 2}) {
        for (int mode : {1, 0}) {
          if (mode == 0 && bits != 4 && bits != 2) continue;  // fp32 activations: 2 and 4 bits
          benchmark::RegisterBenchmark("gemv", BM_gemv)
              ->Args({bits, rows, cols, threads, mode})
              ->ArgNames({"bits", "rows", "cols", "threads", "int8"})
              ->UseRealTime()
              ->MinTime(0.2);
        }
      }
    }
  }
  // GEMM on the Llama FFN shape (W 4096 x 14336, as PERF.md's reference points); int8 lines
  // on the vector path, and where AMX runs on AMX tiles too (the speedup: the pair's ratio).
  // M = 32 (4-bit only) is UniformKernelMatrix::kAmxMinTokens, where the tile kernel starts to pay.
  const bool amx = qtl::kernel::amx_usable() && qtl::kernel::default_kernel_path() == qtl::kernel::KernelPath::Avx512Vnni;
  for (Index m : {8, 32, 64, 512}) {
    for (int bits : {2, 4, 8}) {
      if (m == 32 && bits != 4) continue;
      for (int tiles : {0, 1}) {
        if (tiles == 1 && (!amx || m < UniformKernelMatrix::kAmxMinTokens)) continue;
        benchmark::RegisterBenchmark("gemm", BM_gemm)
            ->Args({bits, 4096, 14336, m, 2, 1, tiles, 128})
            ->ArgNames({"bits", "rows", "cols", "m", "threads", "int8", "amx", "group"})
            ->UseRealTime()
            ->MinTime(0.2);
      }
    }
    if (m == 32) continue;
    // ggml's block size: one kernel block per group, the group's scale steps paid per block.
    if (m >= 64) {
      benchmark::RegisterBenchmark("gemm", BM_gemm)
          ->Args({4, 4096, 14336, m, 2, 1, 0, 32})
          ->ArgNames({"bits", "rows", "cols", "m", "threads", "int8", "amx", "group"})
          ->UseRealTime()
          ->MinTime(0.2);
    }
    benchmark::RegisterBenchmark("gemm", BM_gemm)
        ->Args({4, 4096, 14336, m, 2, 0, 0, 128})
        ->ArgNames({"bits", "rows", "cols", "m", "threads", "int8", "amx", "group"})
        ->UseRealTime()
        ->MinTime(0.2);
    benchmark::RegisterBenchmark("eigen_gemm", BM_eigen_gemm)
        ->Args({4096, 14336, m, 2})
        ->ArgNames({"rows", "cols", "m", "threads"})
        ->UseRealTime()
        ->MinTime(0.2);
  }
  // The portable path, xsimd against scalar (each scalar line right before its xsimd line).
  for (Index m : {1, 8}) {
    for (int bits : {2, 3, 4, 8}) {
      for (int mode : {1, 0}) {
        if (mode == 0 && bits != 4) continue;
        for (int impl : {0, 1}) {
          benchmark::RegisterBenchmark("portable", BM_portable)
              ->Args({bits, 4096, 4096, m, mode, impl})
              ->ArgNames({"bits", "rows", "cols", "m", "int8", "xsimd"})
              ->UseRealTime()
              ->MinTime(0.2);
        }
      }
    }
  }
  for (int tiles : {0, 1}) {
    if (tiles == 1 && !amx) continue;
    benchmark::RegisterBenchmark("gemm", BM_gemm)
        ->Args({4, 4096, 14336, 512, 1, 1, tiles, 128})
        ->ArgNames({"bits", "rows", "cols", "m", "threads", "int8", "amx", "group"})
        ->UseRealTime()
        ->MinTime(0.2);
  }
}

}  // namespace

int main(int argc, char** argv) { return bench_common::run_main(argc, argv, register_benchmarks); }
