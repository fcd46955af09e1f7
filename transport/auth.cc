// Challenge-response primitives on libsodium (see auth.h for the exchange) and the token file.
#include "transport/auth.h"

#include <fcntl.h>
#include <sodium.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "runtime/base/error.h"
#include "transport/frame.h"
#include "transport/tcp_link.h"

namespace pipelm::transport::auth {
namespace {

void init_sodium() {
    // sodium_init is thread-safe and idempotent; it returns -1 only when it cannot start.
    static const int status = sodium_init();
    if (status < 0)
        PIPELM_THROW(ErrorCode::kInternal, "libsodium failed to initialise: cannot authenticate TCP peers");
}

}  // namespace

Nonce random_nonce() {
    init_sodium();
    Nonce n;
    randombytes_buf(n.data(), n.size());
    return n;
}

Proof proof(const std::string& token, Role role, const Nonce& client_nonce, const Nonce& listener_nonce) {
    init_sodium();
    static const char kClientLabel[] = "pipelm client";
    static const char kListenerLabel[] = "pipelm listener";
    const char* label = role == Role::kClient ? kClientLabel : kListenerLabel;
    const size_t label_bytes = role == Role::kClient ? sizeof kClientLabel : sizeof kListenerLabel;  // with the NUL
    crypto_auth_hmacsha256_state st;
    crypto_auth_hmacsha256_init(&st, reinterpret_cast<const unsigned char*>(token.data()), token.size());
    crypto_auth_hmacsha256_update(&st, reinterpret_cast<const unsigned char*>(label), label_bytes);
    crypto_auth_hmacsha256_update(&st, client_nonce.data(), client_nonce.size());
    crypto_auth_hmacsha256_update(&st, listener_nonce.data(), listener_nonce.size());
    Proof p;
    crypto_auth_hmacsha256_final(&st, p.data());
    sodium_memzero(&st, sizeof st);
    return p;
}

bool proofs_equal(const Proof& a, const Proof& b) noexcept { return sodium_memcmp(a.data(), b.data(), a.size()) == 0; }

}  // namespace pipelm::transport::auth

namespace pipelm::transport {

std::string read_token_file(const std::string& path) {
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0)
        PIPELM_THROW(ErrorCode::kIo, "cannot read token file ", path, ": ", std::strerror(errno),
                     " (create it with e.g. `openssl rand -hex 32 > ", path, "` and copy it to every host)");
    std::string token;
    try {
        struct stat st {};
        if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode))
            PIPELM_THROW(ErrorCode::kIo, "token file ", path, " is not a regular file");
        // As ssh does for keys: a secret that other users can read (or replace) is no secret.
        if ((st.st_mode & 077) != 0)
            PIPELM_THROW(ErrorCode::kInvalidArgument, "token file ", path, " is accessible by group or others (mode 0",
                         std::oct, (st.st_mode & 0777), std::dec, "): run `chmod 600 ", path, "`");
        constexpr off_t kMaxFileBytes = 64 << 10;  // the token plus generous whitespace
        if (st.st_size > kMaxFileBytes)
            PIPELM_THROW(ErrorCode::kInvalidArgument, "token file ", path, " holds ", st.st_size,
                         " bytes; tokens are limited to ", wire::kMaxTokenBytes);
        char buf[4096];
        for (;;) {
            const ssize_t n = ::read(fd, buf, sizeof buf);
            if (n < 0 && errno == EINTR) continue;
            if (n < 0) PIPELM_THROW(ErrorCode::kIo, "cannot read token file ", path, ": ", std::strerror(errno));
            if (n == 0) break;
            token.append(buf, static_cast<size_t>(n));
            if (token.size() > static_cast<size_t>(kMaxFileBytes))
                PIPELM_THROW(ErrorCode::kInvalidArgument, "token file ", path, " is longer than ", kMaxFileBytes,
                             " bytes; tokens are limited to ", wire::kMaxTokenBytes);
        }
    } catch (...) {
        ::close(fd);
        throw;
    }
    ::close(fd);
    const char* ws = " \t\r\n\v\f";
    const size_t first = token.find_first_not_of(ws);
    if (first == std::string::npos)
        PIPELM_THROW(ErrorCode::kInvalidArgument, "token file ", path,
                     " is empty: put a shared secret in it (e.g. `openssl rand -hex 32 > ", path, "`)");
    token = token.substr(first, token.find_last_not_of(ws) - first + 1);
    if (token.size() > wire::kMaxTokenBytes)
        PIPELM_THROW(ErrorCode::kInvalidArgument, "token file ", path, " holds ", token.size(),
                     " bytes; tokens are limited to ", wire::kMaxTokenBytes);
    return token;
}

}  // namespace pipelm::transport
