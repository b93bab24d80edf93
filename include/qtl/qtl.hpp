// qtl/qtl.hpp — the umbrella header: all of qtl. Each layer has its own, cheaper umbrella:
//   qtl/quant.hpp    quantizer policies, packed formats, scalar reference kernels
//   qtl/kernels.hpp  + the SIMD kernel families
//   qtl/calib.hpp    quant + calibration (GPTQ, AWQ, rotations, ...)
//   qtl/model.hpp    everything: models, tokenizer, evaluation, recipes
// README's "Umbrella headers" table gives what each costs to compile.
#pragma once

#include "qtl/model.hpp"
