// The real model's linear layers with their inputs captured from real text: the fp32
// stories260K model run on calibration stories (0..) and on held-out evaluation stories (250..),
// as the data README prescribes (never evaluate on the stories calibrated on).
#pragma once

#include <qtl/calib/hessian.hpp>
#include "data_path.hpp"
#include <qtl/model/eval.hpp>
#include <qtl/model/tokenizer.hpp>
#include <qtl/model/transformer.hpp>

#include <algorithm>
#include <map>
#include <span>
#include <string>
#include <vector>

namespace qtl::test {

struct RealLayer {
  std::string name;
  RowMatrixXf weight;   ///< [out x in]
  RowMatrixXf calib;    ///< inputs on calibration stories [tokens x in]
  RowMatrixXf eval;     ///< inputs on held-out stories [tokens x in]
  calib::HessianAccumulator stats{1};  ///< statistics of `calib`
};

struct RealModel {
  std::vector<RealLayer> layers;  ///< every linear, in checkpoint order
};

namespace detail {
inline std::map<std::string, std::vector<RowMatrixXf>> capture(const model::Transformer& m,
                                                               const model::Tokenizer& tok,
                                                               const std::vector<std::string>& stories,
                                                               int first, int count) {
  std::map<std::string, std::vector<RowMatrixXf>> seen;
  model::Transformer copy = m;
  copy.set_observer([&](std::string_view name, MatrixRef x) { seen[std::string(name)].push_back(x); });
  for (int s = first; s < first + count; ++s) {
    const auto enc = model::encode_story(tok, stories[static_cast<std::size_t>(s)], m.config().seq_len);
    // The last token is only a prediction target: the model reads at most seq_len tokens.
    const std::size_t n = std::min(enc.ids.size(), static_cast<std::size_t>(m.config().seq_len));
    (void)copy.forward(std::span<const int>(enc.ids.data(), n));
  }
  return seen;
}
inline RowMatrixXf stack(const std::vector<RowMatrixXf>& parts) {
  Index n = 0;
  for (const auto& p : parts) n += p.rows();
  RowMatrixXf out(n, parts.front().cols());
  Index r = 0;
  for (const auto& p : parts) {
    out.middleRows(r, p.rows()) = p;
    r += p.rows();
  }
  return out;
}
}  // namespace detail

/// Loaded once per test process: `calib_stories` calibration stories from story 0 and
/// `eval_stories` held-out stories from story 250.
inline const RealModel& real_model(int calib_stories = 16, int eval_stories = 8) {
  static const RealModel cached = [&] {
    const auto m = model::Transformer::load(io::data_path("stories260K/stories260K.bin"));
    const auto tok = model::Tokenizer::load(io::data_path("stories260K/tok512.bin"));
    const auto stories = model::load_stories(io::data_path("tinystories_val_dev.txt"));
    auto calib = detail::capture(m, tok, stories, 0, calib_stories);
    auto eval = detail::capture(m, tok, stories, 250, eval_stories);
    RealModel rm;
    for (const std::string& name : m.linear_names()) {
      RealLayer layer;
      layer.name = name;
      const auto& op = dynamic_cast<const model::DenseLinear&>(m.linear(name));
      layer.weight = op.weight();
      layer.calib = detail::stack(calib.at(name));
      layer.eval = detail::stack(eval.at(name));
      layer.stats = calib::HessianAccumulator(layer.weight.cols());
      layer.stats.add_batch(layer.calib);
      rm.layers.push_back(std::move(layer));
    }
    return rm;
  }();
  return cached;
}

}  // namespace qtl::test
