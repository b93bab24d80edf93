#include <gtest/gtest.h>
#include <qtl/quant/partial_binary.hpp>
#include <qtl/kernel/table/reference_partial_binary.hpp>

#include <functional>
#include <limits>
#include <string>

#include "quant/family_test_util.hpp"
#include "test_util.hpp"

namespace {

using qtl::SalientStorage;

TEST(PartialBinary, SparseListKeepsTheLargestWeightsAndHelps) {
  auto w = qtl::test::gaussian(16, 96, 3, 0.05f);
  w(2, 5) = 1.0f;  // outliers must be selected
  w(9, 40) = -2.0f;
  qtl::PartialBinaryOptions opt;
  opt.salient_fraction = 0.02;
  const auto m = qtl::quantize_partial_binary(qtl::PerGroup{32}, w, opt);
  EXPECT_EQ(m.salient_count(), static_cast<std::size_t>(std::llround(0.02 * 16 * 96)));
  const qtl::RowMatrixXf wh = qtl::dequantize(m);
  // salient entries are nearly exact (8-bit residual), the others are the binary part
  EXPECT_NEAR(wh(2, 5), 1.0f, 2e-2);
  EXPECT_NEAR(wh(9, 40), -2.0f, 2e-2);
  const auto plain = qtl::quantize_matrix(qtl::Binary<>{}, qtl::PerGroup{32}, w);
  EXPECT_LT((w - wh).squaredNorm(), 0.7 * (w - qtl::dequantize(plain)).squaredNorm());
  // alphas come from the non-salient weights: the group with the outlier keeps a small alpha
  EXPECT_LT(m.binary.params_at(2, 5).scale, 0.1f);
  EXPECT_GT(plain.params_at(2, 5).scale, m.binary.params_at(2, 5).scale);
  const double n = 16.0 * 96;
  const double expected = (n + 16.0 * 16 * 3 + 16.0 * 16 + 24.0 * m.salient_count() + 32.0 * 17) / n;
  EXPECT_DOUBLE_EQ(qtl::bits_per_weight(m), expected);
}

TEST(PartialBinary, ChannelMaskSelectsImportantChannels) {
  const auto w = qtl::test::gaussian(24, 64, 4, 0.05f);
  qtl::PartialBinaryOptions opt;
  opt.storage = SalientStorage::ChannelMask;
  opt.salient_fraction = 4.0 / 64;
  opt.column_importance = qtl::VectorXf::Ones(64);
  opt.column_importance[7] = opt.column_importance[50] = 1000.0f;
  const auto m = qtl::quantize_partial_binary(qtl::PerRow{}, w, opt);
  ASSERT_EQ(m.channels.size(), 4u);
  EXPECT_NE(std::find(m.channels.begin(), m.channels.end(), 7), m.channels.end());
  EXPECT_NE(std::find(m.channels.begin(), m.channels.end(), 50), m.channels.end());
  EXPECT_EQ(m.values.size(), 24u * 4);
  const qtl::RowMatrixXf wh = qtl::dequantize(m);
  for (int r = 0; r < 24; ++r) EXPECT_NEAR(wh(r, 7), w(r, 7), 0.01f);
  EXPECT_DOUBLE_EQ(qtl::bits_per_weight(m), (24.0 * 64 + 16.0 * 24 + 16.0 * 24 + 64 + 8.0 * 96) / (24.0 * 64));
}

TEST(PartialBinary, PacksRoundTripsAndGemvEqualsDequantizedProduct) {
  for (auto storage : {SalientStorage::SparseList, SalientStorage::ChannelMask}) {
    const auto w = qtl::test::gaussian(10, 70, 5, 0.05f);
    qtl::PartialBinaryOptions opt;
    opt.storage = storage;
    opt.salient_fraction = 0.1;
    const auto m = qtl::quantize_partial_binary(qtl::PerGroup{32}, w, opt);
    const auto p = qtl::pack_partial_binary(m);
    EXPECT_EQ(qtl::unpack_partial_binary(p), m);
    const qtl::VectorXf x = qtl::test::gaussian(70, 1, 6);
    const Eigen::VectorXd ref = qtl::dequantize(m).cast<double>() * x.cast<double>();
    const qtl::VectorXf y = qtl::gemv_partial_binary_reference(p, x);
    for (int r = 0; r < 10; ++r) EXPECT_NEAR(y[r], ref[r], 1e-5 * (1 + std::fabs(ref[r])));
    // packed bytes: signs padded to 32-code blocks, alphas, the shared {-1, +1} table, row
    // scales, and the list (offsets, columns, values) or the mask (bytes) with its values
    const double nnz = double(m.values.size());
    const double extra = storage == SalientStorage::SparseList ? 32.0 * 11 + 16.0 * nnz + 8.0 * nnz : 8.0 * 9 + 8.0 * nnz;
    EXPECT_DOUBLE_EQ(p.storage_bits_per_weight(), (10.0 * 96 + 16.0 * 30 + 512 + 16.0 * 10 + extra) / 700.0);
  }
}

TEST(PartialBinary, BadInput) {
  const auto w = qtl::test::gaussian(4, 8, 1);
  qtl::PartialBinaryOptions opt;
  opt.salient_fraction = 1.0;
  EXPECT_THROW((void)qtl::quantize_partial_binary(qtl::PerRow{}, w, opt), qtl::Error);
  opt.salient_fraction = -0.1;
  EXPECT_THROW((void)qtl::quantize_partial_binary(qtl::PerRow{}, w, opt), qtl::Error);
  opt.salient_fraction = std::numeric_limits<double>::quiet_NaN();
  EXPECT_THROW((void)qtl::quantize_partial_binary(qtl::PerRow{}, w, opt), qtl::Error);
  opt = {};
  qtl::RowMatrixXf bad = w;
  bad(0, 0) = std::numeric_limits<float>::infinity();
  EXPECT_THROW((void)qtl::quantize_partial_binary(qtl::PerRow{}, bad, opt), qtl::Error);
  opt.column_importance = qtl::VectorXf::Ones(7);
  EXPECT_THROW((void)qtl::quantize_partial_binary(qtl::PerRow{}, w, opt), qtl::Error);
  EXPECT_THROW((void)qtl::quantize_partial_binary(qtl::PerRow{}, qtl::RowMatrixXf(0, 3), {}), qtl::Error);
}

// A matrix built by hand or read from elsewhere is checked before any of its lists is read:
// each corruption is an error that names the offending value, from every entry point.
void expect_rejected(const qtl::PartialBinaryMatrix& bad, const std::string& names) {
  for (const auto& call : std::vector<std::function<void()>>{
           [&] { (void)qtl::dequantize(bad); }, [&] { (void)qtl::pack_partial_binary(bad); },
           [&] { (void)qtl::bits_per_weight(bad); }}) {
    try {
      call();
      ADD_FAILURE() << "accepted a matrix with " << names;
    } catch (const qtl::Error& e) {
      EXPECT_NE(std::string(e.what()).find(names), std::string::npos) << e.what();
    }
  }
}

TEST(PartialBinary, MalformedMatricesAreErrors) {
  const auto w = qtl::test::gaussian(6, 40, 8, 0.05f);
  qtl::PartialBinaryOptions opt;
  opt.salient_fraction = 0.1;
  const auto list = qtl::quantize_partial_binary(qtl::PerGroup{16}, w, opt);
  ASSERT_GT(list.row_offsets[3], list.row_offsets[2]);  // row 2 has an entry
  opt.storage = SalientStorage::ChannelMask;
  const auto mask = qtl::quantize_partial_binary(qtl::PerGroup{16}, w, opt);
  ASSERT_EQ(mask.channels.size(), 4u);
  EXPECT_NO_THROW(qtl::check_partial_binary("t", list));
  EXPECT_NO_THROW(qtl::check_partial_binary("t", mask));

  auto bad = list;
  bad.columns[bad.row_offsets[2]] = 40;
  expect_rejected(bad, "column index 40 of row 2");
  bad = list;
  bad.row_offsets.pop_back();
  expect_rejected(bad, "6 row offsets for 6 rows");
  bad = list;
  bad.row_offsets[3] = bad.row_offsets[2] - 1;
  expect_rejected(bad, "row offsets decrease at row 2");
  bad = list;
  bad.values.pop_back();
  expect_rejected(bad, "values");
  std::size_t two = 0;  // a row with two entries or more
  while (two < 6 && list.row_offsets[two + 1] - list.row_offsets[two] < 2) ++two;
  ASSERT_LT(two, 6u);
  bad = list;
  std::swap(bad.columns[bad.row_offsets[two]], bad.columns[bad.row_offsets[two + 1] - 1]);
  expect_rejected(bad, "column indices of row " + std::to_string(two) + " are not ascending");
  bad = list;
  bad.row_scales[4] = std::numeric_limits<float>::quiet_NaN();
  expect_rejected(bad, "of row 4");
  bad = list;
  bad.row_scales.pop_back();
  expect_rejected(bad, "5 row scales for 6 rows");
  bad = list;
  bad.binary.codes.pop_back();
  expect_rejected(bad, "239 codes");

  bad = mask;
  bad.channels.back() = 40;
  expect_rejected(bad, "salient channel 40");
  bad = mask;
  bad.channels[1] = bad.channels[0];
  expect_rejected(bad, "not ascending");
  bad = mask;
  bad.values.resize(bad.values.size() + 1);
  expect_rejected(bad, "25 values for 6 rows x 4 salient channels");
  bad = mask;
  bad.row_offsets = list.row_offsets;
  expect_rejected(bad, "no sparse list");

  // the packed form: a mask bit past the columns, a mask of the wrong size, a broken list
  auto packed = qtl::pack_partial_binary(mask);
  packed.channel_mask.back() = static_cast<std::uint8_t>(packed.channel_mask.back() | 0x80);  // bit 47
  const qtl::VectorXf x = qtl::VectorXf::Ones(40);
  EXPECT_THROW((void)qtl::unpack_partial_binary(packed), qtl::Error);
  EXPECT_THROW((void)qtl::gemv_partial_binary_reference(packed, x), qtl::Error);
  packed.channel_mask.pop_back();
  EXPECT_THROW((void)qtl::unpack_partial_binary(packed), qtl::Error);
  auto packed_list = qtl::pack_partial_binary(list);
  packed_list.columns[0] = 1000;
  EXPECT_THROW((void)qtl::unpack_partial_binary(packed_list), qtl::Error);
  EXPECT_THROW((void)qtl::gemv_partial_binary_reference(packed_list, x), qtl::Error);
}

}  // namespace
