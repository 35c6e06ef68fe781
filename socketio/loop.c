/*
 * loop.c - the event loop threads of the Socket.IO engine: upgraded sockets, WebSocket
 * framing through wslay, output queues, timers, rooms and the local fan-out.
 *
 * An idle connection costs about a hundred bytes here (STACK-NOTES §9): it holds no wslay
 * context (8.8 KB each) and no libmicrohttpd pool. A wslay context is created when bytes
 * arrive and freed as soon as it holds nothing (no partial frame, no fragmented message, no
 * queued output, no close in progress). wslay is used for what it is good at — parsing and
 * validating client frames (masking, fragments, control frames in the middle of a message,
 * close codes, UTF-8 of text messages, the message size limit) and answering pings and
 * closes. Everything the server sends goes through our own per-connection queue of
 * reference-counted frames instead: a broadcast is encoded once and the same bytes are
 * written to every recipient, and wslay's own output (pong, close) is appended to that same
 * queue from its send callback, so frames never interleave.
 *
 * DESIGN
 *  - One epoll per loop thread, level-triggered. Each loop owns its connections, its rooms
 *    (conversation -> its connections there) and its timer heap; no other thread touches them.
 *  - Other threads talk to a loop through an MPSC queue whose eventfd is written only on
 *    empty -> non-empty; the loop drains it in batches.
 *  - Timers: one deadline per connection (next ping, pong timeout, connect timeout, flush
 *    timeout) in a binary min-heap, plus a FIFO of grace timers (all of one duration, so
 *    appending keeps them sorted); one timerfd per loop armed on the earliest.
 *  - A connection is never freed inside its own callbacks or mid fan-out: sio__conn_close()
 *    detaches it (registry, rooms) at once, and the socket and memory go at the end of the
 *    loop iteration (or once its last frames are written, when asked to flush).
 *  - Output: when a connection has nothing queued, a frame is send()-ed directly; only the
 *    unsent tail is queued (and EPOLLOUT armed). A reader that lets more than
 *    MAX_PAYLOAD_BYTES pile up is disconnected ([SLOW]).
 */
#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <sys/uio.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "common/log.h"
#include "common/metrics.h"
#include "common/xmalloc.h"
#include "socketio/sio_internal.h"

#define SIO_RBUF_SIZE 16384

struct sio_outchunk {
    struct sio_outchunk *next;
    struct sio_sbuf *buf;
    uint32_t off;
};

/* ---- shared buffers and frames ------------------------------------------------------- */

struct sio_sbuf *sio_sbuf_new(size_t len)
{
    struct sio_sbuf *b = xmalloc(sizeof(*b) + len);
    atomic_init(&b->refs, 1);
    b->len = (uint32_t)len;
    return b;
}

void sio_sbuf_release(struct sio_sbuf *b)
{
    if (b != NULL && atomic_fetch_sub_explicit(&b->refs, 1, memory_order_acq_rel) == 1)
        free(b);
}

size_t sio__ws_header_len(size_t len)
{
    return len < 126 ? 2 : len < 65536 ? 4 : 10;
}

size_t sio__ws_header_write(uint8_t *out, uint8_t opcode, size_t len)
{
    out[0] = (uint8_t)(0x80u | (opcode & 0x0fu));
    if (len < 126) {
        out[1] = (uint8_t)len;
        return 2;
    }
    if (len < 65536) {
        out[1] = 126;
        out[2] = (uint8_t)(len >> 8);
        out[3] = (uint8_t)len;
        return 4;
    }
    out[1] = 127;
    for (int i = 0; i < 8; i++)
        out[2 + i] = (uint8_t)((uint64_t)len >> (56 - 8 * i));
    return 10;
}

struct sio_sbuf *sio_sbuf_frame(uint8_t opcode, const void *payload, size_t len)
{
    size_t h = sio__ws_header_len(len);
    struct sio_sbuf *b = sio_sbuf_new(h + len);
    sio__ws_header_write(b->data, opcode, len);
    if (len > 0)
        memcpy(b->data + h, payload, len);
    return b;
}

int sio__ws_accept(const char *key, char out[29])
{
    static const char guid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
    size_t klen = strlen(key);
    if (klen == 0 || klen > 64)
        return -1;
    char buf[64 + sizeof(guid)];
    memcpy(buf, key, klen);
    memcpy(buf + klen, guid, sizeof(guid) - 1);
    unsigned char sha[EVP_MAX_MD_SIZE];
    unsigned int shalen = 0;
    const EVP_MD *sha1 = util_sha1();
    if (sha1 == NULL || EVP_Digest(buf, klen + sizeof(guid) - 1, sha, &shalen, sha1, NULL) != 1 ||
        shalen != 20)
        return -1;
    EVP_EncodeBlock((unsigned char *)out, sha, 20);
    out[28] = '\0';
    return 0;
}

/* ---- queues --------------------------------------------------------------------------- */

void sio__free_secret(char *s)
{
    if (s == NULL)
        return;
    explicit_bzero(s, strlen(s));
    free(s);
}

void sio_msg_free(struct sio_msg *m)
{
    if (m == NULL)
        return;
    free(m->extra);
    if (m->hello != NULL)
        sio_sbuf_release(m->hello);
    sio__free_secret(m->jwt);
    sio__free_secret(m->session);
    sio__free_secret(m->qtoken);
    if (m->probing && m->poll != NULL)
        sio__poll_probe_gone(m->poll); /* a probe the loop did not take */
    store_person_clear(&m->person);
    store_id_list_free(&m->convs);
    free(m->body);
    sio__poll_release(m->poll);
    free(m);
}

/* The loop whose thread runs (NULL elsewhere). */
static _Thread_local struct sio_loop *tls_loop;

void sio__mpsc_push(struct sio_mpsc *q, struct sio_msg *m)
{
    m->next = NULL;
    pthread_mutex_lock(&q->mu);
    bool was_empty = q->head == NULL;
    if (q->tail != NULL)
        q->tail->next = m;
    else
        q->head = m;
    q->tail = m;
    pthread_mutex_unlock(&q->mu);
    if (q->owner != NULL && q->owner == tls_loop) {
        q->self_pending = true;
        return;
    }
    if (was_empty) {
        uint64_t one = 1;
        ssize_t r = write(q->efd, &one, sizeof(one));
        (void)r; /* an eventfd write only fails on overflow, which leaves it readable anyway */
    }
}

static struct sio_msg *mpsc_take(struct sio_mpsc *q)
{
    if (!q->self_pending) {
        uint64_t v;
        ssize_t r = read(q->efd, &v, sizeof(v));
        (void)r;
    }
    /* A count another thread left in the eventfd only costs one empty drain later. */
    q->self_pending = false;
    pthread_mutex_lock(&q->mu);
    struct sio_msg *m = q->head;
    q->head = q->tail = NULL;
    pthread_mutex_unlock(&q->mu);
    return m;
}

/* ---- timers --------------------------------------------------------------------------- */

#define HEAP_NONE UINT32_MAX

static void heap_swap(struct sio_loop *l, size_t a, size_t b)
{
    struct sio_conn *t = l->heap[a];
    l->heap[a] = l->heap[b];
    l->heap[b] = t;
    l->heap[a]->heap_idx = (uint32_t)a;
    l->heap[b]->heap_idx = (uint32_t)b;
}

static void heap_up(struct sio_loop *l, size_t i)
{
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (l->heap[p]->deadline_ms <= l->heap[i]->deadline_ms)
            break;
        heap_swap(l, i, p);
        i = p;
    }
}

static void heap_down(struct sio_loop *l, size_t i)
{
    for (;;) {
        size_t a = 2 * i + 1, b = a + 1, m = i;
        if (a < l->heap_len && l->heap[a]->deadline_ms < l->heap[m]->deadline_ms)
            m = a;
        if (b < l->heap_len && l->heap[b]->deadline_ms < l->heap[m]->deadline_ms)
            m = b;
        if (m == i)
            return;
        heap_swap(l, i, m);
        i = m;
    }
}

