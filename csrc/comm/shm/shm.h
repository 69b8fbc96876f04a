// shm.h: the shared-memory transport's private header: one segment per group mapped by every
// rank of one host (its layout, the step words ranks wait on), the ShmTransport class
// (comm/transport.h says what it must do) and its constructor for the transport choice.
#ifndef DDL_COMM_SHM_H
#define DDL_COMM_SHM_H

#include "comm/group_store.h"
#include "comm/transport.h"

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace ddl_comm {

// The segment: a header page, then one control block per rank, then per rank two small
// buffers (double-buffered: call k uses parity k & 1) and two large ones (round parity).
//   [Header][Ctl x n][small: n x 2 x small_bytes()][big: n x 2 x big_bytes()]
// A large buffer holds one round of a large collective, per rank: 8 MiB / n, between 256 KiB
// and 4 MiB (fewer rounds mean fewer synchronisations; the segment stays ~16 MiB + n x 128 KiB).
// A collective whose share fits a small buffer goes in one step: 64 KiB, 1 MiB for 1-2 ranks.
constexpr size_t kShmSmall = 64 * 1024;
constexpr size_t kShmBigTotal = 8u << 20, kShmBigMin = 256u << 10, kShmBigMax = 4u << 20;
constexpr uint64_t kShmMagic = 0x64646c73686d3031ull; // "ddlshm01"

struct ShmHeader {
    uint64_t magic;
    uint64_t nonce; // proves a mapping is the segment the creator made (the visibility probe)
    int32_t size;
    uint32_t mapped; // atomic: ranks that mapped it; the one that makes it `size` unlinks it
    char pad[4096 - 24];
};
static_assert(sizeof(ShmHeader) == 4096, "header is one page");

struct alignas(128) ShmCtl {
    uint32_t step;     // atomic, a futex word: the last step this rank published
    uint32_t sleepers; // atomic: ranks asleep on `step`
    uint32_t closed;   // atomic: this rank hung up (failed or left)
    int32_t pid;
    char pad0[112];
    Descriptor desc[2]; // this rank's descriptor of call k at [k & 1]
};
static_assert(sizeof(ShmCtl) == 256, "control block is 256 bytes");

// The mapped segment of one group, as one rank sees it.
class ShmSegment {
  public:
    ShmSegment(int rank, int size);
    ~ShmSegment();
    // rank 0: create a segment with a fresh random name; the others: open the name rank 0
    // published. False (with *why set) when this rank cannot map it or it is not rank 0's.
    bool create(std::string* name, uint64_t* nonce, std::string* why);
    bool open(const std::string& name, uint64_t nonce, std::string* why);
    // Count this rank as mapped (and write its pid); the last one unlinks the name.
    void mark_mapped(const std::string& name);

    ShmHeader* header() const { return static_cast<ShmHeader*>(base_); }
    ShmCtl* ctl(int r) const {
        return reinterpret_cast<ShmCtl*>(static_cast<uint8_t*>(base_) + sizeof(ShmHeader)) + r;
    }
    uint8_t* small(int r, int parity) const {
        return static_cast<uint8_t*>(base_) + small_off_ + ((size_t)r * 2 + parity) * small_;
    }
    uint8_t* big(int r, int parity) const {
        return static_cast<uint8_t*>(base_) + big_off_ + ((size_t)r * 2 + parity) * big_;
    }
    size_t big_bytes() const { return big_; }
    size_t small_bytes() const { return small_; }
    static size_t bytes_for(int size);

  private:
    bool map(int fd, std::string* why);
    int rank_, size_;
    void* base_ = nullptr;
    size_t bytes_ = 0, small_off_ = 0, big_off_ = 0, big_ = 0, small_ = 0;
};

// Who a rank is and where it runs, as published in the store when a group is made.
struct HostRecord {
    std::string host; // DDL_HOST_ID, else "hostname/boot id/net namespace inode"
    int pid = 0;
    std::string pidns; // pid namespace inode: liveness by pid only within one
};
HostRecord local_host_record();
std::string encode_host_record(const HostRecord& h);
HostRecord decode_host_record(const std::string& s);

class ShmTransport : public Transport {
  public:
    // Takes over a segment every rank mapped (see shm_transport_new in comm/select.cc).
    ShmTransport(std::unique_ptr<ShmSegment> seg, int rank, int size,
                 const std::vector<HostRecord>& hosts);
    ~ShmTransport() override;
    // A plain all-to-all through the segment (the interface's descriptor exchange; the
    // group itself never needs it: run() carries the descriptor).
    void exchange(void* out, const void* in, size_t block, int64_t timeout_ms) override;
    void run(const Descriptor& d, void* a, void* b, int64_t timeout_ms) override; // collectives.cc
    void close() noexcept override;
    std::set<int> dead_peers(int* sys_errno) noexcept override;
    std::string peer_address(int rank) const override;
    bool agrees_itself() const override { return true; }
    bool runs_inline() const override { return true; }
    const char* name() const override { return "shm"; }

  private:
    // Steps (wait.cc): publish this rank's next step, wait until every rank published it.
    void publish();
    void wait_all(int64_t deadline_us);
    void wait_rank(int q, uint32_t target, int64_t deadline_us);
    void check_peer(int q); // throws TransportError when q hung up or its process exited
    bool exited(int q) const;

    // collectives.cc
    void post_descriptor(const Descriptor& d, int par);
    void check_descriptors(const Descriptor& d, int par);
    // par0: the call's parity (its descriptor's slot), checked after the first round's step
    void rounds(const Descriptor& d, uint8_t* a, const uint8_t* b, int64_t deadline_us, int par0);
    void allreduce_large(const Descriptor& d, uint8_t* a, int64_t deadline_us, int par0);

    std::unique_ptr<ShmSegment> seg_;
    int rank_, size_;
    uint32_t step_ = 0;   // the last step this rank published (the same on every rank)
    uint64_t calls_ = 0;  // collectives run: the small buffers' parity
    uint32_t bigpar_ = 0; // the large buffers' parity, per round
    // no peer still reads this rank's large buffers (false after a round-based call, whose
    // last round's buffer the peers read after its step; allreduce_large ends with a barrier)
    bool big_free_ = true;
    std::vector<int> pidfd_;
    std::vector<int> pid_;
    int64_t timeout_ms_ = 0;
};

} // namespace ddl_comm

#endif
