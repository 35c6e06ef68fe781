/*
 * sio_internal.h - what the files of the Socket.IO engine share: the engine, its loop
 * threads, a connection, the presence registry, the shared broadcast buffers and the queues
 * between threads. Nothing here is part of the contract with gateway/ (socketio.h is).
 *
 * Files:
 *   engine.c    lifecycle, handshake workers, the public API of socketio.h
 *   upgrade.c   the HTTP side: /socket.io/ request validation and the WebSocket upgrade
 *   loop.c      epoll loop threads: sockets, wslay (only while needed), timers, output queues
 *   session.c   Engine.IO 4 / Socket.IO 5 session logic of one connection (transport-agnostic:
 *               it sees packets and sends messages through sio_conn_send_message)
 *   registry.c  person -> live connections, rooms, user:status broadcasts and the fan-out
 *               adapter
 */
#ifndef GW_SIO_INTERNAL_H
#define GW_SIO_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uthash.h>
#include <wslay/wslay.h>

#include "common/config.h"
#include "common/util.h"
#include "middleware/auth.h"
#include "middleware/throttle.h"
#include "socketio/codec.h"
#include "socketio/socketio.h"
#include "store/store.h"

#define SIO_REG_SHARDS 64
#define SIO_MAX_ATTACHMENTS 10

/* ---- shared buffers ------------------------------------------------------------------- */

/* A reference-counted byte buffer: a complete WebSocket frame (or raw bytes wslay produced)
 * that any number of connections may hold in their output queues (h2o_mem_alloc_shared). */
struct sio_sbuf {
    atomic_uint refs;
    uint32_t len;
    uint8_t data[];
};

struct sio_sbuf *sio_sbuf_new(size_t len);
/* A server (unmasked) WebSocket frame of one message: opcode 1 (text), 2 (binary), 8 (close). */
struct sio_sbuf *sio_sbuf_frame(uint8_t opcode, const void *payload, size_t len);
/* The size of the frame header for a payload of len bytes (2, 4 or 10). */
size_t sio__ws_header_len(size_t len);
/* Writes the header of an unmasked final frame; returns its length. */
size_t sio__ws_header_write(uint8_t *out, uint8_t opcode, size_t len);
/* A 32-bit key of a person id (FNV-1a), kept in the connection and in a broadcast so that the
 * fan-out tells a recipient from the person who changed without reading the person entry, a
 * cache miss per recipient; equal keys are confirmed on the ids. */
static inline uint32_t sio__person_key(const char *id)
{
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < OID_HEX_LEN && id[i] != '\0'; i++)
        h = (h ^ (uint8_t)id[i]) * 16777619u;
    return h;
}

static inline void sio_sbuf_ref(struct sio_sbuf *b)
{
    atomic_fetch_add_explicit(&b->refs, 1, memory_order_relaxed);
}
void sio_sbuf_release(struct sio_sbuf *b);

/* Sec-WebSocket-Accept for a client key: base64(SHA1(key + GUID)), 28 chars + NUL. Returns 0
 * or -1. */
int sio__ws_accept(const char *key, char out[29]);

/* ---- messages between threads --------------------------------------------------------- */

enum sio_msg_type {
    SIO_MSG_NEW_CONN,    /* MHD thread -> loop: an upgraded socket */
    SIO_MSG_AUTH_RESULT, /* worker -> loop: the outcome of a CONNECT */
    SIO_MSG_JOIN_RESULT, /* worker -> loop: the membership check of conversation:join */
    SIO_MSG_BCAST,       /* any -> loop: a user:status to fan out */
    SIO_MSG_KICK,        /* any -> loop: close the connections of a person */
    SIO_MSG_MEMBER_ADDED,
    SIO_MSG_SHUTDOWN,
    SIO_MSG_NEW_POLL,  /* MHD thread -> loop: a polling handshake */
    SIO_MSG_POLL_DATA, /* MHD thread -> loop: the packets of a polling POST */
    SIO_MSG_POLL_SYNC, /* MHD thread -> loop: a GET waits for the upgrade's probe to be read */
    SIO_MSG_HOST,      /* any -> loop: a source to drive (sio_engine_host) */
    SIO_JOB_AUTH,      /* loop -> worker */
    SIO_JOB_JOIN,
};

