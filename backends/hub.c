/* hf://ORG/MODEL[@REVISION][/PATH]: a model repository on the Hugging Face
 * Hub, or on a mirror of its API (HF_ENDPOINT), the way huggingface_hub
 * reads it:
 *   GET  /api/models/REPO/revision/REV         the commit REV is now
 *   GET  /api/models/REPO/tree/COMMIT?recursive=true   the files, in pages
 *        joined by Link: <...>; rel="next"
 *   GET  /REPO/resolve/COMMIT/PATH              the bytes: the file, or for an
 *        LFS file a redirect to a CDN URL that serves ranges
 *   HEAD /REPO/resolve/COMMIT/PATH (no redirect) one file's identity
 *
 * One revision per mount: REV is resolved to a commit once, and every later
 * request names the commit, so a branch that moves while mounted never
 * mixes two revisions. A file's version is its LFS sha256, else its git
 * blob id: what the tree lists and what the resolve answer carries
 * (X-Linked-Etag on the Hub's redirect, else ETag), so a read checks it as
 * S3 reads check ETags. Files equal across revisions share their cached
 * chunks (the cache name leaves the revision out).
 */
#include "backend.h"
#include "http.h"
#include "jsonlist.h"
#include "log.h"
#include "uri.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define HUB_DEFAULT_ENDPOINT "https://huggingface.co"
#define HUB_REDIRECTS 5
#define HUB_PAGE_MAX (64u << 20)
#define HUB_MAX_PAGES 100000u
#define HUB_MAX_KEYS 5000000u

struct hub {
	struct backend base; /* must be first */
	struct http *http;
	struct backend_token *token; /* NULL: anonymous */
	char *endpoint;  /* "https://huggingface.co", no trailing '/' */
	char *repo;      /* "org/model" */
	char *rev;       /* as given, decoded: "main", "refs/pr/1", a commit */
	char *rev_enc;   /* percent-encoded, '/' too */
	char *token_from; /* for messages: "HF_TOKEN", a path */
	int no_etag_match;
	pthread_mutex_t lock;
	char commit[41]; /* protected by lock; "" until resolved, then fixed */
	int64_t mtime;   /* the revision's lastModified; protected by lock */
};

static const struct backend_option hub_options[] = {
    {"endpoint=", NULL},
    {"token_file=", NULL},
    {NULL, NULL},
};

static int hub_prepare(void *arg, struct http_headers *h)
{
	struct hub *hb = arg;
	int err = backend_token_header(hb->token, h->v[h->n], sizeof(h->v[0]));

	if (!err && h->v[h->n][0])
		h->n++;
	return err;
}

static void close_hub(struct backend *be)
{
	struct hub *hb = (struct hub *)be;

	if (!hb)
		return;
	http_close(hb->http);
	backend_token_free(hb->token);
	free(hb->endpoint);
	free(hb->repo);
	free(hb->rev);
	free(hb->rev_enc);
	free(hb->token_from);
	pthread_mutex_destroy(&hb->lock);
	backend_base_free(&hb->base);
	free(hb);
}

/* ORG and MODEL: the Hub's names (letters, digits, '-', '_', '.'; <= 96). */
static int name_ok(const char *s, size_t n)
{
	if (n == 0 || n > 96 || s[0] == '.' || s[0] == '-')
		return 0;
	for (size_t i = 0; i < n; i++)
		if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') ||
		      (s[i] >= '0' && s[i] <= '9') || s[i] == '-' || s[i] == '_' || s[i] == '.'))
			return 0;
	return 1;
}

/* "refs%2Fpr%2F1" -> "refs/pr/1"; NULL for a bad escape or a control byte. */
static char *decode_rev(const char *s, size_t n)
{
	char *out = malloc(n + 1);

	if (!out || uri_decode(s, n, out, n + 1, NULL) != 0 || !*out)
		goto bad;
	for (const char *c = out; *c; c++)
		if ((unsigned char)*c < 0x20 || *c == 0x7f)
			goto bad;
	return out;
bad:
	free(out);
	return NULL;
}

/* The token: token_file=, else HF_TOKEN, else HF_TOKEN_PATH, else
 * $HF_HOME/token or ~/.cache/huggingface/token when there is one (what
 * huggingface_hub reads). */
