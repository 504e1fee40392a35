#pragma once
// What every command's `--json` output shares: a schema version, one object on stdout, and
// errors as JSON objects on stdout too (docs/cli.md, "JSON output").

#include <nlohmann/json.hpp>

#include <exception>
#include <string_view>

namespace ferry::cli {

// Raised when a field is removed or changes meaning; adding a field keeps the version.
inline constexpr int kJsonSchemaVersion = 1;

// {"schema_version": 1, "command": `command`}: the start of every command's JSON object.
nlohmann::ordered_json json_header(std::string_view command);

// Prints `j` on stdout, indented, with invalid UTF-8 (names and text come from files and models)
// replaced by U+FFFD rather than failing.
void print_json(const nlohmann::ordered_json& j);

// The error object printed instead of a command's output when it fails under --json:
// {"schema_version": 1, "error": {"type": "InvalidArgument", "message": ..., "path": ...,
//  "file": ..., "expected": ..., "actual": ..., "exit_code": N}} (empty fields left out).
nlohmann::ordered_json error_json(const std::exception& e, int exit_code);

// The class name of a ferry error ("InvalidArgument", "OutOfBudget", ...), "UsageError" for a
// command line CLI11 rejected, "FilesystemError" or "Error" for other exceptions.
std::string_view error_type(const std::exception& e);

}  // namespace ferry::cli
