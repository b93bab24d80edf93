// qtl/kernels.hpp — the fast kernels: the four kernel families' matrices (uniform, table, LUT,
// VQ) with their SIMD paths chosen at run time, on top of the quantization layer (qtl/quant.hpp).
// Compiling every SIMD path is what makes this header expensive; a program can compile them
// once instead (QTL_KERNELS_SEPARATE, see qtl/kernel/separate.hpp).
#pragma once

#include "qtl/quant.hpp"
#include "qtl/kernel/cpu_features.hpp"
#include "qtl/kernel/lut_kernel_matrix.hpp"
#include "qtl/kernel/quantize_activations.hpp"
#include "qtl/kernel/table_kernel_matrix.hpp"
#include "qtl/kernel/uniform_kernel_matrix.hpp"
#include "qtl/kernel/vq_kernel_matrix.hpp"
