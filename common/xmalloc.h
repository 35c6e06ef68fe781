/*
 * xmalloc.h - allocation that never returns NULL: on exhaustion it logs and aborts (Redis
 * zmalloc, h2o_mem_alloc). Callers bound untrusted sizes before they allocate.
 * Threads: any.
 */
#ifndef GW_XMALLOC_H
#define GW_XMALLOC_H

#include <stddef.h>

void *xmalloc(size_t size);
void *xcalloc(size_t nmemb, size_t size);
void *xrealloc(void *ptr, size_t size);
/* Returns a copy of s, or NULL when s is NULL. */
char *xstrdup(const char *s);
char *xstrndup(const char *s, size_t n);

#endif
