#include "ferry/io/offload_workspace.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <cerrno>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <set>

#include "ferry/core/error.h"
#include "ferry/core/log.h"
#include "ferry/core/tensor_info.h"
#include "ferry/io/temp_files.h"
#include "io/json_file.h"
#include "io/offload_names.h"

// Note [Offload workspaces]
// Converted weights that rest on disk are written as "<name>.dat" files, read back at every
// forward. What is read must be what this run wrote:
// * Without a folder from the user, the files go to a new private folder (mkdtemp: a name no
//   other user can have prepared, mode 0700). It is removed when the workspace dies (the model
//   that reads it is gone, or the load failed), at exit, and from a signal handler on SIGINT,
//   SIGTERM and SIGHUP, which only makes async-signal-safe calls on paths recorded beforehand.
// * A folder the user names is locked with flock for the whole run: a second run using it fails
//   at once with an error instead of both rewriting the same files. ferry records what it owns
//   there in "ferry-offload.json": the fingerprint of the source (tensor headers, file sizes and
//   times, target dtype) and the entries written. Before writing, the record is rewritten with
//   no fingerprint, so a run killed mid-way leaves files that ferry knows are its own and not to
//   be trusted; the complete record is published last. Only files named in a record are ever
//   removed, so a folder with other content loses nothing but the .dat files ferry overwrites.

namespace ferry::io {
namespace {

constexpr const char* kRecord = "ferry-offload.json";
constexpr const char* kRecordFormat = "ferry-offload/1";

IoError os_error(std::string_view what, const std::filesystem::path& path, int err) {
  return IoError(fmt::format("cannot {} {}: {}", what, path.string(), std::strerror(err)),
                 ErrorFields{.file = path.string(), .actual = std::strerror(err)});
}

// ---- removal of temporary folders from a signal handler -------------------------------------

constexpr int kSlots = 32;
struct CleanupSlot {
  std::atomic<bool> armed{false};
  char path[4096] = {};
};
std::array<CleanupSlot, kSlots> g_slots;
std::mutex g_slots_mutex;  // guards claiming and releasing slots (not the handler's reads)
constexpr std::array<int, 3> kSignals = {SIGINT, SIGTERM, SIGHUP};
std::array<struct sigaction, kSignals.size()> g_previous{};

// Removes the files of a flat folder, then the folder. Async-signal-safe: open, getdents64,
// unlinkat, close, rmdir only. Several passes, since unlinking while listing may skip entries.
void remove_flat_folder(const char* path) noexcept {
  for (int pass = 0; pass < 64; ++pass) {  // another thread may still be adding a file
    if (::rmdir(path) == 0 || errno == ENOENT) return;
    const int fd = ::open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return;
    alignas(8) char buf[8192];
    for (;;) {
      const ssize_t n = ::getdents64(fd, buf, sizeof buf);
      if (n <= 0) break;
      for (ssize_t at = 0; at < n;) {
        const auto* d = reinterpret_cast<const struct dirent64*>(buf + at);
        const bool dots = d->d_name[0] == '.' &&
                          (d->d_name[1] == '\0' || (d->d_name[1] == '.' && d->d_name[2] == '\0'));
        if (!dots) ::unlinkat(fd, d->d_name, 0);
        at += d->d_reclen;
      }
    }
    ::close(fd);
  }
}

void remove_armed_folders() noexcept {
  for (CleanupSlot& slot : g_slots) {
    if (slot.armed.exchange(false)) remove_flat_folder(slot.path);
  }
}

void on_fatal_signal(int sig) {
  const int saved = errno;
  remove_armed_folders();
  for (std::size_t i = 0; i < kSignals.size(); ++i) {
    if (kSignals[i] == sig) ::sigaction(sig, &g_previous[i], nullptr);
  }
  errno = saved;
  ::raise(sig);  // the previous disposition (default: terminate with this signal)
}

void install_handlers() {
  static std::once_flag once;
  std::call_once(once, [] {
    std::atexit(remove_armed_folders);
    for (std::size_t i = 0; i < kSignals.size(); ++i) {
      struct sigaction previous {};
      if (::sigaction(kSignals[i], nullptr, &previous) != 0) continue;
      if (previous.sa_handler == SIG_IGN) continue;  // e.g. nohup: keep ignoring
      g_previous[i] = previous;
      struct sigaction action {};
      action.sa_handler = on_fatal_signal;
      sigemptyset(&action.sa_mask);
      action.sa_flags = 0;
      ::sigaction(kSignals[i], &action, nullptr);
    }
  });
}

int arm_cleanup(const std::filesystem::path& folder) {
  install_handlers();
  const std::string& p = folder.native();
  if (p.size() >= sizeof(CleanupSlot::path)) return -1;
  std::lock_guard lock(g_slots_mutex);
  for (int i = 0; i < kSlots; ++i) {
    CleanupSlot& slot = g_slots[static_cast<std::size_t>(i)];
    if (slot.armed.load()) continue;
    std::memcpy(slot.path, p.c_str(), p.size() + 1);
    slot.armed.store(true);
    return i;
  }
  log_warning("more than {} temporary offload folders at once: {} is removed at exit but not "
              "on a signal",
              kSlots, p);
  return -1;
}

void disarm_cleanup(int slot) {
  if (slot < 0) return;
  std::lock_guard lock(g_slots_mutex);
  g_slots[static_cast<std::size_t>(slot)].armed.store(false);
}

// ---- the record of what ferry owns in a user's folder ----------------------------------------

struct Record {
  std::optional<std::string> fingerprint;  // nullopt: a write that did not finish
  OffloadIndex entries;
};

// The record, or nullopt when there is none or it is not one ferry wrote (then nothing in the
// folder is ferry's).
std::optional<Record> read_record(const std::filesystem::path& folder) {
  const auto path = folder / kRecord;
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec)) return std::nullopt;
  try {
    const nlohmann::ordered_json j = parse_json(read_text_file(path), path.string());
    if (!j.is_object() || j.value("format", "") != kRecordFormat || !j.contains("entries")) {
      return std::nullopt;
    }
    Record r;
    if (j.contains("fingerprint") && j["fingerprint"].is_string()) {
      r.fingerprint = j["fingerprint"].get<std::string>();
    }
    r.entries = parse_offload_index(j["entries"].dump(), path.string());
    return r;
  } catch (const Error& e) {
    log_warning("{} is not a record ferry can read ({}); its files are left alone", path.string(),
                e.what());
    return std::nullopt;
  }
}

