// The bundled stories260K checkpoint, loaded once per test program: the quantizer tests' real
// weights (outlier rows and columns, heavy tails that Gaussian data lacks).
#pragma once

#include <qtl/io/llama2c.hpp>

#include "data_path.hpp"

namespace qtl::test {

inline const io::Llama2cCheckpoint& stories_checkpoint() {
  static const auto ck = io::Llama2cCheckpoint::load(io::require_data_file("stories260K/stories260K.bin"));
  return ck;
}

}  // namespace qtl::test
