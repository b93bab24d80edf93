// qtl/kernel/common/threading.hpp — static splitting of independent work items across threads.
//
// parallel_for(n, threads, f) calls f(begin, end) on the contiguous chunks
//   chunk i = [n * i / T, n * (i + 1) / T),  T = min(threads, n),
// each chunk once, possibly concurrently. Kernels split output tiles this way and every output
// element is computed by the same instructions whichever chunk holds it, so results are
// bit-identical for any thread count. With OpenMP (-fopenmp) the chunks run in an OpenMP
// parallel region; without it (the library is header-only and users may not build with OpenMP)
// they run on std::threads started for the call. `f` must not throw.
#pragma once

#include <algorithm>
#include <cstddef>
#include <thread>
#include <vector>

#if defined(_OPENMP)
#include <omp.h>
#endif

namespace qtl::kernel {

template <class F>
void parallel_for(std::ptrdiff_t n, int threads, F&& f) {
  if (n <= 0) return;
  const std::ptrdiff_t t = std::clamp<std::ptrdiff_t>(threads, 1, n);
  if (t == 1) {
    f(std::ptrdiff_t{0}, n);
    return;
  }
  auto chunk = [&](std::ptrdiff_t i) { f(n * i / t, n * (i + 1) / t); };
#if defined(_OPENMP)
#pragma omp parallel for schedule(static, 1) num_threads(static_cast<int>(t))
  for (std::ptrdiff_t i = 0; i < t; ++i) chunk(i);
#else
  std::vector<std::thread> pool;
  pool.reserve(static_cast<std::size_t>(t - 1));
  for (std::ptrdiff_t i = 1; i < t; ++i) pool.emplace_back(chunk, i);
  chunk(0);
  for (auto& th : pool) th.join();
#endif
}

}  // namespace qtl::kernel
