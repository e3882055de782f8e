// Typed errors for IndexShare. Every message names the file, tensor, key or argument at fault.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

namespace indexshare {

// The one exception type the library throws for bad input or failed invariants.
class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& what) : std::runtime_error(what) {}
};

// Concatenates any streamable values into one string: cat("k=", k, " > L=", L).
template <class... Args>
std::string cat(Args&&... args) {
  std::ostringstream os;
  (os << ... << std::forward<Args>(args));
  return os.str();
}

template <class... Args>
[[noreturn]] void fail(Args&&... args) {
  throw Error(cat(std::forward<Args>(args)...));
}

}  // namespace indexshare

// IS_CHECK(cond, parts...): throws indexshare::Error with the concatenated message when
// cond is false. Used for argument validation at API boundaries, not in inner loops.
#define IS_CHECK(cond, ...)                      \
  do {                                           \
    if (!(cond)) ::indexshare::fail(__VA_ARGS__); \
  } while (0)
