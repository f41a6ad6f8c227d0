// pgrouter shard-plan and shard-of over configs written to a scratch directory.
#include <doctest/doctest.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "pgrouter/control/shard_plan.hpp"

using namespace pgrouter;
namespace fs = std::filesystem;

namespace {

// A database `app` with `shards` shards whose sharding section is `body` (lines indented by 6 spaces); the
// body starts at line 6 + shards.
std::string with_sharding(const std::string& body, int shards = 3) {
  std::string yaml = "version: 1\ndatabases:\n  - name: app\n    shards:\n";
  for (int i = 0; i < shards; ++i) yaml += "      - primary: {host: db" + std::to_string(i) + "}\n";
  yaml += "    sharding:\n" + body;
  yaml += "users:\n  - name: app\n    password: secret\n";
  return yaml;
}

struct TempDir {
  fs::path path = fs::temp_directory_path() / ("pgrouter-test-shard-plan-" + std::to_string(::getpid()));
  TempDir() { fs::create_directories(path); }
  ~TempDir() { fs::remove_all(path); }
  std::string write(const std::string& name, const std::string& content) const {
    std::ofstream(path / name, std::ios::binary) << content;
    return (path / name).string();
  }
};

struct Run {
  int status;
  std::string out, err;
};

Run run(int (*command)(const std::vector<std::string>&, std::ostream&, std::ostream&),
        std::vector<std::string> args) {
  std::ostringstream out, err;
  int status = command(args, out, err);
  return {status, out.str(), err.str()};
}

std::vector<std::string> lines(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) out.push_back(line);
  return out;
}

}  // namespace

TEST_CASE("shard-plan: the keys a change of shard count moves, and the summary") {
  TempDir dir;
  auto two = dir.write("two.yaml", with_sharding("      strategy: consistent\n", 2));
  auto three = dir.write("three.yaml", with_sharding("      strategy: consistent\n", 3));
  auto r = run(control::shard_plan_main, {"--from", two, "--to", three});
  REQUIRE_MESSAGE(r.status == 0, r.err);
  auto out = lines(r.out);
  REQUIRE(!out.empty());
  // Consistent hashing: every moved key goes to the new shard 2, about a third of 1..100000.
  size_t moved = out.size() - 1;
  CHECK(moved > 100000 / 3 * 8 / 10);
  CHECK(moved < 100000 / 3 * 12 / 10);
  for (size_t i = 0; i + 1 < out.size(); ++i) {
    auto tab = out[i].find('\t');
    REQUIRE(tab != std::string::npos);
    CHECK(out[i].substr(tab + 1, 1) != "2");
    CHECK(out[i].ends_with("\t2"));
  }
  char summary[100];
  std::snprintf(summary, sizeof summary, "database app: %zu of 100000 keys move (%.2f%%)", moved,
                100.0 * double(moved) / 100000.0);
  CHECK(out.back() == summary);

  // Back from three to two: the same keys move, the other way.
  auto back = run(control::shard_plan_main, {"--from", three, "--to", two, "--database", "app"});
  REQUIRE(back.status == 0);
  CHECK(lines(back.out).size() == out.size());
  CHECK(lines(back.out).front().ends_with("\t2\t" + out.front().substr(out.front().find('\t') + 1, 1)));

  // Same config: nothing moves.
  auto same = run(control::shard_plan_main, {"--from", two, "--to", two});
  CHECK(same.out == "database app: 0 of 100000 keys move (0.00%)\n");
}

TEST_CASE("shard-plan: hash moves most keys; a one-shard config has them all on shard 0") {
  TempDir dir;
  auto one = dir.write("one.yaml", with_sharding("      strategy: hash\n", 1));
  auto two = dir.write("two.yaml", with_sharding("      strategy: hash\n", 2));
  auto keys = dir.write("keys.txt", "1\n2\n\n3\r\n4\n5\n6\n7\n8\n");
  auto r = run(control::shard_plan_main, {"--from", one, "--to", two, "--keys", keys});
  REQUIRE_MESSAGE(r.status == 0, r.err);
  auto out = lines(r.out);
  // The keys that move are those on shard 1 now; each line says so.
  size_t on_one = 0;
  auto of = run(control::shard_of_main,
                {"--config", two, "--database", "app", "1", "2", "3", "4", "5", "6", "7", "8"});
  REQUIRE(of.status == 0);
  std::vector<std::string> expected;
  for (const auto& line : lines(of.out)) {
    if (line.ends_with("\t1")) {
      ++on_one;
      expected.push_back(line.substr(0, line.find('\t')) + "\t0\t1");
    }
  }
  expected.push_back("database app: " + std::to_string(on_one) + " of 8 keys move (" +
                     (on_one == 0
                          ? std::string("0.00")
                          : std::to_string(on_one * 100 / 8) + "." + (on_one * 100 % 8 == 0 ? "00" : "50")) +
                     "%)");
  CHECK(out == expected);
  CHECK(on_one > 0);
}