static int find_token(struct hub *hb, const char *token_file, char *msg, size_t msg_len)
{
	const char *v, *home;
	char path[4096];

	if (token_file) {
		hb->token_from = strdup(token_file);
		return backend_token_open(NULL, token_file, &hb->token, msg, msg_len);
	}
	if ((v = backend_getenv("HF_TOKEN"))) {
		hb->token_from = strdup("HF_TOKEN");
		return backend_token_open(v, NULL, &hb->token, msg, msg_len);
	}
	if ((v = backend_getenv("HF_TOKEN_PATH"))) {
		hb->token_from = strdup(v);
		return backend_token_open(NULL, v, &hb->token, msg, msg_len);
	}
	if ((v = backend_getenv("HF_HOME")))
		snprintf(path, sizeof(path), "%s/token", v);
	else if ((home = backend_getenv("HOME")))
		snprintf(path, sizeof(path), "%s/.cache/huggingface/token", home);
	else
		return 0;
	if (access(path, F_OK) != 0)
		return 0; /* anonymous */
	hb->token_from = strdup(path);
	return backend_token_open(NULL, path, &hb->token, msg, msg_len);
}

static int hub_open(const char *source, const struct backend_config *cfg, struct backend **out,
		    char *msg, size_t msg_len)
{
	struct http_config hc = {cfg->ca_file, cfg->insecure_tls, cfg->retries,
				 cfg->connect_timeout_ms, cfg->request_timeout_ms};
	const char *rest = source + strlen("hf://"), *endpoint = NULL, *token_file = NULL, *v;
	const char *s1, *s2, *at, *path;
	char *first = NULL, *prefix = NULL, *tmp = NULL, enc[1024];
	struct uri_endpoint ep;
	struct hub *hb;
	int err;

	for (size_t i = 0; i < cfg->n_opts; i++) {
		if (backend_opt_is(cfg->opts[i], "endpoint=", &v) && *v) {
			endpoint = v;
		} else if (backend_opt_is(cfg->opts[i], "token_file=", &v) && *v) {
			token_file = v;
		} else {
			snprintf(msg, msg_len, "option '%s' is not used by hf:// sources", cfg->opts[i]);
			return -EINVAL;
		}
	}
	if (strncmp(rest, "datasets/", 9) == 0 || strncmp(rest, "spaces/", 7) == 0) {
		snprintf(msg, msg_len, "bad source '%s': only model repositories are mounted "
			 "(hf://ORG/MODEL)", source);
		return -EINVAL;
	}
	if (strncmp(rest, "models/", 7) == 0)
		rest += 7;
	/* ORG / MODEL [@REV] [/PATH]; a REV with '/' is written %2F (as fsspec's hf://) */
	s1 = strchr(rest, '/');
	s2 = s1 ? strchr(s1 + 1, '/') : NULL;
	if (!s2)
		s2 = rest + strlen(rest);
	at = s1 ? memchr(s1 + 1, '@', (size_t)(s2 - s1 - 1)) : NULL;
	if (!s1 || !name_ok(rest, (size_t)(s1 - rest)) ||
	    !name_ok(s1 + 1, (size_t)((at ? at : s2) - s1 - 1)) || (at && at + 1 == s2)) {
		snprintf(msg, msg_len, "bad source '%s': expected %s", source, backend_hf.syntax);
		return -EINVAL;
	}
	path = *s2 ? s2 + 1 : s2;
	hb = calloc(1, sizeof(*hb));
	if (!hb)
		return -ENOMEM;
	pthread_mutex_init(&hb->lock, NULL);
	hb->base.ops = &backend_hf;
	hb->no_etag_match = cfg->no_etag_match;
	hb->mtime = -1;
	err = -ENOMEM;
	if (!(hb->repo = strndup(rest, (size_t)((at ? at : s2) - rest))))
		goto fail;
	hb->rev = at ? decode_rev(at + 1, (size_t)(s2 - at - 1)) : strdup("main");
	if (!hb->rev) {
		snprintf(msg, msg_len, "bad revision in '%s'", source);
		err = -EINVAL;
		goto fail;
	}
	if (uri_encode(hb->rev, 0, enc, sizeof(enc)) < 0 || !(hb->rev_enc = strdup(enc)))
		goto fail;
	/* PATH: checked as a prefix is ("x/" stands in for a bucket) */
	if (asprintf(&tmp, "x/%s", path) < 0) {
		tmp = NULL;
		goto fail;
	}
	err = backend_split_path(tmp, &first, &prefix);
	if (err == -EINVAL)
		snprintf(msg, msg_len, "bad path in '%s'", source);
	if (err || (err = backend_base_init(&hb->base, &backend_hf, prefix)))
		goto fail;
	/* the endpoint: endpoint=, else HF_ENDPOINT (a mirror), else the Hub */
	if (!endpoint)
		endpoint = backend_getenv("HF_ENDPOINT");
	if (!endpoint)
		endpoint = HUB_DEFAULT_ENDPOINT;
	if (uri_parse_endpoint(endpoint, &ep) != 0 || strpbrk(endpoint, "?#")) {
		snprintf(msg, msg_len, "bad endpoint '%s': expected http[s]://HOST[:PORT][/PATH]",
			 endpoint);
		err = -EINVAL;
		goto fail;
	}
	err = -ENOMEM;
	if (!(hb->endpoint = strdup(endpoint)))
		goto fail;
	for (size_t n = strlen(hb->endpoint); n > 0 && hb->endpoint[n - 1] == '/'; n--)
		hb->endpoint[n - 1] = '\0';
	if ((err = strcmp(hb->endpoint, HUB_DEFAULT_ENDPOINT) == 0
		       ? backend_base_name(&hb->base, "hf://%s", hb->repo)
		       : backend_base_name(&hb->base, "hf://%s@%s", hb->repo, hb->endpoint)) ||
	    (err = backend_base_what(&hb->base, "model '%s' at revision '%s'", hb->repo,
				     hb->rev)))
		goto fail;
	if ((err = find_token(hb, token_file, msg, msg_len)))
		goto fail;
	log_debug("hf token: %s", hb->token ? hb->token_from : "none (anonymous)");
	if ((err = http_open(&hc, &hb->http)))
		goto fail;
	free(first);
	free(prefix);
	free(tmp);
	*out = &hb->base;
	return 0;
fail:
	free(first);
	free(prefix);
	free(tmp);
	close_hub(&hb->base);
	return err;
}

