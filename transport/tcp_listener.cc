// TCP set-up: address parsing, the listener (bind, concurrent greetings, accept), the connector
// with back-off and its side of the greeting. The exchange is in auth.h.
#include <algorithm>
#include <array>
#include <cstring>
#include <deque>
#include <list>
#include <memory>
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

// ---- greeting, connector side ---------------------------------------------------------------

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

std::string within(std::chrono::milliseconds t) { return detail::format_seconds(t); }

// The connector's side of the exchange in auth.h, after the TCP connection is up. Throws on
// refusal, on a listener that cannot prove it knows the token, and on I/O errors.
void authenticate(asio::io_context& io, tcp::socket& sock, const std::string& host_port, const std::string& token,
                  Clock::time_point deadline, std::chrono::milliseconds timeout) {
    auto check = [&](const asio::error_code& ec) {
        if (ec == asio::error::timed_out)
            PIPELM_THROW(ErrorCode::kTimeout, "worker ", host_port, " accepted the connection but did not answer the ",
                         "greeting within ", within(timeout), ": is it busy with another job, or not a pipelm worker?");
        if (ec)
            PIPELM_THROW(ErrorCode::kPeerLost, "worker ", host_port, " closed the connection during the greeting (",
                         ec.message(), "): is a pipelm worker of the same version listening there?");
    };
    auto read = [&](void* p, size_t n) { check(read_before(io, sock, asio::buffer(p, n), deadline)); };
    auto write = [&](const void* p, size_t n) { check(write_before(io, sock, asio::buffer(p, n), deadline)); };
    const auth::Nonce client_nonce = auth::random_nonce();
    const auto hello = wire::encode_client_hello(client_nonce);
    write(hello.data(), hello.size());
    uint8_t answer = 0;
    read(&answer, 1);
    auto refused = [&](uint8_t r) {
        switch (static_cast<wire::AuthReply>(r)) {
            case wire::AuthReply::kWrongToken:
                PIPELM_THROW(ErrorCode::kInvalidArgument, "worker ", host_port, " refused the token (check --token-file)");
            case wire::AuthReply::kBadVersion:
            case wire::AuthReply::kMalformed:  // a version 1 worker's answer to our greeting
                PIPELM_THROW(ErrorCode::kProtocol, "worker ", host_port,
                             " speaks another pipelm protocol version (ours is ", wire::kProtocolVersion,
                             "): run the same pipelm build on every host");
            case wire::AuthReply::kAccepted:
            case wire::AuthReply::kChallenge: break;
        }
        PIPELM_THROW(ErrorCode::kProtocol, "worker ", host_port, " rejected our greeting (reply ", int(r), ")");
    };
    if (answer != static_cast<uint8_t>(wire::AuthReply::kChallenge)) refused(answer);
    auth::Nonce listener_nonce;
    read(listener_nonce.data(), listener_nonce.size());
    const auth::Proof mine = auth::proof(token, auth::Role::kClient, client_nonce, listener_nonce);
    write(mine.data(), mine.size());
    read(&answer, 1);
    if (answer != static_cast<uint8_t>(wire::AuthReply::kAccepted)) refused(answer);
    auth::Proof theirs;
    read(theirs.data(), theirs.size());
    if (!auth::proofs_equal(theirs, auth::proof(token, auth::Role::kListener, client_nonce, listener_nonce)))
        PIPELM_THROW(ErrorCode::kInvalidArgument, "worker ", host_port,
                     " could not prove that it knows the token: its --token-file differs from ours, or another "
                     "program listens there");
    const uint8_t ok = static_cast<uint8_t>(wire::AuthReply::kAccepted);
    write(&ok, 1);
}

}  // namespace

// ---- listener -------------------------------------------------------------------------------

namespace {
class Greeting;
}

// Everything runs on `io`, which only the thread inside accept() runs.
struct TcpListener::Impl {
    struct Admitted {
        tcp::socket socket;
        std::string remote;
    };

    asio::io_context io;
    tcp::acceptor acceptor{io};
    asio::steady_timer retry_timer{io};
    std::string token;
    TcpOptions options;
    std::string address;
    bool accepting = false;                           // an async_accept is outstanding
    std::list<std::shared_ptr<Greeting>> greetings;  // in progress, oldest first
    std::deque<Admitted> admitted;                   // authenticated, not yet handed out

