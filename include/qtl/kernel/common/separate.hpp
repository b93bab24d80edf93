// qtl/kernel/common/separate.hpp — compiling the SIMD kernels once per program instead of once
// per translation unit (an option; the default stays header-only).
//
// Every translation unit that includes a kernel family's matrix header (uniform, table, LUT,
// VQ) normally compiles all of that family's SIMD paths: about 0.9 MB of machine code and most
// of the TU's compile time, repeated in every TU. A program that defines QTL_KERNELS_SEPARATE
// everywhere (e.g. -DQTL_KERNELS_SEPARATE) sees only declarations of the four path-selection
// functions (uniform_tiles_function, table_tiles_function, lut_tiles_function,
// vq_kernel_functions, plus the LUT activation-table builder) and of the portable xsimd kernels
// (uniform_tiles_portable, ...: the kernel-matrix classes name them as their fallback, so a TU
// that only declared the x86 paths still compiled every portable instantiation, ~15 s of a
// sanitizer build per TU), and exactly one TU of it
// compiles their definitions by including qtl/kernel/kernels_implementation.hpp first:
//
//   // qtl_kernels.cpp, compiled with the same -DQTL_KERNELS_SEPARATE as the rest
//   #include <qtl/kernel/kernels_implementation.hpp>
//
// or, to compile the families in parallel, one TU per family that defines one of
// QTL_KERNELS_IMPLEMENTATION_UNIFORM / _TABLE / _LUT / _VQ before including it.
// (CMake: qtl's own tests, examples and benchmarks link the static library qtl_kernels built
// that way.) Results are identical either way: the same functions run, only where they are
// compiled changes. Mixing TUs with and without QTL_KERNELS_SEPARATE in one program is not
// supported.
#pragma once

#if defined(QTL_KERNELS_SEPARATE)
#define QTL_KERNEL_ENTRY
#if defined(QTL_KERNELS_IMPLEMENTATION)
#define QTL_KERNELS_IMPLEMENTATION_UNIFORM 1
#define QTL_KERNELS_IMPLEMENTATION_TABLE 1
#define QTL_KERNELS_IMPLEMENTATION_LUT 1
#define QTL_KERNELS_IMPLEMENTATION_VQ 1
#endif
#define QTL_KERNELS_SEEN 1
// A family's path-selection functions are only declared unless this TU compiles that family.
#if !defined(QTL_KERNELS_IMPLEMENTATION_UNIFORM)
#define QTL_KERNELS_DECLARE_ONLY_UNIFORM 1
#endif
#if !defined(QTL_KERNELS_IMPLEMENTATION_TABLE)
#define QTL_KERNELS_DECLARE_ONLY_TABLE 1
#endif
#if !defined(QTL_KERNELS_IMPLEMENTATION_LUT)
#define QTL_KERNELS_DECLARE_ONLY_LUT 1
#endif
#if !defined(QTL_KERNELS_IMPLEMENTATION_VQ)
#define QTL_KERNELS_DECLARE_ONLY_VQ 1
#endif
#else
#define QTL_KERNEL_ENTRY inline
#endif
