// Boost.Interprocess peer of shmval-bench scenario 1: allocate+free pairs of random
// sizes 16..256 B in a managed_shared_memory segment, one process.
//   boost_alloc N   ->  prints "<ns per pair> <checksum>"
// The size sequence is the same xorshift as bench/src/alloc.rs; each block is touched
// (one byte written and read back) as on the Rust side.
#include <boost/interprocess/managed_shared_memory.hpp>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <unistd.h>
#include <vector>

namespace bip = boost::interprocess;

int main(int argc, char** argv) {
    if (argc != 2) {
        std::fprintf(stderr, "usage: boost_alloc N\n");
        return 2;
    }
    const long n = std::atol(argv[1]);
    std::vector<std::size_t> sizes(4096);
    std::uint64_t x = 0x2545F4914F6CDD1DULL;
    for (auto& s : sizes) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        s = 16 + x % 241;
    }
    const std::string name = "shmval-bench-boost-" + std::to_string(getpid());
    bip::shared_memory_object::remove(name.c_str());
    double ns = 0;
    std::uint64_t acc = 0;
    {
        bip::managed_shared_memory seg(bip::create_only, name.c_str(), 64 << 20);
        for (long i = 0; i < 10000; i++) seg.deallocate(seg.allocate(sizes[i & 4095]));  // warm up
        auto t0 = std::chrono::steady_clock::now();
        for (long i = 0; i < n; i++) {
            auto* p = static_cast<unsigned char*>(seg.allocate(sizes[i & 4095]));
            p[0] = static_cast<unsigned char>(i);
            acc += p[0];
            seg.deallocate(p);
        }
        auto t1 = std::chrono::steady_clock::now();
        ns = std::chrono::duration<double, std::nano>(t1 - t0).count() / n;
    }
    bip::shared_memory_object::remove(name.c_str());
    std::printf("%.3f %llu\n", ns, static_cast<unsigned long long>(acc));
    return 0;
}
