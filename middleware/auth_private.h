/*
 * auth_private.h - what auth.c (tokens) shares with auth_person.c (store lookups). Not part
 * of the contract: only middleware/ includes it.
 *
 * The split keeps the token code free of store symbols, so a program that only verifies or
 * mints tokens (the `token` subcommand, the JWT unit tests) links without the store.
 */
#ifndef GW_AUTH_PRIVATE_H
#define GW_AUTH_PRIVATE_H

#include "middleware/auth.h"

/* The store given to auth_new (may be NULL in token-only programs). */
struct store *auth__store(const struct auth_ctx *a);

/* auth_verify_jwt answered from the verified-token cache only: 0 (*out filled),
 * AUTH_ERR_INVALID_TOKEN (cached, now expired or not yet valid) or AUTH_ERR_WOULD_BLOCK (not
 * cached: the full verification is for a worker thread). */
int auth__verify_jwt_cached(const struct auth_ctx *a, const char *token, int64_t now_s,
                            struct auth_claims *out);

#endif
