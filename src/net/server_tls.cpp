// Client-side TLS towards PostgreSQL servers (see net/server_tls.hpp).
#include "pgrouter/net/server_tls.hpp"

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/objects.h>
#include <openssl/x509v3.h>

#include <boost/asio/ssl/error.hpp>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <map>
#include <mutex>
#include <tuple>

namespace pgrouter::net {

namespace {

std::string openssl_error(const char* fallback) {
  unsigned long e = ERR_get_error();
  ERR_clear_error();
  if (!e) return fallback;
  const char* reason = ERR_reason_error_string(e);
  return reason ? reason : fallback;
}

SSL_CTX* build_context(const ServerTlsSettings& s, std::string& err) {
  SSL_CTX* ctx = SSL_CTX_new(TLS_client_method());
  if (!ctx) {
    err = "cannot create a TLS context: " + openssl_error("out of memory");
    return nullptr;
  }
  SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
  SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION);
  // The relay retries a short write from where it stopped, possibly from a moved buffer.
  SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
  auto fail = [&](std::string what) {
    err = std::move(what) + ": " + openssl_error("unknown error");
    SSL_CTX_free(ctx);
    return nullptr;
  };
  if (!s.sslrootcert.empty() && SSL_CTX_load_verify_locations(ctx, s.sslrootcert.c_str(), nullptr) != 1)
    return fail("cannot load sslrootcert " + s.sslrootcert);
  if (!s.sslcert.empty()) {
    if (SSL_CTX_use_certificate_chain_file(ctx, s.sslcert.c_str()) != 1)
      return fail("cannot load sslcert " + s.sslcert);
    if (SSL_CTX_use_PrivateKey_file(ctx, s.sslkey.c_str(), SSL_FILETYPE_PEM) != 1)
      return fail("cannot load sslkey " + s.sslkey);
    if (SSL_CTX_check_private_key(ctx) != 1) return fail("sslkey does not match sslcert");
  }
  return ctx;
}

}  // namespace

std::shared_ptr<ClientTlsContext> client_tls_context(const ServerTlsSettings& s, std::string& err) {
  // Workers build their pools' settings concurrently; the cache is touched only then, never per connection.
  // The files' modification times are part of the key: a reload after a certificate was replaced in place
  // builds a new context, and the pools using it reconnect (their targets no longer compare equal).
  auto stamp = [](const std::string& path) -> std::string {
    if (path.empty()) return "";
    std::error_code ec;
    auto modified = std::filesystem::last_write_time(path, ec).time_since_epoch().count();
    return path + "@" + std::to_string(modified);
  };
  static std::mutex mu;
  static std::map<std::tuple<std::string, std::string, std::string>, std::weak_ptr<ClientTlsContext>> cache;
  std::lock_guard lock(mu);
  auto& slot = cache[{stamp(s.sslrootcert), stamp(s.sslcert), stamp(s.sslkey)}];
  if (auto ctx = slot.lock()) return ctx;
  SSL_CTX* raw = build_context(s, err);
  if (!raw) return nullptr;
  auto ctx = std::make_shared<ClientTlsContext>(raw);
  slot = ctx;
  return ctx;
}

void SslDeleter::operator()(SSL* ssl) const { SSL_free(ssl); }

namespace {

// OpenSSL 3 reports a peer that closed without close_notify as an error of its own.
bool peer_closed(unsigned long e) {
#ifdef SSL_R_UNEXPECTED_EOF_WHILE_READING
  return e && ERR_GET_LIB(e) == ERR_LIB_SSL && ERR_GET_REASON(e) == SSL_R_UNEXPECTED_EOF_WHILE_READING;
#else
  return false;
#endif
}

// Why a handshake step failed, as a client would want to read it.
std::string handshake_failure(SSL* ssl, int ret, int code) {
  long verify = SSL_get_verify_result(ssl);
  unsigned long e = ERR_peek_error();
  if (verify != X509_V_OK && e && ERR_GET_REASON(e) == SSL_R_CERTIFICATE_VERIFY_FAILED) {
    ERR_clear_error();
    return std::string("certificate verify failed: ") + X509_verify_cert_error_string(verify);
  }
  if (code == SSL_ERROR_SYSCALL && !e)
    return ret == 0 || errno == 0 ? "the server closed the connection" : std::string(std::strerror(errno));
  if (peer_closed(e)) {
    ERR_clear_error();
    return "the server closed the connection";
  }
  if (code == SSL_ERROR_ZERO_RETURN) return "the server closed the connection";
  return openssl_error("unknown TLS error");
}

}  // namespace

