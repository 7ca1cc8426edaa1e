/* Open-file handles (handle.h). A handle is (generation << 32) | (slot + 1):
 * slot 0 is handle 1, so no handle is 0; the generation moves on at every
 * release, so a released handle stays refused after its slot is reused
 * (until 2^32 reuses of that one slot). */
#include "handle.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>

#define CHUNK_SLOTS 1024u
#define N_CHUNKS (HANDLES_MAX / CHUNK_SLOTS)

struct slot {
	_Atomic uint32_t gen;
	void *_Atomic p;
	uint32_t next_free; /* slot + 1 of the next free one, 0: none; under lock */
};

struct handles {
	struct slot *_Atomic chunk[N_CHUNKS]; /* allocated once each, never moved */
	pthread_mutex_t lock;                 /* the free list and n_slots */
	uint32_t free_head;                   /* slot + 1, 0: none */
	uint32_t n_slots;                     /* slots ever handed out */
	atomic_uint count;
};

int handles_new(struct handles **out)
{
	struct handles *h = calloc(1, sizeof(*h));

	if (!h)
		return -ENOMEM;
	pthread_mutex_init(&h->lock, NULL);
	*out = h;
	return 0;
}

void handles_free(struct handles *h)
{
	if (!h)
		return;
	for (unsigned i = 0; i < N_CHUNKS; i++)
		free(atomic_load(&h->chunk[i]));
	pthread_mutex_destroy(&h->lock);
	free(h);
}

static struct slot *slot_of(struct handles *h, uint32_t s)
{
	struct slot *c = atomic_load_explicit(&h->chunk[s / CHUNK_SLOTS], memory_order_acquire);

	return c ? &c[s % CHUNK_SLOTS] : NULL;
}

uint64_t handle_add(struct handles *h, void *p)
{
	struct slot *sl = NULL;
	uint32_t s;

	pthread_mutex_lock(&h->lock);
	if (h->free_head) {
		s = h->free_head - 1;
		sl = slot_of(h, s);
		h->free_head = sl->next_free;
	} else if (h->n_slots < HANDLES_MAX) {
		s = h->n_slots;
		if (!atomic_load(&h->chunk[s / CHUNK_SLOTS])) {
			struct slot *c = calloc(CHUNK_SLOTS, sizeof(*c));
			if (c)
				atomic_store_explicit(&h->chunk[s / CHUNK_SLOTS], c, memory_order_release);
		}
		if ((sl = slot_of(h, s)) != NULL)
			h->n_slots++;
	}
	if (sl) {
		atomic_store_explicit(&sl->p, p, memory_order_release);
		atomic_fetch_add(&h->count, 1);
	}
	pthread_mutex_unlock(&h->lock);
	if (!sl)
		return 0;
	return ((uint64_t)atomic_load(&sl->gen) << 32) | (uint64_t)(s + 1);
}

/* The slot @fh names while it holds that generation, or NULL. */
static struct slot *live(struct handles *h, uint64_t fh)
{
	uint32_t s1 = (uint32_t)fh, gen = (uint32_t)(fh >> 32);
	struct slot *sl;

	if (s1 == 0 || s1 > HANDLES_MAX || !(sl = slot_of(h, s1 - 1)))
		return NULL;
	if (atomic_load_explicit(&sl->gen, memory_order_acquire) != gen)
		return NULL;
	return sl;
}

void *handle_get(struct handles *h, uint64_t fh)
{
	struct slot *sl = live(h, fh);

	return sl ? atomic_load_explicit(&sl->p, memory_order_acquire) : NULL;
}

void *handle_del(struct handles *h, uint64_t fh)
{
	struct slot *sl;
	void *p = NULL;

	pthread_mutex_lock(&h->lock);
	if ((sl = live(h, fh)) != NULL && (p = atomic_load(&sl->p)) != NULL) {
		atomic_store(&sl->p, NULL);
		atomic_fetch_add(&sl->gen, 1); /* the old handle is refused from now on */
		sl->next_free = h->free_head;
		h->free_head = (uint32_t)fh;
		atomic_fetch_sub(&h->count, 1);
	}
	pthread_mutex_unlock(&h->lock);
	return p;
}

void *handles_pop(struct handles *h)
{
	void *p = NULL;

	pthread_mutex_lock(&h->lock);
	for (uint32_t s = 0; s < h->n_slots && !p; s++) {
		struct slot *sl = slot_of(h, s);
		if (sl && (p = atomic_load(&sl->p)) != NULL) {
			atomic_store(&sl->p, NULL);
			atomic_fetch_add(&sl->gen, 1);
			sl->next_free = h->free_head;
			h->free_head = s + 1;
			atomic_fetch_sub(&h->count, 1);
		}
	}
	pthread_mutex_unlock(&h->lock);
	return p;
}

unsigned handles_count(struct handles *h)
{
	return atomic_load(&h->count);
}
