// qtl/kernel/prefetch.hpp — software prefetch of the weight stream.
//
// A GEMV reads every weight byte once, from DRAM, in address order within a thread's range of
// tiles. The hardware prefetchers follow such a stream, but one core alone did not keep enough
// misses in flight for the low-bit formats, whose instructions per byte are higher than 8-bit
// codes' (uniform 2-bit GEMV on a 4096 x 14336 matrix, 1 thread: 7.7 GB/s without, 9.5-10.1 GB/s
// with, the machine's read bandwidth being 10-11.7 GB/s; bench/uniform_kernel_matrix_bench).
// So each kernel also touches the line kPrefetchBytes ahead of the block it is about to read
// (ggml and FBGEMM prefetch their weight panels the same way). The distance is ~400 ns of
// stream at 10 GB/s, several DRAM latencies, and well inside L1; 2, 4 and 8 KiB measured the
// same within noise, 1 KiB lower. Prefetches never fault, so running past the end of the
// buffer is harmless.
#pragma once

#include <cstddef>

namespace qtl::kernel {

inline constexpr std::ptrdiff_t kPrefetchBytes = 4096;

/// Prefetches `lines` 64-byte lines starting kPrefetchBytes past p, for reading, into L1.
template <int Lines>
inline __attribute__((always_inline)) void prefetch_stream(const void* p) noexcept {
  const char* c = static_cast<const char*>(p) + kPrefetchBytes;
  for (int l = 0; l < Lines; ++l) __builtin_prefetch(c + 64 * l, 0, 3);
}

}  // namespace qtl::kernel
