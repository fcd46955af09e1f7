// Helper process for tcp_faults_test: connects to 127.0.0.1:<port> with <token>, sends
// "ready", then idles (heartbeats flow) until killed; exits by itself after 60 s.
#include <chrono>
#include <cstdio>
#include <string>
#include <thread>

#include "transport/tcp_link.h"

int main(int argc, char** argv) {
    if (argc != 3) {
        std::fprintf(stderr, "usage: %s PORT TOKEN\n", argv[0]);
        return 2;
    }
    try {
        auto link = pipelm::transport::tcp_connect(std::string("127.0.0.1:") + argv[1], argv[2],
                                                   std::chrono::seconds(10));
        pipelm::transport::Message m;
        m.control = "ready";
        link->send(std::move(m));
        link->flush();
        std::this_thread::sleep_for(std::chrono::seconds(60));
    } catch (const std::exception& e) {
        std::fprintf(stderr, "tcp peer: %s\n", e.what());
        return 1;
    }
    return 0;
}
