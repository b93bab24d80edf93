// qtl/model.hpp — whole models: the llama2.c checkpoint reader, the LLaMA-architecture
// Transformer and its tokenizer, evaluation (perplexity, KL), layer-by-layer quantization and
// the named recipes. Pulls in everything below it (calibration and kernels).
#pragma once

#include "qtl/calib.hpp"
#include "qtl/kernels.hpp"
#include "qtl/io/llama2c.hpp"
#include "qtl/model/calibrated_recipe.hpp"
#include "qtl/model/eval.hpp"
#include "qtl/model/partial_binary_linear.hpp"
#include "qtl/model/quantized_linear.hpp"
#include "qtl/model/recipes.hpp"
#include "qtl/model/sequential.hpp"
#include "qtl/model/tokenizer.hpp"
#include "qtl/model/transformer.hpp"
