#include "ferry/core/error.h"

namespace ferry {

Error::Error(const std::string& what, ErrorFields fields)
    : std::runtime_error(what), fields_(std::move(fields)) {}

std::string mismatch_message(std::string_view subject, std::string_view quantity,
                             const ErrorFields& fields) {
  std::string where = fields.file.empty() ? "" : fmt::format(" in {}", fields.file);
  return fmt::format("{} '{}'{}: expected {} {}, got {}", subject, fields.path, where, quantity,
                     fields.expected, fields.actual);
}

}  // namespace ferry
