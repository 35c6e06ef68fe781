/*
 * codec.h - Engine.IO 4 and Socket.IO 5 packet codecs. No I/O: they are fed bytes and give
 * packets, or are given packets and produce bytes (wslay's shape). Every input is untrusted:
 * decoders validate everything and never read past len; sizes are bounded before allocating.
 *
 * Engine.IO 4 (https://socket.io/docs/v4/engine-io-protocol/): over WebSocket one message is
 * one packet: text "<type digit><data>", or a binary message which is a binary MESSAGE packet.
 * Over HTTP long-polling a payload is packets separated by '\x1e'; a binary packet there is
 * "b<base64>".
 *
 * Socket.IO 5 (https://socket.io/docs/v4/socket-io-protocol/): carried in Engine.IO MESSAGE
 * packets as "<type>[<attachments>-][<nsp>,][<ack id>][<JSON>]". BINARY_EVENT/BINARY_ACK are
 * followed by <attachments> binary Engine.IO messages; the JSON keeps the placeholders
 * {"_placeholder":true,"num":N}, and the attachments travel beside it in the packet struct.
 *
 * Memory: decoded packets own their data (sio_packet_clear). JSON is jansson.
 * Threads: contexts are not shared; functions are reentrant.
 */
#ifndef GW_SIO_CODEC_H
#define GW_SIO_CODEC_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define CODEC_ERR_MALFORMED (-1) /* not a valid packet */
#define CODEC_ERR_TOO_LARGE (-2) /* a bound was exceeded */

/* ---- Engine.IO ------------------------------------------------------------------------- */

enum eio_type {
    EIO_OPEN = 0,
    EIO_CLOSE = 1,
    EIO_PING = 2,
    EIO_PONG = 3,
    EIO_MESSAGE = 4,
    EIO_UPGRADE = 5,
    EIO_NOOP = 6,
};

/* A decoded Engine.IO packet. data points into the input (or into the decoder's scratch
 * buffer for base64 in payloads) and is valid only during the call/callback. */
struct eio_packet {
    enum eio_type type;
    bool binary;
    const uint8_t *data;
    size_t len;
};

/* Decodes one WebSocket message. A binary message is EIO_MESSAGE with binary=true.
 * Returns 0 or CODEC_ERR_MALFORMED (empty text, unknown type digit). */
int eio_decode_ws(const uint8_t *msg, size_t len, bool is_binary, struct eio_packet *out);

typedef int (*eio_packet_cb)(void *cls, const struct eio_packet *p);
/* Decodes an HTTP long-polling payload (a POST body), calling cb for each packet in order.
 * Stops at the first callback returning non-zero and returns that value. Returns 0,
 * CODEC_ERR_MALFORMED (bad type, bad base64, empty packet) or the callback's value. */
int eio_decode_payload(const uint8_t *body, size_t len, eio_packet_cb cb, void *cls);

/* Appends one packet to a polling payload being built in *buf (malloc'ed, grown as needed;
 * *len and *cap track it). Adds the '\x1e' separator when *len > 0. Binary → "b<base64>". */
void eio_payload_append(char **buf, size_t *len, size_t *cap, enum eio_type type, bool binary,
                        const uint8_t *data, size_t data_len);

/* True when s[0..n) is valid UTF-8 (RFC 3629: no overlong forms, no surrogates, at most
 * U+10FFFF), as RFC 6455 requires of text messages; without allow_controls, C0 controls and
 * DEL are refused too (a Socket.IO namespace). */
bool sio_utf8_valid(const uint8_t *s, size_t n, bool allow_controls);

/* The open packet's JSON: {"sid","upgrades","pingInterval","pingTimeout","maxPayload"}.
 * Returns a malloc'ed "0{...}" string and its length. */
char *eio_encode_open(const char *sid, bool offer_websocket_upgrade, int64_t ping_interval_ms,
                      int64_t ping_timeout_ms, int64_t max_payload, size_t *len);

/* ---- Socket.IO ------------------------------------------------------------------------- */

enum sio_type {
    SIO_CONNECT = 0,
    SIO_DISCONNECT = 1,
    SIO_EVENT = 2,
    SIO_ACK = 3,
    SIO_CONNECT_ERROR = 4,
    SIO_BINARY_EVENT = 5,
    SIO_BINARY_ACK = 6,
};

struct sio_attachment {
    uint8_t *data;
    size_t len;
};

#define SIO_NSP_MAX 256

struct sio_packet {
    enum sio_type type;
    char nsp[SIO_NSP_MAX]; /* "/" when absent */
    int64_t id;            /* ack id, -1 when absent */
    json_t *data;          /* NULL when absent; EVENT/ACK: an array; CONNECT: object or NULL */
    size_t n_attachments;
    struct sio_attachment *attachments; /* owned */
};

/* Frees data and attachments; the struct may be reused. */
void sio_packet_clear(struct sio_packet *p);

/* Limits applied while decoding. */
struct sio_limits {
    size_t max_attachments; /* e.g. 10 */
    size_t max_bytes;       /* total of text and attachments, MAX_PAYLOAD_BYTES */
};

/* Decoder state of one connection. It holds memory only while a binary packet awaits its
 * attachments, so an idle connection may keep a zeroed struct (no allocation). */
struct sio_decoder {
    struct sio_packet _pending; /* valid while _awaiting > 0 */
    size_t _awaiting;
    size_t _bytes;
};

#define SIO_DECODE_PACKET 1 /* *out holds a complete packet (caller clears it) */
#define SIO_DECODE_NEED_MORE 0

/* Feeds the data of one Engine.IO MESSAGE packet. Returns SIO_DECODE_PACKET with *out filled,
 * SIO_DECODE_NEED_MORE (a binary packet awaits attachments, or an attachment was consumed),
 * CODEC_ERR_MALFORMED (bad type, bad namespace, bad id, invalid JSON, wrong JSON shape for
 * the type, a binary message when none is expected, a text packet while attachments are
 * awaited) or CODEC_ERR_TOO_LARGE. On error the decoder is reset. */
int sio_decoder_feed(struct sio_decoder *d, const struct sio_limits *lim, const uint8_t *data,
                     size_t len, bool binary, struct sio_packet *out);
/* Releases a pending packet, if any, and zeroes the decoder. */
void sio_decoder_reset(struct sio_decoder *d);

/* Encodes a packet as the text of an Engine.IO MESSAGE, *including* the leading '4' of the
 * Engine.IO message type (so the result is the whole WebSocket text message). For BINARY_*
 * types the attachments are sent by the caller as separate binary messages after it.
 * data may be NULL. Returns a malloc'ed string and its length. */
char *sio_encode(enum sio_type type, const char *nsp, int64_t id, const json_t *data,
                 size_t n_attachments, size_t *len);

#endif
