// Unit tests for TLS towards servers: the RFC 5929 tls-server-end-point hash SCRAM-SHA-256-PLUS binds to,
// the gs2 header and c= attribute of a channel-bound exchange, and the server TLS config keys.
#include <doctest/doctest.h>
#include <fcntl.h>
#include <openssl/pem.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <string>
#include <thread>

#include "pgrouter/control/config.hpp"
#include "pgrouter/net/readiness.hpp"
#include "pgrouter/net/server_tls.hpp"
#include "pgrouter/protocol/scram.hpp"

using namespace pgrouter;

namespace {

// Self-signed EC certificates signed with ECDSA-SHA256, -SHA384 and -SHA1. The expected hashes were made
// with the openssl CLI: `openssl x509 -outform der | sha256sum` (sha384sum for the SHA-384 one).
const char* kCertSha256 =
    "-----BEGIN CERTIFICATE-----\n"
    "MIIBeDCCAR2gAwIBAgIUHbeV61Iu1BeLmTdTNz9oKChkaxcwCgYIKoZIzj0EAwIw\n"
    "EDEOMAwGA1UEAwwFY2IyNTYwIBcNMjYxMjA2MTExNzExWhgPMjEyNjExMTIxMTE3\n"
    "MTFaMBAxDjAMBgNVBAMMBWNiMjU2MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE\n"
    "KgsKQHCViDLIQOldcaEOH2QqQUXFTkdGhQG8yiKG+PkiIMnvVWsgtLWPnt+7bQpI\n"
    "HDm4D4PUhNvme5HOahZFHqNTMFEwHQYDVR0OBBYEFKESd3ccVqjwwj/2C82J+ng7\n"
    "M/t4MB8GA1UdIwQYMBaAFKESd3ccVqjwwj/2C82J+ng7M/t4MA8GA1UdEwEB/wQF\n"
    "MAMBAf8wCgYIKoZIzj0EAwIDSQAwRgIhAOIKcD7rYe/riJ5KvBqfs/3MYzb1O0ED\n"
    "obCL7GUQNBz5AiEA8hGp7rVtv6VQ0d3/mzZ+nnOjkTyHIxNXjVgJgfImASo=\n"
    "-----END CERTIFICATE-----\n";
const char* kCertSha384 =
    "-----BEGIN CERTIFICATE-----\n"
    "MIIBtTCCATqgAwIBAgIUds/s9rbhapzg40gd5Xzsu0w1XsswCgYIKoZIzj0EAwMw\n"
    "EDEOMAwGA1UEAwwFY2IzODQwIBcNMjYxMjA2MTExNzExWhgPMjEyNjExMTIxMTE3\n"
    "MTFaMBAxDjAMBgNVBAMMBWNiMzg0MHYwEAYHKoZIzj0CAQYFK4EEACIDYgAE2dnU\n"
    "MKcm5ypnqyW6o0ySiqNvOM4LUyVPTmojRilNBI8dLqBlFH7PlGbl+bf3FgQOcRJb\n"
    "OazY0nWfP9NBIxNSjnIThdM+rGTrshL5ZJQ8cI2WNAhrzAkufCDBZV1aJsx6o1Mw\n"
    "UTAdBgNVHQ4EFgQUPUJGzhVhby1k8UWyana6+HUpq70wHwYDVR0jBBgwFoAUPUJG\n"
    "zhVhby1k8UWyana6+HUpq70wDwYDVR0TAQH/BAUwAwEB/zAKBggqhkjOPQQDAwNp\n"
    "ADBmAjEAkqtb7KI3ZvrwKIZ9q60QIelisoB9amiZGm46BXzrv0mkyVUtUS9jwgZY\n"
    "+JYYWh3RAjEA+kdlvoS8q8N9a0Uc1xg855nGzsizb+2hZTPRmHKXeYlRvPoDIQiE\n"
    "J+kKsyXRj4zA\n"
    "-----END CERTIFICATE-----\n";
const char* kCertSha1 =
    "-----BEGIN CERTIFICATE-----\n"
    "MIIBcTCCARigAwIBAgIUXyjwXXAmsKsNYtX076UBf7I2ibwwCQYHKoZIzj0EATAO\n"
    "MQwwCgYDVQQDDANjYjEwIBcNMjYxMjA2MTExNzE0WhgPMjEyNjExMTIxMTE3MTRa\n"
    "MA4xDDAKBgNVBAMMA2NiMTBZMBMGByqGSM49AgEGCCqGSM49AwEHA0IABKU3sQr2\n"
    "DH2A8V+sHn4KKKBT4CQFuvVeDv9aYiFRbsetwEWf4QSZoONBjS6YxvZYCRV1QtVl\n"
    "bKqFPJIHvtCL+MejUzBRMB0GA1UdDgQWBBRbVjdiOpiyP7x/ogogj9bAitqptDAf\n"
    "BgNVHSMEGDAWgBRbVjdiOpiyP7x/ogogj9bAitqptDAPBgNVHRMBAf8EBTADAQH/\n"
    "MAkGByqGSM49BAEDSAAwRQIhALuealfh1MA6pna5Gw5GaqRtg0DnYTrgI1x1f5Jw\n"
    "k6R7AiBkNT2QgIZD8YuTQUbvcKUuOP/x2/oBiVmeFBtq0R24+A==\n"
    "-----END CERTIFICATE-----\n";

// The key of kCertSha256 (a throwaway, for the in-process TLS server below).
const char* kKeySha256 =
    "-----BEGIN PRIVATE KEY-----\n"
    "MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgOUo3hx7d34E1bNRo\n"
    "MrLxIuE/pLZMGNS51IQntG8M+6+hRANCAAQqCwpAcJWIMshA6V1xoQ4fZCpBRcVO\n"
    "R0aFAbzKIob4+SIgye9VayC0tY+e37ttCkgcObgPg9SE2+Z7kc5qFkUe\n"
    "-----END PRIVATE KEY-----\n";

X509* read_cert(const char* pem) {
  BIO* bio = BIO_new_mem_buf(pem, -1);
  X509* cert = PEM_read_bio_X509(bio, nullptr, nullptr, nullptr);
  BIO_free(bio);
  return cert;
}

std::string end_point_hex(const char* pem) {
  BIO* bio = BIO_new_mem_buf(pem, -1);
  X509* cert = PEM_read_bio_X509(bio, nullptr, nullptr, nullptr);
  BIO_free(bio);
  REQUIRE(cert);
  std::string hash = net::certificate_end_point_hash(cert);
  X509_free(cert);
  static const char* digits = "0123456789abcdef";
  std::string hex;
  for (unsigned char c : hash) {
    hex += digits[c >> 4];
    hex += digits[c & 15];
  }
  return hex;
}

}  // namespace

