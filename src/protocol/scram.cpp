// SCRAM-SHA-256 message grammar and key derivation for both sides of an exchange (RFC 5802, RFC 7677).
#include "pgrouter/protocol/scram.hpp"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <openssl/sha.h>

#include <array>
#include <charconv>
#include <stdexcept>
#include <vector>

namespace pgrouter::protocol::scram {
namespace {

constexpr std::string_view kMechanismPrefix = "SCRAM-SHA-256$";
constexpr size_t kKeyLength = 32;
constexpr size_t kNonceBytes = 18;  // what libpq and the PostgreSQL server use

constexpr std::string_view kAlphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

std::string hmac_sha256(std::string_view key, std::string_view data) {
  std::string out(kKeyLength, '\0');
  unsigned int len = 0;
  HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()),
       reinterpret_cast<const unsigned char*>(data.data()), data.size(),
       reinterpret_cast<unsigned char*>(out.data()), &len);
  return out;
}

std::string sha256(std::string_view data) {
  std::string out(kKeyLength, '\0');
  SHA256(reinterpret_cast<const unsigned char*>(data.data()), data.size(),
         reinterpret_cast<unsigned char*>(out.data()));
  return out;
}

std::string salted_password(std::string_view password, std::string_view salt, int iterations) {
  std::string out(kKeyLength, '\0');
  if (PKCS5_PBKDF2_HMAC(password.data(), static_cast<int>(password.size()),
                        reinterpret_cast<const unsigned char*>(salt.data()), static_cast<int>(salt.size()),
                        iterations, EVP_sha256(), static_cast<int>(out.size()),
                        reinterpret_cast<unsigned char*>(out.data())) != 1) {
    throw std::runtime_error("PKCS5_PBKDF2_HMAC failed");
  }
  return out;
}

std::string xor_bytes(std::string_view a, std::string_view b) {
  std::string out(a);
  for (size_t i = 0; i < out.size() && i < b.size(); ++i) out[i] = static_cast<char>(out[i] ^ b[i]);
  return out;
}

bool equal_constant_time(std::string_view a, std::string_view b) {
  return a.size() == b.size() && CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

std::string random_nonce() {
  std::array<unsigned char, kNonceBytes> raw{};
  if (RAND_bytes(raw.data(), static_cast<int>(raw.size())) != 1)
    throw std::runtime_error("RAND_bytes failed");
  return base64_encode(std::string_view(reinterpret_cast<const char*>(raw.data()), raw.size()));
}

// RFC 5802: printable ASCII except ','.
bool valid_nonce(std::string_view nonce) {
  if (nonce.empty()) return false;
  for (char c : nonce) {
    if (c < 0x21 || c > 0x7e || c == ',') return false;
  }
  return true;
}

std::optional<int> parse_positive_int(std::string_view text) {
  int value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end != text.data() + text.size() || value <= 0) return std::nullopt;
  return value;
}

// Text a server chose, as it may appear in an error message and the log: printable ASCII, at most `max`
// characters (then "...").
std::string printable(std::string_view text, size_t max) {
  std::string out;
  for (char c : text.substr(0, max)) out += (c >= 0x20 && c <= 0x7e) ? c : '?';
  if (text.size() > max) out += "...";
  return out;
}

std::vector<std::string_view> split(std::string_view text, char sep) {
  std::vector<std::string_view> parts;
  size_t start = 0;
  while (true) {
    size_t pos = text.find(sep, start);
    parts.push_back(text.substr(start, pos == std::string_view::npos ? std::string_view::npos : pos - start));
    if (pos == std::string_view::npos) break;
    start = pos + 1;
  }
  return parts;
}

// One "x=value" attribute; nullopt if the part does not have that shape.
std::optional<std::string_view> attribute(std::string_view part, char name) {
  if (part.size() < 2 || part[0] != name || part[1] != '=') return std::nullopt;
  return part.substr(2);
}

}  // namespace