static void heap_remove(struct sio_loop *l, struct sio_conn *c)
{
    size_t i = c->heap_idx;
    if (i == HEAP_NONE)
        return;
    c->heap_idx = HEAP_NONE;
    l->heap_len--;
    if (i == l->heap_len)
        return;
    l->heap[i] = l->heap[l->heap_len];
    l->heap[i]->heap_idx = (uint32_t)i;
    heap_up(l, i);
    heap_down(l, l->heap[i]->heap_idx);
}

/* Places c in the heap at c->deadline_ms (insert or move). */
static void heap_set(struct sio_loop *l, struct sio_conn *c)
{
    if (c->heap_idx == HEAP_NONE) {
        if (l->heap_len == l->heap_cap) {
            l->heap_cap = l->heap_cap ? l->heap_cap * 2 : 256;
            l->heap = xrealloc(l->heap, l->heap_cap * sizeof(*l->heap));
        }
        c->heap_idx = (uint32_t)l->heap_len;
        l->heap[l->heap_len++] = c;
        heap_up(l, c->heap_idx);
        return;
    }
    heap_up(l, c->heap_idx);
    heap_down(l, c->heap_idx);
}

void sio__conn_timer_update(struct sio_conn *c)
{
    heap_set(c->loop, c);
}

static void timer_arm(struct sio_loop *l)
{
    int64_t next = INT64_MAX;
    if (l->heap_len > 0)
        next = l->heap[0]->deadline_ms;
    if (l->grace_head != NULL && l->grace_head->deadline_ms < next)
        next = l->grace_head->deadline_ms;
    if (l->linger_head != NULL && l->linger_head->deadline_ms < next)
        next = l->linger_head->deadline_ms;
    if (l->stopping && l->stop_deadline_ms < next)
        next = l->stop_deadline_ms;
    if (next == l->armed_ms)
        return;
    l->armed_ms = next;
    struct itimerspec its = {0};
    if (next != INT64_MAX) {
        if (next < 1)
            next = 1;
        its.it_value.tv_sec = next / 1000;
        its.it_value.tv_nsec = (next % 1000) * 1000000;
    }
    timerfd_settime(l->tfd, TFD_TIMER_ABSTIME, &its, NULL);
}

int64_t sio__mono_ms(void)
{
    return util_mono_ms();
}

/* ---- output --------------------------------------------------------------------------- */

static void conn_epoll(struct sio_conn *c, bool want_out)
{
    bool have = (c->flags & SIO_CF_WANT_OUT) != 0;
    if (have == want_out)
        return;
    struct epoll_event ev = {.events = (want_out ? EPOLLOUT : 0u) |
                                       (c->state == SIO_ST_FLUSHING ? 0u : EPOLLIN | EPOLLRDHUP),
                             .data.ptr = c};
    if (epoll_ctl(c->loop->epfd, EPOLL_CTL_MOD, c->fd, &ev) == 0) {
        if (want_out)
            c->flags |= SIO_CF_WANT_OUT;
        else
            c->flags &= (uint8_t)~SIO_CF_WANT_OUT;
    }
}

/* Output queue entries come from a small per-loop free list: a broadcast queues one per
 * recipient and the flush after the batch gives it back, so the steady state allocates
 * nothing. The list is bounded, so a burst's entries go back to malloc. */
#define SIO_CHUNK_FREE_MAX 1024

static struct sio_outchunk *chunk_get(struct sio_loop *l)
{
    struct sio_outchunk *o = l->chunk_free;
    if (o == NULL)
        return xmalloc(sizeof(*o));
    l->chunk_free = o->next;
    l->nchunk_free--;
    return o;
}

static void chunk_put(struct sio_loop *l, struct sio_outchunk *o)
{
    if (l->nchunk_free >= SIO_CHUNK_FREE_MAX) {
        free(o);
        return;
    }
    o->next = l->chunk_free;
    l->chunk_free = o;
    l->nchunk_free++;
}

static void conn_reap_now(struct sio_conn *c);

/* Writes what is queued; returns -1 when the socket failed. */
static int conn_flush(struct sio_conn *c)
{
    while (c->out_head != NULL) {
        struct iovec iov[16];
        int n = 0;
        for (struct sio_outchunk *o = c->out_head; o != NULL && n < 16; o = o->next, n++) {
            iov[n].iov_base = o->buf->data + o->off;
            iov[n].iov_len = o->buf->len - o->off;
        }
        /* One frame (the usual case of a broadcast): send() is the cheaper system call, it
         * skips the kernel's copy and check of a msghdr and its iovec. */
        ssize_t w;
        if (n == 1) {
            w = send(c->fd, iov[0].iov_base, iov[0].iov_len, MSG_NOSIGNAL);
        } else {
            struct msghdr mh = {.msg_iov = iov, .msg_iovlen = (size_t)n};
            w = sendmsg(c->fd, &mh, MSG_NOSIGNAL);
        }
        if (w < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                break;
            if (errno == EINTR)
                continue;
            return -1;
        }
        c->out_bytes -= (size_t)w;
        while (w > 0) {
            struct sio_outchunk *o = c->out_head;
            size_t left = o->buf->len - o->off;
            if ((size_t)w < left) {
                o->off += (uint32_t)w;
                break;
            }
            w -= (ssize_t)left;
            c->out_head = o->next;
            if (c->out_head == NULL)
                c->out_tail = NULL;
            sio_sbuf_release(o->buf);
            chunk_put(c->loop, o);
        }
    }
    conn_epoll(c, c->out_head != NULL);
    return 0;
}

/* Queues b at the tail; the caller has taken the reference the entry holds. */
static void out_append_ref(struct sio_conn *c, struct sio_sbuf *b, size_t off)
{
    struct sio_outchunk *o = chunk_get(c->loop);
    o->next = NULL;
    o->buf = b;
    o->off = (uint32_t)off;
    if (c->out_tail != NULL)
        c->out_tail->next = o;
    else
        c->out_head = o;
    c->out_tail = o;
    c->out_bytes += b->len - off;
}

static void out_append(struct sio_conn *c, struct sio_sbuf *b, size_t off)
{
    sio_sbuf_ref(b);
    out_append_ref(c, b, off);
}

void sio__conn_send_sbuf(struct sio_conn *c, struct sio_sbuf *b)
{
    if (c->state == SIO_ST_DEAD)
        return;
    if (c->fd < 0) {
        /* Polling: the frame's payload is the Engine.IO message; close frames have none. */
        uint8_t op = b->data[0] & 0x0f;
        size_t n = b->data[1] & 0x7f;
        size_t h = n < 126 ? 2 : n == 126 ? 4 : 10;
        if (op == WSLAY_TEXT_FRAME || op == WSLAY_BINARY_FRAME)
            sio__poll_send(c, op == WSLAY_BINARY_FRAME, b->data + h, b->len - h);
        return;
    }
    if (c->out_head == NULL) {
        ssize_t w;
        do {
            w = send(c->fd, b->data, b->len, MSG_NOSIGNAL);
        } while (w < 0 && errno == EINTR);
        if (w == (ssize_t)b->len)
            return;
        if (w < 0) {
            if (errno != EAGAIN && errno != EWOULDBLOCK) {
                sio__conn_close(c, "transport error", 0, 0);
                return;
            }
            w = 0;
        }
        out_append(c, b, (size_t)w);
        conn_epoll(c, true);
    } else {
        out_append(c, b, 0);
    }
    if ((int64_t)c->out_bytes > c->loop->e->cfg->max_payload_bytes && c->state != SIO_ST_FLUSHING) {
        log_warnx("[SLOW] sid=%016llx fd=%d unsent=%zu: disconnecting a slow reader",
                  (unsigned long long)c->sid, c->fd, c->out_bytes);
        METRIC_INC(slow_reader_disconnects_total);
        sio__conn_close(c, "slow reader", 0, 0);
    }
}

void sio_conn_send_message(struct sio_conn *c, bool binary, const void *data, size_t len)
{
    if (c->fd < 0) {
        if (c->state != SIO_ST_DEAD)
            sio__poll_send(c, binary, data, len);
        return;
    }
    struct sio_sbuf *b = sio_sbuf_frame(binary ? WSLAY_BINARY_FRAME : WSLAY_TEXT_FRAME, data, len);
    sio__conn_send_sbuf(c, b);
    sio_sbuf_release(b);
}