void write_record(const std::filesystem::path& folder, const std::optional<std::string>& print,
                  const OffloadIndex& entries) {
  // The entries in index.json's own format, through its writer into a scratch object.
  nlohmann::ordered_json index = nlohmann::ordered_json::object();
  for (const OffloadEntry& e : entries) {
    FERRY_ASSERT(!e.in_safetensors() && e.dtype, "workspace entry '{}' is not a raw .dat entry",
                 e.name);
    index[e.name] = {{"dtype", offload_dtype_name(*e.dtype)}, {"shape", e.shape}};
  }
  nlohmann::ordered_json j;
  j["format"] = kRecordFormat;
  j["fingerprint"] = print ? nlohmann::ordered_json(*print) : nlohmann::ordered_json(nullptr);
  j["entries"] = std::move(index);
  write_text_file(folder / kRecord, j.dump(2));
}

bool same_entry(const OffloadEntry& a, const OffloadEntry& b) {
  return a.name == b.name && a.dtype == b.dtype && a.shape == b.shape && !a.in_safetensors() &&
         !b.in_safetensors();
}

std::filesystem::path dat_file(const std::filesystem::path& folder, const OffloadEntry& e) {
  return folder / (e.name + ".dat");
}

// A regular file (not a link, FIFO or device) of exactly the entry's bytes.
bool complete(const std::filesystem::path& folder, const OffloadEntry& e) {
  struct stat st {};
  if (::lstat(dat_file(folder, e).c_str(), &st) != 0 || !S_ISREG(st.st_mode)) return false;
  const TensorInfo info{.name = e.name, .dtype = *e.dtype, .shape = e.shape};
  return static_cast<std::uint64_t>(st.st_size) == info.size_bytes();
}

}  // namespace

OffloadWorkspace::OffloadWorkspace(std::filesystem::path path, bool temporary, int lock_fd)
    : path_(std::move(path)), temporary_(temporary), lock_fd_(lock_fd) {}

