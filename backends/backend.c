/* The scheme registry and the helpers the backends share. Adding a backend:
 * one file with its const table, one line here, one in CMakeLists.txt. */
#include "backend.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const struct backend_ops *const registry[] = {
    &backend_s3,
    &backend_oss,
    &backend_file,
};

#define N_BACKENDS (sizeof(registry) / sizeof(registry[0]))

const struct backend_ops *const *backend_list(size_t *n)
{
	*n = N_BACKENDS;
	return registry;
}

const char *backend_schemes(void)
{
	static char list[256];

	if (!list[0]) {
		size_t at = 0;
		for (size_t i = 0; i < N_BACKENDS && at < sizeof(list); i++)
			at += (size_t)snprintf(list + at, sizeof(list) - at, "%s%s://", i ? ", " : "",
					       registry[i]->scheme);
	}
	return list;
}

int backend_open(const char *source, const struct backend_config *cfg, struct backend **out,
		 char *msg, size_t msg_len)
{
	const char *sep = strstr(source, "://");

	*out = NULL;
	for (size_t i = 0; sep && i < N_BACKENDS; i++)
		if (strlen(registry[i]->scheme) == (size_t)(sep - source) &&
		    strncmp(registry[i]->scheme, source, (size_t)(sep - source)) == 0) {
			*msg = '\0';
			int err = registry[i]->open(source, cfg, out, msg, msg_len);
			if (err && !*msg)
				snprintf(msg, msg_len, "%s: %s", source, strerror(-err));
			return err;
		}
	{
		size_t at = (size_t)snprintf(msg, msg_len, "unsupported source '%s': expected ",
					     source);
		for (size_t i = 0; i < N_BACKENDS && at < msg_len; i++)
			at += (size_t)snprintf(msg + at, msg_len - at, "%s%s", i ? ", " : "",
					       registry[i]->syntax);
	}
	return -EPROTONOSUPPORT;
}

int backend_split_path(const char *rest, char **first, char **prefix)
{
	const char *slash = strchr(rest, '/'), *p;
	size_t plen;

	*first = *prefix = NULL;
	if (!slash)
		slash = rest + strlen(rest);
	if (slash == rest || slash - rest > 255)
		return -EINVAL;
	/* prefix: drop leading/trailing '/', reject empty, "." and ".." segments */
	p = *slash ? slash + 1 : slash;
	plen = strlen(p);
	while (plen > 0 && p[plen - 1] == '/')
		plen--;
	*first = strndup(rest, (size_t)(slash - rest));
	*prefix = malloc(plen + 2);
	if (!*first || !*prefix)
		goto nomem;
	memcpy(*prefix, p, plen);
	if (plen)
		(*prefix)[plen++] = '/';
	(*prefix)[plen] = '\0';
	for (const char *seg = *prefix; *seg;) {
		const char *e = strchr(seg, '/');
		size_t n = (size_t)(e - seg);
		if (n == 0 || (n == 1 && seg[0] == '.') || (n == 2 && seg[0] == '.' && seg[1] == '.')) {
			free(*first);
			free(*prefix);
			*first = *prefix = NULL;
			return -EINVAL;
		}
		seg = e + 1;
	}
	return 0;
nomem:
	free(*first);
	free(*prefix);
	*first = *prefix = NULL;
	return -ENOMEM;
}

int backend_base_init(struct backend *be, const struct backend_ops *ops, const char *prefix)
{
	be->ops = ops;
	be->prefix = strdup(prefix);
	return be->prefix ? 0 : -ENOMEM;
}

static int set_fmt(char **dst, const char *fmt, va_list ap)
{
	char *s;

	if (vasprintf(&s, fmt, ap) < 0)
		return -ENOMEM;
	free(*dst);
	*dst = s;
	return 0;
}

int backend_base_name(struct backend *be, const char *fmt, ...)
{
	va_list ap;
	int err;

	va_start(ap, fmt);
	err = set_fmt(&be->name, fmt, ap);
	va_end(ap);
	return err;
}

int backend_base_what(struct backend *be, const char *fmt, ...)
{
	va_list ap;
	int err;

	va_start(ap, fmt);
	err = set_fmt(&be->what, fmt, ap);
	va_end(ap);
	return err;
}

void backend_base_free(struct backend *be)
{
	free(be->prefix);
	free(be->name);
	free(be->what);
	be->prefix = be->name = be->what = NULL;
}

const char *backend_getenv(const char *name)
{
	const char *v = getenv(name);

	return v && *v ? v : NULL;
}

int backend_opt_is(const char *opt, const char *name, const char **val)
{
	size_t n = strlen(name);

	if (n && name[n - 1] == '=') {
		if (strncmp(opt, name, n) != 0)
			return 0;
		*val = opt + n;
		return 1;
	}
	if (strcmp(opt, name) != 0)
		return 0;
	*val = "";
	return 1;
}
