// Two-phase commit of a write across shards: the texts pgrouter sends and how it reads the answers. Pure
// but for new_gid() (a process-wide counter) and crash_point() (a test hook).
//
// The protocol. Each participant shard runs the statement in a transaction and PREPAREs it under one global
// transaction id (gid). The outcome is then decided by a row in a decision table on the database's
// default shard, inserted with ON CONFLICT DO NOTHING: the first writer of a gid's row wins. The
// coordinator inserts 'commit'; a recovery that finds a gid prepared for longer than a grace period and
// no row for it inserts 'abort'. Whoever loses reads the winner's outcome, so the coordinator and any
// number of recovering pgrouter instances agree, and every participant is committed or rolled back as that
// row says. No row and no coordinator means no commit was ever promised: recovery aborts (presumed abort).
//
// Only parts that wrote take part in it: each part is first asked whether it was given a transaction id
// (kXidProbe); the parts that were not commit plainly, and a lone part that was commits plainly too.
#pragma once
#include <chrono>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace pgrouter::sharding::two_phase {

enum class Outcome { commit, abort };

constexpr std::string_view kGidPrefix = "pgr_";
// A gid prepared for longer than this with no decision is decided by recovery (an abort, unless the
// coordinator's commit is already recorded). Long beyond the milliseconds between a PREPARE and its decision.
constexpr std::chrono::seconds kGrace{5};
constexpr std::chrono::seconds kRecoveryInterval{5};
// Decision rows older than this whose gid no shard holds prepared are deleted.
constexpr std::chrono::minutes kKeepDecisions{10};

// A new gid: the prefix, this process's random instance id and a counter.
std::string new_gid();
bool is_ours(std::string_view gid);

// Whether a shard's part wrote anything: one row, NULL when no transaction id was assigned (nothing
// inserted, updated, deleted or locked, no DDL). PostgreSQL 13 and later.
constexpr std::string_view kXidProbe = "SELECT pg_catalog.pg_current_xact_id_if_assigned()";
// Whether a server of this server_version (as its ParameterStatus reports it) answers kXidProbe.
bool answers_xid_probe(std::string_view server_version);

std::string prepare_sql(std::string_view gid);
std::string finish_sql(std::string_view gid, Outcome o);  // COMMIT PREPARED / ROLLBACK PREPARED
// The decision, durable whatever synchronous_commit says: one simple Query whose INSERT's tag says whether
// this writer won ("INSERT 0 1") or another did first ("INSERT 0 0").
std::string decide_sql(std::string_view gid, Outcome o);
std::string outcome_sql(std::string_view gid);  // one row: 'commit' or 'abort' (none: undecided)
std::string create_table_sql();
// Every gid of ours prepared in the current database: (gid, owner, whether it is past the grace period).
std::string in_doubt_sql();
// Deletes old decisions, keeping those of the gids still prepared somewhere.
std::string cleanup_sql(const std::vector<std::string>& still_prepared);

// decide_sql's answer: whether this writer's row was inserted (nullopt: no INSERT tag).
std::optional<bool> decision_won(const std::vector<std::string>& tags);
std::optional<Outcome> parse_outcome(std::string_view text);

// The CommandComplete tag one PostgreSQL would give for the statement whose per-shard tags these are:
// row counts summed ("UPDATE 3" and "UPDATE 2": "UPDATE 5"; "INSERT 0 n" likewise), other tags as the
// first shard gave them. nullopt when the shards' tags disagree on the command.
std::optional<std::string> combined_tag(const std::vector<std::string>& tags);

// Test hook: when the environment variable PGROUTER_TEST_CRASH_AT names this point, the process kills
// itself with SIGKILL there (the two-phase commit's crash tests stop pgrouter at each step this way).
void crash_point(std::string_view point);
bool crash_points_armed();  // PGROUTER_TEST_CRASH_AT is set

}  // namespace pgrouter::sharding::two_phase
