// bench/ggml_cpu_variant.hpp — which CPU backend variant (libggml-cpu-<arch>.so) ggml loaded into
// this process: the benchmarks against llama.cpp print it with their results.
#pragma once

#include <link.h>

#include <cstddef>
#include <cstring>
#include <string>

namespace bench_ggml {

/// The path of the libggml-cpu-*.so mapped into this process, or "" if none is.
inline std::string loaded_cpu_variant_path() {
  std::string found;
  dl_iterate_phdr(
      [](dl_phdr_info* info, std::size_t, void* out) {
        const char* name = info->dlpi_name;
        if (name != nullptr && std::strstr(name, "libggml-cpu") != nullptr) *static_cast<std::string*>(out) = name;
        return 0;
      },
      &found);
  return found;
}

}  // namespace bench_ggml
