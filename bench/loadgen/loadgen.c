/*
 * loadgen.c - the load generator of presence-gateway's benchmarks (SPEC §5).
 *
 * One epoll thread drives N raw WebSocket connections (masked client frames, Engine.IO 4 and
 * Socket.IO 5 spoken directly, no thread and no library context per connection), bound to
 * source addresses 127.0.0.1..127.0.0.S in turn so that connect churn does not run out of
 * ephemeral ports. It works against presence-gateway, the Node.js peer and the bare servers
 * of bench/bare/, the same way:
 *
 *  - users u = 0..N-1 sit in conversations (rooms) of K: room u / K. Against a gateway it
 *    provisions them first through the admin REST API (ids are derived from the index, so a
 *    rerun finds them: 409 is fine) and mints each user's HS256 JWT itself with --secret:
 *    the same token all day (a client keeps its own), or a new one with --fresh-tokens.
 *    The query string also carries uid=, room= and name= for the bare servers.
 *  - fanout mode: opens the N connections (connect rate), then makes R status changes per
 *    second as connect/disconnect cycles: a change closes a connected user's socket (offline)
 *    or reconnects a user it closed before (online; the change starts when the Socket.IO
 *    CONNECT leaves). Each peer that was connected at the change must receive the user's
 *    `user:status` with the right isOnline: the delay from change to receipt is recorded per
 *    delivery and per change (receipt by every peer). One change per room is in flight at a
 *    time, so every receipt is attributed exactly; missing and unexpected receipts are
 *    counted. --change msg (bare servers only) makes a change a client text frame instead,
 *    to measure the fan-out ceiling without handshakes.
 *  - connect mode: connects users with C in flight, each up to the CONNECT ack, then closes
 *    it; reports connects per second. --connect-order spread (the default) takes the users
 *    room by room (room 0's first user, room 1's first user, ...), so that the users in flight
 *    share no room and a connect costs what the bare handshake server does plus
 *    authentication, registry and rooms, with no user:status to deliver; rooms takes them in
 *    index order, so that a room's users are online together and each connect and close also
 *    fans a user:status out to the peers in flight (which close at their ack unread).
 *  - idle mode: opens N connections and holds them for the duration (memory per connection,
 *    read from /proc of --server-pid).
 * With --server-pid it also reports the server's CPU time per delivery and RSS per connection.
 *
 * Everything is bounded: the run stops by itself after --duration plus a grace, or after
 * --max-seconds in any case. Loopback only (127.0.0.0/8 targets are enforced).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>

#ifndef IP_BIND_ADDRESS_NO_PORT
#define IP_BIND_ADDRESS_NO_PORT 24
#endif

#define RX_CAP 4096
#define NONE UINT32_MAX
#define TIMER_TAG UINT64_MAX
#define MAX_ROOM 64 /* peers are tracked in a 64-bit mask */

enum mode { MODE_FANOUT, MODE_CONNECT, MODE_IDLE, MODE_PROVISION };
enum target { TARGET_GATEWAY, TARGET_BARE };
enum ustate { U_CLOSED = 0, U_TCP, U_UPGRADE, U_WS, U_OPEN, U_READY };

struct user {
    int fd;
    uint8_t state;
    uint8_t attempts;
    uint16_t rx_len;
    uint32_t gen;    /* bumped at each close: a callback may close and reopen the user */
    uint8_t *rx;     /* RX_CAP bytes while connected */
    size_t skip;     /* bytes left of a frame too large to keep */
    int64_t t_start; /* connect start, ns */
    char *token;
};

struct room {
    bool busy;
    bool online;       /* the isOnline the change announces */
    uint32_t user;     /* the user of the change in flight */
    uint32_t offline;  /* a member we closed, to reconnect next, or NONE */
    uint64_t mask;     /* peers (by slot) still to receive it */
    int64_t t0;        /* change time, 0 while a reconnect has not sent its CONNECT */
    int64_t t_started; /* for the timeout */
};

struct samples {
    int64_t *v;
    size_t n, cap;
};

static struct {
    enum mode mode;
    enum target target;
    bool change_msg;
    const char *host;
    int port;
    const char *path;
    const char *secret;
    uint32_t conns, room_size;
    double rate;
    double duration_s;
    double max_seconds;
    uint32_t concurrency, sources;
    int server_pid;
    bool provision, json;
    const char *cdf_path; /* --cdf: delivery latency percentiles, one "pct ms" line each */
    int64_t timeout_ns;
    uint32_t user_offset; /* first global user index of this process (several load generators) */
    bool connect_rooms;   /* --connect-order rooms: users in index order (peers online) */
    bool fresh_tokens;    /* --fresh-tokens: tokens minted at this run's start (mint_token) */
} cfg = {
    .mode = MODE_FANOUT,
    .target = TARGET_GATEWAY,
    .host = "127.0.0.1",
    .port = 8000,
    .path = "/socket.io/",
    .conns = 1000,
    .room_size = 10,
    .rate = 500,
    .duration_s = 10,
    .max_seconds = 0,
    .concurrency = 256,
    .sources = 4,
    .provision = true,
    .timeout_ns = 5000000000LL,
};

static struct user *users;
static struct room *rooms;
static uint32_t n_rooms;
static int ep, tfd;
static struct sockaddr_in target_addr;
static uint64_t rng = 88172645463325252ULL;

static struct {
    uint64_t connect_errors, http_errors, connect_refused_sio, short_writes, server_closes;
    uint64_t changes_issued, changes_done, changes_timed_out, changes_skipped, changes_no_peer;
    uint64_t deliveries, missing, unexpected, pings, ramp_status;
    uint64_t ready_now, connects_done;
} st;

static struct samples lat_delivery, lat_change, lat_connect, lat_on, lat_off;
static int64_t phase_start_ns;
static bool issuing;
static bool measuring; /* from the first change on: earlier user:status are the ramp's own */

