/*
 * registry.c - the presence registry (person -> live connections on this node) and the
 * user:status broadcasts (SPEC §1, §2 flows 1–2).
 *
 * The registry is a map of persons striped over SIO_REG_SHARDS mutex-protected uthash tables.
 * It is touched on connect and disconnect only (and by the rare admin calls), never per
 * message, so a plain mutex per shard is cheap. Each entry keeps what a later offline
 * broadcast needs (username, conversations, last activity), so the disconnect flow never reads
 * the store on a loop thread.
 *
 * DESIGN
 *  - A person is online while conns > 0 or while inside its disconnect grace (in_grace). The
 *    transitions (first connection, last one gone, grace expired) are decided under the shard
 *    lock, and the broadcast of a transition is encoded and published *under that lock*: the
 *    loops' queues are FIFO, so every loop sees one person's online/offline events in the
 *    order they happened, even when connections of that person live on different loops.
 *  - A broadcast is encoded once (JSON, Socket.IO packet, WebSocket frame) into a shared,
 *    reference-counted buffer and handed to the fan-out adapter. The local adapter posts it
 *    to every loop; each loop delivers to its own connections in the rooms of the person's
 *    conversations (loop.c) and the last loop to finish records the latency.
 */
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/metrics.h"
#include "common/xmalloc.h"
#include "socketio/sio_internal.h"

static unsigned shard_of(const char *id)
{
    /* FNV-1a over the id: ObjectIds share their leading timestamp bytes, so hash them all. */
    uint32_t h = 2166136261u;
    for (const char *p = id; *p != '\0'; p++) {
        h ^= (uint8_t)*p;
        h *= 16777619u;
    }
    return h % SIO_REG_SHARDS;
}

void sio__registry_init(struct sio_engine *e)
{
    for (int i = 0; i < SIO_REG_SHARDS; i++) {
        pthread_mutex_init(&e->shards[i].mu, NULL);
        e->shards[i].map = NULL;
    }
}

static void person_free(struct sio_person *p)
{
    free(p->username);
    store_id_list_free(&p->convs);
    free(p);
}

void sio__registry_destroy(struct sio_engine *e)
{
    for (int i = 0; i < SIO_REG_SHARDS; i++) {
        struct sio_person *p, *tmp;
        HASH_ITER(hh, e->shards[i].map, p, tmp)
        {
            HASH_DEL(e->shards[i].map, p);
            person_free(p);
        }
        pthread_mutex_destroy(&e->shards[i].mu);
    }
}

static void id_list_copy(struct store_id_list *dst, const struct store_id_list *src)
{
    dst->count = src ? src->count : 0;
    dst->ids = NULL;
    if (dst->count > 0) {
        dst->ids = xcalloc(dst->count, sizeof(*dst->ids));
        memcpy(dst->ids, src->ids, dst->count * sizeof(*dst->ids));
    }
}

static void person_broadcast(struct sio_engine *e, const struct sio_person *p, bool online,
                             int64_t t0_ns)
{
    sio__broadcast(e, p->id, p->username, p->is_anonymous, online, p->last_active_ms,
                   p->last_seen_ms, (const char(*)[OID_HEX_LEN + 1]) p->convs.ids, p->convs.count,
                   t0_ns);
}

static void online_gauge(bool anonymous, int delta)
{
    if (anonymous)
        METRIC_ADD(online_anonymous, delta);
    else
        METRIC_ADD(online_users, delta);
}

struct sio_person *sio__registry_attach(struct sio_engine *e, const struct store_person *sp,
                                        const struct store_id_list *convs, uint64_t ticket_stamp,
                                        int64_t now_ms, int *conns_out)
{
    struct sio_reg_shard *sh = &e->shards[shard_of(sp->id)];
    int64_t t0 = util_mono_ns();
    pthread_mutex_lock(&sh->mu);
    struct sio_person *p;
    HASH_FIND_STR(sh->map, sp->id, p);
    bool first = false;
    if (p == NULL) {
        p = xcalloc(1, sizeof(*p));
        memcpy(p->id, sp->id, sizeof(p->id));
        p->is_anonymous = sp->is_anonymous;
        HASH_ADD_STR(sh->map, id, p);
        first = true;
    }
    p->conns++;
    if (p->in_grace) {
        /* Back within the grace: no transition, and the pending grace timer is void. */
        p->in_grace = false;
        p->gen++;
    }
    free(p->username);
    p->username = xstrdup(sp->username ? sp->username : "");
    store_id_list_free(&p->convs);
    id_list_copy(&p->convs, convs);
    p->ticket_stamp = ticket_stamp;
    if (first) {
        p->last_active_ms = now_ms;
        p->last_seen_ms = sp->last_seen_ms;
        store_presence_online(e->store, p->id, p->is_anonymous, now_ms);
        /* The connect write is activity and opens a new throttle window (SPEC §3). */
        throttle_record(e->throttle, p->id, now_ms);
        online_gauge(p->is_anonymous, 1);
        person_broadcast(e, p, true, t0);
    }
    *conns_out = p->conns;
    pthread_mutex_unlock(&sh->mu);
    return p;
}

