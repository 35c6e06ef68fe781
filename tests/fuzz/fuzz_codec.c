/*
 * fuzz_codec.c - fuzz target of socketio/codec.c.
 *
 * One input is run through every decoder: as one WebSocket message (text and binary), and as
 * an HTTP long-polling payload whose packets drive a Socket.IO decoder the way the engine
 * does (text MESSAGE packets as Socket.IO text, "b" packets as attachments). Every packet the
 * decoder returns is encoded again and decoded again, and must come back equal; the packets
 * are also appended to a payload that must decode to the same sequence. Any crash, leak,
 * sanitizer report or abort() is a finding.
 *
 * Build with clang: clang -fsanitize=fuzzer,address -I. tests/fuzz/fuzz_codec.c
 *                   socketio/codec.c common/xmalloc.c common/log.c -ljansson -lcrypto
 */
#include "tests/fuzz/fuzz.h"

#include <stdlib.h>
#include <string.h>

#include "socketio/codec.h"

struct run {
    struct sio_decoder dec;
    struct sio_limits lim;
    char *rebuilt; /* the payload rebuilt from the decoded Engine.IO packets */
    size_t rebuilt_len, rebuilt_cap;
    size_t n_packets;
};

/* Encodes p, decodes it again and checks that the result equals p. */
static void check_roundtrip(const struct sio_packet *p)
{
    size_t len;
    char *s = sio_encode(p->type, p->nsp, p->id, p->data, p->n_attachments, &len);
    if (len < 2 || s[0] != '4')
        abort();
    struct sio_decoder d = {0};
    struct sio_packet q;
    /* Re-encoding may grow the text (1e5 prints as 100000.0): decode with wide limits. */
    struct sio_limits wide = {p->n_attachments, (size_t)1 << 30};
    int rc = sio_decoder_feed(&d, &wide, (const uint8_t *)s + 1, len - 1, false, &q);
    for (size_t i = 0; i < p->n_attachments; i++) {
        if (rc != SIO_DECODE_NEED_MORE)
            abort();
        rc = sio_decoder_feed(&d, &wide, p->attachments[i].data, p->attachments[i].len, true, &q);
    }
    if (rc != SIO_DECODE_PACKET)
        abort();
    if (q.type != p->type || q.id != p->id || strcmp(q.nsp, p->nsp) != 0 ||
        q.n_attachments != p->n_attachments)
        abort();
    if ((q.data == NULL) != (p->data == NULL) || (q.data != NULL && !json_equal(q.data, p->data)))
        abort();
    for (size_t i = 0; i < q.n_attachments; i++)
        if (q.attachments[i].len != p->attachments[i].len ||
            memcmp(q.attachments[i].data, p->attachments[i].data, q.attachments[i].len) != 0)
            abort();
    sio_packet_clear(&q);
    free(s);
}

static int on_eio_packet(void *cls, const struct eio_packet *ep)
{
    struct run *r = cls;
    r->n_packets++;
    eio_payload_append(&r->rebuilt, &r->rebuilt_len, &r->rebuilt_cap, ep->type, ep->binary,
                       ep->data, ep->len);
    if (ep->type != EIO_MESSAGE)
        return 0;
    struct sio_packet p;
    int rc = sio_decoder_feed(&r->dec, &r->lim, ep->data, ep->len, ep->binary, &p);
    if (rc == SIO_DECODE_PACKET) {
        check_roundtrip(&p);
        sio_packet_clear(&p);
    } else if (rc != SIO_DECODE_NEED_MORE && rc != CODEC_ERR_MALFORMED &&
               rc != CODEC_ERR_TOO_LARGE) {
        abort();
    }
    return 0;
}

static int count_cb(void *cls, const struct eio_packet *ep)
{
    (void)ep;
    (*(size_t *)cls)++;
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct eio_packet ep;
    /* The input as one WebSocket message: text then binary. */
    if (eio_decode_ws(data, size, false, &ep) == 0 && ep.type == EIO_MESSAGE) {
        struct sio_decoder d = {0};
        struct sio_limits lim = {4, 4096};
        struct sio_packet p;
        if (sio_decoder_feed(&d, &lim, ep.data, ep.len, false, &p) == SIO_DECODE_PACKET) {
            check_roundtrip(&p);
            sio_packet_clear(&p);
        }
        sio_decoder_reset(&d);
    }
    if (eio_decode_ws(data, size, true, &ep) != 0 || ep.len != size)
        abort();

    /* The input as a polling payload driving a Socket.IO decoder. */
    struct run r;
    memset(&r, 0, sizeof(r));
    r.lim.max_attachments = 4;
    r.lim.max_bytes = 4096;
    int rc = eio_decode_payload(data, size, on_eio_packet, &r);
    if (rc != 0 && rc != CODEC_ERR_MALFORMED && rc != CODEC_ERR_TOO_LARGE)
        abort();
    sio_decoder_reset(&r.dec);
    if (r.n_packets > 0) {
        /* The packets decoded before any error, re-encoded, decode to as many packets. */
        size_t n = 0;
        if (eio_decode_payload((const uint8_t *)r.rebuilt, r.rebuilt_len, count_cb, &n) != 0 ||
            n != r.n_packets)
            abort();
    }
    free(r.rebuilt);
    return 0;
}
