// agreement.h: what every rank says before a collective's data moves: the 64-byte
// descriptor (sequence number, collective, dtype, counts, root, reduce op), its exchange and
// comparison, and the small all_reduces that travel inside that exchange.
#ifndef DDL_COMM_AGREEMENT_H
#define DDL_COMM_AGREEMENT_H

#include "ddl/comm.h"

#include <cstddef>
#include <cstdint>
#include <set>
#include <string>
#include <vector>

namespace ddl_comm {

class Transport;

struct Descriptor {
    uint64_t seq;
    int32_t coll;
    int32_t dtype;
    int64_t count;
    int32_t root;
    int32_t redop;
    int64_t count2; // the second buffer's count where the op has two
    char pad[24];
};
static_assert(sizeof(Descriptor) == 64, "descriptor must be 64 bytes");

// An all_reduce of at most kEagerMin bytes always travels inside the descriptor exchange; one
// of up to kEagerMax bytes does when the previous all_reduce had its size (see Agreement).
// Synchronous calls up to kEagerMax bytes may run on the caller's thread (see submit()).
constexpr size_t kEagerMin = 4096;
constexpr size_t kEagerMax = 64 * 1024;

// "all_reduce", "broadcast", ... as the Python API names them (for messages).
const char* coll_name(int coll);
// "allreduce", "broadcast", ... as the C API names them (ddl_pg_<name>; the error record's op).
const char* coll_op_name(int coll);
// "all_reduce(float32, 4 elements, SUM)", "broadcast(float64, 2 elements, root 1)", "barrier()"
std::string describe(const Descriptor& d);

struct DdlError;
// Whether two ranks' descriptors name the same call (every field but the padding).
bool same_descriptor(const Descriptor& a, const Descriptor& b);
// The error every rank raises when the ranks in `differ` (first: the lowest one's
// descriptor) called something else than d: DDL_E_COMM, fields op, seq, rank, ranks.
DdlError mismatch_error(int rank, const Descriptor& d, const std::set<int>& differ,
                        const Descriptor& first);

// One per process group; used by one runner at a time (the group's comm thread or an inline
// caller, never both). Every collective starts with one message from each rank to every
// other rank, all at once (one step, where an allgather takes n-1): the descriptor, and for an
// all_reduce that fits the message its data too. Once the descriptors agree each rank reduces
// the blocks itself, in rank order (the same result, bit for bit, on every rank): a small
// all_reduce needs no second round. The message size is never taken from the call at hand, so
// ranks that disagree cannot trip a size mismatch in the transport (Gloo aborts the process on
// one): it is kEagerMin, or the size of the previous all_reduce of at most kEagerMax bytes,
// which every rank agreed on (a loop of equal small all_reduces runs eagerly from its second).
class Agreement {
  public:
    // Exchange d with every rank (with `data`, d.count elements, when it fits). Throws
    // DdlError (DDL_E_COMM; fields: op, seq, the ranks whose descriptor differs from d) when
    // any rank disagrees, before anything else is sent; the transport's errors pass through.
    // True when the exchange also did the all_reduce (its result now in data).
    bool agree(Transport& t, int rank, int size, const Descriptor& d, void* data,
               int64_t timeout_ms);

  private:
    std::vector<uint8_t> xin_, xout_; // the exchange's blocks, one per rank
    size_t eager_cap_ = kEagerMin;    // payload bytes of the next exchange
};

} // namespace ddl_comm

#endif