static const char *const hub_capture[] = {"X-Error-Code", "X-Linked-Etag", "X-Repo-Commit",
					  NULL};
enum { CAP_ERROR_CODE, CAP_LINKED_ETAG, CAP_REPO_COMMIT };

/* One line and an errno for an answer that is not what was asked. */
static int hub_err(struct hub *hb, const char *url, int err, const struct http_response *resp,
		   char *msg, size_t msg_len)
{
	const char *code = resp->captured[CAP_ERROR_CODE];
	char m[512];

	if (err) {
		snprintf(m, sizeof(m), "%.300s: %.200s", url, resp->error[0] ? resp->error : strerror(-err));
	} else if (strcmp(code, "GatedRepo") == 0) {
		snprintf(m, sizeof(m), "model '%s' is gated: ask for access on %s/%s, then give a "
			 "token of that account (HF_TOKEN or token_file=)%s", hb->repo,
			 hb->endpoint, hb->repo,
			 hb->token ? "; the token given has no access yet" : "");
		err = -EACCES;
	} else if (strcmp(code, "RepoNotFound") == 0 ||
		   (resp->status == 401 && !code[0] && !hb->token)) {
		snprintf(m, sizeof(m), "model '%s' not found on %s%s", hb->repo, hb->endpoint,
			 hb->token ? " (or the token cannot see it)"
				   : " (a private one needs a token: HF_TOKEN or token_file=)");
		err = -ENOENT;
	} else if (strcmp(code, "RevisionNotFound") == 0) {
		snprintf(m, sizeof(m), "revision '%s' not found in model '%s'", hb->rev, hb->repo);
		err = -ENOENT;
	} else if (strcmp(code, "EntryNotFound") == 0 || resp->status == 404) {
		snprintf(m, sizeof(m), "%.400s: not found", url);
		err = -ENOENT;
	} else if (resp->status == 401 || resp->status == 403) {
		snprintf(m, sizeof(m), "%.300s: HTTP %ld: the token (%.100s) is refused", url, resp->status,
			 hb->token_from ? hb->token_from : "none");
		err = -EACCES;
	} else {
		snprintf(m, sizeof(m), "%.300s: HTTP %ld%s%.60s", url, resp->status, code[0] ? " " : "",
			 code);
		err = resp->status >= 500 || resp->status == 429 ? -EIO : -EPROTO;
	}
	if (msg)
		snprintf(msg, msg_len, "%s", m);
	else
		log_debug("%s", m);
	return err;
}

