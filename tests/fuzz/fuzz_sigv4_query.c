/* Fuzz target: backends/sigv4.c's canonical query string builder.
 *
 * The input is a raw query string (without '?'), NUL-terminated. Query
 * strings are built by modelfs itself from listing prefixes and continuation
 * tokens, and a continuation token is server-supplied, so it is fuzzed.
 *
 * Checked: the output is written into exact-size heap buffers (room for the
 * result, and one byte less, which must fail with -ENAMETOOLONG and leave ""),
 * and canonicalising a canonical query gives it back unchanged.
 */
#include <ctype.h>
#include <errno.h>
#include <stdint.h>
#include <string.h>

#include "fuzz.h"
#include "sigv4.h"

#define BIG 16384

static int canon_exact(const char *q, size_t out_len, char **res)
{
	char *out = malloc(out_len ? out_len : 1);
	int err;

	if (!out)
		abort();
	err = sigv4_canonical_query(q, out, out_len);
	if (out_len)
		FUZZ_CHECK(strnlen(out, out_len) < out_len);
	if (err && out_len)
		FUZZ_CHECK(out[0] == '\0');
	*res = out;
	return err;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *q = fuzz_cstr(data, size);
	char *out, *exact, *again;
	size_t n;
	int err;

	err = canon_exact(q, BIG, &out);
	FUZZ_CHECK(err == 0 || err == -EINVAL || err == -ENAMETOOLONG || err == -ENOMEM);
	/* The tiny sizes: 0 must be refused without a write, 1 fits only "". */
	{
		char *tiny;
		int e0 = canon_exact(q, 0, &tiny);
		FUZZ_CHECK(e0 == -ENAMETOOLONG);
		free(tiny);
	}
	if (err) {
		free(out);
		free(q);
		return 0;
	}
	n = strlen(out);
	/* Every byte of the canonical form is unreserved, '%XX', '=' or '&'. */
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)out[i];
		FUZZ_CHECK(isalnum(c) || strchr("-_.~%=&", c));
		if (c == '%')
			FUZZ_CHECK(i + 2 < n && isxdigit((unsigned char)out[i + 1]) &&
				   isxdigit((unsigned char)out[i + 2]));
	}

	FUZZ_CHECK(canon_exact(q, n + 1, &exact) == 0);
	FUZZ_CHECK(strcmp(exact, out) == 0);
	free(exact);
	if (n > 0) {
		FUZZ_CHECK(canon_exact(q, n, &exact) == -ENAMETOOLONG);
		free(exact);
	}

	FUZZ_CHECK(canon_exact(out, n + 1, &again) == 0);
	FUZZ_CHECK(strcmp(again, out) == 0);
	free(again);

	free(out);
	free(q);
	return 0;
}
