// TLS from pgrouter to PostgreSQL servers: the client-side OpenSSL context (shared by every pool with the
// same files), the handshake on a non-blocking socket, exact reads and whole writes through an SSL object
// for the login and reset paths, and the tls-server-end-point hash SCRAM-SHA-256-PLUS binds to.
#pragma once
#include <openssl/ssl.h>

#include <memory>
#include <string>

#include "pgrouter/asio.hpp"
#include "pgrouter/net/server_tls_settings.hpp"

namespace pgrouter::net {

using error_code = boost::system::error_code;

// One SSL_CTX per distinct (sslrootcert, sslcert, sslkey) and their modification times, shared while any
// pool uses it: pools of the same settings compare equal, so a reload that changes nothing keeps their
// connections, and one after a certificate was replaced reconnects them with it.
class ClientTlsContext {
 public:
  explicit ClientTlsContext(SSL_CTX* ctx) : ctx_(ctx) {}
  ~ClientTlsContext() { SSL_CTX_free(ctx_); }
  ClientTlsContext(const ClientTlsContext&) = delete;
  ClientTlsContext& operator=(const ClientTlsContext&) = delete;
  SSL_CTX* get() const { return ctx_; }

 private:
  SSL_CTX* ctx_;
};
// nullptr with err set when a file cannot be loaded (or the key does not match the certificate).
std::shared_ptr<ClientTlsContext> client_tls_context(const ServerTlsSettings& s, std::string& err);

// Owns one SSL object; SSL_free exactly once, after a best-effort close_notify while the descriptor is ours.
struct SslDeleter {
  void operator()(SSL* ssl) const;
};
using SslPtr = std::unique_ptr<SSL, SslDeleter>;

// Handshakes as a client on s (connected, made non-blocking here). On failure returns nullptr and `why`
// says what failed, as "<reason>" to follow "TLS handshake with server X failed: ".
awaitable<SslPtr> tls_connect(tcp::socket& s, SSL_CTX* ctx, const ServerTlsSettings& settings,
                              const std::string& host, std::string& why);

awaitable<error_code> tls_read_exact(tcp::socket& s, SSL* ssl, char* dst, size_t n);
awaitable<error_code> tls_write_all(tcp::socket& s, SSL* ssl, const char* src, size_t n);

// RFC 5929 tls-server-end-point: the hash of the server's certificate with its signature's hash algorithm,
// SHA-256 when that is MD5 or SHA-1 (or unknown). Empty when there is no certificate.
std::string server_end_point_hash(SSL* ssl);
std::string certificate_end_point_hash(X509* cert);

}  // namespace pgrouter::net
