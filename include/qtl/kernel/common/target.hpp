// qtl/kernel/common/target.hpp — where the hand-written x86 kernels compile, and the target attributes
// their functions carry (one place for both; the kernel headers include this one).
//
// QTL_X86_64 is defined on x86-64 with GCC or Clang: the compilers whose
// __attribute__((target("..."))) lets one translation unit hold AVX2, AVX-512 and portable
// versions of a kernel without compiling the whole program for the highest ISA; the kernel
// matrices pick a path at run time (qtl/kernel/common/cpu_features.hpp). Elsewhere only the portable
// kernels compile.
//
//   QTL_TARGET_AVX2          AVX2 + FMA + F16C (Haswell and later, Zen)
//   QTL_TARGET_AVX2_POPCNT   the same with POPCNT (the VQ kernels' bit counts)
//   QTL_TARGET_AVXVNNI       AVX2 with the VEX-encoded VNNI dot products (Alder Lake+, Zen 5)
//   QTL_TARGET_AVX512        AVX-512 F/BW/VL/DQ (Skylake-SP and later, Zen 4)
//   QTL_TARGET_AVX512VNNI    the same with VNNI (vpdpbusd)
//   QTL_TARGET_AVX512VBMI    the same with VBMI (vpermb)
//   QTL_TARGET_AMX           AVX-512 VNNI with AMX-TILE and AMX-INT8 (Sapphire Rapids and later)
//
// QTL_KERNEL_INLINE marks the small helpers of the kernels (loads, lookups, one step of a
// loop): they must be inlined into their target-attributed caller, whose target must include
// theirs (GCC and Clang refuse to inline a function with more ISA features than its caller).
#pragma once

#if (defined(__GNUC__) || defined(__clang__)) && defined(__x86_64__)
#define QTL_X86_64 1
#define QTL_TARGET_AVX2 __attribute__((target("avx2,fma,f16c")))
#define QTL_TARGET_AVX2_POPCNT __attribute__((target("avx2,fma,f16c,popcnt")))
#define QTL_TARGET_AVXVNNI __attribute__((target("avx2,fma,f16c,avxvnni")))
#define QTL_TARGET_AVX512 __attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq")))
#define QTL_TARGET_AVX512VNNI \
  __attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")))
#define QTL_TARGET_AVX512VBMI \
  __attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vbmi")))
#define QTL_TARGET_AVX512VNNI_VBMI \
  __attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx512vbmi")))
#define QTL_TARGET_AMX \
  __attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,amx-tile,amx-int8")))
#ifndef QTL_KERNEL_INLINE
#define QTL_KERNEL_INLINE inline __attribute__((always_inline))
#endif
#endif
