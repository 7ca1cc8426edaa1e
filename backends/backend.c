/* The scheme registry and the helpers the backends share. Adding a backend:
 * one file with its const table, one line here, one in CMakeLists.txt. */
#include "backend.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "log.h"
#include "stats.h"

static const struct backend_ops *const registry[] = {
    &backend_s3,
    &backend_oss,
    &backend_file,
    &backend_http,
    &backend_hf,
};

#define N_BACKENDS (sizeof(registry) / sizeof(registry[0]))

/* The schemes: each backend's own, and the ones it also answers to. */
static const struct {
	const char *scheme;
	const struct backend_ops *ops;
} schemes[] = {
    {"s3", &backend_s3},     {"oss", &backend_oss}, {"file", &backend_file},
    {"http", &backend_http}, {"https", &backend_http}, {"hf", &backend_hf},
};

#define N_SCHEMES (sizeof(schemes) / sizeof(schemes[0]))

const struct backend_ops *const *backend_registry(size_t *n)
{
	*n = N_BACKENDS;
	return registry;
}

const char *backend_schemes(void)
{
	static char list[256];

	if (!list[0]) {
		size_t at = 0;
		for (size_t i = 0; i < N_SCHEMES && at < sizeof(list); i++)
			at += (size_t)snprintf(list + at, sizeof(list) - at, "%s%s://", i ? ", " : "",
					       schemes[i].scheme);
	}
	return list;
}

