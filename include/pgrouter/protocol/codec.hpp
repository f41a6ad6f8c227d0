// Wire framing for the PostgreSQL v3 protocol: big-endian helpers, a growable read buffer, and a
// streaming frame scanner that finds message boundaries without copying message bodies.
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <string_view>

namespace pgrouter::protocol {

inline uint32_t read_be32(const char* p) {
  const auto* u = reinterpret_cast<const unsigned char*>(p);
  return (uint32_t(u[0]) << 24) | (uint32_t(u[1]) << 16) | (uint32_t(u[2]) << 8) | uint32_t(u[3]);
}
inline uint16_t read_be16(const char* p) {
  const auto* u = reinterpret_cast<const unsigned char*>(p);
  return uint16_t((uint16_t(u[0]) << 8) | uint16_t(u[1]));
}
inline void put_be32(std::string& out, uint32_t v) {
  char b[4] = {char(v >> 24), char(v >> 16), char(v >> 8), char(v)};
  out.append(b, 4);
}
inline void put_be16(std::string& out, uint16_t v) {
  char b[2] = {char(v >> 8), char(v)};
  out.append(b, 2);
}

// A byte buffer with a read head and a write tail. Starts small, grows only when one message needs
// it, and can shrink back when drained so idle connections stay cheap.
class Buffer {
 public:
  explicit Buffer(size_t initial = 8192) : initial_(initial) {}
  const char* data() const { return mem_.get() + head_; }
  char* data() { return mem_.get() + head_; }
  size_t size() const { return tail_ - head_; }
  bool empty() const { return head_ == tail_; }
  char* write_ptr() { return mem_.get() + tail_; }
  size_t write_space() const { return cap_ - tail_; }
  void commit(size_t n) { tail_ += n; }
  void consume(size_t n) {
    head_ += n;
    if (head_ == tail_ && !marked_) head_ = tail_ = 0;
  }
  // A mark keeps the bytes consumed after it in memory (compaction and shrinking preserve them) until
  // unmark(), so they can be read again (a read retried on another server) without being copied.
  void mark() {
    mark_ = head_;
    marked_ = true;
  }
  void unmark() { marked_ = false; }  // never moves data: a read into write_ptr() may be pending
  bool marked() const { return marked_; }
  const char* mark_data() const { return mem_.get() + mark_; }
  size_t consumed_since_mark() const { return marked_ ? head_ - mark_ : 0; }
  size_t size_since_mark() const { return marked_ ? tail_ - mark_ : size(); }
  // Makes room so that `total` bytes fit from the read head, plus at least some write space.
  void reserve_message(size_t total);
  // Ensures there is room to read into (allocating lazily on first use).
  void prepare_read();
  // Frees memory when empty and larger than the initial size (or entirely, when release_all).
  void shrink(bool release_all = false);
  size_t capacity() const { return cap_; }

