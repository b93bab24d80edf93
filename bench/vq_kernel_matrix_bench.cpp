// Benchmarks of the vector-codebook lookup kernels (qtl/kernel/vq/kernel_matrix.hpp) against
// limits measured in the same run and against the uniform kernels of the same bits per weight.
//
// GEMV on 4096 x 4096, one codebook per matrix (VPTQ / AQLM style):
//   D = 2, 8-bit indices  (4 bits/weight)   vs UniformKernelMatrix 4-bit, group 128
//   D = 4, 8-bit indices  (2 bits/weight)   vs UniformKernelMatrix 2-bit, group 128
//   E8P (dim 8 in the args; 2 bits/weight, decode only)   vs the same 2-bit uniform matrix
// Matrices are built directly from random indices and fp16 codebooks (speed does not depend on
// the values; k-means on 16M weights would dominate the run). Weights are cycled over copies
// totalling more than 4 x L3, so every call streams from DRAM, for the VQ and the uniform
// matrices alike. Each line reports
//   GBps, bw_frac   bytes of the VQ layout / time, and that over the read bandwidth
//   us              time per GEMV
//   uni_int8_us, uni_fp32_us, ratio_int8, ratio_fp32
//                   the uniform kernel's time at the same bits/weight (Int8 and Fp32 activation
//                   modes), timed in the same function right after the VQ loop, and VQ time over it
//                   (PERF.md target: ratio <= 1.3)
// Args: dim, threads, path (0 portable = scalar table reads, 1 avx2 = ymm gathers, 2 avx512 =
// fp32 vpermi2ps trees, 3 avx512vnni = byte-plane vpermi2b lookups where the CPU has VBMI),
// strategy (0 table, 1 decode = codebook gathers + FMA), int8 (E8P only: 1 = int8 activations,
// VQKernelMatrix's Int8 mode, its decoded bytes straight into vpdpbusd on the avx512vnni path).
//
// The portable lines compare the portable path's xsimd kernels (vq_kernel_functions(Portable):
// batches of the arch this file is compiled for, AVX-512 under -march=native, SSE2 on plain
// x86-64, NEON on AArch64) with the plain C++ ones (vq_scalar_functions), through
// VQKernelMatrix::gemm_using: one thread, one matrix (cache-resident, so bw_frac = GBps / the
// one-thread read bandwidth of start-up is a floor), the Table lines including their table
// building; speedup = scalar time / xsimd time, each scalar line right before its xsimd line.
// Args: dim (8 = E8P), decode, m, xsimd.
//
// Run:  build/bench/vq_kernel_matrix_bench --benchmark_filter='vq_gemv/dim:2/threads:1/path:2'
//       build/bench/vq_kernel_matrix_bench --benchmark_filter=portable
#include <benchmark/benchmark.h>

#include <qtl/format/packed_matrix.hpp>
#include <qtl/format/vq_packed.hpp>
#include <qtl/kernel/uniform.hpp>
#include <qtl/kernel/vq.hpp>
#include <qtl/quant/e8p.hpp>
#include <qtl/quant/uniform.hpp>

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
using qtl::kernel::KernelPath;
using qtl::kernel::UniformKernelMatrix;
using qtl::kernel::VQKernelMatrix;
using qtl::kernel::VQStrategy;
using bench_common::random_vector;
using bench_limits::g_limits;
using bench_limits::l3_bytes;
using bench_limits::seconds_since;

constexpr Index kRows = 4096, kCols = 4096;

template <int D>
qtl::VQPackedMatrix random_vq(unsigned seed) {
  using V = qtl::KMeansVQ<D, 8>;
  qtl::VQMatrix<V> m;
  m.layout = qtl::VQLayout{kRows, kCols, D, kRows};
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.0f, 0.02f);
  m.indices.resize(static_cast<std::size_t>(kRows * m.layout.vectors_per_row()));
  for (auto& i : m.indices) i = rng() & 255u;
  m.params.resize(1);
  m.params[0].codebook.resize(V::kParamWords);
  for (auto& c : m.params[0].codebook) c = qtl::detail::round_to_half(nd(rng));
  return qtl::pack_vq(m);
}

