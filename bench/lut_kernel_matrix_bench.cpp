// GEMV of the lookup-table kernels (qtl/kernel/lut/kernel_matrix.hpp) against the machine's read
// bandwidth and against the 2-bit integer-affine kernel (UniformKernelMatrix, Int8 mode) on the
// same shape, measured in the same process.
//
// main() measures the limits first (bench/bench_limits.hpp). Each gemv line cycles its weights
// over copies totalling more than 4 x L3, so every call streams from DRAM, and reports
//   GBps, bw_frac   bytes of the kernel layout / time, and that / read bandwidth (the larger of
//                   the start-up limit and one measured just before the line)
//   us, bpw         time per call; bytes per weight of the layout (scales included)
//   uniform2_us     the 2-bit UniformKernelMatrix (Int8, group 128) on the same shape and thread
//                   count, measured right after the LUT kernel in the same line
//   ratio_vs_uniform2   us / uniform2_us (target: <= 1.3 for ternary, the same 2 bits/weight)
//   prep_us         activation quantization + table construction alone (included in us)
// The portable lines compare the xsimd portable kernel (lut_tiles_portable, batches of the arch
// this file is compiled for: AVX-512 under -march=native, SSE2 on plain x86-64, NEON on AArch64)
// with the same tiles one byte at a time (lut_tiles_scalar): one thread, kernel only (the
// activations prepared once, outside the loop), one matrix (cache-resident where it fits, so
// bw_frac = GBps / the one-thread read bandwidth of start-up is a floor); speedup = scalar time /
// xsimd time, each scalar line right before its xsimd line.
//
// The gemm lines (2 threads, one matrix: the GEMM reuses each weight across tokens) time
// LutKernelMatrix::gemm with m tokens on the table lookups (AVX-512 path: activation tables) and
// on the CPU's best path (AVX-512 VNNI: the vpdpbusd GEMM of qtl/kernel/lut/avx512vnni.hpp for
// m >= 4), each in the same line, and report
//   GOPs, peak_frac     2 m rows cols / time of the best path, and that / the int8 dot-product
//                       peak (the larger of the start-up limit and one measured before the line)
//   tables_us, us, speedup_vs_tables   both times and their ratio
//
// Run: build/bench/lut_kernel_matrix_bench --benchmark_filter=gemv     (or =gemm, =portable)
#include <benchmark/benchmark.h>

#include <qtl/detail/fp16.hpp>
#include <qtl/format/packed_matrix.hpp>
#include <qtl/format/table_packed.hpp>
#include <qtl/kernel/lut.hpp>
#include <qtl/kernel/uniform.hpp>
#include <qtl/quant/binary.hpp>
#include <qtl/quant/quantize_matrix.hpp>
#include <qtl/quant/ternary.hpp>
#include <qtl/quant/uniform.hpp>

#include "bench_common.hpp"
#include "bench_limits.hpp"

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
using qtl::kernel::LutKernelMatrix;
using qtl::kernel::UniformKernelMatrix;
using bench_common::random_vector;
using bench_limits::g_limits;
using bench_limits::l3_bytes;
using bench_limits::seconds_since;

constexpr Index kGroup = 128;

float fp16_scale(std::mt19937& rng) {
  return qtl::detail::half_to_float(qtl::detail::float_to_half(0.01f + 0.001f * static_cast<float>(rng() % 16)));
}

// Random codes and fp16-exact params (speed does not depend on the values).
template <class Q>
qtl::TablePackedMatrix random_table(Index rows, Index cols, int levels, unsigned seed) {
  qtl::QuantizedMatrix<Q> q;
  q.layout = qtl::make_group_layout(qtl::PerGroup{kGroup}, rows, cols);
  std::mt19937 rng(seed);
  q.codes.resize(static_cast<std::size_t>(rows * cols));
  for (auto& c : q.codes) c = static_cast<std::uint8_t>(rng() % static_cast<unsigned>(levels));
  q.params.resize(static_cast<std::size_t>(q.layout.num_param_sets()));
  for (auto& p : q.params) p.scale = fp16_scale(rng);
  return qtl::pack_table(q);
}

using bench_common::copies_beyond_l3;

/// Seconds per call of f(i) cycling i over n copies, for at least `min_secs`.
template <class F>
double time_per_call(std::size_t n, double min_secs, F&& f) {
  for (std::size_t i = 0; i < n; ++i) f(i);  // warm-up: one pass over every copy
  std::size_t calls = 0, i = 0;
  const auto t0 = std::chrono::steady_clock::now();
  double secs = 0;
  do {
    for (int rep = 0; rep < 16; ++rep) {
      f(i);
      i = i + 1 == n ? 0 : i + 1;
      ++calls;
    }
    secs = seconds_since(t0);
  } while (secs < min_secs);
  return secs / static_cast<double>(calls);
}