static void send_ws_close(struct sio_conn *c, uint16_t code)
{
    if (c->fd < 0)
        return;
    uint8_t p[2] = {(uint8_t)(code >> 8), (uint8_t)code};
    struct sio_sbuf *b = sio_sbuf_frame(WSLAY_CONNECTION_CLOSE, p, 2);
    sio__conn_send_sbuf(c, b);
    sio_sbuf_release(b);
}

/* ---- aux ------------------------------------------------------------------------------ */

struct sio_aux *sio__aux(struct sio_conn *c)
{
    if (c->aux == NULL)
        c->aux = xcalloc(1, sizeof(*c->aux));
    return c->aux;
}

void sio__aux_maybe_free(struct sio_conn *c)
{
    struct sio_aux *a = c->aux;
    if (a == NULL || a->jwt || a->qtoken || a->session || a->pre || a->dec || a->rl_ts || a->poll)
        return;
    free(a);
    c->aux = NULL;
}

static void aux_free(struct sio_conn *c)
{
    struct sio_aux *a = c->aux;
    if (a == NULL)
        return;
    sio__free_secret(a->jwt);
    sio__free_secret(a->qtoken);
    sio__free_secret(a->session);
    free(a->pre);
    if (a->dec != NULL) {
        sio_decoder_reset(a->dec);
        free(a->dec);
    }
    free(a->rl_ts);
    sio__poll_release(a->poll);
    free(a);
    c->aux = NULL;
}

/* ---- rooms ---------------------------------------------------------------------------- */

void sio__room_join(struct sio_loop *l, struct sio_conn *c, const char *cid)
{
    for (struct sio_member *m = c->rooms; m != NULL; m = m->cnext)
        if (strcmp(m->room->cid, cid) == 0)
            return;
    struct sio_room *r;
    HASH_FIND_STR(l->rooms, cid, r);
    if (r == NULL) {
        r = xcalloc(1, sizeof(*r));
        snprintf(r->cid, sizeof(r->cid), "%s", cid);
        HASH_ADD_STR(l->rooms, cid, r);
    }
    struct sio_member *m = xmalloc(sizeof(*m));
    m->c = c;
    m->room = r;
    m->rprev = NULL;
    m->rnext = r->head;
    if (r->head != NULL)
        r->head->rprev = m;
    r->head = m;
    m->cnext = c->rooms;
    c->rooms = m;
}

static void member_unlink(struct sio_loop *l, struct sio_member *m)
{
    struct sio_room *r = m->room;
    if (m->rprev != NULL)
        m->rprev->rnext = m->rnext;
    else
        r->head = m->rnext;
    if (m->rnext != NULL)
        m->rnext->rprev = m->rprev;
    if (r->head == NULL) {
        HASH_DEL(l->rooms, r);
        free(r);
    }
    free(m);
}

bool sio__room_leave(struct sio_loop *l, struct sio_conn *c, const char *cid)
{
    for (struct sio_member **pm = &c->rooms; *pm != NULL; pm = &(*pm)->cnext) {
        struct sio_member *m = *pm;
        if (strcmp(m->room->cid, cid) == 0) {
            *pm = m->cnext;
            member_unlink(l, m);
            return true;
        }
    }
    return false;
}

static void rooms_leave_all(struct sio_loop *l, struct sio_conn *c)
{
    while (c->rooms != NULL) {
        struct sio_member *m = c->rooms;
        c->rooms = m->cnext;
        member_unlink(l, m);
    }
}

/* ---- wslay ---------------------------------------------------------------------------- */

static ssize_t ws_recv_cb(wslay_event_context_ptr ctx, uint8_t *buf, size_t len, int flags,
                          void *ud)
{
    (void)flags;
    struct sio_conn *c = ud;
    if (c->state == SIO_ST_FLUSHING || c->state == SIO_ST_DEAD) {
        wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
        return -1;
    }
    struct sio_aux *a = c->aux;
    if (a != NULL && a->pre != NULL) {
        size_t n = a->pre_len - a->pre_off;
        if (n > len)
            n = len;
        memcpy(buf, a->pre + a->pre_off, n);
        a->pre_off += n;
        if (a->pre_off == a->pre_len) {
            free(a->pre);
            a->pre = NULL;
        }
        c->ws->recv_bytes += n;
        return (ssize_t)n;
    }
    struct sio_loop *l = c->loop;
    if (l->rbuf_off < l->rbuf_len) {
        /* What the fast path read but did not take (conn_on_readable) */
        size_t n = l->rbuf_len - l->rbuf_off;
        if (n > len)
            n = len;
        memcpy(buf, l->rbuf + l->rbuf_off, n);
        l->rbuf_off += n;
        c->ws->recv_bytes += n;
        return (ssize_t)n;
    }
    ssize_t r;
    do {
        r = recv(c->fd, buf, len, 0);
    } while (r < 0 && errno == EINTR);
    if (r > 0) {
        c->ws->recv_bytes += (uint64_t)r;
        return r;
    }
    if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
        wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
    else
        wslay_event_set_error(ctx, WSLAY_ERR_CALLBACK_FAILURE);
    return -1;
}

/* wslay's own output (pong, close) joins our queue: accept it all, so wslay never keeps a
 * partly sent frame and never interleaves with ours. */
static ssize_t ws_send_cb(wslay_event_context_ptr ctx, const uint8_t *data, size_t len, int flags,
                          void *ud)
{
    (void)ctx;
    (void)flags;
    struct sio_conn *c = ud;
    struct sio_sbuf *b = sio_sbuf_new(len);
    memcpy(b->data, data, len);
    sio__conn_send_sbuf(c, b);
    sio_sbuf_release(b);
    return (ssize_t)len;
}

static void ws_frame_start_cb(wslay_event_context_ptr ctx,
                              const struct wslay_event_on_frame_recv_start_arg *arg, void *ud)
{
    (void)ctx;
    struct sio_conn *c = ud;
    uint64_t n = arg->payload_length;
    /* Exact, since wslay refuses non-minimal lengths; client frames carry a 4-byte mask. */
    c->ws->cur_frame_bytes = 2 + (n >= 65536 ? 8 : n >= 126 ? 2 : 0) + 4 + n;
    c->ws->frame_open = true;
    if ((arg->opcode == WSLAY_TEXT_FRAME || arg->opcode == WSLAY_BINARY_FRAME) && !arg->fin)
        c->ws->frag_open = true;
    else if (arg->opcode == WSLAY_CONTINUATION_FRAME && arg->fin)
        c->ws->frag_open = false;
}

static void ws_frame_end_cb(wslay_event_context_ptr ctx, void *ud)
{
    (void)ctx;
    struct sio_conn *c = ud;
    c->ws->done_bytes += c->ws->cur_frame_bytes;
    c->ws->cur_frame_bytes = 0;
    c->ws->frame_open = false;
}

static void ws_msg_cb(wslay_event_context_ptr ctx, const struct wslay_event_on_msg_recv_arg *arg,
                      void *ud)
{
    (void)ctx;
    struct sio_conn *c = ud;
    if (c->state == SIO_ST_FLUSHING || c->state == SIO_ST_DEAD)
        return;
    if (arg->opcode == WSLAY_TEXT_FRAME || arg->opcode == WSLAY_BINARY_FRAME)
        sio__session_on_message(c, arg->msg, arg->msg_length, arg->opcode == WSLAY_BINARY_FRAME);
}

static const struct wslay_event_callbacks ws_callbacks = {
    .recv_callback = ws_recv_cb,
    .send_callback = ws_send_cb,
    .on_frame_recv_start_callback = ws_frame_start_cb,
    .on_frame_recv_end_callback = ws_frame_end_cb,
    .on_msg_recv_callback = ws_msg_cb,
};

static void ws_free(struct sio_conn *c)
{
    if (c->ws == NULL)
        return;
    wslay_event_context_free(c->ws->ctx);
    free(c->ws);
    c->ws = NULL;
    c->loop->freed_ctx++;
}

