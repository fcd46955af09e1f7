// Fuzz target: the TCP greeting as a listener receives it from a client (transport/auth.h,
// transport/frame.h, transport/tcp_listener.cc Greeting): the 40-byte ClientHello parsed by
// wire::decode_client_hello, then — for a well-formed hello of our version — the client's 32-byte
// proof checked with auth::proof / auth::proofs_equal against a fixed token and listener nonce.
// Every read is fixed-size, so there is no length to lie about; the checks are that nothing
// crashes, a parsed hello re-encodes to the same bytes, and a proof that does not come from the
// token is never accepted (a proof made with the token always is).
// Not covered: the client side's reading of the listener's replies (tcp_listener.cc
// connect_worker: one reply byte, a 32-byte nonce, one reply byte, a 32-byte proof) is inline
// over a socket; it only compares fixed-size bytes.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>

#include "runtime/base/error.h"
#include "transport/auth.h"
#include "transport/frame.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    using namespace pipelm::transport;
    if (size < wire::kClientHelloBytes) return 0;
    const wire::ClientHello h = wire::decode_client_hello(data);
    if (h.magic_ok) {
        const auto again = wire::encode_client_hello(h.nonce, h.version);
        if (std::memcmp(again.data(), data, again.size()) != 0) __builtin_trap();
    }
    if (!h.magic_ok || h.version != wire::kProtocolVersion) return 0;
    data += wire::kClientHelloBytes;
    size -= wire::kClientHelloBytes;
    if (size < auth::kProofBytes) return 0;
    static const std::string token = "fuzz token: the listener's --token-file";
    auth::Nonce listener_nonce{};
    for (size_t i = 0; i < listener_nonce.size(); ++i) listener_nonce[i] = static_cast<uint8_t>(0xA5 ^ i);
    auth::Proof sent;
    std::memcpy(sent.data(), data, sent.size());
    const auth::Proof expected = auth::proof(token, auth::Role::kClient, h.nonce, listener_nonce);
    const bool accepted = auth::proofs_equal(sent, expected);
    if (accepted != (std::memcmp(sent.data(), expected.data(), sent.size()) == 0)) __builtin_trap();
    // A listener's proof is never a valid client proof (no reflection).
    const auth::Proof mine = auth::proof(token, auth::Role::kListener, h.nonce, listener_nonce);
    if (auth::proofs_equal(mine, expected)) __builtin_trap();
    return 0;
}
