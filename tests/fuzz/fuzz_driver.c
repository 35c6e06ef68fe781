/*
 * fuzz_driver.c - a main() for libFuzzer-style targets when built without libFuzzer (gcc).
 *
 * Usage: fuzz_codec CORPUS_DIR [--runs=N] [--seed=S] [--max-seconds=T]
 * Replays every file of CORPUS_DIR, then runs N mutated inputs derived from the corpus with a
 * fixed-seed generator (so a failure replays), stopping early after T seconds so a meson test
 * stays bounded. Mutations: byte flips, random bytes, insertions and deletions, block copies,
 * and tokens of the Engine.IO/Socket.IO grammar. On a crash the sanitizer report names the
 * run; a finding is reproduced by rerunning with the same seed.
 */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tests/fuzz/fuzz.h"

#define FUZZ_MAX_INPUT 4096
#define MAX_SEEDS 512

struct seed {
    uint8_t *data;
    size_t len;
};

static uint64_t rng_state;

static uint64_t rnd(void)
{
    /* xorshift64*: deterministic for a given seed. */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 2685821657736338717ULL;
}

static size_t rnd_below(size_t n)
{
    return n ? (size_t)(rnd() % n) : 0;
}

static const char *const tokens[] = {
    "\x1e",
    "b",
    "4",
    "40",
    "42",
    "43",
    "451-",
    "461-",
    "52-",
    "/",
    "/custom,",
    ",",
    "-",
    "[",
    "]",
    "{",
    "}",
    "\"",
    "\"a\"",
    "{\"_placeholder\":true,\"num\":0}",
    "\"num\":",
    "\"_placeholder\":true",
    "9007199254740992",
    "99999999999999999999",
    "1e400",
    "AQID",
    "==",
    "=",
    "\\u0000",
    "\\ud800",
    "\xc3\xa9",
    "\xff",
    "null",
    "true",
    "[[[[[[[[",
    "]]]]]]]]",
};

static size_t mutate(uint8_t *buf, size_t len)
{
    int n = 1 + (int)rnd_below(4);
    for (int k = 0; k < n; k++) {
        switch (rnd_below(7)) {
        case 0: /* flip a bit */
            if (len > 0)
                buf[rnd_below(len)] ^= (uint8_t)(1u << rnd_below(8));
            break;
        case 1: /* random byte */
            if (len > 0)
                buf[rnd_below(len)] = (uint8_t)rnd();
            break;
        case 2: /* insert a byte */
            if (len < FUZZ_MAX_INPUT) {
                size_t at = rnd_below(len + 1);
                memmove(buf + at + 1, buf + at, len - at);
                buf[at] = (uint8_t)rnd();
                len++;
            }
            break;
        case 3: /* delete a run */
            if (len > 0) {
                size_t at = rnd_below(len);
                size_t n_del = 1 + rnd_below(len - at < 8 ? len - at : 8);
                memmove(buf + at, buf + at + n_del, len - at - n_del);
                len -= n_del;
            }
            break;
        case 4: /* copy a block elsewhere */
            if (len > 0) {
                size_t from = rnd_below(len);
                size_t n_cp = 1 + rnd_below(len - from);
                size_t at = rnd_below(len + 1);
                if (len + n_cp <= FUZZ_MAX_INPUT) {
                    uint8_t tmp[FUZZ_MAX_INPUT];
                    memcpy(tmp, buf + from, n_cp);
                    memmove(buf + at + n_cp, buf + at, len - at);
                    memcpy(buf + at, tmp, n_cp);
                    len += n_cp;
                }
            }
            break;
        case 5: /* truncate */
            len = rnd_below(len + 1);
            break;
        default: { /* insert a token */
            const char *t = tokens[rnd_below(sizeof(tokens) / sizeof(tokens[0]))];
            size_t tl = strlen(t);
            if (len + tl <= FUZZ_MAX_INPUT) {
                size_t at = rnd_below(len + 1);
                memmove(buf + at + tl, buf + at, len - at);
                memcpy(buf + at, t, tl);
                len += tl;
            }
            break;
        }
        }
    }
    return len;
}

