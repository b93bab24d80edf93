// Shared helpers for qtl's tests: deterministic random matrices.
#pragma once

#include <qtl/core/types.hpp>

#include <random>

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

}  // namespace qtl::test
