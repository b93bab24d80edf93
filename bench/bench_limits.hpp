// bench/bench_limits.hpp — the machine limits every qtl benchmark line is a fraction of,
// measured in the same process (PERF.md: absolute times drift on shared machines; ratios do not).
//
//   read bandwidth  summing a buffer of max(4 x L3, 256 MiB), 1 and 2 threads (512-bit loads on
//                   AVX-512 CPUs, 256-bit on AVX2, plain 64-bit adds otherwise)
//   fp32 FMA peak   12 independent FMA chains per thread (zmm, or ymm on AVX2-only CPUs)
//   int8 dot peak   12 independent vpdpbusd chains per thread (zmm; one vpdpbusd = 128 ops);
//                   on CPUs without AVX-512 VNNI, vpmaddubsw + vpmaddwd chains on ymm (64 ops)
// A CPU without AVX2 reports only the bandwidth (compute limits 0: the fraction columns are 0).
//
//   bench_limits::measure();                     // once, in main(), before the benchmarks run
//   bench_limits::register_limit_lines();        // the limit/1, limit/2 lines of the JSON
//   double gbps = bench_limits::read_gbps(threads, 2);   // a fresh local measurement
#pragma once

#include <benchmark/benchmark.h>

#include <qtl/detail/aligned_buffer.hpp>
#include <qtl/kernel/common/amx_tiles.hpp>
#include <qtl/kernel/common/cpu_features.hpp>
#include <qtl/kernel/common/threading.hpp>

#include <immintrin.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>

