// The real stories260K model, its tokenizer and the TinyStories dev text, loaded once per test
// process, with helpers to cut calibration sequences and evaluation slices.
#pragma once

#include "data_path.hpp"
#include <qtl/model/eval.hpp>
#include <qtl/model/tokenizer.hpp>
#include <qtl/model/transformer.hpp>

#include <algorithm>
#include <string>
#include <vector>

namespace qtl::test {

namespace m = qtl::model;

struct Fixture {
  m::Transformer fp32 = m::Transformer::load(qtl::io::require_data_file("stories260K/stories260K.bin"));
  m::Tokenizer tokenizer = m::Tokenizer::load(qtl::io::require_data_file("stories260K/tok512.bin"));
  std::vector<std::string> stories = m::load_stories(qtl::io::require_data_file("tinystories_val_dev.txt"));

  std::vector<std::vector<int>> calibration(int first, int count) const {
    std::vector<std::vector<int>> out;
    for (int i = first; i < first + count; ++i) {
      auto ids = m::encode_story(tokenizer, stories[static_cast<std::size_t>(i)], fp32.config().seq_len).ids;
      ids.resize(std::min<std::size_t>(ids.size(), static_cast<std::size_t>(fp32.config().seq_len)));
      out.push_back(std::move(ids));
    }
    return out;
  }
  std::vector<std::string> eval_slice(int first, int count) const {
    return {stories.begin() + first, stories.begin() + first + count};
  }
};

inline const Fixture& fixture() {
  static const Fixture f;
  return f;
}

}  // namespace qtl::test
