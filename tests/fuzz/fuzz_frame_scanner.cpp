// libFuzzer target: protocol::FrameScanner. The input is split into a few parameters (which types want a
// body, the maximum length, fragment sizes) and a byte stream. The stream is scanned three ways: by a plain
// reference parser written from the protocol's definition, whole (one scan per stop), and in fragments the
// way the relay feeds it (unconsumed bytes kept, the next read appended). All three must report the same
// messages in the same order, each once, and agree on where a bad length is and on what is left over.
#include <fuzzer/FuzzedDataProvider.h>

#include <cstdint>
#include <algorithm>
#include <string>
#include <vector>

#include "fuzz_check.hpp"
#include "pgrouter/protocol/codec.hpp"

namespace p = pgrouter::protocol;

namespace {

struct Seen {
  char type;
  uint32_t len;
  bool with_body;
  std::string body;
  bool operator==(const Seen&) const = default;
};

struct Params {
  uint8_t body_mask;    // bit (type % 8) set: the handler wants that type's body
  uint32_t max_length;  // the limit in effect: the one given, at most kMaxProtocolMessage
  uint32_t given;       // what the scanner is constructed with
  uint8_t stop_mask;    // bit (message index % 8) set: the handler stops once before that message
};

bool wants(const Params& prm, char type) { return (prm.body_mask >> (uint8_t(type) % 8)) & 1; }

struct Handler {
  const Params& prm;
  std::vector<Seen>& seen;
  size_t stops_done = 0;  // messages before which a stop was already made (each message stops at most once)
  bool wants_body(char type) { return wants(prm, type); }
  p::ScanAction on_message(char type, uint32_t len, std::string_view body) {
    size_t index = seen.size();
    if (((prm.stop_mask >> (index % 8)) & 1) && stops_done <= index) {
      stops_done = index + 1;
      return p::ScanAction::stop_before;  // the caller scans again from the same place: reported again then
    }
    FUZZ_CHECK(len >= 4 && len <= prm.max_length);
    bool with_body = wants(prm, type);
    if (with_body)
      FUZZ_CHECK(body.size() == len - 4);
    else
      FUZZ_CHECK(body.empty());
    seen.push_back({type, len, with_body, std::string(body)});
    return p::ScanAction::forward;
  }
};

struct Outcome {
  std::vector<Seen> seen;
  bool bad = false;
  char bad_type = 0;
  uint32_t bad_len = 0;
  std::string rest;  // bytes neither consumed nor passed through at the end
  bool mid_message = false;
};

// The protocol's framing, written plainly: what a scanner fed all of `s` at once must report.
Outcome reference(const Params& prm, const std::string& s) {
  Outcome o;
  size_t pos = 0;
  while (s.size() - pos >= 5) {
    char type = s[pos];
    uint32_t len = p::read_be32(s.data() + pos + 1);
    if (len < 4 || len > prm.max_length) {
      o.bad = true, o.bad_type = type, o.bad_len = len;
      break;
    }
    size_t total = size_t(len) + 1;
    if (wants(prm, type)) {
      if (s.size() - pos < total) break;
      o.seen.push_back({type, len, true, s.substr(pos + 5, len - 4)});
      pos += total;
    } else {
      o.seen.push_back({type, len, false, {}});
      if (s.size() - pos < total) {
        o.mid_message = true;
        pos = s.size();
      } else {
        pos += total;
      }
    }
  }
  o.rest = s.substr(pos);
  return o;
}

// Checks one scan result against the bytes it was given.
void check_result(const p::ScanResult& r, const char* data, size_t n, const Params& prm,
                  const p::FrameScanner& sc) {
  FUZZ_CHECK(r.consumed <= n);
  FUZZ_CHECK(int(r.stopped) + int(r.bad_length) + int(r.need > 0) <= 1);
  if (r.bad_length) {
    FUZZ_CHECK(n - r.consumed >= 5);
    FUZZ_CHECK(r.bad_type == data[r.consumed]);
    FUZZ_CHECK(r.bad_len == p::read_be32(data + r.consumed + 1));
    FUZZ_CHECK(r.bad_len < 4 || r.bad_len > prm.max_length);
  }
  if (r.need > 0) {
    // Asked for more than is there: a header, or a whole wanted message.
    FUZZ_CHECK(r.need > n - r.consumed);
    FUZZ_CHECK(!sc.mid_message());
    if (n - r.consumed >= 5) {
      FUZZ_CHECK(wants(prm, data[r.consumed]));
      FUZZ_CHECK(r.need == size_t(p::read_be32(data + r.consumed + 1)) + 1);
    } else {
      FUZZ_CHECK(r.need == 5);
    }
  }
  if (!r.stopped && !r.bad_length && r.need == 0) FUZZ_CHECK(r.consumed == n);
  if (r.stopped) FUZZ_CHECK(!sc.mid_message() && n - r.consumed >= 5);
}

Outcome whole(const Params& prm, const std::string& s) {
  Outcome o;
  p::FrameScanner sc(prm.given);
  Handler h{prm, o.seen};
  size_t off = 0;
  for (;;) {
    auto r = sc.scan(s.data() + off, s.size() - off, h);
    check_result(r, s.data() + off, s.size() - off, prm, sc);
    off += r.consumed;
    if (r.bad_length) o.bad = true, o.bad_type = r.bad_type, o.bad_len = r.bad_len;
    if (!r.stopped) break;
  }
  o.rest = s.substr(off);
  o.mid_message = sc.mid_message();
  return o;
}

// As the relay does: a read appends to what the last scan left, a scan consumes from the front.
Outcome fragmented(const Params& prm, const std::string& s, const std::vector<size_t>& cuts) {
  Outcome o;
  p::FrameScanner sc(prm.given);
  Handler h{prm, o.seen};
  std::string pending;
  size_t fed = 0, next_cut = 0;
  while (fed < s.size() && !o.bad) {
    size_t take = std::min(s.size() - fed, cuts.empty() ? s.size() : cuts[next_cut++ % cuts.size()]);
    pending.append(s, fed, take);
    fed += take;
    for (;;) {
      auto r = sc.scan(pending.data(), pending.size(), h);
      check_result(r, pending.data(), pending.size(), prm, sc);
      pending.erase(0, r.consumed);
      if (r.bad_length) {
        o.bad = true, o.bad_type = r.bad_type, o.bad_len = r.bad_len;
        break;
      }
      if (!r.stopped) break;
    }
  }
  if (!o.bad) FUZZ_CHECK(fed == s.size());
  o.rest = pending + s.substr(fed);
  o.mid_message = sc.mid_message();
  return o;
}

void compare(const Outcome& a, const Outcome& b) {
  FUZZ_CHECK(a.seen.size() == b.seen.size());
  for (size_t i = 0; i < a.seen.size(); ++i) FUZZ_CHECK(a.seen[i] == b.seen[i]);
  FUZZ_CHECK(a.bad == b.bad);
  if (a.bad) FUZZ_CHECK(a.bad_type == b.bad_type && a.bad_len == b.bad_len);
  FUZZ_CHECK(a.rest == b.rest);
  FUZZ_CHECK(a.mid_message == b.mid_message);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  FuzzedDataProvider in(data, size);
  static constexpr uint32_t kMaxLengths[] = {4, 5, 16, 300, 8192, 1u << 30, UINT32_MAX};
  Params prm;
  prm.body_mask = in.ConsumeIntegral<uint8_t>();
  prm.given = in.PickValueInArray(kMaxLengths);
  prm.max_length = std::min(prm.given, p::kMaxProtocolMessage);
  prm.stop_mask = in.ConsumeIntegral<uint8_t>();
  std::vector<size_t> cuts(in.ConsumeIntegralInRange<size_t>(1, 8));
  for (auto& c : cuts) c = in.ConsumeIntegralInRange<size_t>(1, 64);
  auto rest = in.ConsumeRemainingBytes<char>();
  std::string stream(rest.begin(), rest.end());

  Outcome expected = reference(prm, stream);
  compare(expected, whole(prm, stream));
  compare(expected, fragmented(prm, stream, cuts));
  std::vector<size_t> bytewise{1};
  compare(expected, fragmented(prm, stream, bytewise));
  return 0;
}