static int ws_create(struct sio_conn *c)
{
    struct sio_ws *w = xcalloc(1, sizeof(*w));
    if (wslay_event_context_server_init(&w->ctx, &ws_callbacks, c) != 0) {
        free(w);
        return -1;
    }
    wslay_event_config_set_max_recv_msg_length(w->ctx,
                                               (uint64_t)c->loop->e->cfg->max_payload_bytes);
    c->ws = w;
    return 0;
}

/* True when the context holds nothing that would be lost by freeing it (STACK-NOTES §9). */
static bool ws_idle(const struct sio_conn *c)
{
    const struct sio_ws *w = c->ws;
    return w->recv_bytes == w->done_bytes && !w->frame_open && !w->frag_open &&
           wslay_event_get_queued_msg_count(w->ctx) == 0 && !wslay_event_want_write(w->ctx) &&
           !wslay_event_get_close_received(w->ctx) && !wslay_event_get_close_sent(w->ctx) &&
           (c->aux == NULL || c->aux->pre == NULL);
}

/* The fast path of an idle connection: complete, final, masked text or binary frames of at
 * most SIO_FAST_MAX bytes (pongs, acks, small events, and the Socket.IO CONNECT with its
 * token: nearly all client traffic) are unmasked and handed to the session without creating a
 * wslay context. Anything else — a control frame, a fragment, a longer or partial frame, a
 * length not in its minimal form, invalid UTF-8, RSV bits — stops it, and wslay takes the
 * rest from the first byte it did not consume. Returns the bytes consumed.
 * (A CONNECT carries a JWT, 150–400 bytes: through wslay it cost a context, 8.8 KB zeroed,
 * and about 17 000 instructions per connect, against 3 000 here; callgrind.) */
#define SIO_FAST_MAX 1024
static size_t fast_frames(struct sio_conn *c, const uint8_t *p, size_t n)
{
    size_t max = (size_t)c->loop->e->cfg->max_payload_bytes;
    size_t off = 0;
    while (n - off >= 6) {
        uint8_t b0 = p[off], b1 = p[off + 1];
        uint8_t op = b0 & 0x0f;
        size_t len = b1 & 0x7f;
        size_t hlen = 6;
        if (len == 126) {
            if (n - off < 8)
                break;
            len = (size_t)p[off + 2] << 8 | p[off + 3];
            hlen = 8;
            if (len < 126) /* not minimal: wslay refuses it */
                break;
        }
        if ((b0 & 0xf0) != 0x80 || (b1 & 0x80) == 0 || len > SIO_FAST_MAX || len > max ||
            (op != WSLAY_TEXT_FRAME && op != WSLAY_BINARY_FRAME) || n - off < hlen + len)
            break;
        const uint8_t *key = p + off + hlen - 4;
        const uint8_t *src = p + off + hlen;
        uint8_t msg[SIO_FAST_MAX];
        for (size_t i = 0; i < len; i++)
            msg[i] = src[i] ^ key[i & 3];
        if (op == WSLAY_TEXT_FRAME && !sio_utf8_valid(msg, len, true))
            break; /* wslay closes with 1007 */
        off += hlen + len;
        sio__session_on_message(c, msg, len, op == WSLAY_BINARY_FRAME);
        if (c->state == SIO_ST_FLUSHING || c->state == SIO_ST_DEAD)
            break;
    }
    return off;
}

static void conn_on_readable(struct sio_conn *c)
{
    struct sio_loop *l = c->loop;
    if (c->ws == NULL && (c->aux == NULL || c->aux->pre == NULL)) {
        ssize_t r;
        do {
            r = recv(c->fd, l->rbuf, SIO_RBUF_SIZE, 0);
        } while (r < 0 && errno == EINTR);
        if (r == 0) {
            sio__conn_close(c, "transport close", 0, 0);
            return;
        }
        if (r < 0) {
            if (errno != EAGAIN && errno != EWOULDBLOCK)
                sio__conn_close(c, "transport error", 0, 0);
            return;
        }
        size_t used = fast_frames(c, l->rbuf, (size_t)r);
        if (used == (size_t)r || c->state == SIO_ST_FLUSHING || c->state == SIO_ST_DEAD)
            return;
        l->rbuf_off = used;
        l->rbuf_len = (size_t)r;
    }
    if (c->ws == NULL && ws_create(c) != 0) {
        l->rbuf_off = l->rbuf_len = 0;
        sio__conn_close(c, "out of memory", 0, 0);
        return;
    }
    int r = wslay_event_recv(c->ws->ctx);
    /* wslay reads until the socket would block, so the rest of rbuf was taken, unless it
     * stopped reading (a close, an error): then the rest is dropped with the connection. */
    l->rbuf_off = l->rbuf_len = 0;
    if (c->state == SIO_ST_FLUSHING || c->state == SIO_ST_DEAD)
        return;
    if (r != 0) {
        sio__conn_close(c, "transport close", 0, 0);
        return;
    }
    r = wslay_event_send(c->ws->ctx);
    if (c->state == SIO_ST_FLUSHING || c->state == SIO_ST_DEAD)
        return;
    if (r != 0) {
        sio__conn_close(c, "transport error", 0, 0);
        return;
    }
    if (!wslay_event_want_read(c->ws->ctx) && !wslay_event_want_write(c->ws->ctx)) {
        /* The close handshake is done: the peer closed, or wslay refused a frame (1002
         * protocol error, 1007 invalid UTF-8, 1009 too big) and sent its close. */
        const char *reason = "transport close";
        char buf[48];
        if (wslay_event_get_close_received(c->ws->ctx) &&
            wslay_event_get_status_code_sent(c->ws->ctx) !=
                wslay_event_get_status_code_received(c->ws->ctx)) {
            snprintf(buf, sizeof(buf), "websocket close %u",
                     (unsigned)wslay_event_get_status_code_sent(c->ws->ctx));
            reason = buf;
        } else if (!wslay_event_get_close_received(c->ws->ctx)) {
            snprintf(buf, sizeof(buf), "websocket error %u",
                     (unsigned)wslay_event_get_status_code_sent(c->ws->ctx));
            reason = buf;
        }
        sio__conn_close(c, reason, SIO_CLOSE_FLUSH, 0);
        return;
    }
    if (ws_idle(c))
        ws_free(c);
}

/* ---- connection lifecycle ------------------------------------------------------------- */

static void list_unlink(struct sio_conn **head, struct sio_conn *c)
{
    if (c->prev != NULL)
        c->prev->next = c->next;
    else
        *head = c->next;
    if (c->next != NULL)
        c->next->prev = c->prev;
    c->prev = c->next = NULL;
}

static void list_push(struct sio_conn **head, struct sio_conn *c)
{
    c->prev = NULL;
    c->next = *head;
    if (*head != NULL)
        (*head)->prev = c;
    *head = c;
}

void sio__conn_close(struct sio_conn *c, const char *reason, int flags, uint16_t ws_code)
{
    if (c->state == SIO_ST_FLUSHING || c->state == SIO_ST_DEAD)
        return;
    struct sio_loop *l = c->loop;
    sio__session_detach(c, reason, (flags & SIO_CLOSE_SKIP_GRACE) != 0);
    rooms_leave_all(l, c);
    if (c->xflags & SIO_XF_POLL_SID) {
        c->xflags &= (uint8_t)~SIO_XF_POLL_SID;
        sio__poll_forget(l->e, c->sid);
    }
    if (c->fd < 0) {
        /* Polling: the close packet goes to the waiting (or next) GET. */
        sio__poll_close(c);
        flags &= ~SIO_CLOSE_FLUSH;
        ws_code = 0;
    }
    if (ws_code != 0)
        send_ws_close(c, ws_code);
    if (c->state == SIO_ST_DEAD)
        return; /* the close frame could not be written */
    if ((flags & SIO_CLOSE_FLUSH) && c->out_head != NULL) {
        c->state = SIO_ST_FLUSHING;
        c->flags &= (uint8_t)~SIO_CF_WANT_OUT;
        conn_epoll(c, true);
        c->deadline_ms = sio__mono_ms() + 1000;
        heap_set(l, c);
        return;
    }
    c->state = SIO_ST_DEAD;
    heap_remove(l, c);
    list_unlink(&l->conns, c);
    l->nconns--;
    list_push(&l->reap, c);
}

