/*
 * bare_server.c - the physical ceiling of this machine for presence-gateway's benchmarks
 * (SPEC §5): a server that does only the system calls, with pre-encoded frames and no
 * protocol logic beyond what the load generator needs to drive it the same way it drives the
 * gateway.
 *
 * Built twice:
 *  - bare-fanout: accepts WebSocket upgrades on /socket.io/ (accept4, SHA-1 accept key, one
 *    send() of "101" + the Engine.IO open packet), answers the client's Socket.IO CONNECT with
 *    a pre-encoded CONNECT ack, and fans a pre-encoded 190 B `user:status` frame out to the
 *    other members of the connection's room, one send() per delivery: when the CONNECT
 *    arrives (online), when the connection closes (offline), and, for the throughput mode of
 *    the load generator, on every further text frame from the client. The room and the user
 *    id come from the query string (room=, uid=, name=), which the gateway ignores.
 *  - bare-handshake (BARE_HANDSHAKE_ONLY): the same handshake and CONNECT ack, no rooms, no
 *    frames kept: the floor of a connect.
 *
 * One epoll thread, level-triggered, no queueing: a send() that would block is counted as a
 * short write and dropped (a bench run with short writes is not a valid ceiling: the report
 * says so). Per connection it keeps a 32 B struct, and for bare-fanout the two frames (2 x
 * 190 B); a read buffer exists only while a handshake head or a partial frame is pending.
 *
 * Usage: bare-fanout [--host 127.0.0.1] [--port 9100] [--quiet]
 * Prints "READY http://HOST:PORT" when listening; on SIGINT/SIGTERM prints its counters.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/sha.h>

#define HEAD_MAX 4096
#define FRAME_MAX 512
#define RX_MAX 1024

enum conn_state { C_FREE = 0, C_HEAD, C_OPEN, C_READY };

struct frame {
    uint16_t len;
    uint8_t bytes[FRAME_MAX];
};

struct conn {
    uint8_t state;
    uint8_t online; /* the status frame sent last (msg mode toggles it) */
    uint16_t buf_len;
    uint32_t room; /* index into rooms, UINT32_MAX when none */
    uint32_t slot; /* index in the room's member array */
    uint8_t *buf;  /* handshake head or a partial client frame, else NULL */
#ifndef BARE_HANDSHAKE_ONLY
    struct frame *status; /* [0] offline, [1] online, pre-encoded at the handshake */
#endif
};

struct room {
    int *members;
    uint32_t n, cap;
};

static struct conn *conns; /* indexed by fd */
static size_t conns_cap;
#ifndef BARE_HANDSHAKE_ONLY
static struct room *rooms;
static size_t rooms_cap;
#endif

static struct {
    unsigned long long accepted, handshakes, connects, closes, deliveries, short_writes,
        send_errors, bad_requests, client_msgs;
} st;

static const char open_packet[] = "0{\"sid\":\"AAAAAAAAAAAAAAAAAAAA\",\"upgrades\":[],"
                                  "\"pingInterval\":25000,\"pingTimeout\":20000,"
                                  "\"maxPayload\":1000000}";
static const char connect_ack[] = "40{\"sid\":\"BBBBBBBBBBBBBBBBBBBB\"}";
static uint8_t ack_frame[64];
static size_t ack_frame_len;

/* Writes an unmasked server text frame header for len bytes. Returns the header length. */
static size_t ws_header(uint8_t *h, size_t len)
{
    h[0] = 0x81;
    if (len < 126) {
        h[1] = (uint8_t)len;
        return 2;
    }
    h[1] = 126;
    h[2] = (uint8_t)(len >> 8);
    h[3] = (uint8_t)len;
    return 4;
}

static void fd_close(int fd);

static bool send_all(int fd, const void *p, size_t len)
{
    ssize_t n = send(fd, p, len, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n == (ssize_t)len)
        return true;
    /* A full socket buffer invalidates a ceiling run; a peer already gone does not. */
    if (n >= 0 || errno == EAGAIN)
        st.short_writes++;
    else
        st.send_errors++;
    return false;
}

#ifndef BARE_HANDSHAKE_ONLY
static void room_join(int fd, uint32_t r)
{
    if (r >= rooms_cap) {
        size_t ncap = rooms_cap ? rooms_cap : 1024;
        while (ncap <= r)
            ncap *= 2;
        rooms = realloc(rooms, ncap * sizeof(*rooms));
        if (rooms == NULL)
            abort();
        memset(rooms + rooms_cap, 0, (ncap - rooms_cap) * sizeof(*rooms));
        rooms_cap = ncap;
    }
    struct room *rm = &rooms[r];
    if (rm->n == rm->cap) {
        rm->cap = rm->cap ? rm->cap * 2 : 16;
        rm->members = realloc(rm->members, rm->cap * sizeof(int));
        if (rm->members == NULL)
            abort();
    }
    conns[fd].room = r;
    conns[fd].slot = rm->n;
    rm->members[rm->n++] = fd;
}

