/* Fuzz target: backends/s3xml.c, the reader of S3's XML answers.
 *
 * The input is one HTTP response body as it comes off the network. It is
 * parsed as a ListObjectsV2 page (twice: once to the end, once with the
 * callback stopping half way, which must surface the callback's value and
 * free everything), as an <Error> body into roomy and into tiny exact-size
 * buffers, and, NUL-terminated, as an S3 timestamp.
 */
#include <errno.h>
#include <stdint.h>
#include <string.h>

#include "fuzz.h"
#include "s3xml.h"

#define STOP_RET 4242

static volatile long long sink; /* keeps results alive */

struct seen {
	size_t calls;
	size_t stop_at; /* 1-based call that returns STOP_RET; 0 = never */
	uint64_t sum;   /* keeps the reads below from being optimised away */
};

static int on_key(void *arg, const char *key, const struct backend_object *obj)
{
	struct seen *s = arg;
	size_t klen = strlen(key);

	s->calls++;
	s->sum += klen + (klen ? (unsigned char)key[klen - 1] : 0);
	if (obj) {
		size_t elen = strnlen(obj->etag, sizeof(obj->etag));
		FUZZ_CHECK(elen < sizeof(obj->etag)); /* NUL-terminated */
		FUZZ_CHECK(obj->key != NULL && strcmp(obj->key, key) == 0);
		s->sum += obj->size + (uint64_t)obj->mtime + elen;
	}
	if (s->stop_at && s->calls == s->stop_at)
		return STOP_RET;
	return 0;
}

static void check_list(const char *xml, size_t len)
{
	struct s3xml_page page;
	struct seen s = {0};
	int err = s3xml_parse_list(xml, len, on_key, &s, &page);

	FUZZ_CHECK(err == 0 || err == -EPROTO || err == -ENOMEM);
	/* a skipped entry is named; only a ListBucketResult reaches the callback */
	FUZZ_CHECK((page.n_skipped == 0) == (page.skip_why == NULL));
	FUZZ_CHECK(strnlen(page.root, sizeof(page.root)) < sizeof(page.root));
	if (s.calls > 0 || err == 0)
		FUZZ_CHECK(strcmp(page.root, "ListBucketResult") == 0);
	if (err) {
		FUZZ_CHECK(page.next_token == NULL);
	} else {
		FUZZ_CHECK(page.n_keys == s.calls);
		if (page.truncated)
			FUZZ_CHECK(page.next_token && page.next_token[0]);
	}
	free(page.next_token);

	if (err || s.calls == 0)
		return;
	/* Again, stopping in the middle: the callback's value comes back. */
	{
		struct seen s2 = {.stop_at = s.calls / 2 + 1};
		err = s3xml_parse_list(xml, len, on_key, &s2, &page);
		FUZZ_CHECK(err == STOP_RET);
		FUZZ_CHECK(s2.calls == s2.stop_at);
		FUZZ_CHECK(page.next_token == NULL);
		free(page.next_token);
	}
}

static void check_error(const char *xml, size_t len, size_t code_len, size_t msg_len)
{
	char *code = malloc(code_len ? code_len : 1);
	char *msg = malloc(msg_len ? msg_len : 1);
	int err;

	if (!code || !msg)
		abort();
	err = s3xml_parse_error(xml, len, code, code_len, msg, msg_len);
	FUZZ_CHECK(err == 0 || err == -EPROTO);
	if (code_len)
		FUZZ_CHECK(strnlen(code, code_len) < code_len);
	if (msg_len)
		FUZZ_CHECK(strnlen(msg, msg_len) < msg_len);
	if (err) {
		FUZZ_CHECK(code_len == 0 || code[0] == '\0');
		FUZZ_CHECK(msg_len == 0 || msg[0] == '\0');
	}
	free(code);
	free(msg);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *xml = fuzz_dup(data, size);
	char *s;

	check_list(xml, size);
	check_error(xml, size, 64, 512); /* what s3.c passes */
	check_error(xml, size, 1, 0);
	check_error(xml, size, 3, 2);
	free(xml);

	s = fuzz_cstr(data, size);
	sink = s3xml_parse_time(s);
	free(s);
	return 0;
}
