/* Option parsing with fuse_opt: every option of ours is matched as a string
 * and validated here, so a bad value gets a sentence naming the option rather
 * than libfuse's generic complaint. */
#include "opts.h"
#include "backend.h"
#include "cache.h"

#include <errno.h>
#include <float.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

enum {
	KEY_HELP,
	KEY_VERSION,
	KEY_FOREGROUND,
	KEY_DEBUG,
	KEY_INSECURE,
	KEY_BACKEND,
	KEY_STAT_CACHE,
	KEY_FOREIGN,
	KEY_RO,
	KEY_RW,
	KEY_NO_CACHE,
	KEY_NO_ETAG,
	KEY_NO_PASSTHROUGH,
	KEY_METRICS_PER_MODEL,
	KEY_NONEMPTY,
};

/* Raw string values as matched; validated after fuse_opt_parse. */
struct raw {
	struct fs_opts *o;
	char *uid, *gid, *umask, *attr_timeout, *entry_timeout, *retries;
	char *connect_timeout, *request_timeout;
	char *cache_size, *cache_high, *cache_low, *chunk_size, *metadata_ttl, *list_ttl;
	char *term_grace, *listing;
	char *log_level, *log_format, *metrics_port;
	char *bad; /* first problem seen in the callback */
	int n_pos;
};

#define OPT(t, f) {t, offsetof(struct raw, f), 0}
#define OOPT(t, f) {t, offsetof(struct fs_opts, f), 0}

static const struct fuse_opt raw_spec[] = {
    OPT("uid=%s", uid),
    OPT("gid=%s", gid),
    OPT("umask=%s", umask),
    OPT("attr_timeout=%s", attr_timeout),
    OPT("entry_timeout=%s", entry_timeout),
    OPT("retries=%s", retries),
    OPT("connect_timeout=%s", connect_timeout),
    OPT("request_timeout=%s", request_timeout),
    OPT("cache_size=%s", cache_size),
    OPT("cache_high=%s", cache_high),
    OPT("cache_low=%s", cache_low),
    OPT("chunk_size=%s", chunk_size),
    OPT("metadata_ttl=%s", metadata_ttl),
    OPT("list_ttl=%s", list_ttl),
    OPT("term_grace=%s", term_grace),
    OPT("listing=%s", listing),
    OPT("stat_cache_expire=%s", metadata_ttl), /* ossfs's and s3fs's spelling */
    OPT("log_level=%s", log_level),
    OPT("log_format=%s", log_format),
    OPT("metrics_port=%s", metrics_port),
    FUSE_OPT_END,
};

static const struct fuse_opt str_spec[] = {
    OOPT("ca_file=%s", ca_file),
    OOPT("cache_dir=%s", cache_dir),
    OOPT("prefetch=%s", prefetch),
    OOPT("ready_file=%s", ready_file),
    OOPT("log_file=%s", log_file),
    OOPT("metrics_addr=%s", metrics_addr),
    OOPT("metrics_dir=%s", metrics_dir),
    FUSE_OPT_END,
};

