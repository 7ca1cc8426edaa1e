/* Unit tests for cache/evict.c: when to evict and which chunks go.
 *
 * The fixed cases pin the boundaries (a cache exactly at a watermark is not
 * above it); the randomized cases check the properties the eviction thread
 * relies on against an independent model: the order is oldest first with a
 * deterministic tie break, the chosen prefix is the shortest one that brings
 * usage to the low watermark, and everything is chosen when nothing less will.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "evict.h"

static struct evict_cand cand(unsigned obj, uint32_t chunk, uint32_t len, uint64_t last_use)
{
	struct evict_cand c;

	memset(&c, 0, sizeof(c));
	c.objid[0] = (uint8_t)(obj >> 8);
	c.objid[1] = (uint8_t)obj;
	c.chunk = chunk;
	c.len = len;
	c.last_use_ms = last_use;
	return c;
}

/* ---- evict_needed ---- */

static void test_needed(void)
{
	/* exactly at the high watermark is not above it (exact in binary) */
	CHECK(!evict_needed(750, 1000, 0.75));
	CHECK(evict_needed(751, 1000, 0.75));
	CHECK(!evict_needed(749, 1000, 0.75));
	CHECK(!evict_needed(512ULL << 20, 1ULL << 30, 0.5));
	CHECK(evict_needed((512ULL << 20) + 1, 1ULL << 30, 0.5));
	/* 0.9 is not exact in binary; 0.9 x 1000 still rounds to 900 */
	CHECK(!evict_needed(900, 1000, 0.9));
	CHECK(evict_needed(901, 1000, 0.9));

	/* quota 0 means no quota known: never evict, whatever the usage */
	CHECK(!evict_needed(0, 0, 0.9));
	CHECK(!evict_needed(1ULL << 40, 0, 0.9));
	CHECK(!evict_needed(UINT64_MAX, 0, 0.0));

	/* an empty cache never needs eviction */
	CHECK(!evict_needed(0, 1000, 0.9));
	/* high 1.0: only past the quota itself */
	CHECK(!evict_needed(1000, 1000, 1.0));
	CHECK(evict_needed(1001, 1000, 1.0));
	/* large caches: 500 GiB quota, 95% */
	CHECK(!evict_needed(475ULL << 30, 500ULL << 30, 0.95));
	CHECK(evict_needed((475ULL << 30) + (1ULL << 20), 500ULL << 30, 0.95));
}

/* ---- evict_choose, fixed cases ---- */

static void test_choose_order(void)
{
	struct evict_cand c[5];
	size_t k;

	c[0] = cand(1, 0, 100, 50);
	c[1] = cand(1, 1, 100, 10);
	c[2] = cand(1, 2, 100, 30);
	c[3] = cand(1, 3, 100, 20);
	c[4] = cand(1, 4, 100, 40);

	/* usage 500, target 0.3 x 1000 = 300: two must go, the two oldest */
	k = evict_choose(c, 5, 500, 1000, 0.3);
	CHECK(k == 2);
	CHECK(c[0].last_use_ms == 10 && c[0].chunk == 1);
	CHECK(c[1].last_use_ms == 20 && c[1].chunk == 3);
	/* the whole array comes back sorted, not only the prefix */
	CHECK(c[2].last_use_ms == 30 && c[3].last_use_ms == 40 && c[4].last_use_ms == 50);
	/* the entries travel whole (len and chunk with their last use) */
	CHECK(c[4].chunk == 0 && c[4].len == 100);
}

