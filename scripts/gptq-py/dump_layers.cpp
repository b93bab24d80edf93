// Writes every linear layer of the bundled model with the Hessian of its fp32 inputs on
// calibration stories 0-249, and qtl's 3-bit group-32 GPTQ of it (default group fit, and
// gptq.py's group-fit order), for scripts/gptq-py/compare.py to run gptq.py's algorithm on the
// same weights and Hessians. Built and run by scripts/gptq-py/compare.sh; not part of the build.
//
//   dump_layers OUT_DIR
// OUT_DIR/NAME.w (f32 rows x cols), NAME.h (f64 cols x cols), NAME.qtl / NAME.qtlpy (f32 Ŵ),
// each preceded by two int64s (rows, cols); OUT_DIR/layers.txt lists the names.
#include <qtl/calib/gptq.hpp>
#include <qtl/calib/hessian.hpp>
#include "data_path.hpp"  // examples/: the bundled data
#include <qtl/model/eval.hpp>
#include <qtl/model/tokenizer.hpp>
#include <qtl/model/transformer.hpp>
#include <qtl/quant/uniform.hpp>

#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <string>

namespace {

template <class M>
void write(const std::filesystem::path& p, const M& m) {
  std::ofstream f(p, std::ios::binary);
  const std::int64_t shape[2] = {m.rows(), m.cols()};
  f.write(reinterpret_cast<const char*>(shape), sizeof shape);
  // Row-major values.
  for (qtl::Index r = 0; r < m.rows(); ++r) {
    for (qtl::Index c = 0; c < m.cols(); ++c) {
      const auto v = m(r, c);
      f.write(reinterpret_cast<const char*>(&v), sizeof v);
    }
  }
  if (!f) qtl::fail("dump_layers: cannot write ", p.string());
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::cerr << "usage: dump_layers OUT_DIR\n";
    return 2;
  }
  try {
    namespace m = qtl::model;
    const std::filesystem::path out = argv[1];
    std::filesystem::create_directories(out);
    const auto fp32 = m::Transformer::load(qtl::io::require_data_file("stories260K/stories260K.bin"));
    const auto tok = m::Tokenizer::load(qtl::io::require_data_file("stories260K/tok512.bin"));
    const auto stories = m::load_stories(qtl::io::require_data_file("tinystories_val_dev.txt"));
    std::map<std::string, qtl::calib::HessianAccumulator> stats;
    for (const auto& n : fp32.linear_names()) stats.emplace(n, qtl::calib::HessianAccumulator(fp32.linear(n).in_features()));
    m::Transformer observed = fp32;
    observed.set_observer([&](std::string_view name, qtl::MatrixRef x) { stats.at(std::string(name)).add_batch(x); });
    for (int s = 0; s <= 249; ++s) {
      auto ids = m::encode_story(tok, stories[static_cast<std::size_t>(s)], fp32.config().seq_len).ids;
      ids.resize(std::min<std::size_t>(ids.size(), static_cast<std::size_t>(fp32.config().seq_len)));
      (void)observed.forward(ids);
    }
    std::ofstream names(out / "layers.txt");
    for (const auto& n : fp32.linear_names()) {
      const auto& w = dynamic_cast<const m::DenseLinear&>(fp32.linear(n)).weight();
      const Eigen::MatrixXd h = stats.at(n).hessian();
      qtl::calib::GptqOptions opt;  // 1% damping, blocks of 128, min-max grid: gptq.py's defaults
      const auto a = qtl::calib::gptq(qtl::Uniform<3>{}, qtl::PerGroup{32}, w, h, opt);
      opt.gptq_py_group_fit = true;
      const auto b = qtl::calib::gptq(qtl::Uniform<3>{}, qtl::PerGroup{32}, w, h, opt);
      write(out / (n + ".w"), w);
      write(out / (n + ".h"), h);
      write(out / (n + ".qtl"), qtl::dequantize(a.matrix));
      write(out / (n + ".qtlpy"), qtl::dequantize(b.matrix));
      names << n << '\n';
    }
    std::cout << "dump_layers: " << fp32.linear_names().size() << " layers, " << stats.begin()->second.tokens()
              << " calibration tokens, into " << out.string() << '\n';
  } catch (const std::exception& e) {
    std::cerr << "dump_layers: " << e.what() << '\n';
    return 1;
  }
  return 0;
}
