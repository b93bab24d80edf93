// qtl/kernel/common/amx_tiles.hpp — a scope that borrows the thread's AMX tile configuration.
//
// Plain inline assembly (LDTILECFG / STTILECFG / TILERELEASE), no target attribute needed; only
// run it where amx_usable() (qtl/kernel/common/cpu_features.hpp) says the tiles are there.
#pragma once

#include "qtl/kernel/common/target.hpp"

#if defined(QTL_X86_64)

#include <cstdint>

namespace qtl::kernel {

/// Loads a 64-byte tile configuration for the lifetime of the scope and then puts back the
/// thread's previous one, or releases the tiles if the thread had none. A thread's tile
/// configuration is shared with every other AMX user on it: ggml's AMX kernels load theirs once
/// per thread and keep it, so releasing the tiles at the end made ggml's next tile load on that
/// thread fault (SIGILL). The kernel and bench_limits' AMX probe both go through this.
class AmxTileConfigScope {
 public:
  explicit AmxTileConfigScope(const void* config64) noexcept {
    __asm__ volatile("sttilecfg %0" : "=m"(saved_));
    __asm__ volatile("ldtilecfg %0" ::"m"(*static_cast<const std::uint8_t(*)[64]>(config64)));
  }
  ~AmxTileConfigScope() {
    if (saved_[0] != 0) {
      __asm__ volatile("ldtilecfg %0" ::"m"(saved_));
    } else {
      __asm__ volatile("tilerelease" ::: "memory");  // the thread was unconfigured
    }
  }
  AmxTileConfigScope(const AmxTileConfigScope&) = delete;
  AmxTileConfigScope& operator=(const AmxTileConfigScope&) = delete;

 private:
  alignas(64) std::uint8_t saved_[64];
};

}  // namespace qtl::kernel

#endif  // QTL_X86_64
