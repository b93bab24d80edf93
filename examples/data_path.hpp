// data_path.hpp — where the examples and tests find the bundled real data (model, tokenizer,
// text). Not part of the library: qtl's headers take paths and never look for data themselves.
//
// Lookup order for the data folder:
//   1. the environment variable QTL_DATA_DIR, when set and non-empty;
//   2. the compile definition QTL_DATA_DIR (a string literal; CMake sets it to the
//      repository's examples/data unless the cache variable of that name says otherwise);
//   3. "examples/data", relative to the working directory.
// A missing file is an error that says what the file is, where it comes from and which folder
// was searched.
#pragma once

#include <cstdlib>
#include <filesystem>
#include <string>
#include <string_view>

#include "qtl/core/error.hpp"

namespace qtl::io {

/// The data folder, chosen as described at the top of this header.
[[nodiscard]] inline std::filesystem::path data_dir() {
  if (const char* env = std::getenv("QTL_DATA_DIR"); env != nullptr && *env != '\0') {
    return std::filesystem::path(env);
  }
#ifdef QTL_DATA_DIR
  return std::filesystem::path(QTL_DATA_DIR);
#else
  return std::filesystem::path("examples/data");
#endif
}

/// `relative` resolved against data_dir(); the file need not exist.
[[nodiscard]] inline std::filesystem::path data_path(std::string_view relative) {
  return data_dir() / std::filesystem::path(relative);
}

/// A sentence saying what a bundled data file is and where it comes from, keyed on its file
/// name ("stories260K.bin", or a path ending in it); a generic sentence for other files.
[[nodiscard]] inline std::string describe_data_file(const std::filesystem::path& file) {
  const std::string name = file.filename().string();
  if (name == "stories260K.bin") {
    return "stories260K.bin is the stories260K model (llama2.c legacy fp32 checkpoint) from "
           "karpathy's tinyllamas, https://huggingface.co/karpathy/tinyllamas";
  }
  if (name == "tok512.bin") {
    return "tok512.bin is the 512-token llama2.c tokenizer of stories260K, from karpathy's "
           "tinyllamas, https://huggingface.co/karpathy/tinyllamas";
  }
  if (name == "tinystories_val_dev.txt") {
    return "tinystories_val_dev.txt holds the first 500 stories of the TinyStories validation "
           "split (roneneldan/TinyStories on Hugging Face), separated by lines holding "
           "<|endoftext|>";
  }
  return str_cat(name, " is not one of qtl's bundled data files (stories260K/stories260K.bin, "
                       "stories260K/tok512.bin, tinystories_val_dev.txt)");
}

/// data_path(relative), after checking that it names an existing regular file.
/// Throws qtl::Error naming the full path, what the file is, and how the folder is chosen.
[[nodiscard]] inline std::filesystem::path require_data_file(std::string_view relative) {
  std::filesystem::path path = data_path(relative);
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec)) {
    fail("require_data_file: data file '", path.string(), "' not found; ",
         describe_data_file(path),
         ". The repository carries it in examples/data/ (see examples/data/README.md); the data "
         "folder is $QTL_DATA_DIR if set, else the QTL_DATA_DIR compile definition, else "
         "examples/data (currently '",
         data_dir().string(), "')");
  }
  return path;
}

}  // namespace qtl::io
