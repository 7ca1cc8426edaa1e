/* Open-file handles (handle.h). A handle is (generation << 32) | (slot + 1):
 * slot 0 is handle 1, so no handle is 0; the generation moves on at every
 * release, so a released handle stays refused after its slot is reused
 * (until 2^32 reuses of that one slot). A slot's generation and liveness
 * live with its record in the kept memory: a new daemon sees the same
 * handles as live.
 */
#include "handle.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#define CHUNK_SLOTS 1024u
#define N_CHUNKS (HANDLES_MAX / CHUNK_SLOTS)

/* In the kept memory; the record follows. */
struct kept {
	_Atomic uint32_t gen;
	_Atomic uint32_t live;
};

/* This process's. */
struct slot {
	void *_Atomic p;
	uint32_t next_free; /* slot + 1 of the next free one, 0: none; under lock */
};

struct handles {
	_Atomic uint32_t *kept_n; /* slots ever handed out, kept: all an adopter scans */
	char *kept;   /* HANDLES_MAX slots of stride bytes */
	size_t stride, rec_size;
	int own;      /* kept is ours to unmap */
	struct slot *_Atomic chunk[N_CHUNKS]; /* allocated once each, never moved */
	pthread_mutex_t lock;                 /* the free list, n_slots, liveness */
	uint32_t free_head;                   /* slot + 1, 0: none */
	uint32_t n_slots;                     /* slots ever handed out */
	atomic_uint count;
};

static struct kept *kept_of(struct handles *h, uint32_t s)
{
	return (struct kept *)(h->kept + (size_t)s * h->stride);
}

static struct slot *slot_of(struct handles *h, uint32_t s)
{
	struct slot *c = atomic_load_explicit(&h->chunk[s / CHUNK_SLOTS], memory_order_acquire);

	return c ? &c[s % CHUNK_SLOTS] : NULL;
}

/* The local slot @s, made when missing. Under the lock. */
static struct slot *slot_make(struct handles *h, uint32_t s)
{
	if (!atomic_load(&h->chunk[s / CHUNK_SLOTS])) {
		struct slot *c = calloc(CHUNK_SLOTS, sizeof(*c));
		if (c)
			atomic_store_explicit(&h->chunk[s / CHUNK_SLOTS], c, memory_order_release);
	}
	return slot_of(h, s);
}

