// What the benchmarks need from libc that Swift's Glibc module does not export (GNU
// extensions; see DESIGN.md's pitfalls). No _GNU_SOURCE here: the .c file defines it.
// epoll comes from berth's LinuxIO (its Selector), so this header leaves it out.
#ifndef C_BENCH_H
#define C_BENCH_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/socket.h>
#include <sys/epoll.h>
#include <spawn.h>

struct CBench_mmsghdr {
    struct msghdr msg_hdr;
    unsigned int msg_len;
};
int CBench_recvmmsg(int fd, struct CBench_mmsghdr *msgs, unsigned int vlen, int flags);
int CBench_sendmmsg(int fd, struct CBench_mmsghdr *msgs, unsigned int vlen, int flags);

// The runner enters network namespaces it created, thread by thread.
int CBench_setns(int fd, int nstype);
extern const int CBench_CLONE_NEWNET;

// A spawned forwarder gets only the descriptors it is given.
int CBench_spawn_closefrom(posix_spawn_file_actions_t *actions, int from);

int CBench_pipe2(int fds[2], int flags);
extern const int CBench_O_CLOEXEC;
extern const int CBench_O_NONBLOCK;
extern const int CBench_SOCK_NONBLOCK;
extern const int CBench_SOCK_CLOEXEC;
extern const int CBench_MSG_WAITFORONE;

// Local ports of the sockets in the calling thread's network namespace whose state is in
// `states` (a bit mask of TCP states: 1 << 10 listening, 1 << 7 for unconnected UDP), from a
// sock_diag dump: the kernel filters, so thousands of TIME_WAIT sockets cost nothing.
// Writes at most `max` ports; returns how many there were, or -1 with errno.
int CBench_bound_ports(int family, int protocol, unsigned int states, uint16_t *ports, int max);

// Thread `tid` (0: the caller) may run on CPU `cpu` only; with `cpu` < 0, on every CPU the
// cpuset allows again. The latency figures pin client, backend and forwarder together.
int CBench_pin(pid_t tid, int cpu);
// The highest-numbered CPU the calling thread may run on, or -1.
int CBench_last_cpu(void);

// accept4(2) with SOCK_NONBLOCK | SOCK_CLOEXEC (not in Swift's Glibc module): the client, or -1.
int CBench_accept_nonblocking(int listener);

// Columns of the terminal on `fd` (ioctl is variadic, which Swift cannot call), 0 if none.
int CBench_terminal_columns(int fd);

#endif