/* ---- small helpers ------------------------------------------------------------------------ */

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static uint64_t rnd(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

static void die(const char *msg)
{
    fprintf(stderr, "loadgen: %s\n", msg);
    exit(1);
}

static void sample_add(struct samples *s, int64_t v)
{
    if (s->n == s->cap) {
        s->cap = s->cap ? s->cap * 2 : 65536;
        s->v = realloc(s->v, s->cap * sizeof(*s->v));
        if (s->v == NULL)
            die("out of memory");
    }
    s->v[s->n++] = v;
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

static void sort_samples(struct samples *s)
{
    if (s->n > 0)
        qsort(s->v, s->n, sizeof(*s->v), cmp_i64);
}

static double pct_ms(const struct samples *s, double p)
{
    if (s->n == 0)
        return 0;
    size_t i = (size_t)(p / 100.0 * (double)(s->n - 1) + 0.5);
    return (double)s->v[i] / 1e6;
}

/* The distribution for plots: every percent up to 90, then finer steps into the tail, so that
 * a log-scaled "1 / (1 - p)" axis shows p99, p99.9 and the maximum. */
static void write_cdf(const char *path, const struct samples *s)
{
    FILE *f = fopen(path, "w");
    if (f == NULL) {
        fprintf(stderr, "loadgen: --cdf %s: %s\n", path, strerror(errno));
        return;
    }
    for (int i = 0; i <= 90; i++)
        fprintf(f, "%.3f %.4f\n", (double)i, pct_ms(s, i));
    for (int i = 1; i < 100; i++)
        fprintf(f, "%.3f %.4f\n", 90.0 + 0.1 * i, pct_ms(s, 90.0 + 0.1 * i));
    for (int i = 1; i < 100; i++)
        fprintf(f, "%.3f %.4f\n", 99.9 + 0.001 * i, pct_ms(s, 99.9 + 0.001 * i));
    fprintf(f, "%.3f %.4f\n", 100.0, pct_ms(s, 100));
    fclose(f);
}

static void user_id(uint32_t u, char out[25])
{
    snprintf(out, 25, "b0b0b0b0%016" PRIx32, cfg.user_offset + u);
}

static void conv_id(uint32_t r, char out[25])
{
    snprintf(out, 25, "c0c0%04" PRIx32 "%016" PRIx32, cfg.room_size & 0xffff,
             cfg.user_offset / cfg.room_size + r);
}

/* ---- JWT (HS256, OpenSSL HMAC) ------------------------------------------------------------ */

static size_t b64url(char *out, const uint8_t *in, size_t len)
{
    char tmp[1024];
    int n = EVP_EncodeBlock((unsigned char *)tmp, in, (int)len);
    size_t w = 0;
    for (int i = 0; i < n; i++) {
        char c = tmp[i];
        if (c == '=')
            break;
        out[w++] = c == '+' ? '-' : c == '/' ? '_' : c;
    }
    out[w] = '\0';
    return w;
}

/* A user's token is the same in every loadgen run of the same UTC day, as a real client keeps
 * the token it logged in with and presents it on every reconnect: iat is the day's start, exp
 * two days later. --fresh-tokens: iat is now, so that every run presents tokens the server
 * has never verified (a first connect of each user). */
static char *mint_token(const char *id, const char *role)
{
    char payload[256], enc[1024];
    long now = (long)time(NULL);
    long iat = cfg.fresh_tokens ? now : now / 86400 * 86400;
    int plen = snprintf(
        payload, sizeof(payload), "{\"userId\":\"%s\",%s%s%s\"iat\":%ld,\"exp\":%ld}", id,
        role ? "\"role\":\"" : "", role ? role : "", role ? "\"," : "", iat, iat + 2 * 86400);
    size_t w = (size_t)snprintf(enc, sizeof(enc), "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.");
    w += b64url(enc + w, (const uint8_t *)payload, (size_t)plen);
    uint8_t mac[32];
    unsigned int mac_len = 0;
    HMAC(EVP_sha256(), cfg.secret, (int)strlen(cfg.secret), (const uint8_t *)enc, w, mac, &mac_len);
    enc[w++] = '.';
    b64url(enc + w, mac, mac_len);
    return strdup(enc);
}

/* ---- provisioning through the admin REST API (blocking, keep-alive) ----------------------- */

static int http_fd = -1;

static int http_connect(void)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&target_addr, sizeof(target_addr)) != 0) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    struct timeval tv = {10, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    return fd;
}

/* POSTs body to path; returns the status code or -1. */
static int http_post(const char *path, const char *token, const char *body)
{
    for (int attempt = 0; attempt < 2; attempt++) {
        if (http_fd < 0 && (http_fd = http_connect()) < 0)
            return -1;
        char req[2048];
        int n = snprintf(req, sizeof(req),
                         "POST %s HTTP/1.1\r\nHost: %s:%d\r\nAuthorization: Bearer %s\r\n"
                         "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n%s",
                         path, cfg.host, cfg.port, token, strlen(body), body);
        if (send(http_fd, req, (size_t)n, MSG_NOSIGNAL) != n)
            goto retry;
        char resp[8192];
        size_t have = 0;
        char *end = NULL;
        while (end == NULL) {
            ssize_t r = recv(http_fd, resp + have, sizeof(resp) - 1 - have, 0);
            if (r <= 0)
                goto retry;
            have += (size_t)r;
            resp[have] = '\0';
            end = strstr(resp, "\r\n\r\n");
            if (end == NULL && have >= sizeof(resp) - 1)
                return -1;
        }
        int status = atoi(resp + 9);
        size_t clen = 0;
        const char *cl = strcasestr(resp, "\r\ncontent-length:");
        if (cl != NULL && cl < end)
            clen = strtoul(cl + 17, NULL, 10);
        bool close_after = false;
        const char *conn = strcasestr(resp, "\r\nconnection: close");
        if (conn != NULL && conn < end)
            close_after = true;
        size_t body_have = have - (size_t)(end + 4 - resp);
        while (body_have < clen) {
            char sink[4096];
            size_t want = clen - body_have < sizeof(sink) ? clen - body_have : sizeof(sink);
            ssize_t r = recv(http_fd, sink, want, 0);
            if (r <= 0)
                goto retry;
            body_have += (size_t)r;
        }
        if (close_after) {
            close(http_fd);
            http_fd = -1;
        }
        return status;
    retry:
        close(http_fd);
        http_fd = -1;
    }
    return -1;
}

static void provision(void)
{
    char admin_id[25];
    snprintf(admin_id, sizeof(admin_id), "b0b0b0b0ffffffffffffffad");
    char *admin = mint_token(admin_id, "ADMIN");
    int64_t t0 = now_ns();
    char body[512], path[256], id[25], cid[25];
    for (uint32_t u = 0; u < cfg.conns; u++) {
        user_id(u, id);
        snprintf(body, sizeof(body), "{\"username\":\"bench%07" PRIu32 "\",\"id\":\"%s\"}",
                 cfg.user_offset + u, id);
        int s = http_post("/api/admin/users", admin, body);
        if (s != 201 && s != 409) {
            fprintf(stderr, "loadgen: POST /api/admin/users -> %d\n", s);
            exit(1);
        }
    }
    for (uint32_t r = 0; r < n_rooms; r++) {
        conv_id(r, cid);
        snprintf(body, sizeof(body), "{\"id\":\"%s\",\"title\":\"bench %" PRIu32 "\"}", cid,
                 cfg.user_offset / cfg.room_size + r);
        int s = http_post("/api/admin/conversations", admin, body);
        if (s != 201 && s != 409) {
            fprintf(stderr, "loadgen: POST /api/admin/conversations -> %d\n", s);
            exit(1);
        }
        snprintf(path, sizeof(path), "/api/admin/conversations/%s/members", cid);
        for (uint32_t u = r * cfg.room_size; u < (r + 1) * cfg.room_size && u < cfg.conns; u++) {
            user_id(u, id);
            snprintf(body, sizeof(body), "{\"userId\":\"%s\"}", id);
            s = http_post(path, admin, body);
            if (s != 201) {
                fprintf(stderr, "loadgen: POST %s -> %d\n", path, s);
                exit(1);
            }
        }
    }
    if (http_fd >= 0)
        close(http_fd);
    free(admin);
    fprintf(stderr,
            "loadgen: provisioned %" PRIu32 " users in %" PRIu32 " conversations in %.2f s\n",
            cfg.conns, n_rooms, (double)(now_ns() - t0) / 1e9);
}

