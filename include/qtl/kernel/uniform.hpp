// qtl/kernel/uniform.hpp — kernel family 1, uniform (integer-affine) codes: UniformKernelMatrix.
//
// The public header of the family; it includes qtl/kernel/uniform/kernel_matrix.hpp (usage,
// activation modes and accuracy bounds are documented there). The family's folder
// qtl/kernel/uniform/ holds:
//   kernel_matrix.hpp          UniformKernelMatrix: repacks a PackedMatrix once, picks the ISA path
//   layout.hpp                 the 16-row tile layout the kernels read, and its repack
//   quantize_activations.hpp   fp32 / int8 activations in that layout (ActivationMode; the LUT
//                              family and the table family's int8 mode use them too)
//   portable.hpp, avx2.hpp (+ avx2_body.inc, the AVX2 and AVX-VNNI code), avx512.hpp
//                              the per-ISA kernels, plain data only
//   amx.hpp                    the int8 GEMM (>= 32 tokens) on AMX tiles, on the Avx512Vnni path
//                              where the CPU and the OS allow it
//   amx_activations.hpp        its activation layout, blocking constants and scratch size
//   reference.hpp, matmul.hpp  the scalar reference over packed codes, and its checked entry
//                              points gemv_reference / gemm_reference (part of qtl/quant.hpp)
// What the four families share is in qtl/kernel/common/.
#pragma once

#include "qtl/kernel/uniform/kernel_matrix.hpp"
