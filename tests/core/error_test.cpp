#include <gtest/gtest.h>
#include <qtl/core/error.hpp>
#include <qtl/core/validate.hpp>

#include <cmath>
#include <limits>
#include <string>

namespace {

std::string message_of(auto&& f) {
  try {
    f();
  } catch (const qtl::Error& e) {
    return e.what();
  }
  return "<no qtl::Error>";
}

TEST(Error, FailConcatenatesArguments) {
  const auto msg = message_of([] { qtl::fail("gptq: weights have ", 96, " columns but H is ", 64, "x", 64); });
  EXPECT_EQ(msg, "gptq: weights have 96 columns but H is 64x64");
}

TEST(Validate, FiniteNamesTheBadEntry) {
  qtl::RowMatrixXf m = qtl::RowMatrixXf::Zero(3, 4);
  m(2, 1) = std::numeric_limits<float>::quiet_NaN();
  const auto msg = message_of([&] { qtl::require_finite("f", "weights", m); });
  EXPECT_NE(msg.find("weights must be finite"), std::string::npos) << msg;
  EXPECT_NE(msg.find("(2, 1)"), std::string::npos) << msg;
  m(2, 1) = std::numeric_limits<float>::infinity();
  EXPECT_THROW(qtl::require_finite("f", "weights", m), qtl::Error);
  m(2, 1) = 0.0f;
  EXPECT_NO_THROW(qtl::require_finite("f", "weights", m));
}

TEST(Validate, ShapeAndRangeMessagesNameExpectedAndActual) {
  const auto shape = message_of([] { qtl::require_shape("g", "x", 3, 4, 3, 5); });
  EXPECT_NE(shape.find("must be 3x5, got 3x4"), std::string::npos) << shape;
  const auto range = message_of([] { qtl::require_range("g", "bits", 9, 2, 8); });
  EXPECT_NE(range.find("bits must be in [2, 8], got 9"), std::string::npos) << range;
  const auto empty = message_of([] { qtl::require_nonempty("g", "weights", 0, 5); });
  EXPECT_NE(empty.find("0x5"), std::string::npos) << empty;
}

}  // namespace