TEST_CASE("tls-server-end-point hashes the certificate with its signature's hash, SHA-256 for weaker ones") {
  CHECK(end_point_hex(kCertSha256) == "6187805b33ce1f4358c009d8306e78868b982b64975868c3945377e88e3c40cf");
  CHECK(end_point_hex(kCertSha384) ==
        "9f15352e3761692fb6d30c617c4007469c386503ae22935ee4c8eab69464fb1405be0dc55159b40a3e5172f05cae2b30");
  // RFC 5929 4.1: MD5 and SHA-1 are replaced by SHA-256.
  CHECK(end_point_hex(kCertSha1) == "e6e9668df246433ea68c079b96ba265e094b96e42be2115877726797a5708d84");
}

TEST_CASE("a channel-bound SCRAM exchange sends the p= gs2 header and binds the hash in c=") {
  const std::string hex = "6187805b33ce1f4358c009d8306e78868b982b64975868c3945377e88e3c40cf";
  std::string hash;
  for (size_t i = 0; i < hex.size(); i += 2) hash += char(std::stoi(hex.substr(i, 2), nullptr, 16));
  protocol::scram::ClientExchange client("pencil", "rOprNGfwEbeRWgbNEkqO");
  client.bind_channel(hash);
  CHECK(client.channel_bound());
  CHECK(client.client_first() == "p=tls-server-end-point,,n=,r=rOprNGfwEbeRWgbNEkqO");
  std::string err;
  auto final_msg = client.handle_server_first(
      "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096", err);
  REQUIRE(final_msg);
  // base64("p=tls-server-end-point,," + hash), computed with Python's base64.
  CHECK(final_msg->starts_with(
      "c=cD10bHMtc2VydmVyLWVuZC1wb2ludCwsYYeAWzPOH0NYwAnYMG54houYK2SXWGjDlFN36I48QM8=,r="));
  CHECK(protocol::scram::channel_binding_attribute("n,,", "") == "biws");

  protocol::scram::ClientExchange unbound("pencil", "rOprNGfwEbeRWgbNEkqO");
  CHECK(unbound.client_first() == "n,,n=,r=rOprNGfwEbeRWgbNEkqO");
}

namespace {
control::LoadResult load(const std::string& backend_keys, const std::string& server_tls = "") {
  return control::load_config_string("version: 1\n" + server_tls +
                                         "databases:\n"
                                         "  - name: app\n"
                                         "    shards:\n"
                                         "      - primary: {host: db1" +
                                         backend_keys +
                                         "}\n"
                                         "users:\n"
                                         "  - name: app\n"
                                         "    password: secret\n",
                                     "test.yaml");
}
std::string errors(const control::LoadResult& r) {
  std::string out;
  for (auto& e : r.errors) out += e.to_string() + "\n";
  return out;
}
}  // namespace

