// pgrouter shard-plan and shard-of: placement of keys under one or two configs, computed by the same
// strategies the proxy routes with, for planning a resharding and for checking placement against PostgreSQL.
#include "pgrouter/control/shard_plan.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <fstream>
#include <map>
#include <memory>
#include <optional>
#include <ostream>

#include "pgrouter/control/config.hpp"
#include "pgrouter/sharding/strategy.hpp"

namespace pgrouter::control {
namespace {

// Options of the form `--name VALUE` (or --name=VALUE), and the other arguments in order.
struct Args {
  std::map<std::string, std::string> options;
  std::vector<std::string> positional;
};

std::optional<Args> parse_args(const std::vector<std::string>& args, const std::vector<std::string>& known,
                               std::string_view command, std::ostream& err) {
  Args out;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a == "--") {
      out.positional.insert(out.positional.end(), args.begin() + long(i) + 1, args.end());
      break;
    }
    if (!a.starts_with("--")) {
      out.positional.push_back(a);
      continue;
    }
    std::string name = a.substr(2), value;
    bool inline_value = false;
    if (auto eq = name.find('='); eq != std::string::npos) {
      value = name.substr(eq + 1);
      name.resize(eq);
      inline_value = true;
    }
    if (std::find(known.begin(), known.end(), name) == known.end()) {
      err << "pgrouter " << command << ": unknown option '--" << name << "'\nTry 'pgrouter --help'.\n";
      return std::nullopt;
    }
    if (!inline_value) {
      if (i + 1 >= args.size()) {
        err << "pgrouter " << command << ": --" << name << " needs a value\nTry 'pgrouter --help'.\n";
        return std::nullopt;
      }
      value = args[++i];
    }
    out.options[name] = value;
  }
  return out;
}

std::shared_ptr<const Config> load_or_report(const std::string& path, std::ostream& err) {
  auto loaded = load_config_file(path);
  for (const auto& e : loaded.errors) err << e.to_string() << "\n";
  return loaded.config;
}

// A database's placement: with one shard, sharding is off and every key is on shard 0.
struct Placement {
  std::shared_ptr<const sharding::Strategy> strategy;
  size_t shard_of(const sharding::KeyValue& key) const { return strategy ? strategy->shard_of(key) : 0; }
};

Placement placement_of(const DatabaseConfig& db) {
  if (db.shards.size() <= 1) return {};
  return {sharding::make_strategy(db.sharding, db.shards.size())};
}

bool integer_type(sharding::KeyType t) {
  return t == sharding::KeyType::int2 || t == sharding::KeyType::int4 || t == sharding::KeyType::int8;
}

struct Key {
  std::string text;  // as written
  sharding::KeyValue value;
};

// The keys of FILE (one a line; blank lines skipped), or 1..100000 for integer key types without a file.
std::optional<std::vector<Key>> plan_keys(const std::optional<std::string>& file, sharding::KeyType type,
                                          const std::string& database, std::ostream& err) {
  std::vector<Key> keys;
  if (!file) {
    if (!integer_type(type)) {
      err << fmt::format(
          "pgrouter shard-plan: database {}: key_type {} has no default key set: give the keys with --keys "
          "FILE (one a line)\n",
          database, sharding::to_string(type));
      return std::nullopt;
    }
    for (int64_t k = 1; k <= 100000; ++k) {
      auto value = sharding::parse_text(std::to_string(k), type);
      if (!value) break;  // smallint ends at 32767
      keys.push_back({std::to_string(k), *value});
    }
    return keys;
  }
  std::ifstream in(*file, std::ios::binary);
  if (!in) {
    err << fmt::format("pgrouter shard-plan: cannot read '{}'\n", *file);
    return std::nullopt;
  }
  std::string line;
  for (int number = 1; std::getline(in, line); ++number) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty()) continue;
    auto value = sharding::parse_text(line, type);
    if (!value) {
      err << fmt::format("{}:{}: '{}' is not a valid {} (the database's key_type)\n", *file, number, line,
                         sharding::to_string(type));
      return std::nullopt;
    }
    keys.push_back({line, *value});
  }
  return keys;
}

}  // namespace

