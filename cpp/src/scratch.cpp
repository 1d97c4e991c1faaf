#include "htsr/scratch.hpp"

#include <algorithm>
#include <cstdlib>
#include <new>
#include <utility>
#include <vector>

#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace htsr {
namespace {

constexpr std::size_t kHugePage = std::size_t(2) << 20;
constexpr std::size_t kLarge = 2 * kHugePage;  // smaller blocks: plain 64-byte-aligned memory
constexpr std::size_t kMaxHeld = 2;

struct Held {
    bool reuse = false;
    std::vector<std::pair<void*, std::size_t>> blocks;  // (memory, bytes), freed, kept for reuse
    void drop() {
        for (auto& b : blocks) std::free(b.first);
        blocks.clear();
    }
    ~Held() { drop(); }
};

Held& held() {
    thread_local Held h;
    return h;
}

}  // namespace

void set_scratch_reuse(bool on) {
    Held& h = held();
    h.reuse = on;
    if (!on) h.drop();
}

std::size_t scratch_bytes() {
    std::size_t total = 0;
    for (const auto& b : held().blocks) total += b.second;
    return total;
}

namespace detail {

void* scratch_acquire(std::size_t& bytes) {
    const bool large = bytes >= kLarge;
    const std::size_t alignment = large ? kHugePage : 64;
    bytes = (bytes + alignment - 1) / alignment * alignment;
    Held& h = held();
    if (h.reuse && large) {
        auto best = h.blocks.end();
        for (auto it = h.blocks.begin(); it != h.blocks.end(); ++it)
            if (it->second >= bytes && (best == h.blocks.end() || it->second < best->second)) best = it;
        if (best != h.blocks.end()) {
            void* memory = best->first;
            bytes = best->second;
            h.blocks.erase(best);
            return memory;
        }
        h.drop();  // all too small: free them before this thread's memory grows
    }
    void* memory = nullptr;
    if (posix_memalign(&memory, alignment, bytes) != 0) throw std::bad_alloc();
#if defined(__linux__) && defined(MADV_HUGEPAGE)
    if (large) madvise(memory, bytes, MADV_HUGEPAGE);  // advice only: failure leaves 4 KiB pages
#endif
    return memory;
}

void scratch_release(void* memory, std::size_t bytes) noexcept {
    Held& h = held();
    if (h.reuse && bytes >= kLarge && h.blocks.size() < kMaxHeld) {
        h.blocks.emplace_back(memory, bytes);
        return;
    }
    std::free(memory);
}

}  // namespace detail
}  // namespace htsr
