/* The scheme registry and SOURCE URL parsing shared by all backends. */
#include "backend.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

static const struct backend_ops *const registry[] = {
    &backend_s3,
};

const char *backend_schemes(void) { return "s3://"; }

void backend_source_free(struct backend_source *src)
{
	free(src->bucket);
	free(src->prefix);
	src->bucket = src->prefix = NULL;
}

int backend_source_parse(const char *url, struct backend_source *src)
{
	const char *sep = strstr(url, "://"), *b, *slash, *p;
	size_t plen;

	memset(src, 0, sizeof(*src));
	if (!sep)
		return -EINVAL;
	for (size_t i = 0; i < sizeof(registry) / sizeof(registry[0]); i++)
		if (strlen(registry[i]->scheme) == (size_t)(sep - url) &&
		    strncmp(registry[i]->scheme, url, (size_t)(sep - url)) == 0)
			src->ops = registry[i];
	if (!src->ops)
		return -EPROTONOSUPPORT;
	b = sep + 3;
	slash = strchr(b, '/');
	if (!slash)
		slash = b + strlen(b);
	if (slash == b || slash - b > 255)
		return -EINVAL;
	src->bucket = strndup(b, (size_t)(slash - b));
	if (!src->bucket)
		return -ENOMEM;
	/* prefix: drop leading/trailing '/', reject empty, "." and ".." segments */
	p = *slash ? slash + 1 : slash;
	plen = strlen(p);
	while (plen > 0 && p[plen - 1] == '/')
		plen--;
	src->prefix = malloc(plen + 2);
	if (!src->prefix) {
		backend_source_free(src);
		return -ENOMEM;
	}
	memcpy(src->prefix, p, plen);
	if (plen)
		src->prefix[plen++] = '/';
	src->prefix[plen] = '\0';
	for (const char *seg = src->prefix; *seg;) {
		const char *e = strchr(seg, '/');
		size_t n = (size_t)(e - seg);
		if (n == 0 || (n == 1 && seg[0] == '.') || (n == 2 && seg[0] == '.' && seg[1] == '.')) {
			backend_source_free(src);
			return -EINVAL;
		}
		seg = e + 1;
	}
	return 0;
}
