/*
 * socketio.h - the Socket.IO engine: Engine.IO 4 / Socket.IO 5 sessions over WebSocket (and
 * later HTTP long-polling), the presence registry (person → live connections, rooms), and the
 * targeted user:status broadcasts (SPEC §1, §2 flows 1–2, §3 "Socket.IO").
 *
 * Upgraded sockets are taken out of libmicrohttpd (STACK-NOTES §9) and run on epoll loop
 * threads; each loop thread owns its connections. Other threads talk to loops through MPSC
 * queues and eventfds.
 *
 * Threads: sio_engine_new/start/shutdown/free on the main thread; the MHD hook on MHD threads;
 * sio_engine_disconnect_user, sio_engine_member_added, sio_engine_broadcast_status and
 * sio_engine_live_connections from any thread but a loop thread.
 */
#ifndef GW_SOCKETIO_H
#define GW_SOCKETIO_H

#include <microhttpd.h>
#include <stdbool.h>
#include <stddef.h>

#include "common/config.h"
#include "middleware/auth.h"
#include "middleware/throttle.h"
#include "store/store.h"

struct sio_engine;

struct sio_engine *sio_engine_new(const struct gw_config *cfg, struct store *store,
                                  struct auth_ctx *auth, struct throttle *throttle);
/* Starts the loop threads and the handshake workers. Returns 0 or -1. */
int sio_engine_start(struct sio_engine *e);

/* The MHD access handler for /socket.io/ (and /engine.io/ in conformance mode). */
enum MHD_Result sio_engine_http_request(void *e, struct MHD_Connection *conn, const char *url,
                                        const char *method, const char *upload_data,
                                        size_t *upload_data_size, void **con_cls);
void sio_engine_http_request_done(void *e, void *con_cls);

/* A WebSocket upgrade request read by the gateway's own accept loop (routes/ checked the HTTP
 * side strictly). Strings are borrowed for the call. */
struct sio_ws_handshake {
    const char *path;          /* without the query */
    const char *query;         /* raw, after '?' ("" when none) */
    const char *key;           /* Sec-WebSocket-Key */
    const char *authorization; /* or NULL */
    const char *session_token; /* or NULL */
};
/* True when the engine answers this upgrade 101 itself (EIO=4, transport=websocket, no sid,
 * the engine running): then sio_engine_ws_take follows. False: the request is to go through
 * sio_engine_http_request, which answers what the reference server answers. No side effect;
 * any thread. */
bool sio_engine_ws_accepts(struct sio_engine *e, const struct sio_ws_handshake *h);
/* Takes fd, whose request head was read off it entirely (nothing after it): the 101 goes out
 * with the Engine.IO open packet from the loop thread that owns it (the calling one when it is
 * a loop running a hosted source). The engine owns fd from now on (closes it at once when it
 * is shutting down). Any thread. */
void sio_engine_ws_take(struct sio_engine *e, int fd, const struct sio_ws_handshake *h);

/* A source of work a loop drives on its own thread (an HTTP accept worker): fd is readable
 * when run has work. */
struct sio_hosted {
    int fd;
    int index;
    void (*run)(void *arg, int index);     /* one non-blocking pass, on the loop thread */
    void (*release)(void *arg, int index); /* the loop stops: never runs it again */
    void *arg;
};
/* How many loops there are: each can host one source. */
int sio_engine_loops(const struct sio_engine *e);
/* Loop i drives h from now on (copied) until it stops, then calls h->release. False when loop
 * i does not run (h is not used). Any thread; a sio_engine_ws_take from a hosted run takes the
 * socket on that loop with no hand-off. */
bool sio_engine_host(struct sio_engine *e, int i, const struct sio_hosted *h);

/* Closes every connection of the person (no grace), marks it offline, broadcasts. Returns
 * the number of connections closed. Waits for the loops to act (bounded). */
int sio_engine_disconnect_user(struct sio_engine *e, const char *person_id);
/* A user was added to a conversation: its live connections join the room. */
void sio_engine_member_added(struct sio_engine *e, const char *conversation_id,
                             const char *user_id);
/* Live connections of a person on this node (0 = none), including those in their disconnect
 * grace. Thread-safe, lock-light. */
int sio_engine_live_connections(struct sio_engine *e, const char *person_id);
/* Broadcasts user:status for p to every connection sharing a conversation with it (the
 * maintenance callback). p's fields are copied. */
void sio_engine_broadcast_status(struct sio_engine *e, const struct store_person *p);

/* Graceful shutdown (SPEC §2.6): Socket.IO disconnect + close frame 1001 to every connection,
 * marks every live person offline through the store, stops the loops. */
void sio_engine_shutdown(struct sio_engine *e);
void sio_engine_free(struct sio_engine *e);

#endif
