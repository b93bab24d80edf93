// recipe_instances.hpp — the recipe classes that qtl::model::make_recipe and GgmlRecipe
// instantiate, compiled once for the examples and tests (the static libraries
// qtl_recipe_instances and qtl_ggml_recipe_instances, one translation unit each, built in
// parallel) instead of in every translation unit that includes recipes.hpp or ggml_recipe.hpp.
//
// Include it before qtl/model/recipes.hpp / ggml_recipe.hpp: its `extern template` declarations keep the
// including TU from compiling those classes' member functions (GPTQ, AWQ, rotations, packing
// for every quantizer and bit width: most of a recipes.hpp TU's compile time). A TU that
// defines QTL_RECIPE_INSTANCES_PART=N before including it compiles part N instead (1: make_recipe's
// classes, 2: GgmlRecipe's).
// This is a build-time device of qtl's own programs; the library stays header-only and a
// program that includes recipes.hpp without it compiles everything itself, as before.
#pragma once

#include "calib_instances.hpp"  // first: the calibration steps every recipe shares

#include <qtl/model/calibrated_recipe.hpp>
#include <qtl/model/finetune.hpp>
#include <qtl/model/ggml_recipe.hpp>
#include <qtl/model/quantize_file.hpp>
#include <qtl/model/recipes.hpp>
#include <qtl/model/sequential.hpp>
#include <qtl/quant/codebook.hpp>
#include <qtl/quant/ggml_quantizers.hpp>
#include <qtl/quant/log2.hpp>
#include <qtl/quant/uniform.hpp>

namespace qtl::recipe_instances {
using U2a = Uniform<2, Mode::Asymmetric>;
using U3a = Uniform<3, Mode::Asymmetric>;
using U4a = Uniform<4, Mode::Asymmetric>;
using U5a = Uniform<5, Mode::Asymmetric>;
using U6a = Uniform<6, Mode::Asymmetric>;
using U8a = Uniform<8, Mode::Asymmetric>;
using U2s = Uniform<2, Mode::Symmetric>;
using U3s = Uniform<3, Mode::Symmetric>;
using U4s = Uniform<4, Mode::Symmetric>;
using U5s = Uniform<5, Mode::Symmetric>;
using U6s = Uniform<6, Mode::Symmetric>;
using U8s = Uniform<8, Mode::Symmetric>;
using L2 = Log2<2>;
using L3 = Log2<3>;
using L4 = Log2<4>;
using G4_0 = ggml::GgmlQ4_0;
using G4_1 = ggml::GgmlQ4_1;
using G5_0 = ggml::GgmlQ5_0;
using G5_1 = ggml::GgmlQ5_1;
using G8_0 = ggml::GgmlQ8_0;
using GIQ4 = ggml::GgmlIQ4_NL;
using GT1 = ggml::GgmlTQ1_0;
using GT2 = ggml::GgmlTQ2_0;
}  // namespace qtl::recipe_instances

// Every (recipe class, quantizer) pair recipes() reaches (uniform codes at the packed widths 2,
// 3, 4, 5, 6 and 8; NF4 and log2 tables), and GgmlRecipe's (qtl/model/ggml_recipe.hpp): every solver
// over every ggml policy. Two TUs, one per library: most of a TU's compile time is the Eigen
// code (products, factorizations, SVD) that calibration instantiates once per TU whatever the
// number of quantizers (clang, ASan, -O1: 90 s for a TU of two quantizers, 103 s for eight),
// so a TU per few quantizers paid it eight times over.
#define QTL_RECIPE_MODEL(X)                                                                        \
  X(RtnRecipe, U2a) X(RtnRecipe, U3a) X(RtnRecipe, U4a) X(RtnRecipe, U5a) X(RtnRecipe, U6a)        \
  X(RtnRecipe, U8a) X(RtnRecipe, U2s) X(RtnRecipe, U3s) X(RtnRecipe, U4s) X(RtnRecipe, U5s)        \
  X(RtnRecipe, U6s) X(RtnRecipe, U8s) X(RtnRecipe, NF4) X(RtnRecipe, L2) X(RtnRecipe, L3)          \
  X(RtnRecipe, L4)
