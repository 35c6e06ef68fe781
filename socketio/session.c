/*
 * session.c - the Engine.IO 4 / Socket.IO 5 session of one connection: the open packet, the
 * heartbeat, the CONNECT handshake (authentication on a worker thread), client events, acks
 * and the disconnect flow into the registry.
 *
 * It is transport-agnostic: it receives whole Engine.IO messages (sio__session_on_message)
 * and sends through sio_conn_send_message(), so a long-polling transport can drive the same
 * functions. It runs on the loop thread that owns the connection and never blocks: store
 * reads (authentication, membership) go to the handshake workers and come back as messages.
 *
 * Client events handled:
 *   conversation:join  {conversationId}  ack {success:true, conversationId} after a membership
 *                                        check, or {success:false, error}
 *   conversation:leave {conversationId}  ack likewise; stops this connection's deliveries
 *   echo               any arguments     ack with the same arguments (binary attachments
 *                                        kept): a round-trip check for clients and tests
 *   anything else                        ack {success:false, error:"unknown event"} when the
 *                                        client asked for an ack
 * Every client event counts as activity (throttled) and against MAX_EVENTS_PER_SEC.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/metrics.h"
#include "common/xmalloc.h"
#include "socketio/sio_internal.h"

void sio__sid_string(uint64_t sid, char out[21])
{
    util_hex64(sid, out);
}

static void sio_sid_string(uint64_t sid, char out[21])
{
    /* The Socket.IO session id differs from the Engine.IO one, as in the reference server. */
    sio__sid_string(sid ^ 0x9e3779b97f4a7c15ull, out);
}

static void send_text(struct sio_conn *c, char *s, size_t len)
{
    sio_conn_send_message(c, false, s, len);
    free(s);
}

static void send_packet(struct sio_conn *c, enum sio_type type, int64_t id, json_t *data)
{
    size_t len;
    char *s = sio_encode(type, "/", id, data, 0, &len);
    send_text(c, s, len);
}

static void send_connect_error(struct sio_conn *c, const char *nsp, const char *message)
{
    json_t *o = json_pack("{s:s}", "message", message);
    size_t len;
    char *s = sio_encode(SIO_CONNECT_ERROR, nsp, -1, o, 0, &len);
    json_decref(o);
    send_text(c, s, len);
}

static void ack(struct sio_conn *c, int64_t id, json_t *obj)
{
    if (id >= 0) {
        json_t *arr = json_array();
        json_array_append(arr, obj);
        send_packet(c, SIO_ACK, id, arr);
        json_decref(arr);
    }
    json_decref(obj);
}

static void ack_error(struct sio_conn *c, int64_t id, const char *error)
{
    ack(c, id, json_pack("{s:b,s:s}", "success", 0, "error", error));
}

/* ---- timers --------------------------------------------------------------------------- */

static void rearm(struct sio_conn *c)
{
    const struct gw_config *cfg = c->loop->e->cfg;
    int64_t d = (c->flags & SIO_CF_AWAIT_PONG) ? c->ping_sent_ms + cfg->ping_timeout_ms
                                               : c->ping_sent_ms + cfg->ping_interval_ms;
    if ((c->state == SIO_ST_AWAIT_CONNECT || c->state == SIO_ST_AUTHING) &&
        c->connect_deadline_ms < d)
        d = c->connect_deadline_ms;
    c->deadline_ms = d;
    sio__conn_timer_update(c);
}

void sio__session_open(struct sio_conn *c)
{
    const struct gw_config *cfg = c->loop->e->cfg;
    char sid[21];
    sio__sid_string(c->sid, sid);
    size_t len;
    /* A polling session offers the upgrade to WebSocket; a direct WebSocket offers none. */
    char *open = eio_encode_open(sid, c->fd < 0, cfg->ping_interval_ms, cfg->ping_timeout_ms,
                                 cfg->max_payload_bytes, &len);
    send_text(c, open, len);
    int64_t now = sio__mono_ms();
    c->ping_sent_ms = now;
    c->connect_deadline_ms = now + cfg->connect_timeout_ms;
    if (c->state == SIO_ST_AWAIT_CONNECT)
        rearm(c);
}