/* The person's last connection is gone (and its grace, if any): offline now. Shard locked. */
static void go_offline(struct sio_engine *e, struct sio_reg_shard *sh, struct sio_person *p,
                       int64_t now_ms)
{
    int64_t t0 = util_mono_ns();
    p->last_seen_ms = now_ms;
    store_presence_offline(e->store, p->id, p->is_anonymous, now_ms);
    online_gauge(p->is_anonymous, -1);
    person_broadcast(e, p, false, t0);
    /* A reconnect in the next seconds need not read the store again (store_ticket_put). */
    if (!p->is_anonymous)
        store_ticket_put(e->store, p->ticket_stamp, p->id, p->username, now_ms, &p->convs);
    HASH_DEL(sh->map, p);
    person_free(p);
}

uint32_t sio__registry_detach(struct sio_engine *e, struct sio_person *p, bool skip_grace,
                              int64_t now_ms, int *conns_out)
{
    struct sio_reg_shard *sh = &e->shards[shard_of(p->id)];
    uint32_t gen = 0;
    pthread_mutex_lock(&sh->mu);
    p->conns--;
    *conns_out = p->conns;
    if (p->conns == 0) {
        if (skip_grace || e->cfg->disconnect_grace_ms <= 0) {
            go_offline(e, sh, p, now_ms);
        } else {
            p->in_grace = true;
            p->gen++;
            if (p->gen == 0)
                p->gen = 1;
            gen = p->gen;
        }
    }
    pthread_mutex_unlock(&sh->mu);
    return gen;
}

void sio__registry_grace_expired(struct sio_engine *e, const char *id, uint32_t gen)
{
    struct sio_reg_shard *sh = &e->shards[shard_of(id)];
    pthread_mutex_lock(&sh->mu);
    struct sio_person *p;
    HASH_FIND_STR(sh->map, id, p);
    if (p != NULL && p->in_grace && p->conns == 0 && p->gen == gen)
        go_offline(e, sh, p, util_now_ms());
    pthread_mutex_unlock(&sh->mu);
}

void sio__registry_end_grace(struct sio_engine *e, const char *id)
{
    struct sio_reg_shard *sh = &e->shards[shard_of(id)];
    pthread_mutex_lock(&sh->mu);
    struct sio_person *p;
    HASH_FIND_STR(sh->map, id, p);
    if (p != NULL && p->in_grace && p->conns == 0)
        go_offline(e, sh, p, util_now_ms());
    pthread_mutex_unlock(&sh->mu);
}

void sio__registry_flush_grace(struct sio_engine *e)
{
    int64_t now = util_now_ms();
    for (int i = 0; i < SIO_REG_SHARDS; i++) {
        struct sio_reg_shard *sh = &e->shards[i];
        pthread_mutex_lock(&sh->mu);
        struct sio_person *p, *tmp;
        HASH_ITER(hh, sh->map, p, tmp)
        {
            if (p->conns == 0 && p->in_grace)
                go_offline(e, sh, p, now);
        }
        pthread_mutex_unlock(&sh->mu);
    }
}

int sio__registry_live(struct sio_engine *e, const char *id)
{
    struct sio_reg_shard *sh = &e->shards[shard_of(id)];
    int n = 0;
    pthread_mutex_lock(&sh->mu);
    struct sio_person *p;
    HASH_FIND_STR(sh->map, id, p);
    if (p != NULL)
        n = p->conns + (p->in_grace ? 1 : 0);
    pthread_mutex_unlock(&sh->mu);
    return n;
}

void sio__registry_member_added(struct sio_engine *e, const char *cid, const char *uid)
{
    struct sio_reg_shard *sh = &e->shards[shard_of(uid)];
    pthread_mutex_lock(&sh->mu);
    struct sio_person *p;
    HASH_FIND_STR(sh->map, uid, p);
    if (p != NULL) {
        bool have = false;
        for (size_t i = 0; i < p->convs.count && !have; i++)
            have = strcmp(p->convs.ids[i], cid) == 0;
        if (!have) {
            p->convs.ids = xrealloc(p->convs.ids, (p->convs.count + 1) * sizeof(*p->convs.ids));
            snprintf(p->convs.ids[p->convs.count], sizeof(p->convs.ids[0]), "%s", cid);
            p->convs.count++;
        }
    }
    pthread_mutex_unlock(&sh->mu);
}

