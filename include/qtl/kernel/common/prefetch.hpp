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
// (uniform_prefetch_bytes): 4 KiB on Intel CPUs and for 8-bit codes, 16 KiB otherwise.
// Prefetches never fault, so running past the end of the buffer is harmless.
// QTL_PREFETCH_BYTES overrides the distance for every stream.
#pragma once

#include <cstddef>

#include "qtl/kernel/common/cpu_features.hpp"

namespace qtl::kernel {

/// Bytes ahead of the block being read that a stream reading `Lines` 64-byte lines per block
/// prefetches (see the header comment for the measurements behind the values).
template <int Lines>
inline constexpr std::ptrdiff_t kPrefetchBytes =
#ifdef QTL_PREFETCH_BYTES
    QTL_PREFETCH_BYTES;
#else
    Lines >= 8 ? 4096 : 16384;
#endif

/// Prefetches `lines` 64-byte lines starting kPrefetchBytes<Lines> past p, for reading, into L1.
template <int Lines>
inline __attribute__((always_inline)) void prefetch_stream(const void* p) noexcept {
  const char* c = static_cast<const char*>(p) + kPrefetchBytes<Lines>;
  for (int l = 0; l < Lines; ++l) __builtin_prefetch(c + 64 * l, 0, 3);
}

/// prefetch_stream with a distance chosen at run time.
template <int Lines>
inline __attribute__((always_inline)) void prefetch_stream_at(const void* p, std::ptrdiff_t distance) noexcept {
  const char* c = static_cast<const char*>(p) + distance;
  for (int l = 0; l < Lines; ++l) __builtin_prefetch(c + 64 * l, 0, 3);
}

/// The uniform kernels' prefetch distance for `bits`-bit codes on this CPU (see the top).
[[nodiscard]] inline std::ptrdiff_t uniform_prefetch_bytes(int bits) noexcept {
#ifdef QTL_PREFETCH_BYTES
  (void)bits;
  return QTL_PREFETCH_BYTES;
#else
  return bits >= 8 || cpu_features().intel ? 4096 : 16384;
#endif
}

}  // namespace qtl::kernel
