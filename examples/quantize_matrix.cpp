// quantize_matrix — quantize every weight matrix of a real model and report the error.
//
//   quantize_matrix [--model PATH] [--bits 2,3,4,8] [--groups 32,64,0] [--clip]
//
// Reads a llama2.c checkpoint (default: the bundled stories260K), quantizes each linear weight
// matrix with uniform asymmetric RTN at every requested bit width and group size (0 = per row),
// and prints one Markdown row per (tensor, bits, group): bits/weight (codes + fp16 scales +
// zero points), SQNR and the relative output error ||(W - W_hat) X^T|| / ||W X^T||.
// The activations X are standard-normal vectors (no model run is needed), so the relative error
// here weighs every input equally; qtl::model measures errors on real activations.
#include <CLI/CLI.hpp>
#include <qtl/io/data_path.hpp>
#include <qtl/io/llama2c.hpp>
#include <qtl/qtl.hpp>

#include <cmath>
#include <cstdio>
#include <map>
#include <random>
#include <string>
#include <vector>

namespace {

struct Row {
  double bpw = 0, sqnr = 0, rel = 0;
  double signal = 0, noise = 0;  // sum W^2 and sum (W - W_hat)^2, for the summary
};

struct Summary {
  double bits = 0, weights = 0, signal = 0, noise = 0, rel = 0;
  int tensors = 0;
};

template <class Q>
Row evaluate(const Q& q, const qtl::Granularity& g, const qtl::RowMatrixXf& w, const qtl::RowMatrixXf& x,
             bool clip) {
  qtl::QuantizeOptions opt;
  opt.fit.clip_search = clip;
  const auto quantized = qtl::quantize_matrix(q, g, w, opt);
  const qtl::RowMatrixXf wq = qtl::dequantize(quantized);
  return {qtl::bits_per_weight(quantized), qtl::sqnr_db(w, wq), qtl::relative_output_error(w, wq, x),
          w.cast<double>().squaredNorm(), (w - wq).cast<double>().squaredNorm()};
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Quantize every weight matrix of a llama2.c model and report bits/weight, SQNR and output error"};
  std::string model_path;
  std::vector<int> bits{2, 3, 4, 8};
  std::vector<int> groups{32, 64, 0};
  bool clip = false;
  int tokens = 256;
  app.add_option("--model", model_path, "llama2.c checkpoint (default: bundled stories260K)");
  app.add_option("--bits", bits, "bit widths (2..8)")->delimiter(',');
  app.add_option("--groups", groups, "group sizes; 0 = per row")->delimiter(',');
  app.add_flag("--clip", clip, "search the clipping range (importance-free)");
  app.add_option("--tokens", tokens, "random activation vectors for the output error")->check(CLI::Range(1, 1 << 16));
  CLI11_PARSE(app, argc, argv);

  try {
    const auto path = model_path.empty() ? qtl::io::require_data_file("stories260K/stories260K.bin")
                                         : std::filesystem::path(model_path);
    const auto ck = qtl::io::Llama2cCheckpoint::load(path);
    std::printf("| tensor | shape | bits | group | bits/weight | SQNR (dB) | rel. output error |\n");
    std::printf("|---|---|---|---|---|---|---|\n");
    std::map<std::pair<int, int>, Summary> summary;
    std::mt19937 rng(1234);
    std::normal_distribution<float> normal;
    for (const auto& name : ck.linear_names()) {
      const qtl::RowMatrixXf w = ck.tensor(name);
      qtl::RowMatrixXf x(tokens, w.cols());
      for (auto& v : x.reshaped()) v = normal(rng);
      for (int b : bits) {
        for (int g : groups) {
          if (g < 0) qtl::fail("quantize_matrix: group sizes must be >= 0 (0 = per row), got ", g);
          const qtl::Granularity gran = g == 0 ? qtl::Granularity{qtl::PerRow{}} : qtl::Granularity{qtl::PerGroup{g}};
          const Row row = qtl::visit_uniform(b, qtl::Mode::Asymmetric,
                                             [&](auto q) { return evaluate(q, gran, w, x, clip); });
          std::printf("| %s | %lldx%lld | %d | %s | %.3f | %.2f | %.4f |\n", name.c_str(),
                      static_cast<long long>(w.rows()), static_cast<long long>(w.cols()), b,
                      g == 0 ? "row" : std::to_string(g).c_str(), row.bpw, row.sqnr, row.rel);
          auto& s = summary[{b, g}];
          const auto n = static_cast<double>(w.size());
          s.bits += row.bpw * n;
          s.weights += n;
          s.signal += row.signal;
          s.noise += row.noise;
          s.rel += row.rel;
          ++s.tensors;
        }
      }
    }
    std::printf("\nAll %d linear matrices together (SQNR over all their weights, mean relative error):\n\n",
                summary.empty() ? 0 : summary.begin()->second.tensors);
    std::printf("| bits | group | bits/weight | SQNR (dB) | mean rel. output error |\n|---|---|---|---|---|\n");
    for (const auto& [key, s] : summary) {
      std::printf("| %d | %s | %.3f | %.2f | %.4f |\n", key.first,
                  key.second == 0 ? "row" : std::to_string(key.second).c_str(), s.bits / s.weights,
                  10.0 * std::log10(s.signal / s.noise), s.rel / s.tensors);
    }
  } catch (const qtl::Error& e) {
    std::fprintf(stderr, "quantize_matrix: %s\n", e.what());
    return 1;
  }
  return 0;
}