static void room_leave(int fd)
{
    struct conn *c = &conns[fd];
    if (c->room == UINT32_MAX)
        return;
    struct room *rm = &rooms[c->room];
    int last = rm->members[--rm->n];
    rm->members[c->slot] = last;
    conns[last].slot = c->slot;
    c->room = UINT32_MAX;
}

/* One send() per delivery, to every READY member but the sender. */
static void fanout(int fd, int online)
{
    struct conn *c = &conns[fd];
    if (c->room == UINT32_MAX || c->status == NULL)
        return;
    const struct frame *f = &c->status[online];
    struct room *rm = &rooms[c->room];
    for (uint32_t i = 0; i < rm->n; i++) {
        int m = rm->members[i];
        if (m == fd || conns[m].state != C_READY)
            continue;
        if (send_all(m, f->bytes, f->len))
            st.deliveries++;
    }
    c->online = (uint8_t)online;
}

static void encode_status(struct frame *f, const char *uid, const char *name, bool online)
{
    char json[FRAME_MAX];
    int n = snprintf(json, sizeof(json),
                     "42[\"user:status\",{\"userId\":\"%s\",\"username\":\"%s\",\"isOnline\":%s,"
                     "\"isAnonymous\":false,\"status\":\"%s\",\"lastActiveAt\":\"2026-11-28T08:"
                     "48:19.123Z\",\"lastSeen\":%s}]",
                     uid, name, online ? "true" : "false", online ? "online" : "offline",
                     online ? "null" : "\"2026-11-28T08:48:19.123Z\"");
    if (n < 0 || (size_t)n + 4 > FRAME_MAX)
        n = 0;
    size_t h = ws_header(f->bytes, (size_t)n);
    memcpy(f->bytes + h, json, (size_t)n);
    f->len = (uint16_t)(h + (size_t)n);
}
#endif

#ifndef BARE_HANDSHAKE_ONLY
/* Copies the value of query parameter key (up to '&', ' ') into out. */
static void query_param(const char *head, const char *key, char *out, size_t cap)
{
    out[0] = '\0';
    const char *line_end = strstr(head, "\r\n");
    size_t klen = strlen(key);
    for (const char *p = head; p && p < line_end; p = strpbrk(p + 1, "?&")) {
        if ((*p == '?' || *p == '&') && strncmp(p + 1, key, klen) == 0 && p[1 + klen] == '=') {
            const char *v = p + 2 + klen;
            size_t n = strcspn(v, "& \r");
            if (n >= cap)
                n = cap - 1;
            memcpy(out, v, n);
            out[n] = '\0';
            return;
        }
    }
}

#endif

static const char *header_value(const char *head, const char *name, size_t *len)
{
    size_t nl = strlen(name);
    for (const char *p = strstr(head, "\r\n"); p != NULL; p = strstr(p + 2, "\r\n")) {
        const char *h = p + 2;
        if (strncasecmp(h, name, nl) == 0 && h[nl] == ':') {
            const char *v = h + nl + 1;
            while (*v == ' ')
                v++;
            *len = strcspn(v, "\r");
            return v;
        }
    }
    return NULL;
}

