// gloo_baseline.cc: the raw-Gloo reference for benchmarks/bench_allreduce.py.
//
// One process per rank, no Python, no extra thread: the caller runs Gloo's new-style
// gloo::allreduce (RING, the default, as ddl uses) on a float32 buffer, with the sum compiled
// here at -O3 as ddl does. Rendezvous through a gloo::rendezvous::FileStore directory.
//
//   gloo_baseline RANK SIZE STORE_DIR
//
// then reads commands on stdin, one per line, and answers each on stdout:
//   run MODE NBYTES WARMUP ITERS   -> "ok <us> <us> ..." (one time per timed call), "err <text>"
//   quit
// MODE: steps joined by '+', run in order as one timed call:
//       ring      new-style allreduce, RING (ddl's data path)
//       bcube     new-style allreduce, BCUBE
//       agN       an allgather of N bytes per rank (ag64: ddl's descriptor exchange, old form)
//       a2aN      an alltoall of N-byte blocks, every peer at once (one step)
//       e.g. "ag64+ring" is ddl's wire protocol without its thread handoff and Python.
// The buffer holds zeros while timed (sums stay 0: no overflow, no denormals); the first run of
// each size checks a real sum (rank r contributes r+1).
#include <gloo/allgather.h>
#include <gloo/allreduce.h>
#include <gloo/alltoall.h>
#include <gloo/math.h>
#include <gloo/rendezvous/context.h>
#include <gloo/rendezvous/file_store.h>
#include <gloo/rendezvous/prefix_store.h>
#include <gloo/transport/tcp/device.h>

#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

namespace {

void sum_f32(void* c, const void* a, const void* b, size_t n) {
    gloo::sum<float>(c, a, b, n);  // instantiated in this -O3 translation unit
}

struct Bench {
    std::shared_ptr<gloo::rendezvous::Context> ctx;
    std::map<size_t, std::vector<float>> bufs;
    std::vector<char> small_in, small_out;

    void allreduce(std::vector<float>& b, gloo::AllreduceOptions::Algorithm algo) {
        gloo::AllreduceOptions opts(ctx);
        opts.setOutput(b.data(), b.size());
        opts.setReduceFunction(&sum_f32);
        opts.setAlgorithm(algo);
        opts.setTag(2);
        gloo::allreduce(opts);
    }

    void allgather(size_t n) {
        small_in.resize(n);
        small_out.resize(n * (size_t)ctx->size);
        gloo::AllgatherOptions opts(ctx);
        opts.setInput(reinterpret_cast<uint8_t*>(small_in.data()), n);
        opts.setOutput(reinterpret_cast<uint8_t*>(small_out.data()), small_out.size());
        opts.setTag(1);
        gloo::allgather(opts);
    }

    void alltoall(size_t n) {
        small_in.resize(n * (size_t)ctx->size);
        small_out.resize(n * (size_t)ctx->size);
        gloo::AlltoallOptions opts(ctx);
        opts.setInput(reinterpret_cast<uint8_t*>(small_in.data()), small_in.size());
        opts.setOutput(reinterpret_cast<uint8_t*>(small_out.data()), small_out.size());
        opts.setTag(1);
        gloo::alltoall(opts);
    }

    void once(const std::string& mode, std::vector<float>& b) {
        size_t start = 0;
        while (start <= mode.size()) {
            size_t end = mode.find('+', start);
            if (end == std::string::npos) end = mode.size();
            std::string step = mode.substr(start, end - start);
            if (step == "ring") {
                allreduce(b, gloo::AllreduceOptions::Algorithm::RING);
            } else if (step == "bcube") {
                allreduce(b, gloo::AllreduceOptions::Algorithm::BCUBE);
            } else if (step.rfind("ag", 0) == 0 && step.size() > 2) {
                allgather(std::stoul(step.substr(2)));
            } else if (step.rfind("a2a", 0) == 0 && step.size() > 3) {
                alltoall(std::stoul(step.substr(3)));
            } else {
                throw std::runtime_error("unknown mode step '" + step + "'");
            }
            start = end + 1;
        }
    }

    std::string run(const std::string& mode, size_t nbytes, int warmup, int iters) {
        size_t n = nbytes / sizeof(float);
        auto it = bufs.find(n);
        if (it == bufs.end()) {
            it = bufs.emplace(n, std::vector<float>(n)).first;
            if (mode.find("ring") != std::string::npos ||
                mode.find("bcube") != std::string::npos) {  // check a real sum once per size
                auto& b = it->second;
                for (auto& x : b) x = (float)(ctx->rank + 1);
                once(mode, b);
                float want = (float)(ctx->size * (ctx->size + 1) / 2);
                for (auto x : b)
                    if (x != want) return "err wrong sum " + std::to_string(x);
                std::fill(b.begin(), b.end(), 0.0f);
            }
        }
        auto& b = it->second;
        for (int i = 0; i < warmup; i++) once(mode, b);
        std::ostringstream out;
        out << "ok";
        for (int i = 0; i < iters; i++) {
            auto t0 = std::chrono::steady_clock::now();
            once(mode, b);
            auto t1 = std::chrono::steady_clock::now();
            out << ' ' << std::chrono::duration<double, std::micro>(t1 - t0).count();
        }
        return out.str();
    }
};

}  // namespace

int main(int argc, char** argv) {
    signal(SIGPIPE, SIG_IGN);  // Gloo writes without MSG_NOSIGNAL
    if (argc != 4) {
        fprintf(stderr, "usage: %s RANK SIZE STORE_DIR\n", argv[0]);
        return 2;
    }
    int rank = atoi(argv[1]), size = atoi(argv[2]);
    try {
        Bench b;
        gloo::transport::tcp::attr attr;
        attr.hostname = "127.0.0.1";
        attr.ai_family = AF_INET;
        auto dev = gloo::transport::tcp::CreateDevice(attr);
        gloo::rendezvous::FileStore files(argv[3]);
        gloo::rendezvous::PrefixStore store("gloo_baseline", files);
        b.ctx = std::make_shared<gloo::rendezvous::Context>(rank, size);
        b.ctx->setTimeout(std::chrono::seconds(60));
        b.ctx->connectFullMesh(store, dev);
        std::cout << "ready" << std::endl;
        std::string line;
        while (std::getline(std::cin, line)) {
            std::istringstream in(line);
            std::string cmd, mode;
            in >> cmd;
            if (cmd == "quit") break;
            size_t nbytes = 0;
            int warmup = 0, iters = 0;
            if (cmd != "run" || !(in >> mode >> nbytes >> warmup >> iters)) {
                std::cout << "err bad command: " << line << std::endl;
                continue;
            }
            std::cout << b.run(mode, nbytes, warmup, iters) << std::endl;
        }
        b.ctx->closeConnections();
    } catch (const std::exception& e) {  // gloo::EnforceNotMet is a std::exception
        std::cout << "err " << e.what() << std::endl;
        fprintf(stderr, "gloo_baseline rank %d: %s\n", rank, e.what());
        return 1;
    }
    return 0;
}