struct sio_bcast;
struct sio_kick_wait;
struct sio_poll;

struct sio_msg {
    struct sio_msg *next;
    enum sio_msg_type type;
    struct sio_loop *loop; /* jobs: where the result goes */
    int fd;                /* NEW_CONN: the socket (closed if the message is dropped) */
    int cfd;               /* results: the connection's fd, to find it */
    uint64_t serial;
    /* NEW_CONN */
    uint8_t *extra;
    size_t extra_len;
    /* credentials: NEW_CONN (from the request), JOB_AUTH (the chosen one) */
    char *jwt;
    char *session;
    char *qtoken;
    /* AUTH_RESULT / JOIN_RESULT */
    int rc;
    struct store_person person;
    struct store_id_list convs;
    uint64_t ticket_stamp; /* store_ticket_stamp before the reads of person and convs */
    /* JOIN */
    char cid[OID_HEX_LEN + 1];
    char person_id[OID_HEX_LEN + 1];
    bool is_anonymous;
    int64_t ack_id;
    bool ok;
    /* BCAST */
    struct sio_bcast *bcast;
    bool eio_echo; /* NEW_CONN, NEW_POLL: --conformance /engine.io/ (SIO_CF_EIO_ECHO) */
    /* NEW_CONN from the accept loop: the 101 answer, sent in the same write as the open
     * packet; the fd is non-blocking and TCP_NODELAY */
    struct sio_sbuf *hello;
    /* NEW_POLL, POLL_DATA, NEW_CONN of an upgrade from polling (a reference each) */
    struct sio_poll *poll;
    bool probing; /* NEW_CONN: counted in poll->probing until the loop takes it */
    uint8_t *body;
    size_t body_len;
    /* KICK */
    uint64_t except_serial; /* 0: none */
    bool announce;          /* send 41 + close 1000 first */
    bool skip_grace;
    struct sio_kick_wait *wait;
    /* HOST */
    struct sio_hosted host;
};

struct sio_mpsc {
    pthread_mutex_t mu;
    struct sio_msg *head, *tail;
    int efd; /* eventfd, written only on empty -> non-empty by another thread */
    /* The loop that drains it. Its own pushes (a broadcast of a change it made) skip the
     * eventfd: self_pending (its thread only) has it drained before the loop's next
     * epoll_wait, with no write, read or extra wake-up. */
    struct sio_loop *owner;
    bool self_pending;
};

void sio_msg_free(struct sio_msg *m);
/* Authenticates the credentials of a CONNECT (m->jwt or m->session) into m: rc, and on success
 * the person and its conversations; m becomes an SIO_MSG_AUTH_RESULT. The credentials stay.
 * cached: from the caches only, for a loop thread; returns false (m untouched) when the answer
 * needs a worker. Always true otherwise. */
bool sio__auth_run(struct sio_engine *e, struct sio_msg *m, bool cached);
/* Wipes and frees a credential string (NULL allowed). */
void sio__free_secret(char *s);

/* disconnect_user waits for every loop to act (bounded). */
struct sio_kick_wait {
    pthread_mutex_t mu;
    pthread_cond_t cond;
    int pending; /* loops yet to answer */
    int closed;
    int refs; /* the waiter and each loop message */
};
void sio__kick_wait_done(struct sio_kick_wait *w, int closed);

/* ---- broadcasts ----------------------------------------------------------------------- */

struct sio_bcast {
    atomic_int pending_loops; /* the last loop to finish records the latency and frees */
    uint32_t person_key;      /* sio__person_key(person_id) */
    int64_t t0_ns;            /* when the change happened (monotonic) */
    char person_id[OID_HEX_LEN + 1];
    size_t nconv;
    char (*convs)[OID_HEX_LEN + 1];
    struct sio_sbuf *frame;
};

/* The fan-out adapter (Socket.IO's own adapters: in-memory today, Redis later). publish
 * takes ownership of b. */
struct sio_adapter {
    void (*publish)(void *cls, struct sio_bcast *b);
    void (*close)(void *cls);
    void *cls;
};

/* ---- connections ---------------------------------------------------------------------- */