// E8P (QuIP#'s lattice codebook, 2 bits/weight): random 16-bit indices, one scale.
qtl::VQPackedMatrix random_e8p(unsigned seed) {
  qtl::VQMatrix<qtl::E8P> m;
  m.layout = qtl::VQLayout{kRows, kCols, 8, kRows};
  std::mt19937 rng(seed);
  m.indices.resize(static_cast<std::size_t>(kRows * m.layout.vectors_per_row()));
  for (auto& i : m.indices) i = rng() & 0xFFFFu;
  m.params.resize(1);
  m.params[0].scale = qtl::detail::round_to_half(0.02f);
  return qtl::pack_vq(m);
}


// Copies of the VQ matrix and of the uniform matrix of the same bits/weight, for one dim.
struct Sets {
  int dim = 0;
  std::vector<VQKernelMatrix> vq;
  std::vector<UniformKernelMatrix> uni;
};
Sets& sets(int dim) {
  static std::unique_ptr<Sets> s;
  if (!s || s->dim != dim) {
    s.reset();
    s = std::make_unique<Sets>();
    s->dim = dim;
    s->vq = bench_common::copies_beyond_l3(VQKernelMatrix(dim == 2 ? random_vq<2>(11) : dim == 4 ? random_vq<4>(12) : random_e8p(15)));
    s->uni = bench_common::copies_beyond_l3(UniformKernelMatrix(dim == 2 ? bench_common::random_uniform_packed<4>(kRows, kCols, 128, 13) : bench_common::random_uniform_packed<2>(kRows, kCols, 128, 14)));
  }
  return *s;
}

// Seconds per GEMV of the cycled uniform copies in `mode` (at least `min_secs` of calls).
double uniform_seconds(std::vector<UniformKernelMatrix>& uni, ActivationMode mode, const float* x, float* y,
                       int threads, double min_secs) {
  for (auto& k : uni) k.set_mode(mode);
  for (std::size_t i = 0; i < uni.size(); ++i) uni[i].gemv(x, y, threads);  // warm-up pass
  std::size_t calls = 0, i = 0;
  const auto t0 = std::chrono::steady_clock::now();
  double secs = 0;
  do {
    uni[i].gemv(x, y, threads);
    benchmark::DoNotOptimize(y);
    i = i + 1 == uni.size() ? 0 : i + 1;
    ++calls;
    if (calls % 16 == 0) secs = seconds_since(t0);
  } while (calls % 16 != 0 || secs < min_secs);
  return secs / static_cast<double>(calls);
}

void BM_vq_gemv(benchmark::State& state) {
  const int dim = static_cast<int>(state.range(0));
  const int threads = static_cast<int>(state.range(1));
  const auto path = static_cast<KernelPath>(state.range(2));  // the enum value
  const VQStrategy strategy = state.range(3) == 0 ? VQStrategy::Table : VQStrategy::Decode;
  const ActivationMode mode = state.range(4) != 0 ? ActivationMode::Int8 : ActivationMode::Fp32;
  if (!qtl::kernel::path_supported(path)) {
    state.SkipWithError("path not supported on this CPU");
    return;
  }
  Sets& s = sets(dim);
  for (auto& k : s.vq) {
    k.set_path(path);
    k.set_strategy(strategy);
    k.set_mode(mode);
  }
  const auto x = random_vector(static_cast<std::size_t>(kCols), 5);
  std::vector<float> y(static_cast<std::size_t>(kRows));
  const double local_limit = bench_limits::g_stream ? bench_limits::read_gbps(threads, 2) : 0.0;
  const double limit = std::max(local_limit, g_limits.read_gbps[threads]);
  for (const auto& k : s.vq) k.gemv(x.data(), y.data(), threads);  // warm-up pass
  std::size_t i = 0;
  const auto t0 = std::chrono::steady_clock::now();
  for (auto _ : state) {
    s.vq[i].gemv(x.data(), y.data(), threads);
    benchmark::DoNotOptimize(y.data());
    i = i + 1 == s.vq.size() ? 0 : i + 1;
  }
  const double secs = seconds_since(t0) / static_cast<double>(state.iterations());
  const double min_secs = 0.15;
  const double uni_int8 = uniform_seconds(s.uni, ActivationMode::Int8, x.data(), y.data(), threads, min_secs);
  const double uni_fp32 = uniform_seconds(s.uni, ActivationMode::Fp32, x.data(), y.data(), threads, min_secs);
  const double bytes = static_cast<double>(s.vq[0].bytes());
  const double gbps = bytes / secs / 1e9;
  state.SetBytesProcessed(static_cast<std::int64_t>(bytes * static_cast<double>(state.iterations())));
  state.counters["us"] = 1e6 * secs;
  state.counters["GBps"] = gbps;
  state.counters["bw_frac"] = limit > 0 ? gbps / limit : 0.0;
  state.counters["limit_GBps"] = limit;
  state.counters["local_limit_GBps"] = local_limit;
  state.counters["bpw"] = 8.0 * bytes / (static_cast<double>(kRows) * static_cast<double>(kCols));
  state.counters["uni_bpw"] = 8.0 * static_cast<double>(s.uni[0].bytes()) / (static_cast<double>(kRows) * static_cast<double>(kCols));
  state.counters["uni_int8_us"] = 1e6 * uni_int8;
  state.counters["uni_fp32_us"] = 1e6 * uni_fp32;
  state.counters["ratio_int8"] = secs / uni_int8;
  state.counters["ratio_fp32"] = secs / uni_fp32;
  state.counters["threads"] = threads;
  state.counters["dim"] = dim;
  state.counters["int8"] = mode == ActivationMode::Int8 ? 1 : 0;
}

