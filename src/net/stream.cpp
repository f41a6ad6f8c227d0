// Socket options shared by client and server connections.
#include "pgrouter/net/io.hpp"

namespace pgrouter::net {

void tune_socket(tcp::socket& s) {
  error_code ec;
  s.set_option(tcp::no_delay(true), ec);
  s.set_option(asio::socket_base::keep_alive(true), ec);
}

}  // namespace pgrouter::net
