/* http(s)://HOST/PATH/: a plain web server or mirror (nginx, a CDN, Python's
 * http.server) as a read-only store.
 *
 * The listing: ROOT/modelfs-manifest.json (jsonlist.h) when the server has
 * one, else a JSON directory index (nginx "autoindex_format json") walked
 * from ROOT, one GET per directory. A server with neither is refused at
 * mount with a line that says how to get one.
 *
 * Identity: there is no version id every server sends, so the listing
 * chooses the validator, the strongest every entry has, and stat() asks for
 * the same one (fs/ compares listing and stat versions as strings):
 *   etag   the manifest gives every file one: reads send If-Range: "ETAG"
 *          and the answer's ETag must be it;
 *   mtime  Last-Modified (the autoindex, or a manifest with mtimes): version
 *          "lm:SECONDS", reads send If-Range: DATE and the answer's
 *          Last-Modified must be that second;
 *   size   nothing else: only the size is checked.
 * A changed file thus answers a range with 200 (If-Range failed) or with
 * another validator: -ESTALE, never its bytes. A server that ignores Range
 * answers 200 with the whole file: accepted when its validators and size are
 * the listed ones, the bytes before the range skipped (slow, correct, and
 * said once in the log).
 */
#include "backend.h"
#include "http.h"
#include "jsonlist.h"
#include "log.h"
#include "uri.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <curl/curl.h>

#define WEB_REDIRECTS 5
#define WEB_MANIFEST_MAX (256u << 20)  /* bytes: ~2 million entries */
#define WEB_INDEX_MAX (64u << 20)      /* one directory's index */
#define WEB_MAX_DIRS 1000000u
#define WEB_MAX_DEPTH 64
#define WEB_MAX_KEYS 5000000u

enum web_validator { V_UNKNOWN, V_ETAG, V_MTIME, V_SIZE };

struct web {
	struct backend base; /* must be first */
	struct http *http;
	struct backend_token *token; /* NULL: none */
	char *root;      /* "http://host:port/path/" */
	int no_etag_match;
	atomic_int validator;   /* enum web_validator, set by each listing */
	atomic_int warned_range;
};

static const struct backend_option web_options[] = {
    {"token_file=", NULL},
    {NULL, NULL},
};

static int web_prepare(void *arg, struct http_headers *h);

struct web_req {
	struct web *w;
	char if_range[160]; /* "" or the header */
};

static int web_prepare(void *arg, struct http_headers *h)
{
	struct web_req *r = arg;
	int err;

	err = backend_token_header(r->w->token, h->v[h->n], sizeof(h->v[0]));
	if (err)
		return err;
	if (h->v[h->n][0])
		h->n++;
	if (r->if_range[0])
		snprintf(h->v[h->n++], sizeof(h->v[0]), "%s", r->if_range);
	return 0;
}

/* ROOT + the key, each segment percent-encoded. */
static int key_url(const struct web *w, const char *key, char *url, size_t len)
{
	size_t n = strlen(w->root);
	int e;

	if (n >= len)
		return -ENAMETOOLONG;
	memcpy(url, w->root, n);
	e = uri_encode(key, 1, url + n, len - n);
	return e < 0 ? e : 0;
}

static int status_errno(long st)
{
	if (st == 404 || st == 410)
		return -ENOENT;
	if (st == 401 || st == 403)
		return -EACCES;
	if (st >= 500 || st == 429)
		return -EIO;
	return -EPROTO;
}

static void close_web(struct backend *be)
{
	struct web *w = (struct web *)be;

	if (!w)
		return;
	http_close(w->http);
	backend_token_free(w->token);
	free(w->root);
	backend_base_free(&w->base);
	free(w);
}