    void start_accept();
    void on_accept(const asio::error_code& ec, tcp::socket sock);
    void finished(Greeting& g, bool admit);
    void close_all();
};

namespace {

// The listener's side of one greeting (auth.h), bounded by options.handshake_timeout from the
// moment the connection was accepted. finished() is called exactly once.
class Greeting : public std::enable_shared_from_this<Greeting> {
public:
    Greeting(TcpListener::Impl& owner, tcp::socket sock, std::string remote)
        : socket(std::move(sock)), remote(std::move(remote)), owner_(owner), timer_(owner.io) {}

    void start() {
        auto self = shared_from_this();
        timer_.expires_after(owner_.options.handshake_timeout);
        timer_.async_wait([self](const asio::error_code& ec) {
            if (!ec)
                self->fail("it sent no complete pipelm greeting within " +
                           within(self->owner_.options.handshake_timeout));
        });
        asio::async_read(socket, asio::buffer(hello_), [self](const asio::error_code& ec, size_t) { self->on_hello(ec); });
    }

    // Closes the connection with a warning naming the peer (no-op once finished).
    void fail(const std::string& why) {
        if (done_) return;
        done_ = true;
        PIPELM_WARN("refused a connection from ", remote, ": ", why);
        close();
        owner_.finished(*this, false);
    }

    void close() {
        asio::error_code ignored;
        timer_.cancel();
        socket.close(ignored);
    }

    tcp::socket socket;
    const std::string remote;

private:
    bool broken(const asio::error_code& ec, const char* when) {
        if (done_) return true;
        if (ec) fail(std::string("it closed the connection ") + when + " (" + ec.message() + ")");
        return done_;
    }

    // Writes `n` bytes of out_, then calls next() (or fails with `why` after the write when
    // next is null: the reply byte tells the peer why it was refused).
    void write_then(size_t n, void (Greeting::*next)(), std::string why = {}) {
        auto self = shared_from_this();
        asio::async_write(socket, asio::buffer(out_.data(), n),
                          [self, next, why = std::move(why)](const asio::error_code& ec, size_t) {
                              if (self->broken(ec, "during the greeting")) return;
                              if (next)
                                  (self.get()->*next)();
                              else
                                  self->fail(why);
                          });
    }

    void on_hello(const asio::error_code& ec) {
        if (broken(ec, "before its greeting")) return;
        const wire::ClientHello h = wire::decode_client_hello(hello_.data());
        if (!h.magic_ok) return fail("it is not a pipelm peer (bad greeting)");
        client_nonce_ = h.nonce;
        if (h.version != wire::kProtocolVersion) {
            out_[0] = static_cast<uint8_t>(wire::AuthReply::kBadVersion);
            return write_then(1, nullptr,
                              ::pipelm::detail::concat("it speaks protocol version ", h.version, ", we speak ",
                                                       wire::kProtocolVersion));
        }
        listener_nonce_ = auth::random_nonce();
        out_[0] = static_cast<uint8_t>(wire::AuthReply::kChallenge);
        std::memcpy(out_.data() + 1, listener_nonce_.data(), listener_nonce_.size());
        write_then(1 + listener_nonce_.size(), &Greeting::read_proof);
    }

    void read_proof() {
        auto self = shared_from_this();
        asio::async_read(socket, asio::buffer(proof_), [self](const asio::error_code& ec, size_t) { self->on_proof(ec); });
    }

    void on_proof(const asio::error_code& ec) {
        if (broken(ec, "before proving it knows the token")) return;
        const auth::Proof expected = auth::proof(owner_.token, auth::Role::kClient, client_nonce_, listener_nonce_);
        if (!auth::proofs_equal(proof_, expected)) {
            out_[0] = static_cast<uint8_t>(wire::AuthReply::kWrongToken);
            return write_then(1, nullptr, "wrong token (its --token-file differs from ours)");
        }
        const auth::Proof mine = auth::proof(owner_.token, auth::Role::kListener, client_nonce_, listener_nonce_);
        out_[0] = static_cast<uint8_t>(wire::AuthReply::kAccepted);
        std::memcpy(out_.data() + 1, mine.data(), mine.size());
        write_then(1 + mine.size(), &Greeting::read_confirm);
    }