/* ---- WebSocket client ---------------------------------------------------------------------- */

static bool ws_send_text(struct user *us, const char *text, size_t len)
{
    uint8_t buf[2048];
    size_t h = 2;
    if (len + 8 > sizeof(buf))
        return false;
    buf[0] = 0x81;
    if (len < 126) {
        buf[1] = (uint8_t)(0x80 | len);
    } else {
        buf[1] = 0x80 | 126;
        buf[2] = (uint8_t)(len >> 8);
        buf[3] = (uint8_t)len;
        h = 4;
    }
    uint32_t m = (uint32_t)rnd();
    memcpy(buf + h, &m, 4);
    const uint8_t *mask = buf + h;
    for (size_t i = 0; i < len; i++)
        buf[h + 4 + i] = (uint8_t)text[i] ^ mask[i & 3];
    ssize_t n = send(us->fd, buf, h + 4 + len, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n != (ssize_t)(h + 4 + len)) {
        st.short_writes++;
        return false;
    }
    return true;
}

static void ws_send_control(struct user *us, uint8_t opcode, const uint8_t *data, size_t len)
{
    uint8_t buf[6 + 125];
    if (len > 125)
        len = 125;
    buf[0] = (uint8_t)(0x80 | opcode);
    buf[1] = (uint8_t)(0x80 | len);
    memset(buf + 2, 0, 4); /* a zero mask is a valid mask */
    memcpy(buf + 6, data, len);
    if (send(us->fd, buf, 6 + len, MSG_NOSIGNAL | MSG_DONTWAIT) != (ssize_t)(6 + len))
        st.short_writes++;
}

static void user_close(uint32_t u)
{
    struct user *us = &users[u];
    if (us->state == U_CLOSED)
        return;
    if (us->state == U_READY)
        st.ready_now--;
    close(us->fd);
    us->fd = -1;
    us->state = U_CLOSED;
    free(us->rx);
    us->rx = NULL;
    us->rx_len = 0;
    us->skip = 0;
    us->gen++;
}

static bool user_connect(uint32_t u)
{
    struct user *us = &users[u];
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        st.connect_errors++;
        return false;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (cfg.sources > 1) {
        setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof(one));
        struct sockaddr_in src = {.sin_family = AF_INET};
        src.sin_addr.s_addr = htonl(0x7f000001u + u % cfg.sources);
        if (bind(fd, (struct sockaddr *)&src, sizeof(src)) != 0) {
            close(fd);
            st.connect_errors++;
            return false;
        }
    }
    if (connect(fd, (struct sockaddr *)&target_addr, sizeof(target_addr)) != 0 &&
        errno != EINPROGRESS) {
        close(fd);
        st.connect_errors++;
        return false;
    }
    us->fd = fd;
    us->state = U_TCP;
    us->t_start = now_ns();
    us->rx = malloc(RX_CAP);
    if (us->rx == NULL)
        die("out of memory");
    us->rx_len = 0;
    us->skip = 0;
    struct epoll_event ev = {.events = EPOLLOUT | EPOLLIN | EPOLLRDHUP, .data.u64 = u};
    epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
    return true;
}

static void send_upgrade(uint32_t u)
{
    struct user *us = &users[u];
    char id[25], req[1024];
    user_id(u, id);
    uint8_t key[16];
    for (int i = 0; i < 16; i += 8) {
        uint64_t r = rnd();
        memcpy(key + i, &r, 8);
    }
    char key64[32];
    EVP_EncodeBlock((unsigned char *)key64, key, 16);
    int n = snprintf(req, sizeof(req),
                     "GET %s?EIO=4&transport=websocket&uid=%s&room=%" PRIu32 "&name=bench%07" PRIu32
                     " HTTP/1.1\r\n"
                     "Host: %s:%d\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n",
                     cfg.path, id, (cfg.user_offset + u) / cfg.room_size, cfg.user_offset + u,
                     cfg.host, cfg.port, key64);
    if (send(us->fd, req, (size_t)n, MSG_NOSIGNAL) != n) {
        st.connect_errors++;
        user_close(u);
        return;
    }
    us->state = U_UPGRADE;
    struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP, .data.u64 = u};
    epoll_ctl(ep, EPOLL_CTL_MOD, us->fd, &ev);
}

/* ---- changes and receipts ------------------------------------------------------------------ */

static void change_done(struct room *rm, int64_t now)
{
    if (rm->t0 > 0)
        sample_add(&lat_change, now - rm->t0);
    st.changes_done++;
    rm->busy = false;
}

static uint64_t ready_peers(uint32_t r, uint32_t except)
{
    uint64_t mask = 0;
    uint32_t first = r * cfg.room_size;
    for (uint32_t s = 0; s < cfg.room_size && first + s < cfg.conns; s++)
        if (first + s != except && users[first + s].state == U_READY)
            mask |= 1ULL << s;
    return mask;
}

static void on_status(uint32_t peer, const char *p, size_t len)
{
    int64_t now = now_ns();
    const char *k = memmem(p, len, "\"userId\":\"", 10);
    const char *o = memmem(p, len, "\"isOnline\":", 11);
    if (k == NULL || o == NULL || (size_t)(k - p) + 10 + 24 > len || (size_t)(o - p) + 12 > len) {
        st.unexpected++;
        return;
    }
    k += 10;
    if (memcmp(k, "b0b0b0b0", 8) != 0) {
        st.unexpected++;
        return;
    }
    char hex[17];
    memcpy(hex, k + 8, 16);
    hex[16] = '\0';
    uint64_t g = strtoull(hex, NULL, 16);
    if (g < cfg.user_offset) {
        st.unexpected++;
        return;
    }
    uint64_t u = g - cfg.user_offset;
    bool online = o[11] == 't';
    uint32_t r = peer / cfg.room_size;
    if (u >= cfg.conns || u / cfg.room_size != r) {
        st.unexpected++;
        return;
    }
    struct room *rm = &rooms[r];
    uint64_t bit = 1ULL << (peer % cfg.room_size);
    if (!measuring) {
        st.ramp_status++;
        return;
    }
    if (!rm->busy || rm->user != u || rm->t0 == 0 || !(rm->mask & bit) ||
        (!cfg.change_msg && rm->online != online)) {
        st.unexpected++;
        return;
    }
    rm->mask &= ~bit;
    st.deliveries++;
    sample_add(&lat_delivery, now - rm->t0);
    sample_add(rm->online ? &lat_on : &lat_off, now - rm->t0);
    if (rm->mask == 0)
        change_done(rm, now);
}

