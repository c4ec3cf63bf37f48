// Which input file a memory address belongs to, for the SIGBUS handler: a mapped file that shrinks while
// it is read (truncated, or rewritten in place by another program) raises SIGBUS on the vanished pages,
// and the handler names the file. Lookups are async-signal-safe (no allocation, no locks).
#pragma once

#include <cstddef>
#include <string>

namespace convergent {

// Records that [base, base + bytes) maps `path` (up to 64 mappings at once; more are left unnamed).
void register_mapping(const void* base, std::size_t bytes, const std::string& path);
// Forgets the mapping that starts at `base`.
void unregister_mapping(const void* base);
// The path of the registered mapping that holds `address`, or nullptr. Async-signal-safe.
const char* mapping_path_at(const void* address);

}  // namespace convergent
