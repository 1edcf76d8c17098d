// An experiment, not part of berth or of make bench: the least an io_uring TCP relay can be, to
// measure what io_uring would buy berth in CPU per small request (bench/RESULTS.md, "An io_uring
// relay as the bound"). One thread per CPU, each with its own SO_REUSEPORT listener and its own
// ring (IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN unless URING_NO_DEFER is set);
// multishot accept, an asynchronous connect, then per direction: receive into a 16 KiB buffer,
// send it all, receive again; EOF or an error half-closes the other side. No epoll, no timeouts,
// no limits, TCP only (a UDP mapping binds its port and forwards nothing: berth-bench waits for
// the port of every mapping it starts a peer for). Needs liburing-dev (Debian 12: 2.3) and Linux
// 6.1 or later:
//   cc -O2 -o /tmp/uring-relay bench/uring-relay.c -luring -lpthread
//   bench/.build/release/berth-bench --figures tcp-rr,tcp-connrate
//     --targets direct,berth,haproxy,uring
//     --peer 'uring=/tmp/uring-relay {host_ip} {host_port} {target_ip} {target_port} {proto}'
#include <netdb.h>
#include <liburing.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

enum { OP_ACCEPT = 1, OP_CONNECT, OP_RECV, OP_SEND };

struct pair;
struct dir {
    struct pair *pair;
    int from, to;
    int off, len;
    char buf[16384];
};
struct pair {
    struct dir up, down;
    int client, backend, refs;
};

static struct sockaddr_storage host, target;
static socklen_t host_len, target_len;
static int defer = 1;

// A numeric address and port (no DNS), or exit 2.
static socklen_t make_address(const char *ip, const char *port, struct sockaddr_storage *out) {
    struct addrinfo hints = {.ai_flags = AI_NUMERICHOST | AI_NUMERICSERV,
                             .ai_socktype = SOCK_STREAM};
    struct addrinfo *found;
    if (getaddrinfo(ip, port, &hints, &found) != 0) {
        fprintf(stderr, "uring-relay: bad address %s port %s\n", ip, port);
        exit(2);
    }
    socklen_t length = found->ai_addrlen;
    memcpy(out, found->ai_addr, length);
    freeaddrinfo(found);
    return length;
}

static struct io_uring_sqe *sqe_get(struct io_uring *ring) {
    struct io_uring_sqe *s = io_uring_get_sqe(ring);
    if (!s) {
        io_uring_submit(ring);
        s = io_uring_get_sqe(ring);
    }
    return s;
}

static void *tag(void *p, int op) { return (void *)((unsigned long)p | (unsigned long)op); }

static void post_recv(struct io_uring *ring, struct dir *d) {
    struct io_uring_sqe *s = sqe_get(ring);
    io_uring_prep_recv(s, d->from, d->buf, sizeof d->buf, 0);
    io_uring_sqe_set_data(s, tag(d, OP_RECV));
}

static void post_send(struct io_uring *ring, struct dir *d) {
    struct io_uring_sqe *s = sqe_get(ring);
    io_uring_prep_send(s, d->to, d->buf + d->off, d->len - d->off, MSG_NOSIGNAL);
    io_uring_sqe_set_data(s, tag(d, OP_SEND));
}

static void release(struct pair *p) {
    if (--p->refs == 0) {
        close(p->client);
        close(p->backend);
        free(p);
    }
}

static void direction_end(struct dir *d) {
    shutdown(d->to, SHUT_WR);
    release(d->pair);
}

