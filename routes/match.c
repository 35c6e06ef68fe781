/*
 * match.c - the pure helpers of the REST layer: route patterns, method names, the Allow text,
 * the CORS allowlist, the loopback test of /metrics and the ids list of /api/users/status.
 *
 * They take no locks and allocate nothing, so the unit tests drive them directly and every
 * MHD thread may call them at once. Inputs are untrusted (paths, headers, query strings):
 * every copy is bounded.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "routes/route_internal.h"

bool route__match(const char *pattern, const char *path, char params[][ROUTE_PARAM_LEN],
                  int *nparams)
{
    const char *p = pattern, *s = path;
    int n = 0;

    while (*p != '\0' && *s != '\0') {
        if (*p == ':') {
            /* A parameter spans one whole non-empty segment. */
            size_t len = strcspn(s, "/");
            if (len == 0 || len >= ROUTE_PARAM_LEN || n >= ROUTE_MAX_PARAMS)
                return false;
            memcpy(params[n], s, len);
            params[n][len] = '\0';
            n++;
            s += len;
            p += strcspn(p, "/");
            continue;
        }
        if (*p != *s)
            return false;
        p++;
        s++;
    }
    /* A single trailing slash on the path is tolerated ("/api/users/me/"). */
    if (*p == '\0' && s[0] == '/' && s[1] == '\0' && s != path)
        s++;
    if (*p != '\0' || *s != '\0')
        return false;
    *nparams = n;
    return true;
}

int route__method_bit(const char *method)
{
    static const struct {
        const char *name;
        int bit;
    } methods[] = {
        {"GET", ROUTE_GET},       {"POST", ROUTE_POST},   {"PUT", ROUTE_PUT},
        {"DELETE", ROUTE_DELETE}, {"PATCH", ROUTE_PATCH}, {"OPTIONS", ROUTE_OPTIONS},
        {"HEAD", ROUTE_HEAD},
    };
    for (size_t i = 0; i < sizeof(methods) / sizeof(methods[0]); i++)
        if (strcmp(method, methods[i].name) == 0)
            return methods[i].bit;
    return ROUTE_OTHER;
}

void route__allow_text(int mask, char *out, size_t outlen)
{
    static const struct {
        int bit;
        const char *name;
    } order[] = {
        {ROUTE_GET, "GET"},         {ROUTE_HEAD, "HEAD"},   {ROUTE_POST, "POST"},
        {ROUTE_PUT, "PUT"},         {ROUTE_PATCH, "PATCH"}, {ROUTE_DELETE, "DELETE"},
        {ROUTE_OPTIONS, "OPTIONS"},
    };
    size_t used = 0;

    if (outlen == 0)
        return;
    out[0] = '\0';
    for (size_t i = 0; i < sizeof(order) / sizeof(order[0]); i++) {
        if (!(mask & order[i].bit))
            continue;
        int w = snprintf(out + used, outlen - used, "%s%s", used ? ", " : "", order[i].name);
        if (w < 0 || (size_t)w >= outlen - used) {
            out[used] = '\0'; /* drop the partial name */
            return;
        }
        used += (size_t)w;
    }
}

bool route__cors_allowed(const char *allowlist, const char *origin)
{
    /* The allowlist logic lives in common/ so that the Socket.IO polling transport uses it too. */
    return util_cors_origin_allowed(allowlist, origin);
}

bool route__is_loopback(const struct sockaddr *sa)
{
    if (sa == NULL)
        return false;
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)(const void *)sa;
        return (ntohl(in->sin_addr.s_addr) >> 24) == 127;
    }
    if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)(const void *)sa;
        const unsigned char *a = in6->sin6_addr.s6_addr;
        if (IN6_IS_ADDR_LOOPBACK(&in6->sin6_addr))
            return true;
        return IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr) && a[12] == 127;
    }
    return false;
}

int route__split_ids(const char *ids, int max, void (*fn)(void *cls, const char *s, size_t len),
                     void *cls)
{
    const char *p = ids;
    int n = 0;

    if (ids == NULL)
        return 0;
    while (*p != '\0') {
        size_t len = strcspn(p, ",");
        const char *b = p, *e = p + len;
        while (b < e && *b == ' ')
            b++;
        while (e > b && e[-1] == ' ')
            e--;
        if (e > b) {
            if (n >= max)
                return -1;
            fn(cls, b, (size_t)(e - b));
            n++;
        }
        p += len;
        if (*p == ',')
            p++;
    }
    return n;
}