TEST_CASE(
    "server TLS keys: prefer by default, per-backend keys override server_tls, bad combinations refused") {
  auto plain = load("");
  REQUIRE(plain.config);
  CHECK(plain.config->databases[0].shards[0].primary.tls.sslmode == net::SslMode::prefer);

  auto inherited = load("", "server_tls: {sslmode: require}\n");
  REQUIRE(inherited.config);
  CHECK(inherited.config->databases[0].shards[0].primary.tls.sslmode == net::SslMode::require);

  auto overridden = load(", sslmode: disable", "server_tls: {sslmode: require}\n");
  REQUIRE(overridden.config);
  CHECK(overridden.config->databases[0].shards[0].primary.tls.sslmode == net::SslMode::disable);

  auto no_ca = load(", sslmode: verify-full");
  CHECK_FALSE(no_ca.config);
  CHECK(errors(no_ca).find("test.yaml:5:") != std::string::npos);
  CHECK(errors(no_ca).find("sslmode verify-full needs sslrootcert") != std::string::npos);

  auto bad_mode = load("", "server_tls: {sslmode: always}\n");
  CHECK_FALSE(bad_mode.config);
  CHECK(errors(bad_mode).find("disable | prefer | require | verify-ca | verify-full") != std::string::npos);

  auto cert_no_key = load(", sslcert: /etc/hosts");
  CHECK_FALSE(cert_no_key.config);
  CHECK(errors(cert_no_key).find("needs both sslcert and sslkey") != std::string::npos);
}

namespace {

// A TLS connection over a socketpair: the server end blocking in its own thread, the client end non-blocking.
struct TlsPair {
  int fd[2] = {-1, -1};
  SSL_CTX* server_ctx = SSL_CTX_new(TLS_server_method());
  SSL_CTX* client_ctx = SSL_CTX_new(TLS_client_method());
  SSL* server = nullptr;
  SSL* client = nullptr;
  TlsPair() {
    REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM, 0, fd) == 0);
    ::fcntl(fd[0], F_SETFL, ::fcntl(fd[0], F_GETFL) | O_NONBLOCK);
    X509* cert = read_cert(kCertSha256);
    BIO* bio = BIO_new_mem_buf(kKeySha256, -1);
    EVP_PKEY* key = PEM_read_bio_PrivateKey(bio, nullptr, nullptr, nullptr);
    BIO_free(bio);
    REQUIRE(SSL_CTX_use_certificate(server_ctx, cert) == 1);
    REQUIRE(SSL_CTX_use_PrivateKey(server_ctx, key) == 1);
    X509_free(cert);
    EVP_PKEY_free(key);
    server = SSL_new(server_ctx);
    client = SSL_new(client_ctx);
    SSL_set_fd(server, fd[1]);
    SSL_set_fd(client, fd[0]);
    std::thread accept([&] { SSL_accept(server); });
    for (int r; (r = SSL_connect(client)) != 1;) {
      int e = SSL_get_error(client, r);
      REQUIRE((e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE));
      pollfd p{fd[0], short(e == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT), 0};
      ::poll(&p, 1, 2000);
    }
    accept.join();
  }
  ~TlsPair() {
    SSL_free(client);
    SSL_free(server);
    SSL_CTX_free(client_ctx);
    SSL_CTX_free(server_ctx);
    ::close(fd[0]);
    ::close(fd[1]);
  }
  void wait_bytes() {
    pollfd p{fd[0], POLLIN, 0};
    REQUIRE(::poll(&p, 1, 2000) == 1);
  }
};

}  // namespace

TEST_CASE(
    "a TLS socket with the socket drained but a decrypted record inside OpenSSL still counts as readable") {
  asio::io_context io(1);
  net::Readiness readiness(io);
  readiness.start();
  TlsPair t;
  net::SocketReadiness r;
  REQUIRE(r.attach(readiness, t.fd[0]));
  r.use_tls(t.client);
  char buf[64];
  size_t got = 0;
  net::error_code ec;
  CHECK_FALSE(r.read_now(buf, sizeof buf, got, ec));  // nothing sent yet: OpenSSL wants bytes
  CHECK_FALSE(r.maybe_readable());
  REQUIRE(SSL_write(t.server, "ABCDEFGH", 8) == 8);  // one record
  t.wait_bytes();
  // The login/reset path reads part of it outside the readiness layer: the socket is now drained, no new
  // edge will come, and the rest of the record waits inside OpenSSL.
  REQUIRE(SSL_read(t.client, buf, 2) == 2);
  CHECK(r.maybe_readable());
  REQUIRE(r.read_now(buf, sizeof buf, got, ec));
  CHECK_FALSE(ec);
  CHECK(std::string(buf, got) == "CDEFGH");
  // Small reads of several records: each read_now returns data until OpenSSL has nothing left.
  REQUIRE(SSL_write(t.server, "0123456789", 10) == 10);
  REQUIRE(SSL_write(t.server, "abcdefghij", 10) == 10);
  t.wait_bytes();
  io.restart();
  io.run_for(std::chrono::milliseconds(100));  // the readiness set takes the socket's edge event
  std::string all;
  while (r.read_now(buf, 3, got, ec) && !ec) all.append(buf, got);
  CHECK_MESSAGE(!ec, ec.message());
  CHECK(all == "0123456789abcdefghij");
  CHECK_FALSE(r.maybe_readable());
  // Writes go through OpenSSL too, never into the io_uring batch.
  size_t written = 0;
  CHECK_FALSE(r.send_with_batch("xyz", 3, &written));
  REQUIRE(r.write_now("xyz", 3, written, ec));
  CHECK(written == 3);
  char in[3];
  REQUIRE(SSL_read(t.server, in, 3) == 3);
  CHECK(std::string(in, 3) == "xyz");
  r.detach();
}