/* GET @url into a heap body. */
static int get_json(struct hub *hb, const char *url, int attempts, unsigned timeout_ms,
		    struct http_response *resp)
{
	struct http_request q = {.method = "GET", .url = url, .prepare = hub_prepare,
				 .prepare_arg = hb, .body_max = HUB_PAGE_MAX,
				 .timeout_ms = timeout_ms, .capture = hub_capture};

	return http_perform(hb->http, &q, attempts, resp);
}

/* The commit of the revision, resolved once. */
static int resolve_commit(struct hub *hb, int attempts, unsigned timeout_ms, char commit[41],
			  char *msg, size_t msg_len)
{
	char url[2048], sha[41];
	struct http_response resp;
	int64_t mtime;
	int err;

	pthread_mutex_lock(&hb->lock);
	memcpy(commit, hb->commit, 41);
	pthread_mutex_unlock(&hb->lock);
	if (commit[0])
		return 0;
	snprintf(url, sizeof(url), "%s/api/models/%s/revision/%s", hb->endpoint, hb->repo,
		 hb->rev_enc);
	err = get_json(hb, url, attempts, timeout_ms, &resp);
	if (err || resp.status != 200) {
		err = hub_err(hb, url, err, &resp, msg, msg_len);
		goto out;
	}
	err = jsonlist_hub_revision(resp.body ? resp.body : "", resp.body_len, sha, &mtime, msg,
				    msg_len);
	if (err)
		goto out;
	pthread_mutex_lock(&hb->lock);
	if (!hb->commit[0]) {
		memcpy(hb->commit, sha, sizeof(sha));
		hb->mtime = mtime;
		log_debug("hf://%s: revision '%s' is commit %s", hb->repo, hb->rev, sha);
	}
	memcpy(commit, hb->commit, 41);
	pthread_mutex_unlock(&hb->lock);
out:
	http_response_free(&resp);
	return err;
}

struct tree_walk {
	struct hub *hb;
	struct backend_keylist kl;
	int64_t mtime;
	char first_file[JSONLIST_PATH_MAX + 1]; /* the check's sample */
};

static int on_tree(void *arg, const struct jsonlist_entry *e)
{
	struct tree_walk *t = arg;

	if (e->is_dir)
		return 0; /* git has no empty directories: files make the tree */
	if (!t->first_file[0])
		snprintf(t->first_file, sizeof(t->first_file), "%s", e->path);
	if (t->kl.n >= HUB_MAX_KEYS)
		return -EFBIG;
	return backend_keylist_add(&t->kl, e->path, e->size, t->mtime > 0 ? t->mtime : 0, e->etag);
}

/* The tree under the mount's path at @commit: every page (@one_page: the
 * first only, one level, for the check). */
