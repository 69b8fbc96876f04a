// transport.cc: the Gloo transport's connection side: Gloo's exceptions translated, ddl's
// group store behind gloo::rendezvous::Store, the TCP device, the full mesh, the descriptor
// exchange, hanging up, and finding dead connections among this process's sockets.
#include "comm/gloo/gloo.h"

#include <gloo/alltoall.h>
#include <gloo/common/error.h>
#include <gloo/rendezvous/context.h>
#include <gloo/rendezvous/store.h>
#include <gloo/transport/tcp/address.h>
#include <gloo/transport/tcp/device.h>

#include <arpa/inet.h>
#include <dirent.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cctype>
#include <csignal>
#include <cstdlib>
#include <mutex>

namespace ddl_comm {

void rethrow_translated() {
    try {
        throw;
    } catch (const gloo::IoException& e) {
        throw TransportError(e.what());
    }
}

void ignore_sigpipe() {
    // only when nobody installed a handler (CPython already ignores it)
    struct sigaction old;
    if (sigaction(SIGPIPE, nullptr, &old) == 0 && old.sa_handler == SIG_DFL)
        std::signal(SIGPIPE, SIG_IGN);
}

std::shared_ptr<gloo::transport::Device> gloo_device(const std::string& host,
                                                     const std::string& iface) {
    static std::mutex m;
    static auto* devices = new std::map<std::string, std::shared_ptr<gloo::transport::Device>>;
    static pid_t owner = getpid();
    std::lock_guard<std::mutex> lock(m);
    if (owner != getpid()) {
        // A forked child (ddl.distributed.launch) inherits the parent's devices but not their
        // event-loop threads: using one would hang. Start afresh, and leak the inherited ones
        // (destroying them would join threads that do not exist here).
        devices = new std::map<std::string, std::shared_ptr<gloo::transport::Device>>;
        owner = getpid();
    }
    std::string key = host + "|" + iface;
    auto it = devices->find(key);
    if (it != devices->end()) return it->second;
    gloo::transport::tcp::attr attr;
    if (!iface.empty())
        attr.iface = iface;
    else
        attr.hostname = host.empty() ? "127.0.0.1" : host;
    attr.ai_family = AF_INET;
    auto dev = gloo::transport::tcp::CreateDevice(attr);
    (*devices)[key] = dev;
    return dev;
}

namespace {

// ddl's group store behind Gloo's Store interface (its errors pass through Gloo's rendezvous
// code as DdlError, fields kept).
class StoreAdapter : public gloo::rendezvous::Store {
  public:
    explicit StoreAdapter(GroupStore& s) : s_(s) {}
    void set(const std::string& key, const std::vector<char>& data) override {
        s_.set(key, std::string(data.begin(), data.end()));
    }
    std::vector<char> get(const std::string& key) override {
        std::string v = s_.get(key);
        return std::vector<char>(v.begin(), v.end());
    }
    void wait(const std::vector<std::string>& keys) override { s_.wait(keys, s_.timeout_ms()); }
    void wait(const std::vector<std::string>& keys,
              const std::chrono::milliseconds& timeout) override {
        s_.wait(keys, timeout.count());
    }

  private:
    GroupStore& s_;
};

// "127.0.0.1:4242" ("[::1]:4242" for IPv6); "" for other families.
std::string host_port(const sockaddr_storage& ss) {
    char host[INET6_ADDRSTRLEN] = "";
    if (ss.ss_family == AF_INET) {
        auto* a = reinterpret_cast<const sockaddr_in*>(&ss);
        inet_ntop(AF_INET, &a->sin_addr, host, sizeof host);
        return std::string(host) + ":" + std::to_string(ntohs(a->sin_port));
    }
    if (ss.ss_family == AF_INET6) {
        auto* a = reinterpret_cast<const sockaddr_in6*>(&ss);
        inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof host);
        return "[" + std::string(host) + "]:" + std::to_string(ntohs(a->sin6_port));
    }
    return "";
}

} // namespace

