/*
 * store_test_util.h - helpers shared by the store unit tests: a fresh database URL per test
 * and unique usernames, so that the contract tests also run against a shared database (the
 * MongoDB double) given in STORE_TEST_URL.
 */
#ifndef GW_STORE_TEST_UTIL_H
#define GW_STORE_TEST_UTIL_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/util.h"

/* A directory made once per process under TMPDIR, removed by store_test_cleanup(). */
static char store_test_dir[256];

static inline const char *store_test_tmpdir(void)
{
    if (store_test_dir[0] == '\0') {
        const char *t = getenv("TMPDIR");
        snprintf(store_test_dir, sizeof(store_test_dir), "%s/gwstoreXXXXXX",
                 t != NULL && *t != '\0' ? t : "/tmp");
        if (mkdtemp(store_test_dir) == NULL) {
            perror("mkdtemp");
            abort();
        }
    }
    return store_test_dir;
}

/* STORE_TEST_URL when set, else "sqlite:<tmpdir>/<n>.db", a new file for each call. */
static inline void store_test_url(char *out, size_t size)
{
    static int n;
    const char *env = getenv("STORE_TEST_URL");
    if (env != NULL && *env != '\0') {
        snprintf(out, size, "%s", env);
        return;
    }
    snprintf(out, size, "sqlite:%s/t%d.db", store_test_tmpdir(), n++);
}

/* A username no other test run has used: prefix plus a fresh ObjectId. */
static inline void store_test_name(const char *prefix, char *out, size_t size)
{
    char oid[OID_HEX_LEN + 1];
    util_oid_new(oid);
    snprintf(out, size, "%s-%s", prefix, oid);
}

static inline void store_test_cleanup(void)
{
    if (store_test_dir[0] != '\0') {
        char cmd[300];
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", store_test_dir);
        if (system(cmd) != 0)
            fprintf(stderr, "cannot remove %s\n", store_test_dir);
    }
}

#endif
