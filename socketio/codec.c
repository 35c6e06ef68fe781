/*
 * codec.c - Engine.IO 4 and Socket.IO 5 packet codecs (see codec.h).
 *
 * The codecs do no I/O and keep no global state: the engine feeds them the messages it reads
 * and writes the bytes they produce, the way h2o drives wslay. Every input is untrusted, so
 * each reader checks its index against len before it looks at a byte, and every size that
 * comes from the peer (attachment count, ack id, namespace length, base64 length, total bytes)
 * is bounded before anything is allocated.
 *
 * The Socket.IO grammar follows the reference parser (socket.io-parser 4): a type digit, for
 * the binary types "<count>-", an optional namespace "/...," (terminated by ',' or the end of
 * the text), optional ack id digits, then optional JSON whose shape must suit the type. We
 * are a little stricter than the reference where it would let through a packet the server
 * cannot use: EVENT needs a non-empty array starting with a string, ACK an array, and an ack
 * id must fit a JavaScript safe integer (the peer is JavaScript).
 *
 * Base64 uses OpenSSL's EVP_EncodeBlock/EVP_DecodeBlock. EVP_DecodeBlock counts '=' padding as
 * zero bytes and tolerates surrounding blanks, so the alphabet and padding are checked here
 * first and the padding is subtracted from its result.
 */
#include "socketio/codec.h"

#include <ctype.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "common/xmalloc.h"

/* JavaScript's Number.MAX_SAFE_INTEGER: an ack id above it would not survive the peer. */
#define SIO_ACK_ID_MAX 9007199254740991LL

/* Default limits when the caller passes none. */
#define SIO_DEFAULT_MAX_ATTACHMENTS 10
#define SIO_DEFAULT_MAX_BYTES 1000000

/* ---- base64 ---------------------------------------------------------------------------- */

static bool b64_char(uint8_t c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '+' ||
           c == '/';
}

/* Decodes standard base64 (padding optional, as Node's Buffer accepts it) into a malloc'ed
 * buffer. Returns 0 or CODEC_ERR_MALFORMED; *out is NULL for an empty input. */
static int b64_decode(const uint8_t *in, size_t len, uint8_t **out, size_t *out_len)
{
    size_t pad = 0;
    while (pad < 2 && len > 0 && in[len - 1] == '=') {
        len--;
        pad++;
    }
    if (len % 4 == 1)
        return CODEC_ERR_MALFORMED;
    /* With explicit padding the whole must have been a multiple of 4. */
    if (pad > 0 && (len + pad) % 4 != 0)
        return CODEC_ERR_MALFORMED;
    for (size_t i = 0; i < len; i++)
        if (!b64_char(in[i]))
            return CODEC_ERR_MALFORMED;
    if (len == 0) {
        *out = NULL;
        *out_len = 0;
        return 0;
    }
    if (len > (size_t)INT_MAX - 4)
        return CODEC_ERR_TOO_LARGE;

    size_t rem = len % 4;
    size_t padded = len + (rem ? 4 - rem : 0);
    uint8_t *tmp = NULL;
    const uint8_t *src = in;
    if (padded != len) {
        /* Only the last quantum needs padding: copy the input to add it. */
        tmp = xmalloc(padded);
        memcpy(tmp, in, len);
        memset(tmp + len, '=', padded - len);
        src = tmp;
    }
    uint8_t *buf = xmalloc(padded / 4 * 3);
    int n = EVP_DecodeBlock(buf, src, (int)padded);
    free(tmp);
    if (n < 0) {
        free(buf);
        return CODEC_ERR_MALFORMED;
    }
    /* Each '=' of the last quantum (the peer's or ours, the same count) counted as a zero
     * byte in n. */
    size_t strip = rem ? 4 - rem : 0;
    *out = buf;
    *out_len = (size_t)n - strip;
    return 0;
}

/* Appends the base64 of data at dst (which has room for 4 * ceil(len / 3) bytes). Returns the
 * number of characters written. Large inputs go in chunks since OpenSSL takes an int. */
