// Boost.Interprocess peer of shmval-bench's one-way scenario: a message_queue of
// 1024 messages of 8 bytes between two processes.
//   boost_mq N   ->  prints "<million messages per second> <checksum>"
//   boost_mq N CAP GAP_US  ->  a queue of CAP messages whose receiver sleeps GAP_US
//                          before each receive; prints "<producer CPU µs per message>
//                          <checksum>" (the backpressure scenario)
// The parent sends 0..N-1, a forked child receives them, checks the order, and
// reports its sum through a pipe; the time runs from the first send to the child's
// exit.
#include <boost/interprocess/ipc/message_queue.hpp>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <ctime>
#include <sys/wait.h>
#include <unistd.h>

namespace bip = boost::interprocess;

int main(int argc, char** argv) {
    if (argc != 2 && argc != 4) {
        std::fprintf(stderr, "usage: boost_mq N [CAP GAP_US]\n");
        return 2;
    }
    const long n = std::atol(argv[1]);
    const long cap = argc == 4 ? std::atol(argv[2]) : 1024;
    const long gap_us = argc == 4 ? std::atol(argv[3]) : 0;
    const std::string name = "shmval-bench-boostmq-" + std::to_string(getpid());
    bip::message_queue::remove(name.c_str());
    bip::message_queue mq(bip::create_only, name.c_str(), cap, sizeof(std::uint64_t));
    int fds[2];
    if (pipe(fds) != 0) return 1;
    pid_t kid = fork();
    if (kid == 0) {
        bip::message_queue rx(bip::open_only, name.c_str());
        std::uint64_t sum = 0, v = 0;
        bip::message_queue::size_type got = 0;
        unsigned prio = 0;
        for (long i = 0; i < n; i++) {
            if (gap_us > 0) usleep(gap_us);
            rx.receive(&v, sizeof v, got, prio);
            if (got != sizeof v || v != static_cast<std::uint64_t>(i)) _exit(3);
            sum += v;
        }
        if (write(fds[1], &sum, sizeof sum) != sizeof sum) _exit(4);
        _exit(0);
    }
    auto t0 = std::chrono::steady_clock::now();
    timespec c0{}, c1{};
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &c0);
    for (long i = 0; i < n; i++) {
        std::uint64_t v = static_cast<std::uint64_t>(i);
        mq.send(&v, sizeof v, 0);
    }
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &c1);
    int status = 0;
    waitpid(kid, &status, 0);
    auto t1 = std::chrono::steady_clock::now();
    std::uint64_t sum = 0;
    if (read(fds[0], &sum, sizeof sum) != sizeof sum || !WIFEXITED(status) ||
        WEXITSTATUS(status) != 0) {
        bip::message_queue::remove(name.c_str());
        std::fprintf(stderr, "boost_mq: receiver failed\n");
        return 1;
    }
    bip::message_queue::remove(name.c_str());
    const double secs = std::chrono::duration<double>(t1 - t0).count();
    if (gap_us > 0) {
        const double cpu_ns = (c1.tv_sec - c0.tv_sec) * 1e9 + (c1.tv_nsec - c0.tv_nsec);
        std::printf("%.3f %llu\n", cpu_ns / n / 1e3, static_cast<unsigned long long>(sum));
        return 0;
    }
    std::printf("%.3f %llu\n", n / secs / 1e6, static_cast<unsigned long long>(sum));
    return 0;
}