static int web_open(const char *source, const struct backend_config *cfg, struct backend **out,
		    char *msg, size_t msg_len)
{
	struct http_config hc = {cfg->ca_file, cfg->insecure_tls, cfg->retries,
				 cfg->connect_timeout_ms, cfg->request_timeout_ms};
	const char *token_file = NULL, *v;
	struct uri_endpoint ep;
	struct web *w;
	size_t n = strlen(source);
	int err;

	for (size_t i = 0; i < cfg->n_opts; i++) {
		if (backend_opt_is(cfg->opts[i], "token_file=", &v) && *v) {
			token_file = v;
		} else {
			snprintf(msg, msg_len, "option '%s' is not used by http(s):// sources",
				 cfg->opts[i]);
			return -EINVAL;
		}
	}
	if (uri_parse_endpoint(source, &ep) != 0 || strpbrk(source, "?#") || n > 2000) {
		snprintf(msg, msg_len, "bad source '%s': expected %s", source, backend_http.syntax);
		return -EINVAL;
	}
	w = calloc(1, sizeof(*w));
	if (!w)
		return -ENOMEM;
	w->base.ops = &backend_http;
	w->no_etag_match = cfg->no_etag_match;
	/* the root is a directory: it ends in '/' */
	if (asprintf(&w->root, "%s%s", source, source[n - 1] == '/' ? "" : "/") < 0) {
		w->root = NULL;
		err = -ENOMEM;
		goto fail;
	}
	if ((err = backend_base_init(&w->base, &backend_http, "")) ||
	    (err = backend_base_name(&w->base, "%s", w->root)) ||
	    (err = backend_base_what(&w->base, "web directory %s", w->root)))
		goto fail;
	if (token_file && (err = backend_token_open(NULL, token_file, &w->token, msg, msg_len)))
		goto fail;
	if ((err = http_open(&hc, &w->http)))
		goto fail;
	*out = &w->base;
	return 0;
fail:
	close_web(&w->base);
	return err;
}

/* ---- the listing */

struct walk {
	struct web *w;
	struct backend_keylist kl;
	enum web_validator v; /* the strongest every entry so far has */
	const char *dir;      /* autoindex: the directory being read ("" or "a/b/") */
	char (*todo)[JSONLIST_PATH_MAX + 2]; /* autoindex: directories to read */
	size_t n_todo, cap_todo, n_dirs;
	int probe;            /* the check: the manifest or the root's index only */
	char *msg;
	size_t msg_len;
};

static void version_of(enum web_validator v, const struct jsonlist_entry *e, char *out, size_t len)
{
	if (v == V_ETAG)
		snprintf(out, len, "%s", e->etag);
	else if (v == V_MTIME)
		snprintf(out, len, "lm:%lld", (long long)e->mtime);
	else
		*out = '\0';
}

/* Manifest entries are kept with all they say; the version string is made
 * once the validator is known (the last entry may lower it). */
static int on_manifest(void *arg, const struct jsonlist_entry *e)
{
	struct walk *wk = arg;

	if (wk->kl.n >= WEB_MAX_KEYS)
		return -EFBIG;
	if (!e->is_dir) {
		if (!*e->etag && wk->v == V_ETAG)
			wk->v = e->mtime >= 0 ? V_MTIME : V_SIZE;
		if (e->mtime < 0 && wk->v == V_MTIME)
			wk->v = V_SIZE;
	}
	/* etag and mtime ride along in the object until the version is made */
	return backend_keylist_add(&wk->kl, e->path, e->is_dir ? 0 : e->size, e->mtime,
				   e->etag);
}

static int on_index(void *arg, const struct jsonlist_entry *e)
{
	struct walk *wk = arg;
	char key[JSONLIST_PATH_MAX + 2];

	if ((size_t)snprintf(key, sizeof(key), "%s%s%s", wk->dir, e->path, e->is_dir ? "/" : "") >=
	    sizeof(key) - 1)
		return 0; /* longer than any store's key: not shown */
	if (e->is_dir) {
		if (wk->n_dirs >= WEB_MAX_DIRS)
			return -EFBIG;
		if (wk->n_todo == wk->cap_todo) {
			size_t cap = wk->cap_todo ? wk->cap_todo * 2 : 64;
			void *nv = realloc(wk->todo, cap * sizeof(*wk->todo));
			if (!nv)
				return -ENOMEM;
			wk->todo = nv;
			wk->cap_todo = cap;
		}
		memcpy(wk->todo[wk->n_todo++], key, sizeof(key));
		wk->n_dirs++;
		return 0;
	}
	if (wk->kl.n >= WEB_MAX_KEYS)
		return -EFBIG;
	if (e->mtime < 0)
		wk->v = V_SIZE;
	return backend_keylist_add(&wk->kl, key, e->size, e->mtime, "");
}

/* GET @url into a heap body. @attempts: 1 for the probe. */
static int get_body(struct web *w, const char *url, size_t max, int attempts, unsigned timeout_ms,
		    struct http_response *resp)
{
	struct web_req r = {.w = w};
	struct http_request q = {.method = "GET", .url = url, .prepare = web_prepare,
				 .prepare_arg = &r, .body_max = max, .timeout_ms = timeout_ms,
				 .max_redirects = WEB_REDIRECTS};

