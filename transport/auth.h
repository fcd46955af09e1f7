// Mutual challenge-response authentication of TCP peers with a shared token (HMAC-SHA256,
// libsodium). The token itself never crosses the network: each side proves that it knows it by
// an HMAC over both sides' fresh random nonces, with a different label per role so that a proof
// cannot be reflected back. Wire order (all fixed-size, see frame.h):
//
//   client -> listener  ClientHello: "PLMA" | u16 version | u16 0 | client nonce (32)
//   listener -> client  AuthReply::kChallenge | listener nonce (32)   (or kBadVersion and close)
//   client -> listener  client proof  = HMAC(token, "pipelm client" | Nc | Ns)        (32)
//   listener -> client  AuthReply::kAccepted | listener proof = HMAC(token, "pipelm listener" | Nc | Ns)
//                       (or kWrongToken and close)
//   client -> listener  AuthReply::kAccepted once the listener's proof checks out (else close)
//
// The client proves first, so a listener reachable by anyone gives nothing computed with the
// token to a peer that has not shown it knows the token.
#pragma once
#include <array>
#include <cstdint>
#include <string>

namespace pipelm::transport::auth {

constexpr size_t kNonceBytes = 32;
constexpr size_t kProofBytes = 32;

using Nonce = std::array<uint8_t, kNonceBytes>;
using Proof = std::array<uint8_t, kProofBytes>;

enum class Role : uint8_t { kClient = 1, kListener = 2 };

// A fresh nonce from the system's CSPRNG. Throws Error{kInternal} if libsodium cannot start.
Nonce random_nonce();

// HMAC-SHA256 keyed by `token` over the role's label, the client's and the listener's nonce.
Proof proof(const std::string& token, Role role, const Nonce& client_nonce, const Nonce& listener_nonce);

// Constant-time comparison.
bool proofs_equal(const Proof& a, const Proof& b) noexcept;

}  // namespace pipelm::transport::auth