static void start_next_connect(void);

static void on_ready(uint32_t u)
{
    struct user *us = &users[u];
    int64_t now = now_ns();
    us->state = U_READY;
    us->attempts = 0;
    st.ready_now++;
    st.connects_done++;
    sample_add(&lat_connect, now - us->t_start);
    if (cfg.mode == MODE_CONNECT) {
        user_close(u);
        start_next_connect();
        return;
    }
    if (!issuing)
        start_next_connect();
}

static void on_sio_open(uint32_t u)
{
    struct user *us = &users[u];
    char msg[1024];
    int n;
    if (cfg.target == TARGET_GATEWAY && us->token != NULL)
        n = snprintf(msg, sizeof(msg), "40{\"token\":\"%s\"}", us->token);
    else
        n = snprintf(msg, sizeof(msg), "40");
    us->state = U_OPEN;
    uint32_t r = u / cfg.room_size;
    if (rooms != NULL && rooms[r].busy && rooms[r].user == u && rooms[r].online)
        rooms[r].t0 = now_ns();
    if (!ws_send_text(us, msg, (size_t)n))
        user_close(u);
}

static void fail_user(uint32_t u, uint64_t *counter);

/* Handles one text message from the server. */
static void on_text(uint32_t u, const char *p, size_t len)
{
    struct user *us = &users[u];
    if (len == 0)
        return;
    switch (p[0]) {
    case '0':
        if (us->state == U_WS)
            on_sio_open(u);
        return;
    case '1':
        st.server_closes++;
        fail_user(u, NULL);
        return;
    case '2': /* Engine.IO ping */
        st.pings++;
        ws_send_text(us, "3", 1);
        return;
    case '4':
        break;
    default:
        return;
    }
    if (len >= 2 && p[1] == '0' && us->state == U_OPEN) {
        on_ready(u);
        return;
    }
    if (len >= 2 && p[1] == '4') {
        if (st.connect_refused_sio++ == 0)
            fprintf(stderr, "loadgen: CONNECT_ERROR: %.*s\n", (int)(len < 200 ? len : 200), p);
        fail_user(u, NULL);
        return;
    }
    if (len >= 2 && p[1] == '1') {
        st.server_closes++;
        fail_user(u, NULL);
        return;
    }
    if (len > 16 && memcmp(p, "42[\"user:status\"", 16) == 0)
        on_status(u, p, len);
}

/* Parses the 101 head then frames. Returns false when the user was closed. */
static bool process_rx(uint32_t u)
{
    struct user *us = &users[u];
    uint32_t gen = us->gen;
    size_t pos = 0;
    if (us->state == U_UPGRADE) {
        uint8_t *end = memmem(us->rx, us->rx_len, "\r\n\r\n", 4);
        if (end == NULL) {
            if (us->rx_len >= RX_CAP) {
                fail_user(u, &st.http_errors);
                return false;
            }
            return true;
        }
        if (us->rx_len < 12 || memcmp(us->rx + 9, "101", 3) != 0) {
            if (st.http_errors == 0)
                fprintf(stderr, "loadgen: upgrade refused: %.*s\n",
                        (int)((uint8_t *)memchr(us->rx, '\r', us->rx_len) - us->rx), us->rx);
            fail_user(u, &st.http_errors);
            return false;
        }
        pos = (size_t)(end + 4 - us->rx);
        us->state = U_WS;
    }
    while (us->rx_len - pos >= 2) {
        if (us->skip > 0)
            break;
        uint8_t *h = us->rx + pos;
        int opcode = h[0] & 0x0f;
        size_t plen = h[1] & 0x7f, hl = 2;
        if (plen == 126) {
            if (us->rx_len - pos < 4)
                break;
            plen = (size_t)h[2] << 8 | h[3];
            hl = 4;
        } else if (plen == 127) {
            if (us->rx_len - pos < 10)
                break;
            plen = 0;
            for (int i = 0; i < 8; i++)
                plen = plen << 8 | h[2 + i];
            hl = 10;
        }
        if (hl + plen > RX_CAP) {
            /* Too large to keep (no bench message is): discard it. */
            size_t in_buf = us->rx_len - pos - hl;
            us->skip = plen - in_buf;
            pos = us->rx_len;
            break;
        }
        if (us->rx_len - pos < hl + plen)
            break;
        const uint8_t *payload = h + hl;
        pos += hl + plen;
        if (opcode == 1) {
            on_text(u, (const char *)payload, plen);
        } else if (opcode == 8) {
            st.server_closes++;
            fail_user(u, NULL);
        } else if (opcode == 9) {
            ws_send_control(us, 10, payload, plen);
        }
        if (us->gen != gen)
            return false;
    }
    memmove(us->rx, us->rx + pos, us->rx_len - pos);
    us->rx_len = (uint16_t)(us->rx_len - pos);
    return true;
}

static void on_event(uint32_t u, uint32_t events)
{
    struct user *us = &users[u];
    if (us->state == U_TCP) {
        int err = 0;
        socklen_t el = sizeof(err);
        getsockopt(us->fd, SOL_SOCKET, SO_ERROR, &err, &el);
        if (err != 0 || (events & (EPOLLERR | EPOLLHUP))) {
            fail_user(u, &st.connect_errors);
            return;
        }
        if (events & EPOLLOUT)
            send_upgrade(u);
        return;
    }
    for (;;) {
        if (us->skip > 0) {
            uint8_t sink[4096];
            ssize_t n = recv(us->fd, sink, us->skip < sizeof(sink) ? us->skip : sizeof(sink), 0);
            if (n < 0 && errno == EAGAIN)
                return;
            if (n <= 0)
                goto eof_closed;
            us->skip -= (size_t)n;
            continue;
        }
        size_t want = RX_CAP - us->rx_len;
        ssize_t n = recv(us->fd, us->rx + us->rx_len, want, 0);
        if (n == 0)
            goto eof_closed;
        if (n < 0) {
            if (errno == EAGAIN)
                return;
            if (errno == EINTR)
                continue;
            goto eof_closed;
        }
        us->rx_len = (uint16_t)(us->rx_len + n);
        if (!process_rx(u))
            return;
        /* A short read drained the socket: level-triggered epoll reports what comes next,
         * which saves the recv() that would only say EAGAIN. */
        if ((size_t)n < want)
            return;
    }
eof_closed:
    st.server_closes++;
    fail_user(u, NULL);
}