	return http_perform(w->http, &q, attempts, resp);
}

static int answer_err(struct web *w, const char *url, int err, const struct http_response *resp,
		      char *msg, size_t msg_len)
{
	if (err) {
		snprintf(msg, msg_len, "%s: %s", url, resp->error[0] ? resp->error : strerror(-err));
		return err;
	}
	if (resp->status == 401 || resp->status == 403) {
		snprintf(msg, msg_len, "%s: HTTP %ld: %s", url, resp->status,
			 w->token ? "the token (token_file=) is refused"
				  : "the server wants credentials: give a bearer token with -o token_file=PATH");
		return -EACCES;
	}
	snprintf(msg, msg_len, "%s: HTTP %ld", url, resp->status);
	return status_errno(resp->status);
}

/* Read one directory index (autoindex) into the walk. */
static int read_index(struct walk *wk, const char *dir, int attempts, unsigned timeout_ms)
{
	char url[4096];
	struct http_response resp;
	int err;

	if ((err = key_url(wk->w, dir, url, sizeof(url))))
		return err;
	err = get_body(wk->w, url, WEB_INDEX_MAX, attempts, timeout_ms, &resp);
	if (err || resp.status != 200) {
		err = answer_err(wk->w, url, err, &resp, wk->msg, wk->msg_len);
		goto out;
	}
	wk->dir = dir;
	err = jsonlist_autoindex(resp.body ? resp.body : "", resp.body_len, on_index, wk, wk->msg,
				 wk->msg_len);
	if (err == -EPROTO && !*dir) {
		char m[256];
		snprintf(m, sizeof(m), "%s", wk->msg);
		snprintf(wk->msg, wk->msg_len, "%s has no %s and its index is not JSON (%s): write "
			 "one with 'modelfs manifest DIR', or serve a JSON index (nginx: "
			 "autoindex on; autoindex_format json;)", wk->w->root,
			 JSONLIST_MANIFEST_NAME, m);
	}
out:
	http_response_free(&resp);
	return err;
}

/* The whole listing into @wk, from the manifest or the index. */
static int walk_all(struct walk *wk, int attempts, unsigned timeout_ms)
{
	struct web *w = wk->w;
	char url[4096];
	struct http_response resp;
	int err;

	snprintf(url, sizeof(url), "%s%s", w->root, JSONLIST_MANIFEST_NAME);
	err = get_body(w, url, WEB_MANIFEST_MAX, attempts, timeout_ms, &resp);
	if (!err && resp.status == 200) {
		wk->v = V_ETAG;
		err = jsonlist_manifest(resp.body ? resp.body : "", resp.body_len, on_manifest, wk,
					wk->msg, wk->msg_len);
		if (err == -EPROTO) {
			char m[256];
			snprintf(m, sizeof(m), "%s", wk->msg);
			snprintf(wk->msg, wk->msg_len, "%s: %s", url, m);
		}
		http_response_free(&resp);
		return err;
	}
	if (err || (resp.status != 404 && resp.status != 403)) {
		/* 403: nginx for a file that is not there but in a directory it
		 * may not list; then the index answers for itself */
		err = answer_err(w, url, err, &resp, wk->msg, wk->msg_len);
		http_response_free(&resp);
		return err;
	}
	http_response_free(&resp);
	wk->v = V_MTIME;
	err = read_index(wk, "", attempts, timeout_ms);
	while (!err && wk->n_todo && !wk->probe) {
		char dir[JSONLIST_PATH_MAX + 2];
		size_t before = wk->kl.n;
		memcpy(dir, wk->todo[--wk->n_todo], sizeof(dir));
		if (strlen(dir) > 0) {
			int depth = 0;
			for (const char *c = dir; *c; c++)
				depth += *c == '/';
			if (depth > WEB_MAX_DEPTH) {
				snprintf(wk->msg, wk->msg_len, "%s%s: more than %d levels of "
					 "directories", w->root, dir, WEB_MAX_DEPTH);
				return -EFBIG;
			}
		}
		size_t todo_before = wk->n_todo;
		err = read_index(wk, dir, attempts, timeout_ms);
		/* a directory with nothing in it is kept, as "dir/" */
		if (!err && wk->kl.n == before && wk->n_todo == todo_before)
			err = backend_keylist_add(&wk->kl, dir, 0, -1, "");
	}
	return err;
}

