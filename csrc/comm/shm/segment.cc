// segment.cc: the shared-memory transport's segment: created by rank 0 under a fresh random
// name, opened by the others, checked to be rank 0's (a nonce in its header), unlinked as
// soon as every rank has mapped it; and where a rank runs (the host record).
#include "comm/shm/shm.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <random>
#include <sstream>

namespace ddl_comm {

namespace {

std::string inode_of(const char* path) {
    struct stat st;
    if (stat(path, &st) != 0) return "?";
    return std::to_string((unsigned long long)st.st_dev) + ":" +
           std::to_string((unsigned long long)st.st_ino);
}

std::string first_line(const char* path) {
    std::ifstream f(path);
    std::string line;
    if (!std::getline(f, line)) return "?";
    return line;
}

uint64_t random64() {
    std::random_device rd;
    return ((uint64_t)rd() << 32) ^ rd() ^ ((uint64_t)getpid() << 16);
}

} // namespace

HostRecord local_host_record() {
    HostRecord h;
    const char* forced = getenv("DDL_HOST_ID");
    if (forced && *forced) {
        h.host = std::string("id:") + forced;
    } else {
        char name[256] = "";
        gethostname(name, sizeof name - 1);
        h.host = std::string(name) + "/" + first_line("/proc/sys/kernel/random/boot_id") + "/" +
                 inode_of("/proc/self/ns/net");
    }
    h.pid = (int)getpid();
    h.pidns = inode_of("/proc/self/ns/pid");
    return h;
}

std::string encode_host_record(const HostRecord& h) {
    return std::to_string(h.pid) + "\n" + h.pidns + "\n" + h.host;
}

HostRecord decode_host_record(const std::string& s) {
    HostRecord h;
    size_t a = s.find('\n'), b = a == std::string::npos ? a : s.find('\n', a + 1);
    if (b == std::string::npos) {
        h.host = s;
        return h;
    }
    h.pid = atoi(s.substr(0, a).c_str());
    h.pidns = s.substr(a + 1, b - a - 1);
    h.host = s.substr(b + 1);
    return h;
}

ShmSegment::ShmSegment(int rank, int size) : rank_(rank), size_(size) {
    small_off_ = sizeof(ShmHeader) + (size_t)size * sizeof(ShmCtl);
    small_off_ = (small_off_ + 4095) / 4096 * 4096;
    small_ = size <= 2 ? kShmSmall * 16 : kShmSmall; // 2 ranks: one step up to 1 MiB
    big_off_ = small_off_ + (size_t)size * 2 * small_;
    big_ = kShmBigTotal / (size_t)size / 4096 * 4096;
    big_ = big_ < kShmBigMin ? kShmBigMin : big_ > kShmBigMax ? kShmBigMax : big_;
    bytes_ = big_off_ + (size_t)size * 2 * big_;
}

size_t ShmSegment::bytes_for(int size) { return ShmSegment(0, size).bytes_; }

ShmSegment::~ShmSegment() {
    if (base_) munmap(base_, bytes_);
}

bool ShmSegment::map(int fd, std::string* why) {
    void* p = mmap(nullptr, bytes_, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    int err = errno;
    ::close(fd);
    if (p == MAP_FAILED) {
        *why = std::string("mmap: ") + strerror(err);
        return false;
    }
    base_ = p;
    return true;
}

bool ShmSegment::create(std::string* name, uint64_t* nonce, std::string* why) {
    static std::atomic<unsigned> counter{0};
    char buf[96];
    snprintf(buf, sizeof buf, "/ddl-%d-%u-%016llx", (int)getpid(), counter.fetch_add(1),
             (unsigned long long)random64());
    *name = buf;
    int fd = shm_open(buf, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) {
        *why = std::string("shm_open: ") + strerror(errno);
        return false;
    }
    // allocated now: a full /dev/shm is an error here (and Gloo in auto mode), not a SIGBUS
    // at the first touch of a page in the middle of a collective
    int err = posix_fallocate(fd, 0, (off_t)bytes_);
    if (err != 0) {
        *why = std::string("allocating ") + std::to_string(bytes_ >> 10) +
               " KiB in /dev/shm: " + strerror(err);
        ::close(fd);
        shm_unlink(buf);
        return false;
    }
    if (!map(fd, why)) {
        shm_unlink(buf);
        return false;
    }
    *nonce = random64() | 1;
    header()->magic = kShmMagic;
    header()->nonce = *nonce;
    header()->size = size_;
    return true;
}

bool ShmSegment::open(const std::string& name, uint64_t nonce, std::string* why) {
    int fd = shm_open(name.c_str(), O_RDWR | O_CLOEXEC, 0600);
    if (fd < 0) {
        *why = "shm_open " + name + ": " + strerror(errno);
        return false;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || (size_t)st.st_size != bytes_) {
        *why = "segment " + name + " has the wrong size";
        ::close(fd);
        return false;
    }
    if (!map(fd, why)) return false;
    if (header()->magic != kShmMagic || header()->nonce != nonce || header()->size != size_) {
        *why = "segment " + name + " is not the one rank 0 created (another host's?)";
        munmap(base_, bytes_);
        base_ = nullptr;
        return false;
    }
    return true;
}

void ShmSegment::mark_mapped(const std::string& name) {
    __atomic_store_n(&ctl(rank_)->pid, (int32_t)getpid(), __ATOMIC_RELEASE);
    if (__atomic_add_fetch(&header()->mapped, 1, __ATOMIC_ACQ_REL) == (uint32_t)size_)
        shm_unlink(name.c_str());
}

} // namespace ddl_comm