static const struct fuse_opt key_spec[] = {
    FUSE_OPT_KEY("-h", KEY_HELP),
    FUSE_OPT_KEY("--help", KEY_HELP),
    FUSE_OPT_KEY("-V", KEY_VERSION),
    FUSE_OPT_KEY("--version", KEY_VERSION),
    FUSE_OPT_KEY("-f", KEY_FOREGROUND),
    FUSE_OPT_KEY("--foreground", KEY_FOREGROUND),
    FUSE_OPT_KEY("-d", KEY_DEBUG),
    FUSE_OPT_KEY("debug", KEY_DEBUG),
    FUSE_OPT_KEY("insecure_tls", KEY_INSECURE),
    FUSE_OPT_KEY("no_cache", KEY_NO_CACHE),
    FUSE_OPT_KEY("no_etag_match", KEY_NO_ETAG),
    FUSE_OPT_KEY("no_passthrough", KEY_NO_PASSTHROUGH),
    FUSE_OPT_KEY("metrics_per_model", KEY_METRICS_PER_MODEL),
    FUSE_OPT_KEY("nonempty", KEY_NONEMPTY),
    /* what users of ossfs, s3fs and JindoFuse paste: kept where it means
     * something here, else one line naming ours */
    FUSE_OPT_KEY("kernel_cache", FUSE_OPT_KEY_DISCARD), /* always: the page cache is kept */
    FUSE_OPT_KEY("max_stat_cache_size=", KEY_STAT_CACHE),
    FUSE_OPT_KEY("use_cache=", KEY_FOREIGN),
    FUSE_OPT_KEY("ensure_diskfree=", KEY_FOREIGN),
    FUSE_OPT_KEY("dbglevel=", KEY_FOREIGN),
    FUSE_OPT_KEY("readwrite_timeout=", KEY_FOREIGN),
    FUSE_OPT_KEY("parallel_count=", KEY_FOREIGN),
    FUSE_OPT_KEY("multipart_size=", KEY_FOREIGN),
    FUSE_OPT_KEY("enable_noobj_cache", KEY_FOREIGN),
    FUSE_OPT_KEY("ro", KEY_RO),
    FUSE_OPT_KEY("rw", KEY_RW),
    /* mount(8) and fstab noise that libfuse would reject */
    FUSE_OPT_KEY("_netdev", FUSE_OPT_KEY_DISCARD),
    FUSE_OPT_KEY("nofail", FUSE_OPT_KEY_DISCARD),
    FUSE_OPT_KEY("auto", FUSE_OPT_KEY_DISCARD),
    FUSE_OPT_KEY("noauto", FUSE_OPT_KEY_DISCARD),
    FUSE_OPT_KEY("user", FUSE_OPT_KEY_DISCARD),
    FUSE_OPT_KEY("users", FUSE_OPT_KEY_DISCARD),
    FUSE_OPT_KEY("defaults", FUSE_OPT_KEY_DISCARD),
    FUSE_OPT_END,
};

static void set_bad(struct raw *r, const char *fmt, ...)
{
	va_list ap;

	if (r->bad)
		return;
	va_start(ap, fmt);
	if (vasprintf(&r->bad, fmt, ap) < 0)
		r->bad = NULL;
	va_end(ap);
}

/* A backend's option: kept, in order, for the SOURCE's backend to parse
 * (it refuses another backend's), unless some backend refuses it outright. */
static int backend_opt(struct raw *r, const char *arg)
{
	size_t n;
	const struct backend_ops *const *bes = backend_registry(&n);
	struct fs_opts *o = r->o;
	char **grown;
	const char *v;

	for (size_t i = 0; i < n; i++)
		for (const struct backend_option *bo = bes[i]->options; bo && bo->name; bo++)
			if (bo->refuse && backend_opt_is(arg, bo->name, &v)) {
				set_bad(r, "%s", bo->refuse);
				return 0;
			}
	grown = realloc(o->backend_opts, (o->n_backend_opts + 1) * sizeof(*grown));
	if (!grown || !(grown[o->n_backend_opts] = strdup(arg))) {
		if (grown)
			o->backend_opts = grown;
		set_bad(r, "out of memory");
		return 0;
	}
	o->backend_opts = grown;
	o->n_backend_opts++;
	return 0;
}

/* Every registered backend's options as fuse_opt keys (KEY_BACKEND). */
static struct fuse_opt *backend_spec(void)
{
	size_t n, k = 0, total = 0;
	const struct backend_ops *const *bes = backend_registry(&n);
	struct fuse_opt *spec;

	for (size_t i = 0; i < n; i++)
		for (const struct backend_option *bo = bes[i]->options; bo && bo->name; bo++)
			total++;
	spec = calloc(total + 1, sizeof(*spec));
	if (!spec)
		return NULL;
	for (size_t i = 0; i < n; i++)
		for (const struct backend_option *bo = bes[i]->options; bo && bo->name; bo++) {
			size_t j = 0;
			/* once each: fuse_opt calls back for every template that
			 * matches, and backends share names (endpoint=, region=) */
			while (j < k && strcmp(spec[j].templ, bo->name) != 0)
				j++;
			if (j == k)
				spec[k++] = (struct fuse_opt)FUSE_OPT_KEY(bo->name, KEY_BACKEND);
		}
	return spec; /* calloc ended it with a NULL template */
}

