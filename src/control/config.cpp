// Loads and validates pgrouter's YAML config: each section is one declarative table of keys (the key makers,
// the Loader, the key makers and the value parsers are in config_loader.hpp).
#include "pgrouter/control/config.hpp"
#include "pgrouter/util/strings.hpp"

#include <arpa/inet.h>
#include <fmt/format.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <sstream>
#include <tuple>

#include "pgrouter/protocol/scram.hpp"
#include "config_loader.hpp"
#include "pgrouter/control/userlist.hpp"

namespace pgrouter::control {
namespace {
using namespace config_detail;

std::string non_empty(std::string_view text) { return text.empty() ? "a non-empty string" : ""; }

// A unix socket's path (sockaddr_un holds 108 bytes with the terminating NUL).
std::string socket_path(std::string_view text) {
  return !text.empty() && text.front() == '/' && text.size() < 108
             ? ""
             : "an absolute path shorter than 108 bytes";
}

std::string scram_verifier_text(std::string_view text) {
  return protocol::scram::parse_verifier(text)
             ? ""
             : "a PostgreSQL SCRAM secret: SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>";
}

std::string md5_hash_text(std::string_view text) {
  bool ok = text.size() == 35 && text.starts_with("md5") &&
            std::all_of(text.begin() + 3, text.end(),
                        [](char c) { return std::isxdigit(static_cast<unsigned char>(c)); });
  return ok ? "" : "'md5' followed by 32 hex digits, as PostgreSQL stores it";
}

std::string network_text(std::string_view text) {
  return text == "all" || parse_network(text) ? "" : "\"all\" or CIDRs like 10.0.0.0/8 or ::1/128";
}

const std::vector<std::pair<std::string_view, net::SslMode>>& sslmodes() {
  using enum net::SslMode;
  static const std::vector<std::pair<std::string_view, net::SslMode>> modes{{"disable", disable},
                                                                            {"prefer", prefer},
                                                                            {"require", require},
                                                                            {"verify-ca", verify_ca},
                                                                            {"verify-full", verify_full}};
  return modes;
}

// What is wrong with one backend's TLS settings (empty: nothing); where: "server_tls" or the backend's
// address.
std::string server_tls_problem(const net::ServerTlsSettings& s, const std::string& where) {
  bool verify = s.sslmode == net::SslMode::verify_ca || s.sslmode == net::SslMode::verify_full;
  if (verify && s.sslrootcert.empty())
    return fmt::format("{}: sslmode {} needs sslrootcert (the CA file that signed the server's certificate)",
                       where, net::sslmode_name(s.sslmode));
  if (s.sslcert.empty() != s.sslkey.empty())
    return fmt::format("{}: a client certificate needs both sslcert and sslkey, or neither", where);
  return "";
}

const Section<net::ServerTlsSettings>& server_tls_section() {
  using S = net::ServerTlsSettings;
  static const Section<S> section{
      "in server_tls",
      {choice_key<S, net::SslMode>("sslmode", &S::sslmode, sslmodes(), kReloadable),
       path_key("sslrootcert", &S::sslrootcert, kReloadable), path_key("sslcert", &S::sslcert, kReloadable),
       path_key("sslkey", &S::sslkey, kReloadable)},
      [](Loader& l, const Field& f, S& s) {
        if (s.sslcert.empty() != s.sslkey.empty()) l.error_at(f, server_tls_problem(s, "server_tls"));
      }};
  return section;
}

std::vector<std::pair<std::string_view, std::optional<net::SslMode>>> optional_sslmodes() {
  std::vector<std::pair<std::string_view, std::optional<net::SslMode>>> out;
  for (auto& [name, mode] : sslmodes()) out.emplace_back(name, mode);
  return out;
}

// A backend's TLS keys override server_tls's one by one (server_tls loads before databases).
void merge_server_tls(Loader& l, const Field& f, Endpoint& ep) {
  ep.tls = l.config.server_tls;
  if (ep.sslmode) ep.tls.sslmode = *ep.sslmode;
  if (!ep.sslrootcert.empty()) ep.tls.sslrootcert = ep.sslrootcert;
  if (!ep.sslcert.empty() || !ep.sslkey.empty()) {  // a certificate and its key go together
    ep.tls.sslcert = ep.sslcert;
    ep.tls.sslkey = ep.sslkey;
  }
  auto problem = server_tls_problem(ep.tls, "server " + util::host_port(ep.host, ep.port));
  if (!problem.empty()) l.error_at(f, problem);
}

const Section<Endpoint>& endpoint_section() {
  static const Section<Endpoint> section{
      "in a server address",
      {required(string_key("host", &Endpoint::host, kReloadable, non_empty)),
       port_key("port", &Endpoint::port, 1, kReloadable),
       int_key("weight", &Endpoint::weight, 0, 1'000'000, kReloadable),
       choice_key<Endpoint, std::optional<net::SslMode>>("sslmode", &Endpoint::sslmode, optional_sslmodes(),
                                                         kReloadable),
       path_key("sslrootcert", &Endpoint::sslrootcert, kReloadable),
       path_key("sslcert", &Endpoint::sslcert, kReloadable),
       path_key("sslkey", &Endpoint::sslkey, kReloadable)},
      merge_server_tls};
  return section;
}

const Section<ShardConfig>& shard_section() {
  static const Section<ShardConfig> section{
      "in a shard",
      {section_key("primary", &ShardConfig::primary, endpoint_section, kReloadable),
       list_key("replicas", &ShardConfig::replicas, endpoint_section, 0),
       list_key("hosts", &ShardConfig::hosts, endpoint_section, 1),
       string_key("dbname", &ShardConfig::dbname, kReloadable, non_empty)},
      [](Loader& l, const Field& f, ShardConfig& shard) {
        if (!f.value.IsMap()) return;
        bool fixed = f.value["primary"].IsDefined(), automatic = f.value["hosts"].IsDefined();
        if (fixed == automatic) {
          l.error_at(
              f, fmt::format("a shard needs {} 'primary' (fixed roles, with optional 'replicas') or 'hosts' "
                             "(role: auto: the host that is not in recovery is the primary)",
                             fixed ? "either" : "one of"));
          return;
        }
        if (!automatic) return;
        if (f.value["replicas"].IsDefined()) {
          l.error_at(f.value["replicas"].Mark(),
                     "'replicas' cannot be used with 'hosts': list every server under "
                     "'hosts' (their roles are found by probing)");
          return;
        }
        std::map<std::string, int> seen;
        for (size_t i = 0; i < shard.hosts.size(); ++i) {
          auto key = util::host_port(shard.hosts[i].host, shard.hosts[i].port);
          if (!seen.emplace(key, int(i)).second) {
            l.error_at(f.value["hosts"][i].Mark(), fmt::format("host {} is listed twice in 'hosts'", key));
            return;
          }
        }
        if (shard.hosts.empty()) return;  // already reported
        shard.auto_roles = true;
        shard.primary = shard.hosts[0];
        shard.replicas.assign(shard.hosts.begin() + 1, shard.hosts.end());
      }};
  return section;
}

// Names pgrouter puts into SQL unquoted: letters, digits, '_', '.' and what `extra` allows.
bool plain_name(std::string_view name, std::string_view extra = {}) {
  if (name.empty()) return false;
  for (char c : name)
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '.' || extra.find(c) != extra.npos))
      return false;
  return true;
}