static int web_list(struct backend *be, const char *prefix, const char *delimiter,
		    backend_list_cb cb, void *arg)
{
	struct web *w = (struct web *)be;
	char msg[512] = "";
	struct walk wk = {.w = w, .msg = msg, .msg_len = sizeof(msg)};
	int err = walk_all(&wk, 0, 0);

	if (err == -EFBIG && !msg[0])
		snprintf(msg, sizeof(msg), "%s: more than %u keys or %u directories", w->root,
			 WEB_MAX_KEYS, WEB_MAX_DIRS);
	if (err) {
		log_error("listing %s: %s", w->root, msg[0] ? msg : strerror(-err));
		goto out;
	}
	for (size_t i = 0; i < wk.kl.n; i++) {
		struct backend_object *o = &wk.kl.v[i];
		struct jsonlist_entry e = {.etag = o->etag, .mtime = o->mtime};
		char v[BACKEND_ETAG_MAX];
		size_t kn = strlen(o->key);
		if (kn && o->key[kn - 1] == '/') {
			o->etag[0] = '\0';
			continue;
		}
		version_of(wk.v, &e, v, sizeof(v));
		memcpy(o->etag, v, sizeof(v));
		if (o->mtime < 0)
			o->mtime = 0;
	}
	atomic_store(&w->validator, (int)wk.v);
	err = backend_keylist_emit(&wk.kl, prefix, delimiter, cb, arg);
out:
	backend_keylist_free(&wk.kl);
	free(wk.todo);
	return err;
}

static int web_check(struct backend *be, const char *prefix, char *msg, size_t msg_len)
{
	struct web *w = (struct web *)be;
	char m[512] = "";
	struct walk wk = {.w = w, .probe = 1, .msg = m, .msg_len = sizeof(m)};
	int err;

	/* the manifest, or the root's index: what the listing will read first */
	err = walk_all(&wk, 1, BACKEND_PROBE_MS);
	if (err == -EFBIG)
		err = 0; /* the listing says it, with its bounds */
	if (err && msg)
		snprintf(msg, msg_len, "%s", m[0] ? m : strerror(-err));
	backend_keylist_free(&wk.kl);
	free(wk.todo);
	(void)prefix;
	return err;
}

/* ---- objects */

/* The validator of a version string (see the top of this file). */
static enum web_validator kind_of(const char *version)
{
	if (!version || !*version)
		return V_SIZE;
	return strncmp(version, "lm:", 3) == 0 ? V_MTIME : V_ETAG;
}

static int web_stat(struct backend *be, const char *key, struct backend_object *out)
{
	struct web *w = (struct web *)be;
	struct web_req r = {.w = w};
	char url[4096];
	struct http_request q = {.method = "HEAD", .url = url, .prepare = web_prepare,
				 .prepare_arg = &r, .max_redirects = WEB_REDIRECTS};
	struct http_response resp;
	enum web_validator v = (enum web_validator)atomic_load(&w->validator);
	int err;

	memset(out, 0, sizeof(*out));
	if ((err = key_url(w, key, url, sizeof(url))))
		return err;
	err = http_perform(w->http, &q, 0, &resp);
	http_response_free(&resp);
	if (err)
		return err;
	if (resp.status != 200)
		return status_errno(resp.status);
	if (!resp.has_content_length || resp.content_length > BACKEND_SIZE_MAX)
		return -EPROTO;
	out->size = resp.content_length;
	if (resp.last_modified[0]) {
		time_t t = curl_getdate(resp.last_modified, NULL);
		out->mtime = t > 0 ? (int64_t)t : 0;
	}
	if (v == V_UNKNOWN) /* before any listing: the index's validator */
		v = V_MTIME;
	if (v == V_ETAG)
		snprintf(out->etag, sizeof(out->etag), "%s", resp.etag);
	else if (v == V_MTIME && resp.last_modified[0])
		snprintf(out->etag, sizeof(out->etag), "lm:%lld", (long long)out->mtime);
	return 0;
}

struct read_check {
	struct web *w;
	const char *version;
};

