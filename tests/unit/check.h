/* A minimal unit-test harness: CHECK() records a failure with its line and
 * goes on; check_done() prints "N passed, N failed" and gives the exit code. */
#ifndef MODELFS_CHECK_H
#define MODELFS_CHECK_H

#include <stdio.h>
#include <string.h>

static int check_pass, check_fail;

#define CHECK(cond)                                                          \
	do {                                                                 \
		if (cond) {                                                  \
			check_pass++;                                        \
		} else {                                                     \
			check_fail++;                                        \
			fprintf(stderr, "%s:%d: CHECK(%s) failed\n", __FILE__, \
				__LINE__, #cond);                            \
		}                                                            \
	} while (0)

#define CHECK_STR(got, want)                                                 \
	do {                                                                 \
		const char *g_ = (got), *w_ = (want);                        \
		if (g_ && w_ && strcmp(g_, w_) == 0) {                       \
			check_pass++;                                        \
		} else {                                                     \
			check_fail++;                                        \
			fprintf(stderr, "%s:%d: got \"%s\", want \"%s\"\n",  \
				__FILE__, __LINE__, g_ ? g_ : "(null)",      \
				w_ ? w_ : "(null)");                         \
		}                                                            \
	} while (0)

static inline int check_done(void)
{
	printf("%d passed, %d failed\n", check_pass, check_fail);
	return check_fail ? 1 : 0;
}

#endif