static int read_tree(struct hub *hb, const char *commit, struct tree_walk *t, int one_page,
		     int attempts, unsigned timeout_ms, char *msg, size_t msg_len)
{
	char *url = malloc(8192), *next = malloc(8192), path[JSONLIST_PATH_MAX * 3 + 8] = "";
	size_t plen = strlen(hb->base.prefix);
	unsigned pages = 0;
	int err = -ENOMEM;

	if (!url || !next)
		goto out;
	if (plen) {
		char p[JSONLIST_PATH_MAX + 1];
		snprintf(p, sizeof(p), "/%.*s", (int)(plen - 1), hb->base.prefix);
		if (uri_encode(p, 1, path, sizeof(path)) < 0) {
			err = -ENAMETOOLONG;
			goto out;
		}
	}
	snprintf(url, 8192, "%s/api/models/%s/tree/%s%s%s", hb->endpoint, hb->repo, commit, path,
		 one_page ? "" : "?recursive=true");
	for (;;) {
		struct http_response resp;
		const char *const cap[] = {"X-Error-Code", "Link", NULL};
		struct http_request q = {.method = "GET", .url = url, .prepare = hub_prepare,
					 .prepare_arg = hb, .body_max = HUB_PAGE_MAX,
					 .timeout_ms = timeout_ms, .capture = cap};
		err = http_perform(hb->http, &q, attempts, &resp);
		if (err || resp.status != 200) {
			err = hub_err(hb, url, err, &resp, msg, msg_len);
			http_response_free(&resp);
			goto out;
		}
		err = jsonlist_hub_tree(resp.body ? resp.body : "", resp.body_len, on_tree, t, msg,
					msg_len);
		if (!err && strlen(resp.captured[1]) + 1 >= sizeof(resp.captured[1])) {
			snprintf(msg, msg_len, "the Hub's Link header is longer than %zu bytes",
				 sizeof(resp.captured[1]) - 1);
			err = -EPROTO; /* a cut header could hide the next page */
		}
		if (!err && !one_page && http_link_next(resp.captured[1], next, 8192) == 0) {
			size_t el = strlen(hb->endpoint);
			/* the token goes with it: only to the endpoint's own origin */
			if (strncmp(next, hb->endpoint, el) != 0 || (next[el] != '/' && next[el])) {
				snprintf(msg, msg_len, "the Hub's next page %.200s is not on %s", next,
					 hb->endpoint);
				err = -EPROTO;
			} else if (strcmp(next, url) == 0 || ++pages >= HUB_MAX_PAGES) {
				snprintf(msg, msg_len, "the Hub's tree of %s does not end (page %u)",
					 hb->repo, pages);
				err = -EPROTO;
			} else {
				char *swap = url;
				url = next;
				next = swap;
				http_response_free(&resp);
				continue;
			}
		}
		http_response_free(&resp);
		break;
	}
out:
	free(url);
	free(next);
	return err;
}

static int hub_list(struct backend *be, const char *prefix, const char *delimiter,
		    backend_list_cb cb, void *arg)
{
	struct hub *hb = (struct hub *)be;
	struct tree_walk t = {.hb = hb};
	char commit[41], msg[512] = "";
	int err = resolve_commit(hb, 0, 0, commit, msg, sizeof(msg));

	if (!err) {
		pthread_mutex_lock(&hb->lock);
		t.mtime = hb->mtime;
		pthread_mutex_unlock(&hb->lock);
		err = read_tree(hb, commit, &t, 0, 0, 0, msg, sizeof(msg));
	}
	if (err == -EFBIG && !msg[0])
		snprintf(msg, sizeof(msg), "more than %u files", HUB_MAX_KEYS);
	if (!err) {
		log_info("hf://%s: %zu files at commit %s (revision '%s')", hb->repo, t.kl.n, commit,
			 hb->rev);
		err = backend_keylist_emit(&t.kl, prefix, delimiter, cb, arg);
	} else
		log_error("listing hf://%s: %s", hb->repo, msg[0] ? msg : strerror(-err));
	backend_keylist_free(&t.kl);
	return err;
}

static int resolve_url(struct hub *hb, const char *key, char *url, size_t len)
{
	char commit[41], enc[JSONLIST_PATH_MAX * 3 + 1];

	pthread_mutex_lock(&hb->lock);
	memcpy(commit, hb->commit, sizeof(commit));
	pthread_mutex_unlock(&hb->lock);
	if (uri_encode(key, 1, enc, sizeof(enc)) < 0)
		return -ENAMETOOLONG;
	/* before the commit is known (a mount started offline): the revision;
	 * the identity check on the answer still holds */
	if ((size_t)snprintf(url, len, "%s/%s/resolve/%s/%s", hb->endpoint, hb->repo,
			     commit[0] ? commit : hb->rev_enc, enc) >= len)
		return -ENAMETOOLONG;
	return 0;
}