#define QTL_RECIPE_MODEL_CALIBRATED(X)                                                             \
  X(CalibratedRecipe, U2a) X(CalibratedRecipe, U3a) X(CalibratedRecipe, U4a)                       \
  X(CalibratedRecipe, U5a) X(CalibratedRecipe, U6a) X(CalibratedRecipe, U8a)                       \
  X(CalibratedRecipe, NF4) X(CalibratedRecipe, L2) X(CalibratedRecipe, L3) X(CalibratedRecipe, L4)
#define QTL_RECIPE_GGML(X)                                                                         \
  X(RtnRecipe, G4_0) X(RtnRecipe, G4_1) X(RtnRecipe, G5_0) X(RtnRecipe, G5_1) X(RtnRecipe, G8_0)   \
  X(RtnRecipe, GIQ4) X(RtnRecipe, GT1) X(RtnRecipe, GT2)
#define QTL_RECIPE_GGML_CALIBRATED(X)                                                              \
  X(CalibratedRecipe, G4_0) X(CalibratedRecipe, G4_1) X(CalibratedRecipe, G5_0)                    \
  X(CalibratedRecipe, G5_1) X(CalibratedRecipe, G8_0) X(CalibratedRecipe, GIQ4)                    \
  X(CalibratedRecipe, GT1) X(CalibratedRecipe, GT2)

#define QTL_RECIPE_EXTERN(R, Q) extern template class qtl::model::R<qtl::recipe_instances::Q>;
#define QTL_RECIPE_DEFINE(R, Q) template class qtl::model::R<qtl::recipe_instances::Q>;
// The calibration pipeline CalibratedRecipe<Q> runs (rotation, AWQ, GPTQ, low rank), also
// compiled once: tests and the C API (qtl/c/) call it for these quantizers without compiling it.
#define QTL_CALIBRATE_GROUP(Q)                                                                     \
  template std::vector<qtl::calib::CalibratedLayer<qtl::recipe_instances::Q>>                      \
  qtl::calib::calibrate_group<qtl::recipe_instances::Q>(                                           \
      const qtl::recipe_instances::Q&, const qtl::Granularity&, const std::vector<qtl::RowMatrixXf>&, \
      const qtl::calib::LayerStatistics&, const qtl::calib::Pipeline&);
#define QTL_CALIBRATE_EXTERN(R, Q) extern QTL_CALIBRATE_GROUP(Q)
#define QTL_CALIBRATE_DEFINE(R, Q) QTL_CALIBRATE_GROUP(Q)

namespace qtl::recipe_instances {
using NF4 = qtl::NF4;
}  // namespace qtl::recipe_instances

// The layer-by-layer driver, compiled once in part 1.
#if !defined(QTL_RECIPE_INSTANCES_PART) || QTL_RECIPE_INSTANCES_PART != 1
extern template qtl::model::Transformer qtl::model::quantize_sequential<void>(
    const qtl::model::Transformer&, std::span<const std::vector<int>>, const qtl::model::Recipe&,
    const qtl::model::SequentialOptions&, qtl::model::SequentialReport*);
#else
template qtl::model::Transformer qtl::model::quantize_sequential<void>(
    const qtl::model::Transformer&, std::span<const std::vector<int>>, const qtl::model::Recipe&,
    const qtl::model::SequentialOptions&, qtl::model::SequentialReport*);
#endif

// End-to-end gain and scale tuning (part 1) and the whole-file quantizer (part 2): every block's forward
// and backward pass, and the GGUF pipeline, compiled once instead of in every program and test
// that calls them.
#if !defined(QTL_RECIPE_INSTANCES_PART) || QTL_RECIPE_INSTANCES_PART != 1
extern template qtl::model::FinetuneReport qtl::model::finetune_model<void>(
    const qtl::model::Transformer&, qtl::model::Transformer&, std::span<const std::vector<int>>,
    const qtl::model::FinetuneOptions&);
