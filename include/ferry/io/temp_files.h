#pragma once
// Leftovers of interrupted writes. ferry writes every file under a temporary name
// "<file>.tmp-<pid>-<n>" and renames it into place when complete; a process killed mid-write
// leaves the temporary file behind.

#include <cstddef>
#include <filesystem>

namespace ferry::io {

// Removes the temporary files "<anything>.tmp-<pid>-<n>" directly in `folder` whose process
// <pid> no longer exists (kill(pid, 0) fails with ESRCH). Files of live processes (this one
// included), other files, links and subfolders are left alone. Returns how many were removed;
// a missing or unreadable folder removes nothing. Not atomic against a pid being reused.
std::size_t remove_stale_temp_files(const std::filesystem::path& folder);

}  // namespace ferry::io