static void pollconn_del(struct sio_loop *l, uint64_t serial)
{
    struct sio_pollconn *pc;
    HASH_FIND(hh, l->pollconns, &serial, sizeof(serial), pc);
    if (pc != NULL) {
        HASH_DEL(l->pollconns, pc);
        free(pc);
    }
}

/* Frees the socket and memory of a connection already detached. */
static void conn_reap_now(struct sio_conn *c)
{
    struct sio_loop *l = c->loop;
    if (c->fd >= 0) {
        if (!(c->xflags & SIO_XF_SOLE_FD))
            epoll_ctl(l->epfd, EPOLL_CTL_DEL, c->fd, NULL);
        if ((size_t)c->fd < l->e->fd_limit && l->by_fd[c->fd] == c)
            l->by_fd[c->fd] = NULL;
        close(c->fd);
    }
    if (l->pollconns != NULL)
        pollconn_del(l, c->serial); /* a polling session, upgraded or not */
    ws_free(c);
    aux_free(c);
    while (c->out_head != NULL) {
        struct sio_outchunk *o = c->out_head;
        c->out_head = o->next;
        sio_sbuf_release(o->buf);
        chunk_put(l, o);
    }
    free(c);
}

static void flushing_done(struct sio_conn *c)
{
    struct sio_loop *l = c->loop;
    c->state = SIO_ST_DEAD;
    heap_remove(l, c);
    list_unlink(&l->conns, c);
    l->nconns--;
    list_push(&l->reap, c);
}

static void reap_all(struct sio_loop *l)
{
    while (l->reap != NULL) {
        struct sio_conn *c = l->reap;
        l->reap = c->next;
        conn_reap_now(c);
    }
}

static void conn_new(struct sio_loop *l, struct sio_msg *m)
{
    int one = 1;
    /* The accept loop's sockets are non-blocking and TCP_NODELAY already (inherited from the
     * listening socket): two syscalls fewer per connect. */
    if (m->hello == NULL) {
        int fl = fcntl(m->fd, F_GETFL);
        if (fl >= 0)
            fcntl(m->fd, F_SETFL, fl | O_NONBLOCK);
        setsockopt(m->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    }
    struct sio_conn *c = xcalloc(1, sizeof(*c));
    c->fd = m->fd;
    m->fd = -1;
    if (m->eio_echo)
        c->flags |= SIO_CF_EIO_ECHO;
    c->loop = l;
    c->heap_idx = HEAP_NONE;
    c->serial = ((uint64_t)l->idx << 48) | ++l->next_serial;
    util_random_bytes(&c->sid, sizeof(c->sid));
    c->state = SIO_ST_AWAIT_CONNECT;
    if (m->hello != NULL)
        c->xflags |= SIO_XF_SOLE_FD;
    struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP, .data.ptr = c};
    if (epoll_ctl(l->epfd, EPOLL_CTL_ADD, c->fd, &ev) != 0) {
        log_warn("epoll_ctl(ADD, %d)", c->fd);
        close(c->fd);
        free(c);
        return;
    }
    list_push(&l->conns, c);
    l->nconns++;
    if ((size_t)c->fd < l->e->fd_limit)
        l->by_fd[c->fd] = c;
    if (m->poll != NULL) {
        /* A WebSocket probing the upgrade of a polling session: no open packet; it has
         * ping_timeout to complete the upgrade. */
        struct sio_poll *p = m->poll;
        sio__aux(c)->poll = p;
        m->poll = NULL;
        c->state = SIO_ST_PROBE;
        pthread_mutex_lock(&p->mu);
        p->probe_fd = c->fd;
        p->probe_serial = c->serial;
        if (m->probing)
            p->probing--;
        m->probing = false;
        pthread_mutex_unlock(&p->mu);
        c->deadline_ms = sio__mono_ms() + l->e->cfg->ping_timeout_ms;
        heap_set(l, c);
    } else {
        if (m->jwt || m->qtoken || m->session) {
            struct sio_aux *a = sio__aux(c);
            a->jwt = m->jwt;
            a->qtoken = m->qtoken;
            a->session = m->session;
            m->jwt = m->qtoken = m->session = NULL;
        }
        if (m->hello != NULL) {
            /* The 101 waits in the queue: the open packet queues behind it and both leave
             * in one write. */
            out_append(c, m->hello, 0);
            sio__session_open(c);
            if (c->state != SIO_ST_DEAD && conn_flush(c) != 0) {
                sio__conn_close(c, "transport error", 0, 0);
                return;
            }
        } else {
            sio__session_open(c);
        }
        if (c->state != SIO_ST_AWAIT_CONNECT)
            return;
    }
    if (m->extra_len > 0) {
        struct sio_aux *a = sio__aux(c);
        a->pre = m->extra;
        a->pre_len = m->extra_len;
        a->pre_off = 0;
        m->extra = NULL;
        /* epoll will not report bytes that were already read by libmicrohttpd */
        conn_on_readable(c);
        if (c->state == SIO_ST_PROBE && (c->flags & SIO_CF_UPGRADE) && c->aux != NULL &&
            c->aux->poll != NULL) {
            /* "5" came with those bytes: no event will come to complete the upgrade, so it
             * completes after this batch (run_syncs), not here inside the queue's drain. */
            struct sio_sync *y = xmalloc(sizeof(*y));
            y->p = c->aux->poll;
            atomic_fetch_add_explicit(&y->p->refs, 1, memory_order_relaxed);
            y->next = l->syncs;
            l->syncs = y;
        }
    }
}

/* A polling session: a connection without an fd (polling.c). */
static void conn_new_poll(struct sio_loop *l, struct sio_msg *m)
{
    struct sio_poll *p = m->poll;
    struct sio_conn *c = xcalloc(1, sizeof(*c));
    c->fd = -1;
    c->loop = l;
    c->heap_idx = HEAP_NONE;
    c->serial = ((uint64_t)l->idx << 48) | ++l->next_serial;
    c->sid = p->sid_u64;
    if (m->eio_echo)
        c->flags |= SIO_CF_EIO_ECHO;
    c->state = SIO_ST_AWAIT_CONNECT;
    pthread_mutex_lock(&p->mu);
    p->serial = c->serial;
    pthread_mutex_unlock(&p->mu);
    struct sio_aux *a = sio__aux(c);
    a->poll = p;
    m->poll = NULL;
    a->jwt = m->jwt;
    a->qtoken = m->qtoken;
    a->session = m->session;
    m->jwt = m->qtoken = m->session = NULL;
    struct sio_pollconn *pc = xcalloc(1, sizeof(*pc));
    pc->serial = c->serial;
    pc->c = c;
    HASH_ADD(hh, l->pollconns, serial, sizeof(pc->serial), pc);
    list_push(&l->conns, c);
    l->nconns++;
    sio__session_open(c);
}

struct poll_feed {
    struct sio_conn *c;
};

static int poll_packet_cb(void *cls, const struct eio_packet *pk)
{
    struct sio_conn *c = cls;
    sio__session_on_packet(c, pk);
    return (c->state == SIO_ST_DEAD || c->state == SIO_ST_FLUSHING) ? 1 : 0;
}

static void on_poll_data(struct sio_loop *l, struct sio_msg *m)
{
    uint64_t serial;
    pthread_mutex_lock(&m->poll->mu);
    serial = m->poll->serial;
    pthread_mutex_unlock(&m->poll->mu);
    struct sio_conn *c = sio__conn_find(l, -1, serial);
    if (c == NULL || c->fd >= 0)
        return; /* gone, or upgraded to WebSocket since */
    if (m->body == NULL) {
        sio__conn_close(c, "transport error", 0, 0);
        return;
    }
    sio__poll_batch(m->poll, true);
    int rc = eio_decode_payload(m->body, m->body_len, poll_packet_cb, c);
    if (rc < 0 && c->state != SIO_ST_DEAD && c->state != SIO_ST_FLUSHING)
        sio__conn_close(c, "parse error", 0, 0);
    sio__poll_batch(m->poll, false);
}

