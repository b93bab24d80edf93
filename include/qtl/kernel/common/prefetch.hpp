// qtl/kernel/common/prefetch.hpp — software prefetch of the weight stream.
//
// A GEMV reads every weight byte once, from DRAM, in address order within a thread's range of
// tiles. The hardware prefetchers follow such a stream, but one core alone did not keep enough
// misses in flight for the low-bit formats, whose instructions per byte are higher than 8-bit
// codes' (uniform 2-bit GEMV on a 4096 x 14336 matrix, 1 thread, on an Ice Lake server with
// 10-11.7 GB/s of read bandwidth: 7.7 GB/s without, 9.5-10.1 GB/s with a 4 KiB distance;
// bench/uniform_kernel_matrix_bench). So each kernel also touches the line a fixed distance
// ahead of the block it is about to read (ggml and FBGEMM prefetch their weight panels the same
// way). The distance must cover bandwidth x latency: on a Zen 5 server core (38 GB/s from one
// core) 4 KiB was too short, 16 KiB took the same 1-thread GEMVs from 22.9-23.7 to 26.9-29.4
// GB/s (2-bit), 28.1 to 31.3 (4-bit), 23.8 to 28.5 (3-bit), and the 2-thread ones up too;
// 32 KiB measured the same as 16, 64 KiB lower. 8-bit codes (8 lines per block, the most
// bytes per instruction) measured 4 KiB best there (32.4 GB/s, 30.5 at 16 KiB), and on the
// Ice Lake machine 2-8 KiB measured the same. On a 2-core Intel Xeon VM (llama.cpp picks its
// Sapphire Rapids build there; 15.8 / 30 GB/s from 1 / 2 cores), medians of 3, twice, 4096 x
// 14336: 4 KiB against 16 KiB took the 2-bit GEMV from 1.46-1.52 to 1.34-1.38 ms with 1 thread
// and from 0.79-0.82 to 0.71-0.75 ms with 2; 4-bit moved by 0-7% (noise-level with 2 threads);
// 32 KiB was slower than both. So the uniform kernels choose at run time
// (uniform_prefetch): 4 KiB on Intel CPUs and for 8-bit codes, 16 KiB otherwise.
// Two levels on Intel (2026-12-06, the same VM class, one process alternating the settings
// over the same cycled 4096 x 14336 copies, medians of 3 passes of 1.9 GB): a prefetch into L1
// (prefetcht0) that misses all the way to DRAM holds one of the core's few L1 fill buffers for
// the whole DRAM latency, so far-ahead L1 prefetches cap the misses in flight. Prefetching the
// line 4 KiB ahead into L2 only (prefetcht1) and the line 1 KiB ahead into L1 (by then it is
// in L2, so the fill buffer is held briefly) took 1-thread GEMVs from 11.0 to 12.3-12.6 GB/s
// (2-bit), 11.1 to 12.7-13.3 (3-bit), 11.9 to 14.0-14.6 (4-bit), 13.9 to 15.2 (8-bit) against
// 15.3 GB/s read by the probe, and 2-thread ones from 21.4 to 23.6 (2-bit) and 23.6 to 28.5
// (4-bit). No software prefetch at all read 11.0 (4-bit); prefetcht1 alone 16 KiB ahead 13.7;
// prefetchnta halved the rate. The other families' streams gained too (same VM, bench lines
// alternated twice: ternary LUT GEMV 67-68% -> 76-78% of the read bandwidth, binary 67% -> 75%).
// So on Intel every kernel prefetches on both levels (measured on that VM class only; the Ice
// Lake and Zen 5 numbers above predate it).
// Zen 4 too (2026-12-06, a 2-core AMD EPYC VM, family 19h; one process switching the setting
// every 30 GEMVs over the same cycled 4096 x 14336 copies, 12 pairs, medians): two levels
// against 16 KiB into L1 (4 KiB for 8-bit) took the uniform int8 GEMVs, group 32, from 1.65 to
// 1.28 ms (2-bit), 2.37 to 2.06 (4-bit), 3.62 to 3.48 (8-bit) with 1 thread and 0.93 to 0.83,
// 1.37 to 1.22, 2.30 to 2.14 ms with 2, faster in 11-12 of the 12 pairs each; the fp32 table
// GEMVs from 3.14 to 2.68 ms (NF4) and 2.78 to 2.62 (log2 3-bit) with 1 thread, 1.73 to 1.49 and
// 1.54 to 1.50 with 2 (NF4 12 of 12, log2 8-9 of 12). So AMD family 19h CPUs with AVX-512
// (Zen 4; Zen 3, the same family without AVX-512, was not measured) take two levels as well;
// Zen 5 (family 1Ah) keeps the one-level distances measured there. Longer two-level distances
// suit Zen 4 better (same program, 5 settings cycled every 24 GEMVs, medians of 10, run twice):
// 8 KiB into L2 and 2 KiB into L1 against 4 KiB / 1 KiB took the 4-bit GEMV from 2.21-2.25 to
// 1.95-2.10 ms (1 thread) and 1.32-1.48 to 1.21-1.37 (2 threads), the 2-bit one from 1.23-1.44
// to 1.16-1.30 (1 thread; 2 threads within 4%); 16 KiB / 4 KiB measured the same as 8 / 2, and
// 2 KiB / 512 B slower than all. So Zen 4 takes 8 KiB / 2 KiB (kZen4Prefetch).
// Prefetches never fault, so running past the end of the buffer is harmless.
// QTL_PREFETCH_BYTES overrides the distance for every stream (one level, into L1).
#pragma once

