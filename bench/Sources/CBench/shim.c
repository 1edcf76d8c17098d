// _GNU_SOURCE comes from Package.swift's cSettings.
#include "CBench.h"
#include <fcntl.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <unistd.h>

_Static_assert(sizeof(struct CBench_mmsghdr) == sizeof(struct mmsghdr), "mmsghdr layout");

int CBench_recvmmsg(int fd, struct CBench_mmsghdr *msgs, unsigned int vlen, int flags) {
    return recvmmsg(fd, (struct mmsghdr *)msgs, vlen, flags, NULL);
}
int CBench_sendmmsg(int fd, struct CBench_mmsghdr *msgs, unsigned int vlen, int flags) {
    return sendmmsg(fd, (struct mmsghdr *)msgs, vlen, flags);
}
int CBench_setns(int fd, int nstype) { return setns(fd, nstype); }
const int CBench_CLONE_NEWNET = CLONE_NEWNET;
int CBench_spawn_closefrom(posix_spawn_file_actions_t *actions, int from) {
    return posix_spawn_file_actions_addclosefrom_np(actions, from);
}
int CBench_pipe2(int fds[2], int flags) { return pipe2(fds, flags); }
const int CBench_O_CLOEXEC = O_CLOEXEC;
const int CBench_O_NONBLOCK = O_NONBLOCK;
const int CBench_SOCK_NONBLOCK = SOCK_NONBLOCK;
const int CBench_SOCK_CLOEXEC = SOCK_CLOEXEC;
const int CBench_MSG_WAITFORONE = MSG_WAITFORONE;

#include <errno.h>
#include <arpa/inet.h>
#include <string.h>
#include <sys/socket.h>
#include <linux/netlink.h>
#include <linux/sock_diag.h>
#include <linux/inet_diag.h>

int CBench_bound_ports(int family, int protocol, unsigned int states, uint16_t *ports, int max) {
    int fd = socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_SOCK_DIAG);
    if (fd < 0) return -1;
    struct {
        struct nlmsghdr nlh;
        struct inet_diag_req_v2 req;
    } request;
    memset(&request, 0, sizeof request);
    request.nlh.nlmsg_len = sizeof request;
    request.nlh.nlmsg_type = SOCK_DIAG_BY_FAMILY;
    request.nlh.nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
    request.req.sdiag_family = (unsigned char)family;
    request.req.sdiag_protocol = (unsigned char)protocol;
    request.req.idiag_states = states;
    struct sockaddr_nl kernel = {.nl_family = AF_NETLINK};
    if (sendto(fd, &request, sizeof request, 0, (struct sockaddr *)&kernel, sizeof kernel) < 0) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    static __thread char buffer[1 << 16];
    int count = 0;
    for (;;) {
        ssize_t n = recv(fd, buffer, sizeof buffer, 0);
        if (n < 0) {
            if (errno == EINTR) continue;
            int e = errno;
            close(fd);
            errno = e;
            return -1;
        }
        for (struct nlmsghdr *h = (struct nlmsghdr *)buffer; NLMSG_OK(h, n); h = NLMSG_NEXT(h, n)) {
            if (h->nlmsg_type == NLMSG_DONE) {
                close(fd);
                return count;
            }
            if (h->nlmsg_type == NLMSG_ERROR) {
                close(fd);
                errno = EPROTO;
                return -1;
            }
            struct inet_diag_msg *m = NLMSG_DATA(h);
            if (count < max) ports[count] = ntohs(m->id.idiag_sport);
            count++;
        }
    }
}

int CBench_pin(pid_t tid, int cpu) {
    cpu_set_t set;
    CPU_ZERO(&set);
    if (cpu >= 0) {
        CPU_SET(cpu, &set);
    } else {
        for (int i = 0; i < CPU_SETSIZE; i++) CPU_SET(i, &set);
    }
    return sched_setaffinity(tid, sizeof set, &set);
}
int CBench_last_cpu(void) {
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) != 0) return -1;
    for (int i = CPU_SETSIZE - 1; i >= 0; i--) {
        if (CPU_ISSET(i, &set)) return i;
    }
    return -1;
}

int CBench_terminal_columns(int fd) {
    struct winsize w;
    return ioctl(fd, TIOCGWINSZ, &w) == 0 ? w.ws_col : 0;
}

int CBench_accept_nonblocking(int listener) {
    return accept4(listener, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
}
