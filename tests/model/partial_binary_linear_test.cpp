// PartialBinaryLinear (qtl/model/partial_binary_linear.hpp): the binary part on the packed
// kernels plus the sparse correction equals the dequantized matrix's product.
#include <gtest/gtest.h>
#include <qtl/model/partial_binary_linear.hpp>

#include <cmath>
#include <string>

#include "test_util.hpp"

namespace {

namespace m = qtl::model;
using qtl::Index;

double max_rel(const qtl::RowMatrixXf& y, const qtl::RowMatrixXf& ref) {
  return (y - ref).cwiseAbs().maxCoeff() / ref.cwiseAbs().maxCoeff();
}

TEST(PartialBinaryLinear, MatchesTheDequantizedMatrixForBothStorages) {
  const qtl::RowMatrixXf w = qtl::test::gaussian(37, 70, 11, 0.05f);
  const qtl::RowMatrixXf x = qtl::test::gaussian(5, 70, 12);
  for (auto storage : {qtl::SalientStorage::SparseList, qtl::SalientStorage::ChannelMask}) {
    qtl::PartialBinaryOptions pb;
    pb.salient_fraction = 0.1;
    pb.storage = storage;
    const auto pm = qtl::quantize_partial_binary(qtl::PerGroup{32}, w, pb);
    ASSERT_GT(pm.salient_count(), 0u);
    const qtl::RowMatrixXf ref = x * qtl::dequantize(pm).transpose();
    const m::PartialBinaryLinear op(pm);
    EXPECT_EQ(op.in_features(), 70);
    EXPECT_EQ(op.out_features(), 37);
    EXPECT_DOUBLE_EQ(op.bits_per_weight(), qtl::bits_per_weight(pm));
    const qtl::RowMatrixXf y = op.forward(x);
    EXPECT_LT(max_rel(y, ref), 1e-5) << static_cast<int>(storage);
    // The correction matters: the binary part alone is far from the product.
    EXPECT_GT(max_rel(op.binary().forward(x), ref), 1e-2);
    const auto copy = op.clone();
    EXPECT_EQ(copy->forward(x), y);
    // Int8 activations: the binary part runs on the bit-plane LUT kernel.
    const m::PartialBinaryLinear op8(pm, {.activations = qtl::kernel::ActivationMode::Int8, .threads = 2});
    EXPECT_NE(op8.describe().find("LUT"), std::string::npos) << op8.describe();
    EXPECT_LT(max_rel(op8.forward(x), ref), 0.03);
    EXPECT_THROW((void)op.forward(qtl::RowMatrixXf::Zero(2, 69)), qtl::Error);
    qtl::RowMatrixXf bad = x;
    bad(1, 3) = std::nanf("");
    EXPECT_THROW((void)op.forward(bad), qtl::Error);
  }
}

TEST(PartialBinaryLinear, RejectsAMalformedMatrix) {
  const qtl::RowMatrixXf w = qtl::test::gaussian(8, 40, 13, 0.05f);
  qtl::PartialBinaryOptions pb;
  pb.salient_fraction = 0.1;
  auto pm = qtl::quantize_partial_binary(qtl::PerGroup{16}, w, pb);
  pm.columns.back() = 4000;  // would be read out of range by the sparse pass
  try {
    const m::PartialBinaryLinear op(pm);
    ADD_FAILURE() << "accepted column index 4000";
  } catch (const qtl::Error& e) {
    EXPECT_NE(std::string(e.what()).find("PartialBinaryLinear: column index 4000"), std::string::npos) << e.what();
  }
}

}  // namespace
