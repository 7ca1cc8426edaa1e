/* Open-file handles (fs/handle.c): never 0, never a pointer; a released or
 * forged handle is refused, also once its slot is reused; threads adding,
 * reading and releasing at once see only their own. */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include "check.h"
#include "handle.h"

static struct handles *shared;

static void *churn(void *arg)
{
	int *mine = arg, bad = 0;

	for (int i = 0; i < 20000; i++) {
		uint64_t fh = handle_add(shared, mine);
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

	CHECK(handles_new(&h) == 0);
	fa = handle_add(h, &a);
	fb = handle_add(h, &b);
	CHECK(fa != 0 && fb != 0 && fa != fb);
	CHECK(fa != (uint64_t)(uintptr_t)&a); /* not the pointer */
	CHECK(handle_get(h, fa) == &a && handle_get(h, fb) == &b);
	CHECK(handles_count(h) == 2);
	CHECK(handle_get(h, 0) == NULL);
	CHECK(handle_get(h, 12345) == NULL);            /* never given */
	CHECK(handle_get(h, fa + (1ull << 32)) == NULL); /* another generation */
	CHECK(handle_del(h, fa) == &a);
	CHECK(handle_get(h, fa) == NULL && handle_del(h, fa) == NULL); /* released */
	fc = handle_add(h, &c); /* reuses fa's slot, not its handle */
	CHECK((uint32_t)fc == (uint32_t)fa && fc != fa);
	CHECK(handle_get(h, fc) == &c && handle_get(h, fa) == NULL);
	CHECK(handles_count(h) == 2);
	/* more than one chunk of slots */
	{
		static int many[3000];
		uint64_t fh[3000];
		int ok = 1;
		for (int i = 0; i < 3000; i++)
			ok &= (fh[i] = handle_add(h, &many[i])) != 0;
		for (int i = 0; i < 3000; i++)
			ok &= handle_get(h, fh[i]) == &many[i];
		for (int i = 0; i < 3000; i++)
			ok &= handle_del(h, fh[i]) == &many[i];
		CHECK(ok && handles_count(h) == 2);
	}
	handles_free(h);

	CHECK(handles_new(&shared) == 0);
	for (int i = 0; i < 4; i++)
		pthread_create(&th[i], NULL, churn, &vals[i]);
	for (int i = 0; i < 4; i++) {
		void *bad;
		pthread_join(th[i], &bad);
		CHECK(bad == NULL);
	}
	CHECK(handles_count(shared) == 0);
	handles_free(shared);
	return check_done();
}
