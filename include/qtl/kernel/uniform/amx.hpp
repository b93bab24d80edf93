// qtl/kernel/uniform/amx.hpp — the uniform int8 GEMM on AMX tiles (Sapphire Rapids and later).
//
// AMX's TDPBSSD / TDPBSUD multiply a 16 x 64-byte A tile by a B tile of K/4 rows of 64 bytes and
// add into a 16 x 16 int32 C tile: C[m][n] += sum_k A[m][k] * B[k/4][4n + k%4]. A B tile row is
// "4 consecutive columns of 16 rows side by side", exactly an operand of the tile layout
// (qtl/kernel/uniform/layout.hpp): so a kernel block's 8 decoded operands, stored one after the
// other, are a B tile of 8 rows (K = 32), and 16 tokens' 32 int8 activations of that block are
// the A tile. One instruction does 16 x 16 x 32 multiply-adds, 128 vpdpbusd's worth.
//
// Scales. Every block has its own activation scale d_b per token, so C is taken out of the tile
// after every block: y[m] += (float(C[m]) * s) * d_b[m], lanes = the 16 rows of the weight tile,
// s = the rows' scales of the block's group (ggml's AMX Q4_0 kernel faces the same per-block
// scales). Codes of at most 6 bits are decoded as code - zero (|.| <= 63, signed bytes) and
// multiplied by TDPBSSD: no zero-point term. 8-bit codes (up to 255) stay unsigned
// (TDPBSUD) and take the layout's zero-point term, y[m] -= (s z) gsum_g[m], once per group.
//
// Loop order, per thread over its weight tiles, 16 tiles at a time, in panels of 64 blocks (2048
// columns): decode the panel of the 16 tiles once into the thread's scratch (590 KiB), then run
// every chunk of 16 tokens through each of them, adding into Y; a panel's activations (1 MiB
// for 512 tokens) stay in L2 across the 16 tiles. Within a panel two blocks run at a time on two
// C tiles, so one pair's tile products overlap the previous pair's scaling. (Prefetching the
// next panel's codes and the next chunk's activations behind the products measured no change.)
//
// Cost per block, measured on a Sapphire Rapids-class VM: a TDPBSSD takes as long for 32
// columns as for 64 (~16 cycles), the tile store of its 1 KiB product about as long again, and
// the two do not overlap; the scaling (48 vector instructions for 16 x 16 products) overlaps
// them only partly. So ~19 ns per block of 16 x 16 x 32 on one core (870 GOP/s), a tenth of the
// tile unit's peak, against ~52 ns for the same products on the vector kernel (310 GOP/s).
//
// Accuracy: the same int8 activations and integer block products as the other int8 paths; only
// the float summation order differs (documented bound: qtl/kernel/uniform/kernel_matrix.hpp).
//
// Linux hands the tile state to a process only on request (arch_prctl(ARCH_REQ_XCOMP_PERM,
// XFEATURE_XTILEDATA)); amx_usable() makes it once. The kernel loads its tile configuration on
// entry and puts the thread's previous one back on exit (releases the tiles if there was none).
#pragma once

#include "qtl/kernel/common/target.hpp"

#if defined(QTL_X86_64)

#include <immintrin.h>

#include <cstddef>
#include <cstdint>

#include "qtl/kernel/common/amx_tiles.hpp"
#include "qtl/kernel/common/cpu_features.hpp"
#include "qtl/kernel/uniform/avx512.hpp"
#include "qtl/kernel/uniform/layout.hpp"
#include "qtl/kernel/uniform/amx_activations.hpp"
#include "qtl/kernel/uniform/quantize_activations.hpp"