static void test_choose_stops(void)
{
	struct evict_cand c[4];

	for (int i = 0; i < 4; i++)
		c[i] = cand(2, (uint32_t)i, 100, (uint64_t)(4 - i));
	/* target 400: one chunk of 100 brings 500 to 400, which is enough */
	CHECK(evict_choose(c, 4, 500, 1000, 0.4) == 1);
	CHECK(c[0].chunk == 3); /* last use 1, the oldest */
	/* target 399: one more is needed */
	CHECK(evict_choose(c, 4, 500, 1000, 0.399) == 2);
	/* already at or below the target: nothing */
	CHECK(evict_choose(c, 4, 400, 1000, 0.4) == 0);
	CHECK(evict_choose(c, 4, 10, 1000, 0.4) == 0);
	/* not enough even with all of them (usage counts chunks of other
	 * processes, or bytes the candidates do not cover): all of them */
	CHECK(evict_choose(c, 4, 100000, 1000, 0.4) == 4);
	/* low 0: everything until usage is 0 */
	CHECK(evict_choose(c, 4, 400, 1000, 0.0) == 4);
	CHECK(evict_choose(c, 4, 300, 1000, 0.0) == 3);

	/* chunks of unequal size: the first big one suffices */
	c[0] = cand(3, 0, 1000, 1);
	c[1] = cand(3, 1, 1, 2);
	c[2] = cand(3, 2, 1, 3);
	CHECK(evict_choose(c, 3, 1500, 1000, 0.5) == 1);
	/* a zero-length chunk (an empty object) takes a place but frees nothing */
	c[0] = cand(3, 0, 0, 1);
	c[1] = cand(3, 1, 100, 2);
	CHECK(evict_choose(c, 2, 600, 1000, 0.5) == 2);
}

static void test_choose_ties(void)
{
	struct evict_cand a[6], b[6];

	/* every last use the same: order by objid, then chunk number */
	a[0] = cand(0x0102, 7, 10, 5);
	a[1] = cand(0x0001, 9, 10, 5);
	a[2] = cand(0x0102, 2, 10, 5);
	a[3] = cand(0x0001, 1, 10, 5);
	a[4] = cand(0x0200, 0, 10, 5);
	a[5] = cand(0x0001, 256, 10, 5);
	/* the same set in another order */
	b[0] = a[4];
	b[1] = a[5];
	b[2] = a[0];
	b[3] = a[3];
	b[4] = a[2];
	b[5] = a[1];

	CHECK(evict_choose(a, 6, 60, 100, 0.3) == 3);
	CHECK(evict_choose(b, 6, 60, 100, 0.3) == 3);
	CHECK(memcmp(a, b, sizeof(a)) == 0); /* stable: input order does not matter */
	CHECK(a[0].objid[1] == 0x01 && a[0].chunk == 1);
	CHECK(a[1].objid[1] == 0x01 && a[1].chunk == 9);
	CHECK(a[2].objid[1] == 0x01 && a[2].chunk == 256); /* numeric, not byte order */
	CHECK(a[3].objid[0] == 0x01 && a[3].chunk == 2);
	CHECK(a[4].objid[0] == 0x01 && a[4].chunk == 7);
	CHECK(a[5].objid[0] == 0x02);

	/* last use wins over objid */
	a[0] = cand(0xffff, 0, 10, 1);
	a[1] = cand(0x0000, 0, 10, 2);
	CHECK(evict_choose(a, 2, 20, 100, 0.1) == 1);
	CHECK(a[0].objid[0] == 0xff);
}

static void test_choose_empty(void)
{
	struct evict_cand c[1];

	c[0] = cand(1, 0, 10, 1);
	/* no candidates: nothing can go, however full the cache */
	CHECK(evict_choose(c, 0, 1ULL << 40, 1000, 0.5) == 0);
	CHECK(c[0].chunk == 0 && c[0].len == 10); /* and nothing is touched */
	/* quota 0: target 0, all of them */
	CHECK(evict_choose(c, 1, 10, 0, 0.5) == 1);
}

/* ---- randomized ---- */

static uint64_t rng_state = 0x9e3779b97f4a7c15ULL;

