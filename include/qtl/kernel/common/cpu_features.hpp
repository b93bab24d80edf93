// qtl/kernel/common/cpu_features.hpp — which SIMD paths this CPU can run, and which one qtl uses.
//
// The kernels are header-only and must run on whatever CPU executes the program, whatever flags
// it was compiled with. So every SIMD kernel is an ordinary function carrying
// __attribute__((target("..."))) (the attribute strings: qtl/kernel/common/target.hpp): one
// translation unit holds every path, compiled without any -m flag, and the path is chosen at
// run time, once, from cpuid. We do not use xsimd's dispatch here: it needs one translation unit
// per architecture with its own -m flags, and identical inline symbols compiled with different
// flags are merged by the linker (one of them may then run AVX-512 code on a CPU without it);
// function-level target attributes give each path its own symbol and avoid both problems.
//
// Paths, best first:
//   Avx512Vnni  zmm, int8 dot products with vpdpbusd (AVX-512F/BW/VL + AVX512_VNNI)
//   Avx512      zmm, vpmaddubsw + vpmaddwd (AVX-512F/BW/VL), for AVX-512 CPUs without VNNI
//   AvxVnni     ymm, int8 dot products with the VEX vpdpbusd (AVX2 + AVX-VNNI: Alder Lake and
//               later client CPUs without AVX-512; Zen 5, Sapphire Rapids have it beside it)
//   Avx2        ymm, vpmaddubsw + vpmaddwd (AVX2 + FMA + F16C)
//   Portable    xsimd batches of the compile-time arch (qtl/kernel/common/portable_simd.hpp:
//               SSE2 on plain x86-64, NEON on AArch64), always present
// On the Avx512Vnni path the uniform int8 GEMM also uses AMX tiles where amx_usable() (below).
// Only the uniform kernels (and the table family's int8 mode, which runs on them) use integer
// dot products; the other families run their Avx2 code on the AvxVnni path.
// The environment variable QTL_KERNEL_PATH=portable|avx2|avxvnni|avx512|avx512vnni forces a
// path for the whole process (read once, on first use); forcing a path this CPU cannot run is
// an error. QTL_AMX=0 keeps the process off AMX tiles.
#pragma once

#include "qtl/kernel/common/target.hpp"

#include <cstdlib>
#include <iterator>
#include <string>
#include <string_view>
#include <vector>

#include "qtl/core/error.hpp"

#if (defined(__GNUC__) || defined(__clang__)) && (defined(__x86_64__) || defined(__i386__))
#include <cpuid.h>
#endif
#if defined(__linux__)
#include <sys/syscall.h>
#include <unistd.h>
#endif

