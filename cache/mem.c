/* The pool of recently fetched chunks (mem.h). A handful of buffers, so a
 * linear scan under one mutex is all the lookup there is; copies happen
 * outside the lock, under a reference. */
#include "mem.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

/* 2 MiB: a buffer can be backed by transparent huge pages, so filling a
 * fresh one takes two page faults, not 1024 (each costly on a VM) */
#define MEM_ALIGN (2u << 20)

struct mem_buf {
	char *data;
	uint8_t objid[OBJID_LEN];
	uint32_t chunk, len;
	int valid;     /* published: readers may copy from it */
	int filling;   /* handed out by mem_take */
	unsigned refs; /* readers copying from it now */
	uint64_t used; /* LRU clock */
};

struct mem {
	pthread_mutex_t lock;
	pthread_cond_t published;
	size_t size;
	unsigned n;
	uint64_t clock;
	struct mem_buf *bufs;
};

int mem_open(unsigned nbufs, size_t size, struct mem **out)
{
	struct mem *m = calloc(1, sizeof(*m));

	if (!m || !(m->bufs = calloc(nbufs, sizeof(*m->bufs)))) {
		free(m);
		return -ENOMEM;
	}
	pthread_mutex_init(&m->lock, NULL);
	pthread_cond_init(&m->published, NULL);
	m->size = size;
	m->n = nbufs;
	*out = m;
	return 0;
}

void mem_close(struct mem *m)
{
	if (!m)
		return;
	for (unsigned i = 0; i < m->n; i++)
		free(m->bufs[i].data);
	free(m->bufs);
	pthread_cond_destroy(&m->published);
	pthread_mutex_destroy(&m->lock);
	free(m);
}

struct mem_buf *mem_take(struct mem *m)
{
	struct mem_buf *best = NULL;

	pthread_mutex_lock(&m->lock);
	for (unsigned i = 0; i < m->n; i++) {
		struct mem_buf *b = &m->bufs[i];
		if (b->filling || b->refs)
			continue;
		if (!best || (best->valid && !b->valid) ||
		    (best->valid == b->valid && b->used < best->used))
			best = b;
	}
	if (best) {
		best->valid = 0;
		best->filling = 1;
	}
	pthread_mutex_unlock(&m->lock);
	if (best && !best->data) {
		void *p = NULL;
		if (posix_memalign(&p, MEM_ALIGN, m->size) != 0) {
			mem_drop(m, best);
			return NULL;
		}
		madvise(p, m->size, MADV_HUGEPAGE); /* a hint: fine if refused */
		best->data = p;
	}
	return best;
}

char *mem_data(struct mem_buf *b) { return b->data; }

void mem_publish(struct mem *m, struct mem_buf *b, const uint8_t *objid, uint32_t chunk,
		 uint32_t len, int keep)
{
	pthread_mutex_lock(&m->lock);
	/* an older copy of the same chunk (fetched twice) goes first */
	for (unsigned i = 0; i < m->n; i++) {
		struct mem_buf *o = &m->bufs[i];
		if (o != b && o->valid && o->chunk == chunk &&
		    memcmp(o->objid, objid, OBJID_LEN) == 0)
			o->valid = 0;
	}
	memcpy(b->objid, objid, OBJID_LEN);
	b->chunk = chunk;
	b->len = len;
	b->valid = 1;
	b->filling = 0;
	b->refs += keep ? 1 : 0;
	b->used = ++m->clock;
	pthread_cond_broadcast(&m->published);
	pthread_mutex_unlock(&m->lock);
}

void mem_drop(struct mem *m, struct mem_buf *b)
{
	pthread_mutex_lock(&m->lock);
	b->filling = 0;
	b->valid = 0;
	pthread_mutex_unlock(&m->lock);
}

static struct mem_buf *find(struct mem *m, const uint8_t *objid, uint32_t chunk, uint32_t a,
			     uint32_t n)
{
	for (unsigned i = 0; i < m->n; i++) {
		struct mem_buf *o = &m->bufs[i];
		if (o->valid && o->chunk == chunk && memcmp(o->objid, objid, OBJID_LEN) == 0 &&
		    a + n <= o->len)
			return o;
	}
	return NULL;
}

/* mem_get, waiting up to @ms for a publish when it is not there. */
static const char *get(struct mem *m, const uint8_t *objid, uint32_t chunk, uint32_t a, uint32_t n,
		       struct mem_buf **ref, unsigned ms)
{
	struct mem_buf *b;

	pthread_mutex_lock(&m->lock);
	b = find(m, objid, chunk, a, n);
	if (!b && ms) {
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_nsec += (long)ms * 1000000L;
		ts.tv_sec += ts.tv_nsec / 1000000000L;
		ts.tv_nsec %= 1000000000L;
		while (!(b = find(m, objid, chunk, a, n)) &&
		       pthread_cond_timedwait(&m->published, &m->lock, &ts) == 0)
			;
	}
	if (b) {
		b->refs++;
		b->used = ++m->clock;
	}
	pthread_mutex_unlock(&m->lock);
	*ref = b;
	return b ? b->data + a : NULL;
}

const char *mem_get(struct mem *m, const uint8_t *objid, uint32_t chunk, uint32_t a, uint32_t n,
		    struct mem_buf **ref)
{
	return get(m, objid, chunk, a, n, ref, 0);
}

void mem_put(struct mem *m, struct mem_buf *ref)
{
	pthread_mutex_lock(&m->lock);
	ref->refs--;
	pthread_mutex_unlock(&m->lock);
}

int mem_wait_read(struct mem *m, const uint8_t *objid, uint32_t chunk, uint32_t a, uint32_t n,
		  char *dst, unsigned ms)
{
	struct mem_buf *ref;
	const char *p = get(m, objid, chunk, a, n, &ref, ms);

	if (!p)
		return -ENOENT;
	memcpy(dst, p, n);
	mem_put(m, ref);
	return 0;
}

int mem_read(struct mem *m, const uint8_t *objid, uint32_t chunk, uint32_t a, uint32_t n,
	     char *dst)
{
	return mem_wait_read(m, objid, chunk, a, n, dst, 0);
}
