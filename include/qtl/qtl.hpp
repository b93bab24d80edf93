// qtl/qtl.hpp — the umbrella header: everything a user of qtl needs.
#pragma once

#include "qtl/core/error.hpp"
#include "qtl/core/types.hpp"
#include "qtl/core/validate.hpp"
#include "qtl/format/blocks.hpp"
#include "qtl/format/packed_matrix.hpp"
#include "qtl/kernel/matmul.hpp"
#include "qtl/kernel/reference.hpp"
#include "qtl/kernel/uniform_kernel_matrix.hpp"
#include "qtl/quant/concepts.hpp"
#include "qtl/quant/granularity.hpp"
#include "qtl/quant/metrics.hpp"
#include "qtl/quant/quantize_matrix.hpp"
#include "qtl/quant/uniform.hpp"