namespace qtl::kernel {

enum class KernelPath { Portable = 0, Avx2 = 1, Avx512 = 2, Avx512Vnni = 3, AvxVnni = 4 };

/// Every path, worst to best (best_kernel_path() takes the last supported one).
inline constexpr KernelPath kAllKernelPaths[] = {KernelPath::Portable, KernelPath::Avx2, KernelPath::AvxVnni,
                                                 KernelPath::Avx512, KernelPath::Avx512Vnni};

[[nodiscard]] constexpr std::string_view to_string(KernelPath p) noexcept {
  switch (p) {
    case KernelPath::Portable: return "portable";
    case KernelPath::Avx2: return "avx2";
    case KernelPath::AvxVnni: return "avxvnni";
    case KernelPath::Avx512: return "avx512";
    case KernelPath::Avx512Vnni: return "avx512vnni";
  }
  return "?";
}

/// Parses "portable", "avx2", "avxvnni", "avx512" or "avx512vnni"; throws qtl::Error naming
/// the value.
[[nodiscard]] inline KernelPath parse_kernel_path(std::string_view s) {
  for (KernelPath p : kAllKernelPaths) {
    if (s == to_string(p)) return p;
  }
  fail("parse_kernel_path: expected portable, avx2, avxvnni, avx512 or avx512vnni, got \"", s, "\"");
}

/// CPU features relevant to the kernels (cpuid leaf 7 / leaf 1 plus the OS's XSAVE state, as
/// reported by the compiler's __builtin_cpu_supports, which checks both).
struct CpuFeatures {
  bool avx2 = false;
  bool fma = false;
  bool f16c = false;
  bool avx512f = false;
  bool avx512bw = false;
  bool avx512vl = false;
  bool avx512vnni = false;
  bool avx_vnni = false;  ///< VEX-encoded VNNI (Alder Lake+, Zen 5): the AvxVnni path
  bool intel = false;     ///< vendor "GenuineIntel" (the weight-stream prefetch distance depends on it)
  bool amd = false;       ///< vendor "AuthenticAMD" (likewise)
  int family = 0;         ///< x86 display family (base + extended, CPUID leaf 1): 0x19 Zen 3 / 4, 0x1A Zen 5
  bool amx_int8 = false;  ///< AMX-TILE + AMX-INT8 with the tile state enabled in XCR0 (Sapphire Rapids+)
};

[[nodiscard]] inline CpuFeatures detect_cpu_features() noexcept {
  CpuFeatures f;
#if (defined(__GNUC__) || defined(__clang__)) && (defined(__x86_64__) || defined(__i386__))
  __builtin_cpu_init();
  f.avx2 = __builtin_cpu_supports("avx2");
  f.fma = __builtin_cpu_supports("fma");
  f.f16c = true;  // every AVX2 CPU shipped has F16C; __builtin_cpu_supports lacks "f16c" in GCC 12
  f.avx512f = __builtin_cpu_supports("avx512f");
  f.avx512bw = __builtin_cpu_supports("avx512bw");
  f.avx512vl = __builtin_cpu_supports("avx512vl");
  f.avx512vnni = __builtin_cpu_supports("avx512vnni");
  // AVX-VNNI: CPUID leaf 7, sub-leaf 1, EAX bit 4 (read directly: older clang's
  // __builtin_cpu_supports does not know "avxvnni"). Its VEX encoding needs the AVX state
  // enabled, which avx2 above already implies.
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  if (__get_cpuid_count(7, 1, &eax, &ebx, &ecx, &edx) != 0) f.avx_vnni = f.avx2 && ((eax >> 4) & 1u) != 0;
  // AMX: CPUID leaf 7, sub-leaf 0, EDX bits 24 (AMX-TILE) and 25 (AMX-INT8), and the OS's XCR0
  // bits 17 (XTILECFG) and 18 (XTILEDATA) (XGETBV needs OSXSAVE, leaf 1 ECX bit 27). Linux also
  // wants a per-process request before the first tile instruction: amx_usable() makes it.
  if (__get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx) != 0 && ((edx >> 24) & 3u) == 3u) {
    unsigned a1 = 0, b1 = 0, c1 = 0, d1 = 0;
    if (__get_cpuid(1, &a1, &b1, &c1, &d1) != 0 && ((c1 >> 27) & 1u) != 0) {
      unsigned xcr0_lo = 0, xcr0_hi = 0;
      __asm__("xgetbv" : "=a"(xcr0_lo), "=d"(xcr0_hi) : "c"(0u));
      f.amx_int8 = ((xcr0_lo >> 17) & 3u) == 3u;
    }
  }
  // Leaf 0: the vendor string in EBX, EDX, ECX ("Genu" "ineI" "ntel").
  if (__get_cpuid(0, &eax, &ebx, &ecx, &edx) != 0) {
    f.intel = ebx == 0x756e6547u && edx == 0x49656e69u && ecx == 0x6c65746eu;
    f.amd = ebx == 0x68747541u && edx == 0x69746e65u && ecx == 0x444d4163u;  // "Auth" "enti" "cAMD"
  }
  if (__get_cpuid(1, &eax, &ebx, &ecx, &edx) != 0) {
    const int base = static_cast<int>((eax >> 8) & 0xFu);
    f.family = base == 0xF ? base + static_cast<int>((eax >> 20) & 0xFFu) : base;
  }
#endif
  return f;
}