/* One line for an option of another tool that modelfs spells otherwise. */
static const char *foreign_hint(const char *arg)
{
	static const struct {
		const char *name, *line;
	} hints[] = {
	    {"use_cache", "option 'use_cache' is ossfs's/s3fs's: here it is cache_dir=DIR"},
	    {"ensure_diskfree", "option 'ensure_diskfree' is ossfs's/s3fs's: here the cache's "
				"share of its disk is cache_size=SIZE or PERCENT%, with cache_high/"
				"cache_low"},
	    {"dbglevel", "option 'dbglevel' is ossfs's/s3fs's: here it is log_level=LEVEL"},
	    {"readwrite_timeout", "option 'readwrite_timeout' is ossfs's/s3fs's: here it is "
				  "request_timeout=SEC"},
	    {"parallel_count", "option 'parallel_count' is ossfs's/s3fs's: modelfs sizes its "
			       "parallel GETs to the machine (docs/design.md, Sizing); drop it"},
	    {"multipart_size", "option 'multipart_size' is ossfs's/s3fs's: reads here are ranged "
			       "GETs of chunk_size=SIZE; drop it or set chunk_size"},
	    {"enable_noobj_cache", "option 'enable_noobj_cache' is ossfs's/s3fs's: modelfs "
				   "answers missing names from its listing; drop it"},
	};
	for (size_t i = 0; i < sizeof(hints) / sizeof(hints[0]); i++)
		if (strncmp(arg, hints[i].name, strlen(hints[i].name)) == 0)
			return hints[i].line;
	return "an option of another tool that modelfs does not take";
}

/* The pass over backend options: everything else stays for the next pass. */
static int on_backend_key(void *data, const char *arg, int key, struct fuse_args *outargs)
{
	(void)outargs;
	return key == KEY_BACKEND ? backend_opt(data, arg) : 1;
}

static int on_key(void *data, const char *arg, int key, struct fuse_args *outargs)
{
	struct raw *r = data;
	struct fs_opts *o = r->o;

	(void)outargs;
	switch (key) {
	case KEY_HELP:
		o->show_help = 1;
		return 0;
	case KEY_VERSION:
		o->show_version = 1;
		return 0;
	case KEY_FOREGROUND:
		o->foreground = 1;
		return 0;
	case KEY_DEBUG:
		o->debug = 1;
		o->foreground = 1;
		return 0;
	case KEY_INSECURE:
		o->insecure_tls = 1;
		return 0;
	case KEY_NO_CACHE:
		o->no_cache = 1;
		return 0;
	case KEY_NO_ETAG:
		o->no_etag_match = 1;
		return 0;
	case KEY_NO_PASSTHROUGH:
		o->no_passthrough = 1;
		return 0;
	case KEY_METRICS_PER_MODEL:
		o->metrics_per_model = 1;
		return 0;
	case KEY_NONEMPTY:
		o->nonempty = 1;
		return 0;
	case KEY_STAT_CACHE:
		/* ossfs: 0 turns its stat cache off, our metadata_ttl=0; any
		 * other size means nothing here (the listing is in memory) */
		if (strcmp(arg, "max_stat_cache_size=0") == 0)
			o->metadata_ttl_s = 0;
		return 0;
	case KEY_FOREIGN:
		set_bad(r, "%s", foreign_hint(arg));
		return 0;
	case KEY_RO:
		return 0; /* always read-only; added once below */
	case KEY_RW:
		/* mount(8) puts "rw" in front of every helper's options unless
		 * the user wrote "ro": refusing it would break mount -t and
		 * fstab. The mount is read-only whatever is asked (said once). */
		o->rw_asked = 1;
		return 0;
	case FUSE_OPT_KEY_NONOPT:
		if (r->n_pos == 0) {
			o->source = strdup(arg);
		} else if (r->n_pos == 1) {
			o->mountpoint = strdup(arg);
		} else {
			set_bad(r, "unexpected argument '%s' (usage: modelfs SOURCE MOUNTPOINT "
				   "[-o opts])", arg);
		}
		r->n_pos++;
		return 0;
	default:
		return 1; /* for libfuse */
	}
}

