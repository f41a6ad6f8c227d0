// TLS for client connections: one OpenSSL server context built from the configured cert and key.
#pragma once
#include <memory>
#include <string>

#include "pgrouter/asio.hpp"
#include <boost/asio/ssl.hpp>

namespace pgrouter::net {
namespace ssl = boost::asio::ssl;
using TlsStream = ssl::stream<tcp::socket>;

// nullptr with err set when the files cannot be loaded or do not match.
std::shared_ptr<ssl::context> make_server_tls_context(const std::string& cert_file,
                                                      const std::string& key_file, std::string& err);
}  // namespace pgrouter::net
