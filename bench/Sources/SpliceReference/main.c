// The least a splice relay can be, as a yardstick for berth's TCP path: per connection, two
// threads, each moving one direction with blocking splice(2) through its own 1 MiB pipe. No
// event loop, no timeouts, no pipe pool, TCP only. Usage: splice-reference HOST_IP HOST_PORT
// TARGET_IP TARGET_PORT. bench/ runs it as the `splice-reference` target; not part of berth.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

struct direction {
    int from, to;
};

static struct sockaddr_storage target;
static socklen_t target_length;

static socklen_t make_address(const char *ip, const char *port, struct sockaddr_storage *out) {
    memset(out, 0, sizeof *out);
    struct sockaddr_in *v4 = (struct sockaddr_in *)out;
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)out;
    if (inet_pton(AF_INET, ip, &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
        v4->sin_port = htons((unsigned short)atoi(port));
        return sizeof *v4;
    }
    if (inet_pton(AF_INET6, ip, &v6->sin6_addr) == 1) {
        v6->sin6_family = AF_INET6;
        v6->sin6_port = htons((unsigned short)atoi(port));
        return sizeof *v6;
    }
    fprintf(stderr, "splice-reference: bad address %s\n", ip);
    exit(2);
}

// One direction until EOF or an error; then the half-close goes on, and the last one out
// of a connection closes both sockets.
static void *pump(void *argument) {
    struct direction *d = argument;
    int pipe_fds[2];
    if (pipe2(pipe_fds, O_CLOEXEC) == 0) {
        fcntl(pipe_fds[1], F_SETPIPE_SZ, 1 << 20);
        for (;;) {
            ssize_t in = splice(d->from, NULL, pipe_fds[1], NULL, 1 << 20, SPLICE_F_MOVE);
            if (in <= 0) break;
            while (in > 0) {
                ssize_t out = splice(pipe_fds[0], NULL, d->to, NULL, (size_t)in, SPLICE_F_MOVE);
                if (out <= 0) goto done;
                in -= out;
            }
        }
    done:
        close(pipe_fds[0]);
        close(pipe_fds[1]);
    }
    shutdown(d->to, SHUT_WR);
    shutdown(d->from, SHUT_RD);
    return NULL;
}

static void *connection(void *argument) {
    int client = (int)(long)argument;
    int backend = socket(target.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(backend, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    setsockopt(client, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (backend >= 0 && connect(backend, (struct sockaddr *)&target, target_length) == 0) {
        struct direction up = {client, backend}, down = {backend, client};
        pthread_t other;
        if (pthread_create(&other, NULL, pump, &down) == 0) {
            pump(&up);
            pthread_join(other, NULL);
        }
    }
    if (backend >= 0) close(backend);
    close(client);
    return NULL;
}

int main(int argc, char **argv) {
    if (argc != 5) {
        fprintf(stderr, "usage: splice-reference HOST_IP HOST_PORT TARGET_IP TARGET_PORT\n");
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    struct sockaddr_storage host;
    socklen_t host_length = make_address(argv[1], argv[2], &host);
    target_length = make_address(argv[3], argv[4], &target);
    int listener = socket(host.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(listener, (struct sockaddr *)&host, host_length) != 0 || listen(listener, 4096) != 0) {
        perror("splice-reference: bind");
        return 1;
    }
    pthread_attr_t attributes;
    pthread_attr_init(&attributes);
    pthread_attr_setstacksize(&attributes, 64 << 10);
    pthread_attr_setdetachstate(&attributes, PTHREAD_CREATE_DETACHED);
    for (;;) {
        int client = accept4(listener, NULL, NULL, SOCK_CLOEXEC);
        if (client < 0) continue;
        pthread_t thread;
        if (pthread_create(&thread, &attributes, connection, (void *)(long)client) != 0) close(client);
    }
}
