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
    bool avx512 = false;       // F + DQ + BW + VL
    bool avx512_vnni = false;  // + AVX512-VNNI
    bool avx_vnni = false;     // AVX-VNNI (VEX vpdpbusd on ymm)
    Features() {
        unsigned a, b, c, d;
        if (!__get_cpuid(1, &a, &b, &c, &d)) return;
        const bool osxsave = c & (1u << 27), fma = c & (1u << 12), f16c = c & (1u << 29), avx = c & (1u << 28);
        if (!osxsave || !avx) return;
        const uint64_t xcr0 = xgetbv0();
        if ((xcr0 & 0x6) != 0x6) return;  // XMM and YMM state enabled by the OS
        if (__get_cpuid_max(0, nullptr) < 7) return;
        __cpuid_count(7, 0, a, b, c, d);
        const bool avx2 = b & (1u << 5), avx512f = b & (1u << 16), dq = b & (1u << 17), bw = b & (1u << 30),
                   vl = b & (1u << 31), vnni512 = c & (1u << 11);
        avx2_fma_f16c = avx2 && fma && f16c;
        this->avx512f = avx2_fma_f16c && avx512f && (xcr0 & 0xe6) == 0xe6;  // + opmask, ZMM_Hi256, Hi16_ZMM
        avx512 = this->avx512f && dq && bw && vl;
        avx512_vnni = avx512 && vnni512;
        __cpuid_count(7, 1, a, b, c, d);
        avx_vnni = avx2_fma_f16c && (a & (1u << 4));
    }
};
#else
struct Features {
    bool avx2_fma_f16c = false;
    bool avx512f = false;
    bool avx512 = false;
    bool avx512_vnni = false;
    bool avx_vnni = false;
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

bool cpu_supports(Isa isa) {
    const Features& f = features();
    switch (isa) {
        case Isa::kScalar: return true;
        case Isa::kAvx2: return f.avx2_fma_f16c;
        case Isa::kAvx2Vnni: return f.avx_vnni;
        case Isa::kAvx512: return f.avx512;
        case Isa::kAvx512Vnni: return f.avx512_vnni;
    }
    return false;
}

namespace {

bool parse_isa(const char* name, Isa* out) {
    static const struct {
        const char* name;
        Isa isa;
    } kNames[] = {{"scalar", Isa::kScalar},
                  {"avx2", Isa::kAvx2},
                  {"avx2vnni", Isa::kAvx2Vnni},
                  {"avx512", Isa::kAvx512},
                  {"avx512vnni", Isa::kAvx512Vnni}};
    for (const auto& n : kNames)
        if (std::strcmp(name, n.name) == 0) {
            *out = n.isa;
            return true;
        }
    return false;
}

Isa best_isa() {
    // $PIPELM_CPU_ISA picks a lower level for a whole process (benchmarks of one ISA against
    // another on the same machine; the results are the same bits either way).
    const char* env = std::getenv("PIPELM_CPU_ISA");
    Isa forced;
    if (env != nullptr && parse_isa(env, &forced) && cpu_supports(forced)) return forced;
    for (Isa i : {Isa::kAvx512Vnni, Isa::kAvx512, Isa::kAvx2Vnni, Isa::kAvx2})
        if (cpu_supports(i)) return i;
    return Isa::kScalar;
}

}  // namespace

Isa active_isa() {
    const int f = g_forced.load(std::memory_order_relaxed);
    if (f >= 0) return static_cast<Isa>(f);
    static const Isa best = best_isa();
    return best;
}

const char* isa_name(Isa isa) {
    switch (isa) {
        case Isa::kScalar: return "scalar";
        case Isa::kAvx2: return "avx2+fma+f16c";
        case Isa::kAvx2Vnni: return "avx2+avx-vnni";
        case Isa::kAvx512: return "avx512f/dq/bw/vl";
        case Isa::kAvx512Vnni: return "avx512f/dq/bw/vl+vnni";
    }
    return "?";
}

}  // namespace detail

const char* cpu_isa_name() { return detail::isa_name(detail::active_isa()); }

bool force_cpu_isa(const char* name) {
    using detail::Isa;
    if (name == nullptr || std::strcmp(name, "auto") == 0) {
        detail::g_forced.store(-1);
        return true;
    }
    Isa isa;
    if (!detail::parse_isa(name, &isa) || !detail::cpu_supports(isa)) return false;
    detail::g_forced.store(static_cast<int>(isa));
    return true;
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