static size_t b64_encode(char *dst, const uint8_t *data, size_t len)
{
    const size_t chunk = (size_t)3 << 20;
    size_t written = 0;
    while (len > 0) {
        size_t n = len < chunk ? len : chunk;
        written += (size_t)EVP_EncodeBlock((unsigned char *)dst + written, data, (int)n);
        data += n;
        len -= n;
    }
    return written;
}

/* ---- Engine.IO ------------------------------------------------------------------------- */

static int eio_type_of(uint8_t c, enum eio_type *out)
{
    if (c < '0' || c > '6')
        return CODEC_ERR_MALFORMED;
    *out = (enum eio_type)(c - '0');
    return 0;
}

int eio_decode_ws(const uint8_t *msg, size_t len, bool is_binary, struct eio_packet *out)
{
    if (is_binary) {
        out->type = EIO_MESSAGE;
        out->binary = true;
        out->data = msg;
        out->len = len;
        return 0;
    }
    enum eio_type t;
    if (len == 0 || eio_type_of(msg[0], &t) != 0)
        return CODEC_ERR_MALFORMED;
    out->type = t;
    out->binary = false;
    out->data = msg + 1;
    out->len = len - 1;
    return 0;
}

int eio_decode_payload(const uint8_t *body, size_t len, eio_packet_cb cb, void *cls)
{
    size_t pos = 0;
    for (;;) {
        const uint8_t *sep = len > pos ? memchr(body + pos, 0x1e, len - pos) : NULL;
        size_t end = sep ? (size_t)(sep - body) : len;
        const uint8_t *p = body + pos;
        size_t plen = end - pos;
        struct eio_packet pkt;
        int rc;

        if (plen == 0)
            return CODEC_ERR_MALFORMED;
        if (p[0] == 'b') {
            uint8_t *bin;
            size_t bin_len;
            rc = b64_decode(p + 1, plen - 1, &bin, &bin_len);
            if (rc != 0)
                return rc;
            pkt.type = EIO_MESSAGE;
            pkt.binary = true;
            pkt.data = bin ? bin : (const uint8_t *)"";
            pkt.len = bin_len;
            rc = cb(cls, &pkt);
            free(bin);
        } else {
            if (eio_type_of(p[0], &pkt.type) != 0)
                return CODEC_ERR_MALFORMED;
            pkt.binary = false;
            pkt.data = p + 1;
            pkt.len = plen - 1;
            rc = cb(cls, &pkt);
        }
        if (rc != 0)
            return rc;
        if (sep == NULL)
            return 0;
        pos = end + 1;
    }
}

/* Makes room for need more bytes plus a NUL. */
static void buf_reserve(char **buf, size_t *len, size_t *cap, size_t need)
{
    if (*buf != NULL && *cap - *len > need)
        return;
    size_t want = *len + need + 1;
    size_t ncap = *cap ? *cap : 64;
    while (ncap < want)
        ncap *= 2;
    *buf = xrealloc(*buf, ncap);
    *cap = ncap;
}

void eio_payload_append(char **buf, size_t *len, size_t *cap, enum eio_type type, bool binary,
                        const uint8_t *data, size_t data_len)
{
    size_t body = binary ? (data_len + 2) / 3 * 4 : data_len;
    buf_reserve(buf, len, cap, 2 + body);
    char *w = *buf + *len;
    if (*len > 0)
        *w++ = 0x1e;
    if (binary) {
        *w++ = 'b';
        w += b64_encode(w, data, data_len);
    } else {
        *w++ = (char)('0' + (int)type);
        if (data_len > 0)
            memcpy(w, data, data_len);
        w += data_len;
    }
    *w = '\0';
    *len = (size_t)(w - *buf);
}

/* Appends s to *w. */
static void put_str(char **w, const char *s)
{
    size_t n = strlen(s);
    memcpy(*w, s, n);
    *w += n;
}

