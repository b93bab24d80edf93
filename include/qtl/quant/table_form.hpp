// qtl/quant/table_form.hpp — the two forms of a <= 4-bit quantizer's 16-entry decode table.
//
// qtl/quant/decode_table.hpp states the contract (ScaledShared: one fp16 scale per group times
// a table shared by the matrix; PerSet: 2^bits fp16 entries per group). The enum lives here on
// its own because the table kernels (qtl/kernel/table/*.hpp) branch on it: plain C++, no Eigen.
#pragma once

namespace qtl {

enum class TableForm { ScaledShared, PerSet };

}  // namespace qtl
