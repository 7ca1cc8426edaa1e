/* Per-object fetch slots and remembered failures (see flight.h).
 *
 * Both tables are small and scanned linearly: at most max_total objects can
 * have a request in flight, and FLIGHT_FAILS failures are kept, the oldest
 * replaced first (a failure of an object already in the table renews it).
 */
#include "flight.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define FLIGHT_FAILS 64

struct flight_obj {
	uint8_t id[OBJID_LEN];
	unsigned n;    /* slots held, of every kind; 0: a free entry */
	unsigned n_ra; /* ... of them readahead */
};

struct flight_fail {
	uint8_t id[OBJID_LEN];
	int err;
	uint64_t until_ms; /* 0: a free entry */
};

struct flight {
	pthread_mutex_t lock;
	pthread_cond_t cond;          /* a slot was put back */
	unsigned max_total, total;    /* protected by lock */
	struct flight_obj *objs;      /* max_total entries, protected by lock */
	struct flight_fail fails[FLIGHT_FAILS]; /* protected by lock */
	unsigned next_fail;           /* protected by lock */
};

static uint64_t mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

int flight_open(unsigned max_total, struct flight **out)
{
	struct flight *f = calloc(1, sizeof(*f));

	if (!f)
		return -ENOMEM;
	f->max_total = max_total ? max_total : 1;
	f->objs = calloc(f->max_total, sizeof(*f->objs));
	if (!f->objs) {
		free(f);
		return -ENOMEM;
	}
	pthread_mutex_init(&f->lock, NULL);
	{
		pthread_condattr_t ca;
		pthread_condattr_init(&ca);
		pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
		pthread_cond_init(&f->cond, &ca);
		pthread_condattr_destroy(&ca);
	}
	*out = f;
	return 0;
}

void flight_close(struct flight *f)
{
	if (!f)
		return;
	pthread_cond_destroy(&f->cond);
	pthread_mutex_destroy(&f->lock);
	free(f->objs);
	free(f);
}

/* The entry of @id, or a free one (NULL: none; cannot happen while total <
 * max_total, since every busy entry holds at least one slot). */
static struct flight_obj *obj_of(struct flight *f, const uint8_t *id)
{
	struct flight_obj *free_e = NULL;

	for (unsigned i = 0; i < f->max_total; i++) {
		if (f->objs[i].n && memcmp(f->objs[i].id, id, OBJID_LEN) == 0)
			return &f->objs[i];
		if (!f->objs[i].n && !free_e)
			free_e = &f->objs[i];
	}
	return free_e;
}

/* The remembered failure of @id, or 0. Called with f->lock held. */
static int failed_locked(struct flight *f, const uint8_t *id, uint64_t now)
{
	for (unsigned i = 0; i < FLIGHT_FAILS; i++) {
		const struct flight_fail *e = &f->fails[i];
		if (e->until_ms > now && memcmp(e->id, id, OBJID_LEN) == 0)
			return e->err;
	}
	return 0;
}

int flight_get(struct flight *f, const uint8_t id[OBJID_LEN], enum flight_kind kind,
	       unsigned obj_cap)
{
	int wait = kind == FLIGHT_DEMAND;
	struct flight_obj *o;
	struct timespec until;
	int err;

	if (obj_cap == 0)
		obj_cap = 1;
	/* readahead waits a moment for one of its object's runs to end: its
	 * reader's next run, not worth dropping, but not worth a worker's
	 * whole wait on a stalled object either */
	clock_gettime(CLOCK_MONOTONIC, &until);
	until.tv_nsec += FLIGHT_RA_WAIT_MS * 1000000L;
	until.tv_sec += until.tv_nsec / 1000000000L;
	until.tv_nsec %= 1000000000L;
	pthread_mutex_lock(&f->lock);
	for (;;) {
		if ((err = failed_locked(f, id, mono_ms())) != 0) {
			pthread_mutex_unlock(&f->lock);
			return err;
		}
		o = f->total < f->max_total ? obj_of(f, id) : NULL;
		if (o && (kind == FLIGHT_READAHEAD ? o->n_ra : o->n) < obj_cap)
			break;
		if (!wait) {
			if (pthread_cond_timedwait(&f->cond, &f->lock, &until) == 0)
				continue;
			pthread_mutex_unlock(&f->lock);
			return -EAGAIN;
		}
		pthread_cond_wait(&f->cond, &f->lock);
	}
	if (!o->n) {
		memcpy(o->id, id, OBJID_LEN);
		o->n_ra = 0;
	}
	o->n++;
	o->n_ra += kind == FLIGHT_READAHEAD;
	f->total++;
	pthread_mutex_unlock(&f->lock);
	return 0;
}

/* Remember @err for @id. Called with f->lock held. */
static void fail_locked(struct flight *f, const uint8_t *id, int err)
{
	struct flight_fail *e = NULL;

	if (err == 0 || err == -ENOMEM || err == -ECANCELED)
		return;
	for (unsigned i = 0; i < FLIGHT_FAILS && !e; i++)
		if (memcmp(f->fails[i].id, id, OBJID_LEN) == 0)
			e = &f->fails[i];
	if (!e) {
		e = &f->fails[f->next_fail];
		f->next_fail = (f->next_fail + 1) % FLIGHT_FAILS;
		memcpy(e->id, id, OBJID_LEN);
	}
	e->err = err;
	e->until_ms = mono_ms() + FLIGHT_FAIL_MS;
}

void flight_put(struct flight *f, const uint8_t id[OBJID_LEN], enum flight_kind kind, int err)
{
	pthread_mutex_lock(&f->lock);
	for (unsigned i = 0; i < f->max_total; i++) {
		if (f->objs[i].n && memcmp(f->objs[i].id, id, OBJID_LEN) == 0) {
			f->objs[i].n--;
			f->objs[i].n_ra -= kind == FLIGHT_READAHEAD;
			f->total--;
			break;
		}
	}
	fail_locked(f, id, err);
	/* waiters for another object may now fit; this one's may fit or fail */
	pthread_cond_broadcast(&f->cond);
	pthread_mutex_unlock(&f->lock);
}

void flight_fail(struct flight *f, const uint8_t id[OBJID_LEN], int err)
{
	pthread_mutex_lock(&f->lock);
	fail_locked(f, id, err);
	/* fetches waiting for a slot of this object give up now */
	pthread_cond_broadcast(&f->cond);
	pthread_mutex_unlock(&f->lock);
}

int flight_failed(struct flight *f, const uint8_t id[OBJID_LEN])
{
	int err;

	pthread_mutex_lock(&f->lock);
	err = failed_locked(f, id, mono_ms());
	pthread_mutex_unlock(&f->lock);
	return err;
}
