// Shared helpers for qtl's tests: deterministic random matrices.
#pragma once

#include <qtl/core/error.hpp>
#include <qtl/core/types.hpp>

#include <random>
#include <string>

namespace qtl::test {

inline RowMatrixXf gaussian(Index rows, Index cols, unsigned seed, float sigma = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, sigma);
  RowMatrixXf m(rows, cols);
  for (auto& v : m.reshaped()) v = normal(rng);
  return m;
}

inline RowMatrixXf uniform_random(Index rows, Index cols, unsigned seed, float lo = -1.0f,
                                  float hi = 1.0f) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(lo, hi);
  RowMatrixXf m(rows, cols);
  for (auto& v : m.reshaped()) v = dist(rng);
  return m;
}

/// The message of the qtl::Error that f() throws, or "<no error>".
inline std::string error_of(const auto& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "<no error>";
}

}  // namespace qtl::test
