// libFuzzer target: SCRAM-SHA-256 as pgrouter's client side (logging into a server), fed an arbitrary
// server-first-message and server-final-message. Whatever the server sends, the client must not accept a
// nonce that does not extend its own, must not accept a server-final it could not have checked, and must
// refuse iteration counts that are 0 or absurd rather than spend minutes in PBKDF2 (libFuzzer's -timeout in
// run.sh turns such a spin into a failure).
#include <fuzzer/FuzzedDataProvider.h>

#include <charconv>
#include <cstdint>
#include <string>
#include <string_view>

#include "fuzz_check.hpp"
#include "pgrouter/protocol/scram.hpp"

namespace scram = pgrouter::protocol::scram;

namespace {
constexpr std::string_view kNonce = "fyko+d2lbbFgONRv9qkxdawL";

// The i= value the client will read, if it is a plain int (the client refuses anything else at once).
long long iterations_asked(std::string_view msg) {
  size_t a = msg.find(',');
  size_t b = a == std::string_view::npos ? a : msg.find(',', a + 1);
  if (b == std::string_view::npos) return -1;
  std::string_view rest = msg.substr(b + 1);
  rest = rest.substr(0, rest.find(','));
  if (!rest.starts_with("i=")) return -1;
  long long v = -1;
  auto [end, ec] = std::from_chars(rest.data() + 2, rest.data() + rest.size(), v);
  return ec == std::errc() && end == rest.data() + rest.size() ? v : -1;
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  FuzzedDataProvider in(data, size);
  std::string server_first = in.ConsumeRandomLengthString(512);
  auto rest = in.ConsumeRemainingBytes<char>();
  std::string server_final(rest.begin(), rest.end());
  // Counts between what a real server uses and the client's cap cost up to seconds each: fine for one login,
  // too slow for a fuzzer. Counts above the cap are kept: they must be refused at once.
  long long iterations = iterations_asked(server_first);
  if (iterations > 100'000 && iterations <= 10'000'000) return 0;

  scram::ClientExchange client("pencil", std::string(kNonce));
  std::string first = client.client_first();
  FUZZ_CHECK(first == "n,,n=,r=" + std::string(kNonce));
  std::string err;
  auto client_final = client.handle_server_first(server_first, err);
  if (client_final) {
    FUZZ_CHECK(err.empty());
    // Accepted: the server's nonce extends ours, and it is what the client-final carries.
    FUZZ_CHECK(server_first.starts_with("r=" + std::string(kNonce)));
    FUZZ_CHECK(server_first.size() > 2 + kNonce.size() && server_first[2 + kNonce.size()] != ',');
    FUZZ_CHECK(iterations >= 1 && iterations <= 100'000);
    FUZZ_CHECK(client_final->starts_with("c=biws,r=" + std::string(kNonce)));
    FUZZ_CHECK(client_final->find(",p=") != std::string::npos);
  } else {
    FUZZ_CHECK(!err.empty());
  }
  err.clear();
  bool verified = client.verify_server_final(server_final, err);
  // A signature is an HMAC under a key only the password's holder has: a fuzzed one never matches.
  FUZZ_CHECK(!verified);
  FUZZ_CHECK(!err.empty());
  return 0;
}
