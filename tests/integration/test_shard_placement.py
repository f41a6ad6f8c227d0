"""strategy: hash places keys where PostgreSQL's PARTITION BY HASH would: `pgrouter shard-of` over random keys
of every key type, checked with satisfies_hash_partition() on the test cluster's primary for moduli 2, 3 and 5."""
import random
import subprocess
import uuid

import pytest

import pgr

SEED = 20261206
MODULI = (2, 3, 5)
# key_type in the config -> the column type of the partitioned parent table.
TYPES = {"smallint": "int2", "integer": "int4", "bigint": "int8", "text": "text", "uuid": "uuid"}
BOUNDS = {"smallint": 2**15, "integer": 2**31, "bigint": 2**63}

# Characters for random texts: ASCII, Latin-1 letters (2 bytes in UTF-8), CJK (3 bytes) and emoji (4 bytes).
ALPHABET = "abcXYZ 019_-'\"\\%$" + "éßüÅ" + "日本語中文" + "😀🎉"


def integer_keys(rng, key_type):
    bound = BOUNDS[key_type]
    keys = [0, 1, -1, 42, -42, bound - 1, -bound, bound - 2, -bound + 1]
    keys += [rng.randrange(-bound, bound) for _ in range(150)]
    keys += [rng.randrange(-1000, 1000) for _ in range(50)]
    # Written as clients may write them: PostgreSQL's input function takes spaces and a '+'.
    texts = [str(k) for k in keys]
    texts += [f" +{abs(k)} " for k in keys[:5]] + ["-0", "007"]
    return texts


def text_keys(rng):
    keys = ["", "a", "A", "tenant", "Ünïcödé", "日本語", "😀"]
    for _ in range(200):
        keys.append("".join(rng.choice(ALPHABET) for _ in range(rng.randrange(0, 40))))
    return keys


def uuid_keys(rng):
    keys = [str(uuid.UUID(int=0)), str(uuid.UUID(int=2**128 - 1))]
    for _ in range(200):
        u = uuid.UUID(int=rng.getrandbits(128))
        # The forms uuid_in accepts: canonical, upper case, braces, no hyphens.
        form = rng.randrange(4)
        keys.append([str(u), str(u).upper(), "{" + str(u) + "}", u.hex][form])
    return keys


def keys_for(key_type):
    rng = random.Random(f"{SEED}-{key_type}")
    if key_type in BOUNDS:
        return integer_keys(rng, key_type)
    return text_keys(rng) if key_type == "text" else uuid_keys(rng)


def shard_of(tmp_path, cluster, key_type, modulus, keys):
    config = pgr.deep_merge(pgr.default_config(cluster, 5432, 0), {
        "databases": [{
            "name": "app",
            # (shard-of connects to none of them; each its own database name, as two shards that are one
            # database are refused)
            "shards": [{"primary": cluster.endpoint("primary"), "dbname": f"app_{i}"} for i in range(modulus)],
            "sharding": {"key_type": key_type, "strategy": "hash"},
        }],
    })
    path = tmp_path / f"{key_type}-{modulus}.yaml"
    path.write_text(pgr.to_yaml(config))
    done = subprocess.run([str(pgr.pgrouter_bin()), "shard-of", "--config", str(path), "--database", "app", "--",
                           *keys], capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    lines = done.stdout.decode().split("\n")
    assert lines[-1] == ""
    lines = lines[:-1]
    assert len(lines) == len(keys)
    shards = []
    for key, line in zip(keys, lines):
        printed, shard = line.rsplit("\t", 1)
        assert printed == key
        shards.append(int(shard))
    return shards


@pytest.fixture(scope="module")
def parents(cluster):
    """One PARTITION BY HASH parent per key type in the primary's `app` database (satisfies_hash_partition takes
    the key's type and hash function from the parent)."""
    with cluster.connect() as conn:
        for key_type, column in TYPES.items():
            conn.execute(f"drop table if exists pgr_placement_{column}")
            conn.execute(f"create table pgr_placement_{column} (k {column}) partition by hash (k)")
        yield conn
        for column in TYPES.values():
            conn.execute(f"drop table if exists pgr_placement_{column}")


@pytest.mark.parametrize("key_type", list(TYPES))
def test_hash_shards_are_postgresql_hash_partitions(cluster, parents, tmp_path, key_type):
    print(f"keys from seed {SEED} (random.Random('{SEED}-{key_type}'))")
    column = TYPES[key_type]
    keys = keys_for(key_type)
    assert len(set(keys)) > 100
    for modulus in MODULI:
        shards = shard_of(tmp_path, cluster, key_type, modulus, keys)
        assert all(0 <= s < modulus for s in shards)
        assert len(set(shards)) == modulus  # a few hundred keys reach every shard
        # The shard given, and (as a control that the check can fail) the next remainder, which must not hold.
        rows = parents.execute(
            f"select k, r, satisfies_hash_partition('pgr_placement_{column}'::regclass, %s, r, k::{column}),"
            f"       satisfies_hash_partition('pgr_placement_{column}'::regclass, %s, (r + 1) %% %s, k::{column})"
            f"  from unnest(%s::text[], %s::int[]) as u(k, r)",
            (modulus, modulus, modulus, keys, shards)).fetchall()
        assert len(rows) == len(keys)
        wrong = [(k, r) for k, r, ok, _ in rows if not ok]
        assert not wrong, f"modulus {modulus}: pgrouter's shard is not PostgreSQL's partition for {wrong[:10]}"
        assert not any(other for *_, other in rows)