static void rl_gc(struct sio_conn *c, int64_t now_ms);

void sio__session_on_timer(struct sio_conn *c, int64_t now_ms)
{
    const struct gw_config *cfg = c->loop->e->cfg;
    if (cfg->conformance) {
        sio__conformance_timer(c, now_ms);
        if (c->state == SIO_ST_DEAD || c->state == SIO_ST_FLUSHING)
            return;
    }
    if (c->state == SIO_ST_PROBE) {
        sio__conn_close(c, "upgrade timeout", SIO_CLOSE_FLUSH, 1000);
        return;
    }
    if ((c->state == SIO_ST_AWAIT_CONNECT || c->state == SIO_ST_AUTHING) &&
        now_ms >= c->connect_deadline_ms) {
        sio__conn_close(c, "connect timeout", SIO_CLOSE_FLUSH, 1000);
        return;
    }
    if (c->flags & SIO_CF_AWAIT_PONG) {
        if (now_ms >= c->ping_sent_ms + cfg->ping_timeout_ms) {
            sio__conn_close(c, "ping timeout", 0, 0);
            return;
        }
    } else if (now_ms >= c->ping_sent_ms + cfg->ping_interval_ms) {
        static const char ping[] = "2";
        sio_conn_send_message(c, false, ping, 1);
        if (c->state == SIO_ST_DEAD || c->state == SIO_ST_FLUSHING)
            return;
        c->ping_sent_ms = now_ms;
        c->flags |= SIO_CF_AWAIT_PONG;
        rl_gc(c, now_ms);
    }
    rearm(c);
}

/* ---- rate limit ----------------------------------------------------------------------- */

/* The ring of the last MAX_EVENTS_PER_SEC event times exists only while events flow. */
static void rl_gc(struct sio_conn *c, int64_t now_ms)
{
    struct sio_aux *a = c->aux;
    if (a == NULL || a->rl_ts == NULL || a->rl_n == 0)
        return;
    int n = c->loop->e->cfg->max_events_per_sec;
    uint32_t newest = a->rl_ts[(a->rl_head + a->rl_n - 1) % (uint32_t)n];
    uint32_t now = (uint32_t)(now_ms - c->loop->base_ms);
    if (now - newest >= 1000) {
        free(a->rl_ts);
        a->rl_ts = NULL;
        a->rl_n = a->rl_head = 0;
        sio__aux_maybe_free(c);
    }
}

/* Returns false when this event makes more than MAX_EVENTS_PER_SEC in one second. */
static bool rl_allow(struct sio_conn *c, int64_t now_ms)
{
    int n = c->loop->e->cfg->max_events_per_sec;
    if (n <= 0)
        return true;
    struct sio_aux *a = sio__aux(c);
    if (a->rl_ts == NULL) {
        a->rl_ts = xcalloc((size_t)n, sizeof(*a->rl_ts));
        a->rl_head = a->rl_n = 0;
    }
    uint32_t now = (uint32_t)(now_ms - c->loop->base_ms);
    if (a->rl_n < (uint32_t)n) {
        a->rl_ts[(a->rl_head + a->rl_n) % (uint32_t)n] = now;
        a->rl_n++;
        return true;
    }
    if (now - a->rl_ts[a->rl_head] < 1000)
        return false;
    a->rl_ts[a->rl_head] = now;
    a->rl_head = (a->rl_head + 1) % (uint32_t)n;
    return true;
}

/* ---- CONNECT -------------------------------------------------------------------------- */