/* The answer must be the listed version (before any byte is used). */
static int check_answer(void *arg, struct http_response *resp)
{
	struct read_check *c = arg;

	if (kind_of(c->version) == V_MTIME) {
		time_t t = resp->last_modified[0] ? curl_getdate(resp->last_modified, NULL) : -1;
		char want[32];
		snprintf(want, sizeof(want), "lm:%lld", (long long)t);
		if (strcmp(want, c->version) != 0) {
			snprintf(resp->error, sizeof(resp->error), "Last-Modified '%s', expected %s",
				 resp->last_modified, c->version + 3);
			return -ESTALE;
		}
	}
	if (resp->whole_answer && !atomic_exchange(&c->w->warned_range, 1))
		log_warn("%s ignores Range requests: every read downloads its file from the "
			 "start (correct, but slow; nginx and object stores honour Range)",
			 c->w->root);
	return 0;
}

static int web_get(struct web *w, const struct backend_ref *obj, uint64_t off, uint64_t len,
		   void *buf, int (*sink)(void *arg, const char *data, size_t n),
		   void (*reset)(void *arg), void *arg, size_t *got)
{
	struct web_req r = {.w = w};
	struct read_check c = {.w = w, .version = w->no_etag_match ? "" : obj->etag};
	char url[4096];
	enum web_validator v = kind_of(c.version);
	struct http_request q = {.method = "GET", .url = url, .has_range = 1, .range_off = off,
				 .range_len = len, .prepare = web_prepare, .prepare_arg = &r,
				 .buf = buf, .buf_len = len, .sink = sink, .sink_reset = reset,
				 .sink_arg = arg, .expect_etag = v == V_ETAG ? c.version : NULL,
				 .expect_total = obj->size, .max_redirects = WEB_REDIRECTS,
				 .range_or_whole = 1, .check = check_answer, .check_arg = &c};
	struct http_response resp;
	int err;

	if ((err = key_url(w, obj->key, url, sizeof(url))))
		return err;
	if (v == V_ETAG) {
		snprintf(r.if_range, sizeof(r.if_range), "If-Range: \"%s\"", c.version);
	} else if (v == V_MTIME) {
		time_t t = (time_t)strtoll(c.version + 3, NULL, 10);
		struct tm tm;
		char date[64];
		if (gmtime_r(&t, &tm) && strftime(date, sizeof(date), "%a, %d %b %Y %H:%M:%S GMT", &tm))
			snprintf(r.if_range, sizeof(r.if_range), "If-Range: %s", date);
	}
	err = http_perform(w->http, &q, 0, &resp);
	if (!err && resp.status != 200 && resp.status != 206)
		err = resp.status == 416 ? -EPROTO : status_errno(resp.status);
	if (err == -ESTALE)
		log_info("%s changed on the server (%s)", obj->key, resp.error);
	else if (err && resp.error[0])
		log_debug("GET %s: %s", url, resp.error);
	if (!err && got)
		*got = resp.body_len;
	http_response_free(&resp);
	return err;
}

static int web_read(struct backend *be, const struct backend_ref *obj, uint64_t off, size_t len,
		    void *buf, size_t *got)
{
	*got = 0;
	return web_get((struct web *)be, obj, off, len, buf, NULL, NULL, NULL, got);
}

static int web_read_stream(struct backend *be, const struct backend_ref *obj, uint64_t off,
			   uint64_t len, int (*sink)(void *arg, const char *data, size_t n),
			   void (*reset)(void *arg), void *arg)
{
	return web_get((struct web *)be, obj, off, len, NULL, sink, reset, arg, NULL);
}

static void web_cancel(struct backend *be) { http_cancel(((struct web *)be)->http); }

static const char *web_endpoint(struct backend *be) { return ((struct web *)be)->root; }

const struct backend_ops backend_http = {
    .scheme = "http",
    .syntax = "http[s]://HOST[:PORT]/PATH/",
    .help = "http[s]://HOST[:PORT]/PATH/: a web server or mirror (nginx, a CDN)\n"
	    "  listed from PATH/" JSONLIST_MANIFEST_NAME " ('modelfs manifest DIR' writes "
	    "one),\n"
	    "  else from a JSON directory index (nginx: autoindex_format json)\n"
	    "  token_file=PATH        send 'Authorization: Bearer' with the token in PATH\n"
	    "                         (re-read when it changes)\n",
    .options = web_options,
    .open = web_open,
    .close = close_web,
    .check = web_check,
    .list = web_list,
    .stat = web_stat,
    .read = web_read,
    .read_stream = web_read_stream,
    .cancel = web_cancel,
    .endpoint = web_endpoint,
};
