// The index.json of an offload folder: parse_offload_index, load_offload_index,
// save_offload_index of ferry/io/offload_folder.h.
#include "ferry/io/offload_index.h"

#include <algorithm>

#include "ferry/core/error.h"
#include "io/json_file.h"
#include "io/offload_names.h"
#include "io/printable.h"

namespace ferry::io {
namespace {

using Json = nlohmann::ordered_json;

[[noreturn]] void entry_error(std::string_view file, std::string_view name,
                              std::string_view problem, std::string expected, std::string actual) {
  throw CorruptFile(fmt::format("tensor '{}' in {}: {}: expected {}, got {}", printable(name), file,
                                problem, expected, actual),
                    ErrorFields{.path = std::string(name),
                                .file = std::string(file),
                                .expected = expected,
                                .actual = actual});
}

DType entry_dtype(const Json& value, std::string_view file, std::string_view name) {
  if (!value.is_string()) entry_error(file, name, "dtype", "a dtype name", value.dump());
  auto d = dtype_from_offload_name(value.get_ref<const std::string&>());
  if (!d) {
    entry_error(file, name, "unknown dtype", "a numpy dtype name (float32, bfloat16, int64, ...)",
                printable(value.get_ref<const std::string&>()));
  }
  return *d;
}

OffloadEntry parse_entry(const std::string& name, const Json& value, std::string_view file) {
  if (!is_plain_name(name)) {
    entry_error(file, name, "name is not a plain file name", "no '/' and not '.' or '..'",
                "a path");
  }
  if (!value.is_object()) entry_error(file, name, "entry", "an object", value.type_name());
  OffloadEntry entry{.name = name};
  if (value.contains("safetensors_file")) {
    const Json& path = value["safetensors_file"];
    if (!path.is_string() || path.get_ref<const std::string&>().empty()) {
      entry_error(file, name, "safetensors_file", "a path", path.dump());
    }
    entry.safetensors_file = path.get<std::string>();
    if (value.contains("weight_name") && !value["weight_name"].is_null()) {
      const Json& weight = value["weight_name"];
      if (!weight.is_string()) entry_error(file, name, "weight_name", "a string", weight.dump());
      entry.weight_name = weight.get<std::string>();
    }
    if (value.contains("dtype") && !value["dtype"].is_null()) {
      entry.dtype = entry_dtype(value["dtype"], file, name);
    }
    return entry;
  }
  if (!value.contains("dtype")) entry_error(file, name, "missing field", "dtype", "none");
  entry.dtype = entry_dtype(value["dtype"], file, name);
  if (!value.contains("shape") || !value["shape"].is_array()) {
    entry_error(file, name, "shape", "an array of sizes",
                value.contains("shape") ? value["shape"].dump() : "none");
  }
  for (const Json& d : value["shape"]) {
    if (!d.is_number_unsigned() || d.get<std::uint64_t>() > static_cast<std::uint64_t>(INT64_MAX)) {
      entry_error(file, name, "shape", "non-negative sizes", value["shape"].dump());
    }
    entry.shape.push_back(d.get<std::int64_t>());
  }
  // numel × element size must fit in 64 bits, or the .dat size check is meaningless.
  std::uint64_t bytes = static_cast<std::uint64_t>(element_size(*entry.dtype));
  for (std::int64_t d : entry.shape) {
    if (__builtin_mul_overflow(bytes, static_cast<std::uint64_t>(d), &bytes)) {
      entry_error(file, name, "shape is too large", "a byte size below 2^64",
                  value["shape"].dump());
    }
  }
  return entry;
}

Json entry_json(const OffloadEntry& e) {
  Json out = Json::object();
  if (e.in_safetensors()) {
    out["safetensors_file"] = e.safetensors_file.string();
    out["weight_name"] = e.weight_name.empty() ? e.name : e.weight_name;
    if (e.dtype) out["dtype"] = offload_dtype_name(*e.dtype);
  } else {
    FERRY_ASSERT(e.dtype.has_value(), "offload entry '{}' without dtype", e.name);
    out["dtype"] = offload_dtype_name(*e.dtype);
    out["shape"] = e.shape;
  }
  return out;
}

}  // namespace

OffloadIndex parse_offload_index(std::string_view json, std::string_view file) {
  const Json parsed = parse_json(json, file);
  if (!parsed.is_object()) {
    throw CorruptFile(
        fmt::format("{}: offload index is not a JSON object", file),
        ErrorFields{
            .file = std::string(file), .expected = "an object", .actual = parsed.type_name()});
  }
  OffloadIndex index;
  index.reserve(parsed.size());
  for (const auto& [name, value] : parsed.items()) index.push_back(parse_entry(name, value, file));
  return index;
}

OffloadIndex load_offload_index(const std::filesystem::path& folder) {
  const auto path = folder / "index.json";
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) return {};
  return parse_offload_index(read_text_file(path), path.string());
}

void save_offload_index(const OffloadIndex& index, const std::filesystem::path& folder) {
  OffloadIndex merged = load_offload_index(folder);
  for (const OffloadEntry& e : index) {
    auto it = std::find_if(merged.begin(), merged.end(),
                           [&](const OffloadEntry& m) { return m.name == e.name; });
    if (it == merged.end()) {
      merged.push_back(e);
    } else {
      *it = e;
    }
  }
  Json out = Json::object();
  for (const OffloadEntry& e : merged) out[e.name] = entry_json(e);
  std::filesystem::create_directories(folder);
  // json.dump(index, f, indent=2): no trailing newline, non-ASCII escaped.
  write_text_file(folder / "index.json", out.dump(2, ' ', /*ensure_ascii=*/true),
                  kPrivateFileMode);
}

}  // namespace ferry::io