std::string base64_encode(std::string_view raw) {
  std::string out;
  out.reserve((raw.size() + 2) / 3 * 4);
  size_t i = 0;
  for (; i + 2 < raw.size(); i += 3) {
    uint32_t n = (uint8_t(raw[i]) << 16) | (uint8_t(raw[i + 1]) << 8) | uint8_t(raw[i + 2]);
    out += kAlphabet[(n >> 18) & 63];
    out += kAlphabet[(n >> 12) & 63];
    out += kAlphabet[(n >> 6) & 63];
    out += kAlphabet[n & 63];
  }
  if (size_t rest = raw.size() - i; rest > 0) {
    uint32_t n = uint8_t(raw[i]) << 16;
    if (rest == 2) n |= uint8_t(raw[i + 1]) << 8;
    out += kAlphabet[(n >> 18) & 63];
    out += kAlphabet[(n >> 12) & 63];
    out += rest == 2 ? kAlphabet[(n >> 6) & 63] : '=';
    out += '=';
  }
  return out;
}

// Strict: canonical padding only, no whitespace, so two spellings of one value cannot both verify.
std::optional<std::string> base64_decode(std::string_view text) {
  if (text.size() % 4 != 0) return std::nullopt;
  std::string out;
  out.reserve(text.size() / 4 * 3);
  for (size_t i = 0; i < text.size(); i += 4) {
    uint32_t n = 0;
    int padding = 0;
    for (size_t j = 0; j < 4; ++j) {
      char c = text[i + j];
      uint32_t v = 0;
      if (c == '=') {
        // Padding only in the last group, only in its last two places, and nothing but padding after it.
        if (i + 4 != text.size() || j < 2) return std::nullopt;
        ++padding;
      } else {
        if (padding > 0) return std::nullopt;
        size_t pos = kAlphabet.find(c);
        if (pos == std::string_view::npos) return std::nullopt;
        v = static_cast<uint32_t>(pos);
      }
      n = (n << 6) | v;
    }
    out += static_cast<char>((n >> 16) & 0xff);
    if (padding < 2) out += static_cast<char>((n >> 8) & 0xff);
    if (padding < 1) out += static_cast<char>(n & 0xff);
    // Bits hidden under the padding must be zero, or the text is not the canonical encoding.
    if ((padding == 1 && (n & 0xff) != 0) || (padding == 2 && (n & 0xffff) != 0)) return std::nullopt;
  }
  return out;
}

std::optional<Verifier> parse_verifier(std::string_view text) {
  if (!text.starts_with(kMechanismPrefix)) return std::nullopt;
  text.remove_prefix(kMechanismPrefix.size());
  size_t dollar = text.find('$');
  if (dollar == std::string_view::npos) return std::nullopt;
  std::string_view salt_part = text.substr(0, dollar);
  std::string_view keys_part = text.substr(dollar + 1);
  size_t colon1 = salt_part.find(':');
  size_t colon2 = keys_part.find(':');
  if (colon1 == std::string_view::npos || colon2 == std::string_view::npos) return std::nullopt;
  auto iterations = parse_positive_int(salt_part.substr(0, colon1));
  auto salt = base64_decode(salt_part.substr(colon1 + 1));
  auto stored_key = base64_decode(keys_part.substr(0, colon2));
  auto server_key = base64_decode(keys_part.substr(colon2 + 1));
  if (!iterations || !salt || salt->empty() || !stored_key || !server_key ||
      stored_key->size() != kKeyLength || server_key->size() != kKeyLength) {
    return std::nullopt;
  }
  return Verifier{*iterations, std::move(*salt), std::move(*stored_key), std::move(*server_key)};
}

std::string format_verifier(const Verifier& v) {
  return std::string(kMechanismPrefix) + std::to_string(v.iterations) + ":" + base64_encode(v.salt) + "$" +
         base64_encode(v.stored_key) + ":" + base64_encode(v.server_key);
}

Verifier make_verifier(std::string_view password, std::string_view salt, int iterations) {
  std::string salted = salted_password(password, salt, iterations);
  return Verifier{iterations, std::string(salt), sha256(hmac_sha256(salted, "Client Key")),
                  hmac_sha256(salted, "Server Key")};
}

Verifier mock_verifier(std::string_view username, std::string_view mock_secret) {
  // Each part is keyed by the secret and labelled, so the parts are unrelated to each other and
  // nobody without the secret can tell a mock salt from a real one.
  std::string user(username);
  return Verifier{4096, hmac_sha256(mock_secret, "salt:" + user).substr(0, 16),
                  hmac_sha256(mock_secret, "stored-key:" + user),
                  hmac_sha256(mock_secret, "server-key:" + user)};
}