void sio__registry_activity(struct sio_engine *e, struct sio_person *p, int64_t now_ms)
{
    struct sio_reg_shard *sh = &e->shards[shard_of(p->id)];
    pthread_mutex_lock(&sh->mu);
    p->last_active_ms = now_ms;
    pthread_mutex_unlock(&sh->mu);
}

/* ---- broadcasts ----------------------------------------------------------------------- */

/* The user:status packet is written by hand rather than through jansson: a json_t tree and
 * json_dumpb (twice, to size and to fill) cost about 50 000 instructions per broadcast, more
 * than the rest of the broadcast path for a room of 10 (callgrind). The shape is fixed; only
 * the strings need escaping, as jansson escapes them (RFC 8259: '"', '\\' and control
 * characters; UTF-8 passes through). A byte sequence that is not UTF-8 becomes U+FFFD. */

/* The length of the valid UTF-8 sequence at s (n bytes available), or 0. */
static size_t utf8_seq_len(const uint8_t *s, size_t n)
{
    uint8_t c = s[0];
    size_t len;
    uint32_t cp;
    if (c < 0x80)
        return 1;
    if (c >= 0xc2 && c <= 0xdf) {
        len = 2;
        cp = c & 0x1fu;
    } else if (c >= 0xe0 && c <= 0xef) {
        len = 3;
        cp = c & 0x0fu;
    } else if (c >= 0xf0 && c <= 0xf4) {
        len = 4;
        cp = c & 0x07u;
    } else {
        return 0;
    }
    if (n < len)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xc0u) != 0x80u)
            return 0;
        cp = (cp << 6) | (s[i] & 0x3fu);
    }
    if ((len == 3 && (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff))) ||
        (len == 4 && (cp < 0x10000 || cp > 0x10ffff)))
        return 0;
    return len;
}

/* Appends s as a JSON string (quotes included) at w; w has room for 2 + 6 * strlen(s). */
static char *json_str_put(char *w, const char *str)
{
    static const char hex[] = "0123456789abcdef";
    const uint8_t *s = (const uint8_t *)str;
    size_t n = strlen(str);
    *w++ = '"';
    for (size_t i = 0; i < n;) {
        uint8_t c = s[i];
        if (c >= 0x20 && c != '"' && c != '\\' && c < 0x80) {
            *w++ = (char)c;
            i++;
            continue;
        }
        if (c >= 0x80) {
            size_t k = utf8_seq_len(s + i, n - i);
            if (k == 0) {
                memcpy(w, "\\ufffd", 6);
                w += 6;
                i++;
            } else {
                memcpy(w, s + i, k);
                w += k;
                i += k;
            }
            continue;
        }
        *w++ = '\\';
        switch (c) {
        case '"':
        case '\\':
            *w++ = (char)c;
            break;
        case '\b':
            *w++ = 'b';
            break;
        case '\f':
            *w++ = 'f';
            break;
        case '\n':
            *w++ = 'n';
            break;
        case '\r':
            *w++ = 'r';
            break;
        case '\t':
            *w++ = 't';
            break;
        default:
            memcpy(w, "u00", 3);
            w[3] = hex[c >> 4];
            w[4] = hex[c & 0x0f];
            w += 5;
            break;
        }
        i++;
    }
    *w++ = '"';
    return w;
}

static char *lit_put(char *w, const char *lit, size_t n)
{
    memcpy(w, lit, n);
    return w + n;
}
#define LIT(w, s) lit_put((w), (s), sizeof(s) - 1)

static char *iso_or_null_put(char *w, int64_t ms)
{
    if (ms <= 0)
        return LIT(w, "null");
    char buf[ISO_TIME_LEN + 1];
    util_iso_time(ms, buf);
    *w++ = '"';
    w = lit_put(w, buf, ISO_TIME_LEN);
    *w++ = '"';
    return w;
}

/* The worst case of the packet for these strings (each byte escaped as \uXXXX). */
static size_t status_packet_max(const char *id, const char *username)
{
    return 256 + 6 * (strlen(id) + strlen(username)) + 2 * (ISO_TIME_LEN + 2);
}

