// qtl/kernel/kernels_implementation.hpp — the one translation unit that compiles every SIMD
// kernel when the program defines QTL_KERNELS_SEPARATE (see qtl/kernel/common/separate.hpp).
// Include it first and alone in that TU. Without QTL_KERNELS_SEPARATE it only includes the four
// kernel families' public headers (qtl/kernel/uniform.hpp, table.hpp, lut.hpp, vq.hpp).
#pragma once

#if defined(QTL_KERNELS_SEPARATE)
#if defined(QTL_KERNELS_SEEN)
#error "qtl/kernel/kernels_implementation.hpp must be included before any other qtl header of its translation unit"
#endif
#if !defined(QTL_KERNELS_IMPLEMENTATION_UNIFORM) && !defined(QTL_KERNELS_IMPLEMENTATION_TABLE) && \
    !defined(QTL_KERNELS_IMPLEMENTATION_LUT) && !defined(QTL_KERNELS_IMPLEMENTATION_VQ)
#define QTL_KERNELS_IMPLEMENTATION 1  // all four families
#endif
#endif

#include "qtl/kernel/lut.hpp"
#include "qtl/kernel/table.hpp"
#include "qtl/kernel/uniform.hpp"
#include "qtl/kernel/vq.hpp"