enum sio_conn_state {
    SIO_ST_AWAIT_CONNECT, /* Engine.IO open sent, Socket.IO CONNECT awaited */
    SIO_ST_AUTHING,       /* CONNECT received, the worker verifies */
    SIO_ST_CONNECTED,
    SIO_ST_PROBE,    /* a WebSocket probing the upgrade of a polling session */
    SIO_ST_FLUSHING, /* detached; writes out what is queued, then goes */
    SIO_ST_DEAD,     /* on the reap list */
};

#define SIO_CF_AWAIT_PONG 0x01u
#define SIO_CF_IN_LIST 0x02u
#define SIO_CF_WANT_OUT 0x04u /* EPOLLOUT registered */
#define SIO_CF_DIRTY 0x08u    /* broadcast frames queued, written once after the batch */
#define SIO_CF_UPGRADE 0x10u  /* a probe got "5": take over its polling session */
/* --conformance (conformance.c): a bare Engine.IO echo session (/engine.io/), and the
 * namespaces a Socket.IO session joined */
#define SIO_CF_EIO_ECHO 0x20u
#define SIO_CF_NSP_MAIN 0x40u
#define SIO_CF_NSP_CUSTOM 0x80u
/* upgraded from polling: its sid stays in the polling map (a second upgrade is refused,
 * polling requests get 400) until the connection closes */
#define SIO_XF_POLL_SID 0x01u
/* its fd is the only descriptor of the socket (the accept loop's): close() alone takes it out
 * of the epoll set, without an EPOLL_CTL_DEL. A socket dup'ed out of libmicrohttpd is not: its
 * other descriptor may close later, and the registration would outlive ours. */
#define SIO_XF_SOLE_FD 0x02u

/* WebSocket receive state, allocated with the wslay context and freed with it (STACK-NOTES
 * §9): an idle connection holds neither. */
struct sio_ws {
    wslay_event_context_ptr ctx;
    uint64_t recv_bytes; /* handed to wslay by the recv callback */
    uint64_t done_bytes; /* bytes of frames completely parsed */
    uint64_t cur_frame_bytes;
    bool frame_open;
    bool frag_open;
};

/* What a connection holds only for a while: the credentials of the upgrade request until
 * CONNECT, bytes that came with the upgrade, a binary packet awaiting attachments, and the
 * timestamps of the rate limit window. */
struct sio_aux {
    char *jwt;     /* Authorization: Bearer of the upgrade request */
    char *qtoken;  /* ?token= */
    char *session; /* X-Session-Token */
    uint8_t *pre;
    size_t pre_len, pre_off;
    struct sio_decoder *dec;
    uint32_t *rl_ts; /* ring of max_events_per_sec timestamps (ms since loop base) */
    uint32_t rl_head, rl_n;
    struct sio_poll *poll; /* HTTP long-polling transport (then fd is -1), or the polling
                            * session a probing WebSocket would take over */
};

struct sio_person;
struct sio_member;
struct sio_outchunk;

struct sio_conn {
    int fd;
    uint8_t state;
    uint8_t flags;
    uint8_t xflags;      /* SIO_XF_* (in what was padding) */
    uint32_t heap_idx;   /* UINT32_MAX: not in the timer heap */
    uint32_t person_key; /* sio__person_key(person->id) while connected (in what was padding) */
    int64_t deadline_ms;
    int64_t ping_sent_ms;
    int64_t connect_deadline_ms;
    uint64_t serial; /* matches asynchronous results to this connection */
    uint64_t sid;
    uint64_t stamp; /* last broadcast delivered (dedupe) */
    struct sio_loop *loop;
    struct sio_ws *ws;
    struct sio_aux *aux;
    struct sio_outchunk *out_head, *out_tail;
    size_t out_bytes;
    struct sio_person *person; /* registry entry while connected */
    struct sio_member *rooms;
    struct sio_conn *prev, *next; /* the loop's list, or the reap list */
};

/* ---- HTTP long-polling ---------------------------------------------------------------- */

/* A polling session, shared by its loop (which owns the connection) and the MHD threads that
 * serve its GET and POST requests. Everything below refs is under mu. */