namespace qtl::kernel {

namespace detail_amx {

/// The 64-byte tile configuration (palette 1): tmm0, tmm1 C (16 x 64 bytes), tmm2, tmm3 A
/// (16 tokens x 32 bytes), tmm4, tmm5 B (8 operands x 64 bytes).
struct alignas(64) TileConfig {
  std::uint8_t palette = 1;
  std::uint8_t start_row = 0;
  std::uint8_t reserved[14] = {};
  std::uint16_t colsb[16] = {64, 64, 32, 32, 64, 64};
  std::uint8_t rows[16] = {16, 16, 16, 16, 8, 8};
};
static_assert(sizeof(TileConfig) == 64);

// The tile instructions as inline assembly whose memory operands name exactly the 512 or
// 1024 bytes a tile load reads or a tile store writes (A and B tiles here are contiguous: 16 x 32
// and 8 x 64 bytes). GCC 12's _tile_loadd declares no memory input at all (it could move the
// decode's stores past it), and a blanket "memory" clobber makes GCC keep the 16 accumulators
// of a chunk in memory around every tile instruction.
using TileBytes = std::uint8_t[512];
using TileResult = std::int32_t[256];
#define QTL_TILE_LOAD(tmm, base, stride)                                                      \
  __asm__ volatile("tileloadd (%1,%2,1), %%tmm" #tmm ::"m"(*reinterpret_cast<const TileBytes*>(base)), \
                   "r"(base), "r"(static_cast<long>(stride)))
#define QTL_TILE_STORE(tmm, base)                                                                    \
  __asm__ volatile("tilestored %%tmm" #tmm ", (%1,%2,1)" : "=m"(*reinterpret_cast<TileResult*>(base)) \
                   : "r"(base), "r"(64L))
#define QTL_TILE_ZERO(tmm) __asm__ volatile("tilezero %%tmm" #tmm ::)
#define QTL_TILE_DPBSSD(c, a, b) __asm__ volatile("tdpbssd %%tmm" #b ", %%tmm" #a ", %%tmm" #c ::)
#define QTL_TILE_DPBSUD(c, a, b) __asm__ volatile("tdpbsud %%tmm" #b ", %%tmm" #a ", %%tmm" #c ::)

/// Codes as code - zero in signed bytes (TDPBSSD, no zero-point term): every width up to 6
/// bits without a code map.
template <int Bits, bool kMap>
inline constexpr bool kSignedCodes = Bits <= 6 && !kMap;

/// Decodes blocks [p0, p1) of weight tile t: wq[b - p0] = block b's 8 operands (B tile rows,
/// 512 bytes), ws[b - p0] = the fp32 scales of block b's group (16 lanes).
template <int Bits, bool kMap>
QTL_TARGET_AMX void decode_panel(const UniformKernelView& w, std::ptrdiff_t t, std::ptrdiff_t p0, std::ptrdiff_t p1,
                                 std::uint8_t* wq, float* ws) noexcept {
  using namespace detail_avx512;
  const __m512i map = load_map(w);
  for (std::ptrdiff_t g = 0; g < w.groups; ++g) {
    const std::ptrdiff_t b0 = w.group_block_begin[g] > p0 ? w.group_block_begin[g] : p0;
    const std::ptrdiff_t b1 = w.group_block_begin[g + 1] < p1 ? w.group_block_begin[g + 1] : p1;
    if (b0 >= b1) continue;
    const __m512 s = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(w.scales(t, g))));
    const __m512i z32 = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w.zeros(t, g))));
    // The zero point of row r in bytes 4r..4r+3 (the rows' lanes of an operand).
    const __m512i zb = _mm512_mullo_epi32(z32, _mm512_set1_epi32(0x01010101));
    for (std::ptrdiff_t b = b0; b < b1; ++b) {
      _mm512_store_ps(ws + 16 * (b - p0), s);
      const RawBlock<Bits> raw = load_block<Bits>(w.block(t, b));
      std::uint8_t* dst = wq + (b - p0) * 8 * 64;
#pragma GCC unroll 8
      for (int op = 0; op < 8; ++op) {
        __m512i c = mapped_operand<Bits, false, kMap>(raw, op, map);
        if constexpr (kSignedCodes<Bits, kMap>) c = _mm512_sub_epi8(c, zb);
        _mm512_store_si512(dst + 64 * op, c);
      }
    }
  }
}

/// The zero-point term of unsigned codes for weight tile t and token chunk j:
/// Y -= sum_g (s_g z_g) gsum_g (qtl/kernel/uniform/layout.hpp).
QTL_TARGET_AMX inline void zero_term(const UniformKernelView& w, std::ptrdiff_t t, const AmxActivationSet& a,
                                     std::ptrdiff_t j, float* y, std::ptrdiff_t ldy) noexcept {
  const float* gs = a.gsum + j * a.groups * kAmxTokens;
  __m512 acc[kAmxTokens];
  for (__m512& v : acc) v = _mm512_setzero_ps();
  for (std::ptrdiff_t g = 0; g < w.groups; ++g) {
    const __m512 s = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(w.scales(t, g))));
    const __m512 z = _mm512_cvtepi32_ps(
        _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w.zeros(t, g)))));
    const __m512 sz = _mm512_mul_ps(s, z);
#pragma GCC unroll 16
    for (int m = 0; m < kAmxTokens; ++m) acc[m] = _mm512_fmadd_ps(sz, _mm512_set1_ps(gs[g * kAmxTokens + m]), acc[m]);
  }
  const std::ptrdiff_t row0 = t * kTileRows, n0 = j * kAmxTokens;
  const std::ptrdiff_t valid = w.rows - row0 < kTileRows ? w.rows - row0 : kTileRows;
  const __mmask16 mask = static_cast<__mmask16>((1u << valid) - 1u);
  for (std::ptrdiff_t m = 0; m < kAmxTokens && n0 + m < a.m; ++m) {
    float* dst = y + (n0 + m) * ldy + row0;
    _mm512_mask_storeu_ps(dst, mask, _mm512_sub_ps(_mm512_maskz_loadu_ps(mask, dst), acc[m]));
  }
}

