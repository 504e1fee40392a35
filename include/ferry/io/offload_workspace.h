#pragma once
// The folder ferry writes converted disk-offloaded weights into while a model runs: a private
// temporary folder (removed at the end, on error, at exit and on SIGINT/SIGTERM/SIGHUP), or a
// folder the user named (locked against other processes, reused only when it provably holds what
// this run would write). Note [Offload workspaces] in offload_workspace.cpp has the rules.

#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "ferry/io/offload_index.h"

namespace ferry::io {

class OffloadWorkspace {
 public:
  // A new folder "$TMPDIR/ferry-offload-XXXXXX" made by mkdtemp (mode 0700, never an existing
  // one), removed with its content when the workspace is destroyed, when the process exits, and
  // when it is killed by SIGINT, SIGTERM or SIGHUP. Throws IoError.
  static std::shared_ptr<OffloadWorkspace> temporary();
  // `folder`, created (mode 0700) when missing, locked with flock for the life of the workspace
  // (IoError naming the folder when another process holds it), with stale temporary files of
  // dead processes removed. Its content is kept at the end. Throws IoError.
  static std::shared_ptr<OffloadWorkspace> open(const std::filesystem::path& folder);

  ~OffloadWorkspace();
  OffloadWorkspace(const OffloadWorkspace&) = delete;
  OffloadWorkspace& operator=(const OffloadWorkspace&) = delete;

  const std::filesystem::path& path() const noexcept { return path_; }
  bool is_temporary() const noexcept { return temporary_; }

  // The entries a previous run published here under the same `fingerprint` whose .dat files are
  // still complete (size = the entry's bytes). Empty for a new folder, a foreign one, another
  // fingerprint, or a run that did not finish.
  OffloadIndex reusable(std::string_view fingerprint) const;
  // Starts writing: records that every file of the previous run and `entries` belong to ferry
  // and are not to be trusted yet, then removes the previous run's .dat files that `entries`
  // do not keep (same name, dtype and shape, and fingerprint). Call before writing .dat files.
  void begin(std::string_view fingerprint, const OffloadIndex& entries);
  // In a user's folder, publishes `entries` (index.json, Accelerate's format, exactly these
  // entries) and the record that they are complete for `fingerprint`, each written atomically,
  // the record last. Nothing in a temporary folder, whose files are read through an index kept
  // in memory (OffloadFolder::from_index).
  void publish(std::string_view fingerprint, const OffloadIndex& entries);

 private:
  OffloadWorkspace(std::filesystem::path path, bool temporary, int lock_fd);

  std::filesystem::path path_;
  bool temporary_ = false;
  int lock_fd_ = -1;
  int cleanup_slot_ = -1;  // the slot registered for removal on signals (temporary only)
};

}  // namespace ferry::io