    void read_confirm() {
        auto self = shared_from_this();
        asio::async_read(socket, asio::buffer(&confirm_, 1), [self](const asio::error_code& ec, size_t) {
            if (self->broken(ec, "after our proof of the token (its --token-file differs from ours?)")) return;
            if (self->confirm_ != static_cast<uint8_t>(wire::AuthReply::kAccepted))
                return self->fail("it did not accept our proof of the token");
            self->done_ = true;
            self->timer_.cancel();
            self->owner_.finished(*self, true);
        });
    }

    TcpListener::Impl& owner_;
    asio::steady_timer timer_;
    bool done_ = false;
    std::array<uint8_t, wire::kClientHelloBytes> hello_{};
    auth::Nonce client_nonce_{}, listener_nonce_{};
    auth::Proof proof_{};
    uint8_t confirm_ = 0;
    std::array<uint8_t, 1 + auth::kProofBytes> out_{};
};

}  // namespace

void TcpListener::Impl::start_accept() {
    if (accepting || !acceptor.is_open()) return;
    accepting = true;
    acceptor.async_accept([this](const asio::error_code& ec, tcp::socket sock) { on_accept(ec, std::move(sock)); });
}

void TcpListener::Impl::on_accept(const asio::error_code& ec, tcp::socket sock) {
    accepting = false;
    if (ec == asio::error::operation_aborted) return;
    if (ec) {  // e.g. the peer reset before we took it, or out of descriptors: retry shortly
        PIPELM_WARN("accepting on ", address, " failed: ", ec.message());
        retry_timer.expires_after(10ms);
        retry_timer.async_wait([this](const asio::error_code& e) {
            if (!e) start_accept();
        });
        return;
    }
    asio::error_code ignored;
    std::string remote = detail::endpoint_string(sock.remote_endpoint(ignored));
    sock.set_option(tcp::no_delay(true), ignored);
    if (greetings.size() >= std::max<size_t>(1, options.max_greetings)) {
        // The oldest goes: a flood of idle connections cannot keep a real peer out for long.
        std::shared_ptr<Greeting> oldest = greetings.front();
        oldest->fail(::pipelm::detail::concat("dropped: ", greetings.size(), " connections were greeting at once (",
                                              "the limit), the oldest goes first"));
    }
    auto g = std::make_shared<Greeting>(*this, std::move(sock), std::move(remote));
    greetings.push_back(g);
    g->start();
    start_accept();
}

void TcpListener::Impl::finished(Greeting& g, bool admit) {
    for (auto it = greetings.begin(); it != greetings.end(); ++it) {
        if (it->get() != &g) continue;
        if (admit) admitted.push_back(Admitted{std::move(g.socket), g.remote});
        greetings.erase(it);
        return;
    }
}

void TcpListener::Impl::close_all() {
    asio::error_code ignored;
    acceptor.close(ignored);
    retry_timer.cancel();
    for (auto& g : greetings) g->close();
    greetings.clear();
    admitted.clear();
}

TcpListener::TcpListener(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
TcpListener::~TcpListener() { impl_->close_all(); }

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
    Impl& im = *impl_;
    for (;;) {
        im.start_accept();  // outstanding work first: an io_context that runs out of work stops
        if (im.io.stopped()) im.io.restart();
        im.io.poll();
        while (!im.admitted.empty()) {
            Impl::Admitted a = std::move(im.admitted.front());
            im.admitted.pop_front();
            // The link gets an io_context of its own: move the descriptor over.
            detail::TcpConn conn;
            conn.io = std::make_unique<asio::io_context>();
            conn.socket = std::make_unique<tcp::socket>(*conn.io);
            conn.remote = a.remote;
            asio::error_code ec;
            const auto protocol = a.socket.local_endpoint(ec).protocol();
            if (!ec) {
                const auto fd = a.socket.release(ec);
                if (!ec) conn.socket->assign(protocol, fd, ec);
            }
            if (ec) {
                PIPELM_WARN("dropped the connection from ", a.remote, " after its greeting: ", ec.message());
                continue;
            }
            TcpOptions opts = im.options;
            if (!peer_label.empty()) opts.peer_label = peer_label;
            return detail::make_tcp_link(std::move(conn), opts);
        }
        if (Clock::now() >= deadline) break;
        im.io.run_one_until(deadline);
    }
    PIPELM_THROW(ErrorCode::kTimeout, "no pipelm peer connected to ", im.address, " within ", within(timeout));
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
            authenticate(*conn.io, *conn.socket, host_port, token, deadline, connect_timeout);
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

}  // namespace pipelm::transport
