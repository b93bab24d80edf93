// qtl/kernel/lut.hpp — kernel family 3, bit-plane lookup tables for 1-bit and ternary weights
// (T-MAC / bitnet.cpp TL style): LutKernelMatrix.
//
// The public header of the family; it includes qtl/kernel/lut/kernel_matrix.hpp (accepted
// weights, usage and the accuracy bound are documented there). The family's folder
// qtl/kernel/lut/ holds:
//   kernel_matrix.hpp       LutKernelMatrix: repacks a 1-bit / ternary table-packed or a base-3
//                           ternary matrix once, picks the ISA path
//   layout.hpp              the bit-plane layout and the per-token activation tables
//   portable.hpp, avx2.hpp, avx512.hpp   the per-ISA kernels, plain data only
//   avx512vnni.hpp          the GEMM of 4+ tokens on vpdpbusd (bit planes decoded to bytes)
//   reference_ternary.hpp   the scalar reference over base-3 packed ternary weights
// Activations are quantized as the uniform family's (qtl/kernel/uniform/quantize_activations.hpp);
// what the four families share is in qtl/kernel/common/.
#pragma once

#include "qtl/kernel/lut/kernel_matrix.hpp"
