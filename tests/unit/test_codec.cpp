// Framing and message codec: the scanner fed the same bytes split at every fragment size must find the
// same messages; builders produce what PostgreSQL's own clients parse; startup packets are validated.
#include <doctest/doctest.h>

#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

#include "pgrouter/protocol/codec.hpp"
#include "pgrouter/protocol/messages.hpp"

using namespace pgrouter::protocol;

namespace {

struct Seen {
  char type;
  uint32_t len;
  std::string body;
};

// Wants the bodies of Z/E/S only, like the relay; stops before X.
struct RecordingHandler {
  std::vector<Seen> seen;
  bool wants_body(char t) const { return t == 'Z' || t == 'E' || t == 'S'; }
  ScanAction on_message(char t, uint32_t len, std::string_view body) {
    if (t == 'X') return ScanAction::stop_before;
    seen.push_back({t, len, std::string(body)});
    return ScanAction::forward;
  }
};

// Drives a scanner the way the relay does: a Buffer filled `chunk` bytes at a time. Returns the bytes
// that would have been forwarded, plus what the handler saw.
struct Drive {
  std::string forwarded;
  RecordingHandler handler;
  bool stopped = false, bad = false;
};

Drive drive(const std::string& stream, size_t chunk, uint32_t max_len = 1u << 20) {
  Drive d;
  FrameScanner scanner(max_len);
  Buffer buf(16);  // tiny on purpose: forces growth and compaction
  size_t fed = 0;
  while (fed < stream.size() || !buf.empty()) {
    if (fed < stream.size()) {
      buf.prepare_read();
      size_t n = std::min({chunk, buf.write_space(), stream.size() - fed});
      std::memcpy(buf.write_ptr(), stream.data() + fed, n);
      buf.commit(n);
      fed += n;
    }
    auto r = scanner.scan(buf.data(), buf.size(), d.handler);
    d.forwarded.append(buf.data(), r.consumed);
    buf.consume(r.consumed);
    if (r.stopped) {
      d.stopped = true;
      break;
    }
    if (r.bad_length) {
      d.bad = true;
      break;
    }
    if (r.need > 0) buf.reserve_message(r.need);
    if (fed == stream.size() && r.consumed == 0) break;  // incomplete tail
  }
  return d;
}

std::string sample_stream() {
  std::string s;
  append_parameter_status(s, "client_encoding", "UTF8");
  append_query(s, "select 1");
  std::string big(70000, 'x');  // larger than any initial buffer: passed through by length
  append_query(s, big);
  append_error(s, "ERROR", "22012", "division by zero");
  append_ready_for_query(s, 'T');
  return s;
}

}  // namespace

TEST_CASE("scanner finds the same messages whatever the fragment size") {
  std::string stream = sample_stream();
  auto whole = drive(stream, stream.size());
  REQUIRE(whole.handler.seen.size() == 5);
  CHECK(whole.forwarded == stream);
  for (size_t chunk : {size_t(1), size_t(2), size_t(3), size_t(5), size_t(7), size_t(100), size_t(4096)}) {
    CAPTURE(chunk);
    auto d = drive(stream, chunk);
    CHECK(d.forwarded == stream);
    REQUIRE(d.handler.seen.size() == whole.handler.seen.size());
    for (size_t i = 0; i < d.handler.seen.size(); ++i) {
      CHECK(d.handler.seen[i].type == whole.handler.seen[i].type);
      CHECK(d.handler.seen[i].len == whole.handler.seen[i].len);
      CHECK(d.handler.seen[i].body == whole.handler.seen[i].body);
    }
  }
  CHECK(whole.handler.seen[4].body == "T");
  CHECK(error_sqlstate(whole.handler.seen[3].body) == "22012");
  CHECK(whole.handler.seen[2].body.empty());  // not wanted: never copied
}

TEST_CASE("scanner splits at every byte boundary of a small stream") {
  std::string stream;
  append_query(stream, "a");
  append_ready_for_query(stream, 'I');
  append_query(stream, "bc");
  for (size_t chunk = 1; chunk <= stream.size(); ++chunk) {
    auto d = drive(stream, chunk);
    CHECK(d.forwarded == stream);
    CHECK(d.handler.seen.size() == 3);
  }
}