GlooTransport::GlooTransport(GroupStore& store, int rank, int size, const std::string& host,
                             const std::string& iface, int64_t timeout_ms)
    : rank_(rank), size_(size) {
    ignore_sigpipe();
    try {
        StoreAdapter adapter(store);
        dev_ = gloo_device(host, iface);
        ctx_ = std::make_shared<gloo::rendezvous::Context>(rank, size);
        ctx_->setTimeout(std::chrono::milliseconds(timeout_ms));
        ctx_->connectFullMesh(adapter, dev_);
    } catch (...) {
        rethrow_translated();
    }
    // learn both ends of each pair's socket, to find the dead ones later (dead_peers)
    auto end_of = [&](int r) {
        auto& a = dynamic_cast<const gloo::transport::tcp::Address&>(ctx_->getPair(r)->address());
        return host_port(a.getSockaddr());
    };
    for (int r = 0; r < size; r++)
        if (r != rank)
            store.set("ddl/addr/" + std::to_string(rank) + "/" + std::to_string(r), end_of(r));
    for (int r = 0; r < size; r++)
        if (r != rank)
            ends_[r] = {end_of(r),
                        store.get("ddl/addr/" + std::to_string(r) + "/" + std::to_string(rank))};
}

void GlooTransport::exchange(void* out, const void* in, size_t block, int64_t timeout_ms) {
    try {
        gloo::AlltoallOptions opts(ctx_);
        opts.setInput(static_cast<uint8_t*>(const_cast<void*>(in)), block * size_);
        opts.setOutput(static_cast<uint8_t*>(out), block * size_);
        opts.setTag(1); // the collectives' data uses tag 2
        opts.setTimeout(std::chrono::milliseconds(timeout_ms));
        gloo::alltoall(opts);
    } catch (...) {
        rethrow_translated();
    }
}

void GlooTransport::close() noexcept {
    try {
        if (ctx_) ctx_->closeConnections();
    } catch (...) {
    }
}

// Looked up from outside Gloo, among this process's sockets, by the two ends of each pair: a
// pair whose socket is gone (Gloo closed it, or a reset peer left it unconnected), hung up or
// in error.
std::set<int> GlooTransport::dead_peers(int* sys_errno) noexcept {
    std::set<int> dead;
    if (sys_errno) *sys_errno = 0;
    DIR* dir = opendir("/proc/self/fd");
    if (!dir) return dead; // nothing known: nothing named
    try {
        std::map<std::pair<std::string, std::string>, int> fd_of;
        while (dirent* e = readdir(dir)) {
            if (!isdigit(static_cast<unsigned char>(e->d_name[0]))) continue;
            int fd = atoi(e->d_name);
            sockaddr_storage a, b;
            socklen_t la = sizeof a, lb = sizeof b;
            if (getsockname(fd, reinterpret_cast<sockaddr*>(&a), &la) != 0 ||
                getpeername(fd, reinterpret_cast<sockaddr*>(&b), &lb) != 0 ||
                (a.ss_family != AF_INET && a.ss_family != AF_INET6))
                continue;
            fd_of[{host_port(a), host_port(b)}] = fd;
        }
        for (auto& kv : ends_) {
            auto it = fd_of.find(kv.second);
            if (it == fd_of.end()) {
                dead.insert(kv.first);
                continue;
            }
            pollfd p{it->second, POLLRDHUP, 0};
            if (poll(&p, 1, 0) > 0 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR | POLLNVAL))) {
                dead.insert(kv.first);
                int err = 0;
                socklen_t len = sizeof err;
                if (sys_errno && !*sys_errno &&
                    getsockopt(it->second, SOL_SOCKET, SO_ERROR, &err, &len) == 0)
                    *sys_errno = err;
            }
        }
    } catch (...) { // out of memory: what was found so far
    }
    closedir(dir);
    return dead;
}

std::string GlooTransport::peer_address(int rank) const {
    auto it = ends_.find(rank);
    return it == ends_.end() ? "" : it->second.second;
}

std::unique_ptr<Transport> gloo_transport_new(GroupStore& store, int rank, int size,
                                              const std::string& host, const std::string& iface,
                                              int64_t timeout_ms) {
    return std::unique_ptr<Transport>(
        new GlooTransport(store, rank, size, host, iface, timeout_ms));
}

} // namespace ddl_comm