/// The CPU's features, detected once per process.
[[nodiscard]] inline const CpuFeatures& cpu_features() noexcept {
  static const CpuFeatures f = detect_cpu_features();
  return f;
}

/// Whether this process may run AMX tile instructions: the CPU has AMX-TILE and AMX-INT8 with
/// their state enabled, and (Linux) the kernel granted the process the tile data state, asked
/// once with arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) (the grant is process-wide).
/// QTL_AMX=0 in the environment (read once) turns AMX off for the process. The uniform int8
/// GEMM (qtl/kernel/uniform/amx.hpp) runs on AMX tiles where this holds.
[[nodiscard]] inline bool amx_usable() noexcept {
  static const bool usable = [] {
    if (!cpu_features().amx_int8) return false;
    const char* env = std::getenv("QTL_AMX");
    if (env != nullptr && std::string_view(env) == "0") return false;
#if defined(__linux__) && defined(SYS_arch_prctl) && defined(QTL_X86_64)
    constexpr long kArchReqXcompPerm = 0x1023, kXfeatureXtiledata = 18;  // asm/prctl.h, fpu/types.h
    return syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) == 0;
#else
    return false;
#endif
  }();
  return usable;
}

/// Whether the compiled code of path `p` may run here (compiler and CPU both support it).
[[nodiscard]] inline bool path_supported(KernelPath p) noexcept {
#if defined(QTL_X86_64)
  const CpuFeatures& f = cpu_features();
  const bool avx2 = f.avx2 && f.fma && f.f16c;
  const bool avx512 = avx2 && f.avx512f && f.avx512bw && f.avx512vl;
  switch (p) {
    case KernelPath::Portable: return true;
    case KernelPath::Avx2: return avx2;
    case KernelPath::AvxVnni: return avx2 && f.avx_vnni;
    case KernelPath::Avx512: return avx512;
    case KernelPath::Avx512Vnni: return avx512 && f.avx512vnni;
  }
  return false;
#else
  return p == KernelPath::Portable;
#endif
}

/// Every path this CPU supports, portable first (what a test of "every path" loops over).
[[nodiscard]] inline std::vector<KernelPath> supported_kernel_paths() {
  std::vector<KernelPath> out;
  for (KernelPath p : kAllKernelPaths) {
    if (path_supported(p)) out.push_back(p);
  }
  return out;
}

/// The best path this CPU supports.
[[nodiscard]] inline KernelPath best_kernel_path() noexcept {
  for (auto i = std::size(kAllKernelPaths) - 1; i > 0; --i) {
    if (path_supported(kAllKernelPaths[i])) return kAllKernelPaths[i];
  }
  return KernelPath::Portable;
}

/// The path for an optional QTL_KERNEL_PATH value: the best supported path when absent or
/// empty, else the named path; throws qtl::Error if the value is unknown or not supported here.
[[nodiscard]] inline KernelPath select_kernel_path(const char* env_value) {
  if (env_value == nullptr || *env_value == '\0') return best_kernel_path();
  const KernelPath p = parse_kernel_path(env_value);
  if (!path_supported(p)) {
    fail("QTL_KERNEL_PATH=", env_value, ": this CPU cannot run the ", to_string(p),
         " kernels (best supported: ", to_string(best_kernel_path()), ")");
  }
  return p;
}

/// The process-wide default path: QTL_KERNEL_PATH if set, else the best supported. The variable
/// is read once per process; a bad value throws qtl::Error (every time this is asked).
[[nodiscard]] inline KernelPath default_kernel_path() {
  static const std::string env = [] {
    const char* v = std::getenv("QTL_KERNEL_PATH");
    return std::string(v ? v : "");
  }();
  return select_kernel_path(env.c_str());
}

}  // namespace qtl::kernel