#include <cstddef>

#include "qtl/kernel/common/cpu_features.hpp"

namespace qtl::kernel {

/// Where a stream prefetches, chosen at run time: `far` bytes ahead into L2 and `near` bytes
/// ahead into L1 when near > 0 (two levels); else `far` bytes ahead into L1.
struct PrefetchDistance {
  std::ptrdiff_t far = 16384;
  std::ptrdiff_t near = 0;
  friend bool operator==(const PrefetchDistance&, const PrefetchDistance&) = default;
};

/// The two-level distances used on Intel CPUs (see the top).
inline constexpr PrefetchDistance kTwoLevelPrefetch{4096, 1024};
/// The two-level distances used on AMD Zen 4 CPUs (see the top).
inline constexpr PrefetchDistance kZen4Prefetch{8192, 2048};

/// One-level bytes ahead of the block being read for a stream reading `Lines` 64-byte lines
/// per block, on CPUs other than Intel's (see the header comment for the measurements).
template <int Lines>
inline constexpr std::ptrdiff_t kPrefetchBytes =
#ifdef QTL_PREFETCH_BYTES
    QTL_PREFETCH_BYTES;
#else
    Lines >= 8 ? 4096 : 16384;
#endif

/// The two-level distances a CPU takes: kTwoLevelPrefetch on Intel, kZen4Prefetch on AMD Zen 4
/// (family 19h with AVX-512); {0, 0} (one level, kPrefetchBytes) elsewhere.
[[nodiscard]] inline PrefetchDistance two_level_prefetch_for(const CpuFeatures& f) noexcept {
  if (f.intel) return kTwoLevelPrefetch;
  if (f.amd && f.family == 0x19 && f.avx512f) return kZen4Prefetch;
  return {0, 0};
}

namespace detail_prefetch {
/// This CPU's two-level distances (near == 0: one level), read once, at start-up.
inline const PrefetchDistance g_two_level = two_level_prefetch_for(cpu_features());
}  // namespace detail_prefetch

/// Prefetches the `Lines` 64-byte lines of the block `d` ahead of p (both levels when d.near > 0).
template <int Lines>
inline __attribute__((always_inline)) void prefetch_stream_at(const void* p, PrefetchDistance d) noexcept {
  const char* c = static_cast<const char*>(p);
  if (d.near > 0) {
    for (int l = 0; l < Lines; ++l) __builtin_prefetch(c + d.far + 64 * l, 0, 2);  // prefetcht1: L2
    for (int l = 0; l < Lines; ++l) __builtin_prefetch(c + d.near + 64 * l, 0, 3);  // prefetcht0: L1
  } else {
    for (int l = 0; l < Lines; ++l) __builtin_prefetch(c + d.far + 64 * l, 0, 3);
  }
}

/// Prefetches the lines of the block ahead of p at this CPU's distances for a `Lines`-line
/// stream: two levels on Intel and Zen 4, kPrefetchBytes<Lines> into L1 elsewhere (or
/// QTL_PREFETCH_BYTES).
template <int Lines>
inline __attribute__((always_inline)) void prefetch_stream(const void* p) noexcept {
#ifdef QTL_PREFETCH_BYTES
  prefetch_stream_at<Lines>(p, {QTL_PREFETCH_BYTES, 0});
#else
  prefetch_stream_at<Lines>(p, detail_prefetch::g_two_level.near > 0 ? detail_prefetch::g_two_level
                                                                     : PrefetchDistance{kPrefetchBytes<Lines>, 0});
#endif
}

/// The uniform kernels' prefetch distances for `bits`-bit codes on this CPU (see the top).
[[nodiscard]] inline PrefetchDistance uniform_prefetch(int bits) noexcept {
#ifdef QTL_PREFETCH_BYTES
  (void)bits;
  return {QTL_PREFETCH_BYTES, 0};
#else
  if (detail_prefetch::g_two_level.near > 0) return detail_prefetch::g_two_level;
  return {bits >= 8 ? 4096 : 16384, 0};
#endif
}

}  // namespace qtl::kernel
