// qtl/core/error.hpp — the one exception type of qtl, and the helpers that build its messages.
//
// Public, cold entry points validate their arguments and throw qtl::Error with a message that
// names the function, the argument, the expected and the actual value, e.g.
//   "quantize_matrix: group size must be >= 1, got 0".
// Kernels never throw: everything is checked before dispatch.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

namespace qtl {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& message) : std::runtime_error(message) {}
};

namespace detail {

inline void append_all(std::ostringstream&) {}

template <class T, class... Rest>
void append_all(std::ostringstream& os, const T& first, const Rest&... rest) {
  os << first;
  append_all(os, rest...);
}

}  // namespace detail

/// Concatenate the streamable arguments into one message.
template <class... Args>
[[nodiscard]] std::string str_cat(const Args&... args) {
  std::ostringstream os;
  os.precision(9);
  detail::append_all(os, args...);
  return os.str();
}

/// Throw qtl::Error built from the streamable arguments.
template <class... Args>
[[noreturn]] void fail(const Args&... args) {
  throw Error(str_cat(args...));
}

}  // namespace qtl
