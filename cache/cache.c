/* Pass-through cache: every read goes to the backend. Kept as its own layer so
 * fs/ already talks to the interface the chunk cache will implement. */
#include "cache.h"

#include <errno.h>
#include <stdlib.h>

struct cache {
	struct backend *be; /* not owned */
};

int cache_open(struct backend *be, struct cache **out)
{
	struct cache *c = calloc(1, sizeof(*c));

	if (!c)
		return -ENOMEM;
	c->be = be;
	*out = c;
	return 0;
}

void cache_close(struct cache *c) { free(c); }

int cache_read(struct cache *c, const struct cache_object *obj, uint64_t off, size_t len,
	       void *buf, size_t *got)
{
	size_t want;
	int err;

	*got = 0;
	if (off >= obj->size || len == 0)
		return 0;
	want = obj->size - off < len ? (size_t)(obj->size - off) : len;
	err = c->be->ops->read(c->be, obj->key, obj->etag, off, want, buf, got);
	if (!err && *got != want)
		err = -ESTALE; /* the object is shorter than its listing said */
	return err;
}
