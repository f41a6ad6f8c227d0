// PostgreSQL's md5 password scheme: stored "md5" + hex(md5(password || user)), sent as
// "md5" + hex(md5(hex_part_of_stored || 4-byte salt)).
#pragma once
#include <string>
#include <string_view>

namespace pgrouter::protocol::md5 {
std::string hex_digest(std::string_view data);
// "md5" + hex(md5(password + user))
std::string stored_hash(std::string_view user, std::string_view password);
// What a client sends in PasswordMessage for a stored hash ("md5...") and the 4-byte salt.
std::string response(std::string_view stored, std::string_view salt4);
}  // namespace pgrouter::protocol::md5
