/* Open-file handles (fs/handle.c): never 0, never a pointer; a released or
 * forged handle is refused, also once its slot is reused; threads adding,
 * reading and releasing at once see only their own. */
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include "check.h"
#include "handle.h"
#include "keep.h"

#include <string.h>
#include <unistd.h>

struct rec {
	uint64_t v;
};

static struct handles *shared;

static void *churn(void *arg)
{
	int *mine = arg, bad = 0;

	for (int i = 0; i < 20000; i++) {
		uint64_t fh = handle_add(shared, mine, &(struct rec){1});
		if (!fh || handle_get(shared, fh) != mine || handle_del(shared, fh) != mine ||
		    handle_get(shared, fh) != NULL)
			bad++;
	}
	return (void *)(intptr_t)bad;
}

int main(void)
{
	struct handles *h;
	int a, b, c, vals[4];
	uint64_t fa, fb, fc;
	pthread_t th[4];

	CHECK(handles_new(NULL, sizeof(struct rec), 0, &h) == 0);
	fa = handle_add(h, &a, &(struct rec){7});
	fb = handle_add(h, &b, &(struct rec){7});
	CHECK(fa != 0 && fb != 0 && fa != fb);
	CHECK(fa != (uint64_t)(uintptr_t)&a); /* not the pointer */
	CHECK(handle_get(h, fa) == &a && handle_get(h, fb) == &b);
	CHECK(handles_count(h) == 2);
	CHECK(handle_get(h, 0) == NULL);
	CHECK(handle_get(h, 12345) == NULL);            /* never given */
	CHECK(handle_get(h, fa + (1ull << 32)) == NULL); /* another generation */
	CHECK(handle_del(h, fa) == &a);
	CHECK(handle_get(h, fa) == NULL && handle_del(h, fa) == NULL); /* released */
	fc = handle_add(h, &c, &(struct rec){7}); /* reuses fa's slot, not its handle */
	CHECK((uint32_t)fc == (uint32_t)fa && fc != fa);
	CHECK(handle_get(h, fc) == &c && handle_get(h, fa) == NULL);
	CHECK(handles_count(h) == 2);
	/* more than one chunk of slots */
	{
		static int many[3000];
		uint64_t fh[3000];
		int ok = 1;
		for (int i = 0; i < 3000; i++)
			ok &= (fh[i] = handle_add(h, &many[i], &(struct rec){7})) != 0;
		for (int i = 0; i < 3000; i++)
			ok &= handle_get(h, fh[i]) == &many[i];
		for (int i = 0; i < 3000; i++)
			ok &= handle_del(h, fh[i]) == &many[i];
		CHECK(ok && handles_count(h) == 2);
	}
	handles_free(h);

	CHECK(handles_new(NULL, sizeof(struct rec), 0, &shared) == 0);
	for (int i = 0; i < 4; i++)
		pthread_create(&th[i], NULL, churn, &vals[i]);
	for (int i = 0; i < 4; i++) {
		void *bad;
		pthread_join(th[i], &bad);
		CHECK(bad == NULL);
	}
	CHECK(handles_count(shared) == 0);
	handles_free(shared);

	/* a second process adopts the kept slots: the same handles are live,
	 * with their records, and no object until attached */
	{
		struct keep *k1, *k2;
		struct handles *h1, *h2;
		int x, y, z, mine;
		uint64_t fx, fy, fz, fw;
		char msg[200];
		const struct rec *r;
		CHECK(keep_create(sizeof(struct rec), HANDLES_MAX, &k1) == 0);
		CHECK(handles_new(keep_handles(k1), sizeof(struct rec), 0, &h1) == 0);
		fx = handle_add(h1, &x, &(struct rec){11});
		fy = handle_add(h1, &y, &(struct rec){22});
		fz = handle_add(h1, &z, &(struct rec){33});
		CHECK(handle_del(h1, fy) == &y); /* a hole in the middle */
		CHECK(keep_adopt(dup(keep_fd(k1)), sizeof(struct rec), HANDLES_MAX, &k2, msg,
				 sizeof(msg)) == 0);
		keep_free(k2);
		CHECK(keep_adopt(dup(keep_fd(k1)), sizeof(struct rec) + 8, HANDLES_MAX, &k2, msg,
				 sizeof(msg)) == -EPROTO && strstr(msg, "layout"));
		CHECK(keep_adopt(dup(keep_fd(k1)), sizeof(struct rec), HANDLES_MAX, &k2, msg,
				 sizeof(msg)) == 0);
		CHECK(handles_new(keep_handles(k2), sizeof(struct rec), 1, &h2) == 0);
		CHECK(handles_count(h2) == 2);
		CHECK(handle_get(h2, fx) == NULL && (r = handle_rec(h2, fx)) && r->v == 11);
		CHECK(handle_rec(h2, fy) == NULL && (r = handle_rec(h2, fz)) && r->v == 33);
		CHECK(handle_attach(h2, fx, &mine) == &mine && handle_attach(h2, fx, &x) == &mine);
		CHECK(handle_get(h2, fx) == &mine && handle_attach(h2, fy, &x) == NULL);
		CHECK(handles_next(h2, 0) == fx && handles_next(h2, fx) == fz && !handles_next(h2, fz));
		fw = handle_add(h2, &y, &(struct rec){44}); /* the hole is reused */
		CHECK((uint32_t)fw == (uint32_t)fy && fw != fy);
		CHECK(handle_del(h2, fx) == &mine && handle_rec(h2, fx) == NULL);
		handles_free(h2);
		handles_free(h1);
		keep_free(k2);
		keep_free(k1);
	}
	return check_done();
}