/* Writes the packet at out (status_packet_max bytes); returns its length. */
static size_t status_packet_put(char *out, const struct sio_engine *e, const char *id,
                                const char *username, bool is_anonymous, bool is_online,
                                int64_t last_active_ms, int64_t last_seen_ms, int64_t now_ms)
{
    enum presence_status st = presence_compute(is_online, last_active_ms, now_ms,
                                               e->cfg->away_after_ms, e->cfg->offline_after_ms);
    char *w = out;
    w = LIT(w, "42[\"user:status\",{\"userId\":");
    w = json_str_put(w, id);
    w = LIT(w, ",\"username\":");
    w = json_str_put(w, username);
    w = is_online ? LIT(w, ",\"isOnline\":true") : LIT(w, ",\"isOnline\":false");
    w = is_anonymous ? LIT(w, ",\"isAnonymous\":true") : LIT(w, ",\"isAnonymous\":false");
    w = LIT(w, ",\"status\":\"");
    const char *name = presence_status_name(st);
    w = lit_put(w, name, strlen(name));
    w = LIT(w, "\",\"lastActiveAt\":");
    w = iso_or_null_put(w, last_active_ms);
    w = LIT(w, ",\"lastSeen\":");
    w = iso_or_null_put(w, last_seen_ms);
    w = LIT(w, "}]");
    return (size_t)(w - out);
}

char *sio__status_packet(const struct sio_engine *e, const char *id, const char *username,
                         bool is_anonymous, bool is_online, int64_t last_active_ms,
                         int64_t last_seen_ms, int64_t now_ms, size_t *len)
{
    if (username == NULL)
        username = "";
    char *s = xmalloc(status_packet_max(id, username) + 1);
    *len = status_packet_put(s, e, id, username, is_anonymous, is_online, last_active_ms,
                             last_seen_ms, now_ms);
    s[*len] = '\0';
    return s;
}

void sio__broadcast(struct sio_engine *e, const char *id, const char *username, bool is_anonymous,
                    bool is_online, int64_t last_active_ms, int64_t last_seen_ms,
                    const char (*convs)[OID_HEX_LEN + 1], size_t nconv, int64_t t0_ns)
{
    METRIC_INC(status_broadcasts_total);
    log_debug("Broadcast USER_STATUS user=%s online=%s conversations=%zu", id,
              is_online ? "true" : "false", nconv);
    if (nconv == 0 || !atomic_load(&e->running))
        return;
    if (username == NULL)
        username = "";
    /* Encoded once, straight into the shared frame: the header goes in front once the length
     * is known (the payload is written at the largest header's offset, then moved if the
     * header is shorter). */
    size_t max = status_packet_max(id, username);
    struct sio_sbuf *frame = sio_sbuf_new(10 + max);
    size_t len = status_packet_put((char *)frame->data + 10, e, id, username, is_anonymous,
                                   is_online, last_active_ms, last_seen_ms, util_now_ms());
    size_t h = sio__ws_header_write(frame->data, WSLAY_TEXT_FRAME, len);
    memmove(frame->data + h, frame->data + 10, len);
    frame->len = (uint32_t)(h + len);
    struct sio_bcast *b = xcalloc(1, sizeof(*b));
    b->t0_ns = t0_ns;
    snprintf(b->person_id, sizeof(b->person_id), "%s", id);
    b->person_key = sio__person_key(b->person_id);
    b->nconv = nconv;
    b->convs = xmalloc(nconv * sizeof(*b->convs));
    memcpy(b->convs, convs, nconv * sizeof(*b->convs));
    b->frame = frame;
    e->adapter.publish(e->adapter.cls, b);
}

void sio__bcast_done(struct sio_bcast *b)
{
    if (atomic_fetch_sub_explicit(&b->pending_loops, 1, memory_order_acq_rel) != 1)
        return;
    metrics_observe_latency_ns((uint64_t)(util_mono_ns() - b->t0_ns));
    sio_sbuf_release(b->frame);
    free(b->convs);
    free(b);
}

/* The in-process adapter: every loop of this node gets the broadcast through its queue. */
static void local_publish(void *cls, struct sio_bcast *b)
{
    struct sio_engine *e = cls;
    atomic_store(&b->pending_loops, e->nloops);
    for (int i = 0; i < e->nloops; i++) {
        struct sio_msg *m = xcalloc(1, sizeof(*m));
        m->type = SIO_MSG_BCAST;
        m->bcast = b;
        sio__mpsc_push(&e->loops[i].q, m);
    }
}

static void local_close(void *cls)
{
    (void)cls;
}

struct sio_adapter sio__adapter_local(struct sio_engine *e)
{
    struct sio_adapter a = {.publish = local_publish, .close = local_close, .cls = e};
    return a;
}
