/* Shared helpers for the libFuzzer targets in tests/fuzz/.
 *
 * Each target is one LLVMFuzzerTestOneInput over one parser of untrusted
 * input. Inputs are handed to the code under test in heap buffers of exactly
 * the size it may touch, so AddressSanitizer flags a read or write one byte
 * past the end. Invariants the parsers promise (see their headers) are checked
 * with FUZZ_CHECK, which aborts: libFuzzer then saves the input as a crash.
 */
#ifndef MODELFS_FUZZ_H
#define MODELFS_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

#define FUZZ_CHECK(cond)                                                             \
	do {                                                                         \
		if (!(cond)) {                                                       \
			fprintf(stderr, "%s:%d: invariant failed: %s\n", __FILE__,   \
				__LINE__, #cond);                                    \
			abort();                                                     \
		}                                                                    \
	} while (0)

/* A malloc'd NUL-terminated copy of the input (embedded NULs kept: the code
 * under test then sees a shorter C string, as it would from the network). */
static inline char *fuzz_cstr(const uint8_t *data, size_t size)
{
	char *s = malloc(size + 1);

	if (!s)
		abort();
	if (size)
		memcpy(s, data, size);
	s[size] = '\0';
	return s;
}

/* A malloc'd copy of exactly @size bytes, not NUL-terminated. */
static inline char *fuzz_dup(const uint8_t *data, size_t size)
{
	char *s = malloc(size ? size : 1);

	if (!s)
		abort();
	if (size)
		memcpy(s, data, size);
	return s;
}

#endif
