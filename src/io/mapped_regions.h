#pragma once
// The live file mappings of the process, readable from a signal handler, and the SIGBUS handler
// that uses them. Private to io: MappedFile registers each mapping it makes.
//
// Note [Truncated while mapped]
// Reading a page of a mapping past the end of its file (the file was truncated or rewritten
// under a running process) raises SIGBUS, which would kill the process without a word. The
// handler, installed once when the first mapping is registered, looks the faulting address up
// here: inside one of ferry's mappings it writes "ferry: <file> changed or was truncated while
// mapped (SIGBUS at offset N)..." to stderr and exits with kSigbusExitCode; the process cannot
// go on, as the data it was reading is gone. Otherwise it restores the previous disposition and
// lets the signal take its course. The contract, as for llama.cpp's mmap: do not modify a
// checkpoint while ferry runs it.

#include <cstdint>

namespace ferry::io {

// 128 + SIGBUS: what a shell reports for a process killed by SIGBUS.
inline constexpr int kSigbusExitCode = 135;

// Records [data, data + size_bytes) as a mapping of `file` (a NUL-terminated path that must stay
// valid until unregister_mapping) and installs the SIGBUS handler on first use. Returns the
// slot to unregister, or -1 when the fixed table is full (the mapping then works, unguarded).
int register_mapping(const void* data, std::uint64_t size_bytes, const char* file) noexcept;
// Forgets the mapping of `slot` (no-op for -1). Call before unmapping.
void unregister_mapping(int slot) noexcept;

}  // namespace ferry::io
