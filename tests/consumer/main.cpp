// Uses the installed package: quantize a small matrix, pack it, run the reference GEMV.
#include <qtl/qtl.hpp>

#include <cmath>
#include <cstdio>

int main() {
  qtl::RowMatrixXf w(4, 40);
  for (int r = 0; r < w.rows(); ++r)
    for (int c = 0; c < w.cols(); ++c) w(r, c) = std::sin(0.37f * static_cast<float>(r * 40 + c));
  const auto q = qtl::quantize_matrix(qtl::Uniform<4>{}, qtl::PerGroup{16}, w);
  const qtl::RowMatrixXf wq = qtl::dequantize(q);
  const double sqnr = qtl::sqnr_db(w, wq);
  std::printf("consumer: 4-bit SQNR %.2f dB\n", sqnr);
  return sqnr > 15.0 ? 0 : 1;
}