static void replay_packet(void *cls, const struct eio_packet *pk)
{
    struct sio_conn *c = cls;
    if (pk->binary) {
        sio_conn_send_message(c, true, pk->data, pk->len);
        return;
    }
    uint8_t *buf = xmalloc(pk->len + 1);
    buf[0] = (uint8_t)('0' + pk->type);
    memcpy(buf + 1, pk->data, pk->len);
    sio_conn_send_message(c, false, buf, pk->len + 1);
    free(buf);
}

static void drain_queue(struct sio_loop *l);
static void flush_dirty(struct sio_loop *l);

/* Upgrades to finish between event batches: GETs held during an upgrade (polling.c), whose
 * probe is read now, so that a "5" the client sent before the GET completes the upgrade
 * first, and then the GET is answered; and probes whose "5" came with the bytes
 * libmicrohttpd read (conn_new). Not inside the queue's drain (sio__conn_upgrade drains it
 * again, which would reorder messages), nor mid-batch (it frees the probe, which must not
 * have an event pending). */
static void run_syncs(struct sio_loop *l)
{
    struct sio_sync *later = NULL;
    while (l->syncs != NULL) {
        struct sio_sync *y = l->syncs;
        l->syncs = y->next;
        struct sio_poll *p = y->p;
        pthread_mutex_lock(&p->mu);
        int fd = p->probe_fd;
        uint64_t serial = p->probe_serial;
        bool reading = !p->upgraded && !p->closed;
        bool in_transit = p->probing > 0 && reading;
        pthread_mutex_unlock(&p->mu);
        if (in_transit) {
            /* its probe is still on its way to this loop (its NEW_CONN wakes us again) */
            y->next = later;
            later = y;
            continue;
        }
        struct sio_conn *probe = reading && serial != 0 ? sio__conn_find(l, fd, serial) : NULL;
        if (probe != NULL && probe->state == SIO_ST_PROBE) {
            conn_on_readable(probe);
            if (probe->state == SIO_ST_PROBE && (probe->flags & SIO_CF_UPGRADE))
                sio__conn_upgrade(probe);
        }
        sio__poll_sync_done(p);
        sio__poll_release(p);
        free(y);
    }
    l->syncs = later;
}

void sio__conn_upgrade(struct sio_conn *probe)
{
    struct sio_loop *l = probe->loop;
    probe->flags &= (uint8_t)~SIO_CF_UPGRADE;
    /* The packets of a POST answered before the client sent "5" may still sit in this loop's
     * queue (MHD answers "ok" once they are queued): they come before anything on the
     * WebSocket, so the polling connection takes them now. */
    drain_queue(l);
    flush_dirty(l);
    if (probe->state != SIO_ST_PROBE)
        return;
    struct sio_poll *p = probe->aux->poll;
    uint64_t serial;
    pthread_mutex_lock(&p->mu);
    serial = p->serial;
    pthread_mutex_unlock(&p->mu);
    struct sio_conn *c = sio__conn_find(l, -1, serial);
    if (c == NULL || c->fd >= 0 || c->state == SIO_ST_FLUSHING) {
        sio__conn_close(probe, "upgrade failed", 0, 1011);
        return;
    }
    if (probe->ws != NULL) {
        /* A partial frame sits in the probe's wslay context: finish reading it first (the
         * next read retries; the probe's timer bounds the wait). */
        probe->flags |= SIO_CF_UPGRADE;
        return;
    }
    /* The probe's fd, output and epoll registration move into the session's connection;
     * the probe struct goes without closing the fd. */
    heap_remove(l, probe);
    list_unlink(&l->conns, probe);
    l->nconns--;
    c->fd = probe->fd;
    if ((size_t)c->fd < l->e->fd_limit)
        l->by_fd[c->fd] = c;
    c->out_head = probe->out_head;
    c->out_tail = probe->out_tail;
    c->out_bytes = probe->out_bytes;
    probe->out_head = probe->out_tail = NULL;
    c->flags |= (uint8_t)(probe->flags & SIO_CF_WANT_OUT);
    struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP |
                                       ((c->flags & SIO_CF_WANT_OUT) ? EPOLLOUT : 0u),
                             .data.ptr = c};
    epoll_ctl(l->epfd, EPOLL_CTL_MOD, c->fd, &ev);
    /* Packets still queued for polling go out on the WebSocket, in order. */
    sio__poll_upgraded(p, replay_packet, c);
    c->xflags |= SIO_XF_POLL_SID; /* unmapped when the connection closes */
    sio__poll_release(c->aux->poll);
    c->aux->poll = NULL;
    sio__aux_maybe_free(c);
    aux_free(probe);
    free(probe);
    log_debug("socketio: sid=%016llx upgraded to websocket", (unsigned long long)c->sid);
}

struct sio_conn *sio__conn_find(struct sio_loop *l, int fd, uint64_t serial)
{
    if (fd < 0) {
        struct sio_pollconn *pc;
        HASH_FIND(hh, l->pollconns, &serial, sizeof(serial), pc);
        /* Kept after an upgrade to WebSocket: results asked for while polling still find it */
        if (pc == NULL || pc->c->state == SIO_ST_DEAD)
            return NULL;
        return pc->c;
    }
    if ((size_t)fd >= l->e->fd_limit)
        return NULL;
    struct sio_conn *c = l->by_fd[fd];
    if (c == NULL || c->serial != serial || c->state == SIO_ST_DEAD)
        return NULL;
    return c;
}

/* ---- fan-out -------------------------------------------------------------------------- */

/* Broadcast frames are queued during a batch of messages and written once per connection
 * after it (flush_dirty): several frames for one socket cost one write (SPEC §5). */
static bool conn_queue_coalesced(struct sio_loop *l, struct sio_conn *c, struct sio_sbuf *b)
{
    if (c->fd < 0) {
        sio__conn_send_sbuf(c, b);
        return false;
    }
    out_append_ref(c, b, 0); /* fanout takes the references of a broadcast in one go */
    if (!(c->flags & SIO_CF_DIRTY)) {
        if (l->ndirty == l->dirty_cap) {
            l->dirty_cap = l->dirty_cap ? l->dirty_cap * 2 : 256;
            l->dirty = xrealloc(l->dirty, l->dirty_cap * sizeof(*l->dirty));
        }
        c->flags |= SIO_CF_DIRTY;
        l->dirty[l->ndirty++] = c;
    }
    if ((int64_t)c->out_bytes > l->e->cfg->max_payload_bytes) {
        log_warnx("[SLOW] sid=%016llx fd=%d unsent=%zu: disconnecting a slow reader",
                  (unsigned long long)c->sid, c->fd, c->out_bytes);
        METRIC_INC(slow_reader_disconnects_total);
        sio__conn_close(c, "slow reader", 0, 0);
    }
    return true;
}

/* Writes the coalesced frames; before reap_all, so no connection in the list is freed. */
/* Not inlined (nor fanout): the fan-out's own cost then stands apart in a profile. */
__attribute__((noinline)) static void flush_dirty(struct sio_loop *l)
{
    for (size_t i = 0; i < l->ndirty; i++) {
        struct sio_conn *c = l->dirty[i];
        c->flags &= (uint8_t)~SIO_CF_DIRTY;
        if (c->state == SIO_ST_DEAD || (c->flags & SIO_CF_WANT_OUT))
            continue; /* gone, or EPOLLOUT will write it */
        if (conn_flush(c) != 0) {
            if (c->state == SIO_ST_FLUSHING)
                flushing_done(c);
            else
                sio__conn_close(c, "transport error", 0, 0);
        }
    }
    l->ndirty = 0;
}

