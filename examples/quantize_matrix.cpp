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
//
// A second table (skip it with --no-families) runs the other quantizer families on the same
// matrices and activations: log2 / log-sqrt2 / power grid, NF4 / FP4, fitted k-means tables
// (per tensor, and per tensor x fp16 scale per group), binary / residual binary / partial
// binary, ternary (absmean, MSE threshold), k-means VQ (D = 2, 4) and QuIP#'s E8P, each with its
// honest bits/weight (codes + scales + tables + codebooks + masks + sparse outliers + padding).
#include <CLI/CLI.hpp>
#include "data_path.hpp"
#include <qtl/io/llama2c.hpp>
#include <qtl/kernels.hpp>
#include <qtl/quant/binary.hpp>
#include <qtl/quant/codebook.hpp>
#include <qtl/quant/e8p.hpp>
#include <qtl/quant/log2.hpp>
#include <qtl/quant/partial_binary.hpp>
#include <qtl/quant/ternary.hpp>
#include <qtl/quant/vector.hpp>

#include <chrono>
#include <cmath>
#include <functional>
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
  if (clip) opt.fit = qtl::FitOptions::searched();
  const auto quantized = qtl::quantize_matrix(q, g, w, opt);
  const qtl::RowMatrixXf wq = qtl::dequantize(quantized);
  return {qtl::bits_per_weight(quantized), qtl::sqnr_db(w, wq), qtl::relative_output_error(w, wq, x),
          w.cast<double>().squaredNorm(), (w - wq).cast<double>().squaredNorm()};
}


// ---- the other quantizer families ---------------------------------------------------------

// One family at one setting: returns (bits/weight, W_hat) for a matrix.
using FamilyMethod = std::function<std::pair<double, qtl::RowMatrixXf>(const qtl::RowMatrixXf&)>;

template <class Q>
FamilyMethod scalar_family(Q q, qtl::Granularity g, qtl::FitOptions fit = {}) {
  return [=](const qtl::RowMatrixXf& w) {
    qtl::QuantizeOptions opt;
    opt.fit = fit;
    const auto m = qtl::quantize_matrix(q, g, w, opt);
    return std::pair{qtl::bits_per_weight(m), qtl::RowMatrixXf(qtl::dequantize(m))};
  };
}

template <class V>
FamilyMethod vector_family(V v, qtl::VQGranularity g) {
  return [=](const qtl::RowMatrixXf& w) {
    const auto m = qtl::quantize_vectors(v, g, w);
    return std::pair{qtl::bits_per_weight(m), qtl::RowMatrixXf(qtl::dequantize(m))};
  };
}

template <int B>
FamilyMethod scaled_codebook_family(qtl::Granularity g) {
  return [=](const qtl::RowMatrixXf& w) {
    const auto f = qtl::fit_scaled_codebook<B>(g, w);
    return std::pair{f.bits_per_weight(), qtl::RowMatrixXf(qtl::dequantize(f.matrix))};
  };
}

template <int B>
FamilyMethod power_grid_family(qtl::Granularity g) {
  return [=](const qtl::RowMatrixXf& w) {
    static const std::vector<float> kGammas = {0.75f, 1.0f, 1.25f, 1.5f, 2.0f, 2.5f};
    const auto f = qtl::fit_power_grid<B>(g, w, {}, kGammas);
    return std::pair{f.bits_per_weight(), qtl::RowMatrixXf(qtl::dequantize(f.matrix))};
  };
}

FamilyMethod partial_binary_family(qtl::SalientStorage storage, double fraction) {
  return [=](const qtl::RowMatrixXf& w) {
    qtl::PartialBinaryOptions opt;
    opt.storage = storage;
    opt.salient_fraction = fraction;
    const auto m = qtl::quantize_partial_binary(qtl::PerGroup{64}, w, opt);
    return std::pair{qtl::bits_per_weight(m), qtl::RowMatrixXf(qtl::dequantize(m))};
  };
}

struct Family {
  std::string name;
  int bits;
  std::string layout;
  FamilyMethod method;
};

