// Kernel path selection: parsing, QTL_KERNEL_PATH semantics, and the portable path's presence.
#include <gtest/gtest.h>

#include <algorithm>
#include <fstream>
#include <qtl/kernels.hpp>
#include <string>

namespace {

using qtl::kernel::KernelPath;

TEST(CpuFeatures, PathNamesRoundTripAndBadNamesThrow) {
  for (KernelPath p : qtl::kernel::kAllKernelPaths) {
    EXPECT_EQ(qtl::kernel::parse_kernel_path(qtl::kernel::to_string(p)), p);
  }
  EXPECT_THROW((void)qtl::kernel::parse_kernel_path("avx1024"), qtl::Error);
  EXPECT_THROW((void)qtl::kernel::parse_kernel_path(""), qtl::Error);
}

TEST(CpuFeatures, SelectionFollowsTheEnvironmentValue) {
  EXPECT_TRUE(qtl::kernel::path_supported(KernelPath::Portable));
  EXPECT_EQ(qtl::kernel::select_kernel_path(nullptr), qtl::kernel::best_kernel_path());
  EXPECT_EQ(qtl::kernel::select_kernel_path(""), qtl::kernel::best_kernel_path());
  EXPECT_EQ(qtl::kernel::select_kernel_path("portable"), KernelPath::Portable);
  EXPECT_THROW((void)qtl::kernel::select_kernel_path("fast"), qtl::Error);
  for (KernelPath p : qtl::kernel::kAllKernelPaths) {
    const std::string name(qtl::kernel::to_string(p));
    if (qtl::kernel::path_supported(p)) {
      EXPECT_EQ(qtl::kernel::select_kernel_path(name.c_str()), p);
    } else {
      EXPECT_THROW((void)qtl::kernel::select_kernel_path(name.c_str()), qtl::Error);
    }
  }
  // The paths are ordered: a supported path implies every path before it is supported, except
  // AvxVnni, which AVX-512 CPUs before Sapphire Rapids / Zen 5 lack (it needs Avx2 only).
  bool seen_unsupported = false;
  for (KernelPath p : qtl::kernel::kAllKernelPaths) {
    if (p == KernelPath::AvxVnni) continue;
    if (!qtl::kernel::path_supported(p)) seen_unsupported = true;
    else EXPECT_FALSE(seen_unsupported) << qtl::kernel::to_string(p);
  }
  if (qtl::kernel::path_supported(KernelPath::AvxVnni)) {
    EXPECT_TRUE(qtl::kernel::path_supported(KernelPath::Avx2));
    EXPECT_TRUE(qtl::kernel::cpu_features().avx_vnni);
  }
  // The process default is one supported path, stable across calls.
  EXPECT_TRUE(qtl::kernel::path_supported(qtl::kernel::default_kernel_path()));
  EXPECT_EQ(qtl::kernel::default_kernel_path(), qtl::kernel::default_kernel_path());
}

TEST(CpuFeatures, DetectedFeaturesAreConsistent) {
  const auto& f = qtl::kernel::cpu_features();
  if (f.avx512bw || f.avx512vnni) {
    EXPECT_TRUE(f.avx512f);
  }
  if (qtl::kernel::path_supported(KernelPath::Avx512Vnni)) {
    EXPECT_TRUE(f.avx512vnni && f.avx512bw);
  }
}

TEST(CpuFeatures, VendorAndPrefetchDistanceFollowTheCpu) {
  // The vendor string and family as the kernel reports them (x86 Linux), against cpuid's decoding.
  bool intel = false, amd = false;
  int family = -1;
  std::ifstream info("/proc/cpuinfo");
  for (std::string line; std::getline(info, line);) {
    if (line.rfind("vendor_id", 0) == 0) {
      intel = line.find("GenuineIntel") != std::string::npos;
      amd = line.find("AuthenticAMD") != std::string::npos;
    } else if (line.rfind("cpu family", 0) == 0) {
      family = std::stoi(line.substr(line.find(':') + 1));
      break;
    }
  }
  const auto& f = qtl::kernel::cpu_features();
#if defined(__x86_64__) && defined(__linux__)
  EXPECT_EQ(f.intel, intel);
  EXPECT_EQ(f.amd, amd);
  EXPECT_EQ(f.family, family);
#else
  EXPECT_FALSE(f.intel);
  EXPECT_FALSE(f.amd);
#endif
  // The policy itself: Intel 4 KiB / 1 KiB, AMD family 19h with AVX-512 (Zen 4) 8 KiB / 2 KiB;
  // one level (near = 0) on Zen 3 and Zen 5.
  using qtl::kernel::PrefetchDistance;
  using qtl::kernel::two_level_prefetch_for;
  qtl::kernel::CpuFeatures c;
  c.intel = true;
  EXPECT_EQ(two_level_prefetch_for(c), (PrefetchDistance{4096, 1024}));
  c = {};
  c.amd = true;
  c.family = 0x19;
  EXPECT_EQ(two_level_prefetch_for(c).near, 0);
  c.avx512f = true;
  EXPECT_EQ(two_level_prefetch_for(c), (PrefetchDistance{8192, 2048}));
  c.family = 0x1A;
  EXPECT_EQ(two_level_prefetch_for(c).near, 0);
#ifndef QTL_PREFETCH_BYTES
  using qtl::kernel::uniform_prefetch;
  if (two_level_prefetch_for(f).near > 0) {  // two levels, the same for every width
    EXPECT_EQ(uniform_prefetch(8), two_level_prefetch_for(f));
    EXPECT_EQ(uniform_prefetch(4), two_level_prefetch_for(f));
  } else {
    EXPECT_EQ(uniform_prefetch(8), (PrefetchDistance{4096, 0}));
    EXPECT_EQ(uniform_prefetch(4), (PrefetchDistance{16384, 0}));
  }
#endif
}

TEST(CpuFeatures, SupportedPathsStartPortableAndEndWithTheBest) {
  const auto paths = qtl::kernel::supported_kernel_paths();
  ASSERT_FALSE(paths.empty());
  EXPECT_EQ(paths.front(), qtl::kernel::KernelPath::Portable);
  EXPECT_EQ(paths.back(), qtl::kernel::best_kernel_path());
  for (auto p : qtl::kernel::kAllKernelPaths) {
    EXPECT_EQ(std::count(paths.begin(), paths.end(), p), qtl::kernel::path_supported(p) ? 1 : 0)
        << qtl::kernel::to_string(p);
  }
}

}  // namespace
