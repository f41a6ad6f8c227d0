// What the config says about TLS towards one server (libpq's sslmode and files); no OpenSSL here, so the
// config model can name it.
#pragma once
#include <string>

namespace pgrouter::net {

// libpq's sslmode values, with libpq's meaning.
enum class SslMode { disable, prefer, require, verify_ca, verify_full };
inline const char* sslmode_name(SslMode mode) {
  switch (mode) {
    case SslMode::disable:
      return "disable";
    case SslMode::prefer:
      return "prefer";
    case SslMode::require:
      return "require";
    case SslMode::verify_ca:
      return "verify-ca";
    case SslMode::verify_full:
      return "verify-full";
  }
  return "?";
}

struct ServerTlsSettings {
  SslMode sslmode = SslMode::prefer;  // PgBouncer's server_tls_sslmode default and libpq's
  std::string sslrootcert;            // CA file; with require it also makes the chain checked, as in libpq
  std::string sslcert;                // client certificate (with sslkey)
  std::string sslkey;
  bool operator==(const ServerTlsSettings&) const = default;
};

}  // namespace pgrouter::net