/* Appends v in decimal to *w. */
static void put_i64(char **w, int64_t v)
{
    char tmp[24];
    int n = 0;
    uint64_t u = v < 0 ? 0 - (uint64_t)v : (uint64_t)v;
    do {
        tmp[n++] = (char)('0' + u % 10);
        u /= 10;
    } while (u != 0);
    if (v < 0)
        *(*w)++ = '-';
    while (n > 0)
        *(*w)++ = tmp[--n];
}

char *eio_encode_open(const char *sid, bool offer_websocket_upgrade, int64_t ping_interval_ms,
                      int64_t ping_timeout_ms, int64_t max_payload, size_t *len)
{
    /* Written by hand: it is on every connect, and its one string is a session id, which is
     * [0-9A-Za-z_-] (anything needing an escape is a programming error). */
    size_t sid_len = strlen(sid);
    for (size_t i = 0; i < sid_len; i++)
        if (!isalnum((unsigned char)sid[i]) && sid[i] != '-' && sid[i] != '_')
            abort();
    char *s = xmalloc(sid_len + 160);
    char *w = s;
    put_str(&w, "0{\"sid\":\"");
    memcpy(w, sid, sid_len);
    w += sid_len;
    put_str(&w, offer_websocket_upgrade ? "\",\"upgrades\":[\"websocket\"],\"pingInterval\":"
                                        : "\",\"upgrades\":[],\"pingInterval\":");
    put_i64(&w, ping_interval_ms);
    put_str(&w, ",\"pingTimeout\":");
    put_i64(&w, ping_timeout_ms);
    put_str(&w, ",\"maxPayload\":");
    put_i64(&w, max_payload);
    *w++ = '}';
    *w = '\0';
    *len = (size_t)(w - s);
    return s;
}

/* ---- Socket.IO ------------------------------------------------------------------------- */

void sio_packet_clear(struct sio_packet *p)
{
    if (p->data != NULL)
        json_decref(p->data);
    for (size_t i = 0; i < p->n_attachments; i++)
        free(p->attachments[i].data);
    free(p->attachments);
    memset(p, 0, sizeof(*p));
    p->nsp[0] = '/';
    p->id = -1;
}

void sio_decoder_reset(struct sio_decoder *d)
{
    if (d->_awaiting > 0 || d->_pending.attachments != NULL || d->_pending.data != NULL)
        sio_packet_clear(&d->_pending);
    memset(d, 0, sizeof(*d));
}

bool sio_utf8_valid(const uint8_t *s, size_t n, bool allow_controls)
{
    size_t i = 0;
    while (i < n) {
        uint8_t c = s[i];
        if (c < 0x80) {
            if (!allow_controls && (c < 0x20 || c == 0x7f))
                return false;
            i++;
            continue;
        }
        size_t k;
        uint32_t cp, min;
        if (c >= 0xc2 && c <= 0xdf) {
            k = 1, cp = c & 0x1f, min = 0x80;
        } else if (c >= 0xe0 && c <= 0xef) {
            k = 2, cp = c & 0x0f, min = 0x800;
        } else if (c >= 0xf0 && c <= 0xf4) {
            k = 3, cp = c & 0x07, min = 0x10000;
        } else {
            return false;
        }
        if (n - i <= k)
            return false;
        for (size_t j = 1; j <= k; j++) {
            if ((s[i + j] & 0xc0) != 0x80)
                return false;
            cp = (cp << 6) | (s[i + j] & 0x3f);
        }
        /* Overlong forms, surrogates and values past U+10FFFF. */
        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
            return false;
        i += k + 1;
    }
    return true;
}

/* Checks every {"_placeholder":true,"num":N} of a binary packet: N must name an attachment.
 * Depth is bounded by jansson's parser (JSON_PARSER_MAX_DEPTH). */
