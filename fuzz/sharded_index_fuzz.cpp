// libFuzzer target: the sharded checkpoint's model.safetensors.index.json reader on arbitrary
// text. Only ferry::Error may escape, and every shard name it accepts stays inside the folder.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "ferry/core/error.h"
#include "io/confined_path.h"
#include "io/sharded_index.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  try {
    const ferry::io::ShardedIndex index = ferry::io::parse_sharded_index(
        std::string_view(reinterpret_cast<const char*>(data), size),
        "fuzz/model.safetensors.index.json");
    for (const auto& [name, shard] : index.weight_map) {
      if (!ferry::io::is_confined_name(shard)) std::abort();
    }
  } catch (const ferry::Error&) {
  }
  return 0;
}
