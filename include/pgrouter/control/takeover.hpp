// Zero-downtime restart: a new pgrouter process (`pgrouter --takeover`) asks the running one, over the unix
// socket listen.takeover_socket, for its listening sockets. The sockets themselves change hands (SCM_RIGHTS),
// not just the port: connections already queued in their accept queues are accepted by the new process, none
// is refused or reset. Once the new process serves, it says READY; the old one stops accepting, keeps serving
// the clients it has for up to listen.takeover_client_wait, then drains as on SIGTERM and exits.
//
// The exchange, one line each way plus the descriptors:
//   new -> old  "TAKEOVER pid=<pid>\n"
//   old -> new  "SOCKETS listeners=<n> admin=<0|1> pid=<pid>\n" with n (+1) descriptors attached
//   new -> old  "READY\n"                (the old process then hands over; a closed channel cancels it)
//   new -> old  "CANCEL <pid> <secret>\n" (any number, after READY: CancelRequests for keys the new process
//                                         did not give, which may be those of clients the old one still
//                                         serves)
#pragma once
#include <cstdint>
#include <functional>
#include <mutex>
#include <memory>
#include <string>
#include <vector>

#include "pgrouter/asio.hpp"

namespace pgrouter::control::takeover {

// One message with descriptors attached (at most kMaxFds). False with errno set on failure.
inline constexpr size_t kMaxFds = 250;
bool send_with_fds(int sock, const std::string& text, const std::vector<int>& fds);
// Reads one message of up to 512 bytes and the descriptors that came with it (close-on-exec). False on
// failure, EOF included.
bool recv_with_fds(int sock, std::string& text, std::vector<int>& fds);

// What the running process gives.
struct Sockets {
  std::vector<int> listeners;  // the client listeners, one per worker there
  int admin = -1;              // the admin HTTP listener, or -1
  int old_pid = 0;
  int channel = -1;  // to say READY on; -1 when nothing was taken over
};

// New process side, before anything listens. nothing_there: no process answers at path (a fresh start);
// failed: one answered but the exchange broke (why says what happened).
enum class Asked { taken, nothing_there, failed };
Asked ask(const std::string& path, Sockets& out, std::string& why);
// Tells the old process this one serves; the channel stays open for Predecessor. False if the old process
// is gone (the channel is closed then).
bool confirm_ready(int channel);
void close_all(Sockets& s);

// The channel to the process this one took over, while that one still serves its clients: a CancelRequest
// arrives at whichever process holds the listeners, so keys this process does not know are passed on. Safe
// from any thread; once the old process has gone (the channel broke) it does nothing.
class Predecessor {
 public:
  Predecessor() = default;
  ~Predecessor();
  Predecessor(const Predecessor&) = delete;
  Predecessor& operator=(const Predecessor&) = delete;
  // The channel, once the old process was told READY (before that a line would be taken for the answer).
  void attach(int channel);
  void forward_cancel(uint32_t pid, uint32_t secret);

 private:
  std::mutex mu_;
  int fd_ = -1;
};

// A handed-over listening socket in an acceptor (IPv4 or IPv6, as it listens). Throws if fd is no socket.
void adopt_listener(asio::ip::tcp::acceptor& acceptor, int fd);
// Closes a listener the other process may hold too: release() takes it out of Asio's epoll set first, since
// close() alone would leave it registered there while the socket lives on.
void close_shared_listener(asio::ip::tcp::acceptor& acceptor);

// Old process side: listens on path (mode 0600; only this uid or root may connect) on the control thread.
// give() lists the sockets to hand over (empty listeners: refuse, e.g. while draining); handed_over(pid)
// runs once the new process said READY.
class Giver {
 public:
  struct Handlers {
    std::function<Sockets()> give;
    std::function<void(int new_pid)> handed_over;
    // After the hand-over: a CancelRequest the new process passed on (Predecessor).
    std::function<void(uint32_t pid, uint32_t secret)> cancel;
  };
  Giver(asio::io_context& io, std::string path, Handlers handlers);
  ~Giver();  // removes the socket file if it is still this process's
  // Binds path (replacing a file nobody listens on any more). Throws on failure.
  void start();

 private:
  struct State;
  std::shared_ptr<State> state_;
};

}  // namespace pgrouter::control::takeover