ServerExchange::ServerExchange(Verifier v, std::string nonce_override)
    : v_(std::move(v)), nonce_override_(std::move(nonce_override)) {}

std::optional<std::string> ServerExchange::handle_client_first(std::string_view client_first,
                                                               std::string& err) {
  // gs2-header = cbind-flag "," [authzid] ","
  auto parts = split(client_first, ',');
  if (parts.size() < 4) {
    err = "malformed SCRAM client-first-message";
    return std::nullopt;
  }
  std::string_view cbind = parts[0];
  if (cbind.starts_with("p=")) {
    err = "channel binding is not supported";
    return std::nullopt;
  }
  if (cbind != "n" && cbind != "y") {
    err = "malformed SCRAM client-first-message: unexpected channel binding flag";
    return std::nullopt;
  }
  if (!parts[1].empty()) {
    err = "client uses authorization identity, but it is not supported";
    return std::nullopt;
  }
  // PostgreSQL clients send an empty user name (the startup packet carries it), so any n= is accepted.
  if (!attribute(parts[2], 'n')) {
    err = "malformed SCRAM client-first-message: expected n=";
    return std::nullopt;
  }
  auto client_nonce = attribute(parts[3], 'r');
  if (!client_nonce || !valid_nonce(*client_nonce)) {
    err = "malformed SCRAM client-first-message: bad or missing nonce";
    return std::nullopt;
  }
  for (size_t i = 4; i < parts.size(); ++i) {
    if (parts[i].starts_with("m=")) {
      err = "unsupported mandatory SCRAM extension";
      return std::nullopt;
    }
  }
  gs2_header_ = std::string(cbind) + ",,";
  client_first_bare_ = std::string(client_first.substr(gs2_header_.size()));
  std::string server_nonce = nonce_override_.empty() ? random_nonce() : nonce_override_;
  combined_nonce_ = std::string(*client_nonce) + server_nonce;
  server_first_ =
      "r=" + combined_nonce_ + ",s=" + base64_encode(v_.salt) + ",i=" + std::to_string(v_.iterations);
  return server_first_;
}

ServerExchange::Result ServerExchange::handle_client_final(std::string_view client_final,
                                                           std::string& server_final, std::string& err) {
  if (server_first_.empty()) {
    err = "SCRAM client-final-message before client-first-message";
    return Result::Malformed;
  }
  size_t proof_pos = client_final.rfind(",p=");
  if (proof_pos == std::string_view::npos) {
    err = "malformed SCRAM client-final-message: missing proof";
    return Result::Malformed;
  }
  std::string_view without_proof = client_final.substr(0, proof_pos);
  auto parts = split(without_proof, ',');
  auto binding = parts.size() >= 2 ? attribute(parts[0], 'c') : std::nullopt;
  auto nonce = parts.size() >= 2 ? attribute(parts[1], 'r') : std::nullopt;
  if (!binding || !nonce) {
    err = "malformed SCRAM client-final-message: expected c= and r=";
    return Result::Malformed;
  }
  if (*binding != base64_encode(gs2_header_)) {
    err = "SCRAM channel binding check failed";
    return Result::Malformed;
  }
  if (*nonce != combined_nonce_) {
    err = "SCRAM nonce does not match";
    return Result::Malformed;
  }
  auto proof = base64_decode(client_final.substr(proof_pos + 3));
  if (!proof || proof->size() != kKeyLength) {
    err = "malformed SCRAM client-final-message: bad proof encoding";
    return Result::Malformed;
  }
  std::string auth_message = client_first_bare_ + "," + server_first_ + "," + std::string(without_proof);
  std::string client_key = xor_bytes(*proof, hmac_sha256(v_.stored_key, auth_message));
  if (!equal_constant_time(sha256(client_key), v_.stored_key)) {
    err = "password authentication failed";
    return Result::BadProof;
  }
  server_final = "v=" + base64_encode(hmac_sha256(v_.server_key, auth_message));
  client_key_ = std::move(client_key);
  return Result::Ok;
}