struct sio_poll {
    atomic_int refs; /* the sid map, the connection, each request and message holding it */
    pthread_mutex_t mu;
    char sid[21];
    uint64_t sid_u64;
    struct sio_loop *loop;
    uint64_t serial; /* of its connection */
    char *out;       /* packets waiting for the next GET, as a polling payload */
    size_t out_len, out_cap;
    struct MHD_Connection *waiting; /* a suspended GET */
    bool closed;                    /* no more requests; a waiting GET gets the close packet */
    bool upgrading;                 /* a WebSocket probe answered: GETs get a noop */
    int probing;  /* upgrade requests accepted by the HTTP side, not yet on the loop */
    int probe_fd; /* the probe on the loop, read on a GET's sync */
    uint64_t probe_serial;
    bool upgraded;
    bool close_after;      /* closed with packets queued: they go first, the close packet next */
    bool client_closed;    /* the client sent a close packet: a waiting GET ends with a noop */
    bool batch;            /* the loop is handling a POST: the waiting GET is woken at its end */
    int64_t ping_sched_ms; /* when the pending (or next) ping is due, as scheduled: requests
                            * after ping_sched_ms + pingTimeout find the session expired */
    UT_hash_handle hh;     /* in the engine's sid map */
};

struct sio_pollconn { /* per loop: serial -> connection without an fd */
    uint64_t serial;
    struct sio_conn *c;
    UT_hash_handle hh;
};

/* ---- rooms (per loop) ----------------------------------------------------------------- */

struct sio_room {
    char cid[OID_HEX_LEN + 1];
    struct sio_member *head;
    UT_hash_handle hh;
};

struct sio_member {
    struct sio_conn *c;
    struct sio_room *room;
    struct sio_member *rprev, *rnext; /* in the room */
    struct sio_member *cnext;         /* in the connection */
};

/* ---- loops ---------------------------------------------------------------------------- */

struct sio_grace {
    struct sio_grace *next;
    int64_t deadline_ms;
    uint32_t gen;
    char id[OID_HEX_LEN + 1];
};

/* A closed polling session kept findable until its last payload is fetched (bounded). */
struct sio_linger {
    struct sio_linger *next;
    int64_t deadline_ms;
    struct sio_poll *poll;
};

struct sio_loop {
    struct sio_engine *e;
    int idx;
    pthread_t thread;
    bool started;
    int epfd;
    int tfd;
    struct sio_mpsc q;
    struct sio_conn *conns;
    size_t nconns;
    struct sio_conn *reap;
    struct sio_conn **heap;
    size_t heap_len, heap_cap;
    int64_t armed_ms;
    struct sio_room *rooms;
    struct sio_grace *grace_head, *grace_tail;
    struct sio_linger *linger_head, *linger_tail;
    struct sio_sync *syncs; /* GETs held during an upgrade, answered after the event batch */
    uint64_t stamp;
    uint64_t next_serial;
    int64_t base_ms;
    struct sio_decoder scratch;
    bool stopping;
    int64_t stop_deadline_ms;
    struct sio_conn **by_fd; /* fd -> this loop's connection (results find theirs) */
    struct sio_pollconn *pollconns;
    struct sio_conn **dirty; /* connections with broadcast frames to write (coalescing) */
    size_t ndirty, dirty_cap;
    uint8_t *rbuf; /* the socket read of the connection being served */
    size_t rbuf_len, rbuf_off;
    unsigned freed_ctx; /* wslay contexts freed since the last malloc_trim */
    int64_t last_trim_ms;
    struct sio_outchunk *chunk_free; /* recycled output queue entries (at most
                                      * SIO_CHUNK_FREE_MAX): none allocated per delivery */
    unsigned nchunk_free;
    struct sio_hosted host; /* driven while hosting */
    bool hosting;
};

/* ---- registry ------------------------------------------------------------------------- */

/* One person with live connections on this node (or inside its disconnect grace). */
struct sio_person {
    char id[OID_HEX_LEN + 1];
    bool is_anonymous;
    bool in_grace;
    int conns;
    uint32_t gen;
    char *username;
    int64_t last_active_ms;
    int64_t last_seen_ms;
    struct store_id_list convs;
    uint64_t ticket_stamp; /* of username and convs: the reconnect ticket left at go_offline */
    UT_hash_handle hh;
};

struct sio_reg_shard {
    pthread_mutex_t mu;
    struct sio_person *map;
};

/* ---- engine --------------------------------------------------------------------------- */

