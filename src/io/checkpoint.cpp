#include "ferry/io/checkpoint.h"

#include "ferry/core/error.h"
#include "ferry/io/offload_folder.h"
#include "ferry/io/safetensors.h"
#include "ferry/io/sharded.h"

namespace ferry::io {

std::shared_ptr<const TensorSource> open_checkpoint(const std::filesystem::path& path) {
  const CheckpointLocation where = resolve_checkpoint(path);
  switch (where.kind) {
    case CheckpointKind::kSafetensors: return SafetensorsFile::open(where.path);
    case CheckpointKind::kShardedIndex: return ShardedCheckpoint::open(where.path);
    case CheckpointKind::kOffloadFolder: return OffloadFolder::open(where.path);
  }
  throw InternalError("open_checkpoint: unknown checkpoint kind");
}

}  // namespace ferry::io
