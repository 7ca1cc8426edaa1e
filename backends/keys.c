/* Keys that change while a mount lives (keys.h). */
#include "keys.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"

#define MARGIN_MAX_MS (5 * 60 * 1000)
#define RETRY_MIN_MS 1000
#define RETRY_MAX_MS 60000
/* signers wait at most this long for a fetch when their keys expired */
#define EXPIRED_WAIT_MS 15000

struct kset {
	struct keyset k; /* must be first: keyring_put's cast */
	struct creds c;  /* owns the strings */
	unsigned refs;   /* (ring's lock) */
};

struct keyring {
	pthread_mutex_t lock;
	pthread_cond_t fetched;
	struct key_source src;
	struct kset *cur;       /* NULL: anonymous (lock) */
	int64_t refresh_at;     /* monotonic ms; INT64_MAX: never (lock) */
	int64_t expires_at;     /* monotonic ms; INT64_MAX: never (lock) */
	int refreshing;         /* a signer is fetching, without the lock (lock) */
	unsigned fails;         /* refreshes failed in a row (lock) */
};

static int64_t mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int64_t wall_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t keys_refresh_at(int64_t now_ms, int64_t expires_ms)
{
	int64_t life = expires_ms - now_ms, margin = life / 3;

	if (margin > MARGIN_MAX_MS)
		margin = MARGIN_MAX_MS;
	return expires_ms - (margin > 0 ? margin : 0);
}

static struct kset *kset_new(struct creds *c)
{
	struct kset *ks;

	if (!c->access_key)
		return NULL;
	if (!(ks = calloc(1, sizeof(*ks))))
		return NULL;
	ks->c = *c;
	*c = (struct creds){0};
	ks->k.access_key = ks->c.access_key;
	ks->k.secret_key = ks->c.secret_key;
	ks->k.session_token = ks->c.session_token;
	ks->refs = 1;
	return ks;
}

/* With the ring's lock held. */
static void kset_unref(struct kset *ks)
{
	if (ks && --ks->refs == 0) {
		creds_free(&ks->c);
		free(ks);
	}
}

/* Install what a fetch returned (lock held). */
static void installed(struct keyring *r, struct creds *c, int64_t expires_wall)
{
	int64_t now = mono_ms(), wall = wall_ms();
	struct kset *ks = kset_new(c);

	kset_unref(r->cur);
	r->cur = ks;
	if (expires_wall) {
		r->expires_at = now + (expires_wall - wall);
		r->refresh_at = now + (keys_refresh_at(wall, expires_wall) - wall);
	} else {
		r->expires_at = INT64_MAX;
		r->refresh_at = r->src.recheck_ms ? now + r->src.recheck_ms : INT64_MAX;
	}
}

static int fetch(struct keyring *r, struct creds *c, int64_t *exp, char *msg, size_t msg_len)
{
	*c = (struct creds){0};
	*exp = 0;
	return r->src.fetch(r->src.arg, c, exp, msg, msg_len);
}

int keyring_open(const struct key_source *src, struct keyring **out, char *msg, size_t msg_len)
{
	struct keyring *r = calloc(1, sizeof(*r));
	struct creds c;
	int64_t exp;
	int err;

	if (!r) {
		if (src->release)
			src->release(src->arg);
		return -ENOMEM;
	}
	r->src = *src;
	pthread_mutex_init(&r->lock, NULL);
	pthread_cond_init(&r->fetched, NULL);
	err = fetch(r, &c, &exp, msg, msg_len);
	if (err == 1)
		err = -EIO; /* "unchanged" before anything was there */
	if (err) {
		creds_free(&c);
		keyring_close(r);
		return err;
	}
	if (exp && exp <= wall_ms()) {
		snprintf(msg, msg_len, "%s: the credentials it gave have expired already", src->what);
		creds_free(&c);
		keyring_close(r);
		return -EACCES;
	}
	installed(r, &c, exp);
	if (exp)
		log_info("credentials: %s, valid for %lld s", src->what,
			 (long long)((exp - wall_ms()) / 1000));
	*out = r;
	return 0;
}

