/*
 * conformance.c - `presence-gateway --conformance` (SPEC §3 "Conformance mode"): the server
 * that the official protocol test suites (socketio/engine.io-protocol and
 * socketio/socket.io-protocol, folder test-suite/) expect, served by the same engine, loops,
 * transports and codec as the product, so that the suites check the code that runs in
 * production.
 *
 * What changes in this mode, and only there:
 *  - the timings the suites hardcode: pingInterval 300 ms, pingTimeout 200 ms, maxPayload
 *    1000000 (sio__conformance_config, a copy of the configuration the engine uses);
 *  - /engine.io/ is a bare Engine.IO echo: each message goes back on its session, text as
 *    text, binary as binary (sio__conformance_message);
 *  - on /socket.io/ nobody authenticates and there is no presence: namespaces "/" and
 *    "/custom" (others: 44<nsp>,{"message":"Invalid namespace"}); the CONNECT ack is
 *    {"sid":…} only, followed, as its own message, by the event `auth` carrying the CONNECT
 *    payload or {}; in "/", `message` is answered by `message-back` with the same arguments
 *    and `message-with-ack` by an ack with the same arguments, binary attachments kept;
 *    nothing else is sent (sio__conformance_packet).
 *
 * Everything here runs on the loop thread that owns the connection, like session.c.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/xmalloc.h"
#include "socketio/sio_internal.h"

#define CONF_PING_INTERVAL_MS 300
#define CONF_PING_TIMEOUT_MS 200
#define CONF_MAX_PAYLOAD 1000000
#define AUTH_DELAY_MS 15

/* auth events waiting to be sent (any loop; conformance mode only, so one short list) */
struct pending_auth {
    struct pending_auth *next;
    struct sio_loop *loop;
    uint64_t serial;
    int64_t due_ms;
    char *text;
    size_t len;
};
static pthread_mutex_t pending_mu = PTHREAD_MUTEX_INITIALIZER;
static struct pending_auth *pending_head;

const struct gw_config *sio__conformance_config(const struct gw_config *cfg)
{
    /* One engine per process; the copy borrows cfg's strings, which outlive the engine. */
    static struct gw_config conf;
    conf = *cfg;
    conf.ping_interval_ms = CONF_PING_INTERVAL_MS;
    conf.ping_timeout_ms = CONF_PING_TIMEOUT_MS;
    conf.max_payload_bytes = CONF_MAX_PAYLOAD;
    conf.max_events_per_sec = 0; /* the suites send bursts; no rate limit */
    conf.disconnect_grace_ms = 0;
    conf.single_session = false;
    return &conf;
}

bool sio__conformance_eio_path(const struct sio_engine *e, const char *url)
{
    return e->cfg->conformance && url != NULL && strncmp(url, "/engine.io", 10) == 0;
}

bool sio__conformance_message(struct sio_conn *c, const struct eio_packet *ep)
{
    if (ep->type != EIO_MESSAGE)
        return false;
    if (ep->binary) {
        sio_conn_send_message(c, true, ep->data, ep->len);
        return true;
    }
    /* Text: "4" + data, as it came. */
    uint8_t small[256];
    uint8_t *buf = ep->len + 1 <= sizeof(small) ? small : malloc(ep->len + 1);
    if (buf == NULL) {
        sio__conn_close(c, "out of memory", 0, 0);
        return true;
    }
    buf[0] = '4';
    memcpy(buf + 1, ep->data, ep->len);
    sio_conn_send_message(c, false, buf, ep->len + 1);
    if (buf != small)
        free(buf);
    return true;
}

static bool alive(const struct sio_conn *c)
{
    return c->state != SIO_ST_DEAD && c->state != SIO_ST_FLUSHING;
}

static void send_encoded(struct sio_conn *c, enum sio_type type, const char *nsp, int64_t id,
                         const json_t *data, const struct sio_packet *att)
{
    size_t len;
    size_t natt = att != NULL ? att->n_attachments : 0;
    char *s = sio_encode(type, nsp, id, data, natt, &len);
    sio_conn_send_message(c, false, s, len);
    free(s);
    for (size_t i = 0; i < natt && alive(c); i++)
        sio_conn_send_message(c, true, att->attachments[i].data, att->attachments[i].len);
}

static uint8_t nsp_flag(const char *nsp)
{
    if (strcmp(nsp, "/") == 0)
        return SIO_CF_NSP_MAIN;
    if (strcmp(nsp, "/custom") == 0)
        return SIO_CF_NSP_CUSTOM;
    return 0;
}

