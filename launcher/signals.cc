#include "launcher/signals.h"

#include <unistd.h>

#include <atomic>
#include <csignal>

namespace pipelm::launcher {
namespace {

std::atomic<int> g_signals{0};

extern "C" void on_signal(int sig) {
    if (g_signals.fetch_add(1) >= 1) {
        static const char msg[] = "\npipelm: interrupted twice, exiting now\n";
        (void)!::write(2, msg, sizeof msg - 1);
        ::_exit(128 + sig);
    }
}

}  // namespace

void install_signal_handlers() {
    struct sigaction sa {};
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = 0;
    sigaction(SIGINT, &sa, nullptr);
    sigaction(SIGTERM, &sa, nullptr);
    std::signal(SIGPIPE, SIG_IGN);
}

bool interrupted() { return g_signals.load() > 0; }

void clear_interrupt() { g_signals.store(0); }

}  // namespace pipelm::launcher
