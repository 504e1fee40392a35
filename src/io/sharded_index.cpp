#include "io/sharded_index.h"

#include "ferry/core/error.h"
#include "io/confined_path.h"
#include "io/json_file.h"
#include "io/printable.h"

namespace ferry::io {
namespace {

CorruptFile index_error(std::string_view file, std::string_view tensor, std::string message,
                        std::string expected, std::string actual) {
  return CorruptFile(std::move(message), ErrorFields{.path = std::string(tensor),
                                                     .file = std::string(file),
                                                     .expected = std::move(expected),
                                                     .actual = std::move(actual)});
}

}  // namespace

ShardedIndex parse_sharded_index(std::string_view text, std::string_view file) {
  const auto json = parse_json(text, file);
  if (!json.is_object()) {
    throw index_error(file, "", fmt::format("{}: index is not a JSON object", file), "an object",
                      json.type_name());
  }
  ShardedIndex out;
  // Accelerate also accepts a flat {name: file} map without "weight_map" (§2.18).
  const bool nested = json.contains("weight_map");
  const auto& map = nested ? json["weight_map"] : json;
  if (nested && json.contains("metadata") && json["metadata"].is_object()) {
    const auto& total = json["metadata"].value("total_size", nlohmann::ordered_json());
    if (total.is_number_unsigned()) out.total_size_bytes = total.get<std::uint64_t>();
  }
  if (!map.is_object()) {
    throw index_error(file, "", fmt::format("{}: weight_map is not an object", file), "an object",
                      map.type_name());
  }
  out.weight_map.reserve(map.size());
  for (const auto& [name, shard] : map.items()) {
    if (!nested && name == "metadata") continue;
    // A shard name must stay inside the index's folder (Note [Offload index paths] has why).
    if (!shard.is_string() || !is_confined_name(shard.get_ref<const std::string&>())) {
      throw index_error(file, name,
                        fmt::format("tensor '{}' in {}: shard must be a file name in the index's "
                                    "folder: expected a relative path, got {}",
                                    printable(name), file, printable(shard.dump())),
                        "a relative file name", printable(shard.dump()));
    }
    out.weight_map.emplace_back(name, shard.get<std::string>());
  }
  return out;
}

}  // namespace ferry::io
