// What berth-proxy (Embedded Swift: no Glibc module there) calls in libc, and the few macros and
// variadic calls Swift cannot use as they are, as one-line static inline wrappers. No logic here.
#ifndef BERTH_SHIM_H
#define BERTH_SHIM_H

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

static inline int shim_errno(void) { return errno; }

/// SIGINT and SIGTERM: what stops a userland proxy.
static inline sigset_t shim_stop_set(void) {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    return set;
}

/// Blocks them and returns a signalfd that reports them (close-on-exec).
static inline int shim_stop_signals(void) {
    sigset_t set = shim_stop_set();
    sigprocmask(SIG_BLOCK, &set, NULL);
    return signalfd(-1, &set, SFD_CLOEXEC);
}

/// Unblocks them again (before exec: berth blocks what it needs itself).
static inline void shim_unblock_stop_signals(void) {
    sigset_t set = shim_stop_set();
    sigprocmask(SIG_UNBLOCK, &set, NULL);
}

static inline int shim_socket(int family, int type) { return socket(family, type | SOCK_CLOEXEC, 0); }

static inline int shim_setsockopt_int(int fd, int level, int name, int value) {
    return setsockopt(fd, level, name, &value, sizeof value);
}

static inline int shim_getsockopt_int(int fd, int level, int name) {
    int value = -1;
    socklen_t size = sizeof value;
    return getsockopt(fd, level, name, &value, &size) == 0 ? value : -1;
}

/// Binds `fd` to the textual address `ip` (IPv4 or IPv6) and `port`; -1 with errno on failure,
/// -2 when the text is no address.
static inline int shim_bind(int fd, const char *ip, int v6, unsigned port) {
    if (v6) {
        struct sockaddr_in6 a;
        memset(&a, 0, sizeof a);
        a.sin6_family = AF_INET6;
        a.sin6_port = htons((unsigned short)port);
        if (inet_pton(AF_INET6, ip, &a.sin6_addr) != 1) return -2;
        return bind(fd, (struct sockaddr *)&a, sizeof a);
    }
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons((unsigned short)port);
    if (inet_pton(AF_INET, ip, &a.sin_addr) != 1) return -2;
    return bind(fd, (struct sockaddr *)&a, sizeof a);
}

/// Connects to the unix socket at `path`, giving up after `seconds` (connect, send and recv).
static inline int shim_connect_unix(const char *path, int seconds) {
    struct sockaddr_un a;
    memset(&a, 0, sizeof a);
    a.sun_family = AF_UNIX;
    if (strlen(path) >= sizeof a.sun_path) return -1;
    strcpy(a.sun_path, path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    struct timeval tv = {seconds, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    while (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        if (errno == EINTR) continue;
        int saved = errno;
        close(fd);
        errno = saved;
        return -1;
    }
    return fd;
}

/// sendmsg(2) of `count` bytes with descriptor `passed` attached (SCM_RIGHTS).
static inline ssize_t shim_send_with_descriptor(int fd, const void *bytes, size_t count, int passed) {
    char control[CMSG_SPACE(sizeof(int))];
    memset(control, 0, sizeof control);
    struct iovec vector = {(void *)bytes, count};
    struct msghdr message;
    memset(&message, 0, sizeof message);
    message.msg_iov = &vector;
    message.msg_iovlen = 1;
    message.msg_control = control;
    message.msg_controllen = sizeof control;
    struct cmsghdr *header = CMSG_FIRSTHDR(&message);
    header->cmsg_level = SOL_SOCKET;
    header->cmsg_type = SCM_RIGHTS;
    header->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(header), &passed, sizeof(int));
    ssize_t n;
    do { n = sendmsg(fd, &message, MSG_NOSIGNAL); } while (n < 0 && errno == EINTR);
    return n;
}

/// Clears FD_CLOEXEC, so `fd` survives exec.
static inline int shim_keep_on_exec(int fd) { return fcntl(fd, F_SETFD, 0); }

/// What kind of file `fd` is (S_IFMT bits), 0 when it is not open.
static inline unsigned shim_file_type(int fd) {
    struct stat info;
    return fstat(fd, &info) == 0 ? (unsigned)(info.st_mode & S_IFMT) : 0;
}

static inline unsigned shim_fifo_type(void) { return S_IFIFO; }
static inline unsigned shim_socket_type(void) { return S_IFSOCK; }

/// Monotonic milliseconds.
static inline long long shim_now_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (long long)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

#endif
