// qtl/kernel/uniform/amx_activations.hpp — int8 activations laid out for the AMX tile kernel
// (qtl/kernel/uniform/amx.hpp), and that kernel's blocking constants and scratch size.
//
// Separate from amx.hpp (the kernel, x86 only) so that translation units which only declare the
// kernels (QTL_KERNELS_SEPARATE) can still prepare activations and size the scratch; the codes
// and scales are quantize_token_int8's (qtl/kernel/uniform/quantize_activations.hpp), the same
// as every other int8 path's.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

#include "qtl/kernel/uniform/layout.hpp"
#include "qtl/kernel/uniform/quantize_activations.hpp"

namespace qtl::kernel {

/// Tokens per chunk of the AMX tile kernel (qtl/kernel/uniform/amx.hpp): the rows of an A tile.
inline constexpr int kAmxTokens = 16;
/// The AMX kernel's blocking: it decodes kAmxPanelBlocks kernel blocks (2048 columns) of
/// kAmxTileGroup weight tiles at a time (1.1 MiB with the activations of 512 tokens' panel: L2)
/// and runs every token chunk through them.
inline constexpr int kAmxTileGroup = 16;
inline constexpr int kAmxPanelBlocks = 64;

/// Scratch bytes one thread of the AMX kernel needs: the decoded operands and scales of one
/// panel of kAmxTileGroup tiles, and four 16 x 16 int32 products.
[[nodiscard]] constexpr std::size_t amx_scratch_bytes() noexcept {
  return static_cast<std::size_t>(kAmxTileGroup * kAmxPanelBlocks * (8 * 64 + 16 * 4) + 4 * 256 * 4);
}

/// Plain view of int8 activations laid out for AMX tile loads: the same codes and scales as
/// PreparedActivations' Int8 mode, tokens in chunks of 16 (the last chunk padded with zero
/// tokens: codes 0, scale 0), each chunk's block b one 16 x 32 A tile:
///   q[((j * blocks + b) * 16 + n) * 32 + k]  int8 code of token 16 j + n, kernel column 32 b + k
///   d[(j * blocks + b) * 16 + n]             its block scale d_b
///   gsum[(j * groups + g) * 16 + n]          its group sum (as ActivationSet::gsum)
struct AmxActivationSet {
  const std::int8_t* q = nullptr;
  const float* d = nullptr;
  const float* gsum = nullptr;
  std::ptrdiff_t m = 0, chunks = 0, blocks = 0, groups = 0;
};

/// Owns activations in the AMX layout for m tokens.
class AmxActivations {
 public:
  void allocate(const UniformKernelView& w, std::ptrdiff_t m) {
    m_ = m;
    chunks_ = (m + kAmxTokens - 1) / kAmxTokens;
    blocks_ = w.blocks;
    groups_ = w.groups;
    const auto rows = static_cast<std::size_t>(chunks_ * kAmxTokens);
    q_.assign(rows * static_cast<std::size_t>(w.blocks * kBlockCols), 0);
    d_.assign(rows * static_cast<std::size_t>(w.blocks), 0.0f);
    gsum_.assign(rows * static_cast<std::size_t>(w.groups), 0.0f);
  }

  /// Prepares tokens [n_begin, n_end) of X (row n at x + n * ldx, cols finite floats each).
  /// Distinct token ranges may be prepared concurrently.
  void prepare(const UniformKernelView& w, const float* x, std::ptrdiff_t ldx, std::ptrdiff_t n_begin,
               std::ptrdiff_t n_end) {
    std::vector<float> xk(static_cast<std::size_t>(w.blocks * kBlockCols));
    std::vector<float> gs(static_cast<std::size_t>(w.groups));
    for (std::ptrdiff_t n = n_begin; n < n_end; ++n) {
      const std::ptrdiff_t j = n / kAmxTokens, r = n % kAmxTokens;
      gather_activations(w, x + n * ldx, xk.data(), nullptr);
      std::int8_t* qdst = q_.data() + j * blocks_ * kAmxTokens * kBlockCols + r * kBlockCols;
      float* ddst = d_.data() + j * blocks_ * kAmxTokens + r;
      quantize_token_int8(w, xk.data(), true, gs.data(), [&](std::ptrdiff_t b, const std::int8_t* q, float d, int) {
        std::memcpy(qdst + b * kAmxTokens * kBlockCols, q, kBlockCols);
        ddst[b * kAmxTokens] = d;
      });
      float* gdst = gsum_.data() + j * groups_ * kAmxTokens + r;
      for (std::ptrdiff_t g = 0; g < groups_; ++g) gdst[g * kAmxTokens] = gs[static_cast<std::size_t>(g)];
    }
  }

  [[nodiscard]] AmxActivationSet view() const noexcept {
    return AmxActivationSet{q_.data(), d_.data(), gsum_.data(), m_, chunks_, blocks_, groups_};
  }

 private:
  std::ptrdiff_t m_ = 0, chunks_ = 0, blocks_ = 0, groups_ = 0;
  std::vector<std::int8_t> q_;
  std::vector<float> d_;
  std::vector<float> gsum_;
};

}  // namespace qtl::kernel
