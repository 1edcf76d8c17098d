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
#include <sys/resource.h>
int CBerthLinux_lower_thread_priority(int batch, int nice) {
    if (batch) {
        struct sched_param param = {.sched_priority = 0};
        if (sched_setscheduler(0, SCHED_BATCH, &param) != 0) return -1;
    }
    return setpriority(PRIO_PROCESS, (id_t)gettid(), nice);
}

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
const int CBerthLinux_MSG_CMSG_CLOEXEC = MSG_CMSG_CLOEXEC;
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

#include <link.h>
struct CBerthLinux_found { uintptr_t start; size_t length; };

// dl_iterate_phdr reports the main program first: look at it and stop.
static int CBerthLinux_main_object(struct dl_phdr_info *info, size_t size, void *data) {
    (void)size;
    struct CBerthLinux_found *found = data;
    const ElfW(Dyn) *dyn = NULL;
    for (int i = 0; i < info->dlpi_phnum; i++) {
        if (info->dlpi_phdr[i].p_type == PT_DYNAMIC) dyn = (const void *)(info->dlpi_addr + info->dlpi_phdr[i].p_vaddr);
    }
    if (dyn == NULL) return 1;
    uintptr_t rela = 0;
    size_t length = 0;
    for (; dyn->d_tag != DT_NULL; dyn++) {
        if (dyn->d_tag == DT_RELA) rela = dyn->d_un.d_ptr;
        if (dyn->d_tag == DT_RELASZ) length = dyn->d_un.d_val;
        if (dyn->d_tag == DT_TEXTREL) return 1;
        if (dyn->d_tag == DT_FLAGS && (dyn->d_un.d_val & DF_TEXTREL)) return 1;
    }
    if (rela == 0 || length == 0) return 1;
    // ld.so rewrites d_ptr to the loaded address where the dynamic section is writable; elsewhere
    // it stays an offset from the load address.
    if (rela < info->dlpi_addr) rela += info->dlpi_addr;
    for (int i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *p = &info->dlpi_phdr[i];
        uintptr_t begin = info->dlpi_addr + p->p_vaddr;
        if (p->p_type == PT_LOAD && !(p->p_flags & PF_W) && rela >= begin && rela + length <= begin + p->p_filesz) {
            found->start = rela;
            found->length = length;
        }
    }
    return 1;
}

int CBerthLinux_main_relocations(uintptr_t *start, size_t *length) {
    struct CBerthLinux_found found = {0, 0};
    dl_iterate_phdr(CBerthLinux_main_object, &found);
    if (found.length == 0) return -1;
    *start = found.start;
    *length = found.length;
    return 0;
}