awaitable<SslPtr> tls_connect(tcp::socket& s, SSL_CTX* ctx, const ServerTlsSettings& settings,
                              const std::string& host, std::string& why) {
  SslPtr ssl(SSL_new(ctx));
  error_code ec;
  s.native_non_blocking(true, ec);
  if (!ssl || ec || SSL_set_fd(ssl.get(), s.native_handle()) != 1) {
    why = "cannot set up TLS: " + openssl_error(ec ? ec.message().c_str() : "out of memory");
    co_return nullptr;
  }
  error_code not_ip;
  asio::ip::make_address(host, not_ip);
  // SNI carries host names only (RFC 6066), as libpq sends it.
  if (not_ip) SSL_set_tlsext_host_name(ssl.get(), host.c_str());
  bool verify = settings.sslmode == SslMode::verify_ca || settings.sslmode == SslMode::verify_full ||
                (settings.sslmode == SslMode::require && !settings.sslrootcert.empty());
  SSL_set_verify(ssl.get(), verify ? SSL_VERIFY_PEER : SSL_VERIFY_NONE, nullptr);
  if (settings.sslmode == SslMode::verify_full) {
    if (not_ip)
      SSL_set1_host(ssl.get(), host.c_str());
    else
      X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl.get()), host.c_str());
  }
  for (;;) {
    ERR_clear_error();
    errno = 0;
    int r = SSL_connect(ssl.get());
    if (r == 1) co_return ssl;
    int code = SSL_get_error(ssl.get(), r);
    if (code != SSL_ERROR_WANT_READ && code != SSL_ERROR_WANT_WRITE) {
      why = handshake_failure(ssl.get(), r, code);
      co_return nullptr;
    }
    co_await s.async_wait(code == SSL_ERROR_WANT_READ ? tcp::socket::wait_read : tcp::socket::wait_write,
                          asio::redirect_error(use_awaitable, ec));
    if (ec) {
      why = "the connection broke (" + ec.message() + ")";
      co_return nullptr;
    }
  }
}

namespace {

// One SSL_read/SSL_write step's failure as an error code; 0 when it only has to wait (want_write says for
// what).
error_code tls_step_error(SSL* ssl, int ret, bool& want_write, bool& wait) {
  int code = SSL_get_error(ssl, ret);
  wait = code == SSL_ERROR_WANT_READ || code == SSL_ERROR_WANT_WRITE;
  want_write = code == SSL_ERROR_WANT_WRITE;
  if (wait) return {};
  if (code == SSL_ERROR_ZERO_RETURN || (code == SSL_ERROR_SYSCALL && ERR_peek_error() == 0 && errno == 0) ||
      peer_closed(ERR_peek_error())) {
    ERR_clear_error();
    return asio::error::eof;
  }
  if (code == SSL_ERROR_SYSCALL && ERR_peek_error() == 0)
    return error_code(errno, boost::system::system_category());
  unsigned long e = ERR_get_error();
  ERR_clear_error();
  return error_code(int(e ? e : 1), asio::error::get_ssl_category());
}

}  // namespace

namespace {

// One SSL_read or SSL_write per round (`step(offset, chunk)`) until n bytes moved, waiting on the socket for
// what OpenSSL asks (a read may need to write, and the other way round).
template <typename Step>
awaitable<error_code> tls_transfer(tcp::socket& s, SSL* ssl, size_t n, Step step) {
  error_code ec;
  for (size_t done = 0; done < n;) {
    ERR_clear_error();
    errno = 0;
    int r = step(done, int(std::min<size_t>(n - done, 1 << 30)));
    if (r > 0) {
      done += size_t(r);
      continue;
    }
    bool want_write = false, wait = false;
    if ((ec = tls_step_error(ssl, r, want_write, wait))) co_return ec;
    co_await s.async_wait(want_write ? tcp::socket::wait_write : tcp::socket::wait_read,
                          asio::redirect_error(use_awaitable, ec));
    if (ec) co_return ec;
  }
  co_return ec;
}

}  // namespace

awaitable<error_code> tls_read_exact(tcp::socket& s, SSL* ssl, char* dst, size_t n) {
  return tls_transfer(s, ssl, n,
                      [ssl, dst](size_t done, int chunk) { return SSL_read(ssl, dst + done, chunk); });
}

awaitable<error_code> tls_write_all(tcp::socket& s, SSL* ssl, const char* src, size_t n) {
  return tls_transfer(s, ssl, n,
                      [ssl, src](size_t done, int chunk) { return SSL_write(ssl, src + done, chunk); });
}

std::string certificate_end_point_hash(X509* cert) {
  int algo = NID_undef;
  if (!OBJ_find_sigid_algs(X509_get_signature_nid(cert), &algo, nullptr)) algo = NID_undef;
  bool weak = algo == NID_md5 || algo == NID_sha1 || algo == NID_undef;
  const EVP_MD* md = weak ? EVP_sha256() : EVP_get_digestbynid(algo);
  if (!md) md = EVP_sha256();
  unsigned char hash[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (X509_digest(cert, md, hash, &len) != 1) return {};
  return std::string(reinterpret_cast<char*>(hash), len);
}

std::string server_end_point_hash(SSL* ssl) {
#if OPENSSL_VERSION_NUMBER >= 0x30000000L
  X509* cert = SSL_get1_peer_certificate(ssl);  // a reference of our own
#else
  X509* cert = SSL_get_peer_certificate(ssl);
#endif
  if (!cert) return {};
  std::string hash = certificate_end_point_hash(cert);
  X509_free(cert);
  return hash;
}

}  // namespace pgrouter::net
