// libFuzzer target: the safetensors header parser on arbitrary bytes, then every tensor's bytes
// read through the parsed ranges. Only ferry::Error may escape the parser.
#include <cstddef>
#include <cstdint>
#include <span>

#include "ferry/core/error.h"
#include "ferry/io/safetensors_header.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const auto bytes = std::as_bytes(std::span<const std::uint8_t>(data, size));
  try {
    const auto header = ferry::io::parse_safetensors_header(bytes, "fuzz.safetensors");
    // Validated ranges must lie inside the input: touch their first and last bytes.
    unsigned sum = 0;
    for (const auto& e : header.entries) {
      if (e.end_bytes > e.begin_bytes) {
        sum += static_cast<unsigned>(bytes[header.data_offset_bytes + e.begin_bytes]);
        sum += static_cast<unsigned>(bytes[header.data_offset_bytes + e.end_bytes - 1]);
      }
    }
    // Keep the reads from being optimised away.
    asm volatile("" : : "r"(sum));
  } catch (const ferry::Error&) {
  }
  return 0;
}
