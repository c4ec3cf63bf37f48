// A fixed table of mapped files, read from signal handlers.
#include "io/mapped_files.hpp"

#include <algorithm>
#include <atomic>
#include <cstring>

namespace convergent {
namespace {

struct Slot {
  std::atomic<const unsigned char*> base{nullptr};  // published last, after bytes and path
  std::atomic<bool> taken{false};
  std::size_t bytes = 0;
  char path[1024] = {};
};

Slot slots[64];

}  // namespace

void register_mapping(const void* base, std::size_t bytes, const std::string& path) {
  for (Slot& slot : slots) {
    bool free = false;
    if (!slot.taken.compare_exchange_strong(free, true)) continue;
    slot.bytes = bytes;
    const std::size_t n = std::min(path.size(), sizeof slot.path - 1);
    std::memcpy(slot.path, path.data(), n);
    slot.path[n] = '\0';
    slot.base.store(static_cast<const unsigned char*>(base), std::memory_order_release);
    return;
  }
}

void unregister_mapping(const void* base) {
  for (Slot& slot : slots)
    if (slot.base.load(std::memory_order_acquire) == base) {
      slot.base.store(nullptr, std::memory_order_release);
      slot.taken.store(false, std::memory_order_release);
      return;
    }
}

const char* mapping_path_at(const void* address) {
  const auto* a = static_cast<const unsigned char*>(address);
  for (const Slot& slot : slots) {
    const unsigned char* base = slot.base.load(std::memory_order_acquire);
    if (base != nullptr && a >= base && a < base + slot.bytes) return slot.path;
  }
  return nullptr;
}

}  // namespace convergent