/* ---- scheduling ---------------------------------------------------------------------------- */

static uint32_t next_to_connect; /* ramp and connect mode cursor */
static uint32_t in_flight;

static void fail_user(uint32_t u, uint64_t *counter)
{
    struct user *us = &users[u];
    bool was_pending = us->state != U_READY && us->state != U_CLOSED;
    if (counter)
        (*counter)++;
    user_close(u);
    if (rooms != NULL) {
        struct room *rm = &rooms[u / cfg.room_size];
        if (rm->busy && rm->user == u && rm->online) {
            /* The reconnect of a change failed: the change is lost. */
            st.missing += (uint64_t)__builtin_popcountll(rm->mask);
            rm->busy = false;
            st.changes_timed_out++;
            rm->offline = u;
            return;
        }
    }
    if (was_pending && !issuing) {
        /* Retry a failed ramp connect (it keeps its place in flight), else move on. */
        if (cfg.mode == MODE_CONNECT || ++us->attempts >= 3 || !user_connect(u))
            start_next_connect();
    }
}

/* The user of connect number i (connect mode): see --connect-order. */
static uint32_t connect_user(uint32_t i)
{
    i %= cfg.conns;
    if (cfg.connect_rooms || n_rooms == 0)
        return i;
    uint32_t u = (i % n_rooms) * cfg.room_size + i / n_rooms;
    return u < cfg.conns ? u : i; /* a short last room: any user not in flight will do */
}

static void start_next_connect(void)
{
    if (in_flight > 0)
        in_flight--;
    if (cfg.mode == MODE_CONNECT) {
        for (uint32_t tries = 0; tries < cfg.conns && in_flight < cfg.concurrency; tries++) {
            uint32_t u = connect_user(next_to_connect++);
            if (users[u].state == U_CLOSED && user_connect(u))
                in_flight++;
        }
        return;
    }
    while (in_flight < cfg.concurrency && next_to_connect < cfg.conns) {
        if (user_connect(next_to_connect))
            in_flight++;
        next_to_connect++;
    }
}

/* Starts one change. Returns false when every room is busy (the target is saturated). */
static bool issue_change(void)
{
    static uint32_t rr;
    for (uint32_t tries = 0; tries < n_rooms; tries++) {
        uint32_t r = rr++ % n_rooms;
        struct room *rm = &rooms[r];
        if (rm->busy)
            continue;
        uint32_t first = r * cfg.room_size;
        uint32_t size = cfg.conns - first < cfg.room_size ? cfg.conns - first : cfg.room_size;
        if (size < 2)
            continue;
        int64_t now = now_ns();
        if (cfg.change_msg) {
            uint32_t u = first + (uint32_t)(rnd() % size);
            if (users[u].state != U_READY) {
                st.changes_skipped++;
                return true;
            }
            rm->mask = ready_peers(r, u);
            rm->user = u;
            rm->t0 = now;
            rm->t_started = now;
            rm->busy = rm->mask != 0;
            st.changes_issued++;
            if (!rm->busy) {
                st.changes_no_peer++;
                return true;
            }
            ws_send_text(&users[u], "42[\"change\"]", 12);
            return true;
        }
        if (rm->offline != NONE) {
            uint32_t u = rm->offline;
            rm->offline = NONE;
            rm->mask = ready_peers(r, u);
            rm->user = u;
            rm->online = true;
            rm->t0 = 0; /* set when its CONNECT leaves */
            rm->t_started = now;
            rm->busy = true;
            if (!user_connect(u)) {
                rm->busy = false;
                rm->offline = u;
                st.changes_skipped++;
                return true;
            }
            st.changes_issued++;
            return true;
        }
        uint32_t u = first + (uint32_t)(rnd() % size);
        if (users[u].state != U_READY) {
            st.changes_skipped++;
            return true;
        }
        rm->mask = ready_peers(r, u);
        rm->user = u;
        rm->online = false;
        rm->t0 = now;
        rm->t_started = now;
        rm->offline = u;
        rm->busy = rm->mask != 0;
        st.changes_issued++;
        if (!rm->busy)
            st.changes_no_peer++;
        user_close(u);
        return true;
    }
    return false;
}

static void check_timeouts(int64_t now)
{
    for (uint32_t r = 0; r < n_rooms; r++) {
        struct room *rm = &rooms[r];
        if (rm->busy && now - rm->t_started > cfg.timeout_ns) {
            st.missing += (uint64_t)__builtin_popcountll(rm->mask);
            st.changes_timed_out++;
            rm->busy = false;
        }
    }
}

static uint32_t busy_rooms(void)
{
    uint32_t n = 0;
    for (uint32_t r = 0; r < n_rooms; r++)
        n += rooms[r].busy;
    return n;
}

/* ---- /proc of the server ------------------------------------------------------------------ */

struct proc_sample {
    double cpu_s;
    long rss_kib;
};

static struct proc_sample proc_read(int pid)
{
    struct proc_sample s = {0, 0};
    if (pid <= 0)
        return s;
    char path[64], buf[2048];
    snprintf(path, sizeof(path), "/proc/%d/stat", pid);
    FILE *f = fopen(path, "r");
    if (f != NULL) {
        if (fgets(buf, sizeof(buf), f) != NULL) {
            const char *p = strrchr(buf, ')');
            unsigned long ut = 0, stt = 0;
            /* fields after ")": state(3) ... utime(14) stime(15) */
            if (p && sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut,
                            &stt) == 2)
                s.cpu_s = (double)(ut + stt) / (double)sysconf(_SC_CLK_TCK);
        }
        fclose(f);
    }
    snprintf(path, sizeof(path), "/proc/%d/status", pid);
    f = fopen(path, "r");
    if (f != NULL) {
        while (fgets(buf, sizeof(buf), f) != NULL)
            if (strncmp(buf, "VmRSS:", 6) == 0)
                s.rss_kib = strtol(buf + 6, NULL, 10);
        fclose(f);
    }
    return s;
}

static double self_cpu_s(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
           ru.ru_stime.tv_usec / 1e6;
}

/* ---- main loop ----------------------------------------------------------------------------- */

