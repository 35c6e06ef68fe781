/*
 * route_internal.h - what the files of routes/ share and nothing else includes: the request
 * object, the route table entry, the pure helpers (path matching, CORS, views, sorting) that
 * the unit tests drive directly, and the REST handlers of api.c.
 *
 * Threads: everything here runs on MHD threads, one request on one thread at a time; the pure
 * helpers hold no state.
 */
#ifndef GW_ROUTE_INTERNAL_H
#define GW_ROUTE_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include <jansson.h>

#include "common/config.h"
#include "common/util.h"
#include "middleware/auth.h"
#include "routes/http.h"
#include "store/store.h"

#define ROUTE_MAX_PARAMS 2
#define ROUTE_PARAM_LEN 64
#define ROUTE_MAX_STATUS_IDS 500

/* Who may call a route. */
enum route_auth {
    ROUTE_OPEN = 0, /* nobody is authenticated */
    ROUTE_PERSON,   /* a user or anonymous participant in the store, active */
    ROUTE_MEMBER,   /* a person, or an admin token (the handler checks membership) */
    ROUTE_ADMIN,    /* an admin token (auth_authenticate with require_admin) */
};

enum route_method {
    ROUTE_GET = 1 << 0,
    ROUTE_POST = 1 << 1,
    ROUTE_PUT = 1 << 2,
    ROUTE_DELETE = 1 << 3,
    ROUTE_PATCH = 1 << 4,
    ROUTE_OPTIONS = 1 << 5,
    ROUTE_HEAD = 1 << 6,
    ROUTE_OTHER = 1 << 7,
};

struct http_server;
struct route_req;

typedef void (*route_handler_fn)(struct route_req *r);

struct route_def {
    int method; /* one ROUTE_* bit */
    const char *pattern;
    route_handler_fn handler;
    enum route_auth auth;
};

/* One request, allocated on MHD's first access-handler call and freed in the completion
 * callback (MHD_OPTION_NOTIFY_COMPLETED). */
struct route_req {
    struct http_server *srv;
    struct MHD_Connection *conn;
    struct route_conn *track; /* the connection's timeout record (may be NULL) */
    int method;
    char *path;  /* copy of the URL path, without the query */
    bool engine; /* handed to hooks->engine_request */
    void *engine_cls;
    bool responded;
    /* body, bounded by cfg->max_payload_bytes */
    char *body;
    size_t body_len, body_cap;
    bool too_large;
    /* route match */
    const struct route_def *route;
    char params[ROUTE_MAX_PARAMS][ROUTE_PARAM_LEN];
    int nparams;
    /* authentication */
    bool authed;
    struct auth_result auth;
    bool is_admin; /* admin rights verified for this request */
    /* the answer */
    unsigned int status;
    json_t *json; /* owned */
    char *text;   /* owned, non-JSON body (metrics) */
    size_t text_len;
    const char *content_type;
    const char *allow; /* Allow header (405, OPTIONS) */
    bool www_authenticate;
    bool close;
};

/* The parts of the server the handlers read. */
struct http_server_view {
    const struct gw_config *cfg;
    struct store *store;
    struct auth_ctx *auth;
    struct throttle *throttle;
    const struct http_hooks *hooks;
};
const struct http_server_view *route__server(const struct route_req *r);

/* --- pure helpers (match.c) ------------------------------------------------------------------ */

/* Matches path against pattern ("/api/users/:id"). Each ":name" segment matches one non-empty
 * segment of at most ROUTE_PARAM_LEN-1 bytes, copied to params in order. Returns true on a
 * match and sets *nparams. */
bool route__match(const char *pattern, const char *path, char params[][ROUTE_PARAM_LEN],
                  int *nparams);
/* The ROUTE_* bit of an HTTP method name (ROUTE_OTHER when unknown). */
int route__method_bit(const char *method);
/* Writes "GET, HEAD, POST, OPTIONS" style text for a method mask into out. */
void route__allow_text(int mask, char *out, size_t outlen);
/* True when origin is in the comma-separated allowlist (spaces around entries ignored, "*"
 * allows every origin). An empty or NULL list allows none. */