int shard_plan_main(const std::vector<std::string>& raw, std::ostream& out, std::ostream& err) {
  auto args = parse_args(raw, {"from", "to", "database", "keys"}, "shard-plan", err);
  if (!args) return 2;
  if (!args->options.contains("from") || !args->options.contains("to") || !args->positional.empty()) {
    err << "usage: pgrouter shard-plan --from A.yaml --to B.yaml [--database NAME] [--keys FILE]\n";
    return 2;
  }
  auto from = load_or_report(args->options["from"], err);
  auto to = load_or_report(args->options["to"], err);
  if (!from || !to) return 1;
  std::optional<std::string> only, keys_file;
  if (args->options.contains("database")) only = args->options["database"];
  if (args->options.contains("keys")) keys_file = args->options["keys"];

  // Databases in both configs that are sharded (more than one shard) in at least one of them.
  std::vector<std::pair<const DatabaseConfig*, const DatabaseConfig*>> planned;
  for (const auto& db : from->databases) {
    if (only && db.name != *only) continue;
    const DatabaseConfig* other = to->find_database(db.name);
    if (other == nullptr) {
      if (only) {
        err << fmt::format("pgrouter shard-plan: database {} is not in {}\n", db.name, to->source);
        return 1;
      }
      continue;
    }
    if (db.shards.size() <= 1 && other->shards.size() <= 1) {
      if (only) {
        err << fmt::format("pgrouter shard-plan: database {} has one shard in both configs\n", db.name);
        return 1;
      }
      continue;
    }
    planned.emplace_back(&db, other);
  }
  if (only && planned.empty()) {
    err << fmt::format("pgrouter shard-plan: database {} is not in {}\n", *only, from->source);
    return 1;
  }
  if (planned.empty()) {
    err << "pgrouter shard-plan: no database is in both configs with more than one shard in either\n";
    return 1;
  }

  for (auto [a, b] : planned) {
    // A one-shard side has no key type of its own that matters: the other side's is used for both.
    sharding::KeyType type = a->shards.size() > 1 ? a->sharding.key_type : b->sharding.key_type;
    if (a->shards.size() > 1 && b->shards.size() > 1 && a->sharding.key_type != b->sharding.key_type) {
      err << fmt::format(
          "pgrouter shard-plan: database {}: key_type changes from {} to {}: every row would have to be "
          "rewritten, not moved\n",
          a->name, sharding::to_string(a->sharding.key_type), sharding::to_string(b->sharding.key_type));
      return 1;
    }
    auto keys = plan_keys(keys_file, type, a->name, err);
    if (!keys) return 1;
    Placement before = placement_of(*a), after = placement_of(*b);
    size_t moved = 0;
    for (const auto& key : *keys) {
      size_t s1 = before.shard_of(key.value), s2 = after.shard_of(key.value);
      if (s1 == s2) continue;
      ++moved;
      out << key.text << '\t' << s1 << '\t' << s2 << '\n';
    }
    double percent = keys->empty() ? 0.0 : 100.0 * double(moved) / double(keys->size());
    out << fmt::format("database {}: {} of {} keys move ({:.2f}%)\n", a->name, moved, keys->size(), percent);
  }
  return 0;
}

int shard_of_main(const std::vector<std::string>& raw, std::ostream& out, std::ostream& err) {
  auto args = parse_args(raw, {"config", "database"}, "shard-of", err);
  if (!args) return 2;
  if (!args->options.contains("config") || !args->options.contains("database")) {
    err << "usage: pgrouter shard-of --config A.yaml --database NAME KEY...\n";
    return 2;
  }
  auto config = load_or_report(args->options["config"], err);
  if (!config) return 1;
  const DatabaseConfig* db = config->find_database(args->options["database"]);
  if (db == nullptr) {
    err << fmt::format("pgrouter shard-of: database {} is not in {}\n", args->options["database"],
                       config->source);
    return 1;
  }
  Placement placement = placement_of(*db);
  // Every key is checked before any is printed, so the output is all or nothing.
  std::vector<size_t> shards;
  for (const auto& text : args->positional) {
    auto value = sharding::parse_text(text, db->sharding.key_type);
    if (!value) {
      err << fmt::format("pgrouter shard-of: '{}' is not a valid {} (the key_type of database {})\n", text,
                         sharding::to_string(db->sharding.key_type), db->name);
      return 1;
    }
    shards.push_back(placement.shard_of(*value));
  }
  for (size_t i = 0; i < shards.size(); ++i) out << args->positional[i] << '\t' << shards[i] << '\n';
  return 0;
}

}  // namespace pgrouter::control
