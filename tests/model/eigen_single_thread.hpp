// A gtest fixture that runs Eigen single-threaded for the duration of each test.
//
// The model's GEMMs are tiny (at most 512 x 172 x 64): splitting them across OpenMP threads
// only costs time, and on a busy machine very much of it. The previous setting is restored.
#pragma once

#include <gtest/gtest.h>

#include <Eigen/Core>

namespace qtl::test {

class EigenSingleThread : public ::testing::Test {
 protected:
  void SetUp() override {
    saved_threads_ = Eigen::nbThreads();
    Eigen::setNbThreads(1);
  }
  void TearDown() override { Eigen::setNbThreads(saved_threads_); }

 private:
  int saved_threads_ = 1;
};

}  // namespace qtl::test
