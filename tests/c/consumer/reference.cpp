// The C++ API's result for main.c's first check: RTN into 4-bit uniform codes, groups of 32,
// packed and multiplied by the uniform kernel with fp32 activations.
#include <qtl/format/packed_matrix.hpp>
#include <qtl/kernel/uniform.hpp>
#include <qtl/quant/quantize_matrix.hpp>
#include <qtl/quant/uniform.hpp>

#include <cstddef>
#include <cstring>

extern "C" int reference_rtn_uniform4_gemv(const float* w, std::size_t rows, std::size_t cols, const float* x,
                                           float* y) {
  try {
    const auto wm = Eigen::Map<const qtl::RowMatrixXf>(w, static_cast<qtl::Index>(rows), static_cast<qtl::Index>(cols));
    qtl::QuantizeOptions qo;
    const auto q = qtl::quantize_matrix(qtl::Uniform<4>{}, qtl::PerGroup{32}, wm, qo);
    const qtl::kernel::UniformKernelMatrix k(qtl::pack(q), qtl::kernel::ActivationMode::Fp32);
    k.gemv(x, y, 1);
    return 0;
  } catch (const qtl::Error&) {
    return 1;
  }
}
