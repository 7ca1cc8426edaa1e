/* The cache layer: sits between fs/ and a backend and wraps the backend's
 * read. Today it is a pass-through that only clamps reads to the object's
 * size; the chunk cache on local disk replaces its inside, not its interface.
 *
 * Objects are named by identity (key, ETag, size) so a cache can never hand
 * out another version's bytes. Thread-safe. Knows nothing of FUSE.
 */
#ifndef MODELFS_CACHE_H
#define MODELFS_CACHE_H

#include <stddef.h>
#include <stdint.h>

#include "backend.h"

struct cache;

/* The identity of one object version. */
struct cache_object {
	const char *key;  /* full backend key */
	const char *etag; /* "" when the backend gave none */
	uint64_t size;
};

int cache_open(struct backend *be, struct cache **out);
void cache_close(struct cache *c);

/* Read up to @len bytes at @off of @obj into @buf; *@got is short only at the
 * end of the object. @return 0, or the backend's -errno (-ESTALE when the
 * object is no longer this version). */
int cache_read(struct cache *c, const struct cache_object *obj, uint64_t off, size_t len,
	       void *buf, size_t *got);

#endif
