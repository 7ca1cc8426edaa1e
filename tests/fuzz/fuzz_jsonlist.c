/* Fuzz target: backends/jsonlist.c, the JSON listings of http(s):// and
 * hf:// (a modelfs manifest, nginx's JSON autoindex, the Hub's tree and
 * revision answers), and http.c's Link header parser.
 *
 * The first byte chooses the parser ('m', 'a', 't', 'r', 'l'; anything
 * else: all of them); the rest is the answer's body. What jsonlist.h
 * promises is checked on every entry handed out: a path a listing may hold
 * (relative, no "." or ".." segments, no control bytes, at most
 * JSONLIST_PATH_MAX), a size within BACKEND_SIZE_MAX, an autoindex name of
 * one segment, Hub ids of 40 or 64 hex digits; and that a failure is one of
 * the errnos the header names with a line in the message.
 */
#include <errno.h>
#include <stdint.h>
#include <string.h>

#include "backend.h"
#include "fuzz.h"
#include "http.h"
#include "jsonlist.h"
#include "log.h"

static int hexlen_ok(const char *s)
{
	size_t n = strlen(s);

	if (n != 40 && n != 64)
		return 0;
	for (size_t i = 0; i < n; i++)
		if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
			return 0;
	return 1;
}

struct ctx {
	char kind;
	size_t n;
};

static int on_entry(void *arg, const struct jsonlist_entry *e)
{
	struct ctx *c = arg;

	FUZZ_CHECK(e->path && e->etag && e->sha256);
	FUZZ_CHECK(e->size <= BACKEND_SIZE_MAX);
	FUZZ_CHECK(strlen(e->path) <= JSONLIST_PATH_MAX);
	for (const char *p = e->path; *p; p++)
		FUZZ_CHECK((unsigned char)*p >= 0x20 && *p != 0x7f);
	FUZZ_CHECK(jsonlist_path_ok(e->path, c->kind == 'm'));
	if (c->kind == 'a')
		FUZZ_CHECK(!strchr(e->path, '/'));
	if (c->kind == 'm' && e->path[strlen(e->path) - 1] == '/')
		FUZZ_CHECK(e->is_dir);
	if (c->kind == 't' && !e->is_dir)
		FUZZ_CHECK(hexlen_ok(e->etag));
	if (c->kind == 'm')
		FUZZ_CHECK(strlen(e->etag) < BACKEND_ETAG_MAX && (!*e->sha256 || strlen(e->sha256) == 64));
	c->n++;
	return c->n > 100000 ? -EFBIG : 0;
}

static void run(char kind, const char *buf, size_t len)
{
	char msg[256] = "";
	struct ctx c = {kind, 0};
	int err = 0;

	switch (kind) {
	case 'm':
		err = jsonlist_manifest(buf, len, on_entry, &c, msg, sizeof(msg));
		break;
	case 'a':
		err = jsonlist_autoindex(buf, len, on_entry, &c, msg, sizeof(msg));
		break;
	case 't':
		err = jsonlist_hub_tree(buf, len, on_entry, &c, msg, sizeof(msg));
		break;
	case 'r': {
		char sha[41];
		int64_t mtime;
		err = jsonlist_hub_revision(buf, len, sha, &mtime, msg, sizeof(msg));
		if (!err)
			FUZZ_CHECK(hexlen_ok(sha) && strlen(sha) == 40);
		break;
	}
	case 'l': {
		char *s = fuzz_cstr((const uint8_t *)buf, len), out[512];
		int r = http_link_next(s, out, sizeof(out));
		FUZZ_CHECK(r == 0 || r == -ENOENT || r == -ENAMETOOLONG);
		if (r == 0)
			FUZZ_CHECK(out[0] && strlen(out) < sizeof(out) && !strchr(out, '>') && strstr(s, out));
		free(s);
		return;
	}
	}
	FUZZ_CHECK(err == 0 || err == -EPROTO || err == -EFBIG || err == -ENOMEM);
	if (err == -EPROTO)
		FUZZ_CHECK(msg[0]);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	log_setup(0, LOG_LVL_ERROR);
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *body;

	if (size == 0)
		return 0;
	/* exactly the body's bytes on the heap: ASan sees a read past the end */
	body = malloc(size - 1 ? size - 1 : 1);
	if (!body)
		abort();
	memcpy(body, data + 1, size - 1);
	if (strchr("matrl", data[0]) && data[0]) {
		run((char)data[0], body, size - 1);
	} else {
		for (const char *k = "matrl"; *k; k++)
			run(*k, body, size - 1);
	}
	free(body);
	return 0;
}
