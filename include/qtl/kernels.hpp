// qtl/kernels.hpp — the fast kernels: the four kernel families' matrices (uniform, table, LUT,
// VQ) with their SIMD paths chosen at run time, on top of the quantization layer (qtl/quant.hpp).
// Compiling every SIMD path is what makes this header expensive; a program can compile them
// once instead (QTL_KERNELS_SEPARATE, see qtl/kernel/common/separate.hpp).
#pragma once

#include "qtl/quant.hpp"
#include "qtl/kernel/common/cpu_features.hpp"
#include "qtl/kernel/lut.hpp"
#include "qtl/kernel/table.hpp"
#include "qtl/kernel/uniform.hpp"
#include "qtl/kernel/uniform/quantize_activations.hpp"
#include "qtl/kernel/vq.hpp"