static bool placeholders_ok(const json_t *v, size_t n_attachments)
{
    if (json_is_array(v)) {
        size_t i;
        const json_t *e;
        json_array_foreach(v, i, e)
        {
            if (!placeholders_ok(e, n_attachments))
                return false;
        }
        return true;
    }
    if (!json_is_object(v))
        return true;
    if (json_is_true(json_object_get(v, "_placeholder"))) {
        const json_t *num = json_object_get(v, "num");
        if (!json_is_integer(num))
            return false;
        json_int_t k = json_integer_value(num);
        return k >= 0 && (size_t)k < n_attachments;
    }
    const char *key;
    const json_t *e;
    json_object_foreach((json_t *)v, key, e)
    {
        if (!placeholders_ok(e, n_attachments))
            return false;
    }
    return true;
}

/* Does the JSON suit the packet type? (data may be NULL: absent) */
static bool shape_ok(enum sio_type t, const json_t *data)
{
    switch (t) {
    case SIO_CONNECT:
        return data == NULL || json_is_object(data);
    case SIO_DISCONNECT:
        return data == NULL;
    case SIO_EVENT:
    case SIO_BINARY_EVENT:
        return json_is_array(data) && json_array_size(data) > 0 &&
               json_is_string(json_array_get(data, 0));
    case SIO_ACK:
    case SIO_BINARY_ACK:
        return json_is_array(data);
    case SIO_CONNECT_ERROR:
        return json_is_object(data) || json_is_string(data);
    }
    return false;
}

/* Parses the text of a Socket.IO packet into p (zeroed by the caller). On error p may hold a
 * partial packet for the caller to clear. */
static int sio_parse_text(const uint8_t *s, size_t len, const struct sio_limits *lim,
                          struct sio_packet *p)
{
    size_t i = 0;

    if (len == 0 || s[0] < '0' || s[0] > '6')
        return CODEC_ERR_MALFORMED;
    p->type = (enum sio_type)(s[0] - '0');
    i = 1;

    if (p->type == SIO_BINARY_EVENT || p->type == SIO_BINARY_ACK) {
        size_t n = 0, digits = 0;
        while (i < len && s[i] >= '0' && s[i] <= '9') {
            n = n * 10 + (size_t)(s[i] - '0');
            /* Checked per digit, so n never overflows. */
            if (n > lim->max_attachments)
                return CODEC_ERR_TOO_LARGE;
            i++;
            digits++;
        }
        if (digits == 0 || i >= len || s[i] != '-')
            return CODEC_ERR_MALFORMED;
        i++;
        p->n_attachments = n;
    }

    if (i < len && s[i] == '/') {
        size_t start = i;
        while (i < len && s[i] != ',')
            i++;
        size_t nlen = i - start;
        if (nlen >= SIO_NSP_MAX)
            return CODEC_ERR_TOO_LARGE;
        if (!sio_utf8_valid(s + start, nlen, false))
            return CODEC_ERR_MALFORMED;
        memcpy(p->nsp, s + start, nlen);
        p->nsp[nlen] = '\0';
        if (i < len)
            i++; /* the ',' */
    }

    if (i < len && s[i] >= '0' && s[i] <= '9') {
        int64_t id = 0;
        while (i < len && s[i] >= '0' && s[i] <= '9') {
            id = id * 10 + (s[i] - '0');
            if (id > SIO_ACK_ID_MAX)
                return CODEC_ERR_MALFORMED;
            i++;
        }
        p->id = id;
    }

    if (i < len) {
        json_error_t err;
        p->data = json_loadb((const char *)s + i, len - i, JSON_DECODE_ANY | JSON_ALLOW_NUL, &err);
        if (p->data == NULL)
            return CODEC_ERR_MALFORMED;
    }
    if (!shape_ok(p->type, p->data))
        return CODEC_ERR_MALFORMED;
    if ((p->type == SIO_BINARY_EVENT || p->type == SIO_BINARY_ACK) &&
        !placeholders_ok(p->data, p->n_attachments))
        return CODEC_ERR_MALFORMED;
    return 0;
}

