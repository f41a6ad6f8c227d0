// SCRAM-SHA-256 (RFC 5802 / RFC 7677) for both sides: pgrouter as server to clients, as client to PostgreSQL.
// Primitives come from OpenSSL (PBKDF2, HMAC, SHA-256, RAND_bytes); only the message grammar is ours.
#pragma once
#include <optional>
#include <string>
#include <string_view>

namespace pgrouter::protocol::scram {

std::string base64_encode(std::string_view raw);
std::optional<std::string> base64_decode(std::string_view text);

// A stored SCRAM secret, as PostgreSQL keeps it in pg_authid.rolpassword. Keys and salt are raw bytes.
struct Verifier {
  int iterations = 4096;
  std::string salt;        // raw
  std::string stored_key;  // raw, 32 bytes
  std::string server_key;  // raw, 32 bytes
};

// Parses "SCRAM-SHA-256$<iterations>:<salt b64>$<StoredKey b64>:<ServerKey b64>".
std::optional<Verifier> parse_verifier(std::string_view text);
std::string format_verifier(const Verifier& v);
// Derives a verifier from a plaintext password (SASLprep is not applied: ASCII passwords are the norm;
// PostgreSQL also falls back to the raw bytes when SASLprep fails).
Verifier make_verifier(std::string_view password, std::string_view salt, int iterations = 4096);
// A deterministic fake verifier for a user that does not exist, so an unknown user goes through the
// same exchange as a known one and fails the same way (no user enumeration).
Verifier mock_verifier(std::string_view username, std::string_view mock_secret);

// Server side of one exchange. Feed it the SASLInitialResponse data, then the SASLResponse data.
class ServerExchange {
 public:
  // nonce_override is for tests (RFC vectors); empty means 18 random bytes, base64.
  explicit ServerExchange(Verifier v, std::string nonce_override = {});
  // Returns the server-first-message, or nullopt with err set if the client-first-message is malformed
  // or asks for channel binding ("p=") which pgrouter does not offer.
  std::optional<std::string> handle_client_first(std::string_view client_first, std::string& err);
  enum class Result { Ok, BadProof, Malformed };
  // On Ok, server_final is "v=<signature>". BadProof means a wrong password.
  Result handle_client_final(std::string_view client_final, std::string& server_final, std::string& err);
  // After Ok: the client's ClientKey (its proof XOR the signature), which lets pgrouter log in to a server
  // holding the same verifier as this user without knowing the password.
  const std::string& client_key() const { return client_key_; }

 private:
  Verifier v_;
  std::string client_key_;
  std::string nonce_override_;
  std::string client_first_bare_;
  std::string server_first_;
  std::string combined_nonce_;
  std::string gs2_header_;
};

// The most PBKDF2 iterations a server may ask of pgrouter. PBKDF2 runs on the worker thread, where the 2^31-1
// a hostile server can ask for would stall every session of that worker for minutes (libpq has no bound, but
// it serves one user). 1,000,000 (about 0.25 s) is 244 times PostgreSQL's default of 4096 and above OWASP's
// 600,000 for PBKDF2-HMAC-SHA256.
constexpr int kMaxServerIterations = 1'000'000;

// A user's ClientKey and ServerKey (raw), in place of its password: enough to log in to a server whose
// verifier for the user has the salt and iteration count they were derived with.
struct PassthroughKeys {
  std::string client_key;
  std::string server_key;
};

// Client side of one exchange (pgrouter logging into PostgreSQL).
class ClientExchange {
 public:
  explicit ClientExchange(std::string password, std::string nonce_override = {});
  explicit ClientExchange(PassthroughKeys keys, std::string nonce_override = {});
  // Over TLS with SCRAM-SHA-256-PLUS: binds the exchange to the server's certificate (RFC 5929
  // tls-server-end-point), so a man in the middle holding another certificate cannot relay the proof.
  // Call before client_first().
  void bind_channel(std::string cert_hash) { cbind_data_ = std::move(cert_hash); }
  bool channel_bound() const { return !cbind_data_.empty(); }
  std::string gs2_header() const { return channel_bound() ? "p=tls-server-end-point,," : "n,,"; }
  std::string client_first();  // "<gs2 header>n=,r=<nonce>"
  // Returns the client-final-message, or nullopt with err set.
  std::optional<std::string> handle_server_first(std::string_view server_first, std::string& err);
  // Checks the server's signature; false with err set if it does not match.
  bool verify_server_final(std::string_view server_final, std::string& err);

 private:
  std::string password_;
  std::optional<PassthroughKeys> keys_;
  std::string nonce_;
  std::string client_first_bare_;
  std::string expected_server_signature_;
  std::string cbind_data_;  // tls-server-end-point hash; empty = no channel binding
};

// The value of the final message's c= attribute: base64(gs2 header + channel binding data).
std::string channel_binding_attribute(std::string_view gs2_header, std::string_view cbind_data);

}  // namespace pgrouter::protocol::scram