static void *loop(void *unused) {
    (void)unused;
    struct io_uring ring;
    struct io_uring_params params = {0};
    if (defer) params.flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN;
    if (io_uring_queue_init_params(4096, &ring, &params) != 0) {
        perror("uring-relay: io_uring_queue_init");
        exit(1);
    }
    int listener = socket(host.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    setsockopt(listener, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
    if (bind(listener, (struct sockaddr *)&host, host_len) != 0 || listen(listener, 4096) != 0) {
        perror("uring-relay: bind");
        exit(1);
    }
    struct io_uring_sqe *s = sqe_get(&ring);
    io_uring_prep_multishot_accept(s, listener, NULL, NULL, SOCK_CLOEXEC);
    io_uring_sqe_set_data(s, tag(NULL, OP_ACCEPT));
    for (;;) {
        io_uring_submit_and_wait(&ring, 1);
        struct io_uring_cqe *cqe;
        unsigned head, seen = 0;
        io_uring_for_each_cqe(&ring, head, cqe) {
            seen++;
            unsigned long data = (unsigned long)io_uring_cqe_get_data(cqe);
            int op = (int)(data & 7);
            void *p = (void *)(data & ~7UL);
            int res = cqe->res;
            if (op == OP_ACCEPT) {
                if (!(cqe->flags & IORING_CQE_F_MORE)) {
                    s = sqe_get(&ring);
                    io_uring_prep_multishot_accept(s, listener, NULL, NULL, SOCK_CLOEXEC);
                    io_uring_sqe_set_data(s, tag(NULL, OP_ACCEPT));
                }
                if (res < 0) continue;
                // calloc aligns to 16: the low 3 bits of a pointer are free for the tag's op.
                struct pair *pr = calloc(1, sizeof *pr);
                if (!pr) {
                    close(res);
                    continue;
                }
                pr->client = res;
                pr->backend = socket(target.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
                setsockopt(pr->backend, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                setsockopt(pr->client, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                pr->up = (struct dir){.pair = pr, .from = pr->client, .to = pr->backend};
                pr->down = (struct dir){.pair = pr, .from = pr->backend, .to = pr->client};
                s = sqe_get(&ring);
                io_uring_prep_connect(s, pr->backend, (struct sockaddr *)&target, target_len);
                io_uring_sqe_set_data(s, tag(pr, OP_CONNECT));
            } else if (op == OP_CONNECT) {
                struct pair *pr = p;
                if (res < 0) {
                    close(pr->client);
                    close(pr->backend);
                    free(pr);
                    continue;
                }
                pr->refs = 2;
                post_recv(&ring, &pr->up);
                post_recv(&ring, &pr->down);
            } else if (op == OP_RECV) {
                struct dir *d = p;
                if (res <= 0) {
                    direction_end(d);
                    continue;
                }
                d->off = 0;
                d->len = res;
                post_send(&ring, d);
            } else if (op == OP_SEND) {
                struct dir *d = p;
                if (res < 0) {
                    direction_end(d);
                    continue;
                }
                d->off += res;
                if (d->off < d->len) post_send(&ring, d);
                else post_recv(&ring, d);
            }
        }
        io_uring_cq_advance(&ring, seen);
    }
    return NULL;
}

int main(int argc, char **argv) {
    if (argc != 5 && argc != 6) {
        fprintf(stderr, "usage: uring-relay HOST_IP HOST_PORT TARGET_IP TARGET_PORT [tcp|udp]\n");
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    if (getenv("URING_NO_DEFER")) defer = 0;
    host_len = make_address(argv[1], argv[2], &host);
    target_len = make_address(argv[3], argv[4], &target);
    if (argc == 6 && strcmp(argv[5], "udp") == 0) {
        // berth-bench starts a peer for its UDP mappings too and waits for the port to be bound:
        // bind it and forward nothing (use this relay for TCP figures only).
        int u = socket(host.ss_family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        if (bind(u, (struct sockaddr *)&host, host_len) != 0) return 1;
        for (;;) pause();
    }
    const char *wanted = getenv("URING_THREADS");
    int threads = wanted ? atoi(wanted) : (int)sysconf(_SC_NPROCESSORS_ONLN);
    pthread_t t;
    for (int i = 1; i < threads; i++) pthread_create(&t, NULL, loop, NULL);
    loop(NULL);
}
