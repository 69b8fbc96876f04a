// transport.h: what a process group needs from a transport (Gloo over TCP in comm/gloo/, shared
// memory among the ranks of one host in comm/shm/): connected to every rank, it moves the
// bytes of agreed collectives, hangs up on request, and says which peers' connections are gone.
#ifndef DDL_COMM_TRANSPORT_H
#define DDL_COMM_TRANSPORT_H

#include "comm/agreement.h"

#include <set>
#include <string>

namespace ddl_comm {

// Calls come from one thread at a time (the group's runner), except close(), dead_peers()
// and peer_address(), which the watchdog and the failure path call from theirs.
// Errors: a failed connection or an expired transport timeout throws TransportError; a
// rendezvous store failure throws DdlError; anything else (a C++ exception of the library
// underneath) is an internal error.
class Transport {
  public:
    virtual ~Transport() = default;
    // All-to-all of `block` bytes: in holds one block per rank, in rank order (own included),
    // out receives rank r's block for this rank at r * block. Every rank passes the same
    // block size (the agreement guarantees it). Used for the descriptor exchange.
    virtual void exchange(void* out, const void* in, size_t block, int64_t timeout_ms) = 0;
    // The collective d, already agreed by every rank, on a's and b's data (ddl_work's a, b:
    // the in-place/output buffer and the separate input, either NULL where unused).
    virtual void run(const Descriptor& d, void* a, void* b, int64_t timeout_ms) = 0;
    // Hang up every connection now, so that peers blocked on this rank fail at once. The
    // transport is dead afterwards. Never throws.
    virtual void close() noexcept = 0;
    // The peers whose connection with this rank is gone (closed, hung up, in error), looked
    // up now from outside the transport's own error path; *sys_errno (if not NULL) gets the
    // pending socket error of the first such connection, 0 when unknown. Never throws.
    virtual std::set<int> dead_peers(int* sys_errno) noexcept = 0;
    // The address of this rank's connection with `rank` at its end ("host:port" or the
    // transport's own notation), "" when unknown.
    virtual std::string peer_address(int rank) const = 0;
    // True when run() itself checks that every rank called the same collective (the
    // descriptor travels with the data, as in the shared-memory segment's header): the group
    // then skips the separate agreement exchange. run() throws the same DdlError as
    // Agreement::agree on a mismatch, before any rank's data is used.
    virtual bool agrees_itself() const { return false; }
    // True when a collective of any size may run on the caller's thread: the transport never
    // stays stuck in a transfer past a peer's failure (it notices and returns).
    virtual bool runs_inline() const { return false; }
    // "gloo", "shm", "hierarchical" (ddl_pg_transport).
    virtual const char* name() const = 0;
};

} // namespace ddl_comm

#endif
