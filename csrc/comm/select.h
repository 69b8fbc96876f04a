// select.h: which transport a new process group uses (select.cc).
#ifndef DDL_COMM_SELECT_H
#define DDL_COMM_SELECT_H

#include "comm/group_store.h"
#include "comm/transport.h"
#include "ddl/comm.h"

#include <memory>
#include <string>

namespace ddl_comm {

// Every rank publishes where it runs; then, by `mode`: GLOO -> Gloo over TCP; SHM -> the
// shared-memory segment (DDL_E_VALUE when the ranks are not all on one host, DDL_E_COMM when
// the segment is not visible to all); AUTO -> shared memory when every rank is on one host
// and the segment proved visible to all, else Gloo. Every rank reaches the same choice.
// *n_hosts: how many distinct hosts the group spans.
std::unique_ptr<Transport> select_transport(GroupStore& store, int rank, int size,
                                            const std::string& host, const std::string& iface,
                                            int64_t timeout_ms, ddl_transport mode, int* n_hosts);

} // namespace ddl_comm

#endif