/// y[m] += (float(C[m]) * s) * d[m] for the 16 tokens of one block's product C (16 x 16 int32).
QTL_TARGET_AMX QTL_KERNEL_INLINE void scale_block(const std::int32_t* c, const float* s, const float* d,
                                                  __m512 (&y)[kAmxTokens]) noexcept {
  const __m512 sv = _mm512_load_ps(s);
#pragma GCC unroll 16
  for (int m = 0; m < kAmxTokens; ++m) {
    const __m512 p = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_load_si512(c + 16 * m)), sv);
    y[m] = _mm512_fmadd_ps(p, _mm512_set1_ps(d[m]), y[m]);
  }
}

/// Blocks [p0, p1) of one weight tile (decoded: wq, ws) times token chunk j, added to Y (rows
/// row0.., tokens 16 j..; written, not added, when `first`).
/// Software-pipelined by one step: step i multiplies two blocks on tmm0 / tmm1 and stores the
/// products to one half of cbuf (4 x 1 KiB), then scales step i - 1's products from the other
/// half: a tile store waits for its product, and the loads that read it for the store.
/// The odd last block goes through cbuf's first half after the last step was scaled.
template <bool kSigned>
QTL_TARGET_AMX void tile_chunk(const std::uint8_t* wq, const float* ws, const AmxActivationSet& a, std::ptrdiff_t j,
                               std::ptrdiff_t p0, std::ptrdiff_t p1, bool first, std::int32_t* cbuf, float* y,
                               std::ptrdiff_t ldy, std::ptrdiff_t row0, std::ptrdiff_t valid_rows) noexcept {
  constexpr std::ptrdiff_t kATile = kAmxTokens * kBlockCols, kBTile = 8 * 64;
  const std::ptrdiff_t nb = p1 - p0;
  const std::int8_t* aq = a.q + (j * a.blocks + p0) * kATile;
  const float* ad = a.d + (j * a.blocks + p0) * kAmxTokens;
  const __mmask16 mask = static_cast<__mmask16>((1u << valid_rows) - 1u);
  const std::ptrdiff_t n0 = j * kAmxTokens;
  const std::ptrdiff_t tokens = a.m - n0 < kAmxTokens ? a.m - n0 : kAmxTokens;
  __m512 acc[kAmxTokens];
#pragma GCC unroll 16
  for (int m = 0; m < kAmxTokens; ++m) {
    acc[m] = first || m >= tokens ? _mm512_setzero_ps() : _mm512_maskz_loadu_ps(mask, y + (n0 + m) * ldy + row0);
  }
  // Written out without lambdas: with the accumulators captured by reference GCC kept them
  // in memory, a store per multiply-add competing with the tile stores for the store port.
  std::ptrdiff_t b = 0;
  for (; b + 1 < nb; b += 2) {
    // Step b/2: blocks b, b + 1 into one half of cbuf; then the previous step's two blocks.
    std::int32_t* cur = cbuf + 512 * ((b / 2) & 1);
    QTL_TILE_LOAD(2, aq + b * kATile, kBlockCols);
    QTL_TILE_LOAD(4, wq + b * kBTile, 64);
    QTL_TILE_ZERO(0);
    QTL_TILE_LOAD(3, aq + (b + 1) * kATile, kBlockCols);
    QTL_TILE_LOAD(5, wq + (b + 1) * kBTile, 64);
    QTL_TILE_ZERO(1);
    if constexpr (kSigned) {
      QTL_TILE_DPBSSD(0, 2, 4);
      QTL_TILE_DPBSSD(1, 3, 5);
    } else {
      QTL_TILE_DPBSUD(0, 2, 4);
      QTL_TILE_DPBSUD(1, 3, 5);
    }
    QTL_TILE_STORE(0, cur);
    QTL_TILE_STORE(1, cur + 256);
    if (b >= 2) {
      const std::int32_t* prev = cbuf + 512 * (((b / 2) & 1) ^ 1);
      scale_block(prev, ws + 16 * (b - 2), ad + (b - 2) * kAmxTokens, acc);
      scale_block(prev + 256, ws + 16 * (b - 1), ad + (b - 1) * kAmxTokens, acc);
    }
  }
  if (b >= 2) {  // the last full step's blocks
    const std::int32_t* prev = cbuf + 512 * (((b / 2) & 1) ^ 1);
    scale_block(prev, ws + 16 * (b - 2), ad + (b - 2) * kAmxTokens, acc);
    scale_block(prev + 256, ws + 16 * (b - 1), ad + (b - 1) * kAmxTokens, acc);
  }
  if (b < nb) {  // an odd last block
    QTL_TILE_LOAD(2, aq + b * kATile, kBlockCols);
    QTL_TILE_LOAD(4, wq + b * kBTile, 64);
    QTL_TILE_ZERO(0);
    if constexpr (kSigned) {
      QTL_TILE_DPBSSD(0, 2, 4);
    } else {
      QTL_TILE_DPBSUD(0, 2, 4);
    }
    QTL_TILE_STORE(0, cbuf);
    scale_block(cbuf, ws + 16 * b, ad + b * kAmxTokens, acc);
  }
#pragma GCC unroll 16
  for (int m = 0; m < kAmxTokens; ++m) {
    if (m < tokens) _mm512_mask_storeu_ps(y + (n0 + m) * ldy + row0, mask, acc[m]);
  }
}

