#include "cli/json_output.h"

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include <filesystem>

#include "ferry/core/error.h"

namespace ferry::cli {

nlohmann::ordered_json json_header(std::string_view command) {
  nlohmann::ordered_json j;
  j["schema_version"] = kJsonSchemaVersion;
  j["command"] = command;
  return j;
}

void print_json(const nlohmann::ordered_json& j) {
  fmt::print("{}\n", j.dump(2, ' ', false, nlohmann::ordered_json::error_handler_t::replace));
  std::fflush(stdout);
}

std::string_view error_type(const std::exception& e) {
  if (dynamic_cast<const InvalidArgument*>(&e) != nullptr) return "InvalidArgument";
  if (dynamic_cast<const ShapeMismatch*>(&e) != nullptr) return "ShapeMismatch";
  if (dynamic_cast<const DTypeMismatch*>(&e) != nullptr) return "DTypeMismatch";
  if (dynamic_cast<const MissingTensor*>(&e) != nullptr) return "MissingTensor";
  if (dynamic_cast<const CorruptFile*>(&e) != nullptr) return "CorruptFile";
  if (dynamic_cast<const InvalidDeviceMap*>(&e) != nullptr) return "InvalidDeviceMap";
  if (dynamic_cast<const OutOfBudget*>(&e) != nullptr) return "OutOfBudget";
  if (dynamic_cast<const IoError*>(&e) != nullptr) return "IoError";
  if (dynamic_cast<const Unsupported*>(&e) != nullptr) return "Unsupported";
  if (dynamic_cast<const InternalError*>(&e) != nullptr) return "InternalError";
  if (dynamic_cast<const Error*>(&e) != nullptr) return "Error";
  if (dynamic_cast<const CLI::ParseError*>(&e) != nullptr) return "UsageError";
  if (dynamic_cast<const std::filesystem::filesystem_error*>(&e) != nullptr) {
    return "FilesystemError";
  }
  return "UnexpectedError";
}

nlohmann::ordered_json error_json(const std::exception& e, int exit_code) {
  nlohmann::ordered_json error;
  error["type"] = error_type(e);
  error["message"] = e.what();
  if (const auto* ferry_error = dynamic_cast<const Error*>(&e)) {
    const ErrorFields& f = ferry_error->fields();
    for (const auto& [key, value] :
         {std::pair{"path", &f.path}, std::pair{"file", &f.file},
          std::pair{"expected", &f.expected}, std::pair{"actual", &f.actual}}) {
      if (!value->empty()) error[key] = *value;
    }
  }
  error["exit_code"] = exit_code;
  nlohmann::ordered_json j;
  j["schema_version"] = kJsonSchemaVersion;
  j["error"] = error;
  return j;
}

}  // namespace ferry::cli