namespace bench_limits {

struct Limits {
  double read_gbps[3] = {0, 0, 0};  // by thread count (index 1, 2)
  double fma_gflops[3] = {0, 0, 0};
  double dot_gops[3] = {0, 0, 0};
  double amx_gops[3] = {0, 0, 0};  // AMX int8 tile products (0 where AMX cannot run)
};
inline Limits g_limits;
inline volatile std::int64_t g_sink;
inline qtl::detail::AlignedBuffer* g_stream = nullptr;  // the bandwidth probe's buffer (> 4 x L3)

inline std::size_t l3_bytes() {
  const long v = sysconf(_SC_LEVEL3_CACHE_SIZE);
  return v > 0 ? static_cast<std::size_t>(v) : std::size_t{32} << 20;
}
inline std::size_t stream_bytes() { return std::max<std::size_t>(4 * l3_bytes(), std::size_t{256} << 20); }

inline double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

inline bool has_avx512() {
  const auto& f = qtl::kernel::cpu_features();
  return f.avx512f && f.avx512bw;
}
inline bool has_avx2() {
  const auto& f = qtl::kernel::cpu_features();
  return f.avx2 && f.fma;
}

__attribute__((target("avx512f"))) inline std::int64_t sum_bytes_avx512(const std::uint8_t* p, std::size_t n) {
  __m512i a0 = _mm512_setzero_si512(), a1 = a0, a2 = a0, a3 = a0;
  for (std::size_t i = 0; i + 256 <= n; i += 256) {
    a0 = _mm512_add_epi64(a0, _mm512_load_si512(p + i));
    a1 = _mm512_add_epi64(a1, _mm512_load_si512(p + i + 64));
    a2 = _mm512_add_epi64(a2, _mm512_load_si512(p + i + 128));
    a3 = _mm512_add_epi64(a3, _mm512_load_si512(p + i + 192));
  }
  alignas(64) std::int64_t lanes[8];
  _mm512_store_si512(lanes, _mm512_add_epi64(_mm512_add_epi64(a0, a1), _mm512_add_epi64(a2, a3)));
  std::int64_t s = 0;
  for (std::int64_t v : lanes) s += v;
  return s;
}

__attribute__((target("avx2"))) inline std::int64_t sum_bytes_avx2(const std::uint8_t* p, std::size_t n) {
  __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0;
  for (std::size_t i = 0; i + 128 <= n; i += 128) {
    a0 = _mm256_add_epi64(a0, _mm256_load_si256(reinterpret_cast<const __m256i*>(p + i)));
    a1 = _mm256_add_epi64(a1, _mm256_load_si256(reinterpret_cast<const __m256i*>(p + i + 32)));
    a2 = _mm256_add_epi64(a2, _mm256_load_si256(reinterpret_cast<const __m256i*>(p + i + 64)));
    a3 = _mm256_add_epi64(a3, _mm256_load_si256(reinterpret_cast<const __m256i*>(p + i + 96)));
  }
  alignas(32) std::int64_t lanes[4];
  _mm256_store_si256(reinterpret_cast<__m256i*>(lanes), _mm256_add_epi64(_mm256_add_epi64(a0, a1), _mm256_add_epi64(a2, a3)));
  return lanes[0] + lanes[1] + lanes[2] + lanes[3];
}

inline std::int64_t sum_bytes_portable(const std::uint8_t* p, std::size_t n) {
  std::uint64_t a0 = 0, a1 = 0, a2 = 0, a3 = 0;
  const auto* q = reinterpret_cast<const std::uint64_t*>(p);
  for (std::size_t i = 0; i + 4 <= n / 8; i += 4) {
    a0 += q[i];
    a1 += q[i + 1];
    a2 += q[i + 2];
    a3 += q[i + 3];
  }
  return static_cast<std::int64_t>(a0 + a1 + a2 + a3);
}

inline std::int64_t sum_bytes(const std::uint8_t* p, std::size_t n) {
  if (has_avx512()) return sum_bytes_avx512(p, n);
  if (has_avx2()) return sum_bytes_avx2(p, n);
  return sum_bytes_portable(p, n);
}

__attribute__((target("avx512f,fma"))) inline float fma_chains_avx512(long iters) {
  __m512 a[12];
  for (int i = 0; i < 12; ++i) a[i] = _mm512_set1_ps(1.0f + 0.001f * static_cast<float>(i));
  const __m512 m = _mm512_set1_ps(0.9999f), c = _mm512_set1_ps(0.0001f);
  for (long k = 0; k < iters; ++k) {
#pragma GCC unroll 12
    for (int i = 0; i < 12; ++i) a[i] = _mm512_fmadd_ps(a[i], m, c);
  }
  __m512 s = a[0];
  for (int i = 1; i < 12; ++i) s = _mm512_add_ps(s, a[i]);
  alignas(64) float lanes[16];
  _mm512_store_ps(lanes, s);
  return lanes[0] + lanes[15];
}

__attribute__((target("avx2,fma"))) inline float fma_chains_avx2(long iters) {
  __m256 a[12];
  for (int i = 0; i < 12; ++i) a[i] = _mm256_set1_ps(1.0f + 0.001f * static_cast<float>(i));
  const __m256 m = _mm256_set1_ps(0.9999f), c = _mm256_set1_ps(0.0001f);
  for (long k = 0; k < iters; ++k) {
#pragma GCC unroll 12
    for (int i = 0; i < 12; ++i) a[i] = _mm256_fmadd_ps(a[i], m, c);
  }
  __m256 s = a[0];
  for (int i = 1; i < 12; ++i) s = _mm256_add_ps(s, a[i]);
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, s);
  return lanes[0] + lanes[7];
}

__attribute__((target("avx512f,avx512bw,avx512vnni"))) inline int dot_chains_vnni(long iters) {
  __m512i a[12];
  for (int i = 0; i < 12; ++i) a[i] = _mm512_set1_epi32(i);
  const __m512i u = _mm512_set1_epi8(3), s = _mm512_set1_epi8(-2);
  for (long k = 0; k < iters; ++k) {
#pragma GCC unroll 12
    for (int i = 0; i < 12; ++i) a[i] = _mm512_dpbusd_epi32(a[i], u, s);
  }
  __m512i t = a[0];
  for (int i = 1; i < 12; ++i) t = _mm512_add_epi32(t, a[i]);
  alignas(64) int lanes[16];
  _mm512_store_si512(lanes, t);
  return lanes[0] + lanes[15];
}