static void handshake(int fd)
{
    struct conn *c = &conns[fd];
    char *head = (char *)c->buf;
    size_t klen;
    const char *key = header_value(head, "Sec-WebSocket-Key", &klen);
    if (key == NULL || klen > 64 || strncmp(head, "GET ", 4) != 0) {
        static const char bad[] = "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n"
                                  "Connection: close\r\n\r\n";
        send_all(fd, bad, sizeof(bad) - 1);
        st.bad_requests++;
        fd_close(fd);
        return;
    }
    char cat[128];
    memcpy(cat, key, klen);
    memcpy(cat + klen, "258EAFA5-E914-47DA-95CA-C5AB0DC85B11", 36);
    unsigned char sha[SHA_DIGEST_LENGTH];
    SHA1((const unsigned char *)cat, klen + 36, sha);
    char accept[32];
    EVP_EncodeBlock((unsigned char *)accept, sha, SHA_DIGEST_LENGTH);

#ifndef BARE_HANDSHAKE_ONLY
    char room[16], uid[32], name[64];
    query_param(head, "room", room, sizeof(room));
    query_param(head, "uid", uid, sizeof(uid));
    query_param(head, "name", name, sizeof(name));
    if (uid[0] == '\0')
        snprintf(uid, sizeof(uid), "%024x", fd);
    if (name[0] == '\0')
        snprintf(name, sizeof(name), "user%d", fd);
    if (room[0] != '\0') {
        c->status = malloc(2 * sizeof(struct frame));
        if (c->status == NULL)
            abort();
        encode_status(&c->status[0], uid, name, false);
        encode_status(&c->status[1], uid, name, true);
        room_join(fd, (uint32_t)strtoul(room, NULL, 10));
    }
#endif
    free(c->buf);
    c->buf = NULL;
    c->buf_len = 0;

    char out[512];
    int n = snprintf(out, sizeof(out),
                     "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                     "Connection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n",
                     accept);
    n += (int)ws_header((uint8_t *)out + n, sizeof(open_packet) - 1);
    memcpy(out + n, open_packet, sizeof(open_packet) - 1);
    n += (int)sizeof(open_packet) - 1;
    c->state = C_OPEN;
    st.handshakes++;
    if (!send_all(fd, out, (size_t)n))
        fd_close(fd);
}

/* Handles one complete client frame (payload unmasked in place). */
static void client_frame(int fd, int opcode, uint8_t *payload, size_t len)
{
    struct conn *c = &conns[fd];
    if (opcode == 8) {
        fd_close(fd);
        return;
    }
    if (opcode != 1)
        return;
    if (c->state == C_OPEN && len >= 2 && payload[0] == '4' && payload[1] == '0') {
        send_all(fd, ack_frame, ack_frame_len);
        c->state = C_READY;
        st.connects++;
#ifndef BARE_HANDSHAKE_ONLY
        fanout(fd, 1);
#endif
        return;
    }
    if (c->state == C_READY && len >= 2 && payload[0] == '4' && payload[1] == '2') {
        st.client_msgs++;
#ifndef BARE_HANDSHAKE_ONLY
        fanout(fd, !c->online);
#endif
    }
}

/* Parses as many complete masked frames as data holds. Returns the bytes consumed, or -1
 * after closing the connection. */
static ssize_t parse_frames(int fd, uint8_t *data, size_t len)
{
    size_t pos = 0;
    while (len - pos >= 6) {
        uint8_t *h = data + pos;
        int opcode = h[0] & 0x0f;
        size_t plen = h[1] & 0x7f, hl = 2;
        if (!(h[1] & 0x80)) {
            fd_close(fd); /* client frames must be masked */
            return -1;
        }
        if (plen == 126) {
            if (len - pos < 8)
                break;
            plen = (size_t)h[2] << 8 | h[3];
            hl = 4;
        } else if (plen == 127) {
            fd_close(fd); /* no client of ours sends 64 KiB frames */
            return -1;
        }
        if (len - pos < hl + 4 + plen)
            break;
        uint8_t *mask = h + hl, *p = h + hl + 4;
        for (size_t i = 0; i < plen; i++)
            p[i] ^= mask[i & 3];
        pos += hl + 4 + plen;
        client_frame(fd, opcode, p, plen);
        if (conns[fd].state == C_FREE)
            return -1;
    }
    return (ssize_t)pos;
}

static void on_readable(int fd)
{
    struct conn *c = &conns[fd];
    if (c->state == C_HEAD) {
        if (c->buf == NULL) {
            c->buf = malloc(HEAD_MAX + 1);
            if (c->buf == NULL)
                abort();
        }
        ssize_t n = recv(fd, c->buf + c->buf_len, HEAD_MAX - c->buf_len, 0);
        if (n <= 0) {
            if (n < 0 && errno == EAGAIN)
                return;
            fd_close(fd);
            return;
        }
        c->buf_len = (uint16_t)(c->buf_len + n);
        c->buf[c->buf_len] = '\0';
        char *end = strstr((char *)c->buf, "\r\n\r\n");
        if (end == NULL) {
            if (c->buf_len >= HEAD_MAX) {
                st.bad_requests++;
                fd_close(fd);
            }
            return;
        }
        /* A client of ours sends nothing after the head before it reads the open packet. */
        handshake(fd);
        return;
    }

    uint8_t rx[65536];
    size_t have = 0;
    if (c->buf_len > 0) {
        memcpy(rx, c->buf, c->buf_len);
        have = c->buf_len;
        free(c->buf);
        c->buf = NULL;
        c->buf_len = 0;
    }
    for (;;) {
        size_t want = sizeof(rx) - have;
        ssize_t n = recv(fd, rx + have, want, 0);
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
            fd_close(fd);
            return;
        }
        if (n < 0)
            break;
        have += (size_t)n;
        ssize_t used = parse_frames(fd, rx, have);
        if (used < 0)
            return;
        memmove(rx, rx + used, have - (size_t)used);
        have -= (size_t)used;
        if (have >= RX_MAX) {
            fd_close(fd);
            return;
        }
        /* A short read drained the socket; level-triggered epoll reports the rest. */
        if ((size_t)n < want)
            break;
    }
    if (have > 0) {
        c->buf = malloc(RX_MAX);
        if (c->buf == NULL)
            abort();
        memcpy(c->buf, rx, have);
        c->buf_len = (uint16_t)have;
    }
}

