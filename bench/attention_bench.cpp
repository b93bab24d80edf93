// One generated token's attention over a half-precision KV cache (qtl/kernel/common/fp16_rows.hpp,
// what Transformer runs for KvType::F16 at T = 1) against the machine's read bandwidth and
// against the fp32 cache's Eigen products on the same shape, measured in the same process.
//
// Shape: a layer of the synthetic LLaMA-shaped model of model_tokens_bench (32 heads of 64,
// no grouped-query sharing), head-major cache rows as Transformer stores them, `context` cached
// positions. Per call and head: scores = K_h q (fp16_rows_dot), a softmax, out = sum_s p_s V_h(s, :)
// (fp16_rows_weighted_sum); heads split over `threads` threads as Transformer splits them. The
// line cycles over copies of the layer's cache totalling more than 4 x L3, so every call streams
// its keys and values from DRAM, and reports
//   GBps, bw_frac     fp16 key + value bytes / time, and that / read bandwidth (the larger of the
//                     start-up limit and one measured just before the line, same thread count)
//   us                time per call (one layer's attention for one token)
//   f32_us, f32_bw_frac   the same attention over an fp32 cache with Eigen's matrix-vector
//                     products (Transformer's KvType::F32 path), measured right after in the line
//   speedup_vs_f32    f32_us / us (at most ~2 when both stream at the bandwidth: half the bytes)
// path:1 lines run the portable path (QTL_KERNEL_PATH=portable: xsimd over the batches of the
// arch this file is compiled for, AVX-512 under -march=native, SSE2 without F16C on plain x86-64,
// NEON on AArch64) and path:2 lines its plain C++ twin, one thread each, right before it:
//   speedup_vs_scalar   the twin's time / the xsimd time (on the xsimd line)
//
// Run: build/bench/attention_bench --benchmark_filter=decode
#include <benchmark/benchmark.h>

#include <qtl/detail/fp16.hpp>
#include <qtl/kernel/common/cpu_features.hpp>
#include <qtl/kernel/common/fp16_rows.hpp>
#include <qtl/kernel/common/portable_simd.hpp>
#include <qtl/kernel/common/threading.hpp>

#include <Eigen/Core>

#include "bench_common.hpp"
#include "bench_limits.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace {

using bench_limits::g_limits;
using bench_limits::seconds_since;
using RowMatrixXf = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

constexpr std::ptrdiff_t kHeads = 32, kHeadSize = 64;

/// Numerically safe softmax in place over p[0..n).
void softmax(float* p, std::ptrdiff_t n) {
  const float mx = *std::max_element(p, p + n);
  float sum = 0;
  for (std::ptrdiff_t i = 0; i < n; ++i) sum += p[i] = std::exp(p[i] - mx);
  const float inv = 1.0f / sum;
  for (std::ptrdiff_t i = 0; i < n; ++i) p[i] *= inv;
}

/// How many copies of `bytes` exceed 4 x L3.
std::size_t copies_for(std::size_t bytes) { return std::max<std::size_t>(1, 4 * bench_limits::l3_bytes() / bytes + 1); }

/// Seconds per call of f(copy) cycled over `n` copies for at least `min_secs` (after one warm-up pass).
template <class F>
double time_cycled(std::size_t n, double min_secs, F&& f) {
  for (std::size_t j = 0; j < n; ++j) f(j);
  std::size_t calls = 0;
  const auto t0 = std::chrono::steady_clock::now();
  double secs = 0;
  do {
    f(calls % n);
    ++calls;
    secs = seconds_since(t0);
  } while (secs < min_secs || calls < n);
  return secs / static_cast<double>(calls);
}