TEST_CASE("scanner stops before Terminate and does not forward it") {
  std::string stream;
  append_query(stream, "select 1");
  append_terminate(stream);
  append_query(stream, "never");
  for (size_t chunk : {size_t(1), size_t(3), stream.size()}) {
    auto d = drive(stream, chunk);
    CHECK(d.stopped);
    std::string expected;
    append_query(expected, "select 1");
    CHECK(d.forwarded == expected);
  }
}

TEST_CASE("scanner rejects lengths below 4 and above the maximum") {
  std::string tiny = std::string("Q") + std::string("\0\0\0\3", 4);
  CHECK(drive(tiny, 1).bad);
  std::string huge;
  append_query(huge, std::string(2000, 'y'));
  CHECK(drive(huge, 64, 1000).bad);
  CHECK_FALSE(drive(huge, 64, 4096).bad);
  std::string exact;
  append_query(exact, std::string(995 - 4 - 1, 'z'));  // length field = 995
  CHECK_FALSE(drive(exact, 7, 995).bad);
  CHECK(drive(exact, 7, 994).bad);
}

TEST_CASE("scanner reports how many bytes it needs for a wanted body") {
  std::string stream;
  append_error(stream, "ERROR", "XX000", std::string(5000, 'e'));
  FrameScanner scanner(1u << 20);
  RecordingHandler h;
  auto r = scanner.scan(stream.data(), 100, h);
  CHECK(r.consumed == 0);
  CHECK(r.need == stream.size());
  r = scanner.scan(stream.data(), 3, h);
  CHECK(r.need == 5);
}

TEST_CASE("scanner refuses a length above 1 GiB whatever its maximum (the relay's server side has none)") {
  auto header = [](char type, uint32_t len) {
    std::string h(1, type);
    put_be32(h, len);
    return h;
  };
  for (uint32_t len : {0x7fffffffu, 0xffffffffu, kMaxProtocolMessage + 1}) {
    CAPTURE(len);
    FrameScanner scanner(0xffffffffu);
    RecordingHandler h;
    auto stream = header('D', len);
    auto r = scanner.scan(stream.data(), stream.size(), h);
    CHECK(r.bad_length);
    CHECK(r.bad_len == len);
    CHECK(h.seen.empty());
  }
  // The largest message PostgreSQL can build still passes through.
  FrameScanner scanner(0xffffffffu);
  RecordingHandler h;
  auto stream = header('D', 1u << 30);
  auto r = scanner.scan(stream.data(), stream.size(), h);
  CHECK_FALSE(r.bad_length);
  CHECK(scanner.mid_message());
}

TEST_CASE("startup packets parse and malformed ones are refused with a reason") {
  std::string pkt;
  append_startup(pkt, {{"user", "alice"}, {"database", "app"}, {"application_name", "x"}});
  std::string why;
  auto sp = parse_startup(std::string_view(pkt).substr(4), why);
  REQUIRE(sp);
  CHECK(sp->code == kProtocol30);
  REQUIRE(sp->find("user"));
  CHECK(*sp->find("user") == "alice");
  CHECK(*sp->find("application_name") == "x");
  CHECK(sp->find("nope") == nullptr);

  std::string body = pkt.substr(4, pkt.size() - 5);  // drop the final terminator
  CHECK_FALSE(parse_startup(body, why));
  CHECK(why.find("NUL") != std::string::npos);
  std::string trailing = pkt.substr(4) + "junk";
  CHECK_FALSE(parse_startup(trailing, why));

  std::string cancel;
  append_cancel_request(cancel, 0x01000002, 0xdeadbeef);
  auto c = parse_startup(std::string_view(cancel).substr(4), why);
  REQUIRE(c);
  CHECK(c->code == kCancelRequestCode);
  CHECK(c->cancel_pid == 0x01000002);
  CHECK(c->cancel_secret == 0xdeadbeef);
  CHECK_FALSE(parse_startup(std::string_view(cancel).substr(4, 8), why));
  CHECK_FALSE(parse_startup("ab", why));
}

TEST_CASE("error builder and parser agree; literals are quoted safely") {
  std::string e;
  append_error(e, "FATAL", "28P01", "password authentication failed for user \"x\"", "", "try again");
  CHECK(e[0] == 'E');
  CHECK(read_be32(e.data() + 1) == e.size() - 1);
  auto f = parse_error_fields(std::string_view(e).substr(5));
  CHECK(f.severity == "FATAL");
  CHECK(f.code == "28P01");
  CHECK(f.message == "password authentication failed for user \"x\"");
  CHECK(f.hint == "try again");
  CHECK(f.detail.empty());

  CHECK(quote_literal("it's") == "'it''s'");
  CHECK(quote_literal("a;DROP") == "'a;DROP'");
  CHECK(is_safe_identifier("search_path"));
  CHECK(is_safe_identifier("pgrouter.route"));
  CHECK_FALSE(is_safe_identifier("a b"));
  CHECK_FALSE(is_safe_identifier("x;drop"));
  CHECK_FALSE(is_safe_identifier(""));
}