int handles_new(void *slots, size_t rec_size, int adopt, struct handles **out)
{
	struct handles *h = calloc(1, sizeof(*h));

	if (!h || rec_size % 8)
		goto fail;
	h->rec_size = rec_size;
	h->stride = sizeof(struct kept) + rec_size;
	h->kept = slots;
	if (!slots) {
		void *p = mmap(NULL, HANDLES_SLOTS_BYTES(rec_size), PROT_READ | PROT_WRITE,
			       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
		if (p == MAP_FAILED)
			goto fail;
		h->kept = p;
		h->own = 1;
		adopt = 0;
	}
	h->kept_n = (_Atomic uint32_t *)h->kept;
	h->kept += 8;
	pthread_mutex_init(&h->lock, NULL);
	if (adopt) {
		/* the free list from the slots: the live ones are in use, every
		 * one below the last live one that is not is free */
		uint32_t last = 0, n = atomic_load(h->kept_n);
		for (uint32_t s = 0; s < n && s < HANDLES_MAX; s++)
			if (atomic_load(&kept_of(h, s)->live))
				last = s + 1;
		h->n_slots = last;
		for (uint32_t s = last; s-- > 0;) {
			struct slot *sl = slot_make(h, s);
			if (!sl)
				goto fail_lock;
			if (atomic_load(&kept_of(h, s)->live)) {
				atomic_fetch_add(&h->count, 1);
			} else {
				sl->next_free = h->free_head;
				h->free_head = s + 1;
			}
		}
	}
	*out = h;
	return 0;
fail_lock:
	pthread_mutex_destroy(&h->lock);
	for (unsigned i = 0; i < N_CHUNKS; i++)
		free(atomic_load(&h->chunk[i]));
fail:
	if (h && h->own)
		munmap(h->kept - 8, HANDLES_SLOTS_BYTES(h->rec_size));
	free(h);
	return -ENOMEM;
}

void handles_free(struct handles *h)
{
	if (!h)
		return;
	for (unsigned i = 0; i < N_CHUNKS; i++)
		free(atomic_load(&h->chunk[i]));
	if (h->own)
		munmap(h->kept - 8, HANDLES_SLOTS_BYTES(h->rec_size));
	pthread_mutex_destroy(&h->lock);
	free(h);
}

uint64_t handle_add(struct handles *h, void *p, const void *rec)
{
	struct slot *sl = NULL;
	uint32_t s = 0;

	pthread_mutex_lock(&h->lock);
	if (h->free_head) {
		s = h->free_head - 1;
		sl = slot_of(h, s);
		h->free_head = sl->next_free;
	} else if (h->n_slots < HANDLES_MAX) {
		s = h->n_slots;
		if ((sl = slot_make(h, s)) != NULL) {
			h->n_slots++;
			atomic_store(h->kept_n, h->n_slots);
		}
	}
	if (sl) {
		struct kept *k = kept_of(h, s);
		memcpy(k + 1, rec, h->rec_size);
		atomic_store_explicit(&sl->p, p, memory_order_release);
		atomic_store_explicit(&k->live, 1, memory_order_release);
		atomic_fetch_add(&h->count, 1);
	}
	pthread_mutex_unlock(&h->lock);
	if (!sl)
		return 0;
	return ((uint64_t)atomic_load(&kept_of(h, s)->gen) << 32) | (uint64_t)(s + 1);
}

/* The slot number of @fh while it is live with that generation, or -1. */
static int64_t live(struct handles *h, uint64_t fh)
{
	uint32_t s1 = (uint32_t)fh, gen = (uint32_t)(fh >> 32);
	struct kept *k;

	if (s1 == 0 || s1 > HANDLES_MAX)
		return -1;
	k = kept_of(h, s1 - 1);
	if (!atomic_load_explicit(&k->live, memory_order_acquire) ||
	    atomic_load_explicit(&k->gen, memory_order_acquire) != gen)
		return -1;
	return (int64_t)s1 - 1;
}

void *handle_get(struct handles *h, uint64_t fh)
{
	int64_t s = live(h, fh);
	struct slot *sl = s >= 0 ? slot_of(h, (uint32_t)s) : NULL;

	return sl ? atomic_load_explicit(&sl->p, memory_order_acquire) : NULL;
}

const void *handle_rec(struct handles *h, uint64_t fh)
{
	int64_t s = live(h, fh);

	return s >= 0 ? (const void *)(kept_of(h, (uint32_t)s) + 1) : NULL;
}

void *handle_attach(struct handles *h, uint64_t fh, void *p)
{
	struct slot *sl;
	void *have = NULL;
	int64_t s;

	pthread_mutex_lock(&h->lock);
	if ((s = live(h, fh)) >= 0 && (sl = slot_of(h, (uint32_t)s)) != NULL) {
		have = atomic_load(&sl->p);
		if (!have)
			atomic_store_explicit(&sl->p, have = p, memory_order_release);
	}
	pthread_mutex_unlock(&h->lock);
	return have;
}

void *handle_del(struct handles *h, uint64_t fh)
{
	struct slot *sl;
	void *p = NULL;
	int64_t s;

	pthread_mutex_lock(&h->lock);
	if ((s = live(h, fh)) >= 0 && (sl = slot_of(h, (uint32_t)s)) != NULL &&
	    (p = atomic_load(&sl->p)) != NULL) {
		struct kept *k = kept_of(h, (uint32_t)s);
		atomic_store(&k->live, 0);
		atomic_fetch_add(&k->gen, 1); /* the old handle is refused from now on */
		atomic_store(&sl->p, NULL);
		sl->next_free = h->free_head;
		h->free_head = (uint32_t)s + 1;
		atomic_fetch_sub(&h->count, 1);
	}
	pthread_mutex_unlock(&h->lock);
	return p;
}

uint64_t handles_next(struct handles *h, uint64_t fh)
{
	uint64_t found = 0;

	pthread_mutex_lock(&h->lock);
	for (uint32_t s = (uint32_t)fh; s < h->n_slots && !found; s++) {
		struct kept *k = kept_of(h, s);
		if (atomic_load(&k->live))
			found = ((uint64_t)atomic_load(&k->gen) << 32) | (uint64_t)(s + 1);
	}
	pthread_mutex_unlock(&h->lock);
	return found;
}

unsigned handles_count(struct handles *h)
{
	return atomic_load(&h->count);
}