static void on_connect(struct sio_conn *c, struct sio_packet *p)
{
    if (strcmp(p->nsp, "/") != 0) {
        send_connect_error(c, p->nsp, "Invalid namespace");
        return;
    }
    if (c->state != SIO_ST_AWAIT_CONNECT)
        return; /* a duplicate CONNECT while authenticating or connected */
    const char *jwt = NULL, *session = NULL;
    if (json_is_object(p->data)) {
        jwt = json_string_value(json_object_get(p->data, "token"));
        session = json_string_value(json_object_get(p->data, "sessionToken"));
        if (jwt != NULL && jwt[0] == '\0')
            jwt = NULL;
        if (session != NULL && session[0] == '\0')
            session = NULL;
        if (jwt != NULL && session != NULL)
            session = NULL;
    }
    struct sio_aux *a = c->aux;
    if (jwt == NULL && session == NULL && a != NULL) {
        /* Else the upgrade request's Authorization: Bearer, X-Session-Token, ?token= */
        if (a->jwt != NULL)
            jwt = a->jwt;
        else if (a->session != NULL)
            session = a->session;
        else if (a->qtoken != NULL)
            jwt = a->qtoken;
    }
    if (jwt == NULL && session == NULL) {
        send_connect_error(c, "/", "Authentication required");
        return;
    }
    c->state = SIO_ST_AUTHING;
    /* A person seen in the last seconds (token verified, row and conversations cached) is
     * answered here, with no trip to a worker and back. */
    struct sio_msg im;
    memset(&im, 0, sizeof(im));
    im.fd = -1;
    im.jwt = (char *)jwt;
    im.session = (char *)session;
    bool done = sio__auth_run(c->loop->e, &im, true);
    struct sio_msg *m = NULL;
    if (!done) {
        m = xcalloc(1, sizeof(*m));
        m->type = SIO_JOB_AUTH;
        m->loop = c->loop;
        m->cfd = c->fd;
        m->fd = -1;
        m->serial = c->serial;
        m->jwt = xstrdup(jwt);
        m->session = xstrdup(session);
    }
    /* The credentials of the upgrade request are not needed any more (jwt and session may
     * point into them: not used below). */
    if (a != NULL) {
        sio__free_secret(a->jwt);
        sio__free_secret(a->qtoken);
        sio__free_secret(a->session);
        a->jwt = a->qtoken = a->session = NULL;
        sio__aux_maybe_free(c);
    }
    if (done) {
        sio__session_auth_result(c, &im);
        store_person_clear(&im.person);
        store_id_list_free(&im.convs);
        return;
    }
    sio__worker_push(c->loop->e, m);
}

static const char *auth_error_message(int rc)
{
    switch (rc) {
    case AUTH_ERR_INVALID_TOKEN:
        return "Invalid token";
    case AUTH_ERR_UNKNOWN_PERSON:
        return "Unknown or inactive user";
    case AUTH_ERR_MISSING:
        return "Authentication required";
    case AUTH_ERR_STORE:
        return "Service unavailable";
    default:
        return "Authentication failed";
    }
}

void sio__session_auth_result(struct sio_conn *c, struct sio_msg *m)
{
    struct sio_loop *l = c->loop;
    struct sio_engine *e = l->e;
    if (m->rc != 0) {
        /* The Engine.IO session stays: the client may retry until the connect timeout. */
        c->state = SIO_ST_AWAIT_CONNECT;
        send_connect_error(c, "/", auth_error_message(m->rc));
        return;
    }
    c->state = SIO_ST_CONNECTED;
    int conns = 0;
    c->person =
        sio__registry_attach(e, &m->person, &m->convs, m->ticket_stamp, util_now_ms(), &conns);
    c->person_key = sio__person_key(c->person->id);
    for (size_t i = 0; i < m->convs.count; i++)
        sio__room_join(l, c, m->convs.ids[i]);
    METRIC_INC(connected_sockets);
    METRIC_INC(connects_total);
    char sid[21];
    sio_sid_string(c->sid, sid);
    /* 40{"sid":"..."}: by hand, the sid is hexadecimal */
    char msg[40];
    int n = snprintf(msg, sizeof(msg), "40{\"sid\":\"%s\"}", sid);
    sio_conn_send_message(c, false, msg, (size_t)n);
    log_info("[CONNECT] user=%s%s sid=%s conns=%d rooms=%zu", c->person->id,
             c->person->is_anonymous ? " anonymous" : "", sid, conns, m->convs.count);
    rearm(c);
    if (e->cfg->single_session && conns > 1) {
        /* The seed's one-socket behaviour: the older connections go, with no offline
         * event since this one already counts. */
        for (int i = 0; i < e->nloops; i++) {
            struct sio_msg *k = xcalloc(1, sizeof(*k));
            k->type = SIO_MSG_KICK;
            k->fd = -1;
            snprintf(k->person_id, sizeof(k->person_id), "%s", c->person->id);
            k->except_serial = c->serial;
            sio__mpsc_push(&e->loops[i].q, k);
        }
    }
}