TEST_CASE("NegotiateProtocolVersion lists the unrecognized options") {
  std::string v;
  append_negotiate_protocol_version(v, 0, {"_pq_.a", "_pq_.b"});
  CHECK(v[0] == 'v');
  CHECK(read_be32(v.data() + 5) == kProtocol30);
  CHECK(read_be32(v.data() + 9) == 2);
  CHECK(std::string(v.data() + 13) == "_pq_.a");
}

TEST_CASE("extended-protocol builders write the bytes PostgreSQL reads") {
  using namespace std::string_literals;
  std::string s;
  append_parse(s, "s1", "select $1", "\0\1\0\0\0\x17"s);
  CHECK(s == "P\0\0\0\x17s1\0select $1\0\0\1\0\0\0\x17"s);
  s.clear();
  append_parse(s, "", "", kNoParameterTypes);
  CHECK(s == "P\0\0\0\x08\0\0\0\0"s);
  s.clear();
  append_bind(s, "p", "s1", kNoParameters);
  CHECK(s == "B\0\0\0\x0fp\0s1\0\0\0\0\0\0\0"s);
  s.clear();
  append_describe(s, 'S', "s1");
  append_close(s, 'P', "");
  CHECK(s == "D\0\0\0\x08Ss1\0C\0\0\0\x06P\0"s);
  s.clear();
  append_execute(s, "p");
  append_flush(s);
  append_sync(s);
  CHECK(s == "E\0\0\0\x0ap\0\0\0\0\0H\0\0\0\x04S\0\0\0\x04"s);
  s.clear();
  append_header(s, 'E', 3);
  CHECK(s == "E\0\0\0\x07"s);
}

TEST_CASE("buffer grows for one large message and shrinks when drained") {
  Buffer b(64);
  b.prepare_read();
  CHECK(b.capacity() == 64);
  b.commit(10);
  b.reserve_message(100000);
  CHECK(b.capacity() >= 100000);
  CHECK(b.size() == 10);
  b.consume(10);
  b.shrink();
  CHECK(b.capacity() == 64);
  b.shrink(true);
  CHECK(b.capacity() == 0);
}

TEST_CASE("a mark keeps consumed bytes through compaction and growth until unmark") {
  Buffer b(16);
  b.prepare_read();
  std::memcpy(b.write_ptr(), "xxxxABCDEFGH", 12);
  b.commit(12);
  b.consume(4);  // before the mark: may go
  b.mark();
  b.consume(8);  // everything read, but kept behind the mark
  CHECK(b.empty());
  CHECK(b.consumed_since_mark() == 8);
  b.shrink(true);  // no-op while marked
  REQUIRE(b.capacity() == 16);
  std::memcpy(b.write_ptr(), "IJKL", 4);
  b.commit(4);       // the buffer is full at the tail now
  b.prepare_read();  // compacts from the mark, not from the read head
  CHECK(std::string(b.mark_data(), 8) == "ABCDEFGH");
  CHECK(std::string(b.data(), b.size()) == "IJKL");
  b.reserve_message(100);  // grows, keeping the marked bytes in front
  CHECK(b.capacity() >= 108);
  CHECK(std::string(b.mark_data(), 12) == "ABCDEFGHIJKL");
  CHECK(b.size_since_mark() == 12);
  b.consume(4);
  b.unmark();
  CHECK(b.consumed_since_mark() == 0);
  b.shrink(true);
  CHECK(b.capacity() == 0);
}

#include <boost/asio/ip/address_v4.hpp>

#include "pgrouter/util/strings.hpp"

TEST_CASE("ipv4_text writes what address_v4::to_string writes") {
  for (const char* text :
       {"0.0.0.0", "127.0.0.1", "10.20.3.255", "192.168.100.1", "255.255.255.255", "1.9.10.99"}) {
    auto a = boost::asio::ip::make_address_v4(text);
    CHECK(pgrouter::util::ipv4_text(a.to_uint()) == a.to_string());
    CHECK(pgrouter::util::ipv4_text(a.to_uint()) == text);
  }
}
