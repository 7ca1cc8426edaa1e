/* Fuzz target: backends/uri.c, the endpoint parser and the percent-encoder.
 *
 * The input is split at its first NUL byte: the part before is an endpoint
 * URL (-o endpoint=..., user-supplied), the part after is a key to encode
 * (keys come from listings, so from the server). The first byte of the key
 * part, when there is one, picks keep_slash. Encoding goes into exact-size
 * heap buffers: the size the result needs, and one byte less (must fail).
 */
#include <errno.h>
#include <stdint.h>
#include <string.h>

#include "fuzz.h"
#include "uri.h"

static volatile int sink;

static void check_endpoint(const char *url)
{
	struct uri_endpoint ep;
	int err = uri_parse_endpoint(url, &ep);

	FUZZ_CHECK(err == 0 || err == -EINVAL);
	if (err)
		return;
	FUZZ_CHECK(strnlen(ep.host, sizeof(ep.host)) < sizeof(ep.host));
	FUZZ_CHECK(strnlen(ep.path, sizeof(ep.path)) < sizeof(ep.path));
	FUZZ_CHECK(ep.host[0] != '\0');
	FUZZ_CHECK(ep.port >= 0 && ep.port <= 65535);
	FUZZ_CHECK(ep.path[0] == '\0' || ep.path[0] == '/');
	sink = uri_host_is_ip_or_local(ep.host);
}

static char *encode_exact(const char *s, int keep_slash, size_t out_len, int *ret)
{
	char *out = malloc(out_len ? out_len : 1);

	if (!out)
		abort();
	*ret = uri_encode(s, keep_slash, out, out_len);
	return out;
}

static void check_encode(const char *s, int keep_slash)
{
	size_t in = strlen(s), cap = in * 3 + 1;
	int n, n2;
	char *out = encode_exact(s, keep_slash, cap, &n), *exact;

	FUZZ_CHECK(n >= 0 && (size_t)n < cap && (size_t)n >= in);
	FUZZ_CHECK(strlen(out) == (size_t)n);
	for (int i = 0; i < n; i++) {
		unsigned char c = (unsigned char)out[i];
		FUZZ_CHECK(c > 0x20 && c < 0x7f);
		if (!keep_slash)
			FUZZ_CHECK(c != '/');
	}
	exact = encode_exact(s, keep_slash, (size_t)n + 1, &n2);
	FUZZ_CHECK(n2 == n && strcmp(exact, out) == 0);
	free(exact);
	exact = encode_exact(s, keep_slash, (size_t)n, &n2);
	FUZZ_CHECK(n2 == -ENAMETOOLONG);
	free(exact);
	free(out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *buf = fuzz_cstr(data, size);
	size_t ulen = strlen(buf);

	check_endpoint(buf);
	check_encode(buf, 1);
	if (ulen + 1 < size) { /* a key part after the NUL */
		const char *key = buf + ulen + 1;
		check_encode(key + 1, key[0] & 1);
	}
	free(buf);
	return 0;
}