// AVX2: one vpmaddubsw + vpmaddwd + vpaddd per 32 byte products (64 ops), as the AVX2 kernels do.
__attribute__((target("avx2"))) inline int dot_chains_avx2(long iters) {
  __m256i a[12];
  for (int i = 0; i < 12; ++i) a[i] = _mm256_set1_epi32(i);
  const __m256i u = _mm256_set1_epi8(3), s = _mm256_set1_epi8(-2), ones = _mm256_set1_epi16(1);
  for (long k = 0; k < iters; ++k) {
#pragma GCC unroll 12
    for (int i = 0; i < 12; ++i) {
      a[i] = _mm256_add_epi32(a[i], _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), ones));
    }
  }
  __m256i t = a[0];
  for (int i = 1; i < 12; ++i) t = _mm256_add_epi32(t, a[i]);
  alignas(32) int lanes[8];
  _mm256_store_si256(reinterpret_cast<__m256i*>(lanes), t);
  return lanes[0] + lanes[7];
}

// AMX: TDPBSSD on four independent C tiles from one 16 x 64 A and one 16 x 64 B tile, each
// instruction 16 x 16 x 64 multiply-adds (the most one instruction does; the uniform kernel's
// blocks of 32 columns use half of each).
struct alignas(64) AmxProbeConfig {
  std::uint8_t palette = 1, start_row = 0, reserved[14] = {};
  std::uint16_t colsb[16] = {64, 64, 64, 64, 64, 64};
  std::uint8_t rows[16] = {16, 16, 16, 16, 16, 16};
};
inline void amx_chains(long iters) {
  alignas(64) static const std::int8_t zeros[16 * 64] = {};
  const AmxProbeConfig cfg;
  const qtl::kernel::AmxTileConfigScope scope(&cfg);  // not tilerelease: ggml may keep tiles on this thread
  __asm__ volatile("tileloadd (%0,%1,1), %%tmm4\n\ttileloadd (%0,%1,1), %%tmm5\n\ttilezero %%tmm0\n\t"
                   "tilezero %%tmm1\n\ttilezero %%tmm2\n\ttilezero %%tmm3" ::"r"(zeros), "r"(64L) : "memory");
  for (long k = 0; k < iters; ++k) {
    __asm__ volatile("tdpbssd %%tmm5, %%tmm4, %%tmm0\n\ttdpbssd %%tmm5, %%tmm4, %%tmm1\n\t"
                     "tdpbssd %%tmm5, %%tmm4, %%tmm2\n\ttdpbssd %%tmm5, %%tmm4, %%tmm3" ::);
  }
}

/// AMX int8 ops/s (GOP/s) with `threads` threads; 0 where AMX cannot run.
inline double amx_gops(int threads, long iters) {
  if (!qtl::kernel::amx_usable()) return 0.0;
  const auto t0 = std::chrono::steady_clock::now();
  qtl::kernel::parallel_for(threads, threads, [&](std::ptrdiff_t, std::ptrdiff_t) { amx_chains(iters); });
  return threads * 4.0 * (2.0 * 16 * 16 * 64) * static_cast<double>(iters) / seconds_since(t0) / 1e9;
}

/// Best-of-`passes` read bandwidth (GB/s) over the probe buffer with `threads` threads.
inline double read_gbps(int threads, int passes) {
  if (g_stream == nullptr) return 0.0;
  const std::size_t n = g_stream->size();
  double best = 0;
  for (int rep = 0; rep < passes; ++rep) {
    const auto t0 = std::chrono::steady_clock::now();
    std::int64_t total = 0;
    qtl::kernel::parallel_for(threads, threads, [&](std::ptrdiff_t i0, std::ptrdiff_t) {
      const std::size_t chunk = n / static_cast<std::size_t>(threads) / 256 * 256;
      const std::int64_t s = sum_bytes(g_stream->data() + static_cast<std::size_t>(i0) * chunk, chunk);
#pragma omp atomic
      total += s;
    });
    g_sink = total;
    best = std::max(best, static_cast<double>(n) / seconds_since(t0) / 1e9);
  }
  return best;
}

