// The small quantize_model_file job the GGUF tests share: the bundled llama2.c model into a Q4_0
// file by RTN, calibration stories 0-3, and (brief_finetune) a dozen steps of norm-gain tuning
// on one thread: enough to move the gains, cheap under the sanitizers.
#pragma once

#include "data_path.hpp"
#include <qtl/model/quantize_file.hpp>

#include <filesystem>

namespace qtl::test {

inline model::QuantizeFileOptions q4_0_file_options(const std::filesystem::path& output) {
  model::QuantizeFileOptions o;
  o.input = io::require_data_file("stories260K/stories260K.bin");
  o.type = "Q4_0";
  o.recipe = "rtn";
  o.calibration_text = io::require_data_file("tinystories_val_dev.txt");
  o.calib_first = 0;
  o.calib_last = 3;
  o.output = output;
  return o;
}

inline void brief_finetune(model::QuantizeFileOptions& o) {
  o.finetune_norms = true;
  o.finetune.iterations = 12;
  o.finetune.batch_sequences = 2;
  o.finetune.learning_rate = 3e-3;
  o.finetune.eval_sequences = 2;
  o.finetune.eval_every = 4;
  o.finetune.threads = 1;
}

}  // namespace qtl::test