struct sio_engine {
    const struct gw_config *cfg;
    struct store *store;
    struct auth_ctx *auth;
    struct throttle *throttle;
    int nloops;
    struct sio_loop *loops;
    atomic_uint rr;
    atomic_bool running; /* loops accept messages */
    /* handshake workers */
    int nworkers;
    pthread_t *workers;
    pthread_mutex_t wmu;
    pthread_cond_t wcond;
    int widle; /* workers waiting on wcond (under wmu): a push wakes one only if any */
    struct sio_msg *whead, *wtail;
    bool wstop;
    /* registry */
    struct sio_reg_shard shards[SIO_REG_SHARDS];
    struct sio_adapter adapter;
    size_t fd_limit; /* RLIMIT_NOFILE at start: the size of each loop's by_fd */
    pthread_mutex_t polls_mu;
    struct sio_poll *polls; /* sid -> polling session */
    /* Polling requests MHD has not yet reported completed (their answer may still be on
     * its way): shutdown waits for them before the daemon stops. */
    atomic_int poll_requests;
};

/* registry.c */
void sio__registry_init(struct sio_engine *e);
void sio__registry_destroy(struct sio_engine *e);
/* A connection finished its CONNECT: counts it for the person and runs the connect flow when
 * it is the first. Returns the entry (valid while the connection counts) and *conns_out. */
struct sio_person *sio__registry_attach(struct sio_engine *e, const struct store_person *p,
                                        const struct store_id_list *convs, uint64_t ticket_stamp,
                                        int64_t now_ms, int *conns_out);
/* A connection went. Returns the grace generation to arm a timer with, or 0 when no timer is
 * needed. *conns_out receives the remaining count. */
uint32_t sio__registry_detach(struct sio_engine *e, struct sio_person *p, bool skip_grace,
                              int64_t now_ms, int *conns_out);
void sio__registry_grace_expired(struct sio_engine *e, const char *id, uint32_t gen);
int sio__registry_live(struct sio_engine *e, const char *id);
void sio__registry_member_added(struct sio_engine *e, const char *cid, const char *uid);
void sio__registry_activity(struct sio_engine *e, struct sio_person *p, int64_t now_ms);
/* An admin kick skips the grace: a person inside it goes offline now. */
void sio__registry_end_grace(struct sio_engine *e, const char *id);
/* Persons in their grace when the engine stops: offline now. */
void sio__registry_flush_grace(struct sio_engine *e);
/* Builds and publishes a user:status broadcast. */
void sio__broadcast(struct sio_engine *e, const char *id, const char *username, bool is_anonymous,
                    bool is_online, int64_t last_active_ms, int64_t last_seen_ms,
                    const char (*convs)[OID_HEX_LEN + 1], size_t nconv, int64_t t0_ns);
/* The user:status event as the text of one WebSocket message ("42[...]"). */
char *sio__status_packet(const struct sio_engine *e, const char *id, const char *username,
                         bool is_anonymous, bool is_online, int64_t last_active_ms,
                         int64_t last_seen_ms, int64_t now_ms, size_t *len);
struct sio_adapter sio__adapter_local(struct sio_engine *e);
void sio__bcast_done(struct sio_bcast *b);

/* loop.c */
int sio__loop_init(struct sio_engine *e, struct sio_loop *l, int idx);
void sio__loop_destroy(struct sio_loop *l);
void *sio__loop_main(void *arg);
/* The loop whose thread calls (NULL off the loops). */
struct sio_loop *sio__loop_current(void);
/* A NEW_CONN message taken on l's own thread, as the queue would; frees m. */
void sio__loop_take(struct sio_loop *l, struct sio_msg *m);
void sio__mpsc_push(struct sio_mpsc *q, struct sio_msg *m);
/* Output: queue a complete frame to a connection (ref taken). */
void sio__conn_send_sbuf(struct sio_conn *c, struct sio_sbuf *b);
/* Sends one Engine.IO message on the connection's transport (a WebSocket message). */
void sio_conn_send_message(struct sio_conn *c, bool binary, const void *data, size_t len);
#define SIO_CLOSE_FLUSH 0x01
#define SIO_CLOSE_SKIP_GRACE 0x02
/* Logical disconnect now (registry, rooms, logs); the socket goes after its queue is
 * written (FLUSH) or at the end of the loop iteration. ws_code != 0 queues a close frame. */
