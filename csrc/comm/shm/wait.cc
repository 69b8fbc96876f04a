// wait.cc: how ranks of the shared-memory transport wait for each other: each publishes the
// steps it has done in its step word; a waiter spins briefly, then sleeps on the word (futex),
// waking every few milliseconds to see whether the peer hung up or its process exited
// (pidfd), until the collective's deadline. Also hanging up and finding dead peers.
#include "comm/shm/shm.h"

#include <linux/futex.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstring>
#include <ctime>

namespace ddl_comm {

int64_t now_us();

namespace {

constexpr int kSpins = 1000;        // pause-loop iterations before yielding
constexpr int kYields = 16;         // sched_yield()s before sleeping
constexpr int64_t kSliceUs = 20000; // a sleeper looks at its peer's health this often

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    asm volatile("yield");
#endif
}

inline bool reached(uint32_t have, uint32_t target) { return (int32_t)(have - target) >= 0; }

int futex_wait(uint32_t* word, uint32_t expected, int64_t us) {
    timespec ts{(time_t)(us / 1000000), (long)(us % 1000000) * 1000};
    return (int)syscall(SYS_futex, word, FUTEX_WAIT, expected, &ts, nullptr, 0);
}

void futex_wake(uint32_t* word) {
    syscall(SYS_futex, word, FUTEX_WAKE, INT_MAX, nullptr, nullptr, 0);
}

int pidfd_open(int pid) {
#ifdef SYS_pidfd_open
    return (int)syscall(SYS_pidfd_open, pid, 0);
#else
    (void)pid;
    errno = ENOSYS;
    return -1;
#endif
}

} // namespace

ShmTransport::ShmTransport(std::unique_ptr<ShmSegment> seg, int rank, int size,
                           const std::vector<HostRecord>& hosts)
    : seg_(std::move(seg)), rank_(rank), size_(size), pidfd_(size, -1), pid_(size, 0) {
    for (int q = 0; q < size; q++) {
        if (q == rank) continue;
        // a peer's pid means something only in this rank's pid namespace
        if (hosts[q].pidns != hosts[rank].pidns) continue;
        pid_[q] = hosts[q].pid;
        pidfd_[q] = pidfd_open(pid_[q]);
    }
}

ShmTransport::~ShmTransport() {
    for (int fd : pidfd_)
        if (fd >= 0) ::close(fd);
}

void ShmTransport::publish() {
    ShmCtl* c = seg_->ctl(rank_);
    step_++;
    __atomic_store_n(&c->step, step_, __ATOMIC_SEQ_CST);
    if (__atomic_load_n(&c->sleepers, __ATOMIC_SEQ_CST) != 0) futex_wake(&c->step);
}

bool ShmTransport::exited(int q) const {
    if (pidfd_[q] >= 0) {
        pollfd p{pidfd_[q], POLLIN, 0};
        return poll(&p, 1, 0) > 0;
    }
    if (pid_[q] > 0) return kill(pid_[q], 0) != 0 && errno == ESRCH;
    return false;
}

void ShmTransport::check_peer(int q) {
    for (int r = 0; r < size_; r++)
        if (__atomic_load_n(&seg_->ctl(r)->closed, __ATOMIC_ACQUIRE))
            throw TransportError(r == rank_ ? "this rank's shared-memory transport was closed"
                                            : "rank " + std::to_string(r) +
                                                  " hung up the shared-memory segment");
    if (exited(q))
        throw TransportError("rank " + std::to_string(q) + "'s process (pid " +
                             std::to_string(pid_[q]) + ") exited");
}

void ShmTransport::wait_rank(int q, uint32_t target, int64_t deadline_us) {
    ShmCtl* c = seg_->ctl(q);
    for (int i = 0; i < kSpins; i++) {
        if (reached(__atomic_load_n(&c->step, __ATOMIC_ACQUIRE), target)) return;
        cpu_relax();
    }
    for (int i = 0; i < kYields; i++) {
        if (reached(__atomic_load_n(&c->step, __ATOMIC_ACQUIRE), target)) return;
        sched_yield();
    }
    for (;;) {
        uint32_t have = __atomic_load_n(&c->step, __ATOMIC_ACQUIRE);
        if (reached(have, target)) return;
        check_peer(q);
        int64_t left = deadline_us - now_us();
        if (left <= 0)
            throw TransportError("timed out waiting for rank " + std::to_string(q) +
                                 " in the shared-memory segment");
        __atomic_add_fetch(&c->sleepers, 1, __ATOMIC_SEQ_CST);
        have = __atomic_load_n(&c->step, __ATOMIC_SEQ_CST);
        if (!reached(have, target)) futex_wait(&c->step, have, left < kSliceUs ? left : kSliceUs);
        __atomic_sub_fetch(&c->sleepers, 1, __ATOMIC_SEQ_CST);
    }
}

void ShmTransport::wait_all(int64_t deadline_us) {
    for (int q = 0; q < size_; q++)
        if (q != rank_) wait_rank(q, step_, deadline_us);
}

void ShmTransport::exchange(void* out, const void* in, size_t block, int64_t timeout_ms) {
    // through the large buffers, one block per round, in rank order of the destination
    int64_t deadline = now_us() + timeout_ms * 1000;
    const uint8_t* src = static_cast<const uint8_t*>(in);
    uint8_t* dst = static_cast<uint8_t*>(out);
    size_t per = seg_->big_bytes() / (size_t)size_;
    big_free_ = false;
    for (size_t off = 0; off < block || off == 0; off += per) {
        size_t len = block - off < per ? block - off : per;
        uint8_t* mine = seg_->big(rank_, bigpar_);
        for (int r = 0; r < size_; r++) memcpy(mine + r * len, src + r * block + off, len);
        publish();
        wait_all(deadline);
        for (int q = 0; q < size_; q++)
            memcpy(dst + q * block + off, seg_->big(q, bigpar_) + rank_ * len, len);
        bigpar_ ^= 1;
        if (block == 0) break;
    }
}

void ShmTransport::close() noexcept {
    if (!seg_) return;
    __atomic_store_n(&seg_->ctl(rank_)->closed, 1u, __ATOMIC_SEQ_CST);
    for (int q = 0; q < size_; q++) futex_wake(&seg_->ctl(q)->step);
}

std::set<int> ShmTransport::dead_peers(int* sys_errno) noexcept {
    std::set<int> dead;
    if (sys_errno) *sys_errno = 0;
    try {
        for (int q = 0; q < size_; q++)
            if (q != rank_ &&
                (__atomic_load_n(&seg_->ctl(q)->closed, __ATOMIC_ACQUIRE) || exited(q)))
                dead.insert(q);
    } catch (...) {
    }
    return dead;
}

std::string ShmTransport::peer_address(int rank) const {
    if (rank < 0 || rank >= size_ || rank == rank_) return "";
    return "shm:pid=" + std::to_string(pid_[rank]);
}

} // namespace ddl_comm