std::vector<Family> families() {
  using qtl::PerGroup, qtl::PerRow, qtl::PerTensor;
  constexpr qtl::FitOptions kRefit{.refine_iterations = 2};  // two least-squares refits of the plain fit
  return {
      {"uniform RTN (reference)", 2, "group 64", scalar_family(qtl::Uniform<2>{}, PerGroup{64})},
      {"uniform RTN (reference)", 3, "group 64", scalar_family(qtl::Uniform<3>{}, PerGroup{64})},
      {"uniform RTN (reference)", 4, "group 64", scalar_family(qtl::Uniform<4>{}, PerGroup{64})},
      {"log2", 3, "group 64, scale search", scalar_family(qtl::Log2<3>{}, PerGroup{64}, qtl::FitOptions::searched())},
      {"log2", 4, "group 64, scale search", scalar_family(qtl::Log2<4>{}, PerGroup{64}, qtl::FitOptions::searched())},
      {"log-sqrt2", 3, "group 64, scale search", scalar_family(qtl::Log2<3, qtl::Log2Base::Sqrt2>{}, PerGroup{64}, qtl::FitOptions::searched())},
      {"log-sqrt2", 4, "group 64, scale search", scalar_family(qtl::Log2<4, qtl::Log2Base::Sqrt2>{}, PerGroup{64}, qtl::FitOptions::searched())},
      {"power grid (gamma searched per matrix)", 3, "group 64", power_grid_family<3>(PerGroup{64})},
      {"power grid (gamma searched per matrix)", 4, "group 64", power_grid_family<4>(PerGroup{64})},
      {"NF4", 4, "group 64, LS scale", scalar_family(qtl::NF4{}, PerGroup{64}, kRefit)},
      {"FP4 E2M1", 4, "group 64, LS scale", scalar_family(qtl::FP4{}, PerGroup{64}, kRefit)},
      {"k-means table", 2, "per tensor", scalar_family(qtl::KMeansCodebook<2>{}, PerTensor{})},
      {"k-means table", 3, "per tensor", scalar_family(qtl::KMeansCodebook<3>{}, PerTensor{})},
      {"k-means table", 4, "per tensor", scalar_family(qtl::KMeansCodebook<4>{}, PerTensor{})},
      {"k-means table", 2, "per row", scalar_family(qtl::KMeansCodebook<2>{}, PerRow{})},
      {"k-means table x group scale", 2, "table/tensor, group 64", scaled_codebook_family<2>(PerGroup{64})},
      {"k-means table x group scale", 3, "table/tensor, group 64", scaled_codebook_family<3>(PerGroup{64})},
      {"k-means table x group scale", 4, "table/tensor, group 64", scaled_codebook_family<4>(PerGroup{64})},
      {"binary", 1, "group 64", scalar_family(qtl::Binary<>{}, PerGroup{64})},
      {"binary + mean shift", 1, "group 64", scalar_family(qtl::Binary<true>{}, PerGroup{64})},
      {"residual binary (2 planes)", 2, "group 64, LS refit", scalar_family(qtl::ResidualBinary{}, PerGroup{64}, kRefit)},
      {"partial binary, 5% weights 8-bit (list)", 1, "group 64", partial_binary_family(qtl::SalientStorage::SparseList, 0.05)},
      {"partial binary, 5% channels 8-bit (mask)", 1, "group 64", partial_binary_family(qtl::SalientStorage::ChannelMask, 0.05)},
      {"ternary absmean (BitNet b1.58)", 2, "group 64", scalar_family(qtl::Ternary{qtl::TernaryRule::AbsMean}, PerGroup{64})},
      {"ternary MSE threshold", 2, "group 64", scalar_family(qtl::Ternary{qtl::TernaryRule::MseOptimal}, PerGroup{64})},
      {"VQ D=2, 16 entries", 4, "codebook/tensor", vector_family(qtl::KMeansVQ<2, 4>{}, {})},
      {"VQ D=2, 64 entries", 6, "codebook/tensor", vector_family(qtl::KMeansVQ<2, 6>{}, {})},
      {"VQ D=4, 64 entries", 6, "codebook/tensor", vector_family(qtl::KMeansVQ<4, 6>{}, {})},
      {"VQ D=4, 256 entries", 8, "codebook/tensor", vector_family(qtl::KMeansVQ<4, 8>{}, {})},
      {"E8P (QuIP#, D=8)", 16, "fp16 scale/row", vector_family(qtl::E8P{}, qtl::VQGranularity{1})},
  };
}

void print_families(const qtl::io::Llama2cCheckpoint& ck, const std::vector<qtl::RowMatrixXf>& activations) {
  std::printf("\n## Other quantizer families, all %zu linear matrices together\n\n", ck.linear_names().size());
  std::printf("SQNR over all their weights; relative output error averaged over the matrices, on the same\n"
              "standard-normal activations as above (not real model activations). The bits column is the\n"
              "code or index width; bits/weight counts everything stored.\n\n");
  std::printf("| family | bits | layout | bits/weight | SQNR (dB) | mean rel. output error | time (ms) |\n");
  std::printf("|---|---|---|---|---|---|---|\n");
  const auto names = ck.linear_names();
  for (const auto& f : families()) {
    const auto t0 = std::chrono::steady_clock::now();
    double bits = 0, n = 0, signal = 0, noise = 0, rel = 0;
    for (std::size_t i = 0; i < names.size(); ++i) {
      const qtl::RowMatrixXf w = ck.tensor(names[i]);
      const auto [bpw, wq] = f.method(w);
      bits += bpw * double(w.size());
      n += double(w.size());
      signal += w.cast<double>().squaredNorm();
      noise += (w - wq).cast<double>().squaredNorm();
      rel += qtl::relative_output_error(w, wq, activations[i]);
    }
    const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    std::printf("| %s | %d | %s | %.3f | %.2f | %.4f | %.0f |\n", f.name.c_str(), f.bits, f.layout.c_str(), bits / n,
                10.0 * std::log10(signal / noise), rel / double(names.size()), ms);
    std::fflush(stdout);
  }
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Quantize every weight matrix of a llama2.c model and report bits/weight, SQNR and output error"};
  std::string model_path;
  std::vector<int> bits{2, 3, 4, 8};
  std::vector<int> groups{32, 64, 0};
  bool clip = false;
  int tokens = 256;
  bool no_families = false;
  app.add_option("--model", model_path, "llama2.c checkpoint (default: bundled stories260K)");
  app.add_option("--bits", bits, "bit widths (2..8)")->delimiter(',');
  app.add_option("--groups", groups, "group sizes; 0 = per row")->delimiter(',');
  app.add_flag("--clip", clip, "search the clipping range (importance-free)");
  app.add_option("--tokens", tokens, "random activation vectors for the output error")->check(CLI::Range(1, 1 << 16));
  app.add_flag("--no-families", no_families, "skip the table of the other quantizer families");
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
    std::vector<qtl::RowMatrixXf> activations;
    for (const auto& name : ck.linear_names()) {
      const qtl::RowMatrixXf w = ck.tensor(name);
      qtl::RowMatrixXf x(tokens, w.cols());
      for (auto& v : x.reshaped()) v = normal(rng);
      activations.push_back(x);
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
    if (!no_families) print_families(ck, activations);
  } catch (const qtl::Error& e) {
    std::fprintf(stderr, "quantize_matrix: %s\n", e.what());
    return 1;
  }
  return 0;
}