void sio__session_detach(struct sio_conn *c, const char *reason, bool skip_grace)
{
    char sid[21];
    sio_sid_string(c->sid, sid);
    if (c->state != SIO_ST_CONNECTED || c->person == NULL) {
        log_debug("[DISCONNECT] sid=%s before CONNECT reason=%s", sid, reason);
        return;
    }
    struct sio_loop *l = c->loop;
    struct sio_person *p = c->person;
    char id[OID_HEX_LEN + 1];
    memcpy(id, p->id, sizeof(id));
    int conns = 0;
    c->person = NULL;
    uint32_t gen = sio__registry_detach(l->e, p, skip_grace, util_now_ms(), &conns);
    /* p may be freed now */
    METRIC_SUB(connected_sockets, 1);
    log_info("[DISCONNECT] user=%s sid=%s reason=%s conns=%d%s", id, sid, reason, conns,
             gen != 0 ? " grace" : "");
    if (gen != 0)
        sio__loop_grace_add(l, id, gen);
}

void sio__session_goodbye(struct sio_conn *c)
{
    static const char bye[] = "41";
    sio_conn_send_message(c, false, bye, 2);
}

/* ---- events --------------------------------------------------------------------------- */

static const char *conversation_arg(const struct sio_packet *p)
{
    json_t *arg = json_array_get(p->data, 1);
    const char *cid = json_string_value(json_object_get(arg, "conversationId"));
    if (cid == NULL || !util_oid_valid(cid))
        return NULL;
    return cid;
}

static void ack_success(struct sio_conn *c, int64_t id, const char *cid)
{
    ack(c, id, json_pack("{s:b,s:s}", "success", 1, "conversationId", cid));
}

static void on_join(struct sio_conn *c, struct sio_packet *p)
{
    const char *cid = conversation_arg(p);
    if (cid == NULL) {
        ack_error(c, p->id, "conversationId required");
        return;
    }
    struct sio_msg *m = xcalloc(1, sizeof(*m));
    m->type = SIO_JOB_JOIN;
    m->loop = c->loop;
    m->cfd = c->fd;
    m->fd = -1;
    m->serial = c->serial;
    snprintf(m->cid, sizeof(m->cid), "%s", cid);
    memcpy(m->person_id, c->person->id, sizeof(m->person_id));
    m->is_anonymous = c->person->is_anonymous;
    m->ack_id = p->id;
    sio__worker_push(c->loop->e, m);
}

void sio__session_join_result(struct sio_conn *c, struct sio_msg *m)
{
    if (m->rc != 0) {
        ack_error(c, m->ack_id, "service unavailable");
        return;
    }
    if (!m->ok) {
        ack_error(c, m->ack_id, "forbidden: not a member of this conversation");
        return;
    }
    sio__room_join(c->loop, c, m->cid);
    ack_success(c, m->ack_id, m->cid);
}

static void on_leave(struct sio_conn *c, struct sio_packet *p)
{
    const char *cid = conversation_arg(p);
    if (cid == NULL) {
        ack_error(c, p->id, "conversationId required");
        return;
    }
    if (!sio__room_leave(c->loop, c, cid)) {
        ack_error(c, p->id, "not in this conversation");
        return;
    }
    ack_success(c, p->id, cid);
}