/// int8 dot-product ops/s (GOP/s) with `threads` threads; 0 without AVX2.
inline double dot_gops(int threads, long iters) {
  const auto& f = qtl::kernel::cpu_features();
  const bool vnni = has_avx512() && f.avx512vnni;
  if (!vnni && !has_avx2()) return 0.0;
  const auto t0 = std::chrono::steady_clock::now();
  qtl::kernel::parallel_for(threads, threads, [&](std::ptrdiff_t, std::ptrdiff_t) {
    g_sink = vnni ? dot_chains_vnni(iters) : dot_chains_avx2(iters);
  });
  return threads * 12.0 * (vnni ? 128.0 : 64.0) * static_cast<double>(iters) / seconds_since(t0) / 1e9;
}

/// fp32 FMA flops/s (GFLOP/s) with `threads` threads; 0 without AVX2.
inline double fma_gflops(int threads, long iters) {
  const bool zmm = has_avx512();
  if (!zmm && !has_avx2()) return 0.0;
  const auto t0 = std::chrono::steady_clock::now();
  qtl::kernel::parallel_for(threads, threads, [&](std::ptrdiff_t, std::ptrdiff_t) {
    g_sink = static_cast<std::int64_t>(zmm ? fma_chains_avx512(iters) : fma_chains_avx2(iters));
  });
  return threads * 12.0 * (zmm ? 32.0 : 16.0) * static_cast<double>(iters) / seconds_since(t0) / 1e9;
}

/// Measures every limit at 1 and 2 threads into g_limits and prints them on stderr.
inline void measure() {
  if (g_stream == nullptr) {
    g_stream = new qtl::detail::AlignedBuffer(stream_bytes());
    for (std::size_t i = 0; i < g_stream->size(); i += 4096) g_stream->data()[i] = static_cast<std::uint8_t>(i >> 12);
  }
  for (int threads : {1, 2}) {
    g_limits.read_gbps[threads] = read_gbps(threads, 6);
    double best_fma = 0, best_dot = 0;
    for (int rep = 0; rep < 3; ++rep) {
      best_fma = std::max(best_fma, fma_gflops(threads, 20'000'000));
      best_dot = std::max(best_dot, dot_gops(threads, 20'000'000));
    }
    g_limits.fma_gflops[threads] = best_fma;
    g_limits.dot_gops[threads] = best_dot;
    for (int rep = 0; rep < 3; ++rep) g_limits.amx_gops[threads] = std::max(g_limits.amx_gops[threads], amx_gops(threads, 2'000'000));
  }
  std::fprintf(stderr,
               "limits: read %.1f / %.1f GB/s, fp32 FMA %.0f / %.0f GFLOP/s, int8 dot %.0f / %.0f GOP/s (1 / 2 threads); "
               "AMX int8 %.0f / %.0f GOP/s; kernel path %s\n",
               g_limits.read_gbps[1], g_limits.read_gbps[2], g_limits.fma_gflops[1], g_limits.fma_gflops[2],
               g_limits.dot_gops[1], g_limits.dot_gops[2], g_limits.amx_gops[1], g_limits.amx_gops[2],
               std::string(qtl::kernel::to_string(qtl::kernel::best_kernel_path())).c_str());
}

inline void limit_line(benchmark::State& state) {
  const int t = static_cast<int>(state.range(0));
  for (auto _ : state) benchmark::DoNotOptimize(t);
  state.counters["read_GBps"] = g_limits.read_gbps[t];
  state.counters["fma_GFLOPs"] = g_limits.fma_gflops[t];
  state.counters["dot_GOPs"] = g_limits.dot_gops[t];
  state.counters["amx_GOPs"] = g_limits.amx_gops[t];
  state.counters["threads"] = t;
}

/// The limit/1 and limit/2 lines (the roofline script reads them).
inline void register_limit_lines() {
  benchmark::RegisterBenchmark("limit", limit_line)->Arg(1)->Arg(2)->Iterations(1);
}

}  // namespace bench_limits