std::shared_ptr<OffloadWorkspace> OffloadWorkspace::temporary() {
  std::error_code ec;
  std::filesystem::path base = std::filesystem::temp_directory_path(ec);
  if (ec) base = "/tmp";
  const std::string name = (base / "ferry-offload-XXXXXX").string();
  // The slot is armed before the folder exists, and mkdtemp writes the final name into the slot
  // itself: a signal at any moment finds either no folder or the folder under its slot.
  const int slot = arm_cleanup(name);
  std::string made = name;
  char* buffer = slot >= 0 ? g_slots[static_cast<std::size_t>(slot)].path : made.data();
  if (::mkdtemp(buffer) == nullptr) {
    const int err = errno;
    disarm_cleanup(slot);
    throw os_error("create a temporary folder in", base, err);
  }
  made = buffer;
  auto ws = std::shared_ptr<OffloadWorkspace>(new OffloadWorkspace(made, true, -1));
  ws->cleanup_slot_ = slot;
  return ws;
}

std::shared_ptr<OffloadWorkspace> OffloadWorkspace::open(const std::filesystem::path& folder) {
  FERRY_CHECK(!folder.empty(), InvalidArgument, "the offload folder must not be empty");
  if (::mkdir(folder.c_str(), 0700) != 0 && errno != EEXIST) {
    // A parent may be missing: make the chain, then this one.
    std::error_code ec;
    std::filesystem::create_directories(folder, ec);
    if (ec) throw os_error("create the offload folder", folder, ec.value());
  }
  const int fd = ::open(folder.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) throw os_error("open the offload folder", folder, errno);
  if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    const int err = errno;
    ::close(fd);
    if (err == EWOULDBLOCK) {
      throw IoError(
          fmt::format("offload folder {} is in use by another ferry process: expected a folder "
                      "no other run holds, got a locked one (give each run its own "
                      "--offload-folder, or wait for the other to finish)",
                      folder.string()),
          ErrorFields{.file = folder.string(), .expected = "unlocked", .actual = "locked"});
    }
    throw os_error("lock the offload folder", folder, err);
  }
  auto ws = std::shared_ptr<OffloadWorkspace>(new OffloadWorkspace(folder, false, fd));
  remove_stale_temp_files(folder);
  return ws;
}

OffloadWorkspace::~OffloadWorkspace() {
  if (temporary_) {
    disarm_cleanup(cleanup_slot_);
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
    if (ec) log_warning("could not remove the temporary folder {}: {}", path_.string(), ec.message());
  }
  if (lock_fd_ >= 0) ::close(lock_fd_);  // releases the flock
}

OffloadIndex OffloadWorkspace::reusable(std::string_view fingerprint) const {
  if (temporary_) return {};
  const std::optional<Record> record = read_record(path_);
  if (!record || !record->fingerprint || *record->fingerprint != fingerprint) return {};
  OffloadIndex out;
  for (const OffloadEntry& e : record->entries) {
    if (complete(path_, e)) out.push_back(e);
  }
  return out;
}

void OffloadWorkspace::begin(std::string_view fingerprint, const OffloadIndex& entries) {
  if (temporary_) return;
  const std::optional<Record> record = read_record(path_);
  OffloadIndex owned = entries;
  if (record) {
    for (const OffloadEntry& old : record->entries) {
      if (std::none_of(owned.begin(), owned.end(),
                       [&](const OffloadEntry& e) { return e.name == old.name; })) {
        owned.push_back(old);
      }
    }
  }
  write_record(path_, std::nullopt, owned);
  if (!record) return;
  const bool same_source = record->fingerprint && *record->fingerprint == fingerprint;
  for (const OffloadEntry& old : record->entries) {
    const bool kept = same_source && std::any_of(entries.begin(), entries.end(),
                                                 [&](const OffloadEntry& e) {
                                                   return same_entry(e, old);
                                                 });
    if (!kept) {
      std::error_code ec;
      std::filesystem::remove(dat_file(path_, old), ec);
    }
  }
}

void OffloadWorkspace::publish(std::string_view fingerprint, const OffloadIndex& entries) {
  if (temporary_) return;  // read from memory (OffloadFolder::from_index), never again
  std::error_code ec;
  std::filesystem::remove(path_ / "index.json", ec);
  save_offload_index(entries, path_);
  write_record(path_, std::string(fingerprint), entries);
}

}  // namespace ferry::io
