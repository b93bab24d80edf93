// calib_instances.hpp — the calibration steps that do not depend on the quantizer, compiled
// once (the static library qtl_calib_instances, one translation unit) for the examples and
// tests instead of in every translation unit that calibrates.
//
// The damped GPTQ factorization, the low-rank correction's SVD, SmoothQuant, the rotations' QR
// and PB-GPTQ instantiate Eigen factorizations and products that are most of the compile time
// of a TU that calibrates (clang, ASan, -O1: 85 s of CPU for these alone; a recipe TU with them
// took 90-120 s, without them 70-75 s). They are templates on an unused `Deferred = void`
// parameter (qtl/core/types.hpp), so `extern template` declarations keep an including TU from
// compiling them. Include this header before the calib/ and model/ headers that call them; a TU
// that defines QTL_CALIB_INSTANCES before including it compiles them instead.
// Like recipe_instances.hpp, a build-time device of qtl's own programs: the library stays
// header-only, and a program that does not include this compiles everything itself.
#pragma once

#include <qtl/calib/awq.hpp>
#include <qtl/calib/gptq.hpp>
#include <qtl/calib/gptq_partial_binary.hpp>
#include <qtl/calib/hadamard.hpp>
#include <qtl/calib/lowrank.hpp>
#include <qtl/calib/smoothquant.hpp>

#include <cstdint>
#include <span>
#include <string_view>
#include <utility>
#include <vector>

#define QTL_CALIB_PRIMITIVES(P)                                                                    \
  P(double qtl::calib::detail::hessian_loss<void>(qtl::MatrixRef, qtl::MatrixRef,                 \
                                                  const Eigen::MatrixXd&))                         \
  P(qtl::calib::GptqPartialBinaryResult qtl::calib::gptq_partial_binary<void>(                     \
      const qtl::Granularity&, qtl::MatrixRef, const Eigen::MatrixXd&, qtl::PartialBinaryOptions,  \
      qtl::calib::GptqOptions))                                                                    \
  P(qtl::calib::GptqPartialBinaryResult qtl::calib::gptq_partial_binary<void>(                     \
      const qtl::Granularity&, qtl::MatrixRef, const qtl::calib::HessianAccumulator&,              \
      const qtl::PartialBinaryOptions&, const qtl::calib::GptqOptions&))                           \
  P(qtl::calib::ChannelScale qtl::calib::smoothquant_scales<void>(                                 \
      const std::vector<qtl::RowMatrixXf>&, const qtl::calib::LayerStatistics&,                    \
      const qtl::calib::SmoothQuantOptions&))                                                      \
  P(qtl::RowMatrixXf qtl::calib::quantize_activations_int8<void>(qtl::MatrixRef))                  \
  P(qtl::calib::detail::GptqFactor qtl::calib::detail::damped_gptq_factor<void>(                   \
      std::string_view, const Eigen::MatrixXd&, std::span<const qtl::Index>, double,               \
      std::span<const std::pair<qtl::Index, qtl::Index>>, const qtl::calib::GptqOptions&,          \
      qtl::calib::GptqReport&))                                                                    \
  P(qtl::calib::LowRankCorrection qtl::calib::low_rank_correction<void>(                           \
      qtl::MatrixRef, qtl::MatrixRef, const qtl::calib::LayerStatistics&,                          \
      const qtl::calib::LowRankOptions&))                                                          \
  P(qtl::calib::RandomizedHadamard::RandomizedHadamard(qtl::Index, std::uint64_t))

#define QTL_CALIB_PRIMITIVE_EXTERN(decl) extern template decl;
#define QTL_CALIB_PRIMITIVE_DEFINE(decl) template decl;
#if defined(QTL_CALIB_INSTANCES)
QTL_CALIB_PRIMITIVES(QTL_CALIB_PRIMITIVE_DEFINE)
#else
QTL_CALIB_PRIMITIVES(QTL_CALIB_PRIMITIVE_EXTERN)
#endif