static void on_echo(struct sio_conn *c, struct sio_packet *p)
{
    if (p->id < 0)
        return;
    json_t *args = json_array();
    for (size_t i = 1; i < json_array_size(p->data); i++)
        json_array_append(args, json_array_get(p->data, i));
    size_t len;
    bool bin = p->n_attachments > 0;
    char *s = sio_encode(bin ? SIO_BINARY_ACK : SIO_ACK, "/", p->id, args, p->n_attachments, &len);
    json_decref(args);
    send_text(c, s, len);
    for (size_t i = 0; i < p->n_attachments && c->state == SIO_ST_CONNECTED; i++)
        sio_conn_send_message(c, true, p->attachments[i].data, p->attachments[i].len);
}

static void on_event(struct sio_conn *c, struct sio_packet *p)
{
    struct sio_engine *e = c->loop->e;
    if (!rl_allow(c, sio__mono_ms())) {
        log_warnx("[RATELIMIT] user=%s fd=%d: more than %d events in one second", c->person->id,
                  c->fd, e->cfg->max_events_per_sec);
        METRIC_INC(rate_limited_disconnects_total);
        sio__conn_close(c, "rate limit", SIO_CLOSE_FLUSH, 1008);
        return;
    }
    int64_t now = util_now_ms();
    if (throttle_should_write(e->throttle, c->person->id, now)) {
        store_presence_activity(e->store, c->person->id, c->person->is_anonymous, now);
        sio__registry_activity(e, c->person, now);
    }
    const char *name = json_string_value(json_array_get(p->data, 0));
    if (name == NULL) {
        ack_error(c, p->id, "unknown event");
        return;
    }
    if (strcmp(name, "conversation:join") == 0)
        on_join(c, p);
    else if (strcmp(name, "conversation:leave") == 0)
        on_leave(c, p);
    else if (strcmp(name, "echo") == 0)
        on_echo(c, p);
    else if (p->id >= 0)
        ack_error(c, p->id, "unknown event");
}

static void on_sio_packet(struct sio_conn *c, struct sio_packet *p)
{
    if (c->loop->e->cfg->conformance) {
        sio__conformance_packet(c, p);
        return;
    }
    switch (p->type) {
    case SIO_CONNECT:
        on_connect(c, p);
        break;
    case SIO_DISCONNECT:
        if (strcmp(p->nsp, "/") == 0)
            sio__conn_close(c, "client namespace disconnect", SIO_CLOSE_FLUSH, 1000);
        break;
    case SIO_EVENT:
    case SIO_BINARY_EVENT:
        if (c->state == SIO_ST_CONNECTED && strcmp(p->nsp, "/") == 0)
            on_event(c, p);
        break;
    case SIO_ACK:
    case SIO_BINARY_ACK:
        break; /* the server asks for no acks */
    case SIO_CONNECT_ERROR:
    default:
        sio__conn_close(c, "parse error", SIO_CLOSE_FLUSH, 1002);
        break;
    }
}

static void on_eio_message(struct sio_conn *c, const uint8_t *data, size_t len, bool binary)
{
    struct sio_loop *l = c->loop;
    struct sio_aux *a = c->aux;
    struct sio_decoder *d = (a != NULL && a->dec != NULL) ? a->dec : &l->scratch;
    struct sio_limits lim = {SIO_MAX_ATTACHMENTS, (size_t)l->e->cfg->max_payload_bytes};
    struct sio_packet p;
    memset(&p, 0, sizeof(p));
    int rc = sio_decoder_feed(d, &lim, data, len, binary, &p);
    if (d == &l->scratch && d->_awaiting > 0) {
        /* A binary packet awaits its attachments: the decoder moves to the connection. */
        a = sio__aux(c);
        a->dec = xmalloc(sizeof(*a->dec));
        *a->dec = *d;
        memset(d, 0, sizeof(*d));
    } else if (d != &l->scratch && d->_awaiting == 0) {
        free(d);
        a->dec = NULL;
        sio__aux_maybe_free(c);
    }
    if (rc < 0) {
        sio__conn_close(c, rc == CODEC_ERR_TOO_LARGE ? "payload too large" : "parse error",
                        SIO_CLOSE_FLUSH, rc == CODEC_ERR_TOO_LARGE ? 1009 : 1002);
        return;
    }
    if (rc == SIO_DECODE_PACKET) {
        on_sio_packet(c, &p);
        sio_packet_clear(&p);
    }
}

