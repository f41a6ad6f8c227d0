// A sharded database as the relay sees it: which shard a statement needs, from its shard keys (found once per
// text by sql::shard_target and cached per worker), the values bound to its parameters, and the client's
// explicit key. One per (worker, database); rebuilt on reload, kept by a transaction that started with it.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "pgrouter/control/config.hpp"
#include "pgrouter/sharding/scatter_plan.hpp"
#include "pgrouter/sharding/strategy.hpp"
#include "pgrouter/sql/shard_key.hpp"

namespace pgrouter::sharding {

// What one statement needs of the shards.
struct Need {
  // scatter: a read whose rows are on several shards (`shards`, ascending); the caller runs it on each and
  // merges the answers (sharding/scatter_plan.hpp), or refuses it where it cannot (cross_shard: reject,
  // inside a transaction) with `message` and `hint`, which say why it needs several shards.
  // write_across: a write whose rows are on several shards (`shards`), or a write to a reference table
  // (every shard); the same statement on each finds only that shard's rows, and the caller commits it
  // on all of them or none (two-phase commit), or refuses it as for scatter.
  enum class Kind : uint8_t { any, one, refuse, scatter, write_across };
  Kind kind = Kind::any;
  int shard = 0;            // one
  std::string message;      // refuse: the error's message (SQLSTATE 0A000) ...
  std::string hint;         // ... and what to do instead
  std::vector<int> shards;  // scatter, write_across
  // write_across of an INSERT ... VALUES whose rows are on several shards: each row's shard, in the rows'
  // order; each shard gets an INSERT of its rows only (sql/insert_rows.hpp). Empty: every shard gets the
  // statement as it is.
  std::vector<int> row_shards;
  static Need any_shard() { return {}; }
  static Need on(int s) { return {Kind::one, s, {}, {}, {}, {}}; }
  static Need refused(std::string m, std::string h) {
    return {Kind::refuse, 0, std::move(m), std::move(h), {}, {}};
  }
  static Need scatter_over(std::vector<int> s, std::string m, std::string h) {
    return {Kind::scatter, 0, std::move(m), std::move(h), std::move(s), {}};
  }
  static Need write_over(std::vector<int> s, std::string m, std::string h) {
    return {Kind::write_across, 0, std::move(m), std::move(h), std::move(s), {}};
  }
  bool several() const { return kind == Kind::scatter || kind == Kind::write_across; }
};

// The parameter values of a Bind message, by 1-based number (nullopt: NULL), with their format codes. Views
// of the message checked once, read in place: a Bind is looked at for every keyed statement, and a statement
// has few keys, so walking to a value is cheaper than a vector built per Bind.
class BoundParams {
 public:
  static std::optional<BoundParams> from_bind(std::string_view body);  // nullopt: malformed
  size_t size() const { return count_; }
  // nullopt for NULL or a number out of range; binary: the value is in binary format.
  std::optional<std::string_view> value(int n, bool& binary) const;

 private:
  std::string_view formats_;  // 2 bytes per code; none: all text; one: all; else per parameter
  std::string_view values_;   // each value's length (negative: NULL) and bytes, count_ of them
  size_t count_ = 0;
};

// A SQL EXECUTE's arguments as a Bind of its prepared statement would carry them, so that need() routes
// `EXECUTE q(7)` where a Bind of '7' to q goes.
struct ExecuteBind {
  std::string body;      // a Bind message's body: the arguments the statement's keys use, NULL for the rest
  int unread = 0;        // the first argument a key uses that pgrouter cannot read (1-based), or 0
  bool missing = false;  // a key's parameter has no argument: PostgreSQL refuses the EXECUTE wherever it runs
};

class ShardMap {
 public:
  explicit ShardMap(const control::DatabaseConfig& db);
  size_t shards() const { return strategy_->shards(); }
  int default_shard() const { return int(config_.default_shard); }
  const control::ShardingConfig& config() const { return config_; }
  const Strategy& strategy() const { return *strategy_; }

  // The statement's analysis, cached by its exact text (bounded: the cache is emptied when full).
  const sql::ShardTarget& target(std::string_view sql);
  // A cross-shard read's plan (sharding::plan_scatter), cached by its exact text like target(). Shared: the
  // cache may be emptied while a scatter still uses it.
  std::shared_ptr<const ScatterPlan> scatter_plan(std::string_view sql);
  // The shard of an explicit key (SET pgrouter.shard_key, the startup option, a comment); nullopt when the
  // text is no value of the key type.
  std::optional<int> shard_of_text(std::string_view key) const;
  // What a statement needs: `params` for a Bind (nullptr: a Query, or a Parse, whose parameters are not
  // bound yet), `explicit_shard` the client's session key's shard, if any.
  Need need(const sql::ShardTarget& t, const BoundParams* params, std::optional<int> explicit_shard) const;
  // The Bind an EXECUTE of the statement `t` analyses makes of `args`: a constant in text format as the
  // parameter receives it (an integer or uuid given to a text key written as PostgreSQL's output function
  // writes it), a parameter of the EXECUTE's own text as `outer` (its Bind) binds it, in its format.
  ExecuteBind execute_bind(const sql::ShardTarget& t, const std::vector<sql::ExecuteArgument>& args,
                           const BoundParams* outer) const;

 private:
  std::optional<int> shard_of(const sql::KeyRef& k, const BoundParams* params, bool& unknown) const;
  // The shards a statement's keys name so far: `unknown` while a parameter is not bound yet, `every` when an
  // array (= ANY) could not be read, so any key is possible.
  // The shards keys name: one (the usual case) without an allocation, several in `more`.
  struct Shards {
    int single = -1;
    std::set<int> more;  // every shard named, once there are two or more
    bool unknown = false, every = false;
    void insert(int s) {
      if (single < 0 || (single == s && more.empty())) {
        single = s;
        return;
      }
      if (more.empty()) more.insert(single);
      more.insert(s);
    }
    size_t count() const { return single < 0 ? 0 : more.empty() ? 1 : more.size(); }
  };
  // Adds one key's shard, or an array key's elements' shards.
  void add_shards(const sql::KeyRef& k, const BoundParams* params, Shards& out) const;
  Need unsharded_need(const sql::ShardTarget& t) const;
  // A read over several shards: scatter, unless a table it names lives on the default shard only.
  Need across(const sql::ShardTarget& t, std::vector<int> shards, std::string why, std::string hint) const;
  // A write of several shards (or every one): the same statement on each, committed atomically.
  Need write_across(const sql::ShardTarget& t, std::vector<int> shards, std::string why) const;
  // An INSERT whose rows are on several shards: each row's shard (write_across with row_shards), or a
  // refusal when its rows cannot be told apart.
  Need split_insert(const sql::ShardTarget& t, const BoundParams* params, std::string why) const;
  std::vector<int> every_shard() const;

  control::ShardingConfig config_;
  std::shared_ptr<const Strategy> strategy_;
  sql::ShardingSchema schema_;
  struct TextHash {  // finds a text without building a std::string per lookup
    using is_transparent = void;
    size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
  };
  std::unordered_map<std::string, sql::ShardTarget, TextHash, std::equal_to<>> cache_;
  const std::pair<const std::string, sql::ShardTarget>* last_ =
      nullptr;  // the entry found last (nodes stay put)
  std::unordered_map<std::string, std::shared_ptr<const ScatterPlan>, TextHash, std::equal_to<>> plans_;
};

}  // namespace pgrouter::sharding