int backend_open(const char *source, const struct backend_config *cfg, struct backend **out,
		 char *msg, size_t msg_len)
{
	const char *sep = strstr(source, "://");

	*out = NULL;
	for (size_t i = 0; sep && i < N_SCHEMES; i++)
		if (strlen(schemes[i].scheme) == (size_t)(sep - source) &&
		    strncmp(schemes[i].scheme, source, (size_t)(sep - source)) == 0) {
			*msg = '\0';
			int err = schemes[i].ops->open(source, cfg, out, msg, msg_len);
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

int backend_check(struct backend *be, const char *prefix, char *msg, size_t msg_len)
{
	uint64_t t0 = STATS_ON ? stats_now_ns() : 0;
	int err;

	stats_cur_op = SB_CHECK;
	err = be->ops->check(be, prefix, msg, msg_len);
	stats_cur_op = SB_OTHER;
	stats_backend_op(SB_CHECK, t0, err, 0);
	return err;
}

int backend_list(struct backend *be, const char *prefix, const char *delimiter,
		 backend_list_cb cb, void *arg)
{
	uint64_t t0 = STATS_ON ? stats_now_ns() : 0;
	int err;

	stats_cur_op = SB_LIST;
	err = be->ops->list(be, prefix, delimiter, cb, arg);
	stats_cur_op = SB_OTHER;
	stats_backend_op(SB_LIST, t0, err, 0);
	return err;
}

int backend_stat(struct backend *be, const char *key, struct backend_object *out)
{
	uint64_t t0 = STATS_ON ? stats_now_ns() : 0;
	int err;

	stats_cur_op = SB_STAT;
	err = be->ops->stat(be, key, out);
	stats_cur_op = SB_OTHER;
	stats_backend_op(SB_STAT, t0, err, 0);
	return err;
}

int backend_read(struct backend *be, const struct backend_ref *obj, uint64_t off, size_t len,
		 void *buf, size_t *got)
{
	uint64_t t0 = STATS_ON ? stats_now_ns() : 0;
	int err;

	stats_cur_op = SB_READ;
	err = be->ops->read(be, obj, off, len, buf, got);
	stats_cur_op = SB_OTHER;
	stats_backend_op(SB_READ, t0, err, err ? 0 : *got);
	return err;
}

/* counts what a stream hands up (a retry starts it over) */
struct counting_sink {
	int (*sink)(void *arg, const char *data, size_t n);
	void (*reset)(void *arg);
	void *arg;
	uint64_t n;
};

static void count_reset(void *arg)
{
	struct counting_sink *cs = arg;

	cs->n = 0;
	if (cs->reset)
		cs->reset(cs->arg);
}

static int count_sink(void *arg, const char *data, size_t n)
{
	struct counting_sink *cs = arg;
	int err = cs->sink(cs->arg, data, n);

	if (!err)
		cs->n += n;
	return err;
}

int backend_read_stream(struct backend *be, const struct backend_ref *obj, uint64_t off,
			uint64_t len, int (*sink)(void *arg, const char *data, size_t n),
			void (*reset)(void *arg), void *arg)
{
	struct counting_sink cs = {sink, reset, arg, 0};
	uint64_t t0 = STATS_ON ? stats_now_ns() : 0;
	int err;

	stats_cur_op = SB_READ;
	err = be->ops->read_stream(be, obj, off, len, count_sink, count_reset, &cs);
	stats_cur_op = SB_OTHER;
	stats_backend_op(SB_READ, t0, err, cs.n);
	return err;
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

int backend_keylist_add(struct backend_keylist *kl, const char *key, uint64_t size,
			int64_t mtime, const char *etag)
{
	struct backend_object *o;

	if (kl->n == kl->cap) {
		size_t cap = kl->cap ? kl->cap * 2 : 1024;
		struct backend_object *nv = realloc(kl->v, cap * sizeof(*nv));
		if (!nv)
			return -ENOMEM;
		kl->v = nv;
		kl->cap = cap;
	}
	o = &kl->v[kl->n];
	memset(o, 0, sizeof(*o));
	o->key = strdup(key);
	if (!o->key)
		return -ENOMEM;
	o->size = size;
	o->mtime = mtime;
	snprintf(o->etag, sizeof(o->etag), "%s", etag ? etag : "");
	kl->n++;
	return 0;
}

static int obj_cmp(const void *a, const void *b)
{
	return strcmp(((const struct backend_object *)a)->key, ((const struct backend_object *)b)->key);
}

int backend_keylist_emit(struct backend_keylist *kl, const char *prefix, const char *delimiter,
			 backend_list_cb cb, void *arg)
{
	size_t plen = strlen(prefix);
	char last_cp[2048] = "";

	qsort(kl->v, kl->n, sizeof(*kl->v), obj_cmp);
	for (size_t i = 0; i < kl->n; i++) {
		const struct backend_object *o = &kl->v[i];
		const char *d;
		int err;

		if (strncmp(o->key, prefix, plen) != 0)
			continue;
		if (i > 0 && strcmp(o->key, kl->v[i - 1].key) == 0)
			continue; /* a listing that names a key twice */
		d = delimiter ? strstr(o->key + plen, delimiter) : NULL;
		if (d) {
			size_t n = (size_t)(d - o->key) + strlen(delimiter);
			if (n >= sizeof(last_cp) || (strlen(last_cp) == n && !strncmp(last_cp, o->key, n)))
				continue;
			memcpy(last_cp, o->key, n);
			last_cp[n] = '\0';
			err = cb(arg, last_cp, NULL);
		} else {
			err = cb(arg, o->key, o);
		}
		if (err)
			return err;
	}
	return 0;
}

void backend_keylist_free(struct backend_keylist *kl)
{
	for (size_t i = 0; i < kl->n; i++)
		free((char *)kl->v[i].key);
	free(kl->v);
	memset(kl, 0, sizeof(*kl));
}

struct backend_token {
	pthread_mutex_t lock;
	char *path;         /* NULL: a fixed value */
	struct stat seen;   /* the file as last read */
	char value[4096];   /* protected by lock */
};

static void trim_copy(char *dst, size_t dst_len, const char *src, size_t n)
{
	while (n && (*src == ' ' || *src == '\t' || *src == '\n' || *src == '\r')) {
		src++;
		n--;
	}
	while (n && (src[n - 1] == ' ' || src[n - 1] == '\t' || src[n - 1] == '\n' ||
		     src[n - 1] == '\r'))
		n--;
	if (n >= dst_len)
		n = 0; /* too long to be a token: refused below as empty */
	memcpy(dst, src, n);
	dst[n] = '\0';
}

/* Read the file into t->value; @return 0 or -errno. */
static int token_read(struct backend_token *t, struct stat *st)
{
	char buf[4096];
	FILE *f = fopen(t->path, "re");
	size_t n;

	if (!f)
		return -errno;
	if (fstat(fileno(f), st) != 0) {
		fclose(f);
		return -EIO;
	}
	n = fread(buf, 1, sizeof(buf), f);
	fclose(f);
	trim_copy(t->value, sizeof(t->value), buf, n);
	/* a header value must not carry a line break or control bytes */
	for (char *c = t->value; *c; c++)
		if ((unsigned char)*c < 0x20)
			return -EINVAL;
	return t->value[0] ? 0 : -ENODATA;
}

int backend_token_open(const char *value, const char *path, struct backend_token **out,
		       char *msg, size_t msg_len)
{
	struct backend_token *t = calloc(1, sizeof(*t));
	int err = 0;

	*out = NULL;
	if (!t)
		return -ENOMEM;
	pthread_mutex_init(&t->lock, NULL);
	if (path) {
		t->path = strdup(path);
		if (!t->path)
			err = -ENOMEM;
		else if ((err = token_read(t, &t->seen)))
			snprintf(msg, msg_len, "token file %s: %s", path,
				 err == -ENODATA ? "empty" : err == -EINVAL ? "not one line of text"
				 : strerror(-err));
	} else {
		trim_copy(t->value, sizeof(t->value), value, strlen(value));
		for (char *c = t->value; *c; c++)
			if ((unsigned char)*c < 0x20)
				err = -EINVAL;
		if (err || !t->value[0]) {
			snprintf(msg, msg_len, "the token is empty or not one line of text");
			err = -EINVAL;
		}
	}
	if (err) {
		backend_token_free(t);
		return err;
	}
	*out = t;
	return 0;
}

int backend_token_header(struct backend_token *t, char *hdr, size_t hdr_len)
{
	struct stat st;
	int err = 0;

	*hdr = '\0';
	if (!t)
		return 0;
	pthread_mutex_lock(&t->lock);
	/* Kubernetes swaps a secret's files by renaming a directory: a new
	 * inode or mtime is a new token */
	if (t->path && stat(t->path, &st) == 0 &&
	    (st.st_ino != t->seen.st_ino || st.st_mtim.tv_sec != t->seen.st_mtim.tv_sec ||
	     st.st_mtim.tv_nsec != t->seen.st_mtim.tv_nsec || st.st_size != t->seen.st_size)) {
		char keep[sizeof(t->value)];
		memcpy(keep, t->value, sizeof(keep));
		err = token_read(t, &st);
		if (err) {
			memcpy(t->value, keep, sizeof(keep));
			log_once(LOG_LVL_WARN, "token file %s cannot be read again (%s): using the "
				 "token read before", t->path, strerror(-err));
			err = 0;
		} else {
			t->seen = st;
			log_info("token file %s changed: using the new token", t->path);
		}
	}
	if ((size_t)snprintf(hdr, hdr_len, "Authorization: Bearer %s", t->value) >= hdr_len)
		err = -ENOMEM;
	pthread_mutex_unlock(&t->lock);
	return err;
}

void backend_token_free(struct backend_token *t)
{
	if (!t)
		return;
	pthread_mutex_destroy(&t->lock);
	free(t->path);
	free(t);
}
