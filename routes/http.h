/*
 * http.h - the libmicrohttpd daemon and the REST route table (SPEC §3 "REST", §4).
 *
 * routes/ owns the one MHD daemon of the gateway: REST under /api, /metrics, /healthz,
 * /readyz, CORS, the request timeout, and the dispatch of /socket.io/ (and, in conformance
 * mode, /engine.io/) to the Socket.IO engine through a hook, so that routes/ does not depend
 * on socketio/. Admin routes that act on live connections or on maintenance go through the
 * hooks too; gateway/main.c wires them.
 *
 * Threads: http_start/http_stop from the main thread. The hooks are called on MHD threads and
 * must not block on anything but the store.
 */
#ifndef GW_HTTP_H
#define GW_HTTP_H

#include <microhttpd.h>
#include <stdbool.h>
#include <stdint.h>

#include <jansson.h>

#include "common/config.h"
#include "middleware/auth.h"
#include "middleware/throttle.h"
#include "store/store.h"

/* A WebSocket upgrade head read by the gateway's own accept loop (routes/acceptor.c), before
 * libmicrohttpd sees the connection. It was checked strictly: "GET <target> HTTP/1.1", a Host,
 * Upgrade: websocket, Connection: upgrade, Sec-WebSocket-Version: 13, a 24-char key, no body.
 * Strings are NUL-terminated and borrowed for the duration of the call. */
struct http_ws_head {
    const char *path;          /* the target before '?', as sent (no '%' in it) */
    const char *query;         /* the raw query after '?', "" when none */
    const char *key;           /* Sec-WebSocket-Key */
    const char *authorization; /* the Authorization value, or NULL */
    const char *session_token; /* X-Session-Token, or NULL */
    size_t len;                /* bytes of the head, the final CRLFCRLF included */
};

/* One accept worker handed to a host loop (http_hooks.engine_host). */
struct http_hosted {
    int fd;
    int index;
    void (*run)(void *arg, int index);
    void (*release)(void *arg, int index);
    void *arg;
};

struct http_hooks {
    void *cls;
    /* Handles a request under /socket.io/ (or /engine.io/): the same contract as an MHD access
     * handler. NULL: such paths answer 404. */
    enum MHD_Result (*engine_request)(void *cls, struct MHD_Connection *conn, const char *url,
                                      const char *method, const char *upload_data,
                                      size_t *upload_data_size, void **con_cls);
    /* Called from MHD's completion callback for a request the engine handled. */
    void (*engine_request_done)(void *cls, void *con_cls);
    /* Closes every live connection of the user (admin kick, no grace), marks it offline and
     * broadcasts. Returns the number of connections closed. */
    int (*disconnect_user)(void *cls, const char *user_id);
    /* A user was added to a conversation: its live connections join the room now. */
    void (*member_added)(void *cls, const char *conversation_id, const char *user_id);
    /* The live presence of this node: number of live connections of a person (0 = none). */
    int (*live_connections)(void *cls, const char *person_id);
    /* Maintenance: stats object and a cleanup run. Each returns a new jansson reference, or
     * NULL (answered 503). */
    json_t *(*maintenance_stats)(void *cls);
    json_t *(*maintenance_cleanup)(void *cls);
    /* The fast WebSocket path (both NULL: every request goes through libmicrohttpd). Called on
     * the accept worker's thread (a hosting loop's, see engine_host) for a head under the
     * engine's paths; must not block.
     * engine_ws_accepts: true when the engine would answer this upgrade 101; no side effect.
     * false: the connection goes to libmicrohttpd untouched (and so to engine_request).
     * engine_ws_take: called after engine_ws_accepts said true and the head's bytes were read
     * off fd (nothing past them): the engine owns fd from now on (answers 101 and closes it
     * when done, or closes it at once when it cannot take it any more). */
    bool (*engine_ws_accepts)(void *cls, const struct http_ws_head *h);
    void (*engine_ws_take)(void *cls, int fd, const struct http_ws_head *h);
    /* Accepting on the engine's own loops (both NULL: on accept threads). engine_loops: how
     * many loops can each drive one accept worker. engine_host: hands worker i to loop i, which
     * from then on polls w->fd and calls w->run(w->arg, w->index) on its thread when it is
     * readable, so that engine_ws_take runs on the loop that serves the socket; false when that
     * loop cannot (the worker gets a thread). A loop that stops calls w->release(w->arg, w->index)
     * and never w->run again; it must do so before http_stop. */
    int (*engine_loops)(void *cls);
    bool (*engine_host)(void *cls, int i, const struct http_hosted *w);
};

struct http_server;

/* Starts the daemon on cfg->host:cfg->port with the given collaborators (borrowed: they must
 * outlive the server). port 0 picks a free port; http_port() tells which. Returns NULL and
 * logs on failure. */
struct http_server *http_start(const struct gw_config *cfg, struct store *store,
                               struct auth_ctx *auth, struct throttle *throttle,
                               const struct http_hooks *hooks);
/* The bound port. */
int http_port(const struct http_server *h);
/* Stops accepting new connections (first step of shutdown); in-flight requests finish, and a
 * connection whose head is still arriving in the acceptor is served when it completes. */
void http_quiesce(struct http_server *h);
/* Stops the daemon and frees the server. Call after the Socket.IO engine has handed back
 * every upgraded connection. */
void http_stop(struct http_server *h);

#endif
