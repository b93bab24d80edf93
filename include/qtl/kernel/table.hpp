// qtl/kernel/table.hpp — kernel family 2, table-decoded codes (log2 / power grid, NF4, FP4,
// k-means codebooks, binary, residual binary, ternary): TableKernelMatrix.
//
// The public header of the family; it includes qtl/kernel/table/kernel_matrix.hpp (usage, the
// fp32 and int8 modes and their accuracy bounds are documented there). The family's folder
// qtl/kernel/table/ holds:
//   kernel_matrix.hpp             TableKernelMatrix: repacks once, picks the ISA path (its int8
//                                 mode runs on the uniform family's kernels)
//   layout.hpp                    the plain view the kernels read; repack.hpp builds it from a
//                                 TablePackedMatrix
//   portable.hpp, avx2.hpp, avx512.hpp   the per-ISA kernels, plain data only
//   reference.hpp                 the scalar reference over the table format
//   reference_partial_binary.hpp  the reference of a packed partial-binary matrix (the table
//                                 reference over its binary part plus the corrections)
// What the four families share is in qtl/kernel/common/.
#pragma once

#include "qtl/kernel/table/kernel_matrix.hpp"