TEST_CASE("shard-of prints each key's shard, as PostgreSQL's partition remainder for strategy: hash") {
  TempDir dir;
  // Remainders from satisfies_hash_partition on PostgreSQL 15 (modulus 8192 ~ 8192 shards would be silly; the
  // unit vectors in test_sharding.cpp cover that): here modulus 3 against the hash strategy itself.
  auto config = dir.write("c.yaml", with_sharding("      key_type: uuid\n", 3));
  auto r = run(control::shard_of_main,
               {"--config", config, "--database", "app", "6ba7b810-9dad-11d1-80b4-00c04fd430c8",
                "{6BA7B8109DAD11D180B400C04FD430C8}"});
  REQUIRE_MESSAGE(r.status == 0, r.err);
  auto out = lines(r.out);
  REQUIRE(out.size() == 2);
  CHECK(out[0].starts_with("6ba7b810-9dad-11d1-80b4-00c04fd430c8\t"));
  // The same value written two ways has one shard.
  CHECK(out[0].substr(out[0].find('\t')) == out[1].substr(out[1].find('\t')));

  auto bad = run(control::shard_of_main, {"--config", config, "--database", "app", "6ba7b810", "x"});
  CHECK(bad.status == 1);
  CHECK(bad.out.empty());
  CHECK(bad.err.find("'6ba7b810' is not a valid uuid") != std::string::npos);
  auto missing = run(control::shard_of_main, {"--config", config, "--database", "nope", "1"});
  CHECK(missing.status == 1);
  CHECK(missing.err.find("database nope is not in") != std::string::npos);
  CHECK(run(control::shard_of_main, {"--config", config}).status == 2);
  CHECK(run(control::shard_of_main, {"--config", config, "--bogus", "x"}).status == 2);
}

TEST_CASE("shard-plan: errors") {
  TempDir dir;
  auto text2 = dir.write("t2.yaml", with_sharding("      key_type: text\n", 2));
  auto text3 = dir.write("t3.yaml", with_sharding("      key_type: text\n", 3));
  auto int3 = dir.write("i3.yaml", with_sharding("      key_type: int4\n", 3));
  auto r = run(control::shard_plan_main, {"--from", text2, "--to", text3});
  CHECK(r.status == 1);
  CHECK(r.err.find("key_type text has no default key set: give the keys with --keys") != std::string::npos);
  r = run(control::shard_plan_main, {"--from", text2, "--to", int3});
  CHECK(r.status == 1);
  CHECK(r.err.find("key_type changes from text to integer") != std::string::npos);
  auto keys = dir.write("keys.txt", "acme\nglobex\n");
  r = run(control::shard_plan_main, {"--from", text2, "--to", text3, "--keys", keys});
  CHECK(r.status == 0);
  CHECK(lines(r.out).back().starts_with("database app: "));
  CHECK(lines(r.out).back().ends_with(" of 2 keys move (" +
                                      std::string(lines(r.out).size() == 1   ? "0.00"
                                                  : lines(r.out).size() == 2 ? "50.00"
                                                                             : "100.00") +
                                      "%)"));
  auto bad_keys = dir.write("bad.txt", "1\nx\n");
  r = run(control::shard_plan_main, {"--from", int3, "--to", int3, "--keys", bad_keys});
  CHECK(r.status == 1);
  CHECK(r.err.find("bad.txt:2: 'x' is not a valid integer") != std::string::npos);
  auto broken = dir.write("broken.yaml", with_sharding("      default_shard: 9\n", 3));
  r = run(control::shard_plan_main, {"--from", broken, "--to", int3});
  CHECK(r.status == 1);
  CHECK(r.err.find("broken.yaml:9:22: default_shard 9 does not exist") != std::string::npos);
  r = run(control::shard_plan_main, {"--from", int3, "--to", int3, "--database", "other"});
  CHECK(r.status == 1);
  CHECK(run(control::shard_plan_main, {"--from", int3}).status == 2);
}