static void fd_close(int fd)
{
    struct conn *c = &conns[fd];
#ifndef BARE_HANDSHAKE_ONLY
    if (c->state == C_READY)
        fanout(fd, 0);
    room_leave(fd);
    free(c->status);
    c->status = NULL;
#endif
    free(c->buf);
    c->buf = NULL;
    c->buf_len = 0;
    c->state = C_FREE;
    st.closes++;
    close(fd); /* also removes it from the epoll set */
}

static void print_stats(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    fprintf(stderr,
            "bare: accepted %llu handshakes %llu connects %llu closes %llu deliveries %llu "
            "client_msgs %llu short_writes %llu send_errors %llu bad_requests %llu cpu_user_s %.3f "
            "cpu_sys_s %.3f "
            "maxrss_kib %ld\n",
            st.accepted, st.handshakes, st.connects, st.closes, st.deliveries, st.client_msgs,
            st.short_writes, st.send_errors, st.bad_requests,
            (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6,
            (double)ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6, ru.ru_maxrss);
}

int main(int argc, char **argv)
{
    const char *host = "127.0.0.1";
    int port = 9100;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--host") == 0 && i + 1 < argc)
            host = argv[++i];
        else if (strcmp(argv[i], "--port") == 0 && i + 1 < argc)
            port = atoi(argv[++i]);
        else {
            fprintf(stderr, "usage: %s [--host ADDR] [--port N]\n", argv[0]);
            return 2;
        }
    }

    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
    conns_cap = (size_t)rl.rlim_cur;
    conns = calloc(conns_cap, sizeof(*conns));
    if (conns == NULL)
        abort();

    ack_frame_len = ws_header(ack_frame, sizeof(connect_ack) - 1);
    memcpy(ack_frame + ack_frame_len, connect_ack, sizeof(connect_ack) - 1);
    ack_frame_len += sizeof(connect_ack) - 1;

    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    if (inet_pton(AF_INET, host, &sa.sin_addr) != 1 ||
        bind(lfd, (struct sockaddr *)&sa, sizeof(sa)) != 0 || listen(lfd, 4096) != 0) {
        perror("listen");
        return 1;
    }
    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGINT);
    sigaddset(&mask, SIGTERM);
    sigprocmask(SIG_BLOCK, &mask, NULL);
    int sfd = signalfd(-1, &mask, SFD_CLOEXEC);

    int ep = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = lfd};
    epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev);
    ev.data.fd = sfd;
    epoll_ctl(ep, EPOLL_CTL_ADD, sfd, &ev);
    prctl(PR_SET_TIMERSLACK, 1);
    printf("READY http://%s:%d\n", host, port);
    fflush(stdout);

    struct epoll_event evs[256];
    for (;;) {
        int n = epoll_wait(ep, evs, 256, -1);
        for (int i = 0; i < n; i++) {
            int fd = evs[i].data.fd;
            if (fd == sfd) {
                print_stats();
                return 0;
            }
            if (fd == lfd) {
                for (;;) {
                    int cfd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
                    if (cfd < 0)
                        break;
                    if ((size_t)cfd >= conns_cap) {
                        close(cfd);
                        continue;
                    }
                    st.accepted++;
                    setsockopt(cfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
                    conns[cfd] = (struct conn){.state = C_HEAD, .room = UINT32_MAX};
                    struct epoll_event cev = {.events = EPOLLIN | EPOLLRDHUP, .data.fd = cfd};
                    epoll_ctl(ep, EPOLL_CTL_ADD, cfd, &cev);
                }
                continue;
            }
            if (conns[fd].state != C_FREE)
                on_readable(fd);
        }
    }
}