ClientExchange::ClientExchange(std::string password, std::string nonce_override)
    : password_(std::move(password)),
      nonce_(nonce_override.empty() ? random_nonce() : std::move(nonce_override)) {}

ClientExchange::ClientExchange(PassthroughKeys keys, std::string nonce_override)
    : keys_(std::move(keys)), nonce_(nonce_override.empty() ? random_nonce() : std::move(nonce_override)) {}

std::string ClientExchange::client_first() {
  // The user name is empty as libpq sends it: PostgreSQL takes it from the startup packet.
  client_first_bare_ = "n=,r=" + nonce_;
  return gs2_header() + client_first_bare_;
}

std::optional<std::string> ClientExchange::handle_server_first(std::string_view server_first,
                                                               std::string& err) {
  if (client_first_bare_.empty()) client_first();
  auto parts = split(server_first, ',');
  auto nonce = parts.size() >= 3 ? attribute(parts[0], 'r') : std::nullopt;
  auto salt_text = parts.size() >= 3 ? attribute(parts[1], 's') : std::nullopt;
  auto iterations_text = parts.size() >= 3 ? attribute(parts[2], 'i') : std::nullopt;
  if (parts.size() > 3 && parts[3].starts_with("m=")) {
    err = "server requires an unsupported SCRAM extension";
    return std::nullopt;
  }
  if (!nonce || !salt_text || !iterations_text) {
    err = "malformed SCRAM server-first-message";
    return std::nullopt;
  }
  // The server must extend our nonce, never replace it, or a replayed exchange could be accepted.
  if (!nonce->starts_with(nonce_) || nonce->size() == nonce_.size() || !valid_nonce(*nonce)) {
    err = "SCRAM server nonce does not extend the client nonce";
    return std::nullopt;
  }
  auto salt = base64_decode(*salt_text);
  if (!salt || salt->empty()) {
    err = "malformed SCRAM server-first-message: bad salt";
    return std::nullopt;
  }
  // Checked before any key derivation, so a refused count costs nothing.
  auto iterations = parse_positive_int(*iterations_text);
  if (!iterations || *iterations > kMaxServerIterations) {
    err = "SCRAM iteration count " + printable(*iterations_text, 24) + " is out of range (1 to " +
          std::to_string(kMaxServerIterations) + ")";
    return std::nullopt;
  }
  std::string client_key, server_key;
  if (keys_) {
    // The keys hold only for the salt and count they were derived with: another verifier on the server
    // makes its check of the proof fail, as a wrong password would.
    client_key = keys_->client_key;
    server_key = keys_->server_key;
  } else {
    std::string salted = salted_password(password_, *salt, *iterations);
    client_key = hmac_sha256(salted, "Client Key");
    server_key = hmac_sha256(salted, "Server Key");
  }
  std::string stored_key = sha256(client_key);
  std::string without_proof =
      "c=" + channel_binding_attribute(gs2_header(), cbind_data_) + ",r=" + std::string(*nonce);
  std::string auth_message = client_first_bare_ + "," + std::string(server_first) + "," + without_proof;
  std::string proof = xor_bytes(client_key, hmac_sha256(stored_key, auth_message));
  expected_server_signature_ = hmac_sha256(server_key, auth_message);
  return without_proof + ",p=" + base64_encode(proof);
}

std::string channel_binding_attribute(std::string_view gs2_header, std::string_view cbind_data) {
  return base64_encode(std::string(gs2_header) + std::string(cbind_data));
}

bool ClientExchange::verify_server_final(std::string_view server_final, std::string& err) {
  if (auto server_error = attribute(server_final.substr(0, server_final.find(',')), 'e')) {
    err = "SCRAM server error: " + printable(*server_error, 100);
    return false;
  }
  auto signature_text = attribute(server_final.substr(0, server_final.find(',')), 'v');
  auto signature = signature_text ? base64_decode(*signature_text) : std::nullopt;
  if (!signature) {
    err = "malformed SCRAM server-final-message";
    return false;
  }
  if (expected_server_signature_.empty() || !equal_constant_time(*signature, expected_server_signature_)) {
    err = "SCRAM server signature does not match: the server does not know the password";
    return false;
  }
  return true;
}

}  // namespace pgrouter::protocol::scram
