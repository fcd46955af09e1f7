// TCP set-up: address parsing, the listener (bind, accept, token check), the connector with
// back-off, and the token file. The greeting layout is in frame.h.
#include <sys/stat.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <optional>
#include <sstream>
#include <thread>

#include "runtime/base/error.h"
#include "runtime/base/log.h"
#include "transport/frame.h"
#include "transport/tcp_socket.h"

namespace pipelm::transport {

using asio::ip::tcp;
using detail::Clock;
using namespace std::chrono_literals;

HostPort parse_host_port(const std::string& host_port) {
    auto bad = [&](const char* why) {
        PIPELM_THROW(ErrorCode::kInvalidArgument, "bad address '", host_port, "': ", why,
                     " (expected host:port, e.g. 127.0.0.1:7000, 0.0.0.0:7000 or [::1]:7000)");
    };
    HostPort hp;
    std::string port;
    if (!host_port.empty() && host_port[0] == '[') {
        const size_t close = host_port.find(']');
        if (close == std::string::npos || close + 1 >= host_port.size() || host_port[close + 1] != ':')
            bad("unterminated [IPv6] address or missing :port");
        hp.host = host_port.substr(1, close - 1);
        port = host_port.substr(close + 2);
    } else {
        const size_t colon = host_port.rfind(':');
        if (colon == std::string::npos) bad("missing :port");
        hp.host = host_port.substr(0, colon);
        port = host_port.substr(colon + 1);
        if (hp.host.find(':') != std::string::npos) bad("IPv6 addresses go in brackets");
    }
    if (hp.host.empty()) bad("missing host");
    if (port.empty() || port.size() > 5 || !std::all_of(port.begin(), port.end(), ::isdigit)) bad("port is not a number");
    const long p = std::stol(port);
    if (p > 65535) bad("port is over 65535");
    hp.port = static_cast<uint16_t>(p);
    return hp;
}

// ---- greeting, both sides ---------------------------------------------------------------

namespace {

// Reads or writes `buf` on `sock` (driven through `io`) before `deadline`. Returns the error;
// asio::error::timed_out when the deadline hit.
template <typename Buffers, bool kWrite>
asio::error_code transfer(asio::io_context& io, tcp::socket& sock, const Buffers& buf, Clock::time_point deadline) {
    bool done = false;
    asio::error_code result;
    auto handler = [&](const asio::error_code& ec, size_t) {
        result = ec;
        done = true;
    };
    if constexpr (kWrite)
        asio::async_write(sock, buf, handler);
    else
        asio::async_read(sock, buf, handler);
    if (!detail::run_until(io, done, deadline, [&] { sock.cancel(); })) return asio::error::timed_out;
    return result;
}

template <typename Buffers>
asio::error_code read_before(asio::io_context& io, tcp::socket& sock, const Buffers& buf, Clock::time_point d) {
    return transfer<Buffers, false>(io, sock, buf, d);
}
template <typename Buffers>
asio::error_code write_before(asio::io_context& io, tcp::socket& sock, const Buffers& buf, Clock::time_point d) {
    return transfer<Buffers, true>(io, sock, buf, d);
}

void reply(asio::io_context& io, tcp::socket& sock, wire::AuthReply r, Clock::time_point deadline) {
    const uint8_t byte = static_cast<uint8_t>(r);
    write_before(io, sock, asio::buffer(&byte, 1), std::min(deadline, Clock::now() + 1s));
}

// The listener's side. Reads the greeting and nothing else, checks the token in constant time,
// answers with one byte. Returns true when the peer is admitted; otherwise warns and closes.
bool admit(asio::io_context& io, tcp::socket& sock, const std::string& remote, const std::string& token,
           Clock::time_point deadline) {
    std::array<uint8_t, wire::kAuthHeaderBytes> hdr{};
    asio::error_code ec = read_before(io, sock, asio::buffer(hdr), deadline);
    auto refuse = [&](const std::string& why, std::optional<wire::AuthReply> r) {
        if (r) reply(io, sock, *r, deadline);
        PIPELM_WARN("refused a connection from ", remote, ": ", why);
        asio::error_code ignored;
        sock.close(ignored);
        return false;
    };
    if (ec == asio::error::timed_out) return refuse("it sent no pipelm greeting in time", std::nullopt);
    if (ec) return refuse("it closed before the greeting (" + ec.message() + ")", std::nullopt);
    const wire::AuthHeader h = wire::decode_auth_header(hdr.data());
    if (!h.magic_ok) return refuse("it is not a pipelm peer (bad greeting)", std::nullopt);
    if (h.token_bytes == 0 || h.token_bytes > wire::kMaxTokenBytes)
        return refuse(::pipelm::detail::concat("token length ", h.token_bytes, " out of range"), wire::AuthReply::kMalformed);
    std::string received(h.token_bytes, '\0');
    ec = read_before(io, sock, asio::buffer(received), deadline);
    if (ec) return refuse("the greeting was cut short (" + ec.message() + ")", std::nullopt);
    if (!wire::tokens_equal(token, received))
        return refuse("wrong token (its --token-file differs from ours)", wire::AuthReply::kWrongToken);
    if (h.version != wire::kProtocolVersion)
        return refuse(::pipelm::detail::concat("it speaks protocol version ", h.version, ", we speak ",
                                     wire::kProtocolVersion),
                      wire::AuthReply::kBadVersion);
    const uint8_t ok = static_cast<uint8_t>(wire::AuthReply::kAccepted);
    ec = write_before(io, sock, asio::buffer(&ok, 1), deadline);
    if (ec) return refuse("it left during the greeting (" + ec.message() + ")", std::nullopt);
    return true;
}

// The connector's side, after the TCP connection is up. Throws on refusal.
void present_token(asio::io_context& io, tcp::socket& sock, const std::string& host_port, const std::string& token,
                   Clock::time_point deadline, std::chrono::milliseconds timeout) {
    const std::vector<uint8_t> hello = wire::encode_auth_hello(token);
    asio::error_code ec = write_before(io, sock, asio::buffer(hello), deadline);
    uint8_t answer = 0;
    if (!ec) ec = read_before(io, sock, asio::buffer(&answer, 1), deadline);
    if (ec == asio::error::timed_out)
        PIPELM_THROW(ErrorCode::kTimeout, "worker ", host_port, " accepted the connection but did not answer the ",
                     "greeting within ", detail::format_seconds(timeout),
                     ": is it busy with another job, or not a pipelm worker?");
    if (ec)
        PIPELM_THROW(ErrorCode::kPeerLost, "worker ", host_port, " closed the connection during the greeting (",
                     ec.message(), "): is a pipelm worker of the same version listening there?");
    switch (static_cast<wire::AuthReply>(answer)) {
        case wire::AuthReply::kAccepted: return;
        case wire::AuthReply::kWrongToken:
            PIPELM_THROW(ErrorCode::kInvalidArgument, "worker ", host_port, " refused the token (check --token-file)");
        case wire::AuthReply::kBadVersion:
            PIPELM_THROW(ErrorCode::kProtocol, "worker ", host_port, " speaks another pipelm protocol version (ours is ",
                         wire::kProtocolVersion, "): run the same pipelm build on every host");
        case wire::AuthReply::kMalformed: break;
    }
    PIPELM_THROW(ErrorCode::kProtocol, "worker ", host_port, " rejected our greeting (reply ", int(answer), ")");
}

std::string within(std::chrono::milliseconds t) { return detail::format_seconds(t); }

}  // namespace

// ---- listener -------------------------------------------------------------------------------

struct TcpListener::Impl {
    asio::io_context io;
    tcp::acceptor acceptor{io};
    std::string token;
    TcpOptions options;
    std::string address;
};

TcpListener::TcpListener(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
TcpListener::~TcpListener() = default;

std::unique_ptr<TcpListener> TcpListener::bind(const std::string& host_port, std::string token, TcpOptions options) {
    PIPELM_CHECK(!token.empty() && token.size() <= wire::kMaxTokenBytes,
                 "the TCP token must hold 1 to ", wire::kMaxTokenBytes, " bytes (got ", token.size(), ")");
    const HostPort hp = parse_host_port(host_port);
    auto impl = std::make_unique<Impl>();
    asio::error_code ec;
    tcp::resolver resolver(impl->io);
    auto results = resolver.resolve(hp.host, std::to_string(hp.port),
                                    tcp::resolver::passive | tcp::resolver::numeric_service, ec);
    if (ec || results.empty())
        PIPELM_THROW(ErrorCode::kIo, "cannot listen on ", host_port, ": cannot resolve '", hp.host, "' (",
                     ec ? ec.message() : "no address", ")");
    const tcp::endpoint ep = results.begin()->endpoint();
    auto& acc = impl->acceptor;
    acc.open(ep.protocol(), ec);
    if (!ec) acc.set_option(tcp::acceptor::reuse_address(true), ec);
    if (!ec) acc.bind(ep, ec);
    if (ec == asio::error::address_in_use)
        PIPELM_THROW(ErrorCode::kIo, "address ", host_port,
                     " is in use: pick another --listen port or stop the process that holds it");
    if (ec)
        PIPELM_THROW(ErrorCode::kIo, "cannot listen on ", host_port, ": ", ec.message(),
                     " (give an address of this host, or 0.0.0.0:PORT for all interfaces)");
    acc.listen(asio::socket_base::max_listen_connections, ec);
    if (ec) PIPELM_THROW(ErrorCode::kIo, "cannot listen on ", host_port, ": ", ec.message());
    impl->address = detail::endpoint_string(acc.local_endpoint(ec));
    impl->token = std::move(token);
    impl->options = std::move(options);
    return std::unique_ptr<TcpListener>(new TcpListener(std::move(impl)));
}

uint16_t TcpListener::port() const {
    asio::error_code ec;
    return impl_->acceptor.local_endpoint(ec).port();
}
std::string TcpListener::address() const { return impl_->address; }
const std::string& TcpListener::token() const { return impl_->token; }
const TcpOptions& TcpListener::options() const { return impl_->options; }

std::shared_ptr<Link> TcpListener::accept(std::chrono::milliseconds timeout, const std::string& peer_label) {
    const auto deadline = detail::deadline_after(timeout);
    for (;;) {
        detail::TcpConn conn;
        conn.io = std::make_unique<asio::io_context>();
        conn.socket = std::make_unique<tcp::socket>(*conn.io);
        bool done = false;
        asio::error_code aec;
        impl_->acceptor.async_accept(*conn.socket, [&](const asio::error_code& ec) {
            aec = ec;
            done = true;
        });
        if (!detail::run_until(impl_->io, done, deadline, [&] { impl_->acceptor.cancel(); }) || aec == asio::error::operation_aborted)
            PIPELM_THROW(ErrorCode::kTimeout, "no pipelm peer connected to ", impl_->address, " within ", within(timeout));
        if (aec) {  // e.g. the peer reset before we took it, or out of descriptors: keep serving
            PIPELM_WARN("accepting on ", impl_->address, " failed: ", aec.message());
            std::this_thread::sleep_for(10ms);
            continue;
        }
        asio::error_code ec;
        conn.remote = detail::endpoint_string(conn.socket->remote_endpoint(ec));
        conn.socket->set_option(tcp::no_delay(true), ec);
        const auto greet_deadline = std::min(deadline, Clock::now() + impl_->options.handshake_timeout);
        if (!admit(*conn.io, *conn.socket, conn.remote, impl_->token, greet_deadline)) continue;
        TcpOptions opts = impl_->options;
        if (!peer_label.empty()) opts.peer_label = peer_label;
        return detail::make_tcp_link(std::move(conn), opts);
    }
}

// ---- connector ------------------------------------------------------------------------------

std::shared_ptr<Link> tcp_connect(const std::string& host_port, const std::string& token,
                                  std::chrono::milliseconds connect_timeout, const TcpOptions& options) {
    PIPELM_CHECK(!token.empty() && token.size() <= wire::kMaxTokenBytes,
                 "the TCP token must hold 1 to ", wire::kMaxTokenBytes, " bytes (got ", token.size(), ")");
    const HostPort hp = parse_host_port(host_port);
    const auto deadline = detail::deadline_after(connect_timeout);
    auto backoff = std::chrono::milliseconds(100);
    std::string last_error = "none";
    for (;;) {
        detail::TcpConn conn;
        conn.io = std::make_unique<asio::io_context>();
        conn.socket = std::make_unique<tcp::socket>(*conn.io);
        conn.remote = host_port;
        asio::error_code ec;
        tcp::resolver resolver(*conn.io);
        auto endpoints = resolver.resolve(hp.host, std::to_string(hp.port), tcp::resolver::numeric_service, ec);
        if (!ec) {
            bool done = false;
            asio::async_connect(*conn.socket, endpoints, [&](const asio::error_code& e, const tcp::endpoint&) {
                ec = e;
                done = true;
            });
            if (!detail::run_until(*conn.io, done, deadline, [&] {
                    asio::error_code ignored;
                    conn.socket->close(ignored);
                }))
                ec = asio::error::timed_out;
        }
        if (!ec) {
            conn.socket->set_option(tcp::no_delay(true), ec);
            present_token(*conn.io, *conn.socket, host_port, token, deadline, connect_timeout);
            return detail::make_tcp_link(std::move(conn), options);
        }
        last_error = ec.message();
        const auto now = Clock::now();
        if (now >= deadline)
            PIPELM_THROW(ErrorCode::kTimeout, "could not reach worker ", host_port, " within ", within(connect_timeout),
                         ": start `pipelm worker --listen ", host_port,
                         "` there or check the address (last error: ", last_error, ")");
        std::this_thread::sleep_until(std::min(now + backoff, deadline));
        backoff = std::min<std::chrono::milliseconds>(backoff * 2, 2s);
    }
}

// ---- token file -----------------------------------------------------------------------------

std::string read_token_file(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in)
        PIPELM_THROW(ErrorCode::kIo, "cannot read token file ", path, ": ", std::strerror(errno),
                     " (create it with e.g. `openssl rand -hex 32 > ", path, "` and copy it to every host)");
    std::ostringstream os;
    os << in.rdbuf();
    std::string token = os.str();
    const char* ws = " \t\r\n\v\f";
    const size_t first = token.find_first_not_of(ws);
    if (first == std::string::npos)
        PIPELM_THROW(ErrorCode::kInvalidArgument, "token file ", path,
                     " is empty: put a shared secret in it (e.g. `openssl rand -hex 32 > ", path, "`)");
    token = token.substr(first, token.find_last_not_of(ws) - first + 1);
    if (token.size() > wire::kMaxTokenBytes)
        PIPELM_THROW(ErrorCode::kInvalidArgument, "token file ", path, " holds ", token.size(),
                     " bytes; tokens are limited to ", wire::kMaxTokenBytes);
    struct stat st {};
    if (::stat(path.c_str(), &st) == 0 && (st.st_mode & 077) != 0)
        PIPELM_WARN("token file ", path, " is readable by other users: chmod 600 ", path);
    return token;
}

}  // namespace pipelm::transport