/* A WebSocket probing the upgrade of a polling session: "2probe" -> "3probe", then "5". */
static void on_probe_packet(struct sio_conn *c, const struct eio_packet *ep)
{
    if (c->flags & SIO_CF_UPGRADE) {
        /* Packets behind the "5" in the same read belong to the session already: hand them
         * over now. Its answers queue on the polling side and go out on this WebSocket, in
         * order, when the loop completes the upgrade (sio__poll_upgraded). */
        struct sio_poll *p = c->aux->poll;
        pthread_mutex_lock(&p->mu);
        uint64_t serial = p->serial;
        pthread_mutex_unlock(&p->mu);
        struct sio_conn *s = sio__conn_find(c->loop, -1, serial);
        if (s != NULL)
            sio__session_on_packet(s, ep);
        return;
    }
    if (ep->type == EIO_PING && ep->len == 5 && memcmp(ep->data, "probe", 5) == 0) {
        static const char pong[] = "3probe";
        sio_conn_send_message(c, false, pong, 6);
        sio__poll_upgrading(c->aux->poll);
        return;
    }
    if (ep->type == EIO_UPGRADE) {
        c->flags |= SIO_CF_UPGRADE; /* done by the loop once this read is processed */
        return;
    }
    if (ep->type == EIO_NOOP)
        return;
    sio__conn_close(c, "bad upgrade", SIO_CLOSE_FLUSH, 1002);
}

void sio__session_on_message(struct sio_conn *c, const uint8_t *msg, size_t len, bool binary)
{
    struct eio_packet ep;
    if (binary) {
        ep.type = EIO_MESSAGE;
        ep.binary = true;
        ep.data = msg;
        ep.len = len;
    } else if (eio_decode_ws(msg, len, false, &ep) != 0) {
        sio__conn_close(c, "parse error", SIO_CLOSE_FLUSH, 1002);
        return;
    }
    sio__session_on_packet(c, &ep);
}

void sio__session_on_packet(struct sio_conn *c, const struct eio_packet *ep)
{
    if (c->state == SIO_ST_PROBE) {
        on_probe_packet(c, ep);
        return;
    }
    if ((c->flags & SIO_CF_EIO_ECHO) && sio__conformance_message(c, ep))
        return;
    struct sio_aux *a = c->aux;
    if (ep->binary) {
        if (a == NULL || a->dec == NULL) {
            sio__conn_close(c, "parse error", SIO_CLOSE_FLUSH, 1003);
            return;
        }
        on_eio_message(c, ep->data, ep->len, true);
        return;
    }
    switch (ep->type) {
    case EIO_PONG:
        c->flags &= (uint8_t)~SIO_CF_AWAIT_PONG;
        rearm(c);
        break;
    case EIO_PING: {
        /* Clients send pings only as upgrade probes; answer them as the reference does. */
        char buf[64];
        if (ep->len > sizeof(buf) - 1) {
            sio__conn_close(c, "parse error", SIO_CLOSE_FLUSH, 1002);
            break;
        }
        buf[0] = '3';
        memcpy(buf + 1, ep->data, ep->len);
        sio_conn_send_message(c, false, buf, ep->len + 1);
        break;
    }
    case EIO_MESSAGE:
        on_eio_message(c, ep->data, ep->len, false);
        break;
    case EIO_CLOSE:
        sio__conn_close(c, "transport close", SIO_CLOSE_FLUSH, 1000);
        break;
    case EIO_UPGRADE:
    case EIO_NOOP:
        break;
    case EIO_OPEN:
    default:
        sio__conn_close(c, "parse error", SIO_CLOSE_FLUSH, 1002);
        break;
    }
}