bool route__cors_allowed(const char *allowlist, const char *origin);
/* True for 127.0.0.0/8, ::1 and ::ffff:127.0.0.0/104. */
bool route__is_loopback(const struct sockaddr *sa);
/* Splits the ids parameter ("a,b,,c"): calls fn for each non-empty, space-trimmed item (not
 * NUL-terminated: s/len). Returns the number of items, or -1 as soon as there are more than
 * max (fn is then not called for the extra ones). */
int route__split_ids(const char *ids, int max, void (*fn)(void *cls, const char *s, size_t len),
                     void *cls);

/* --- views (view.c) -------------------------------------------------------------------------- */

/* The person view of SPEC §3 at now_ms. live: live connections on this node (they make the
 * person online whatever the store says). full adds email and isActive (users only). Returns
 * a new reference. */
json_t *route__person_view(const struct store_person *p, int64_t now_ms, int64_t away_after_ms,
                           int64_t offline_after_ms, bool live, bool full);
/* Sorts persons for the participants list: online first, then status (online, away,
 * offline), then username (case-insensitive), then id. live[i] is the live flag of items[i]
 * and moves with it. */
void route__sort_participants(struct store_person *items, bool *live, size_t n, int64_t now_ms,
                              int64_t away_after_ms, int64_t offline_after_ms);

/* --- answers (http.c) ------------------------------------------------------------------------ */

/* Sets an error answer {"error": code, "message": message}. */
void route__error(struct route_req *r, unsigned int status, const char *code, const char *message);
/* Maps a STORE_ERR_* to its answer (404, 409, 400, 503, 500). */
void route__store_error(struct route_req *r, int err, const char *what);
/* Sets a JSON answer (takes the reference). */
void route__json(struct route_req *r, unsigned int status, json_t *body);
/* Parses the body as a JSON object; on failure answers 400 and returns NULL. New reference. */
json_t *route__body_object(struct route_req *r);
/* Whether the person has live connections on this node (hooks->live_connections). */
bool route__live(struct route_req *r, const char *person_id);

/* --- handlers (api.c) ------------------------------------------------------------------------ */

extern const struct route_def route__table[];
extern const size_t route__table_len;

/* acceptor.c: the gateway's own accept loop in front of libmicrohttpd. */
struct route_acceptor;
struct route_acceptor_ops {
    void *cls;
    /* The head is a WebSocket upgrade the engine takes (http_hooks.engine_ws_accepts). NULL:
     * every connection is passed. */
    bool (*ws_accepts)(void *cls, const struct http_ws_head *h);
    /* The head's bytes were read off fd: the engine owns it. */
    void (*ws_take)(void *cls, int fd, const struct http_ws_head *h);
    /* Hands fd to libmicrohttpd with nothing consumed; the callee owns fd. */
    void (*pass)(void *cls, int fd, const struct sockaddr *sa, socklen_t salen);
    /* Connections held elsewhere that count against the limit (libmicrohttpd's). */
    unsigned (*others)(void *cls);
};
/* Starts the acceptor on a listening socket (non-blocking) with nworkers workers: each on a
 * thread of its own, or, hosted, none started: a host loop drives each (route__acceptor_fd,
 * route__acceptor_run) until it hands it back (route__acceptor_release). On success it owns
 * listen_fd; on failure (NULL, logged) the caller still does. ops is copied; its callbacks run
 * on the workers' threads (a host's for a hosted worker), several at once. */
struct route_acceptor *route__acceptor_start(int listen_fd, int nworkers, bool hosted,
                                             int64_t timeout_ms, unsigned limit,
                                             const struct route_acceptor_ops *ops);
/* Hosted worker i: an fd (epoll) that is readable when it has work, and one non-blocking pass
 * of its work, to call on the host's thread when that fd is readable. */
int route__acceptor_fd(const struct route_acceptor *a, int i);
void route__acceptor_run(struct route_acceptor *a, int i);
/* The host of worker i stops driving it: it gets a thread of its own (a no-op for a worker that
 * has one). 0, or -1 when the thread cannot start. */
int route__acceptor_release(struct route_acceptor *a, int i);
/* Stops accepting at once; heads still arriving are served. Main thread. */
void route__acceptor_quiesce(struct route_acceptor *a);
/* Joins the threads and closes the held connections and the listening socket. Every hosted
 * worker must have been released first. */
void route__acceptor_stop(struct route_acceptor *a);
/* The strict head parser (in place; see acceptor.c). */
bool route__ws_head_parse(char *buf, size_t len, struct http_ws_head *out);

#endif
