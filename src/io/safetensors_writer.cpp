#include "ferry/io/safetensors_writer.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <array>
#include <cstring>
#include <functional>
#include <set>

#include "ferry/core/error.h"
#include "io/atomic_file.h"
#include "io/printable.h"
#include "io/tensor_bytes.h"

namespace ferry::io {
namespace {

// One tensor to write: its description and how to get its bytes when its turn comes (so only
// one tensor at a time is copied to CPU memory).
struct Pending {
  TensorInfo info;
  std::function<void(AtomicFile&)> write;
};

std::string header_json(const std::vector<Pending>& items, const SaveOptions& options) {
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!options.metadata.empty()) header["__metadata__"] = options.metadata;
  std::uint64_t offset = 0;
  for (const Pending& p : items) {
    const std::uint64_t end = offset + p.info.size_bytes();
    header[p.info.name] = {{"dtype", safetensors_name(p.info.dtype)},
                           {"shape", p.info.shape},
                           {"data_offsets", {offset, end}}};
    offset = end;
  }
  try {
    return header.dump();
  } catch (const nlohmann::json::exception& e) {
    throw InvalidArgument(fmt::format("cannot write a safetensors header: {}", e.what()),
                          ErrorFields{.expected = "UTF-8 names and metadata"});
  }
}

void write_file(const std::filesystem::path& path, std::vector<Pending> items,
                const SaveOptions& options) {
  // Reference order: dtype alignment descending, then name.
  std::sort(items.begin(), items.end(), [](const Pending& a, const Pending& b) {
    if (a.info.dtype != b.info.dtype) return a.info.dtype > b.info.dtype;
    return a.info.name < b.info.name;
  });
  std::string json = header_json(items, options);
  json.append((8 - json.size() % 8) % 8, ' ');
  const std::uint64_t n = json.size();
  std::array<std::byte, 8> length{};
  std::memcpy(length.data(), &n, 8);  // little-endian host (see tensor_bytes.cpp)
  AtomicFile file(path);
  file.write(length);
  file.write(json);
  for (const Pending& p : items) p.write(file);
  file.commit();
}

}  // namespace

void save_safetensors(const std::filesystem::path& path,
                      const std::map<std::string, at::Tensor>& tensors,
                      const SaveOptions& options) {
  std::vector<Pending> items;
  items.reserve(tensors.size());
  for (const auto& [name, tensor] : tensors) {
    TensorInfo info{.name = name,
                    .dtype = from_scalar_type(tensor.scalar_type()),
                    .shape = tensor.sizes().vec()};
    items.push_back(Pending{std::move(info), [&t = tensor](AtomicFile& file) {
                              const at::Tensor cpu = t.detach().to(c10::kCPU).contiguous();
                              file.write(tensor_bytes(cpu));
                            }});
  }
  write_file(path, std::move(items), options);
}

void save_safetensors(const std::filesystem::path& path, std::span<const RawTensor> tensors,
                      const SaveOptions& options) {
  std::vector<Pending> items;
  items.reserve(tensors.size());
  std::set<std::string_view> names;
  for (const RawTensor& t : tensors) {
    FERRY_CHECK(names.insert(t.info.name).second, InvalidArgument,
                "cannot write {}: tensor '{}' given twice", path.string(), printable(t.info.name));
    if (t.bytes.size() != t.info.size_bytes()) {
      throw make_mismatch<InvalidArgument>(
          "tensor", "byte count",
          ErrorFields{.path = t.info.name,
                      .file = path.string(),
                      .expected = std::to_string(t.info.size_bytes()),
                      .actual = std::to_string(t.bytes.size())});
    }
    items.push_back(Pending{t.info, [bytes = t.bytes](AtomicFile& file) { file.write(bytes); }});
  }
  write_file(path, std::move(items), options);
}

}  // namespace ferry::io