static int parse_num(const char *name, const char *s, double min, double max, double *out,
		     struct raw *r)
{
	char *e;
	double v;

	errno = 0;
	v = strtod(s, &e);
	if (!*s || *e || errno || !(v >= min && v <= max)) {
		set_bad(r, "bad value for option %s: '%s' (expected a number from %g to %g)", name,
			s, min, max);
		return -EINVAL;
	}
	*out = v;
	return 0;
}

static int parse_int(const char *name, const char *s, long max, long *out, struct raw *r)
{
	char *e;
	long v;

	errno = 0;
	v = strtol(s, &e, 10);
	if (!*s || *e || errno || v < 0 || v > max) {
		set_bad(r, "bad value for option %s: '%s' (expected a whole number from 0 to %ld)",
			name, s, max);
		return -EINVAL;
	}
	*out = v;
	return 0;
}

/* Escape ',' and '\' for a -o value. */
static char *escape_opt(const char *s)
{
	char *out = malloc(strlen(s) * 2 + 1), *p = out;

	if (!out)
		return NULL;
	for (; *s; s++) {
		if (*s == ',' || *s == '\\')
			*p++ = '\\';
		*p++ = *s;
	}
	*p = '\0';
	return out;
}

static void free_raw(struct raw *r)
{
	free(r->uid);
	free(r->gid);
	free(r->umask);
	free(r->attr_timeout);
	free(r->entry_timeout);
	free(r->retries);
	free(r->connect_timeout);
	free(r->request_timeout);
	free(r->cache_size);
	free(r->cache_high);
	free(r->cache_low);
	free(r->chunk_size);
	free(r->metadata_ttl);
	free(r->list_ttl);
	free(r->term_grace);
	free(r->listing);
	free(r->log_level);
	free(r->log_format);
	free(r->metrics_port);
	free(r->bad);
}