static void run_loop(int64_t until_ns, bool (*done)(void))
{
    struct epoll_event evs[512];
    while (now_ns() < until_ns && !(done && done())) {
        int n = epoll_wait(ep, evs, 512, 10);
        for (int i = 0; i < n; i++) {
            uint64_t tag = evs[i].data.u64;
            if (tag == TIMER_TAG) {
                uint64_t ticks;
                if (read(tfd, &ticks, sizeof(ticks)) < 0 && errno != EAGAIN)
                    die("timerfd");
                continue;
            }
            if (tag < cfg.conns && users[tag].state != U_CLOSED)
                on_event((uint32_t)tag, evs[i].events);
        }
        if (issuing) {
            int64_t now = now_ns();
            static uint64_t attempted;
            uint64_t due = (uint64_t)(cfg.rate * (double)(now - phase_start_ns) / 1e9);
            while (attempted < due) {
                attempted++;
                if (!issue_change()) {
                    /* Every room busy: the rest of this tick is skipped, not queued. */
                    st.changes_skipped += due - attempted + 1;
                    attempted = due;
                }
            }
            static int64_t last_check;
            if (now - last_check > 50000000LL) {
                check_timeouts(now);
                last_check = now;
            }
        }
    }
}

static bool ramp_done(void)
{
    return st.ready_now >= cfg.conns || (next_to_connect >= cfg.conns && in_flight == 0);
}

static bool drained(void)
{
    return busy_rooms() == 0;
}

static void usage(void)
{
    fprintf(stderr,
            "usage: loadgen [options]\n"
            "  --target gateway|bare   what runs at --host:--port (default gateway)\n"
            "  --mode fanout|connect|idle|provision   (default fanout; provision: create the\n"
            "                          users and conversations, then exit)\n"
            "  --change cycle|msg      how a change is made (msg: bare servers only)\n"
            "  --host ADDR --port N    loopback target (default 127.0.0.1:8000)\n"
            "  --path P                Socket.IO path (default /socket.io/)\n"
            "  --secret S              JWT_SECRET of the gateway (or env JWT_SECRET)\n"
            "  --conns N               connections (default 1000)\n"
            "  --room-size K           conversation size, 2..64 (default 10)\n"
            "  --rate R                changes per second (default 500)\n"
            "  --duration S            seconds of changes / hold / connects (default 10)\n"
            "  --concurrency C         connects in flight (default 256)\n"
            "  --connect-order spread|rooms   connect mode: users of different rooms in flight\n"
            "                          (default), or in index order (peers online: user:status\n"
            "                          fan-out on each connect and close)\n"
            "  --sources S             source addresses 127.0.0.1..S (default 4)\n"
            "  --server-pid PID        sample the server's CPU and RSS\n"
            "  --no-provision          users and conversations exist already\n"
            "  --timeout-ms T          a change not received by every peer by then is lost\n"
            "  --max-seconds T         hard bound of the whole run\n"
            "  --user-offset O         first user index (several load generators: 0, N, 2N...)\n"
            "  --fresh-tokens          tokens minted now, never seen by the server (default: the\n"
            "                          same token per user all day, as a client keeps its own)\n"
            "  --json                  also print one JSON line of results\n"
            "  --cdf FILE              write the delivery latency distribution (fanout): lines\n"
            "                          \"percentile ms\", 0..100, finer in the tail\n");
    exit(2);
}

static void parse_args(int argc, char **argv)
{
    /* clang-format would pack this table into columns: one option per line reads better. */
    /* clang-format off */
    static const struct option opts[] = {
        {"target", 1, 0, 't'},
        {"mode", 1, 0, 'm'},
        {"change", 1, 0, 'c'},
        {"host", 1, 0, 'H'},
        {"port", 1, 0, 'p'},
        {"path", 1, 0, 'P'},
        {"secret", 1, 0, 's'},
        {"conns", 1, 0, 'n'},
        {"room-size", 1, 0, 'k'},
        {"rate", 1, 0, 'r'},
        {"duration", 1, 0, 'd'},
        {"concurrency", 1, 0, 'C'},
        {"sources", 1, 0, 'S'},
        {"server-pid", 1, 0, 'x'},
        {"no-provision", 0, 0, 'N'},
        {"timeout-ms", 1, 0, 'T'},
        {"max-seconds", 1, 0, 'M'},
        {"json", 0, 0, 'j'},
        {"user-offset", 1, 0, 'O'},
        {"help", 0, 0, 'h'},
        {"connect-order", 1, 0, 'o'},
        {"cdf", 1, 0, 'F'},
        {"fresh-tokens", 0, 0, 'f'},
        {0, 0, 0, 0},
    };
    /* clang-format on */
    int o;
    while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (o) {
        case 't':
            cfg.target = strcmp(optarg, "bare") == 0 ? TARGET_BARE : TARGET_GATEWAY;
            break;
        case 'm':
            cfg.mode = strcmp(optarg, "connect") == 0     ? MODE_CONNECT
                       : strcmp(optarg, "idle") == 0      ? MODE_IDLE
                       : strcmp(optarg, "provision") == 0 ? MODE_PROVISION
                                                          : MODE_FANOUT;
            break;
        case 'c':
            cfg.change_msg = strcmp(optarg, "msg") == 0;
            break;
        case 'H':
            cfg.host = optarg;
            break;
        case 'p':
            cfg.port = atoi(optarg);
            break;
        case 'P':
            cfg.path = optarg;
            break;
        case 's':
            cfg.secret = optarg;
            break;
        case 'n':
            cfg.conns = (uint32_t)strtoul(optarg, NULL, 10);
            break;
        case 'k':
            cfg.room_size = (uint32_t)strtoul(optarg, NULL, 10);
            break;
        case 'r':
            cfg.rate = strtod(optarg, NULL);
            break;
        case 'd':
            cfg.duration_s = strtod(optarg, NULL);
            break;
        case 'C':
            cfg.concurrency = (uint32_t)strtoul(optarg, NULL, 10);
            break;
        case 'S':
            cfg.sources = (uint32_t)strtoul(optarg, NULL, 10);
            break;
        case 'x':
            cfg.server_pid = atoi(optarg);
            break;
        case 'o':
            if (strcmp(optarg, "rooms") != 0 && strcmp(optarg, "spread") != 0)
                usage();
            cfg.connect_rooms = strcmp(optarg, "rooms") == 0;
            break;
        case 'N':
            cfg.provision = false;
            break;
        case 'T':
            cfg.timeout_ns = strtoll(optarg, NULL, 10) * 1000000LL;
            break;
        case 'M':
            cfg.max_seconds = strtod(optarg, NULL);
            break;
        case 'j':
            cfg.json = true;
            break;
        case 'F':
            cfg.cdf_path = optarg;
            break;
        case 'f':
            cfg.fresh_tokens = true;
            break;
        case 'O':
            cfg.user_offset = (uint32_t)strtoul(optarg, NULL, 10);
            break;
        default:
            usage();
        }
    }
    if (cfg.secret == NULL)
        cfg.secret = getenv("JWT_SECRET");
    if (cfg.target == TARGET_GATEWAY && cfg.secret == NULL)
        die("--secret (or JWT_SECRET) is required against a gateway");
    if (cfg.conns == 0 || cfg.room_size < 2 || cfg.room_size > MAX_ROOM)
        die("--conns must be > 0 and --room-size within 2..64");
    if (cfg.user_offset % cfg.room_size != 0)
        die("--user-offset must be a multiple of --room-size");
    if (cfg.mode == MODE_PROVISION && cfg.target != TARGET_GATEWAY)
        die("--mode provision needs --target gateway");
    if (cfg.sources < 1 || cfg.sources > 250 || cfg.concurrency < 1)
        die("--sources within 1..250, --concurrency >= 1");
    if (cfg.change_msg && cfg.target != TARGET_BARE)
        die("--change msg works against the bare servers only");
    if (cfg.max_seconds <= 0)
        cfg.max_seconds = cfg.duration_s + 300;
}

