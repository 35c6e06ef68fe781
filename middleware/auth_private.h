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

#endif
