/* Chunks just fetched, kept in memory for the reader that is about to ask
 * for them (see docs/design.md, "Cold reads").
 *
 * A fixed pool of chunk-sized buffers. A streaming fetch fills one, writes
 * it to the data file and publishes it; reads of that chunk are then copied
 * from memory instead of being read back from the file. The least recently
 * used buffer that nobody is reading is reused for the next chunk. Entries
 * never go stale: a chunk is named by its object's identity (which includes
 * the ETag), so its bytes never change.
 *
 * Thread safety: every function may be called from any thread.
 */
#ifndef MODELFS_MEM_H
#define MODELFS_MEM_H

#include <stddef.h>
#include <stdint.h>

#include "index.h"

struct mem;
struct mem_buf;

/* A pool of @nbufs buffers of @size bytes (allocated on first use, aligned
 * for O_DIRECT). @return 0 or -ENOMEM. */
int mem_open(unsigned nbufs, size_t size, struct mem **out);
void mem_close(struct mem *m);

/* A buffer to fill, no longer visible to readers, or NULL when every buffer
 * is being filled or read right now (the caller goes without). */
struct mem_buf *mem_take(struct mem *m);
char *mem_data(struct mem_buf *b);

/* Make a filled buffer readable as chunk @chunk (@len bytes) of @objid and
 * give it back; with @keep, keep a reference (mem_put) so that it is not
 * reused before the caller is done with it. */
void mem_publish(struct mem *m, struct mem_buf *b, const uint8_t *objid, uint32_t chunk,
		 uint32_t len, int keep);
/* Give back a buffer that will not be published. */
void mem_drop(struct mem *m, struct mem_buf *b);

/* Copy [a, a + n) of the chunk into @dst if it is in memory.
 * @return 0, or -ENOENT. */
int mem_read(struct mem *m, const uint8_t *objid, uint32_t chunk, uint32_t a, uint32_t n,
	     char *dst);

/* mem_read, waiting up to @ms milliseconds for the chunk to be published.
 * @return 0, or -ENOENT. */
int mem_wait_read(struct mem *m, const uint8_t *objid, uint32_t chunk, uint32_t a, uint32_t n,
		  char *dst, unsigned ms);

/* [a, a + n) of the chunk in place, or NULL when it is not in memory; the
 * bytes stay valid until mem_put(*@ref). */
const char *mem_get(struct mem *m, const uint8_t *objid, uint32_t chunk, uint32_t a, uint32_t n,
		    struct mem_buf **ref);
void mem_put(struct mem *m, struct mem_buf *ref);

/* Give back to the system the buffers nobody used for @idle_s seconds: an
 * idle mount holds no pool (a node runs hundreds of them). @return bytes
 * freed. */
size_t mem_trim(struct mem *m, unsigned idle_s);

#endif
