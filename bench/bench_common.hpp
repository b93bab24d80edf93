// bench/bench_common.hpp — what every kernel benchmark shares: random matrices of the uniform
// family (the yardstick the other families are compared with), copies of a matrix that exceed
// 4 x L3 (so a cycled GEMV streams from DRAM), random activations, and main().
#pragma once

#include <benchmark/benchmark.h>

#include <qtl/detail/fp16.hpp>
#include <qtl/format/packed_matrix.hpp>
#include <qtl/kernel/common/portable_simd.hpp>
#include <qtl/quant/quantize_matrix.hpp>
#include <qtl/quant/uniform.hpp>

#include <algorithm>
#include <chrono>
#include <map>
#include <string>
#include <cstddef>
#include <cstdint>
#include <random>
#include <vector>

#include "bench_limits.hpp"

namespace bench_common {

using qtl::Index;

/// A random uniform asymmetric matrix built directly as codes + fp16-exact params (speed does not
/// depend on the values, and quantizing tens of millions of weights would dominate the run).
template <int B>
qtl::PackedMatrix random_uniform_packed(Index rows, Index cols, Index group, unsigned seed) {
  using U = qtl::Uniform<B, qtl::Mode::Asymmetric>;
  qtl::QuantizedMatrix<U> q;
  q.layout = qtl::make_group_layout(qtl::PerGroup{group}, rows, cols);
  std::mt19937 rng(seed);
  q.codes.resize(static_cast<std::size_t>(rows * cols));
  for (auto& c : q.codes) c = static_cast<std::uint8_t>(rng() & ((1u << B) - 1));
  q.params.resize(static_cast<std::size_t>(q.layout.num_param_sets()));
  for (auto& p : q.params) {
    p.scale = qtl::detail::half_to_float(qtl::detail::float_to_half(0.01f + 0.001f * static_cast<float>(rng() % 16)));
    p.zero = static_cast<float>(rng() % (1u << B));
  }
  return qtl::pack(q);
}

/// The same for a run-time bit width (2, 3, 4, 5, 6 or 8).
inline qtl::PackedMatrix random_uniform_packed(int bits, Index rows, Index cols, Index group, unsigned seed) {
  switch (bits) {
    case 2: return random_uniform_packed<2>(rows, cols, group, seed);
    case 3: return random_uniform_packed<3>(rows, cols, group, seed);
    case 4: return random_uniform_packed<4>(rows, cols, group, seed);
    case 5: return random_uniform_packed<5>(rows, cols, group, seed);
    case 6: return random_uniform_packed<6>(rows, cols, group, seed);
    default: return random_uniform_packed<8>(rows, cols, group, seed);
  }
}

/// Copies of `one` totalling more than 4 x L3 (one copy when !cycle).
template <class K>
std::vector<K> copies_beyond_l3(const K& one, bool cycle = true) {
  const std::size_t n = cycle ? std::max<std::size_t>(1, 4 * bench_limits::l3_bytes() / one.bytes() + 1) : 1;
  return std::vector<K>(n, one);
}

/// n standard-normal activations.
inline std::vector<float> random_vector(std::size_t n, unsigned seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.0f, 1.0f);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

/// The portable lines of a kernel benchmark (the xsimd kernel against its plain C++ twin, in
/// the same run): times call() over the state's iterations and reports us, GBps and bw_frac for
/// `bytes` read per call, GOPs and peak_frac when `ops` and `op_limit` are given, and on the
/// xsimd line the speedup over the scalar line of the same `key` (registered before it).
/// Returns the time per call in microseconds.
template <class F>
double time_portable(benchmark::State& state, const std::vector<std::int64_t>& key, bool xsimd_path, double bytes,
                     const std::string& what, F&& call, double ops = 0.0, double op_limit = 0.0) {
  const auto t0 = std::chrono::steady_clock::now();
  for (auto _ : state) call();
  const double us = 1e6 * bench_limits::seconds_since(t0) / static_cast<double>(state.iterations());
  static std::map<std::vector<std::int64_t>, double> scalar_us;
  if (!xsimd_path) scalar_us[key] = us;
  const double gbps = bytes / us / 1e3;
  const auto& limits = bench_limits::g_limits;
  state.counters["us"] = us;
  state.counters["GBps"] = gbps;
  // Fractions of the one-thread limits measured at start-up (the weights are cache-resident in
  // these lines, so bw_frac is a floor).
  state.counters["bw_frac"] = limits.read_gbps[1] > 0 ? gbps / limits.read_gbps[1] : 0.0;
  if (ops > 0.0) {
    const double gops = ops / us / 1e3;
    state.counters["GOPs"] = gops;
    state.counters["peak_frac"] = op_limit > 0 ? gops / op_limit : 0.0;
  }
  state.counters["speedup"] = xsimd_path && scalar_us.count(key) ? scalar_us[key] / us : 1.0;
  state.SetLabel(std::string(xsimd_path ? "xsimd " : "scalar ") + what + qtl::kernel::PortableArch::name());
  return us;
}

/// main() of a kernel benchmark: measure the limits, register, run.
inline int run_main(int argc, char** argv, void (*register_benchmarks)()) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  bench_limits::measure();
  register_benchmarks();
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}

}  // namespace bench_common
