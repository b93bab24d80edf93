// qtl/calib.hpp — calibration: Hessian statistics, GPTQ (and GPTVQ, PB-GPTQ), AWQ,
// SmoothQuant, randomized Hadamard rotations, low-rank compensation and the pipeline that
// composes them, over the quantization layer (qtl/quant.hpp). No kernels, no model.
#pragma once

#include "qtl/quant.hpp"
#include "qtl/calib/awq.hpp"
#include "qtl/calib/gptq.hpp"
#include "qtl/calib/gptq_ggml.hpp"
#include "qtl/calib/gptq_partial_binary.hpp"
#include "qtl/calib/gptvq.hpp"
#include "qtl/calib/hadamard.hpp"
#include "qtl/calib/hessian.hpp"
#include "qtl/calib/lowrank.hpp"
#include "qtl/calib/pipeline.hpp"
#include "qtl/calib/rounding.hpp"
#include "qtl/calib/smoothquant.hpp"
#include "qtl/calib/solver.hpp"
#include "qtl/calib/transform.hpp"