static void on_connect(struct sio_conn *c, const struct sio_packet *p)
{
    uint8_t f = nsp_flag(p->nsp);
    if (f == 0) {
        json_t *o = json_pack("{s:s}", "message", "Invalid namespace");
        send_encoded(c, SIO_CONNECT_ERROR, p->nsp, -1, o, NULL);
        json_decref(o);
        return;
    }
    c->flags |= f;
    c->state = SIO_ST_CONNECTED; /* the connect timeout no longer applies */
    /* One Socket.IO id per namespace, none equal to the Engine.IO sid. */
    char sid[21];
    uint64_t x = f == SIO_CF_NSP_MAIN ? 0x9e3779b97f4a7c15ull : 0xc2b2ae3d27d4eb4full;
    sio__sid_string(c->sid ^ x, sid);
    json_t *o = json_pack("{s:s}", "sid", sid);
    send_encoded(c, SIO_CONNECT, p->nsp, -1, o, NULL);
    json_decref(o);
    if (!alive(c))
        return;
    json_t *payload = json_is_object(p->data) ? json_incref(p->data) : json_object();
    json_t *ev = json_pack("[s,o]", "auth", payload);
    size_t len;
    char *text = sio_encode(SIO_EVENT, p->nsp, -1, ev, 0, &len);
    json_decref(ev);
    /* "As its own frame": a client that reads the ack and this event in one read may miss the
     * second (the suites wait for one message at a time), so the event leaves a little later,
     * from the connection's timer (sio__conformance_timer). */
    struct pending_auth *a = xmalloc(sizeof(*a));
    a->loop = c->loop;
    a->serial = c->serial;
    a->due_ms = sio__mono_ms() + AUTH_DELAY_MS;
    a->text = text;
    a->len = len;
    pthread_mutex_lock(&pending_mu);
    a->next = NULL;
    struct pending_auth **tail = &pending_head;
    while (*tail != NULL)
        tail = &(*tail)->next;
    *tail = a;
    pthread_mutex_unlock(&pending_mu);
    if (c->deadline_ms > a->due_ms || c->heap_idx == UINT32_MAX) {
        c->deadline_ms = a->due_ms;
        sio__conn_timer_update(c);
    }
}

void sio__conformance_timer(struct sio_conn *c, int64_t now_ms)
{
    /* Sends the auth events of c that are due (in order), and drops those of connections
     * that are gone (their loop never asks for them again). */
    struct pending_auth *mine = NULL, **mtail = &mine;
    pthread_mutex_lock(&pending_mu);
    for (struct pending_auth **pp = &pending_head; *pp != NULL;) {
        struct pending_auth *a = *pp;
        bool ours = a->loop == c->loop && a->serial == c->serial && now_ms >= a->due_ms;
        bool stale = now_ms - a->due_ms > 10000;
        if (ours || stale) {
            *pp = a->next;
            a->next = NULL;
            *mtail = a;
            mtail = &a->next;
            if (!ours)
                a->loop = NULL;
            continue;
        }
        pp = &a->next;
    }
    pthread_mutex_unlock(&pending_mu);
    while (mine != NULL) {
        struct pending_auth *a = mine;
        mine = a->next;
        if (a->loop != NULL && alive(c))
            sio_conn_send_message(c, false, a->text, a->len);
        free(a->text);
        free(a);
    }
}

static void on_event(struct sio_conn *c, const struct sio_packet *p)
{
    if (strcmp(p->nsp, "/") != 0)
        return;
    const char *name = json_string_value(json_array_get(p->data, 0));
    if (name == NULL)
        return;
    bool bin = p->n_attachments > 0;
    if (strcmp(name, "message") == 0) {
        json_t *out = json_array();
        json_array_append_new(out, json_string("message-back"));
        for (size_t i = 1; i < json_array_size(p->data); i++)
            json_array_append(out, json_array_get(p->data, i));
        send_encoded(c, bin ? SIO_BINARY_EVENT : SIO_EVENT, "/", -1, out, p);
        json_decref(out);
    } else if (strcmp(name, "message-with-ack") == 0 && p->id >= 0) {
        json_t *out = json_array();
        for (size_t i = 1; i < json_array_size(p->data); i++)
            json_array_append(out, json_array_get(p->data, i));
        send_encoded(c, bin ? SIO_BINARY_ACK : SIO_ACK, "/", p->id, out, p);
        json_decref(out);
    }
}

void sio__conformance_packet(struct sio_conn *c, struct sio_packet *p)
{
    uint8_t f = nsp_flag(p->nsp);
    switch (p->type) {
    case SIO_CONNECT:
        on_connect(c, p);
        break;
    case SIO_DISCONNECT:
        /* Leaves the namespace; the Engine.IO session stays. */
        c->flags &= (uint8_t)~f;
        break;
    case SIO_EVENT:
    case SIO_BINARY_EVENT:
        if (f != 0 && (c->flags & f))
            on_event(c, p);
        break;
    case SIO_ACK:
    case SIO_BINARY_ACK:
        break;
    case SIO_CONNECT_ERROR:
    default:
        sio__conn_close(c, "parse error", SIO_CLOSE_FLUSH, 1002);
        break;
    }
}