static int load_corpus(const char *dir, struct seed *seeds, size_t *n_seeds)
{
    DIR *d = opendir(dir);
    if (d == NULL) {
        perror(dir);
        return -1;
    }
    struct dirent *e;
    while ((e = readdir(d)) != NULL && *n_seeds < MAX_SEEDS) {
        if (e->d_name[0] == '.')
            continue;
        char path[4096];
        snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
        FILE *f = fopen(path, "rb");
        if (f == NULL)
            continue;
        uint8_t *buf = malloc(FUZZ_MAX_INPUT);
        size_t len = buf ? fread(buf, 1, FUZZ_MAX_INPUT, f) : 0;
        fclose(f);
        if (buf == NULL)
            return -1;
        seeds[*n_seeds].data = buf;
        seeds[*n_seeds].len = len;
        (*n_seeds)++;
    }
    closedir(d);
    return 0;
}

static int cmp_seed(const void *a, const void *b)
{
    const struct seed *x = a, *y = b;
    size_t n = x->len < y->len ? x->len : y->len;
    int c = memcmp(x->data, y->data, n);
    return c ? c : (x->len > y->len) - (x->len < y->len);
}

int main(int argc, char **argv)
{
    const char *dir = NULL;
    unsigned long long runs = 200000, seed = 1;
    double max_seconds = 15;
    for (int i = 1; i < argc; i++) {
        if (strncmp(argv[i], "--runs=", 7) == 0)
            runs = strtoull(argv[i] + 7, NULL, 10);
        else if (strncmp(argv[i], "--seed=", 7) == 0)
            seed = strtoull(argv[i] + 7, NULL, 10);
        else if (strncmp(argv[i], "--max-seconds=", 14) == 0)
            max_seconds = strtod(argv[i] + 14, NULL);
        else
            dir = argv[i];
    }
    if (dir == NULL) {
        fprintf(stderr, "usage: %s CORPUS_DIR [--runs=N] [--seed=S] [--max-seconds=T]\n", argv[0]);
        return 2;
    }
    static struct seed seeds[MAX_SEEDS];
    size_t n_seeds = 0;
    if (load_corpus(dir, seeds, &n_seeds) != 0 || n_seeds == 0) {
        fprintf(stderr, "no corpus in %s\n", dir);
        return 2;
    }
    /* readdir order differs between file systems: sort so a seed replays everywhere. */
    qsort(seeds, n_seeds, sizeof(seeds[0]), cmp_seed);
    for (size_t i = 0; i < n_seeds; i++)
        LLVMFuzzerTestOneInput(seeds[i].data, seeds[i].len);

    rng_state = seed * 0x9E3779B97F4A7C15ULL + 1;
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    static uint8_t buf[FUZZ_MAX_INPUT];
    unsigned long long done = 0;
    for (; done < runs; done++) {
        if ((done & 1023) == 0) {
            clock_gettime(CLOCK_MONOTONIC, &t);
            if ((double)(t.tv_sec - t0.tv_sec) + (double)(t.tv_nsec - t0.tv_nsec) / 1e9 >
                max_seconds)
                break;
        }
        const struct seed *s = &seeds[rnd_below(n_seeds)];
        memcpy(buf, s->data, s->len);
        size_t len = mutate(buf, s->len);
        /* Exact-size copy so ASan sees any read past the end. */
        uint8_t *in = malloc(len ? len : 1);
        if (in == NULL)
            return 1;
        memcpy(in, buf, len);
        LLVMFuzzerTestOneInput(in, len);
        free(in);
    }
    clock_gettime(CLOCK_MONOTONIC, &t);
    printf("replayed %zu seeds, ran %llu mutations (seed %llu) in %.2f s\n", n_seeds, done, seed,
           (double)(t.tv_sec - t0.tv_sec) + (double)(t.tv_nsec - t0.tv_nsec) / 1e9);
    for (size_t i = 0; i < n_seeds; i++)
        free(seeds[i].data);
    return 0;
}