__attribute__((noinline)) static void fanout(struct sio_loop *l, struct sio_bcast *b)
{
    uint64_t stamp = ++l->stamp;
    uint64_t delivered = 0;
    unsigned queued = 0; /* queue entries holding b->frame without their reference yet */
    for (size_t i = 0; i < b->nconv; i++) {
        struct sio_room *r;
        HASH_FIND_STR(l->rooms, b->convs[i], r);
        if (r == NULL)
            continue;
        for (struct sio_member *m = r->head; m != NULL;) {
            struct sio_member *next = m->rnext;
            struct sio_conn *c = m->c;
            if (c->stamp != stamp) {
                c->stamp = stamp;
                if (c->state == SIO_ST_CONNECTED && c->person != NULL &&
                    (c->person_key != b->person_key ||
                     memcmp(c->person->id, b->person_id, OID_HEX_LEN) != 0)) {
                    /* A slow reader may be closed here, which unlinks it from the room:
                     * next was taken before. */
                    if (conn_queue_coalesced(l, c, b->frame))
                        queued++;
                    delivered++;
                }
            }
            m = next;
        }
    }
    /* One atomic add for every entry queued above instead of one per recipient: the loops
     * fan the same frame out at the same time, and a per-delivery increment bounced its
     * cache line between them. No entry can have been released yet (entries are written
     * and freed only by flush_dirty and reap_all, after the batch; a slow reader closed
     * above keeps its queue until reaped), and the broadcast still holds its own
     * reference until sio__bcast_done. */
    if (queued > 0)
        atomic_fetch_add_explicit(&b->frame->refs, queued, memory_order_relaxed);
    if (delivered > 0)
        METRIC_ADD(status_deliveries_total, delivered);
    sio__bcast_done(b);
}

/* ---- messages ------------------------------------------------------------------------- */

static void on_kick(struct sio_loop *l, struct sio_msg *m)
{
    int closed = 0;
    for (struct sio_conn *c = l->conns; c != NULL;) {
        struct sio_conn *next = c->next;
        if (c->state == SIO_ST_CONNECTED && c->serial != m->except_serial &&
            strcmp(c->person->id, m->person_id) == 0) {
            sio__session_goodbye(c);
            sio__conn_close(c, m->announce ? "server disconnect" : "replaced by a new session",
                            SIO_CLOSE_FLUSH | (m->skip_grace ? SIO_CLOSE_SKIP_GRACE : 0), 1000);
            closed++;
        }
        c = next;
    }
    if (m->wait != NULL)
        sio__kick_wait_done(m->wait, closed);
}

static void on_member_added(struct sio_loop *l, struct sio_msg *m)
{
    for (struct sio_conn *c = l->conns; c != NULL; c = c->next)
        if (c->state == SIO_ST_CONNECTED && strcmp(c->person->id, m->person_id) == 0)
            sio__room_join(l, c, m->cid);
}

static void on_shutdown(struct sio_loop *l)
{
    l->stopping = true;
    l->stop_deadline_ms = sio__mono_ms() + 1000;
    for (struct sio_conn *c = l->conns; c != NULL;) {
        struct sio_conn *next = c->next;
        if (c->state != SIO_ST_FLUSHING) {
            if (c->state == SIO_ST_CONNECTED)
                sio__session_goodbye(c);
            sio__conn_close(c, "server shutdown", SIO_CLOSE_FLUSH | SIO_CLOSE_SKIP_GRACE, 1001);
        }
        c = next;
    }
}

/* A polling handshake the stopping loop does not take: the session is closed and its
 * handshake GET, which waits for the open packet, is let go. */
static void poll_refuse(struct sio_poll *p)
{
    pthread_mutex_lock(&p->mu);
    p->closed = true;
    if (p->waiting != NULL) {
        MHD_resume_connection(p->waiting);
        p->waiting = NULL;
    }
    pthread_mutex_unlock(&p->mu);
}

/* ---- a hosted source (sio_engine_host) ------------------------------------------------ */

struct sio_loop *sio__loop_current(void)
{
    return tls_loop;
}

static void host_start(struct sio_loop *l, const struct sio_hosted *h)
{
    if (l->hosting || l->stopping) {
        h->release(h->arg, h->index);
        return;
    }
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &l->host};
    if (epoll_ctl(l->epfd, EPOLL_CTL_ADD, h->fd, &ev) != 0) {
        log_warn("loop %d: epoll_ctl(ADD, hosted %d)", l->idx, h->fd);
        h->release(h->arg, h->index);
        return;
    }
    l->host = *h;
    l->hosting = true;
}

/* The loop stops driving its source (its thread is about to end). */
static void host_stop(struct sio_loop *l)
{
    if (!l->hosting)
        return;
    l->hosting = false;
    epoll_ctl(l->epfd, EPOLL_CTL_DEL, l->host.fd, NULL);
    l->host.release(l->host.arg, l->host.index);
}

/* A NEW_CONN: the socket joins this loop, or is closed when the loop is stopping. */
static void take_conn(struct sio_loop *l, struct sio_msg *m)
{
    if (l->stopping) {
        close(m->fd);
        m->fd = -1;
    } else {
        conn_new(l, m);
    }
}

void sio__loop_take(struct sio_loop *l, struct sio_msg *m)
{
    take_conn(l, m);
    sio_msg_free(m);
}

static void drain_queue(struct sio_loop *l)
{
    struct sio_msg *m = mpsc_take(&l->q);
    while (m != NULL) {
        struct sio_msg *next = m->next;
        struct sio_conn *c;
        switch (m->type) {
        case SIO_MSG_NEW_CONN:
            take_conn(l, m);
            break;
        case SIO_MSG_HOST:
            host_start(l, &m->host);
            break;
        case SIO_MSG_AUTH_RESULT:
            c = sio__conn_find(l, m->cfd, m->serial);
            if (c != NULL && c->state == SIO_ST_AUTHING)
                sio__session_auth_result(c, m);
            break;
        case SIO_MSG_JOIN_RESULT:
            c = sio__conn_find(l, m->cfd, m->serial);
            if (c != NULL && c->state == SIO_ST_CONNECTED)
                sio__session_join_result(c, m);
            break;
        case SIO_MSG_BCAST:
            fanout(l, m->bcast);
            m->bcast = NULL;
            break;
        case SIO_MSG_KICK:
            on_kick(l, m);
            break;
        case SIO_MSG_MEMBER_ADDED:
            on_member_added(l, m);
            break;
        case SIO_MSG_SHUTDOWN:
            on_shutdown(l);
            break;
        case SIO_MSG_NEW_POLL:
            if (l->stopping) {
                poll_refuse(m->poll);
            } else {
                conn_new_poll(l, m);
            }
            break;
        case SIO_MSG_POLL_DATA:
            on_poll_data(l, m);
            break;
        case SIO_MSG_POLL_SYNC: {
            /* answered after the event batch (run_syncs): the probe's events may be in it */
            struct sio_sync *y = xmalloc(sizeof(*y));
            y->p = m->poll;
            m->poll = NULL;
            y->next = l->syncs;
            l->syncs = y;
            break;
        }
        default:
            break;
        }
        sio_msg_free(m);
        m = next;
    }
}

/* ---- the loop ------------------------------------------------------------------------- */

static void run_timers(struct sio_loop *l)
{
    uint64_t v;
    ssize_t r = read(l->tfd, &v, sizeof(v));
    (void)r;
    l->armed_ms = -1;
    int64_t now = sio__mono_ms();
    while (l->heap_len > 0 && l->heap[0]->deadline_ms <= now) {
        struct sio_conn *c = l->heap[0];
        if (c->state == SIO_ST_FLUSHING) {
            flushing_done(c);
            continue;
        }
        int64_t before = c->deadline_ms;
        sio__session_on_timer(c, now);
        /* The session re-arms (or closes, which removes it); never spin on one entry. */
        if (c->state != SIO_ST_DEAD && c->heap_idx != HEAP_NONE && c->deadline_ms <= before) {
            c->deadline_ms = now + 1000;
            heap_set(l, c);
        }
    }
    while (l->grace_head != NULL && l->grace_head->deadline_ms <= now) {
        struct sio_grace *g = l->grace_head;
        l->grace_head = g->next;
        if (l->grace_head == NULL)
            l->grace_tail = NULL;
        sio__registry_grace_expired(l->e, g->id, g->gen);
        free(g);
    }
    while (l->linger_head != NULL && l->linger_head->deadline_ms <= now) {
        struct sio_linger *g = l->linger_head;
        l->linger_head = g->next;
        if (l->linger_head == NULL)
            l->linger_tail = NULL;
        sio__poll_unmap(l->e, g->poll);
        sio__poll_release(g->poll);
        free(g);
    }
}