void sio__conn_close(struct sio_conn *c, const char *reason, int flags, uint16_t ws_code);
void sio__conn_timer_update(struct sio_conn *c);
void sio__loop_grace_add(struct sio_loop *l, const char *id, uint32_t gen);
/* The live connection an asynchronous result is for, or NULL. */
struct sio_conn *sio__conn_find(struct sio_loop *l, int fd, uint64_t serial);
/* Moves the fd of a probing WebSocket into its polling session (on "5"). */
void sio__conn_upgrade(struct sio_conn *probe);
void sio__room_join(struct sio_loop *l, struct sio_conn *c, const char *cid);
bool sio__room_leave(struct sio_loop *l, struct sio_conn *c, const char *cid);
struct sio_aux *sio__aux(struct sio_conn *c);
void sio__aux_maybe_free(struct sio_conn *c);

/* session.c */
void sio__session_open(struct sio_conn *c);
void sio__session_on_message(struct sio_conn *c, const uint8_t *msg, size_t len, bool binary);
void sio__session_on_packet(struct sio_conn *c, const struct eio_packet *ep);
void sio__session_on_timer(struct sio_conn *c, int64_t now_ms);
void sio__session_auth_result(struct sio_conn *c, struct sio_msg *m);
void sio__session_join_result(struct sio_conn *c, struct sio_msg *m);
void sio__session_detach(struct sio_conn *c, const char *reason, bool skip_grace);
void sio__session_goodbye(struct sio_conn *c);
void sio__sid_string(uint64_t sid, char out[21]);

/* polling.c */
enum MHD_Result sio__polling_request(struct sio_engine *e, struct MHD_Connection *conn,
                                     const char *url, const char *method, const char *sid,
                                     const char *upload_data, size_t *upload_data_size,
                                     void **con_cls);
void sio__polling_request_done(void *con_cls);
/* The live polling session of sid with a reference taken, or NULL. */
struct sio_poll *sio__poll_find(struct sio_engine *e, const char *sid);
void sio__poll_release(struct sio_poll *p);
/* An upgrade request counted in p->probing reached the loop or failed. */
void sio__poll_probe_gone(struct sio_poll *p);
/* The loop, after reading the probe of p on a GET's sync: a GET still waiting gets its noop
 * unless the upgrade completed (then its 400). */
void sio__poll_sync_done(struct sio_poll *p);

struct sio_sync {
    struct sio_poll *p; /* a reference */
    struct sio_sync *next;
};
/* Loop side */
void sio__poll_send(struct sio_conn *c, bool binary, const void *data, size_t len);
void sio__poll_close(struct sio_conn *c);
void sio__poll_upgrading(struct sio_poll *p);
void sio__poll_unmap(struct sio_engine *e, struct sio_poll *p);
/* The connection of an upgraded session closed: its sid leaves the polling map. */
void sio__poll_forget(struct sio_engine *e, uint64_t sid);
/* Around the packets of one POST (loop side): what they make the session send leaves in one
 * GET answer (the reference answers a POST's packets together). */
void sio__poll_batch(struct sio_poll *p, bool begin);
/* Hands the packets still queued for polling to fn (the upgrade sends them on the WebSocket)
 * and marks the session upgraded. */
void sio__poll_upgraded(struct sio_poll *p, void (*fn)(void *cls, const struct eio_packet *pk),
                        void *cls);

/* conformance.c (--conformance, SPEC §3 "Conformance mode") */
/* The configuration the engine uses in conformance mode: cfg with the suites' timings. */
const struct gw_config *sio__conformance_config(const struct gw_config *cfg);
/* True for /engine.io/ in conformance mode: the session is a bare Engine.IO echo. */
bool sio__conformance_eio_path(const struct sio_engine *e, const char *url);
/* An Engine.IO packet of an echo session: true when handled (messages are echoed). */
bool sio__conformance_message(struct sio_conn *c, const struct eio_packet *ep);
/* A Socket.IO packet in conformance mode (instead of the product's handling). */
void sio__conformance_packet(struct sio_conn *c, struct sio_packet *p);
/* Called first by the connection's timer in conformance mode: sends what is due. */
void sio__conformance_timer(struct sio_conn *c, int64_t now_ms);

/* engine.c */
void sio__worker_push(struct sio_engine *e, struct sio_msg *m);
int64_t sio__mono_ms(void);

#endif
