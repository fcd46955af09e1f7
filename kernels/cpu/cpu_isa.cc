// CPU feature detection, ISA override for tests/benchmarks, and the AMX permission request.
#include <atomic>
#include <cstdlib>
#include <cstring>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif
#if defined(__linux__)
#include <sys/syscall.h>
#include <unistd.h>
#endif

#include "kernels/cpu/matmul_internal.h"
#include "kernels/matmul.h"

namespace pipelm::kernels {
namespace detail {
namespace {

#if defined(__x86_64__) || defined(__i386__)
uint64_t xgetbv0() {
    uint32_t eax, edx;
    __asm__ volatile("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0));
    return (static_cast<uint64_t>(edx) << 32) | eax;
}

struct Features {
    bool avx2_fma_f16c = false;
    bool avx512f = false;
    Features() {
        unsigned a, b, c, d;
        if (!__get_cpuid(1, &a, &b, &c, &d)) return;
        const bool osxsave = c & (1u << 27), fma = c & (1u << 12), f16c = c & (1u << 29), avx = c & (1u << 28);
        if (!osxsave || !avx) return;
        const uint64_t xcr0 = xgetbv0();
        if ((xcr0 & 0x6) != 0x6) return;  // XMM and YMM state enabled by the OS
        if (__get_cpuid_max(0, nullptr) < 7) return;
        __cpuid_count(7, 0, a, b, c, d);
        const bool avx2 = b & (1u << 5), avx512f = b & (1u << 16);
        avx2_fma_f16c = avx2 && fma && f16c;
        this->avx512f = avx512f && (xcr0 & 0xe6) == 0xe6;  // + opmask, ZMM_Hi256, Hi16_ZMM
    }
};
#else
struct Features {
    bool avx2_fma_f16c = false;
    bool avx512f = false;
};
#endif

const Features& features() {
    static const Features f;
    return f;
}

// -1: automatic; otherwise an Isa value forced by force_cpu_isa().
std::atomic<int> g_forced{-1};

}  // namespace

bool cpu_has_avx2_fma_f16c() { return features().avx2_fma_f16c; }
bool cpu_has_avx512f() { return features().avx512f; }

Isa active_isa() {
    const int f = g_forced.load(std::memory_order_relaxed);
    if (f >= 0) return static_cast<Isa>(f);
    return cpu_has_avx2_fma_f16c() ? Isa::kAvx2 : Isa::kScalar;
}

}  // namespace detail

const char* cpu_isa_name() {
    switch (detail::active_isa()) {
        case detail::Isa::kAvx2: return "avx2+fma+f16c";
        default: return "scalar";
    }
}

bool force_cpu_isa(const char* name) {
    using detail::Isa;
    if (name == nullptr || std::strcmp(name, "auto") == 0) {
        detail::g_forced.store(-1);
        return true;
    }
    if (std::strcmp(name, "scalar") == 0) {
        detail::g_forced.store(static_cast<int>(Isa::kScalar));
        return true;
    }
    if (std::strcmp(name, "avx2") == 0 && detail::cpu_has_avx2_fma_f16c()) {
        detail::g_forced.store(static_cast<int>(Isa::kAvx2));
        return true;
    }
    return false;
}

bool request_amx() {
#if defined(__linux__) && defined(__x86_64__) && defined(SYS_arch_prctl)
    constexpr int kArchReqXcompPerm = 0x1023;
    constexpr int kArchGetXcompPerm = 0x1022;
    constexpr int kXfeatureXtiledata = 18;
    if (syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) != 0) return false;
    unsigned long bitmask = 0;
    if (syscall(SYS_arch_prctl, kArchGetXcompPerm, &bitmask) != 0) return false;
    return (bitmask & (1ul << kXfeatureXtiledata)) != 0;
#else
    return false;
#endif
}

}  // namespace pipelm::kernels