static uint64_t rnd(void)
{
	/* splitmix64: deterministic, so a failure reproduces */
	uint64_t z = (rng_state += 0x9e3779b97f4a7c15ULL);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

/* The order the header promises, written out independently of evict.c. */
static int before(const struct evict_cand *x, const struct evict_cand *y)
{
	int r;

	if (x->last_use_ms != y->last_use_ms)
		return x->last_use_ms < y->last_use_ms;
	r = memcmp(x->objid, y->objid, OBJID_LEN);
	if (r)
		return r < 0;
	return x->chunk < y->chunk;
}

static int same_cand(const struct evict_cand *x, const struct evict_cand *y)
{
	return memcmp(x->objid, y->objid, OBJID_LEN) == 0 && x->chunk == y->chunk &&
	       x->len == y->len && x->last_use_ms == y->last_use_ms;
}

static void test_random(void)
{
	enum { CASES = 1000, MAXN = 300 };
	struct evict_cand in[MAXN], out[MAXN], again[MAXN];
	int bad_order = 0, bad_perm = 0, bad_enough = 0, bad_minimal = 0, bad_all = 0;
	int bad_stable = 0, nonzero_k = 0, full_k = 0;

	for (int t = 0; t < CASES; t++) {
		size_t n = (size_t)(rnd() % (MAXN + 1)), k;
		uint64_t sum = 0, extra, quota, usage, target, left;
		double low = (double)(rnd() % 1001) / 1000.0;
		int used[MAXN] = {0};

		for (size_t i = 0; i < n; i++) {
			/* few distinct objects, chunks and times: many ties */
			in[i] = cand((unsigned)(rnd() % 4), (uint32_t)(rnd() % 8),
				     (uint32_t)(1 + rnd() % 4096), rnd() % 16);
			/* (objid, chunk) is a key in the index: no duplicates */
			for (size_t j = 0; j < i; j++) {
				if (memcmp(in[j].objid, in[i].objid, OBJID_LEN) == 0 &&
				    in[j].chunk == in[i].chunk) {
					in[i].chunk += 8 * (uint32_t)(1 + i);
					break;
				}
			}
			sum += in[i].len;
		}
		/* usage: the candidates plus, at times, bytes they do not cover */
		extra = rnd() % 4 == 0 ? rnd() % 100000 : 0;
		usage = sum + extra;
		quota = 1 + rnd() % (2 * usage + 2);
		target = (uint64_t)(low * (double)quota);

		memcpy(out, in, n * sizeof(*in));
		k = evict_choose(out, n, usage, quota, low);
		if (k > n) {
			bad_enough++;
			continue;
		}
		nonzero_k += k > 0;
		full_k += k == n && n > 0;

		/* a permutation of the input */
		for (size_t i = 0; i < n; i++) {
			size_t j;
			for (j = 0; j < n; j++)
				if (!used[j] && same_cand(&out[i], &in[j]))
					break;
			if (j == n)
				bad_perm++;
			else
				used[j] = 1;
		}
		/* sorted: so the prefix is the k oldest */
		for (size_t i = 1; i < n; i++)
			if (!before(&out[i - 1], &out[i]))
				bad_order++;
		/* removing k is enough, unless all k = n were not enough */
		left = usage;
		for (size_t i = 0; i < k; i++)
			left = left > out[i].len ? left - out[i].len : 0;
		if (left > target && k != n)
			bad_enough++;
		/* removing k - 1 would not have been enough */
		if (k > 0 && left + out[k - 1].len <= target)
			bad_minimal++;
		/* nothing chosen only when nothing was needed or possible */
		if (k == 0 && n > 0 && usage > target)
			bad_all++;

		/* deterministic: a shuffled copy gives the same result */
		memcpy(again, in, n * sizeof(*in));
		for (size_t i = n; i > 1; i--) {
			size_t j = (size_t)(rnd() % i);
			struct evict_cand tmp = again[i - 1];
			again[i - 1] = again[j];
			again[j] = tmp;
		}
		if (evict_choose(again, n, usage, quota, low) != k ||
		    (n && memcmp(again, out, n * sizeof(*out)) != 0))
			bad_stable++;
	}
	CHECK(bad_perm == 0);
	CHECK(bad_order == 0);
	CHECK(bad_enough == 0);
	CHECK(bad_minimal == 0);
	CHECK(bad_all == 0);
	CHECK(bad_stable == 0);
	/* the generator covers the interesting cases */
	CHECK(nonzero_k > 100);
	CHECK(full_k > 10);
}

int main(void)
{
	test_needed();
	test_choose_order();
	test_choose_stops();
	test_choose_ties();
	test_choose_empty();
	test_random();
	return check_done();
}
