/* The pool of recently fetched chunks (mem.h). Lookups go through a small
 * hash of (object, chunk) under one mutex; taking a buffer scans the pool
 * for the least recently used one (once per chunk fetched, not per read).
 * Copies happen outside the lock, under a reference. */
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
	int next;      /* hash chain (index into bufs), -1: end */
	uint8_t objid[OBJID_LEN];
	uint32_t chunk, len;
	int valid;     /* published: readers may copy from it */
	int filling;   /* handed out by mem_take */
	unsigned refs; /* readers copying from it now */
	uint64_t used; /* LRU clock */
	time_t last;   /* CLOCK_MONOTONIC seconds of the last use, for mem_trim */
};

struct mem {
	pthread_mutex_t lock;
	pthread_cond_t published;
	size_t size;
	unsigned n;
	uint64_t clock;
	struct mem_buf *bufs;
	unsigned mask; /* buckets - 1 */
	int *heads;    /* hash buckets of valid buffers, -1: empty */
};

static time_t mono_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec;
}

static unsigned bucket(const struct mem *m, const uint8_t *objid, uint32_t chunk)
{
	uint32_t h;

	memcpy(&h, objid, sizeof(h)); /* a SHA-256 prefix: already uniform */
	return (h ^ (chunk * 2654435761u)) & m->mask;
}

/* Called with m->lock held: make @b valid and findable, or neither. */
static void link_buf(struct mem *m, struct mem_buf *b)
{
	unsigned k = bucket(m, b->objid, b->chunk);

	b->next = m->heads[k];
	m->heads[k] = (int)(b - m->bufs);
	b->valid = 1;
}

static void unlink_buf(struct mem *m, struct mem_buf *b)
{
	int *p;

	if (!b->valid)
		return;
	p = &m->heads[bucket(m, b->objid, b->chunk)];
	while (*p >= 0 && &m->bufs[*p] != b)
		p = &m->bufs[*p].next;
	if (*p >= 0)
		*p = b->next;
	b->valid = 0;
}

int mem_open(unsigned nbufs, size_t size, struct mem **out)
{
	struct mem *m = calloc(1, sizeof(*m));
	unsigned nb = 1;

	while (nb < 2 * nbufs)
		nb <<= 1;
	if (!m || !(m->bufs = calloc(nbufs, sizeof(*m->bufs))) ||
	    !(m->heads = malloc(nb * sizeof(*m->heads)))) {
		if (m)
			free(m->bufs);
		free(m);
		return -ENOMEM;
	}
	m->mask = nb - 1;
	for (unsigned i = 0; i < nb; i++)
		m->heads[i] = -1;
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
	free(m->heads);
	pthread_cond_destroy(&m->published);
	pthread_mutex_destroy(&m->lock);
	free(m);
}

static struct mem_buf *find(struct mem *m, const uint8_t *objid, uint32_t chunk, uint32_t a,
			     uint32_t n)
{
	for (int i = m->heads[bucket(m, objid, chunk)]; i >= 0; i = m->bufs[i].next) {
		struct mem_buf *o = &m->bufs[i];
		if (o->chunk == chunk && memcmp(o->objid, objid, OBJID_LEN) == 0 && a + n <= o->len)
			return o;
	}
	return NULL;
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
		unlink_buf(m, best);
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
	struct mem_buf *o;

	pthread_mutex_lock(&m->lock);
	/* an older copy of the same chunk (fetched twice) goes first */
	while ((o = find(m, objid, chunk, 0, 0)) != NULL)
		unlink_buf(m, o);
	memcpy(b->objid, objid, OBJID_LEN);
	b->chunk = chunk;
	b->len = len;
	link_buf(m, b);
	b->filling = 0;
	b->refs += keep ? 1 : 0;
	b->used = ++m->clock;
	b->last = mono_s();
	pthread_cond_broadcast(&m->published);
	pthread_mutex_unlock(&m->lock);
}

void mem_drop(struct mem *m, struct mem_buf *b)
{
	pthread_mutex_lock(&m->lock);
	b->filling = 0;
	unlink_buf(m, b);
	pthread_mutex_unlock(&m->lock);
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
		b->last = mono_s();
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

size_t mem_trim(struct mem *m, unsigned idle_s)
{
	time_t now = mono_s();
	size_t freed = 0;

	pthread_mutex_lock(&m->lock);
	for (unsigned i = 0; i < m->n; i++) {
		struct mem_buf *b = &m->bufs[i];
		if (!b->data || b->filling || b->refs || now - b->last < (time_t)idle_s)
			continue;
		unlink_buf(m, b);
		free(b->data); /* mem_take allocates it again when needed */
		b->data = NULL;
		freed += m->size;
	}
	pthread_mutex_unlock(&m->lock);
	return freed;
}
