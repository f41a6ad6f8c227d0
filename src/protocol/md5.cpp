// PostgreSQL's md5 password hashing, both the stored form and the salted challenge response.
#include "pgrouter/protocol/md5.hpp"

#include <openssl/evp.h>

#include <stdexcept>

namespace pgrouter::protocol::md5 {

std::string hex_digest(std::string_view data) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  if (EVP_Digest(data.data(), data.size(), digest, &length, EVP_md5(), nullptr) != 1) {
    throw std::runtime_error("EVP_Digest(md5) failed");
  }
  static constexpr char kHex[] = "0123456789abcdef";
  std::string hex;
  hex.reserve(length * 2);
  for (unsigned int i = 0; i < length; ++i) {
    hex += kHex[digest[i] >> 4];
    hex += kHex[digest[i] & 0x0f];
  }
  return hex;
}

std::string stored_hash(std::string_view user, std::string_view password) {
  std::string input(password);
  input += user;
  return "md5" + hex_digest(input);
}

std::string response(std::string_view stored, std::string_view salt4) {
  // The challenge hashes the hex part only; "md5" is a marker, not part of the secret.
  std::string input(stored.starts_with("md5") ? stored.substr(3) : stored);
  input += salt4;
  return "md5" + hex_digest(input);
}

}  // namespace pgrouter::protocol::md5