/* An ETag header as the Hub writes it: "abc", W/"abc". */
static void clean_etag(const char *in, char *out, size_t len)
{
	size_t n;

	if (strncmp(in, "W/", 2) == 0)
		in += 2;
	n = strlen(in);
	if (n >= 2 && in[0] == '"' && in[n - 1] == '"') {
		in++;
		n -= 2;
	}
	snprintf(out, len, "%.*s", (int)n, in);
}

static int hub_stat(struct backend *be, const char *key, struct backend_object *out)
{
	struct hub *hb = (struct hub *)be;
	char url[4096];
	const char *const cap[] = {"X-Error-Code", "X-Linked-Etag", "X-Linked-Size", NULL};
	struct http_request q = {.method = "HEAD", .url = url, .prepare = hub_prepare,
				 .prepare_arg = hb, .capture = cap};
	struct http_response resp;
	int err;

	memset(out, 0, sizeof(*out));
	if ((err = resolve_url(hb, key, url, sizeof(url))))
		return err;
	err = http_perform(hb->http, &q, 0, &resp);
	http_response_free(&resp);
	if (err || (resp.status != 200 && (resp.status < 301 || resp.status > 308)))
		return hub_err(hb, url, err, &resp, NULL, 0);
	if (resp.captured[1][0]) {
		if (!resp.captured[2][0])
			return -EPROTO; /* an LFS answer without its size */
		clean_etag(resp.captured[1], out->etag, sizeof(out->etag));
		out->size = strtoull(resp.captured[2], NULL, 10);
	} else if (resp.status != 200 || !resp.has_content_length) {
		return -EPROTO; /* a redirect that is not the LFS one (a renamed repo) */
	} else {
		clean_etag(resp.etag, out->etag, sizeof(out->etag));
		out->size = resp.content_length;
	}
	pthread_mutex_lock(&hb->lock);
	out->mtime = hb->mtime > 0 ? hb->mtime : 0;
	pthread_mutex_unlock(&hb->lock);
	return out->size > BACKEND_SIZE_MAX ? -EPROTO : 0;
}

static int hub_check(struct backend *be, const char *prefix, char *msg, size_t msg_len)
{
	struct hub *hb = (struct hub *)be;
	struct tree_walk t = {.hb = hb};
	char commit[41], m[512] = "";
	int err = resolve_commit(hb, 1, BACKEND_PROBE_MS, commit, m, sizeof(m));

	/* the first page of the tree, and one file's HEAD: a gated model lists
	 * but does not download, and that should fail the mount, not a read */
	if (!err)
		err = read_tree(hb, commit, &t, 1, 1, BACKEND_PROBE_MS, m, sizeof(m));
	if (!err && t.first_file[0]) {
		char url[4096];
		struct http_request q = {.method = "HEAD", .url = url, .prepare = hub_prepare,
					 .prepare_arg = hb, .timeout_ms = BACKEND_PROBE_MS,
					 .capture = hub_capture};
		struct http_response resp = {0};
		err = resolve_url(hb, t.first_file, url, sizeof(url));
		if (!err)
			err = http_perform(hb->http, &q, 1, &resp);
		if (!err && resp.status != 200 && (resp.status < 301 || resp.status > 308))
			err = hub_err(hb, url, 0, &resp, m, sizeof(m));
		else if (err)
			err = hub_err(hb, url, err, &resp, m, sizeof(m));
		http_response_free(&resp);
	}
	if (err && msg)
		snprintf(msg, msg_len, "%s", m[0] ? m : strerror(-err));
	backend_keylist_free(&t.kl);
	(void)prefix;
	return err;
}

struct read_check {
	struct hub *hb;
	const char *version;
};

/* The bytes must be the listed file: its LFS sha256 on the Hub's redirect,
 * or its git id on a direct answer; and the commit, when the Hub says it. */