void BM_portable(benchmark::State& state) {
  const int dim = static_cast<int>(state.range(0));
  const VQStrategy strategy = state.range(1) == 0 ? VQStrategy::Table : VQStrategy::Decode;
  const Index m = state.range(2);
  const bool xsimd_path = state.range(3) != 0;
  VQKernelMatrix k(dim == 2 ? random_vq<2>(11) : dim == 4 ? random_vq<4>(12) : random_e8p(15), KernelPath::Portable);
  k.set_strategy(strategy);
  const auto fn = xsimd_path ? qtl::kernel::vq_kernel_functions(KernelPath::Portable) : qtl::kernel::vq_scalar_functions();
  const auto x = random_vector(static_cast<std::size_t>(m * kCols), 5);
  std::vector<float> y(static_cast<std::size_t>(m * kRows));
  k.gemm_using(fn, x.data(), kCols, m, y.data(), kRows, 1);  // warm-up
  bench_common::time_portable(state, {dim, state.range(1), m}, xsimd_path, static_cast<double>(k.bytes()), "", [&] {
    k.gemm_using(fn, x.data(), kCols, m, y.data(), kRows, 1);
    benchmark::DoNotOptimize(y.data());
  });
}

void register_benchmarks() {
  bench_limits::register_limit_lines();
  // E8P (dim 8), fp32 and int8 activations: on avx512vnni (the byte-plane decoder on VBMI CPUs)
  // and on avx2 (the codeword table), one thread there for comparison
  for (int threads : {1, 2}) {
    for (int path : {3, 1}) {
      if (path == 1 && threads == 2) continue;
      for (int int8 : {0, 1}) {
        benchmark::RegisterBenchmark("vq_gemv", BM_vq_gemv)
            ->Args({8, threads, path, 1, int8})
            ->ArgNames({"dim", "threads", "path", "decode", "int8"})
            ->UseRealTime()
            ->MinTime(0.3);
      }
    }
  }
  for (int dim : {2, 4}) {
    for (int threads : {1, 2}) {
      for (int path : {3, 2, 1, 0}) {
        for (int strategy : {0, 1}) {
          if ((path == 0 || path == 1) && threads == 2) continue;  // for comparison only
          if (strategy == 1 && path != 3 && path != 1) continue;
          benchmark::RegisterBenchmark("vq_gemv", BM_vq_gemv)
              ->Args({dim, threads, path, strategy, 0})
              ->ArgNames({"dim", "threads", "path", "decode", "int8"})
              ->UseRealTime()
              ->MinTime(0.3);
        }
      }
    }
  }
  // The portable path, xsimd against scalar (E8P decodes only).
  for (Index m : {1, 4}) {
    for (int dim : {2, 4, 8}) {
      for (int strategy : {0, 1}) {
        if (dim == 8 && strategy == 0) continue;
        for (int impl : {0, 1}) {
          benchmark::RegisterBenchmark("portable", BM_portable)
              ->Args({dim, strategy, m, impl})
              ->ArgNames({"dim", "decode", "m", "xsimd"})
              ->UseRealTime()
              ->MinTime(0.2);
        }
      }
    }
  }
}

}  // namespace

int main(int argc, char** argv) { return bench_common::run_main(argc, argv, register_benchmarks); }
