// qtl/model.hpp — whole models: llama2.c and GGUF files, the LLaMA-architecture Transformer
// and its tokenizer, evaluation (perplexity, KL), layer-by-layer quantization, the named
// recipes and the recipes into llama.cpp's block types. Pulls in everything below it (calibration and kernels).
#pragma once

#include "qtl/calib.hpp"
#include "qtl/kernels.hpp"
#include "qtl/io/gguf.hpp"
#include "qtl/io/llama2c.hpp"
#include "qtl/model/calibrated_recipe.hpp"
#include "qtl/model/eval.hpp"
#include "qtl/model/finetune.hpp"
#include "qtl/model/ggml_linear.hpp"
#include "qtl/model/ggml_presets.hpp"
#include "qtl/model/ggml_recipe.hpp"
#include "qtl/model/mixed_precision.hpp"
#include "qtl/model/gguf_model.hpp"
#include "qtl/model/partial_binary_linear.hpp"
#include "qtl/model/quantized_linear.hpp"
#include "qtl/model/recipes.hpp"
#include "qtl/model/sequential.hpp"
#include "qtl/model/tokenizer.hpp"
#include "qtl/model/transformer.hpp"
#include "qtl/model/vq_recipe.hpp"