std::string parameter_name(std::string_view name) { return plain_name(name) ? "" : "parameter names"; }

const Section<PoolConfig>& pool_section() {
  static const Section<PoolConfig> section{
      "in pool",
      {choice_key<PoolConfig, PoolMode>(
           "mode", &PoolConfig::mode,
           {{"session", PoolMode::session}, {"transaction", PoolMode::transaction}}, kReloadable),
       int_key("size", &PoolConfig::size, 1, 100'000, kReloadable),
       int_key("min_size", &PoolConfig::min_size, 0, 100'000, kReloadable),
       duration_key("connect_timeout", &PoolConfig::connect_timeout, kReloadable),
       duration_key("idle_timeout", &PoolConfig::idle_timeout, kReloadable),
       duration_key("max_lifetime", &PoolConfig::max_lifetime, kReloadable),
       int_key("queue_size", &PoolConfig::queue_size, 0, 1'000'000, kReloadable),
       duration_key("queue_timeout", &PoolConfig::queue_timeout, kReloadable),
       string_key("reset_query", &PoolConfig::reset_query, kReloadable),
       timeout_key("query_timeout", &PoolConfig::query_timeout, kReloadable),
       timeout_key("idle_transaction_timeout", &PoolConfig::idle_transaction_timeout, kReloadable),
       timeout_key("client_idle_timeout", &PoolConfig::client_idle_timeout, kReloadable),
       int_key("prepared_statements_cache", &PoolConfig::prepared_statements_cache, 0, 1'000'000,
               kReloadable),
       choice_key<PoolConfig, UnnamedStatements>(
           "unnamed_statements", &PoolConfig::unnamed_statements,
           {{"pass", UnnamedStatements::pass}, {"prepare", UnnamedStatements::prepare}}, kReloadable),
       choice_key<PoolConfig, SessionFeatures>(
           "session_features", &PoolConfig::session_features,
           {{"pin", SessionFeatures::pin}, {"refuse", SessionFeatures::refuse}}, kReloadable),
       name_list_key("track_parameters", &PoolConfig::track_parameters, parameter_name)},
      [](Loader& l, const Field& f, PoolConfig& pool) {
        for (auto& name : pool.track_parameters) util::ascii_lower_in_place(name);
        if (pool.min_size > pool.size) {
          l.error_at(f,
                     fmt::format("pool min_size ({}) must not exceed size ({})", pool.min_size, pool.size));
        }
      }};
  return section;
}

std::string function_name(std::string_view name) { return plain_name(name, "$") ? "" : "function names"; }

const Section<RoutingConfig>& routing_section() {
  static const Section<RoutingConfig> section{
      "in routing",
      {choice_key<RoutingConfig, ReadFrom>(
           "read_from", &RoutingConfig::read_from,
           {{"replicas", ReadFrom::replicas}, {"primary", ReadFrom::primary}, {"any", ReadFrom::any}},
           kReloadable),
       choice_key<RoutingConfig, ReplicaStrategy>("strategy", &RoutingConfig::strategy,
                                                  {{"round_robin", ReplicaStrategy::round_robin},
                                                   {"random", ReplicaStrategy::random},
                                                   {"least_outstanding", ReplicaStrategy::least_outstanding},
                                                   {"weighted", ReplicaStrategy::weighted}},
                                                  kReloadable),
       choice_key<RoutingConfig, bool>("primary_fallback", &RoutingConfig::primary_fallback,
                                       {{"true", true}, {"false", false}}, kReloadable),
       choice_key<RoutingConfig, bool>("read_your_writes", &RoutingConfig::read_your_writes,
                                       {{"true", true}, {"false", false}}, kReloadable),
       timeout_key("read_your_writes_wait", &RoutingConfig::read_your_writes_wait, kReloadable),
       int_key("max_lag_bytes", &RoutingConfig::max_lag_bytes, 0, int64_t(1) << 50, kReloadable),
       timeout_key("max_lag_time", &RoutingConfig::max_lag_time, kReloadable),
       timeout_key("wait_for_primary", &RoutingConfig::wait_for_primary, kReloadable),
       duration_key("probe_interval", &RoutingConfig::probe_interval, kReloadable),
       string_key("probe_user", &RoutingConfig::probe_user, kReloadable),
       name_list_key("read_only_functions", &RoutingConfig::read_only_functions, function_name)},
      {}};
  return section;
}

// ---------------------------------------------------------------- sharding

// An identifier as PostgreSQL reads it: unquoted, folded to lower case (ASCII letters only, as in a UTF-8
// database); "quoted", kept as written with "" for a quote. nullopt, with `problem` set, if malformed.
std::optional<std::string> sql_identifier(std::string_view text, std::string& problem) {
  std::string out;
  if (text.size() >= 2 && text.front() == '"' && text.back() == '"') {
    for (size_t i = 1; i + 1 < text.size(); ++i) {
      if (text[i] == '"') {
        if (i + 2 < text.size() && text[i + 1] == '"') {
          out += '"';
          ++i;
          continue;
        }
        problem = "a quote inside a quoted identifier must be doubled";
        return std::nullopt;
      }
      out += text[i];
    }
    if (out.empty()) problem = "a quoted identifier cannot be empty";
    if (out.find('.') != std::string::npos) problem = "pgrouter does not support '.' inside a quoted name";
  } else {
    auto start = [](unsigned char c) { return std::isalpha(c) || c == '_' || c >= 0x80; };
    if (text.empty() || !start(static_cast<unsigned char>(text.front()))) {
      problem = "an identifier starts with a letter or '_' (or is in double quotes)";
      return std::nullopt;
    }
    for (char c : text) {
      auto u = static_cast<unsigned char>(c);
      if (!(start(u) || std::isdigit(u) || c == '$')) {
        problem = fmt::format("'{}' is not allowed in an unquoted identifier (double-quote the name)", c);
        return std::nullopt;
      }
    }
    out = util::ascii_lower(text);
  }
  // PostgreSQL would truncate a longer name (NAMEDATALEN), and then it would not match what is written here.
  if (problem.empty() && out.size() > 63) problem = "an identifier is at most 63 bytes";
  if (!problem.empty()) return std::nullopt;
  return out;
}

// A table name, "table" or "schema.table", each part an identifier.
std::optional<std::string> sql_table_name(std::string_view text, std::string& problem) {
  // The separating '.' is the first one outside quotes.
  bool quoted = false;
  size_t dot = std::string_view::npos;
  for (size_t i = 0; i < text.size() && dot == std::string_view::npos; ++i) {
    if (text[i] == '"') quoted = !quoted;
    if (text[i] == '.' && !quoted) dot = i;
  }
  if (dot == std::string_view::npos) return sql_identifier(text, problem);
  auto schema = sql_identifier(text.substr(0, dot), problem);
  if (!schema) return std::nullopt;
  auto table = sql_identifier(text.substr(dot + 1), problem);
  if (!table) return std::nullopt;
  return *schema + "." + *table;
}

std::string key_type_names() { return "smallint, integer, bigint, text or uuid (or int2, int4, int8)"; }

const Section<ShardPin>& pin_section() {
  static const Section<ShardPin> section{
      "in a sharding pin",
      {grouped("pin", Key<ShardPin>{"key",
                                    kReloadable,
                                    false,
                                    {},
                                    [](Loader& l, const Field& f, ShardPin& pin) {
                                      if (auto text = l.text(f)) pin.keys = {*text};
                                    }}),
       grouped("pin", name_list_key("keys", &ShardPin::keys)),
       int_key("from", &ShardPin::from, INT64_MIN, INT64_MAX, kReloadable),
       int_key("to", &ShardPin::to, INT64_MIN, INT64_MAX, kReloadable),
       required(int_key("shard", &ShardPin::shard, 0, 65535, kReloadable))},
      [](Loader& l, const Field& f, ShardPin& pin) {
        if (!f.value.IsMap()) return;
        bool keyed = f.value["key"].IsDefined() || f.value["keys"].IsDefined();
        bool ranged = f.value["from"].IsDefined() || f.value["to"].IsDefined();
        if (keyed == ranged) {
          l.error_at(f, keyed ? "a pin names keys ('key' or 'keys') or a range ('from' and 'to'), not both"
                              : "a pin needs 'key', 'keys' or a range ('from' and 'to')");
        } else if (ranged && (f.value["from"].IsDefined() != f.value["to"].IsDefined())) {
          l.error_at(f, "a pin's range needs both 'from' and 'to' (both inclusive)");
        } else if (pin.from && pin.to && *pin.from > *pin.to) {
          l.error_at(
              f.value["from"].Mark(),
              fmt::format("a pin's range is empty: 'from' ({}) is above 'to' ({})", *pin.from, *pin.to));
        } else if (f.value["keys"].IsDefined() && pin.keys.empty()) {
          l.error_at(f.value["keys"].Mark(), "'keys' must list at least one key");
        }
      }};
  return section;
}

// pins: read each pin, then check its keys and range against the key type read before it.
Key<ShardingConfig> pins_key() {
  return {"pins", kReloadable, false, {}, [](Loader& l, const Field& f, ShardingConfig& s) {
            if (!f.value.IsSequence()) {
              l.error_at(f, "'pins' must be a list of {key: K | keys: [K, ...] | from: N, to: N, shard: I}");
              return;
            }
            std::map<std::string, int> first_line;
            for (const auto& element : f.value) {
              ShardPin pin;
              apply_section(l, Field{"pins", element, element}, pin_section(), pin);
              if (!element.IsMap()) continue;
              auto type = sharding::to_string(s.key_type);
              if ((pin.from || pin.to) &&
                  (s.key_type == sharding::KeyType::text || s.key_type == sharding::KeyType::uuid))
                l.error_at(element["from"].IsDefined() ? element["from"].Mark() : element["to"].Mark(),
                           fmt::format("a pin's range needs an integer key_type, not {}", type));
              for (auto [bound, value] : {std::pair{"from", pin.from}, std::pair{"to", pin.to}}) {
                bool integer = s.key_type != sharding::KeyType::text && s.key_type != sharding::KeyType::uuid;
                if (integer && value && !sharding::parse_text(std::to_string(*value), s.key_type))
                  l.error_at(
                      element[bound].Mark(),
                      fmt::format("a pin's '{}' ({}) is out of range for key_type {}", bound, *value, type));
              }
              // The YAML nodes of the keys, for the position of each error.
              std::vector<YAML::Node> nodes;
              if (element["key"].IsDefined()) nodes.push_back(element["key"]);
              if (element["keys"].IsDefined() && element["keys"].IsSequence()) {
                for (const auto& node : element["keys"]) nodes.push_back(node);
              } else if (element["keys"].IsDefined()) {
                nodes.push_back(element["keys"]);
              }
              for (size_t i = 0; i < pin.keys.size() && i < nodes.size(); ++i) {
                auto value = sharding::parse_text(pin.keys[i], s.key_type);
                if (!value) {
                  l.error_at(nodes[i].Mark(),
                             fmt::format("pin key '{}' is not a valid {} (key_type)", pin.keys[i], type));
                  continue;
                }
                int line = nodes[i].Mark().line + 1;
                auto [it, inserted] = first_line.emplace(sharding::to_text(*value), line);
                if (!inserted)
                  l.error_at(nodes[i].Mark(), fmt::format("key '{}' is pinned twice (first at line {})",
                                                          pin.keys[i], it->second));
              }
              s.pins.push_back(std::move(pin));
            }
          }};
}

// tables: a map of table -> key column.
Key<ShardingConfig> tables_key() {
  return {
      "tables", kReloadable, false, {}, [](Loader& l, const Field& f, ShardingConfig& s) {
        if (!f.value.IsMap()) {
          l.error_at(f, "'tables' must be a map of table: key column (users: tenant_id)");
          return;
        }
        std::map<std::string, int> first_line;
        for (const auto& pair : f.value) {
          Field table_field{"tables", pair.first, pair.first};
          auto table_text = l.text(table_field);
          if (!table_text) continue;
          std::string problem;
          auto table = sql_table_name(*table_text, problem);
          if (!table) {
            l.error_at(pair.first.Mark(), fmt::format("table '{}' in 'tables': {}", *table_text, problem));
            continue;
          }
          auto column_text = l.text(Field{*table_text, pair.first, pair.second});
          if (!column_text) continue;
          auto column = sql_identifier(*column_text, problem);
          if (!column) {
            l.error_at(pair.second.Mark(),
                       fmt::format("key column '{}' of table '{}': {}", *column_text, *table_text, problem));
            continue;
          }
          int line = pair.first.Mark().line + 1;
          if (auto [it, inserted] = first_line.emplace(*table, line); !inserted) {
            l.error_at(
                pair.first.Mark(),
                fmt::format("table '{}' is listed twice in 'tables' (first at line {})", *table, it->second));
            continue;
          }
          s.tables.emplace_back(*table, *column);
        }
      }};
}

Key<ShardingConfig> reference_tables_key() {
  return {"reference_tables", kReloadable, false, {}, [](Loader& l, const Field& f, ShardingConfig& s) {
            std::vector<Field> items;
            if (f.value.IsSequence()) {
              for (const auto& item : f.value) items.push_back({f.name, item, item});
            } else {
              items.push_back(f);
            }
            std::map<std::string, int> first_line;
            for (const auto& item : items) {
              auto text = l.text(item);
              if (!text) continue;
              std::string problem;
              auto table = sql_table_name(*text, problem);
              if (!table) {
                l.error_at(item, fmt::format("table '{}' in 'reference_tables': {}", *text, problem));
                continue;
              }
              int line = item.mark().line + 1;
              if (auto [it, inserted] = first_line.emplace(*table, line); !inserted) {
                l.error_at(item,
                           fmt::format("table '{}' is listed twice in 'reference_tables' (first at line {})",
                                       *table, it->second));
                continue;
              }
              s.reference_tables.push_back(*table);
            }
          }};
}

// Checks that need only the section itself; those against the number of shards are in database_section.
const Section<ShardingConfig>& sharding_section() {
  using S = ShardingConfig;
  static const Section<S> section{
      "in sharding",
      {parsed_key("key_type", &S::key_type, kReloadable, key_type_names(),
                  [](std::string_view text) { return sharding::parse_key_type(text); }),
       choice_key<S, ShardStrategy>("strategy", &S::strategy,
                                    {{"hash", ShardStrategy::hash},
                                     {"consistent", ShardStrategy::consistent},
                                     {"map", ShardStrategy::map}},
                                    kReloadable),
       choice_key<S, ShardStrategy>(
           "fallback", &S::fallback,
           {{"hash", ShardStrategy::hash}, {"consistent", ShardStrategy::consistent}}, kReloadable),
       pins_key(), tables_key(), reference_tables_key(),
       choice_key<S, Unsharded>("unsharded", &S::unsharded,
                                {{"default_shard", Unsharded::default_shard}, {"reject", Unsharded::reject}},
                                kReloadable),
       int_key("default_shard", &S::default_shard, 0, 65535, kReloadable),
       choice_key<S, CrossShard>("cross_shard", &S::cross_shard,
                                 {{"scatter", CrossShard::scatter}, {"reject", CrossShard::reject}},
                                 kReloadable),
       choice_key<S, CrossShardWrites>(
           "cross_shard_writes", &S::cross_shard_writes,
           {{"two_phase", CrossShardWrites::two_phase}, {"reject", CrossShardWrites::reject}}, kReloadable)},
      [](Loader& l, const Field& f, S& s) {
        if (!f.value.IsMap()) return;
        if (!s.pins.empty() && s.strategy != ShardStrategy::map)
          l.error_at(f.value["pins"].Mark(), "'pins' needs strategy: map");
        for (const auto& table : s.reference_tables) {
          auto sharded = std::find_if(s.tables.begin(), s.tables.end(),
                                      [&](const auto& entry) { return entry.first == table; });
          if (sharded != s.tables.end())
            l.error_at(f.value["reference_tables"].Mark(),
                       fmt::format("table '{}' is in both 'tables' and 'reference_tables'", table));
        }
      }};
  return section;
}

// The sharding section, then what depends on the number of shards. With one shard the section is read and
// checked but not used, so shard numbers are not checked against a count that is still to grow.
Key<DatabaseConfig> database_sharding_key() {
  return {"sharding", kReloadable, false, {}, [](Loader& l, const Field& f, DatabaseConfig& db) {
            apply_section(l, f, sharding_section(), db.sharding);
            size_t shards = db.shards.size();
            if (shards <= 1 || !f.value.IsMap()) return;
            if (db.sharding.default_shard >= shards)
              l.error_at(f.value["default_shard"].Mark(),
                         fmt::format("default_shard {} does not exist: shards are numbered 0 to {}",
                                     db.sharding.default_shard, shards - 1));
            const auto& pins = f.value["pins"];
            if (!pins.IsDefined() || !pins.IsSequence()) return;
            for (size_t i = 0; i < db.sharding.pins.size() && i < pins.size(); ++i) {
              if (db.sharding.pins[i].shard >= shards)
                l.error_at(pins[i]["shard"].Mark(),
                           fmt::format("pin to shard {}, which does not exist: shards are numbered 0 to {}",
                                       db.sharding.pins[i].shard, shards - 1));
            }
          }};
}

// One key of an AuthLookup held in S (a database entry, or auth_sources).
template <class S>
Key<S> lookup_key(std::string_view name, AuthLookup S::*lookup, std::string AuthLookup::*member) {
  return {name, kReloadable, false, {}, [=](Loader& l, const Field& f, S& s) {
            auto text = l.text(f);
            if (!text) return;
            if (text->empty())
              l.error_at(f, fmt::format("'{}' must not be empty", f.name));
            else
              (s.*lookup).*member = *text;
          }};
}

// Two shards that are one database of one server would each be given the other's rows.
void check_distinct_shards(Loader& l, const Field& f, const DatabaseConfig& db) {
  std::map<std::string, size_t> seen;
  for (size_t i = 0; i < db.shards.size(); ++i) {
    const auto& ep = db.shards[i].primary;
    if (ep.host.empty()) continue;  // already reported
    auto key = util::host_port(ep.host, ep.port) + "/" + db.server_dbname(i);
    auto [it, fresh] = seen.emplace(key, i);
    if (!fresh)
      l.error_at(f.value["shards"][i].Mark(),
                 fmt::format("shards {} and {} are the same database ({}): give one of them its own 'dbname' "
                             "or server",
                             it->second, i, key));
  }
}

const Section<DatabaseConfig>& database_section() {
  static const Section<DatabaseConfig> section{
      "in a databases entry",
      {required(string_key("name", &DatabaseConfig::name, kReloadable, non_empty)),
       string_key("dbname", &DatabaseConfig::dbname, kReloadable, non_empty),
       required(list_key("shards", &DatabaseConfig::shards, shard_section, 1)),
       section_key("routing", &DatabaseConfig::routing, routing_section, kReloadable),
       database_sharding_key(),
       lookup_key("auth_user", &DatabaseConfig::auth, &AuthLookup::auth_user),
       lookup_key("auth_query", &DatabaseConfig::auth, &AuthLookup::auth_query),
       lookup_key("auth_dbname", &DatabaseConfig::auth, &AuthLookup::auth_dbname),
       {"pool",
        kReloadable,
        false,
        {},
        [](Loader& l, const Field& f, DatabaseConfig& db) {
          // Overrides start from the global pool section, which the table order has already loaded.
          PoolConfig merged = l.config.pool;
          size_t errors_before = l.errors.size();
          apply_section(l, f, pool_section(), merged);
          if (l.errors.size() == errors_before) db.pool = merged;
        }}},
      [](Loader& l, const Field& f, DatabaseConfig& db) {
        if (db.name == kFallbackDatabase) {
          // Each client's database name is the name on the server: a fixed dbname would send them all to one.
          if (f.value.IsMap() && f.value["dbname"].IsDefined())
            l.error_at(f.value["dbname"].Mark(),
                       "the fallback database \"*\" cannot have a dbname: it connects to the database each "
                       "client names");
          if (db.shards.size() > 1)
            l.error_at(f.value["shards"].Mark(), "the fallback database \"*\" must have one shard");
          else if (db.shards.size() == 1 && !db.shards[0].dbname.empty())
            l.error_at(f.value["shards"][0]["dbname"].Mark(),
                       "the fallback database \"*\" cannot have a dbname: it connects to the database each "
                       "client names");
        }
        if (db.dbname.empty()) db.dbname = db.name;
        check_distinct_shards(l, f, db);
      }};
  return section;
}

const Section<AuthSourcesConfig>& auth_sources_section() {
  static const Section<AuthSourcesConfig> section{
      "in auth_sources",
      {path_key("auth_file", &AuthSourcesConfig::auth_file, kReloadable),
       lookup_key("auth_user", &AuthSourcesConfig::lookup, &AuthLookup::auth_user),
       lookup_key("auth_query", &AuthSourcesConfig::lookup, &AuthLookup::auth_query),
       lookup_key("auth_dbname", &AuthSourcesConfig::lookup, &AuthLookup::auth_dbname),
       int_key("auth_cache_seconds", &AuthSourcesConfig::cache_seconds, 0, 86400, kReloadable),
       int_key("auth_negative_cache_seconds", &AuthSourcesConfig::negative_cache_seconds, 0, 86400,
               kReloadable)},
      [](Loader& l, const Field& f, AuthSourcesConfig& a) {
        if (a.auth_file.empty()) return;
        std::ifstream in(a.auth_file, std::ios::binary);
        std::stringstream content;
        content << in.rdbuf();
        std::vector<UserlistError> errors;
        parse_userlist(content.str(), errors);
        for (const auto& e : errors)
          l.error_at(f.value["auth_file"].Mark(),
                     fmt::format("auth_file '{}' line {}: {}", a.auth_file, e.line, e.message));
      }};
  return section;
}

// auth_user must be a configured user pgrouter can log in as; auth_dbname a configured database.
void check_auth_lookup(Loader& l, const YAML::Node& where, const Config& c, const AuthLookup& a) {
  if (!a.auth_user.empty()) {
    const auto* user = c.find_user(a.auth_user);
    if (!user)
      l.error_at(where.Mark(),
                 fmt::format("auth_user '{}' is not a user under 'users:' (its password comes from there)",
                             a.auth_user));
    else if (user->backend_password.empty())
      l.error_at(where.Mark(),
                 fmt::format("auth_user '{}' needs a password (or backend_password) for pgrouter to log in "
                             "to the servers with",
                             a.auth_user));
  }
  if (!a.auth_query.empty() && a.auth_user.empty())
    l.error_at(where.Mark(), "auth_query needs auth_user: the user the query runs as");
  if (!a.auth_dbname.empty()) {
    const auto* db = c.find_database(a.auth_dbname);
    if (!db || db->name == kFallbackDatabase)
      l.error_at(where.Mark(),
                 fmt::format("auth_dbname '{}' is not a database under 'databases:'", a.auth_dbname));
  }
}

void check_auth_sources(Loader& l, const Field& f, Config& c) {
  if (!f.value.IsMap()) return;
  if (const auto& node = f.value["auth_sources"]; node.IsDefined())
    check_auth_lookup(l, node, c, c.auth_sources.lookup);
  const auto& dbs = f.value["databases"];
  for (size_t i = 0; i < c.databases.size() && dbs.IsSequence() && i < dbs.size(); ++i) {
    const auto& db = c.databases[i];
    if (db.auth.auth_user.empty() && db.auth.auth_query.empty() && db.auth.auth_dbname.empty()) continue;
    check_auth_lookup(l, dbs[i], c, c.auth_lookup_for(db));
  }
}

const Section<AuthRule>& auth_section() {
  static const Section<AuthRule> section{
      "in an auth rule",
      {choice_key<AuthRule, AuthMethod>("method", &AuthRule::method,
                                        {{"scram-sha-256", AuthMethod::scram_sha_256},
                                         {"md5", AuthMethod::md5},
                                         {"trust", AuthMethod::trust},
                                         {"reject", AuthMethod::reject}},
                                        kReloadable),
       name_list_key("users", &AuthRule::users), name_list_key("databases", &AuthRule::databases),
       name_list_key("addresses", &AuthRule::addresses, network_text)},
      [](Loader&, const Field& f, AuthRule& rule) { rule.line = f.value.Mark().line + 1; }};
  return section;
}

const Section<UserConfig>& user_section() {
  static const Section<UserConfig> section{
      "in a users entry",
      {required(string_key("name", &UserConfig::name, kReloadable, non_empty)),
       grouped("password", string_key("password", &UserConfig::password, kReloadable)),
       grouped("password", secret_file_key("password_file", &UserConfig::password)),
       grouped("password", secret_env_key("password_env", &UserConfig::password)),
       string_key("scram_verifier", &UserConfig::scram_verifier, kReloadable, scram_verifier_text),
       string_key("md5_hash", &UserConfig::md5_hash, kReloadable, md5_hash_text),
       string_key("backend_user", &UserConfig::backend_user, kReloadable, non_empty),
       grouped("backend_password",
               string_key("backend_password", &UserConfig::backend_password, kReloadable)),
       grouped("backend_password", secret_file_key("backend_password_file", &UserConfig::backend_password)),
       grouped("backend_password", secret_env_key("backend_password_env", &UserConfig::backend_password)),
       choice_key<UserConfig, std::optional<PoolMode>>(
           "pool_mode", &UserConfig::pool_mode,
           {{"session", PoolMode::session}, {"transaction", PoolMode::transaction}}, kReloadable),
       choice_key<UserConfig, std::optional<ReadFrom>>(
           "read_from", &UserConfig::read_from,
           {{"replicas", ReadFrom::replicas}, {"primary", ReadFrom::primary}, {"any", ReadFrom::any}},
           kReloadable),
       choice_key<UserConfig, std::optional<CrossShard>>(
           "cross_shard", &UserConfig::cross_shard,
           {{"scatter", CrossShard::scatter}, {"reject", CrossShard::reject}}, kReloadable)},
      [](Loader& l, const Field& f, UserConfig& user) {
        if (user.backend_user.empty()) user.backend_user = user.name;
        if (user.backend_password.empty()) user.backend_password = user.password;
        if (!user.password.empty() || !user.scram_verifier.empty() || !user.md5_hash.empty()) return;
        // Without a secret the user can only get in through rules that never ask for a password.
        for (const auto& rule : l.config.auth) {
          bool asks_password = rule.method == AuthMethod::scram_sha_256 || rule.method == AuthMethod::md5;
          if (asks_password && list_matches(rule.users, user.name)) {
            l.error_at(
                f, fmt::format("user '{}' has no password, password_file, password_env, scram_verifier or "
                               "md5_hash, but the auth rule at line {} asks for a password",
                               user.name, rule.line));
            return;
          }
        }
      }};
  return section;
}

const Section<ListenConfig>& listen_section() {
  static const Section<ListenConfig> section{
      "in listen",
      {string_key("host", &ListenConfig::host, kNeedsRestart, non_empty),
       port_key("port", &ListenConfig::port, 1, kNeedsRestart),
       int_key("workers", &ListenConfig::workers, 0, 1024, kNeedsRestart),
       choice_key<ListenConfig, Scheduling>("scheduling", &ListenConfig::scheduling,
                                            {{"batch", Scheduling::batch}, {"normal", Scheduling::normal}},
                                            kNeedsRestart),
       choice_key<ListenConfig, SendBatching>(
           "send_batching", &ListenConfig::send_batching,
           {{"io_uring", SendBatching::io_uring}, {"off", SendBatching::off}}, kNeedsRestart),
       choice_key<ListenConfig, bool>("tcp_defer_accept", &ListenConfig::tcp_defer_accept,
                                      {{"true", true}, {"false", false}}, kNeedsRestart),
       int_key("max_client_conn", &ListenConfig::max_client_conn, 1, 1'000'000, kReloadable),
       size_key("max_message_size", &ListenConfig::max_message_size, kReloadable),
       duration_key("client_login_timeout", &ListenConfig::client_login_timeout, kReloadable),
       duration_key("shutdown_timeout", &ListenConfig::shutdown_timeout, kReloadable),
       string_key("takeover_socket", &ListenConfig::takeover_socket, kNeedsRestart, socket_path),
       timeout_key("takeover_client_wait", &ListenConfig::takeover_client_wait, kReloadable)},
      {}};
  return section;
}

const Section<TlsConfig>& tls_section() {
  static const Section<TlsConfig> section{
      "in tls",
      {path_key("cert_file", &TlsConfig::cert_file, kNeedsRestart),
       path_key("key_file", &TlsConfig::key_file, kNeedsRestart)},
      [](Loader& l, const Field& f, TlsConfig&) {
        if (f.value["cert_file"].IsDefined() != f.value["key_file"].IsDefined()) {
          l.error_at(f, "tls needs both cert_file and key_file, or neither");
        }
      }};
  return section;
}

// The API token as read by a secret key, trimmed; an empty one is an error (it would lock nothing).
Key<AdminConfig> api_token_key(Key<AdminConfig> read) {
  read.apply = [apply = read.apply](Loader& l, const Field& f, AdminConfig& a) {
    size_t errors = l.errors.size();
    apply(l, f, a);
    if (l.errors.size() != errors) return;
    auto start = a.api_token.find_first_not_of(" \t\r\n");
    auto end = a.api_token.find_last_not_of(" \t\r\n");
    a.api_token = start == std::string::npos ? "" : a.api_token.substr(start, end - start + 1);
    if (a.api_token.empty()) l.error_at(f, fmt::format("'{}': the API token is empty", f.name));
  };
  return read;
}

const Section<AdminConfig>& admin_section() {
  static const Section<AdminConfig> section{
      "in admin",
      {string_key("host", &AdminConfig::host, kNeedsRestart, non_empty),
       port_key("port", &AdminConfig::port, 0, kNeedsRestart),
       string_key("database", &AdminConfig::database, kReloadable, non_empty),
       name_list_key("admin_users", &AdminConfig::admin_users),
       name_list_key("stats_users", &AdminConfig::stats_users),
       grouped("api_token", api_token_key(secret_file_key("api_token_file", &AdminConfig::api_token))),
       grouped("api_token", api_token_key(secret_env_key("api_token_env", &AdminConfig::api_token))),
       choice_key<AdminConfig, ApiReadOpen>(
           "api_read_open", &AdminConfig::api_read_open,
           {{"localhost", ApiReadOpen::localhost}, {"token", ApiReadOpen::token}}, kReloadable)},
      {}};
  return section;
}

// The admin console's users log in with the secrets of their users entries: each must have one. A database
// named like the console is an error only when admin.database says so (else the database keeps its name).
void check_admin_users(Loader& l, const Field& f, Config& c) {
  if (!f.value.IsMap() || !f.value["admin"].IsDefined()) return;
  const auto& admin = f.value["admin"];
  if (!admin.IsMap()) return;
  for (auto [key, names] :
       {std::pair{"admin_users", &c.admin.admin_users}, std::pair{"stats_users", &c.admin.stats_users}})
    for (const auto& name : *names)
      if (!c.find_user(name))
        l.error_at(admin[key].Mark(),
                   fmt::format("admin.{}: '{}' is not a user under 'users:' (its password comes from there)",
                               key, name));
  if (admin["database"].IsDefined() && c.find_database(c.admin.database))
    l.error_at(admin["database"].Mark(),
               fmt::format("admin.database '{}' is also the name of a database under 'databases:'",
                           c.admin.database));
}

const Section<LogConfig>& log_section() {
  static const Section<LogConfig> section{
      "in log",
      {choice_key<LogConfig, std::string>(
           "level", &LogConfig::level,
           {{"debug", "debug"}, {"info", "info"}, {"warn", "warn"}, {"error", "error"}}, kReloadable),
       int_key("slow_query_ms", &LogConfig::slow_query_ms, 0, 86'400'000, kReloadable),
       choice_key<LogConfig, bool>("slow_query_parameters", &LogConfig::slow_query_parameters,
                                   {{"true", true}, {"false", false}}, kReloadable)},
      {}};
  return section;
}

const Section<MetricsConfig>& metrics_section() {
  static const Section<MetricsConfig> section{
      "in metrics", {int_key("max_pools", &MetricsConfig::max_pools, 1, 100'000, kReloadable)}, {}};
  return section;
}

// Sections load in this order: pool before databases (overrides merge into it), auth before users
// (whether a user may go without a secret depends on the rules).
const Section<Config>& config_section() {
  static const Section<Config> section{
      "at the top level",
      {required(Key<Config>{
           "version",
           kNeedsRestart,
           false,
           {},
           [](Loader& l, const Field& f, Config& c) {
             auto text = l.text(f);
             if (text && *text != "1") {
               l.error_at(
                   f, fmt::format("unsupported config version '{}': this pgrouter reads version 1", *text));
             }
             c.version = 1;
           }}),
       section_key("listen", &Config::listen, listen_section, kNeedsRestart),
       section_key("tls", &Config::tls, tls_section, kNeedsRestart),
       section_key("admin", &Config::admin, admin_section, kNeedsRestart),
       section_key("log", &Config::log, log_section, kReloadable),
       section_key("metrics", &Config::metrics, metrics_section, kReloadable),
       section_key("pool", &Config::pool, pool_section, kReloadable),
       section_key("server_tls", &Config::server_tls, server_tls_section, kReloadable),
       required(list_key("databases", &Config::databases, database_section, 1, &DatabaseConfig::name)),
       list_key("auth", &Config::auth, auth_section, 0),
       required(list_key("users", &Config::users, user_section, 1, &UserConfig::name)),
       section_key("auth_sources", &Config::auth_sources, auth_sources_section, kReloadable)},
      [](Loader& l, const Field& f, Config& c) {
        check_admin_users(l, f, c);
        check_auth_sources(l, f, c);
      }};
  return section;
}

LoadResult load(const std::string& yaml, const std::string& source, std::filesystem::path base_dir) {
  auto config = std::make_shared<Config>();
  config->source = source;
  Loader loader(source, std::move(base_dir), *config);
  try {
    YAML::Node root = YAML::Load(yaml);
    if (!root.IsDefined() || root.IsNull()) {
      loader.error_at(YAML::Mark::null_mark(), "the config is empty");
    } else {
      apply_section(loader, Field{"", root, root}, config_section(), *config);
    }
  } catch (const YAML::Exception& e) {
    loader.error_at(e.mark, e.msg);
  }
  LoadResult result;
  result.errors = std::move(loader.errors);
  std::stable_sort(result.errors.begin(), result.errors.end(), [](const auto& a, const auto& b) {
    return std::tie(a.line, a.column) < std::tie(b.line, b.column);
  });
  if (result.errors.empty()) result.config = std::move(config);
  return result;
}

}  // namespace

const DatabaseConfig* Config::find_database(std::string_view name) const {
  auto it = std::find_if(databases.begin(), databases.end(), [&](const auto& db) { return db.name == name; });
  return it == databases.end() ? nullptr : &*it;
}

AuthLookup Config::auth_lookup_for(const DatabaseConfig& db) const {
  AuthLookup a = auth_sources.lookup;
  if (!db.auth.auth_user.empty()) a.auth_user = db.auth.auth_user;
  if (!db.auth.auth_query.empty()) a.auth_query = db.auth.auth_query;
  if (!db.auth.auth_dbname.empty()) a.auth_dbname = db.auth.auth_dbname;
  if (!a.auth_user.empty() && a.auth_query.empty()) a.auth_query = kDefaultAuthQuery;
  return a;
}

const UserConfig* Config::find_user(std::string_view name) const {
  auto it = std::find_if(users.begin(), users.end(), [&](const auto& user) { return user.name == name; });
  return it == users.end() ? nullptr : &*it;
}

const AuthRule* Config::match_auth(std::string_view user, std::string_view database,
                                   std::string_view address) const {
  auto client = parse_network(address);
  for (const auto& rule : auth) {
    if (!list_matches(rule.users, user) || !list_matches(rule.databases, database)) continue;
    bool address_ok = rule.addresses.empty();
    for (const auto& text : rule.addresses) {
      if (text == "all") {
        address_ok = true;
      } else if (auto net = parse_network(text); net && client && client->prefix == (client->v6 ? 128 : 32)) {
        address_ok = address_ok || network_contains(*net, *client);
      }
    }
    if (address_ok) return &rule;
  }
  return nullptr;
}

std::string ConfigError::to_string() const {
  if (line == 0) return fmt::format("{}: {}", file, message);
  return fmt::format("{}:{}:{}: {}", file, line, column, message);
}

std::optional<Millis> parse_duration(std::string_view text) {
  auto parts = split_number_unit(text);
  if (!parts) return std::nullopt;
  static const std::map<std::string, int64_t> kUnits = {
      {"", 1000}, {"ms", 1}, {"s", 1000}, {"m", 60'000}, {"h", 3'600'000}};
  auto unit = kUnits.find(parts->second);
  if (unit == kUnits.end()) return std::nullopt;
  return Millis(parts->first * unit->second);
}

LoadResult load_config_string(const std::string& yaml, const std::string& source_name) {
  return load(yaml, source_name, {});
}

LoadResult load_config_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream content;
  if (!in || !(content << in.rdbuf())) {
    LoadResult result;
    result.errors.push_back({path, 0, 0, fmt::format("cannot read config file: {}", std::strerror(errno))});
    return result;
  }
  // Relative *_file paths are relative to the config file, so the config works from any directory.
  return load(content.str(), path, std::filesystem::path(path).parent_path());
}

}  // namespace pgrouter::control
