// libFuzzer target: the offload folder's index.json reader on arbitrary text. Only ferry::Error
// may escape.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "ferry/core/error.h"
#include "ferry/io/offload_index.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  try {
    ferry::io::parse_offload_index(std::string_view(reinterpret_cast<const char*>(data), size),
                                   "fuzz/index.json");
  } catch (const ferry::Error&) {
  }
  return 0;
}