/// Random binary codes with a mean shift (levels lo < 0 < hi per group, fp16).
qtl::TablePackedMatrix random_binary_shift(Index rows, Index cols, unsigned seed) {
  qtl::QuantizedMatrix<qtl::Binary<true>> q;
  q.layout = qtl::make_group_layout(qtl::PerGroup{kGroup}, rows, cols);
  std::mt19937 rng(seed);
  q.codes.resize(static_cast<std::size_t>(rows * cols));
  for (auto& c : q.codes) c = static_cast<std::uint8_t>(rng() & 1u);
  q.params.resize(static_cast<std::size_t>(q.layout.num_param_sets()));
  for (auto& p : q.params) p = {-fp16_scale(rng), fp16_scale(rng)};
  return qtl::pack_table(q);
}

/// Weights of a benchmark kind: 0 ternary, 1 binary, 2 binary with a mean shift.
qtl::TablePackedMatrix random_kind(int kind, Index rows, Index cols, unsigned seed) {
  if (kind == 2) return random_binary_shift(rows, cols, seed);
  return kind == 0 ? random_table<qtl::Ternary>(rows, cols, 3, seed) : random_table<qtl::Binary<false>>(rows, cols, 2, seed);
}

// args: kind (0 ternary, 1 binary, 2 binary with mean shift), rows, cols, threads
void BM_gemv(benchmark::State& state) {
  const int kind = static_cast<int>(state.range(0));
  const Index rows = state.range(1), cols = state.range(2);
  const int threads = static_cast<int>(state.range(3));
  const unsigned seed = 99u + static_cast<unsigned>(kind);
  std::vector<LutKernelMatrix> ks = copies_beyond_l3(LutKernelMatrix(random_kind(kind, rows, cols, seed)));
  const auto x = random_vector(static_cast<std::size_t>(cols), 5);
  std::vector<float> y(static_cast<std::size_t>(rows));
  const double local_limit = bench_limits::g_stream ? bench_limits::read_gbps(threads, 2) : 0.0;
  const double limit = std::max(local_limit, g_limits.read_gbps[threads]);
  std::size_t i = 0;
  for (std::size_t j = 0; j < ks.size(); ++j) ks[j].gemv(x.data(), y.data(), threads);  // warm-up
  const auto t0 = std::chrono::steady_clock::now();
  for (auto _ : state) {
    ks[i].gemv(x.data(), y.data(), threads);
    benchmark::DoNotOptimize(y.data());
    i = i + 1 == ks.size() ? 0 : i + 1;
  }
  const double secs = seconds_since(t0);
  const double per_call = secs / static_cast<double>(state.iterations());
  const double bytes = static_cast<double>(ks[0].bytes());
  // Activation preparation alone (quantization + tables), one thread per token as in gemv.
  qtl::kernel::PreparedLutActivations acts;
  const auto view = ks[0].view();
  acts.allocate(view, 1);
  const double prep = time_per_call(1, 0.05, [&](std::size_t) { acts.prepare(view, x.data(), cols, 0, 1); });
  ks.clear();
  ks.shrink_to_fit();
  // The 2-bit integer-affine kernel on the same shape, same threads, right after.
  double uniform_call = 0, uniform_bytes = 0;
  {
    const auto us = copies_beyond_l3(UniformKernelMatrix(bench_common::random_uniform_packed<2>(rows, cols, kGroup, seed)));
    uniform_bytes = static_cast<double>(us[0].bytes());
    uniform_call = time_per_call(us.size(), 0.3, [&](std::size_t j) {
      us[j].gemv(x.data(), y.data(), threads);
      benchmark::DoNotOptimize(y.data());
    });
  }
  const double gbps = bytes / per_call / 1e9;
  state.SetBytesProcessed(static_cast<std::int64_t>(bytes * static_cast<double>(state.iterations())));
  state.counters["GBps"] = gbps;
  state.counters["bw_frac"] = limit > 0 ? gbps / limit : 0.0;
  state.counters["us"] = 1e6 * per_call;
  state.counters["bpw"] = 8.0 * bytes / (static_cast<double>(rows) * static_cast<double>(cols));
  state.counters["prep_us"] = 1e6 * prep;
  state.counters["uniform2_us"] = 1e6 * uniform_call;
  state.counters["uniform2_bw_frac"] = limit > 0 ? uniform_bytes / uniform_call / 1e9 / limit : 0.0;
  state.counters["ratio_vs_uniform2"] = per_call / uniform_call;
  state.counters["limit_GBps"] = limit;
  state.counters["threads"] = threads;
}

