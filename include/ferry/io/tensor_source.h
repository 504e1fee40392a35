#pragma once
// TensorSource: one read interface over every place weights come from — tensors in memory, a
// safetensors file, a sharded checkpoint, an offload folder — plus cheap prefix views
// (`source->prefixed("model.layers.3.")`), in the manner of candle's VarBuilder.
//
// Sources are created by factories returning std::shared_ptr (prefix views keep their parent
// alive). All const member functions are safe to call from several threads at once.

#include <ATen/ATen.h>

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "ferry/core/error.h"
#include "ferry/core/tensor_info.h"
#include "ferry/io/file_extent.h"
#include "ferry/io/load_options.h"

namespace ferry::io {

class TensorSource : public std::enable_shared_from_this<TensorSource> {
 public:
  virtual ~TensorSource() = default;

  // Every tensor name, sorted.
  virtual const std::vector<std::string>& names() const = 0;
  // Name, stored dtype and shape (TensorInfo::size_bytes() gives the stored bytes), or nullopt.
  virtual std::optional<TensorInfo> find(std::string_view name) const = 0;
  // The tensor `name` per `options` (default: CPU, stored dtype, zero-copy where possible).
  // Throws MissingTensor naming the tensor and the source; Unsupported for a stored dtype
  // LibTorch lacks (U16/U32/U64, float8 before 2.1).
  virtual at::Tensor load(std::string_view name, const LoadOptions& options = {}) const = 0;
  // The file holding `name`'s bytes; empty for tensors in memory. Throws MissingTensor.
  virtual std::filesystem::path file_of(std::string_view name) const = 0;
  // What this source reads, for messages: a path, or "<memory>".
  virtual std::string description() const = 0;
  // Where `name`'s stored bytes lie in a file, for readers that fetch them with pread; nullopt
  // when the tensor is not read from a file (memory). Cheap: no I/O beyond opening a shard's
  // header as find() does. Throws MissingTensor. The default: nullopt for every known name.
  virtual std::optional<FileExtent> extent(std::string_view name) const;

  // Like find() but throws MissingTensor naming the tensor and description().
  TensorInfo info(std::string_view name) const;
  bool contains(std::string_view name) const { return find(name).has_value(); }
  // Sum of size_bytes() over all tensors.
  std::uint64_t total_bytes() const;

  // A view whose names are this source's names that start with `prefix`, with the prefix
  // removed; its tensors, infos and sizes are this source's. Prefixes compose.
  std::shared_ptr<const TensorSource> prefixed(std::string prefix) const;

 protected:
  MissingTensor missing(std::string_view name) const;
};

// A source over tensors already in memory (CPU or any device); load() converts per options and
// returns the stored tensor itself when no conversion is asked. Throws Unsupported for a
// tensor whose scalar type safetensors cannot describe (complex, quantized).
std::shared_ptr<const TensorSource> make_memory_source(std::map<std::string, at::Tensor> tensors);

}  // namespace ferry::io
