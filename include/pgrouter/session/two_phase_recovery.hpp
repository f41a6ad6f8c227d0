// Recovery of cross-shard writes left prepared (sharding/two_phase.hpp): a pgrouter that crashed, or lost a
// shard, between PREPARE TRANSACTION and the last COMMIT PREPARED. Any pgrouter instance may run it, at any
// time: each prepared part is finished as the decision table says, and a part with no decision after the
// grace period is decided abort first (first writer wins, so a coordinator still running then aborts too).
#pragma once
#include "pgrouter/asio.hpp"

namespace pgrouter {
class Worker;
}

namespace pgrouter::session {

// Settles the prepared parts of cross-shard writes in every sharded database of the worker's config
// (cross_shard_writes: two_phase), over the worker's pools: the user a part was prepared as finishes it.
awaitable<void> recover_in_doubt(Worker& w);

}  // namespace pgrouter::session