// args: kind (as BM_gemv), rows, cols, m, threads
void BM_gemm(benchmark::State& state) {
  const int kind = static_cast<int>(state.range(0));
  const Index rows = state.range(1), cols = state.range(2), m = state.range(3);
  const int threads = static_cast<int>(state.range(4));
  const unsigned seed = 77u + static_cast<unsigned>(kind);
  LutKernelMatrix k(random_kind(kind, rows, cols, seed));
  const auto x = random_vector(static_cast<std::size_t>(m * cols), 8);
  std::vector<float> y(static_cast<std::size_t>(m * rows));
  const double local_limit = bench_limits::g_stream ? bench_limits::dot_gops(threads, 3'000'000) : 0.0;
  const double limit = std::max(local_limit, g_limits.dot_gops[threads]);
  double tables_call = 0;
  if (qtl::kernel::path_supported(qtl::kernel::KernelPath::Avx512)) {
    k.set_path(qtl::kernel::KernelPath::Avx512);
    tables_call = time_per_call(1, 0.3, [&](std::size_t) {
      k.gemm(x.data(), cols, m, y.data(), rows, threads);
      benchmark::DoNotOptimize(y.data());
    });
  }
  k.set_path(qtl::kernel::best_kernel_path());
  const auto t0 = std::chrono::steady_clock::now();
  for (auto _ : state) {
    k.gemm(x.data(), cols, m, y.data(), rows, threads);
    benchmark::DoNotOptimize(y.data());
  }
  const double per_call = seconds_since(t0) / static_cast<double>(state.iterations());
  const double gops = 2.0 * static_cast<double>(m) * static_cast<double>(rows) * static_cast<double>(cols) / per_call / 1e9;
  state.counters["GOPs"] = gops;
  state.counters["peak_frac"] = limit > 0 ? gops / limit : 0.0;
  state.counters["limit_GOPs"] = limit;
  state.counters["us"] = 1e6 * per_call;
  state.counters["tables_us"] = 1e6 * tables_call;
  state.counters["speedup_vs_tables"] = tables_call > 0 ? tables_call / per_call : 0.0;
  state.counters["threads"] = threads;
  state.SetLabel(std::string(qtl::kernel::to_string(qtl::kernel::best_kernel_path())));
}

// args: kind (as BM_gemv), rows, cols, m, impl (0 scalar, 1 xsimd)
void BM_portable(benchmark::State& state) {
  const int kind = static_cast<int>(state.range(0));
  const Index rows = state.range(1), cols = state.range(2), m = state.range(3);
  const bool xsimd_path = state.range(4) != 0;
  const unsigned seed = 99u + static_cast<unsigned>(kind);
  const qtl::TablePackedMatrix packed = random_kind(kind, rows, cols, seed);
  const LutKernelMatrix k(packed, qtl::kernel::KernelPath::Portable);
  const auto w = k.view();
  const auto x = random_vector(static_cast<std::size_t>(m * cols), 5);
  qtl::kernel::PreparedLutActivations acts;
  acts.allocate(w, m);
  acts.prepare(w, x.data(), cols, 0, m);
  const auto a = acts.view();
  std::vector<float> y(static_cast<std::size_t>(m * rows));
  const auto fn = xsimd_path ? &qtl::kernel::lut_tiles_portable : &qtl::kernel::lut_tiles_scalar;
  bench_common::time_portable(state, {kind, rows, cols, m}, xsimd_path, static_cast<double>(k.bytes()), "", [&] {
    fn(w, a, y.data(), rows, 0, w.tiles);
    benchmark::DoNotOptimize(y.data());
  });
}

void register_benchmarks() {
  bench_limits::register_limit_lines();
  for (auto [rows, cols] : std::vector<std::pair<Index, Index>>{{4096, 4096}, {4096, 14336}}) {
    for (int kind : {0, 1, 2}) {
      for (int threads : {1, 2}) {
        benchmark::RegisterBenchmark(kind == 0 ? "gemv/ternary" : kind == 1 ? "gemv/binary" : "gemv/binary_shift",
                                     BM_gemv)
            ->Args({kind, rows, cols, threads})
            ->ArgNames({"kind", "rows", "cols", "threads"})
            ->UseRealTime()
            ->MinTime(0.3);
      }
    }
  }
  for (Index m : {8, 64, 512}) {
    for (int kind : {0, 1}) {
      benchmark::RegisterBenchmark(kind == 0 ? "gemm/ternary" : "gemm/binary", BM_gemm)
          ->Args({kind, 4096, 14336, m, 2})
          ->ArgNames({"kind", "rows", "cols", "m", "threads"})
          ->UseRealTime()
          ->MinTime(0.2);
    }
  }
  for (Index m : {1, 8}) {
    for (int kind : {0, 1, 2}) {
      for (int impl : {0, 1}) {
        benchmark::RegisterBenchmark(kind == 0 ? "portable/ternary" : kind == 1 ? "portable/binary" : "portable/binary_shift",
                                     BM_portable)
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
