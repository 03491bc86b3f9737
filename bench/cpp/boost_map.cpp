// Boost.Interprocess peer of shmval-bench's int-key scenario: boost::unordered_map
// <int64, int64> with a shared-memory allocator in a managed_shared_memory segment;
// N inserts of i -> 2i, then N lookups.
//   boost_map N   ->  prints "<ns per operation> <checksum>"
#include <boost/interprocess/allocators/allocator.hpp>
#include <boost/interprocess/managed_shared_memory.hpp>
#include <boost/unordered_map.hpp>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <string>
#include <unistd.h>

namespace bip = boost::interprocess;
using Pair = std::pair<const std::int64_t, std::int64_t>;
using Alloc = bip::allocator<Pair, bip::managed_shared_memory::segment_manager>;
using Map = boost::unordered_map<std::int64_t, std::int64_t, boost::hash<std::int64_t>,
                                 std::equal_to<std::int64_t>, Alloc>;

int main(int argc, char** argv) {
    if (argc != 2) {
        std::fprintf(stderr, "usage: boost_map N\n");
        return 2;
    }
    const long n = std::atol(argv[1]);
    const std::string name = "shmval-bench-boostmap-" + std::to_string(getpid());
    bip::shared_memory_object::remove(name.c_str());
    double ns = 0;
    std::int64_t sum = 0;
    {
        bip::managed_shared_memory seg(bip::create_only, name.c_str(), std::size_t(n) * 128 + (64 << 20));
        auto t0 = std::chrono::steady_clock::now();
        Map* m = seg.construct<Map>("map")(0, boost::hash<std::int64_t>(),
                                           std::equal_to<std::int64_t>(),
                                           seg.get_allocator<Pair>());
        for (std::int64_t i = 0; i < n; i++) m->emplace(i, 2 * i);
        for (std::int64_t i = 0; i < n; i++) sum += m->find(i)->second;
        seg.destroy<Map>("map");
        auto t1 = std::chrono::steady_clock::now();
        ns = std::chrono::duration<double, std::nano>(t1 - t0).count() / (2.0 * n);
    }
    bip::shared_memory_object::remove(name.c_str());
    std::printf("%.3f %lld\n", ns, static_cast<long long>(sum));
    return 0;
}