// args: context, threads, path (0 the CPU's best, 1 portable, 2 the portable path's scalar twin)
void BM_decode(benchmark::State& state) {
  const std::ptrdiff_t S = state.range(0);
  const int threads = static_cast<int>(state.range(1));
  const int which = static_cast<int>(state.range(2));
  const auto path = which == 0 ? qtl::kernel::best_kernel_path() : qtl::kernel::KernelPath::Portable;
  const std::ptrdiff_t head_values = S * kHeadSize, layer_values = kHeads * head_values;
  const std::size_t copies = copies_for(static_cast<std::size_t>(layer_values) * 2 * sizeof(std::uint16_t));
  // Keys and values of every copy: random N(0, 1) values rounded to fp16 once.
  const auto src = bench_common::random_vector(static_cast<std::size_t>(2 * layer_values), 11);
  std::vector<std::uint16_t> one(src.size());
  qtl::kernel::float_rows_to_fp16(qtl::kernel::KernelPath::Portable, src.data(), 1, one.data(), 1,
                                  static_cast<std::ptrdiff_t>(src.size()), 1);
  std::vector<std::vector<std::uint16_t>> kv(copies, one);
  const auto q = bench_common::random_vector(static_cast<std::size_t>(kHeads * kHeadSize), 12);
  std::vector<float> scores(static_cast<std::size_t>(kHeads * S)), out(static_cast<std::size_t>(kHeads * kHeadSize));
  auto attend16 = [&](std::size_t c) {
    const std::uint16_t* keys = kv[c].data();
    const std::uint16_t* values = keys + layer_values;
    qtl::kernel::parallel_for(kHeads, threads, [&](std::ptrdiff_t h0, std::ptrdiff_t h1) {
      for (std::ptrdiff_t h = h0; h < h1; ++h) {
        float* sc = scores.data() + h * S;
        if (which == 2) {
          qtl::kernel::fp16_rows_dot_scalar(q.data() + h * kHeadSize, keys + h * head_values, kHeadSize, S, kHeadSize,
                                            sc);
        } else {
          qtl::kernel::fp16_rows_dot(path, q.data() + h * kHeadSize, keys + h * head_values, kHeadSize, S, kHeadSize,
                                     sc);
        }
        softmax(sc, S);
        if (which == 2) {
          qtl::kernel::fp16_rows_weighted_sum_scalar(sc, values + h * head_values, kHeadSize, S, kHeadSize,
                                                     out.data() + h * kHeadSize);
        } else {
          qtl::kernel::fp16_rows_weighted_sum(path, sc, values + h * head_values, kHeadSize, S, kHeadSize,
                                              out.data() + h * kHeadSize);
        }
      }
    });
    benchmark::DoNotOptimize(out.data());
  };
  const double local_limit = bench_limits::g_stream ? bench_limits::read_gbps(threads, 2) : 0.0;
  const double limit = std::max(local_limit, g_limits.read_gbps[threads]);
  for (std::size_t j = 0; j < copies; ++j) attend16(j);  // warm-up
  std::size_t i = 0;
  const auto t0 = std::chrono::steady_clock::now();
  for (auto _ : state) {
    attend16(i);
    i = i + 1 == copies ? 0 : i + 1;
  }
  const double per_call = seconds_since(t0) / static_cast<double>(state.iterations());
  const double bytes16 = 2.0 * static_cast<double>(layer_values) * sizeof(std::uint16_t);
  kv.clear();
  kv.shrink_to_fit();

  // The fp32 cache: the same values widened, Eigen's products per head (Transformer's F32 path).
  double f32_call = 0;
  const double bytes32 = 2.0 * bytes16;
  {
    RowMatrixXf one32(2 * kHeads * S, kHeadSize);
    qtl::kernel::fp16_rows_to_float(qtl::kernel::KernelPath::Portable, one.data(), 1, one32.data(), 1,
                                    static_cast<std::ptrdiff_t>(one.size()), 1);
    const std::vector<RowMatrixXf> kv32(copies_for(static_cast<std::size_t>(bytes32)), one32);
    f32_call = time_cycled(kv32.size(), 0.3, [&](std::size_t c) {
      qtl::kernel::parallel_for(kHeads, threads, [&](std::ptrdiff_t h0, std::ptrdiff_t h1) {
        for (std::ptrdiff_t h = h0; h < h1; ++h) {
          Eigen::Map<Eigen::VectorXf> sc(scores.data() + h * S, S);
          const auto kh = kv32[c].middleRows(h * S, S);
          const auto vh = kv32[c].middleRows((kHeads + h) * S, S);
          sc.noalias() = kh * Eigen::Map<const Eigen::VectorXf>(q.data() + h * kHeadSize, kHeadSize);
          softmax(sc.data(), S);
          Eigen::Map<Eigen::VectorXf>(out.data() + h * kHeadSize, kHeadSize).noalias() = vh.transpose() * sc;
        }
      });
      benchmark::DoNotOptimize(out.data());
    });
  }
  const double gbps = bytes16 / per_call / 1e9;
  state.SetBytesProcessed(static_cast<std::int64_t>(bytes16 * static_cast<double>(state.iterations())));
  state.counters["GBps"] = gbps;
  state.counters["bw_frac"] = limit > 0 ? gbps / limit : 0.0;
  state.counters["us"] = 1e6 * per_call;
  state.counters["f32_us"] = 1e6 * f32_call;
  state.counters["f32_bw_frac"] = limit > 0 ? bytes32 / f32_call / 1e9 / limit : 0.0;
  state.counters["speedup_vs_f32"] = f32_call / per_call;
  state.counters["limit_GBps"] = limit;
  state.counters["threads"] = threads;
  static std::map<std::ptrdiff_t, double> scalar_call;  // by context, from the path:2 line
  if (which == 2) scalar_call[S] = per_call;
  if (which == 1 && scalar_call.count(S) != 0) state.counters["speedup_vs_scalar"] = scalar_call[S] / per_call;
  state.SetLabel(which == 2 ? std::string("scalar twin")
                            : std::string(qtl::kernel::to_string(path)) +
                                  (which == 1 ? std::string(" xsimd ") + qtl::kernel::PortableArch::name() : ""));
}

void register_benchmarks() {
  Eigen::setNbThreads(1);  // the heads are split by parallel_for, as in Transformer
  bench_limits::register_limit_lines();
  for (std::int64_t context : {1024, 4096}) {
    for (std::int64_t threads : {1, 2}) {
      benchmark::RegisterBenchmark("decode/f16", BM_decode)
          ->Args({context, threads, 0})
          ->ArgNames({"context", "threads", "path"})
          ->Unit(benchmark::kMicrosecond)
          ->UseRealTime()
          ->MinTime(0.5);
    }
    for (std::int64_t which : {2, 1}) {
      benchmark::RegisterBenchmark("decode/f16/portable", BM_decode)
          ->Args({context, 1, which})
          ->ArgNames({"context", "threads", "path"})
          ->Unit(benchmark::kMicrosecond)
          ->UseRealTime()
          ->MinTime(0.5);
    }
  }
}

}  // namespace

int main(int argc, char** argv) { return bench_common::run_main(argc, argv, register_benchmarks); }