template <int Bits, bool kMap>
QTL_TARGET_AMX void run_tiles(const UniformKernelView& w, const AmxActivationSet& a, float* y, std::ptrdiff_t ldy,
                              std::ptrdiff_t t0, std::ptrdiff_t t1, std::uint8_t* scratch) noexcept {
  constexpr bool kSigned = kSignedCodes<Bits, kMap>;
  std::uint8_t* wq0 = scratch;                                                          // G x P x 512
  auto* ws0 = reinterpret_cast<float*>(wq0 + kAmxTileGroup * kAmxPanelBlocks * 512);   // G x P x 16
  auto* cbuf = reinterpret_cast<std::int32_t*>(ws0 + kAmxTileGroup * kAmxPanelBlocks * 16);  // 4 x 256
  const TileConfig cfg;
  const AmxTileConfigScope tiles(&cfg);  // the thread's own configuration comes back at the end
  for (std::ptrdiff_t tg = t0; tg < t1; tg += kAmxTileGroup) {
    const std::ptrdiff_t n = t1 - tg < kAmxTileGroup ? t1 - tg : kAmxTileGroup;
    for (std::ptrdiff_t p0 = 0; p0 < w.blocks; p0 += kAmxPanelBlocks) {
      const std::ptrdiff_t p1 = w.blocks - p0 < kAmxPanelBlocks ? w.blocks : p0 + kAmxPanelBlocks;
      for (std::ptrdiff_t i = 0; i < n; ++i) {
        decode_panel<Bits, kMap>(w, tg + i, p0, p1, wq0 + i * kAmxPanelBlocks * 512, ws0 + i * kAmxPanelBlocks * 16);
      }
      for (std::ptrdiff_t j = 0; j < a.chunks; ++j) {
        for (std::ptrdiff_t i = 0; i < n; ++i) {
          const std::ptrdiff_t row0 = (tg + i) * kTileRows;
          const std::ptrdiff_t valid = w.rows - row0 < kTileRows ? w.rows - row0 : kTileRows;
          tile_chunk<kSigned>(wq0 + i * kAmxPanelBlocks * 512, ws0 + i * kAmxPanelBlocks * 16, a, j, p0, p1, p0 == 0,
                              cbuf, y, ldy, row0, valid);
        }
      }
    }
    if constexpr (!kSigned) {
      for (std::ptrdiff_t j = 0; j < a.chunks; ++j) {
        for (std::ptrdiff_t i = 0; i < n; ++i) zero_term(w, tg + i, a, j, y, ldy);
      }
    }
  }
}

#undef QTL_TILE_LOAD
#undef QTL_TILE_STORE
#undef QTL_TILE_ZERO
#undef QTL_TILE_DPBSSD
#undef QTL_TILE_DPBSUD

}  // namespace detail_amx

/// Y[n * ldy + row] for the rows of tiles [t0, t1) and all tokens of `a`, on AMX tiles.
/// scratch: amx_scratch_bytes() bytes, 64-byte aligned, this thread's own.
/// Requires amx_usable() and a layout without a code map.
inline void uniform_tiles_amx(const UniformKernelView& w, const AmxActivationSet& a, float* y, std::ptrdiff_t ldy,
                              std::ptrdiff_t t0, std::ptrdiff_t t1, std::uint8_t* scratch) noexcept {
  using namespace detail_amx;
  if (w.code_map != nullptr) return;  // mapped codes (the table family) do not come here
  switch (w.bits) {
    case 2: run_tiles<2, false>(w, a, y, ldy, t0, t1, scratch); break;
    case 3: run_tiles<3, false>(w, a, y, ldy, t0, t1, scratch); break;
    case 4: run_tiles<4, false>(w, a, y, ldy, t0, t1, scratch); break;
    case 5: run_tiles<5, false>(w, a, y, ldy, t0, t1, scratch); break;
    case 6: run_tiles<6, false>(w, a, y, ldy, t0, t1, scratch); break;
    case 8: run_tiles<8, false>(w, a, y, ldy, t0, t1, scratch); break;
    default: break;
  }
}

}  // namespace qtl::kernel

#endif