int keyring_fixed(struct creds *c, struct keyring **out)
{
	struct keyring *r = calloc(1, sizeof(*r));

	if (!r) {
		creds_free(c);
		return -ENOMEM;
	}
	pthread_mutex_init(&r->lock, NULL);
	pthread_cond_init(&r->fetched, NULL);
	r->cur = kset_new(c);
	creds_free(c);
	r->refresh_at = r->expires_at = INT64_MAX;
	*out = r;
	return 0;
}

void keyring_close(struct keyring *r)
{
	if (!r)
		return;
	kset_unref(r->cur);
	if (r->src.release)
		r->src.release(r->src.arg);
	pthread_cond_destroy(&r->fetched);
	pthread_mutex_destroy(&r->lock);
	free(r);
}

/* The refresh, by the signer that found it due (lock held on entry and
 * exit, dropped while the source is asked). */
static void refresh(struct keyring *r)
{
	char msg[512] = "";
	struct creds c;
	int64_t exp, now;
	int err;

	r->refreshing = 1;
	pthread_mutex_unlock(&r->lock);
	err = fetch(r, &c, &exp, msg, sizeof(msg));
	pthread_mutex_lock(&r->lock);
	r->refreshing = 0;
	now = mono_ms();
	if (err == 1) {
		r->refresh_at = now + r->src.recheck_ms;
	} else if (err == 0 && (!exp || exp > wall_ms())) {
		int64_t was = r->expires_at;
		installed(r, &c, exp);
		if (r->fails || exp)
			log_info("credentials: %s: new keys%s%s", r->src.what,
				 was != INT64_MAX && was <= now ? " (the last ones had expired)" : "",
				 r->fails ? " after failed refreshes" : "");
		r->fails = 0;
	} else {
		int64_t left = r->expires_at == INT64_MAX ? INT64_MAX : r->expires_at - now;
		int64_t wait = left / 4;

		if (wait < RETRY_MIN_MS)
			wait = RETRY_MIN_MS;
		if (wait > RETRY_MAX_MS)
			wait = RETRY_MAX_MS;
		if (left == INT64_MAX && r->src.recheck_ms)
			wait = r->src.recheck_ms; /* a file, half written: soon */
		r->refresh_at = now + wait;
		if (r->fails++ == 0 || left <= 0)
			log_warn("credentials: %s: cannot refresh: %s (%s; again in %lld s)",
				 r->src.what, err ? msg : "they have expired already",
				 left > 0 ? "the current keys are still good"
					  : "the current keys have expired",
				 (long long)(wait / 1000));
	}
	creds_free(&c);
	pthread_cond_broadcast(&r->fetched);
}

const struct keyset *keyring_get(struct keyring *r)
{
	struct kset *ks;
	int64_t now;

	pthread_mutex_lock(&r->lock);
	now = mono_ms();
	if (now >= r->refresh_at && !r->refreshing)
		refresh(r);
	else if (now >= r->expires_at && r->refreshing) {
		/* expired, and another signer is fetching: wait for it, bounded */
		struct timespec until;
		clock_gettime(CLOCK_REALTIME, &until);
		until.tv_sec += EXPIRED_WAIT_MS / 1000;
		while (r->refreshing &&
		       pthread_cond_timedwait(&r->fetched, &r->lock, &until) != ETIMEDOUT)
			;
	}
	if ((ks = r->cur))
		ks->refs++;
	pthread_mutex_unlock(&r->lock);
	return ks ? &ks->k : NULL;
}

void keyring_put(struct keyring *r, const struct keyset *k)
{
	if (!k)
		return;
	pthread_mutex_lock(&r->lock);
	kset_unref((struct kset *)(void *)k);
	pthread_mutex_unlock(&r->lock);
}
