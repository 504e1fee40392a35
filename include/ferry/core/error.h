#pragma once
// The typed errors of ferry. Every error raised on bad input is a ferry::Error subclass whose
// message names the tensor or module path, the file, and expected versus actual values; the same
// facts are kept as fields so callers need not parse messages.

#include <fmt/format.h>

#include <stdexcept>
#include <string>
#include <string_view>

namespace ferry {

// Structured facts about an error; empty strings mean "not applicable".
struct ErrorFields {
  std::string path;      // tensor or module path, e.g. "model.layers.3.mlp.up_proj.weight"
  std::string file;      // file the problem was found in
  std::string expected;  // what was expected, printed
  std::string actual;    // what was found, printed
};

class Error : public std::runtime_error {
 public:
  // `what` is the complete message; `fields` the facts it was built from.
  Error(const std::string& what, ErrorFields fields = {});
  const ErrorFields& fields() const noexcept { return fields_; }
  const std::string& path() const noexcept { return fields_.path; }
  const std::string& file() const noexcept { return fields_.file; }
  const std::string& expected() const noexcept { return fields_.expected; }
  const std::string& actual() const noexcept { return fields_.actual; }

 private:
  ErrorFields fields_;
};

// A value given by the user (a size string, an option, an environment variable) is malformed.
class InvalidArgument : public Error {
  using Error::Error;
};
// A tensor has another shape than the slot or file says it must have.
class ShapeMismatch : public Error {
  using Error::Error;
};
// A tensor has another dtype than required.
class DTypeMismatch : public Error {
  using Error::Error;
};
// A tensor or module named by the caller, a checkpoint or a map does not exist.
class MissingTensor : public Error {
  using Error::Error;
};
// A file is malformed: bad header, bad offsets, inconsistent index.
class CorruptFile : public Error {
  using Error::Error;
};
// A device map is incomplete, names unknown modules, or cannot be honoured.
class InvalidDeviceMap : public Error {
  using Error::Error;
};
// A memory budget cannot hold what must be placed, or a (simulated) device ran out of memory.
class OutOfBudget : public Error {
  using Error::Error;
};
// The operating system refused an operation (open, read, mmap, rename).
class IoError : public Error {
  using Error::Error;
};
// A feature is not available with this build (e.g. a dtype LibTorch of this version lacks).
class Unsupported : public Error {
  using Error::Error;
};
// An internal invariant was broken: a bug in ferry, never caused by input.
class InternalError : public Error {
  using Error::Error;
};

// Formats the standard mismatch message from fields:
// "<subject> '<path>' in <file>: expected <quantity> <expected>, got <actual>"
// (" in <file>" only when a file is known), e.g. subject "tensor", quantity "shape".
std::string mismatch_message(std::string_view subject, std::string_view quantity,
                             const ErrorFields& fields);

// An error of type E carrying `fields` and the standard mismatch message.
template <class E>
E make_mismatch(std::string_view subject, std::string_view quantity, ErrorFields fields) {
  std::string what = mismatch_message(subject, quantity, fields);
  return E(what, std::move(fields));
}

}  // namespace ferry

// FERRY_CHECK checks user and file input: throws `ErrorType(message)` built with fmt from the
// remaining arguments. FERRY_ASSERT checks internal invariants and throws InternalError.
#define FERRY_CHECK(cond, ErrorType, ...)          \
  do {                                             \
    if (!(cond)) [[unlikely]] {                    \
      throw ErrorType(::fmt::format(__VA_ARGS__)); \
    }                                              \
  } while (false)

#define FERRY_ASSERT(cond, ...)                                                                 \
  do {                                                                                          \
    if (!(cond)) [[unlikely]] {                                                                 \
      throw ::ferry::InternalError(::fmt::format("internal error at {}:{}: {} ({})", __FILE__,  \
                                                 __LINE__, #cond, ::fmt::format(__VA_ARGS__))); \
    }                                                                                           \
  } while (false)