static void packet_init(struct sio_packet *p)
{
    memset(p, 0, sizeof(*p));
    p->nsp[0] = '/';
    p->id = -1;
}

int sio_decoder_feed(struct sio_decoder *d, const struct sio_limits *lim, const uint8_t *data,
                     size_t len, bool binary, struct sio_packet *out)
{
    static const struct sio_limits defaults = {SIO_DEFAULT_MAX_ATTACHMENTS, SIO_DEFAULT_MAX_BYTES};
    if (lim == NULL)
        lim = &defaults;

    if (binary) {
        if (d->_awaiting == 0) {
            sio_decoder_reset(d);
            return CODEC_ERR_MALFORMED;
        }
        if (len > lim->max_bytes || d->_bytes > lim->max_bytes - len) {
            sio_decoder_reset(d);
            return CODEC_ERR_TOO_LARGE;
        }
        struct sio_packet *p = &d->_pending;
        size_t idx = p->n_attachments - d->_awaiting;
        p->attachments[idx].data = xmalloc(len ? len : 1);
        if (len > 0)
            memcpy(p->attachments[idx].data, data, len);
        p->attachments[idx].len = len;
        d->_bytes += len;
        if (--d->_awaiting > 0)
            return SIO_DECODE_NEED_MORE;
        *out = *p;
        memset(d, 0, sizeof(*d));
        return SIO_DECODE_PACKET;
    }

    if (d->_awaiting > 0) {
        sio_decoder_reset(d);
        return CODEC_ERR_MALFORMED;
    }
    if (len > lim->max_bytes)
        return CODEC_ERR_TOO_LARGE;

    struct sio_packet p;
    packet_init(&p);
    int rc = sio_parse_text(data, len, lim, &p);
    if (rc != 0) {
        /* Attachments are not allocated yet: only the JSON may need freeing. */
        p.n_attachments = 0;
        sio_packet_clear(&p);
        return rc;
    }
    if (p.n_attachments == 0) {
        *out = p;
        return SIO_DECODE_PACKET;
    }
    /* Bounded above by lim->max_attachments. */
    p.attachments = xcalloc(p.n_attachments, sizeof(*p.attachments));
    d->_pending = p;
    d->_awaiting = p.n_attachments;
    d->_bytes = len;
    return SIO_DECODE_NEED_MORE;
}

char *sio_encode(enum sio_type type, const char *nsp, int64_t id, const json_t *data,
                 size_t n_attachments, size_t *len)
{
    char head[64];
    int hlen;
    bool bin = type == SIO_BINARY_EVENT || type == SIO_BINARY_ACK;
    bool has_nsp = nsp != NULL && nsp[0] != '\0' && strcmp(nsp, "/") != 0;
    size_t nsp_len = has_nsp ? strlen(nsp) : 0;
    size_t jlen = 0;
    const size_t flags = JSON_COMPACT | JSON_ENCODE_ANY | JSON_PRESERVE_ORDER;

    if (bin)
        hlen = snprintf(head, sizeof(head), "4%d%zu-", (int)type, n_attachments);
    else
        hlen = snprintf(head, sizeof(head), "4%d", (int)type);
    if (data != NULL)
        jlen = json_dumpb(data, NULL, 0, flags);

    char idbuf[24];
    int idlen = id >= 0 ? snprintf(idbuf, sizeof(idbuf), "%lld", (long long)id) : 0;

    size_t total = (size_t)hlen + (has_nsp ? nsp_len + 1 : 0) + (size_t)idlen + jlen;
    char *s = xmalloc(total + 1);
    char *w = s;
    memcpy(w, head, (size_t)hlen);
    w += hlen;
    if (has_nsp) {
        memcpy(w, nsp, nsp_len);
        w += nsp_len;
        *w++ = ',';
    }
    memcpy(w, idbuf, (size_t)idlen);
    w += idlen;
    if (jlen > 0)
        w += json_dumpb(data, w, jlen, flags);
    *w = '\0';
    *len = (size_t)(w - s);
    return s;
}