int opts_parse(int argc, char **argv, struct fs_opts *o, struct fuse_args *fargs, char *err,
	       size_t err_len)
{
	struct fuse_args args = FUSE_ARGS_INIT(argc, argv);
	struct raw r = {.o = o};
	struct fuse_opt *bspec = backend_spec();
	char *fsname = NULL, *esc = NULL;
	double d;
	long l;
	int ret = -EINVAL;

	memset(o, 0, sizeof(*o));
	o->uid = getuid();
	o->gid = getgid();
	o->attr_timeout_s = 300;
	o->entry_timeout_s = 300;
	o->retries = 3;
	o->connect_timeout_ms = 5000;
	o->request_timeout_ms = 30000;
	o->cache_high = 0.95;
	o->cache_low = 0.70;
	o->metadata_ttl_s = 60;
	o->list_ttl_s = 60;
	o->term_grace_s = 25;
	o->log_level = 2; /* info */

	if (!bspec) {
		snprintf(err, err_len, "out of memory");
		goto out;
	}
	if (fuse_opt_parse(&args, o, str_spec, NULL) == -1 ||
	    fuse_opt_parse(&args, &r, bspec, on_backend_key) == -1 ||
	    fuse_opt_parse(&args, &r, raw_spec, NULL) == -1 ||
	    fuse_opt_parse(&args, &r, key_spec, on_key) == -1) {
		snprintf(err, err_len, "cannot parse the command line");
		goto out;
	}
	if (r.bad) {
		snprintf(err, err_len, "%s", r.bad);
		goto out;
	}
	if (o->show_help || o->show_version) {
		ret = 0;
		goto out;
	}
	if (!o->source || !o->mountpoint) {
		snprintf(err, err_len, "usage: modelfs SOURCE MOUNTPOINT [-o opt[,opt...]] [-f] [-d]"
				       " (modelfs --help for options)");
		goto out;
	}
	if (r.uid && parse_int("uid", r.uid, UINT_MAX - 1, &l, &r) == 0)
		o->uid = (uid_t)l;
	if (r.gid && parse_int("gid", r.gid, UINT_MAX - 1, &l, &r) == 0)
		o->gid = (gid_t)l;
	if (r.umask) {
		char *e;
		errno = 0;
		l = strtol(r.umask, &e, 8);
		if (!*r.umask || *e || errno || l < 0 || l > 0777)
			set_bad(&r, "bad value for option umask: '%s' (expected octal, e.g. 022)",
				r.umask);
		else
			o->umask = (mode_t)l;
	}
	if (r.attr_timeout && parse_num("attr_timeout", r.attr_timeout, 0, 1e9, &d, &r) == 0)
		o->attr_timeout_s = d;
	if (r.entry_timeout && parse_num("entry_timeout", r.entry_timeout, 0, 1e9, &d, &r) == 0)
		o->entry_timeout_s = d;
	if (r.retries && parse_int("retries", r.retries, 20, &l, &r) == 0)
		o->retries = (int)l;
	if (r.connect_timeout &&
	    parse_num("connect_timeout", r.connect_timeout, 0.1, 600, &d, &r) == 0)
		o->connect_timeout_ms = (unsigned)(d * 1000);
	if (r.request_timeout &&
	    parse_num("request_timeout", r.request_timeout, 0.1, 3600, &d, &r) == 0)
		o->request_timeout_ms = (unsigned)(d * 1000);
	if (r.cache_size && cache_parse_size(r.cache_size, &o->cache_size_bytes,
					     &o->cache_size_pct) < 0)
		set_bad(&r, "bad value for option cache_size: '%s' (expected a size like 100G, "
			    "512M, 1.5T, or a percentage like 80%%)", r.cache_size);
	if (r.cache_high && parse_num("cache_high", r.cache_high, 0.01, 1, &d, &r) == 0)
		o->cache_high = d;
	if (r.cache_low && parse_num("cache_low", r.cache_low, 0, 1, &d, &r) == 0)
		o->cache_low = d;
	if (!r.bad && o->cache_low >= o->cache_high)
		set_bad(&r, "cache_low (%g) must be below cache_high (%g)", o->cache_low,
			o->cache_high);
	if (r.chunk_size) {
		uint64_t b;
		double pct;
		if (cache_parse_size(r.chunk_size, &b, &pct) < 0 || pct > 0 || b < (64u << 10) ||
		    b > (64u << 20) || (b & (b - 1)))
			set_bad(&r, "bad value for option chunk_size: '%s' (a power of two from 64K "
				    "to 64M)", r.chunk_size);
		else
			o->chunk_size = (uint32_t)b;
	}
	if (r.metadata_ttl && parse_num("metadata_ttl", r.metadata_ttl, 0, 1e9, &d, &r) == 0)
		o->metadata_ttl_s = d;
	if (r.list_ttl && parse_num("list_ttl", r.list_ttl, 0, 86400 * 365, &d, &r) == 0) {
		if (d != (unsigned)d)
			set_bad(&r, "bad value for option list_ttl: '%s' (whole seconds)", r.list_ttl);
		o->list_ttl_s = (unsigned)d;
	}
	if (r.listing) {
		if (strcmp(r.listing, "auto") == 0)
			o->listing = 0;
		else if (strcmp(r.listing, "full") == 0)
			o->listing = 1;
		else if (strcmp(r.listing, "lazy") == 0)
			o->listing = 2;
		else
			set_bad(&r, "bad value for option listing: '%s' (auto, full or lazy)",
				r.listing);
	}
	if (r.term_grace && parse_num("term_grace", r.term_grace, 0, 86400, &d, &r) == 0) {
		if (d != (unsigned)d)
			set_bad(&r, "bad value for option term_grace: '%s' (whole seconds)",
				r.term_grace);
		o->term_grace_s = (unsigned)d;
	}
	if (r.log_level) {
		static const char *const levels[] = {"error", "warning", "info", "debug"};
		int found = -1;
		for (int i = 0; i < 4; i++)
			if (strcmp(r.log_level, levels[i]) == 0 ||
			    (i == 1 && strcmp(r.log_level, "warn") == 0))
				found = i;
		if (found < 0)
			set_bad(&r, "bad value for option log_level: '%s' (error, warning, info or "
				    "debug)", r.log_level);
		else
			o->log_level = found;
	}
	if (r.metrics_port && parse_num("metrics_port", r.metrics_port, 1, 65535, &d, &r) == 0) {
		if (d != (int)d)
			set_bad(&r, "bad value for option metrics_port: '%s' (a port number)",
				r.metrics_port);
		o->metrics_port = (int)d;
	}
	if (o->metrics_addr && !o->metrics_port)
		set_bad(&r, "metrics_addr= needs metrics_port=PORT");
	if (r.log_format) {
		if (strcmp(r.log_format, "json") == 0)
			o->log_json = 1;
		else if (strcmp(r.log_format, "text") != 0)
			set_bad(&r, "bad value for option log_format: '%s' (text or json)",
				r.log_format);
	}
	if (o->debug)
		o->log_level = 3;
	if (r.bad) {
		snprintf(err, err_len, "%s", r.bad);
		goto out;
	}

	esc = escape_opt(o->source);
	if (!esc || asprintf(&fsname, "-ofsname=%s,subtype=modelfs,ro,default_permissions", esc) < 0) {
		fsname = NULL;
		snprintf(err, err_len, "out of memory");
		goto out;
	}
	if (fuse_opt_add_arg(&args, fsname) == -1) {
		snprintf(err, err_len, "out of memory");
		goto out;
	}
	*fargs = args;
	args.argv = NULL;
	args.argc = 0;
	ret = 0;
out:
	fuse_opt_free_args(&args);
	free(bspec);
	free(fsname);
	free(esc);
	free_raw(&r);
	return ret;
}

