// _GNU_SOURCE comes from Package.swift's cSettings.
#include "CBerthLinux.h"
#include <fcntl.h>
#include <unistd.h>
#include <assert.h>

_Static_assert(sizeof(struct CBerthLinux_mmsghdr) == sizeof(struct mmsghdr), "mmsghdr layout");
_Static_assert(sizeof(struct CBerthLinux_in6_pktinfo) == sizeof(struct in6_pktinfo), "in6_pktinfo layout");
_Static_assert(offsetof(struct CBerthLinux_in6_pktinfo, ipi6_ifindex) == offsetof(struct in6_pktinfo, ipi6_ifindex),
               "in6_pktinfo layout");

ssize_t CBerthLinux_splice(int fd_in, int fd_out, size_t len, unsigned int flags) {
    return splice(fd_in, NULL, fd_out, NULL, len, flags);
}
int CBerthLinux_pipe2(int fds[2], int flags) { return pipe2(fds, flags); }
int CBerthLinux_accept4(int fd, struct sockaddr *addr, socklen_t *len, int flags) {
    return accept4(fd, addr, len, flags);
}
int CBerthLinux_recvmmsg(int fd, struct CBerthLinux_mmsghdr *msgs, unsigned int vlen, int flags) {
    return recvmmsg(fd, (struct mmsghdr *)msgs, vlen, flags, NULL);
}
int CBerthLinux_sendmmsg(int fd, struct CBerthLinux_mmsghdr *msgs, unsigned int vlen, int flags) {
    return sendmmsg(fd, (struct mmsghdr *)msgs, vlen, flags);
}

int CBerthLinux_pthread_setname(pthread_t thread, const char *name) { return pthread_setname_np(thread, name); }
#include <sched.h>
int CBerthLinux_usable_cpus(void) {
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof(set), &set) != 0) return 1;
    int n = CPU_COUNT(&set);
    return n > 0 ? n : 1;
}

const unsigned int CBerthLinux_SPLICE_F_NONBLOCK = SPLICE_F_NONBLOCK;
const unsigned int CBerthLinux_SPLICE_F_MORE = SPLICE_F_MORE;
const int CBerthLinux_F_SETPIPE_SZ = F_SETPIPE_SZ;
const int CBerthLinux_F_GETPIPE_SZ = F_GETPIPE_SZ;
const int CBerthLinux_SOCK_NONBLOCK = SOCK_NONBLOCK;
const int CBerthLinux_SOCK_CLOEXEC = SOCK_CLOEXEC;
const int CBerthLinux_O_NONBLOCK = O_NONBLOCK;
const int CBerthLinux_O_CLOEXEC = O_CLOEXEC;
const int CBerthLinux_IP_PKTINFO = IP_PKTINFO;
const int CBerthLinux_IPV6_RECVPKTINFO = IPV6_RECVPKTINFO;
const int CBerthLinux_IPV6_PKTINFO = IPV6_PKTINFO;
const int CBerthLinux_MSG_TRUNC = MSG_TRUNC;
const int CBerthLinux_MSG_CTRUNC = MSG_CTRUNC;
const int CBerthLinux_SO_RCVBUFFORCE = SO_RCVBUFFORCE;

struct cmsghdr *CBerthLinux_CMSG_FIRSTHDR(const struct msghdr *msg) { return CMSG_FIRSTHDR(msg); }
struct cmsghdr *CBerthLinux_CMSG_NXTHDR(struct msghdr *msg, struct cmsghdr *cmsg) {
    return CMSG_NXTHDR(msg, cmsg);
}
unsigned char *CBerthLinux_CMSG_DATA(struct cmsghdr *cmsg) { return CMSG_DATA(cmsg); }
size_t CBerthLinux_CMSG_SPACE(size_t len) { return CMSG_SPACE(len); }
size_t CBerthLinux_CMSG_LEN(size_t len) { return CMSG_LEN(len); }

int CBerthLinux_peer_credentials(int fd, int *pid, unsigned int *uid, unsigned int *gid) {
    struct ucred cred;
    socklen_t length = sizeof cred;
    int rc = getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &length);
    if (rc == 0) {
        *pid = cred.pid;
        *uid = cred.uid;
        *gid = cred.gid;
    }
    return rc;
}
