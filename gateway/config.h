/*
 * config.h (gateway) - loading struct gw_config (common/config.h) from the environment and the
 * command line, driven by one table (Redis static_configs[]): each entry gives the variable,
 * its --flag, its type, bounds, default and help. Flags win over the environment.
 *
 * Threads: main thread only, at start.
 */
#ifndef GW_GATEWAY_CONFIG_H
#define GW_GATEWAY_CONFIG_H

#include <stddef.h>
#include <stdio.h>

#include "common/config.h"

#define GW_CONFIG_OK 0
#define GW_CONFIG_ERR (-1)  /* a bad value or unknown flag: err holds a message naming it */
#define GW_CONFIG_HELP (-2) /* --help was given: usage printed by the caller */

/* Environment lookup (getenv in production, a table in tests). */
typedef const char *(*gw_env_fn)(const char *name, void *cls);

/* Fills cfg with defaults, then the environment, then argv[1..argc-1] ("--flag value",
 * "--flag=value", bare "--dev"/"--conformance"/"--single-session", "--help"). Checks bounds
 * and requires JWT_SECRET unless dev or conformance. Strings in cfg are malloc'ed; release with
 * gw_config_free. On error writes a one-line message naming the variable into err. */
int gw_config_load(struct gw_config *cfg, int argc, char **argv, gw_env_fn env, void *env_cls,
                   char *err, size_t errlen);
void gw_config_free(struct gw_config *cfg);
/* Prints the usage: every variable, its flag, default, range and help. */
void gw_config_usage(FILE *out, const char *prog);

#endif