/* Called by the session when a person's last connection went inside its grace. */
void sio__loop_grace_add(struct sio_loop *l, const char *id, uint32_t gen)
{
    struct sio_grace *g = xcalloc(1, sizeof(*g));
    g->deadline_ms = sio__mono_ms() + l->e->cfg->disconnect_grace_ms;
    g->gen = gen;
    snprintf(g->id, sizeof(g->id), "%s", id);
    if (l->grace_tail != NULL)
        l->grace_tail->next = g;
    else
        l->grace_head = g;
    l->grace_tail = g;
}

static void maybe_trim(struct sio_loop *l, bool idle)
{
    /* glibc keeps freed context memory after a burst; give it back (STACK-NOTES §9): when the
     * loop goes idle after freeing contexts, and during long bursts at most once a second. */
    if (l->freed_ctx == 0)
        return;
    int64_t now = sio__mono_ms();
    if (!idle && (l->freed_ctx < 4096 || now - l->last_trim_ms < 1000))
        return;
    l->freed_ctx = 0;
    l->last_trim_ms = now;
    malloc_trim(0);
}

void *sio__loop_main(void *arg)
{
    struct sio_loop *l = arg;
    prctl(PR_SET_TIMERSLACK, 1UL);
    char tname[16];
    snprintf(tname, sizeof(tname), "loop%d", l->idx);
    util_thread_name(tname);
    tls_loop = l;
    struct epoll_event evs[256];
    for (;;) {
        /* What the last batch queued to this loop itself (the broadcasts of the changes it
         * made), and what that queues in turn: no eventfd, no extra wake-up. */
        while (l->q.self_pending) {
            drain_queue(l);
            flush_dirty(l);
        }
        timer_arm(l);
        /* After a burst of freed contexts, wake up once more to trim even if all goes idle. */
        int n = epoll_wait(l->epfd, evs, 256, l->freed_ctx > 0 ? 1100 : -1);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            log_warn("epoll_wait");
            break;
        }
        for (int i = 0; i < n; i++) {
            void *p = evs[i].data.ptr;
            if (p == &l->q) {
                drain_queue(l);
                flush_dirty(l);
                continue;
            }
            if (p == &l->tfd) {
                run_timers(l);
                continue;
            }
            if (p == &l->host) {
                /* accepts: the sockets it takes join this loop here (sio__loop_take) */
                l->host.run(l->host.arg, l->host.index);
                flush_dirty(l);
                continue;
            }
            struct sio_conn *c = p;
            uint32_t ev = evs[i].events;
            if (c->state == SIO_ST_DEAD)
                continue;
            if (ev & EPOLLOUT) {
                if (conn_flush(c) != 0) {
                    if (c->state == SIO_ST_FLUSHING)
                        flushing_done(c);
                    else
                        sio__conn_close(c, "transport error", 0, 0);
                    continue;
                }
                if (c->state == SIO_ST_FLUSHING && c->out_head == NULL) {
                    flushing_done(c);
                    continue;
                }
            }
            if (c->state == SIO_ST_FLUSHING) {
                /* The peer is gone: nothing more can be written (level-triggered HUP would
                 * otherwise spin until the flush timeout). */
                if (ev & (EPOLLHUP | EPOLLERR))
                    flushing_done(c);
                continue;
            }
            if (ev & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR))
                conn_on_readable(c);
            if (c->flags & SIO_CF_UPGRADE)
                sio__conn_upgrade(c);
        }
        run_syncs(l);
        reap_all(l);
        maybe_trim(l, n == 0);
        if (l->stopping) {
            if (l->conns == NULL)
                break;
            if (sio__mono_ms() >= l->stop_deadline_ms) {
                while (l->conns != NULL) {
                    struct sio_conn *c = l->conns;
                    if (c->state == SIO_ST_FLUSHING)
                        flushing_done(c);
                    else
                        sio__conn_close(c, "server shutdown", SIO_CLOSE_SKIP_GRACE, 0);
                }
                reap_all(l);
                break;
            }
        }
    }
    host_stop(l);
    return NULL;
}

int sio__loop_init(struct sio_engine *e, struct sio_loop *l, int idx)
{
    memset(l, 0, sizeof(*l));
    l->e = e;
    l->idx = idx;
    l->armed_ms = -1;
    l->base_ms = sio__mono_ms();
    l->by_fd = xcalloc(e->fd_limit, sizeof(*l->by_fd));
    l->rbuf = xmalloc(SIO_RBUF_SIZE);
    pthread_mutex_init(&l->q.mu, NULL);
    l->q.efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    l->q.owner = l;
    l->tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    l->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (l->q.efd < 0 || l->tfd < 0 || l->epfd < 0) {
        log_warn("loop %d: eventfd/timerfd/epoll", idx);
        return -1;
    }
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &l->q};
    struct epoll_event tev = {.events = EPOLLIN, .data.ptr = &l->tfd};
    if (epoll_ctl(l->epfd, EPOLL_CTL_ADD, l->q.efd, &ev) != 0 ||
        epoll_ctl(l->epfd, EPOLL_CTL_ADD, l->tfd, &tev) != 0) {
        log_warn("loop %d: epoll_ctl", idx);
        return -1;
    }
    return 0;
}

void sio__loop_destroy(struct sio_loop *l)
{
    /* Messages posted after the loop stopped (late broadcasts, results) are dropped. */
    pthread_mutex_lock(&l->q.mu);
    struct sio_msg *m = l->q.head;
    l->q.head = l->q.tail = NULL;
    pthread_mutex_unlock(&l->q.mu);
    while (m != NULL) {
        struct sio_msg *next = m->next;
        if (m->type == SIO_MSG_BCAST && m->bcast != NULL)
            sio__bcast_done(m->bcast);
        if (m->type == SIO_MSG_KICK && m->wait != NULL)
            sio__kick_wait_done(m->wait, 0);
        if (m->type == SIO_MSG_NEW_CONN && m->fd >= 0)
            close(m->fd);
        if (m->type == SIO_MSG_NEW_POLL && m->poll != NULL)
            poll_refuse(m->poll);
        if (m->type == SIO_MSG_HOST) /* its owner may be gone: not released (cannot happen
                                      * after sio_engine_shutdown, which queues behind it) */
            log_warnx("loop %d: a hosted source was never driven", l->idx);
        sio_msg_free(m);
        m = next;
    }
    while (l->conns != NULL) {
        struct sio_conn *c = l->conns;
        l->conns = c->next;
        conn_reap_now(c);
    }
    reap_all(l);
    struct sio_room *r, *tmp;
    HASH_ITER(hh, l->rooms, r, tmp)
    {
        HASH_DEL(l->rooms, r);
        free(r);
    }
    while (l->grace_head != NULL) {
        struct sio_grace *g = l->grace_head;
        l->grace_head = g->next;
        free(g);
    }
    while (l->syncs != NULL) {
        struct sio_sync *y = l->syncs;
        l->syncs = y->next;
        sio__poll_sync_done(y->p);
        sio__poll_release(y->p);
        free(y);
    }
    while (l->linger_head != NULL) {
        struct sio_linger *g = l->linger_head;
        l->linger_head = g->next;
        sio__poll_unmap(l->e, g->poll);
        sio__poll_release(g->poll);
        free(g);
    }
    struct sio_pollconn *pc, *ptmp;
    HASH_ITER(hh, l->pollconns, pc, ptmp)
    {
        HASH_DEL(l->pollconns, pc);
        free(pc);
    }
    free(l->heap);
    free(l->by_fd);
    free(l->rbuf);
    free(l->dirty);
    while (l->chunk_free != NULL) {
        struct sio_outchunk *o = l->chunk_free;
        l->chunk_free = o->next;
        free(o);
    }
    l->nchunk_free = 0;
    if (l->epfd >= 0)
        close(l->epfd);
    if (l->tfd >= 0)
        close(l->tfd);
    if (l->q.efd >= 0)
        close(l->q.efd);
    pthread_mutex_destroy(&l->q.mu);
}
