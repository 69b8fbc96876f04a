// gloo.h: the Gloo transport's private header: the GlooTransport class (a Gloo context over a
// TCP device; comm/transport.h says what it must do), its constructor for ddl_pg_new, and the
// translation of Gloo's exceptions. Only files in comm/gloo/ include Gloo's headers.
#ifndef DDL_COMM_GLOO_H
#define DDL_COMM_GLOO_H

#include "comm/group_store.h"
#include "comm/transport.h"

#include <map>
#include <memory>
#include <string>

namespace gloo {
namespace rendezvous {
class Context;
}
namespace transport {
class Device;
}
} // namespace gloo

namespace ddl_comm {

// Join the full mesh of `size` ranks through `store` (Gloo's rendezvous keys under the group's
// prefix), binding the TCP device to `host` (or, when empty, the interface `iface`; both
// empty: 127.0.0.1). Throws as a Transport does.
std::unique_ptr<Transport> gloo_transport_new(GroupStore& store, int rank, int size,
                                              const std::string& host, const std::string& iface,
                                              int64_t timeout_ms);

// Rethrow the exception in flight with Gloo's I/O errors (gloo::IoException) as
// TransportError; everything else as it is. Call inside a catch block.
[[noreturn]] void rethrow_translated();

// One Gloo TCP device per (host or interface) per process, shared by its groups.
std::shared_ptr<gloo::transport::Device> gloo_device(const std::string& host,
                                                     const std::string& iface);

// Gloo writes without MSG_NOSIGNAL: a vanished peer must not kill us with SIGPIPE.
void ignore_sigpipe();

class GlooTransport : public Transport {
  public:
    GlooTransport(GroupStore& store, int rank, int size, const std::string& host,
                  const std::string& iface, int64_t timeout_ms);
    void exchange(void* out, const void* in, size_t block, int64_t timeout_ms) override;
    void run(const Descriptor& d, void* a, void* b, int64_t timeout_ms) override; // collectives.cc
    void close() noexcept override;
    std::set<int> dead_peers(int* sys_errno) noexcept override;
    std::string peer_address(int rank) const override;
    const char* name() const override { return "gloo"; }

  private:
    int rank_, size_;
    std::shared_ptr<gloo::transport::Device> dev_;
    std::shared_ptr<gloo::rendezvous::Context> ctx_;
    // rank -> the two ends ("host:port") of this rank's socket with it: this end, its end
    std::map<int, std::pair<std::string, std::string>> ends_;
};

} // namespace ddl_comm

#endif