void opts_free(struct fs_opts *o)
{
	free(o->source);
	free(o->mountpoint);
	for (size_t i = 0; i < o->n_backend_opts; i++)
		free(o->backend_opts[i]);
	free(o->backend_opts);
	free(o->ca_file);
	free(o->cache_dir);
	free(o->prefetch);
	free(o->ready_file);
	free(o->log_file);
	free(o->metrics_addr);
	free(o->metrics_dir);
	memset(o, 0, sizeof(*o));
}

void opts_usage(const char *prog)
{
	size_t n;
	const struct backend_ops *const *bes = backend_registry(&n);

	printf("usage: %s SOURCE MOUNTPOINT [-o opt[,opt...]] [-f] [-d]\n"
	       "\n"
	       "Mount a model store read-only. SOURCE:", prog);
	for (size_t i = 0; i < n; i++)
		printf("%s %s", i ? "," : "", bes[i]->syntax);
	printf("\n"
	       "\n"
	       "  -f, --foreground       stay in the foreground (log to stderr)\n"
	       "  -d                     debug logging (implies -f)\n"
	       "  -h, --help             this text\n"
	       "  -V, --version          print the version\n"
	       "\n"
	       "Options (-o), for every source:\n"
	       "  ca_file=PATH           CA bundle for TLS verification\n"
	       "  insecure_tls           do not verify TLS certificates (logged as a warning)\n"
	       "  uid=N, gid=N           owner of every file (default: the mounting user)\n"
	       "  umask=OCTAL            cleared from modes 0444 (files) and 0555 (dirs) (default 0)\n"
	       "  attr_timeout=SEC       kernel attribute cache time (default 300)\n"
	       "  entry_timeout=SEC      kernel name cache time (default 300)\n"
	       "  retries=N              extra attempts of a failed request (default 3)\n"
	       "  connect_timeout=SEC    TCP/TLS connect timeout (default 5)\n"
	       "  request_timeout=SEC    one request, start to end (default 30)\n"
	       "  cache_dir=DIR          local chunk cache (default /var/cache/modelfs)\n"
	       "  cache_size=SIZE        cache quota: 100G, 512M, ... or 80%% of its filesystem (default 50%%)\n"
	       "  cache_high=R           start evicting above R x quota (default 0.95)\n"
	       "  cache_low=R            evict down to R x quota (default 0.70)\n"
	       "  chunk_size=SIZE        cache chunk, a power of two 64K..64M (default 4M; set at creation)\n"
	       "  no_cache               no disk cache: every read goes to the backend\n"
	       "  metadata_ttl=SEC       re-check an object's ETag on open after SEC (default 60)\n"
	       "  list_ttl=SEC           re-list the source every SEC: new, changed and deleted\n"
	       "                         keys show (default 60; 0: only on `modelfs refresh`)\n"
	       "  listing=auto|full|lazy full: the whole source at mount, one snapshot; lazy: a\n"
	       "                         directory when first looked in (auto: lazy for an s3/oss\n"
	       "                         bucket's root, else full)\n"
	       "  term_grace=SEC         on SIGTERM, take the mount off its path (no new opens)\n"
	       "                         and serve the files open for up to SEC (default 25; 0: none)\n"
	       "  prefetch=GLOB[:GLOB]   warm matching files into the cache right after mounting\n"
	       "                         (fnmatch on the path below the mount; '*' spans '/')\n"
	       "  ready_file=PATH        created when the prefetch is done (readiness probes)\n"
	       "  no_etag_match          reads neither send If-Match nor compare ETags: for endpoints\n"
	       "                         whose GETs come from another server (a CDN or cache in front)\n"
	       "  no_passthrough         read fully cached files through the daemon, checking every\n"
	       "                         block's CRC, not through the kernel's FUSE passthrough\n"
	       "  log_file=PATH          in the background, log here (default: syslog, else the\n"
	       "                         stderr it was started with, when there is no /dev/log)\n"
	       "  log_level=LEVEL        error, warning, info or debug (default info)\n"
	       "  log_format=text|json   json: one object a line (time, level, message, mount)\n"
	       "  metrics_port=PORT      serve /metrics (Prometheus), /healthz, /readyz on PORT\n"
	       "  metrics_addr=ADDR      ... on this address (default 127.0.0.1; a pod: 0.0.0.0)\n"
	       "  metrics_dir=DIR        write the metrics to DIR/modelfs-ID.prom every 2 s\n"
	       "                         (node_exporter's textfile collector); removed at unmount\n"
	       "  metrics_per_model      also series by model (the first directory below the mount)\n"
	       "  nonempty               mount over a non-empty directory or an existing FUSE mount\n"
	       "  rw                     accepted (mount(8) adds it) and ignored: always read-only\n"
	       "  allow_other, ...       standard FUSE mount options are passed through\n");
	for (size_t i = 0; i < n; i++)
		printf("\n%s", bes[i]->help);
	printf("\n"
	       "Credentials are never taken from the command line.\n"
	       "SIGTERM: no new opens; open files are served until closed or term_grace, then exit.\n"
	       "SIGINT, a second SIGTERM: cancel the requests in flight and unmount (within ~2 s).\n"
	       "\n"
	       "Cache tools: %s cache stat|verify|clear CACHE_DIR\n"
	       "On a live mount: %s prefetch [--wait] [--memory] [--quiet] PATH...\n"
	       "                 %s status [--ready] MOUNTPOINT\n"
	       "                 %s stats MOUNTPOINT [--watch [SECONDS]] [-n COUNT]\n"
	       "                 %s refresh MOUNTPOINT  (re-list now)\n"
	       "                 %s upgrade MOUNTPOINT  (run by the new binary: it takes the mount\n"
	       "                 over, open files and all; a crashed one is replaced on its own)\n"
	       "For http(s)://:  %s manifest [--sha256] DIR > DIR/modelfs-manifest.json\n"
	       "Kubernetes:      %s csi --endpoint unix:///csi/csi.sock --node-id NODE  (the CSI\n"
	       "                 node plugin, modelfs-csi; docs/kubernetes.md)\n"
	       "                 %s fluid [CONFIG]  (Fluid ThinRuntime's FUSE entrypoint,\n"
	       "                 modelfs-fluid: mounts /etc/fluid/config/config.json's mounts)\n"
	       "Exit status: 0 mounted; 2 bad option or SOURCE, 3 no such bucket or prefix,\n"
	       "4 access denied, 5 store unreachable, 1 anything else (one line on stderr).\n",
	       prog, prog, prog, prog, prog, prog, prog, prog, prog);
}
