// Scratch memory of the spectrum kernels (Gram matrices, converted copies of W).
//
// Large blocks are 2 MiB-aligned and marked madvise(MADV_HUGEPAGE) before their first touch
// (Linux; honoured under the common THP setting "madvise" and under "always"): a 4096^2
// float32 Gram is then 32 page faults instead of 16,384. Fresh memory still has to be zeroed
// by the kernel (7 % of the CPU of a Llama-2-7B-shaped float32 run, perf: clear_page under
// the first touch of the Gram and of the converted copy), so a thread analysing one matrix
// after another can keep its blocks: set_scratch_reuse(true) makes the calling thread hold
// at most two freed blocks and hand them to its next kernels (a block is reused only for a
// request it covers; a request that outgrows them frees them first, so idle memory is never
// more than what the thread's largest matrix needed). Off (the default) frees at once.
#pragma once
#include <cstddef>

namespace htsr {

/// Scratch reuse for the calling thread; turning it off frees the blocks it holds.
void set_scratch_reuse(bool on);
/// Bytes of freed scratch blocks the calling thread holds for reuse.
std::size_t scratch_bytes();

namespace detail {

void* scratch_acquire(std::size_t& bytes);  ///< at least `bytes` (rounded up in place); throws std::bad_alloc
void scratch_release(void* memory, std::size_t bytes) noexcept;

/// RAII scratch array of `count` T (contents undefined).
template <class T>
class ScratchBuffer {
public:
    explicit ScratchBuffer(std::size_t count) : bytes_(count * sizeof(T)) {
        if (bytes_) memory_ = scratch_acquire(bytes_);
    }
    ~ScratchBuffer() {
        if (memory_) scratch_release(memory_, bytes_);
    }
    ScratchBuffer(const ScratchBuffer&) = delete;
    ScratchBuffer& operator=(const ScratchBuffer&) = delete;

    T* data() const { return static_cast<T*>(memory_); }

private:
    std::size_t bytes_;
    void* memory_ = nullptr;
};

}  // namespace detail
}  // namespace htsr
