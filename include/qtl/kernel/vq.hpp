// qtl/kernel/vq.hpp — kernel family 4, vector-quantized weights (k-means codebooks KMeansVQ<D, B>
// and the E8P lattice codebook; AQLM / VPTQ CPU style): VQKernelMatrix.
//
// The public header of the family; it includes qtl/kernel/vq/kernel_matrix.hpp (strategies, cost
// model and accuracy bounds are documented there). The family's folder qtl/kernel/vq/ holds:
//   kernel_matrix.hpp   VQKernelMatrix: repacks once, picks the ISA path and the strategy
//   layout.hpp          the plain view the kernels read; repack.hpp builds it from a VQPackedMatrix
//   portable.hpp, avx2.hpp, avx512.hpp   the per-ISA kernels, plain data only
//   e8p_codewords.hpp   every E8P codeword as 8 bytes (the AVX2 and plain C++ E8P kernels' table)
//   reference.hpp       the scalar references (k-means codebooks, E8P fp32 and int8) and the checked,
//                       quantizer-generic gemv_vq_reference (part of qtl/quant.hpp)
// What the four families share is in qtl/kernel/common/.
#pragma once

#include "qtl/kernel/vq/kernel_matrix.hpp"