extern template qtl::model::FinetuneReport qtl::model::finetune_norms<void>(
    const qtl::model::Transformer&, qtl::model::Transformer&, std::span<const std::vector<int>>,
    const qtl::model::FinetuneOptions&);
#else
template qtl::model::FinetuneReport qtl::model::finetune_model<void>(
    const qtl::model::Transformer&, qtl::model::Transformer&, std::span<const std::vector<int>>,
    const qtl::model::FinetuneOptions&);
template qtl::model::FinetuneReport qtl::model::finetune_norms<void>(
    const qtl::model::Transformer&, qtl::model::Transformer&, std::span<const std::vector<int>>,
    const qtl::model::FinetuneOptions&);
#endif
#if !defined(QTL_RECIPE_INSTANCES_PART) || QTL_RECIPE_INSTANCES_PART != 2
extern template qtl::model::QuantizeFileResult qtl::model::quantize_model_file<void>(
    const qtl::model::QuantizeFileOptions&);
#else
template qtl::model::QuantizeFileResult qtl::model::quantize_model_file<void>(
    const qtl::model::QuantizeFileOptions&);
#endif

// The recipe table and the classes only it builds (part 1), and GgmlRecipe with its K-quant
// GPTQ (part 2): function and class templates only to defer their instantiation
// (qtl/core/types.hpp, "Deferred"), compiled here once.
#if !defined(QTL_RECIPE_INSTANCES_PART) || QTL_RECIPE_INSTANCES_PART != 1
extern template const std::vector<qtl::model::RecipeInfo>& qtl::model::recipes<void>();
extern template std::unique_ptr<qtl::model::Recipe> qtl::model::make_recipe<void>(const qtl::model::RecipeSpec&);
extern template class qtl::model::detail::PartialBinaryRecipe<void>;
extern template class qtl::model::detail::ResidualRotationRecipe<void>;
QTL_RECIPE_MODEL(QTL_RECIPE_EXTERN)
QTL_RECIPE_MODEL_CALIBRATED(QTL_RECIPE_EXTERN)
QTL_RECIPE_MODEL_CALIBRATED(QTL_CALIBRATE_EXTERN)
#endif
#if !defined(QTL_RECIPE_INSTANCES_PART) || QTL_RECIPE_INSTANCES_PART != 2
extern template class qtl::model::BasicGgmlRecipe<void>;
QTL_RECIPE_GGML(QTL_RECIPE_EXTERN)
QTL_RECIPE_GGML_CALIBRATED(QTL_RECIPE_EXTERN)
QTL_RECIPE_GGML_CALIBRATED(QTL_CALIBRATE_EXTERN)
#endif

#if !defined(QTL_RECIPE_INSTANCES_PART)
#elif QTL_RECIPE_INSTANCES_PART == 1
QTL_RECIPE_MODEL(QTL_RECIPE_DEFINE)
QTL_RECIPE_MODEL_CALIBRATED(QTL_RECIPE_DEFINE)
QTL_RECIPE_MODEL_CALIBRATED(QTL_CALIBRATE_DEFINE)
template const std::vector<qtl::model::RecipeInfo>& qtl::model::recipes<void>();
template std::unique_ptr<qtl::model::Recipe> qtl::model::make_recipe<void>(const qtl::model::RecipeSpec&);
template class qtl::model::detail::PartialBinaryRecipe<void>;
template class qtl::model::detail::ResidualRotationRecipe<void>;
#elif QTL_RECIPE_INSTANCES_PART == 2
QTL_RECIPE_GGML(QTL_RECIPE_DEFINE)
QTL_RECIPE_GGML_CALIBRATED(QTL_RECIPE_DEFINE)
QTL_RECIPE_GGML_CALIBRATED(QTL_CALIBRATE_DEFINE)
template class qtl::model::BasicGgmlRecipe<void>;
#endif
