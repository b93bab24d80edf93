// A fresh directory per test for files the test writes (bad-input files, saved models), removed
// with everything in it when the test ends.
#pragma once

#include <gtest/gtest.h>
#include <qtl/core/error.hpp>

#include <filesystem>
#include <random>
#include <string>
#include <system_error>

namespace qtl::test {

class TempDir {
 public:
  TempDir() {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    path_ = std::filesystem::temp_directory_path() /
            qtl::str_cat("qtl_", info->test_suite_name(), "_", info->name(), "_", std::random_device{}());
    std::filesystem::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  [[nodiscard]] std::filesystem::path file(const std::string& name) const { return path_ / name; }

 private:
  std::filesystem::path path_;
};

}  // namespace qtl::test
