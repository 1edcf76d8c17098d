// Shims for what Swift cannot import from Glibc on its own (see DESIGN.md pitfalls).
// No _GNU_SOURCE here: it is defined for the .c file only, or the module clashes with SwiftGlibc.
#ifndef C_BERTH_LINUX_H
#define C_BERTH_LINUX_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/timerfd.h>
#include <sys/signalfd.h>
#include <signal.h>

// splice(2), pipe2(2) and accept4(2) are GNU extensions.
ssize_t CBerthLinux_splice(int fd_in, int fd_out, size_t len, unsigned int flags);
int CBerthLinux_pipe2(int fds[2], int flags);
int CBerthLinux_accept4(int fd, struct sockaddr *addr, socklen_t *len, int flags);

// recvmmsg/sendmmsg and struct mmsghdr are GNU extensions too.
struct CBerthLinux_mmsghdr {
    struct msghdr msg_hdr;
    unsigned int msg_len;
};
int CBerthLinux_recvmmsg(int fd, struct CBerthLinux_mmsghdr *msgs, unsigned int vlen, int flags);
int CBerthLinux_sendmmsg(int fd, struct CBerthLinux_mmsghdr *msgs, unsigned int vlen, int flags);

#include <pthread.h>
// CPUs this process may run on (sched_getaffinity and CPU_COUNT are GNU); 1 if unknown.
int CBerthLinux_usable_cpus(void);

// pthread_setname_np is GNU too.
int CBerthLinux_pthread_setname(pthread_t thread, const char *name);

// The calling thread's scheduling: SCHED_BATCH (GNU) when `batch`, then `nice` through
// setpriority on its thread id (gettid is GNU), which applies to that thread alone on Linux.
// 0, or -1 with errno.
int CBerthLinux_lower_thread_priority(int batch, int nice);

// struct ucred (SO_PEERCRED) is GNU-only: the peer of a unix socket, field by field.
int CBerthLinux_peer_credentials(int fd, int *pid, unsigned int *uid, unsigned int *gid);

// Where the main program's relocation table (DT_RELA, DT_RELASZ) lies in memory, if it lies in a
// read-only segment and there are no text relocations; 0 on success, -1 when there is none to
// report. dl_iterate_phdr's headers (<link.h>) are not in Glibc's Swift module.
int CBerthLinux_main_relocations(uintptr_t *start, size_t *length);

extern const unsigned int CBerthLinux_SPLICE_F_NONBLOCK;
extern const unsigned int CBerthLinux_SPLICE_F_MORE;
extern const int CBerthLinux_F_SETPIPE_SZ;
extern const int CBerthLinux_F_GETPIPE_SZ;
extern const int CBerthLinux_SOCK_NONBLOCK;
extern const int CBerthLinux_SOCK_CLOEXEC;
extern const int CBerthLinux_O_NONBLOCK;
extern const int CBerthLinux_O_CLOEXEC;
// recvmsg(2): descriptors passed with SCM_RIGHTS arrive close-on-exec.
extern const int CBerthLinux_MSG_CMSG_CLOEXEC;
extern const int CBerthLinux_IP_PKTINFO;
extern const int CBerthLinux_IPV6_RECVPKTINFO;
extern const int CBerthLinux_IPV6_PKTINFO;
extern const int CBerthLinux_MSG_TRUNC;
extern const int CBerthLinux_MSG_CTRUNC;
extern const int CBerthLinux_SO_RCVBUFFORCE;

// struct in6_pktinfo is GNU-only in <netinet/in.h>: the same layout under our name
// (checked in shim.c), for IPV6_PKTINFO control messages.
struct CBerthLinux_in6_pktinfo {
    struct in6_addr ipi6_addr;
    unsigned int ipi6_ifindex;
};

// CMSG_* are macros.
struct cmsghdr *CBerthLinux_CMSG_FIRSTHDR(const struct msghdr *msg);
struct cmsghdr *CBerthLinux_CMSG_NXTHDR(struct msghdr *msg, struct cmsghdr *cmsg);
unsigned char *CBerthLinux_CMSG_DATA(struct cmsghdr *cmsg);
size_t CBerthLinux_CMSG_SPACE(size_t len);
size_t CBerthLinux_CMSG_LEN(size_t len);

#endif
