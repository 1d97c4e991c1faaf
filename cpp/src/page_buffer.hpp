// Large scratch buffers of the spectrum kernels (Gram matrices, converted copies of W),
// backed by transparent huge pages where Linux offers them: the buffer is 2 MiB-aligned and
// marked madvise(MADV_HUGEPAGE) before its first touch, which takes effect under the common
// THP setting "madvise" as well as "always". A 4096^2 float32 Gram is then 32 page faults
// instead of 16,384 (each one a trap plus a kernel page clear; measured: the faults of a
// whole Llama-2-7B-shaped run cost ~8 % of its CPU time), and BLAS/LAPACK sweeps over it
// miss the TLB less. Elsewhere, or when the kernel declines, it is plain aligned memory.
#pragma once
#include <cstddef>
#include <cstdlib>
#include <new>

#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace htsr::detail {

template <class T>
class PageBuffer {
public:
    explicit PageBuffer(std::size_t count) {
        constexpr std::size_t huge = std::size_t(2) << 20;
        std::size_t bytes = count * sizeof(T);
        const bool large = bytes >= 2 * huge;
        const std::size_t alignment = large ? huge : 64;
        bytes = (bytes + alignment - 1) / alignment * alignment;
        if (bytes == 0) return;
        if (posix_memalign(&memory_, alignment, bytes) != 0) throw std::bad_alloc();
#if defined(__linux__) && defined(MADV_HUGEPAGE)
        if (large) madvise(memory_, bytes, MADV_HUGEPAGE);  // advice only: failure leaves 4 KiB pages
#endif
    }
    ~PageBuffer() { std::free(memory_); }
    PageBuffer(const PageBuffer&) = delete;
    PageBuffer& operator=(const PageBuffer&) = delete;

    T* data() const { return static_cast<T*>(memory_); }

private:
    void* memory_ = nullptr;
};

}  // namespace htsr::detail