 private:
  std::unique_ptr<char[]> mem_;
  size_t cap_ = 0, head_ = 0, tail_ = 0;
  size_t mark_ = 0;
  bool marked_ = false;
  size_t initial_;
};

// forward: the message goes on; stop_before: the scan ends before it (it stays unconsumed); drop: the
// message is consumed but not passed on (a pass-through body is reported to on_drop as it streams by).
enum class ScanAction { forward, stop_before, drop };

struct ScanResult {
  size_t consumed = 0;      // bytes from the start that hold whole (or passed-through) messages
  size_t need = 0;          // when > 0: bytes needed from `consumed` to make progress (header or whole body)
  bool stopped = false;     // the handler asked to stop before a message starting at `consumed`
  bool bad_length = false;  // a length < 4 or over the limit was found at `consumed`
  bool unknown_type = false;  // the handler's max_length() refused the type at `consumed`
  char bad_type = 0;
  uint32_t bad_len = 0;
};

// Streams over typed messages (1-byte type + 4-byte length). For types the handler wants the body of,
// the whole message must be in the buffer; all others are passed through by length, possibly across
// many reads, without their bodies ever being looked at.
//
// Handler: bool wants_body(char type); ScanAction on_message(char type, uint32_t len, std::string_view body)
// (body is empty when wants_body was false). on_message is called once per message, when its header
// (or its whole body, when wanted) is available. Optional: uint32_t max_length(char type), the type's own
// limit, 0 for a type that is not allowed at all (checked before the length is trusted); and
// void on_drop(const char* p, size_t n), told the bytes of each dropped message as they go by.
//
// Whatever max_length says, a length above kMaxProtocolMessage is bad: PostgreSQL builds every message in a
// buffer limited to 1 GB (MaxAllocSize) and refuses a longer one from a client, so a longer length is garbage
// or an attack, and passing it through would leave the other side waiting for gigabytes that never come.
constexpr uint32_t kMaxProtocolMessage = (1u << 30) + 256;

class FrameScanner {
 public:
  explicit FrameScanner(uint32_t max_length) : max_length_(clamp(max_length)) {}
  void set_max_length(uint32_t m) { max_length_ = clamp(m); }
  // In the middle of a message whose body streams through (a later read holds the rest).
  bool mid_message() const { return skip_ > 0; }
  // ... and that message is being dropped, not passed on.
  bool dropping() const { return skip_ > 0 && dropping_; }

  template <typename Handler>
  ScanResult scan(const char* data, size_t n, Handler& h) {
    ScanResult r;
    size_t pos = 0;
    while (pos < n) {
      if (skip_ > 0) {
        size_t take = skip_ < n - pos ? size_t(skip_) : n - pos;
        if (dropping_) report_drop(h, data + pos, take);
        pos += take;
        skip_ -= take;
        continue;
      }
      if (n - pos < 5) {
        if constexpr (requires { h.max_length(data[pos]); }) {
          if (h.max_length(data[pos]) == 0) {  // refused on its type byte alone, as PostgreSQL does
            r.consumed = pos;
            r.unknown_type = true;
            r.bad_type = data[pos];
            return r;
          }
        }
        r.need = 5;
        break;
      }
      char type = data[pos];
      uint32_t len = read_be32(data + pos + 1);
      uint32_t limit = max_length_;
      if constexpr (requires { h.max_length(type); }) {
        uint32_t own = h.max_length(type);
        if (own == 0) {
          r.consumed = pos;
          r.unknown_type = true;
          r.bad_type = type;
          r.bad_len = len;
          return r;
        }
        if (own < limit) limit = own;
      }
      if (len < 4 || len > limit) {
        r.consumed = pos;
        r.bad_length = true;
        r.bad_type = type;
        r.bad_len = len;
        return r;
      }
      size_t total = size_t(len) + 1;
      bool whole = h.wants_body(type);
      if (whole && n - pos < total) {
        r.need = total;
        break;
      }
      auto action =
          h.on_message(type, len, whole ? std::string_view(data + pos + 5, len - 4) : std::string_view());
      if (action == ScanAction::stop_before) {
        r.consumed = pos;
        r.stopped = true;
        return r;
      }
      size_t avail = n - pos;
      size_t here = avail >= total ? total : avail;
      dropping_ = action == ScanAction::drop;
      if (dropping_) report_drop(h, data + pos, here);
      pos += here;
      skip_ = total - here;
    }
    r.consumed = pos;
    if (pos == n) r.need = 0;
    return r;
  }

 private:
  template <typename Handler>
  static void report_drop(Handler& h, const char* p, size_t n) {
    if constexpr (requires { h.on_drop(p, n); }) h.on_drop(p, n);
  }
  static uint32_t clamp(uint32_t m) { return m < kMaxProtocolMessage ? m : kMaxProtocolMessage; }
  uint32_t max_length_;
  uint64_t skip_ = 0;      // bytes of the current pass-through message not yet seen
  bool dropping_ = false;  // ... and they are dropped
};

}  // namespace pgrouter::protocol
