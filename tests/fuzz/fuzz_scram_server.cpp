// libFuzzer target: SCRAM-SHA-256 as pgrouter's server side (src/protocol/scram.cpp), fed an arbitrary
// client-first-message and client-final-message. Nothing fuzzed may authenticate: the proof is an HMAC of the
// whole exchange, so an input that gets Ok means the check is broken. A second exchange with a real client
// (pgrouter's own ClientExchange) and a fuzzed nonce must succeed with the right password and fail with
// another.
#include <fuzzer/FuzzedDataProvider.h>

#include <cstdint>
#include <string>

#include "fuzz_check.hpp"
#include "pgrouter/protocol/scram.hpp"

namespace scram = pgrouter::protocol::scram;

namespace {
const scram::Verifier& verifier() {
  // Few iterations: the derivation is OpenSSL's, and the fuzzer should spend its time on the grammar.
  static const scram::Verifier v = scram::make_verifier("pencil", "QSXCR+Q6sek8bf92", 16);
  return v;
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  FuzzedDataProvider in(data, size);
  std::string client_first = in.ConsumeRandomLengthString(512);
  std::string client_final = in.ConsumeRandomLengthString(512);
  std::string nonce = in.ConsumeRandomLengthString(64);
  bool right_password = in.ConsumeBool();

  std::string err, server_final;
  scram::ServerExchange server(verifier(), "3rfcNHYJY1ZVvWVs7j");
  auto server_first = server.handle_client_first(client_first, err);
  if (server_first) {
    FUZZ_CHECK(server_first->starts_with("r="));
    FUZZ_CHECK(server_first->find(",s=") != std::string::npos &&
               server_first->find(",i=16") != std::string::npos);
  } else {
    FUZZ_CHECK(!err.empty());
  }
  err.clear();
  auto result = server.handle_client_final(client_final, server_final, err);
  FUZZ_CHECK(result != scram::ServerExchange::Result::Ok);
  FUZZ_CHECK(!err.empty());

  // A real client with the fuzzed nonce: any nonce RFC 5802 allows (printable ASCII but ',') must work. (One
  // with ',' would be read as a shorter nonce and an extension, which the client then rightly refuses.)
  bool valid_nonce = !nonce.empty();
  for (char c : nonce) valid_nonce = valid_nonce && c >= 0x21 && c <= 0x7e && c != ',';
  if (!valid_nonce) return 0;
  scram::ClientExchange client(right_password ? "pencil" : "pencil?", nonce);
  scram::ServerExchange server2(verifier(), "3rfcNHYJY1ZVvWVs7j");
  err.clear();
  auto first2 = server2.handle_client_first(client.client_first(), err);
  FUZZ_CHECK(first2);
  auto final2 = client.handle_server_first(*first2, err);
  FUZZ_CHECK(final2);
  server_final.clear();
  auto result2 = server2.handle_client_final(*final2, server_final, err);
  if (right_password) {
    FUZZ_CHECK(result2 == scram::ServerExchange::Result::Ok);
    FUZZ_CHECK(client.verify_server_final(server_final, err));
  } else {
    FUZZ_CHECK(result2 == scram::ServerExchange::Result::BadProof);
  }
  return 0;
}
