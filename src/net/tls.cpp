// Builds the server-side TLS context (TLS 1.2+, no compression, no renegotiation).
#include "pgrouter/net/tls.hpp"

namespace pgrouter::net {

std::shared_ptr<ssl::context> make_server_tls_context(const std::string& cert_file,
                                                      const std::string& key_file, std::string& err) {
  auto ctx = std::make_shared<ssl::context>(ssl::context::tls_server);
  boost::system::error_code ec;
  ctx->set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 | ssl::context::no_sslv3 |
                       ssl::context::no_tlsv1 | ssl::context::no_tlsv1_1 | ssl::context::no_compression,
                   ec);
  ctx->use_certificate_chain_file(cert_file, ec);
  if (ec) {
    err = "cannot load tls.cert_file " + cert_file + ": " + ec.message();
    return nullptr;
  }
  ctx->use_private_key_file(key_file, ssl::context::pem, ec);
  if (ec) {
    err = "cannot load tls.key_file " + key_file + ": " + ec.message();
    return nullptr;
  }
  if (SSL_CTX_check_private_key(ctx->native_handle()) != 1) {
    err = "tls.key_file does not match tls.cert_file";
    return nullptr;
  }
  SSL_CTX_set_options(ctx->native_handle(), SSL_OP_NO_RENEGOTIATION);
  return ctx;
}

}  // namespace pgrouter::net