int main(int argc, char **argv)
{
    parse_args(argc, argv);
    int64_t hard_stop = now_ns() + (int64_t)(cfg.max_seconds * 1e9);

    if (inet_pton(AF_INET, cfg.host, &target_addr.sin_addr) != 1 ||
        (ntohl(target_addr.sin_addr.s_addr) >> 24) != 127)
        die("--host must be a loopback IPv4 address");
    target_addr.sin_family = AF_INET;
    target_addr.sin_port = htons((uint16_t)cfg.port);

    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
    if (cfg.mode != MODE_PROVISION && cfg.conns + 64 > rl.rlim_cur)
        die("--conns exceeds this process's open-file limit; run several load generators");
    prctl(PR_SET_TIMERSLACK, 1);
    rng ^= (uint64_t)now_ns();

    n_rooms = (cfg.conns + cfg.room_size - 1) / cfg.room_size;
    users = calloc(cfg.conns, sizeof(*users));
    rooms = calloc(n_rooms, sizeof(*rooms));
    if (users == NULL || rooms == NULL)
        die("out of memory");
    for (uint32_t r = 0; r < n_rooms; r++)
        rooms[r].offline = NONE;
    for (uint32_t u = 0; u < cfg.conns; u++)
        users[u].fd = -1;

    if (cfg.target == TARGET_GATEWAY) {
        if (cfg.provision || cfg.mode == MODE_PROVISION)
            provision();
        if (cfg.mode == MODE_PROVISION)
            return 0;
        char id[25];
        for (uint32_t u = 0; u < cfg.conns; u++) {
            user_id(u, id);
            users[u].token = mint_token(id, NULL);
        }
    }

    ep = epoll_create1(EPOLL_CLOEXEC);
    tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    struct itimerspec its = {{0, 1000000}, {0, 1000000}};
    timerfd_settime(tfd, 0, &its, NULL);
    struct epoll_event tev = {.events = EPOLLIN, .data.u64 = TIMER_TAG};
    epoll_ctl(ep, EPOLL_CTL_ADD, tfd, &tev);

    struct proc_sample p0 = proc_read(cfg.server_pid);
    double self0 = self_cpu_s();
    int64_t t_ramp = now_ns();
    double ramp_s = 0, phase_s = 0, connect_rate = 0;
    struct proc_sample p1 = p0, p2 = p0;
    uint64_t ramp_ready = 0, ramp_connects = 0;
    double self1 = self0, self2 = self0;

    if (cfg.mode == MODE_CONNECT) {
        in_flight = 1; /* start_next_connect() counts one down */
        start_next_connect();
        int64_t until = now_ns() + (int64_t)(cfg.duration_s * 1e9);
        run_loop(until < hard_stop ? until : hard_stop, NULL);
        phase_s = (double)(now_ns() - t_ramp) / 1e9;
        connect_rate = (double)st.connects_done / phase_s;
        p2 = proc_read(cfg.server_pid);
        self2 = self_cpu_s();
    } else {
        in_flight = 1;
        start_next_connect();
        run_loop(hard_stop, ramp_done);
        ramp_s = (double)(now_ns() - t_ramp) / 1e9;
        ramp_ready = st.ready_now;
        ramp_connects = st.connects_done;
        connect_rate = (double)st.connects_done / ramp_s;
        fprintf(stderr, "loadgen: %" PRIu64 " of %" PRIu32 " connections ready in %.2f s\n",
                st.ready_now, cfg.conns, ramp_s);
        if (st.ready_now < cfg.conns)
            fprintf(stderr, "loadgen: warning: not every connection is up\n");
        /* Let the server settle, then measure. */
        run_loop(now_ns() + 500000000LL, NULL);
        p1 = proc_read(cfg.server_pid);
        self1 = self_cpu_s();
        phase_start_ns = now_ns();
        int64_t until = phase_start_ns + (int64_t)(cfg.duration_s * 1e9);
        if (cfg.mode == MODE_FANOUT && cfg.rate > 0)
            issuing = measuring = true;
        run_loop(until < hard_stop ? until : hard_stop, NULL);
        issuing = false;
        phase_s = (double)(now_ns() - phase_start_ns) / 1e9;
        int64_t grace = now_ns() + cfg.timeout_ns + 100000000LL;
        run_loop(grace < hard_stop ? grace : hard_stop, drained);
        check_timeouts(INT64_MAX / 2);
        p2 = proc_read(cfg.server_pid);
        self2 = self_cpu_s();
    }

    sort_samples(&lat_delivery);
    sort_samples(&lat_change);
    sort_samples(&lat_connect);
    sort_samples(&lat_on);
    sort_samples(&lat_off);

    const char *mode = cfg.mode == MODE_CONNECT ? "connect"
                       : cfg.mode == MODE_IDLE  ? "idle"
                                                : "fanout";
    printf("mode %s target %s %s:%d conns %" PRIu32 " room-size %" PRIu32 " rate %.0f/s "
           "duration %.1f s change %s\n",
           mode, cfg.target == TARGET_BARE ? "bare" : "gateway", cfg.host, cfg.port, cfg.conns,
           cfg.room_size, cfg.rate, cfg.duration_s, cfg.change_msg ? "msg" : "cycle");
    printf("connects: %" PRIu64 " in %.2f s = %.0f/s; latency ms p50 %.3f p99 %.3f max %.3f; "
           "errors tcp %" PRIu64 " http %" PRIu64 " sio %" PRIu64 "\n",
           cfg.mode == MODE_CONNECT ? st.connects_done : ramp_connects,
           cfg.mode == MODE_CONNECT ? phase_s : ramp_s, connect_rate, pct_ms(&lat_connect, 50),
           pct_ms(&lat_connect, 99), pct_ms(&lat_connect, 100), st.connect_errors, st.http_errors,
           st.connect_refused_sio);
    if (cfg.mode == MODE_CONNECT)
        printf("connect order %s\n", cfg.connect_rooms ? "rooms" : "spread");
    double dps = phase_s > 0 ? (double)st.deliveries / phase_s : 0;
    if (cfg.mode == MODE_FANOUT) {
        printf("changes: issued %" PRIu64 " (%.0f/s) done %" PRIu64 " timed-out %" PRIu64
               " skipped %" PRIu64 " no-peer %" PRIu64 "\n",
               st.changes_issued, (double)st.changes_issued / phase_s, st.changes_done,
               st.changes_timed_out, st.changes_skipped, st.changes_no_peer);
        printf("deliveries: %" PRIu64 " (%.0f/s) missing %" PRIu64 " unexpected %" PRIu64
               " short-writes %" PRIu64 " server-closes %" PRIu64 " (ramp user:status %" PRIu64
               ", reconnects %" PRIu64 ")\n",
               st.deliveries, dps, st.missing, st.unexpected, st.short_writes, st.server_closes,
               st.ramp_status, st.connects_done - ramp_connects);
        printf("engine.io pings answered: %" PRIu64 "\n", st.pings);
        printf("delivery latency ms: p50 %.3f p90 %.3f p99 %.3f p99.9 %.3f max %.3f (n %zu)\n",
               pct_ms(&lat_delivery, 50), pct_ms(&lat_delivery, 90), pct_ms(&lat_delivery, 99),
               pct_ms(&lat_delivery, 99.9), pct_ms(&lat_delivery, 100), lat_delivery.n);
        printf("change->every peer ms: p50 %.3f p90 %.3f p99 %.3f max %.3f (n %zu)\n",
               pct_ms(&lat_change, 50), pct_ms(&lat_change, 90), pct_ms(&lat_change, 99),
               pct_ms(&lat_change, 100), lat_change.n);
        if (!cfg.change_msg)
            printf("by kind ms: offline (close) p50 %.3f p99 %.3f (n %zu); online (reconnect) p50 "
                   "%.3f p99 %.3f (n %zu)\n",
                   pct_ms(&lat_off, 50), pct_ms(&lat_off, 99), lat_off.n, pct_ms(&lat_on, 50),
                   pct_ms(&lat_on, 99), lat_on.n);
    }
    double srv_cpu = p2.cpu_s - p1.cpu_s;
    double lg_cpu = self2 - self1;
    if (cfg.server_pid > 0) {
        double per_conn = ramp_ready ? 1024.0 / (double)ramp_ready : 0;
        printf("server: rss %ld -> %ld -> %ld KiB (before ramp, after it, at the end: %.0f B per "
               "connection after the ramp, %.0f B at the end); cpu %.2f s in phase (%.1f%% of a "
               "core)",
               p0.rss_kib, p1.rss_kib, p2.rss_kib, (double)(p1.rss_kib - p0.rss_kib) * per_conn,
               (double)(p2.rss_kib - p0.rss_kib) * per_conn, srv_cpu,
               phase_s > 0 ? 100.0 * srv_cpu / phase_s : 0);
        if (cfg.mode == MODE_FANOUT && st.deliveries > 0)
            printf("; %.2f us per delivery", srv_cpu * 1e6 / (double)st.deliveries);
        if (cfg.mode == MODE_CONNECT && st.connects_done > 0)
            printf("; %.2f us per connect", srv_cpu * 1e6 / (double)st.connects_done);
        printf("\n");
    }
    printf("loadgen: cpu %.2f s in phase (%.1f%% of a core)\n", lg_cpu,
           phase_s > 0 ? 100.0 * lg_cpu / phase_s : 0);
    if (cfg.json)
        printf("{\"mode\":\"%s\",\"target\":\"%s\",\"conns\":%" PRIu32 ",\"roomSize\":%" PRIu32
               ",\"rate\":%.0f,\"change\":\"%s\",\"connectsPerSec\":%.1f,\"ready\":%" PRIu64
               ",\"connectErrors\":%" PRIu64 ",\"changesIssued\":%" PRIu64
               ",\"changesDone\":%" PRIu64 ",\"changesTimedOut\":%" PRIu64
               ",\"changesSkipped\":%" PRIu64 ",\"deliveries\":%" PRIu64
               ",\"deliveriesPerSec\":%.1f"
               ",\"missing\":%" PRIu64 ",\"unexpected\":%" PRIu64 ",\"p50Ms\":%.4f,\"p90Ms\":%.4f"
               ",\"p99Ms\":%.4f,\"maxMs\":%.4f,\"changeP99Ms\":%.4f,\"serverCpuS\":%.3f"
               ",\"serverRssKiB\":[%ld,%ld,%ld],\"loadgenCpuS\":%.3f,\"phaseS\":%.3f"
               ",\"connectOrder\":\"%s\"}\n",
               mode, cfg.target == TARGET_BARE ? "bare" : "gateway", cfg.conns, cfg.room_size,
               cfg.rate, cfg.change_msg ? "msg" : "cycle", connect_rate,
               cfg.mode == MODE_CONNECT ? st.ready_now : ramp_ready,
               st.connect_errors + st.http_errors + st.connect_refused_sio, st.changes_issued,
               st.changes_done, st.changes_timed_out, st.changes_skipped, st.deliveries, dps,
               st.missing, st.unexpected, pct_ms(&lat_delivery, 50), pct_ms(&lat_delivery, 90),
               pct_ms(&lat_delivery, 99), pct_ms(&lat_delivery, 100), pct_ms(&lat_change, 99),
               srv_cpu, p0.rss_kib, p1.rss_kib, p2.rss_kib, lg_cpu, phase_s,
               cfg.connect_rooms ? "rooms" : "spread");
    fflush(stdout);
    if (cfg.cdf_path != NULL && cfg.mode == MODE_FANOUT)
        write_cdf(cfg.cdf_path, &lat_delivery);

    for (uint32_t u = 0; u < cfg.conns; u++) {
        user_close(u);
        free(users[u].token);
    }
    free(users);
    free(rooms);
    free(lat_delivery.v);
    free(lat_change.v);
    free(lat_connect.v);
    free(lat_on.v);
    free(lat_off.v);
    close(tfd);
    close(ep);
    bool ok = st.missing == 0 && st.unexpected == 0 &&
              (cfg.mode == MODE_CONNECT ? st.connects_done > 0 : ramp_ready >= cfg.conns);
    return ok ? 0 : 3;
}