static int check_answer(void *arg, struct http_response *resp)
{
	struct read_check *c = arg;
	char id[BACKEND_ETAG_MAX], commit[41];

	if (!c->version || !*c->version)
		return 0;
	clean_etag(resp->captured[CAP_LINKED_ETAG][0] ? resp->captured[CAP_LINKED_ETAG] : resp->etag,
		   id, sizeof(id));
	if (strcmp(id, c->version) != 0) {
		snprintf(resp->error, sizeof(resp->error), "the Hub's id of the file is '%s', "
			 "listed '%s'", id, c->version);
		return -ESTALE;
	}
	pthread_mutex_lock(&c->hb->lock);
	memcpy(commit, c->hb->commit, sizeof(commit));
	pthread_mutex_unlock(&c->hb->lock);
	if (commit[0] && resp->captured[CAP_REPO_COMMIT][0] &&
	    strcmp(resp->captured[CAP_REPO_COMMIT], commit) != 0) {
		snprintf(resp->error, sizeof(resp->error), "answer from commit %.40s, mounted %s",
			 resp->captured[CAP_REPO_COMMIT], commit);
		return -ESTALE;
	}
	return 0;
}

static int hub_get(struct hub *hb, const struct backend_ref *obj, uint64_t off, uint64_t len,
		   void *buf, int (*sink)(void *arg, const char *data, size_t n),
		   void (*reset)(void *arg), void *arg, size_t *got)
{
	struct read_check c = {.hb = hb, .version = hb->no_etag_match ? "" : obj->etag};
	char url[4096];
	struct http_request q = {.method = "GET", .url = url, .has_range = 1, .range_off = off,
				 .range_len = len, .prepare = hub_prepare, .prepare_arg = hb,
				 .buf = buf, .buf_len = len, .sink = sink, .sink_reset = reset,
				 .sink_arg = arg, .expect_total = obj->size,
				 .max_redirects = HUB_REDIRECTS, .range_or_whole = 1,
				 .check = check_answer, .check_arg = &c, .capture = hub_capture};
	struct http_response resp;
	int err;

	if ((err = resolve_url(hb, obj->key, url, sizeof(url))))
		return err;
	err = http_perform(hb->http, &q, 0, &resp);
	if (!err && resp.status != 200 && resp.status != 206)
		err = hub_err(hb, url, 0, &resp, NULL, 0);
	if (err == -ESTALE)
		log_info("%s changed on the Hub (%s)", obj->key, resp.error);
	else if (err && resp.error[0])
		log_debug("GET %s: %s", url, resp.error);
	if (!err && got)
		*got = resp.body_len;
	http_response_free(&resp);
	return err;
}

static int hub_read(struct backend *be, const struct backend_ref *obj, uint64_t off, size_t len,
		    void *buf, size_t *got)
{
	*got = 0;
	return hub_get((struct hub *)be, obj, off, len, buf, NULL, NULL, NULL, got);
}

static int hub_read_stream(struct backend *be, const struct backend_ref *obj, uint64_t off,
			   uint64_t len, int (*sink)(void *arg, const char *data, size_t n),
			   void (*reset)(void *arg), void *arg)
{
	return hub_get((struct hub *)be, obj, off, len, NULL, sink, reset, arg, NULL);
}

static void hub_cancel(struct backend *be) { http_cancel(((struct hub *)be)->http); }

static const char *hub_endpoint(struct backend *be) { return ((struct hub *)be)->endpoint; }

const struct backend_ops backend_hf = {
    .scheme = "hf",
    .syntax = "hf://ORG/MODEL[@REVISION][/PATH]",
    .help = "hf://ORG/MODEL[@REVISION][/PATH]: a model on the Hugging Face Hub or a mirror\n"
	    "  REVISION: a branch, tag or commit (default main; 'refs/pr/1' as refs%2Fpr%2F1),\n"
	    "  resolved to its commit once, at mount\n"
	    "  endpoint=URL           the Hub or a mirror (default $HF_ENDPOINT, else\n"
	    "                         " HUB_DEFAULT_ENDPOINT ")\n"
	    "  token_file=PATH        the token (re-read when it changes)\n"
	    "  Token: token_file=, else HF_TOKEN, else HF_TOKEN_PATH, else $HF_HOME/token or\n"
	    "  ~/.cache/huggingface/token; none: anonymous (gated models need one).\n",
    .options = hub_options,
    .open = hub_open,
    .close = close_hub,
    .check = hub_check,
    .list = hub_list,
    .stat = hub_stat,
    .read = hub_read,
    .read_stream = hub_read_stream,
    .cancel = hub_cancel,
    .endpoint = hub_endpoint,
};
