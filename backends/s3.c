/* The S3 backend: ListObjectsV2, HEAD and ranged GET, signed with SigV4.
 *
 * Requests are built as URL + canonical path + query; the same encoded path
 * is sent and signed, and the Host header is set explicitly so the signed
 * value is exactly the sent one. HTTP status is mapped to errno here and
 * nowhere else (see backend.h). Anonymous requests (no credentials) are sent
 * unsigned, for public buckets.
 */
#include "backend.h"
#include "creds.h"
#include "tempcreds.h"
#include "http.h"
#include "log.h"
#include "s3core.h"
#include "s3xml.h"
#include "sigv4.h"
#include "uri.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <curl/curl.h>

#define S3_URL_MAX 8192
#define S3_LIST_BODY_MAX (64u << 20)

/* Bounds on one listing, so that a store that never ends its listing fails
 * the mount instead of growing it without end. A real S3 sends 1,000 keys
 * a page: the page bound is 100 million keys' worth, beyond the key bound;
 * more pages than that are pages of (almost) nothing. Five million keys make
 * a tree of a couple of GiB; the key bytes bound (2 GiB of key text) catches
 * fewer but very long keys. A token that comes back is caught at once. */
#define S3_LIST_MAX_PAGES 100000u
#define S3_LIST_MAX_KEYS 5000000u
#define S3_LIST_MAX_KEY_BYTES (2ull << 30)

static void amz_now(char out[17])
{
	time_t t = time(NULL);
	struct tm tm;

	gmtime_r(&t, &tm);
	strftime(out, 17, "%Y%m%dT%H%M%SZ", &tm);
}

/* SigV4 headers of AWS: x-amz-date, the payload hash, the session token. */
static int s3_sign(struct s3 *s, const struct s3_req *r, const struct keyset *k,
		   struct http_headers *h)
{
	char date[17], authz[1024];
	struct sigv4_header sh[4];
	size_t n = 0;
	int err;

	amz_now(date);
	snprintf(h->v[h->n++], HTTP_HEADER_MAX, "x-amz-content-sha256: %s", SIGV4_EMPTY_SHA256);
	snprintf(h->v[h->n++], HTTP_HEADER_MAX, "x-amz-date: %s", date);
	if (!k)
		return 0;
	sh[n++] = (struct sigv4_header){"host", s->host_hdr};
	sh[n++] = (struct sigv4_header){"x-amz-content-sha256", SIGV4_EMPTY_SHA256};
	sh[n++] = (struct sigv4_header){"x-amz-date", date};
	if (k->session_token) {
		sh[n++] = (struct sigv4_header){"x-amz-security-token", k->session_token};
		if (snprintf(h->v[h->n++], HTTP_HEADER_MAX, "x-amz-security-token: %s",
			     k->session_token) >= HTTP_HEADER_MAX)
			return -ENAMETOOLONG;
	}
	{
		struct sigv4_request req = {
		    .dialect = &sigv4_aws,
		    .method = r->method,
		    .path = r->path,
		    .query = r->query,
		    .headers = sh,
		    .n_headers = n,
		    .payload_hash = SIGV4_EMPTY_SHA256,
		    .amz_date = date,
		    .region = s->region,
		    .service = "s3",
		    .access_key = k->access_key,
		    .secret_key = k->secret_key,
		};
		err = sigv4_sign(&req, authz, sizeof(authz), NULL, 0);
		if (err)
			return err;
	}
	snprintf(h->v[h->n++], HTTP_HEADER_MAX, "Authorization: %s", authz);
	return 0;
}

static const struct s3_flavor s3_flavor = {"s3", s3_sign, NULL, 0};

/* Every attempt of every request: Host and If-Match, then the flavor's
 * signature (its date is taken now, so a retry is signed afresh). */
static int s3_prepare(void *arg, struct http_headers *h)
{
	struct s3_req *r = arg;
	struct s3 *s = r->s3;

	h->n = 0;
	snprintf(h->v[h->n++], HTTP_HEADER_MAX, "Host: %s", s->host_hdr);
	if (r->if_match && *r->if_match)
		snprintf(h->v[h->n++], HTTP_HEADER_MAX, "If-Match: \"%s\"", r->if_match);
	if (r->ranged && s->fl->range_header)
		snprintf(h->v[h->n++], HTTP_HEADER_MAX, "%s", s->fl->range_header);
	{
		const struct keyset *k = s->keys ? keyring_get(s->keys) : NULL;
		int err = s->fl->sign(s, r, k, h);
		if (k)
			keyring_put(s->keys, k);
		return err;
	}
}

/* Build "/bucket/enc(key)" (or "/enc(key)" virtual-host) into @path. */
static int build_path(struct s3 *s, const char *key, char *path, size_t len)
{
	size_t bl = strlen(s->base_path);
	int n;

	if (bl + 2 > len)
		return -ENAMETOOLONG;
	memcpy(path, s->base_path, bl);
	path[bl] = '/';
	n = uri_encode(key, 1, path + bl + 1, len - bl - 1);
	return n < 0 ? n : 0;
}

static int build_url(struct s3 *s, const char *path, const char *query, char *url, size_t len)
{
	int n = snprintf(url, len, "%s%s%s%s", s->base_url, path, *query ? "?" : "", query);
	return n < 0 || (size_t)n >= len ? -ENAMETOOLONG : 0;
}

/* Map an HTTP answer to 0 or -errno, with a log-worthy line in @msg. */
static int map_status(const struct http_response *resp, char *msg, size_t msg_len)
{
	char code[64] = "", text[256] = "", rid[80] = "";

	if (resp->status >= 200 && resp->status < 300)
		return 0;
	s3xml_parse_error_rid(resp->body, resp->body_len, code, sizeof(code), text, sizeof(text),
			      rid, sizeof(rid));
	if (msg)
		snprintf(msg, msg_len, "HTTP %ld%s%s%s%s%s%s%s", resp->status, *code ? " " : "", code,
			 *text ? ": " : "", text, *rid ? " (RequestId " : "", rid, *rid ? ")" : "");
	switch (resp->status) {
	case 401:
	case 403:
		return -EACCES;
	case 404:
		return -ENOENT;
	case 412:
	case 416:
		return -ESTALE;
	case 400:
		return -EINVAL;
	default:
		return -EIO;
	}
}

/* An <Error> document sent with a 2xx status (S3 does this where an error
 * comes after the headers): an error all the same, mapped by its Code. */
static int map_error_200(const struct http_response *resp, char *msg, size_t msg_len)
{
	char code[64] = "", text[256] = "";

	s3xml_parse_error(resp->body, resp->body_len, code, sizeof(code), text, sizeof(text));
	if (msg)
		snprintf(msg, msg_len, "HTTP %ld with an <Error> body: %s%s%s", resp->status,
			 *code ? code : "no Code", *text ? ": " : "", text);
	if (strcmp(code, "AccessDenied") == 0 || strcmp(code, "InvalidAccessKeyId") == 0 ||
	    strcmp(code, "SignatureDoesNotMatch") == 0 || strcmp(code, "ExpiredToken") == 0)
		return -EACCES;
	if (strcmp(code, "NoSuchBucket") == 0 || strcmp(code, "NoSuchKey") == 0)
		return -ENOENT;
	return -EIO;
}

int s3core_setup(struct s3 *s, const char *endpoint, int path_style,
		 const struct backend_config *cfg)
{
	struct http_config hc = {
	    .ca_file = cfg->ca_file,
	    .insecure_tls = cfg->insecure_tls,
	    .retries = cfg->retries,
	    .connect_timeout_ms = cfg->connect_timeout_ms,
	    .request_timeout_ms = cfg->request_timeout_ms,
	};
	char port[16] = "";
	int err = uri_parse_endpoint(endpoint, &s->ep);

	if (err)
		return -EINVAL;
	s->path_style = path_style;
	s->no_etag_match = cfg->no_etag_match;
	if (s->path_style < 0)
		s->path_style = uri_host_is_ip_or_local(s->ep.host);
	if (!s->path_style && (strchr(s->bucket, '.') && s->ep.https))
		log_warn("bucket name '%s' has dots: TLS names may not match in virtual-host "
			 "style; consider -o path_style", s->bucket);
	if (s->ep.port)
		snprintf(port, sizeof(port), ":%d", s->ep.port);
	if (s->path_style) {
		snprintf(s->host_hdr, sizeof(s->host_hdr), "%s%s", s->ep.host, port);
		snprintf(s->base_path, sizeof(s->base_path), "%s/%s", s->ep.path, s->bucket);
	} else {
		snprintf(s->host_hdr, sizeof(s->host_hdr), "%s.%s%s", s->bucket, s->ep.host, port);
		snprintf(s->base_path, sizeof(s->base_path), "%s", s->ep.path);
	}
	snprintf(s->base_url, sizeof(s->base_url), "%s://%s", s->ep.https ? "https" : "http",
		 s->host_hdr);
	return http_open(&hc, &s->http);
}

static const struct backend_option s3_options[] = {
    {"endpoint=", NULL},
    {"region=", NULL},
    {"path_style", NULL},
    {"use_path_request_style", NULL}, /* s3fs's spelling */
    {"virtual_host", NULL},
    {"creds_file=", NULL},
    {"profile=", NULL},
#define S3_REFUSE "credentials are not accepted on the command line (they would show in ps): " \
		  "use AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or -o creds_file=PATH"
    {"access_key=", BACKEND_REFUSE_KEYS}, /* oss's too: one line for both */
    {"secret_key=", BACKEND_REFUSE_KEYS},
    {"secret_access_key=", S3_REFUSE},
    {"aws_secret_access_key=", S3_REFUSE},
    {"session_token=", S3_REFUSE},
    {NULL, NULL},
};

/* What s3_open reads of the options and the environment. */
struct s3_args {
	const char *endpoint, *region, *creds_file, *profile;
	int endpoint_given; /* by option or environment: part of the cache's name */
	int path_style;     /* -1 auto, 0 virtual host, 1 path */
};

static int s3_args(const struct backend_config *cfg, struct s3_args *a, char *msg,
		   size_t msg_len)
{
	const char *v;

	*a = (struct s3_args){.path_style = -1};
	for (size_t i = 0; i < cfg->n_opts; i++) {
		const char *o = cfg->opts[i];
		if (backend_opt_is(o, "endpoint=", &v))
			a->endpoint = v;
		else if (backend_opt_is(o, "region=", &v))
			a->region = v;
		else if (backend_opt_is(o, "path_style", &v) ||
			 backend_opt_is(o, "use_path_request_style", &v))
			a->path_style = 1;
		else if (backend_opt_is(o, "virtual_host", &v))
			a->path_style = 0;
		else if (backend_opt_is(o, "creds_file=", &v))
			a->creds_file = v;
		else if (backend_opt_is(o, "profile=", &v))
			a->profile = v;
		else {
			snprintf(msg, msg_len, "option '%s' is not used by s3:// sources", o);
			return -EINVAL;
		}
	}
	/* the AWS tools' variables, after the options */
	if (!a->endpoint && !(a->endpoint = backend_getenv("AWS_ENDPOINT_URL_S3")))
		a->endpoint = backend_getenv("AWS_ENDPOINT_URL");
	if (!a->region && !(a->region = backend_getenv("AWS_REGION")))
		a->region = backend_getenv("AWS_DEFAULT_REGION");
	a->endpoint_given = a->endpoint != NULL;
	return 0;
}

/* The keys, in the order of the AWS SDKs: -o creds_file, the AWS_* keys,
 * a pod's web identity (IRSA), the shared credentials file, the instance's
 * role (IMDSv2); none of those: anonymous requests. */
static int s3_keys(const struct s3_args *a, const struct backend_config *cfg, struct s3 *s,
		   char *msg, size_t msg_len)
{
	struct http_config hc = {cfg->ca_file, cfg->insecure_tls, cfg->retries,
				 cfg->connect_timeout_ms, cfg->request_timeout_ms};
	struct key_source src;
	struct creds cr = {0};
	int err;

	if (!a->creds_file && !backend_getenv("AWS_ACCESS_KEY_ID") &&
	    (err = tempcreds_source(TC_AWS_WEB_IDENTITY, &hc, &src, msg, msg_len)) != 1)
		return err ? err : keyring_open(&src, &s->keys, msg, msg_len);
	if ((err = creds_load(a->creds_file, a->profile, &cr, msg, msg_len)))
		return err;
	if (!cr.access_key && (err = tempcreds_source(TC_AWS_IMDS, &hc, &src, msg, msg_len)) != 1) {
		char why[512] = "";
		if (err)
			return err;
		err = keyring_open(&src, &s->keys, why, sizeof(why));
		if (!err)
			return 0;
		/* off EC2 there is no such service: a public bucket */
		log_debug("no instance role (%s): anonymous requests", why);
	}
	log_debug("credentials: %s", cr.source);
	return keyring_fixed(&cr, &s->keys);
}

static int s3_open(const char *source, const struct backend_config *cfg, struct backend **out,
		   char *msg, size_t msg_len)
{
	struct s3_args a;
	struct s3 *s;
	char default_ep[128], *prefix = NULL;
	const char *endpoint;
	int err;

	if ((err = s3_args(cfg, &a, msg, msg_len)))
		return err;
	s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	s->base.ops = &backend_s3;
	s->fl = &s3_flavor;
	err = backend_split_path(source + strlen("s3://"), &s->bucket, &prefix);
	if (err == -EINVAL)
		snprintf(msg, msg_len, "bad source '%s': expected %s", source, backend_s3.syntax);
	if (err || (err = backend_base_init(&s->base, &backend_s3, prefix)))
		goto out_err;
	s->region = strdup(a.region ? a.region : "us-east-1");
	if (!s->region) {
		err = -ENOMEM;
		goto out_err;
	}
	endpoint = a.endpoint;
	if (!endpoint) {
		snprintf(default_ep, sizeof(default_ep), "https://s3.%s.amazonaws.com", s->region);
		endpoint = default_ep;
	}
	err = s3core_setup(s, endpoint, a.path_style, cfg);
	if (err == -EINVAL) {
		snprintf(msg, msg_len, "bad endpoint '%s': expected http[s]://HOST[:PORT]", endpoint);
		goto out_err;
	}
	if (err)
		goto out_err;
	/* the cache's name for this bucket: the endpoint as given is part of it
	 * (the same bucket name on two stores is two buckets) */
	if ((err = backend_base_name(&s->base, "s3://%s%s%s", s->bucket, a.endpoint_given ? "@" : "",
				     a.endpoint_given ? a.endpoint : "")) ||
	    (err = backend_base_what(&s->base, "bucket '%s'", s->bucket)))
		goto out_err;

	if ((err = s3_keys(&a, cfg, s, msg, msg_len)))
		goto out_err;
	free(prefix);
	*out = &s->base;
	return 0;

out_err:
	free(prefix);
	s3core_close(&s->base);
	return err;
}

void s3core_close(struct backend *be)
{
	struct s3 *s = (struct s3 *)be;

	if (!s)
		return;
	http_close(s->http);
	free(s->bucket);
	free(s->region);
	keyring_close(s->keys);
	backend_base_free(&s->base);
	free(s);
}

/* With encoding-type=url: the keys decoded on their way to the caller. */
struct decode_cb {
	backend_list_cb cb;
	void *arg;
	int err;
};

static int decode_key(void *arg, const char *key, const struct backend_object *obj)
{
	struct decode_cb *d = arg;
	char k[2048];
	struct backend_object o;

	d->err = uri_decode(key, strlen(key), k, sizeof(k), NULL);
	if (d->err)
		return d->err;
	if (!obj)
		return d->cb(d->arg, k, NULL);
	o = *obj;
	o.key = k;
	return d->cb(d->arg, k, &o);
}

/* One ListObjectsV2 page. */
static int list_page(struct s3 *s, const char *prefix, const char *delimiter, const char *token,
		     unsigned max_keys, int attempts, unsigned timeout_ms, backend_list_cb cb,
		     void *arg, struct s3xml_page *page, char *msg, size_t msg_len)
{
	char path[1024], query[4096], enc[2048], url[S3_URL_MAX];
	struct s3_req r = {s, "GET", path, query, NULL, 0};
	struct http_request req = {
	    .method = "GET", .url = url, .prepare = s3_prepare, .prepare_arg = &r,
	    .body_max = S3_LIST_BODY_MAX, .timeout_ms = timeout_ms,
	};
	struct http_response resp;
	size_t q = 0;
	int err;

	memset(page, 0, sizeof(*page));
	/* the bucket itself: "/bucket" path style, "/" virtual host */
	snprintf(path, sizeof(path), "%s", *s->base_path ? s->base_path : "/");
	if (token) {
		if (uri_encode(token, 0, enc, sizeof(enc)) < 0)
			return -ENAMETOOLONG;
		q += (size_t)snprintf(query + q, sizeof(query) - q, "continuation-token=%s&", enc);
	}
	if (delimiter && *delimiter) {
		if (uri_encode(delimiter, 0, enc, sizeof(enc)) < 0)
			return -ENAMETOOLONG;
		q += (size_t)snprintf(query + q, sizeof(query) - q, "delimiter=%s&", enc);
	}
	if (s->fl->url_listing)
		q += (size_t)snprintf(query + q, sizeof(query) - q, "encoding-type=url&");
	q += (size_t)snprintf(query + q, sizeof(query) - q, "list-type=2&max-keys=%u", max_keys);
	/* an empty prefix is left out: how an empty value is signed is where
	 * SigV4's dialects differ */
	if (prefix && *prefix) {
		if (uri_encode(prefix, 0, enc, sizeof(enc)) < 0)
			return -ENAMETOOLONG;
		q += (size_t)snprintf(query + q, sizeof(query) - q, "&prefix=%s", enc);
	}
	if (q >= sizeof(query))
		return -ENAMETOOLONG;
	err = build_url(s, path, query, url, sizeof(url));
	if (err)
		return err;

	err = http_perform(s->http, &req, attempts, &resp);
	if (err) {
		if (msg && err == -ETIMEDOUT && resp.connected)
			snprintf(msg, msg_len, "connected, but no answer within %u ms (%s)",
				 timeout_ms, resp.error);
		else if (msg)
			snprintf(msg, msg_len, "%s", resp.error);
		goto out;
	}
	err = map_status(&resp, msg, msg_len);
	if (err)
		goto out;
	{
		struct decode_cb d = {cb, arg, 0};
		if (s->fl->url_listing)
			err = s3xml_parse_list(resp.body ? resp.body : "", resp.body_len, decode_key,
					       &d, page);
		else
			err = s3xml_parse_list(resp.body ? resp.body : "", resp.body_len, cb, arg,
					       page);
		if (d.err == -EINVAL || (!err && s->fl->url_listing && page->next_token &&
					 uri_decode(page->next_token, strlen(page->next_token),
						    page->next_token, strlen(page->next_token) + 1,
						    NULL) != 0)) {
			if (msg)
				snprintf(msg, msg_len, "a listing asked with encoding-type=url has "
					 "a key or token that is not percent-encoded");
			err = -EPROTO;
			goto out;
		}
	}
	if (err == -EPROTO && strcmp(page->root, "Error") == 0)
		err = map_error_200(&resp, msg, msg_len);
	else if (err == -EPROTO && page->root[0] && strcmp(page->root, "ListBucketResult") != 0 &&
		 msg)
		snprintf(msg, msg_len,
			 "the answer to a listing is not a ListBucketResult but <%s> (HTTP %ld%s%s): "
			 "a proxy or a login page in the way?",
			 page->root, resp.status, resp.content_type[0] ? ", " : "", resp.content_type);
	else if (err == -EPROTO && msg)
		snprintf(msg, msg_len, "malformed ListObjectsV2 answer from the server");
out:
	http_response_free(&resp);
	return err;
}

static int count_cb(void *arg, const char *key, const struct backend_object *obj)
{
	(void)arg;
	(void)key;
	(void)obj;
	return 0;
}

int s3core_check(struct backend *be, const char *prefix, char *msg, size_t msg_len)
{
	struct s3 *s = (struct s3 *)be;
	struct s3xml_page page;
	int err;

	err = list_page(s, prefix, "/", NULL, 1, 1, BACKEND_PROBE_MS, count_cb, NULL, &page, msg,
			msg_len);
	free(page.next_token);
	if (err == -EHOSTUNREACH && !s->path_style) {
		/* the name was made from the bucket: not an outage but a setting */
		if (msg)
			snprintf(msg, msg_len, "cannot resolve %s (virtual-host style puts the "
					       "bucket in the host name; use -o path_style)",
				 s->host_hdr);
		return -EADDRNOTAVAIL;
	}
	if (err == -ENOENT && msg)
		snprintf(msg + strlen(msg), msg_len - strlen(msg), " (bucket '%s')", s->bucket);
	return err;
}

/* The continuation tokens of one listing, as 64-bit hashes in an open-
 * addressing set (0 marks a free slot): a token handed out twice would make
 * the listing loop for ever. At most S3_LIST_MAX_PAGES entries (~2 MiB). */
struct token_set {
	uint64_t *h;
	size_t n, cap; /* cap: a power of two, or 0 */
};

static uint64_t token_hash(const char *t)
{
	uint64_t h = 1469598103934665603ULL;

	for (; *t; t++)
		h = (h ^ (unsigned char)*t) * 1099511628211ULL;
	return h ? h : 1;
}

/* @return 1 when @tok was seen before, 0 when added, -ENOMEM. */
static int token_seen(struct token_set *ts, const char *tok)
{
	uint64_t h = token_hash(tok);
	size_t i;

	if (2 * (ts->n + 1) > ts->cap) {
		size_t ncap = ts->cap ? 2 * ts->cap : 64;
		uint64_t *nh = calloc(ncap, sizeof(*nh));
		if (!nh)
			return -ENOMEM;
		for (size_t j = 0; j < ts->cap; j++) {
			if (!ts->h[j])
				continue;
			for (i = ts->h[j] & (ncap - 1); nh[i]; i = (i + 1) & (ncap - 1))
				;
			nh[i] = ts->h[j];
		}
		free(ts->h);
		ts->h = nh;
		ts->cap = ncap;
	}
	for (i = h & (ts->cap - 1); ts->h[i]; i = (i + 1) & (ts->cap - 1))
		if (ts->h[i] == h)
			return 1;
	ts->h[i] = h;
	ts->n++;
	return 0;
}

int s3core_list(struct backend *be, const char *prefix, const char *delimiter,
		   backend_list_cb cb, void *arg)
{
	struct s3 *s = (struct s3 *)be;
	struct token_set seen = {0};
	char *token = NULL, msg[512] = "", skip_key[128] = "";
	const char *skip_why = NULL;
	uint64_t keys = 0, key_bytes = 0, skipped = 0;
	unsigned pages = 0;
	int err;

	for (;;) {
		struct s3xml_page page;
		err = list_page(s, prefix, delimiter, token, 1000, 0, 0, cb, arg, &page, msg,
				sizeof(msg));
		free(token);
		token = NULL;
		if (err) {
			if (*msg)
				log_warn("listing %s://%s/%s: %s", s->fl->scheme, s->bucket, prefix, msg);
			goto out;
		}
		pages++;
		keys += page.n_keys;
		key_bytes += page.key_bytes;
		if (page.n_skipped && !skip_why) {
			skip_why = page.skip_why;
			snprintf(skip_key, sizeof(skip_key), "%s", page.skip_key);
		}
		skipped += page.n_skipped;
		if (!page.truncated) {
			free(page.next_token);
			break;
		}
		token = page.next_token;
		err = token_seen(&seen, token);
		if (err == 1) {
			log_warn("listing %s://%s/%s: the server sent continuation token '%.64s%s' "
				 "a second time (after %u pages): a listing that would never end",
				 s->fl->scheme, s->bucket, prefix, token, strlen(token) > 64 ? "..." : "", pages);
			err = -EPROTO;
			goto out;
		}
		if (err)
			goto out;
		if (pages >= S3_LIST_MAX_PAGES || keys >= S3_LIST_MAX_KEYS ||
		    key_bytes >= S3_LIST_MAX_KEY_BYTES) {
			log_warn("listing %s://%s/%s: more than %s (%u pages, %llu keys, %llu MiB "
				 "of keys so far): giving up", s->fl->scheme, s->bucket, prefix,
				 pages >= S3_LIST_MAX_PAGES ? "100,000 pages"
				 : keys >= S3_LIST_MAX_KEYS ? "5,000,000 keys" : "2 GiB of keys",
				 pages, (unsigned long long)keys,
				 (unsigned long long)(key_bytes >> 20));
			err = -EFBIG;
			goto out;
		}
	}
out:
	if (skipped)
		log_warn("listing %s://%s/%s: skipped %llu entr%s the server listed with a bad "
			 "field (first: '%s': %s)", s->fl->scheme, s->bucket, prefix, (unsigned long long)skipped,
			 skipped == 1 ? "y" : "ies", skip_key, skip_why);
	free(token);
	free(seen.h);
	return err;
}

int s3core_stat(struct backend *be, const char *key, struct backend_object *out)
{
	struct s3 *s = (struct s3 *)be;
	char path[4096], url[S3_URL_MAX];
	struct s3_req r = {s, "HEAD", path, "", NULL, 0};
	struct http_request req = {.method = "HEAD", .url = url, .prepare = s3_prepare,
				   .prepare_arg = &r, .body_max = 1 << 16};
	struct http_response resp;
	int err;

	memset(out, 0, sizeof(*out));
	err = build_path(s, key, path, sizeof(path));
	if (!err)
		err = build_url(s, path, "", url, sizeof(url));
	if (err)
		return err;
	err = http_perform(s->http, &req, 0, &resp);
	if (!err)
		err = map_status(&resp, NULL, 0);
	if (!err) {
		time_t t = resp.last_modified[0] ? curl_getdate(resp.last_modified, NULL) : -1;
		out->size = resp.content_length;
		out->mtime = t < 0 ? 0 : t;
		snprintf(out->etag, sizeof(out->etag), "%s", resp.etag);
		if (!resp.has_content_length || resp.content_length > BACKEND_SIZE_MAX) {
			log_warn("HEAD %s://%s/%s: %s Content-Length", s->fl->scheme, s->bucket, key,
				 resp.has_content_length ? "unbelievable" : "no");
			err = -EPROTO;
		}
	}
	http_response_free(&resp);
	return err;
}

/* One ranged GET of [off, off + len), its body going where @req says (a
 * buffer or a streaming sink). Sends If-Match and, because some servers
 * ignore it (s3rver), also has http.c compare the answer's ETag (a missing
 * one fails too) and its Content-Range before any byte is used: one file is
 * never stitched together from two versions, or from the wrong offsets. */
static int s3_get(struct s3 *s, const struct backend_ref *obj, uint64_t off, uint64_t len,
		  struct http_request *req, struct http_response *resp)
{
	const char *key = obj->key, *etag = obj->etag;
	char path[4096], url[S3_URL_MAX], msg[512];
	struct s3_req r = {s, "GET", path, "", s->no_etag_match ? NULL : etag, 1};
	int err;

	if (s->no_etag_match)
		etag = NULL;
	err = build_path(s, key, path, sizeof(path));
	if (!err)
		err = build_url(s, path, "", url, sizeof(url));
	if (err)
		return err;
	req->method = "GET";
	req->url = url;
	req->prepare = s3_prepare;
	req->prepare_arg = &r;
	req->has_range = 1;
	req->range_off = off;
	req->range_len = len;
	req->expect_etag = etag;
	req->expect_total = obj->size;
	log_debug("GET %s://%s/%s bytes=%llu-%llu", s->fl->scheme, s->bucket, key, (unsigned long long)off,
		  (unsigned long long)(off + len - 1));
	err = http_perform(s->http, req, 0, resp);
	if (err == -ESTALE) {
		log_info("%s://%s/%s changed: %s", s->fl->scheme, s->bucket, key, resp->error);
		return err;
	}
	if (err) {
		log_warn("GET %s://%s/%s [%llu+%llu]: %s", s->fl->scheme, s->bucket, key, (unsigned long long)off,
			 (unsigned long long)len, resp->error);
		return err;
	}
	err = map_status(resp, msg, sizeof(msg));
	if (err) {
		if (err != -ESTALE)
			log_warn("GET %s://%s/%s: %s", s->fl->scheme, s->bucket, key, msg);
		return err;
	}
	return 0;
}

int s3core_read(struct backend *be, const struct backend_ref *obj, uint64_t off, size_t len,
		   void *buf, size_t *got)
{
	struct http_request req = {.buf = buf, .buf_len = len};
	struct http_response resp = {0};
	int err;

	*got = 0;
	if (len == 0)
		return 0;
	err = s3_get((struct s3 *)be, obj, off, len, &req, &resp);
	if (!err)
		*got = resp.body_len;
	http_response_free(&resp);
	return err;
}

int s3core_read_stream(struct backend *be, const struct backend_ref *obj, uint64_t off,
			  uint64_t len, int (*sink)(void *arg, const char *data, size_t n),
			  void (*reset)(void *arg), void *arg)
{
	struct http_request req = {.body_max = 1 << 16, .sink = sink, .sink_reset = reset,
				   .sink_arg = arg};
	struct http_response resp = {0};
	int err;

	if (len == 0)
		return 0;
	err = s3_get((struct s3 *)be, obj, off, len, &req, &resp);
	http_response_free(&resp);
	return err;
}

void s3core_cancel(struct backend *be) { http_cancel(((struct s3 *)be)->http); }

const char *s3core_endpoint(struct backend *be) { return ((struct s3 *)be)->base_url; }

const struct backend_ops backend_s3 = {
    .scheme = "s3",
    .lists_by_dir = 1,
    .syntax = "s3://BUCKET[/PREFIX]",
    .help = "s3://BUCKET[/PREFIX]: S3 and S3-compatible stores (MinIO, Ceph, R2, ...), SigV4\n"
	    "  endpoint=URL           default $AWS_ENDPOINT_URL_S3, $AWS_ENDPOINT_URL, else\n"
	    "                         https://s3.REGION.amazonaws.com\n"
	    "  region=NAME            signing region (default $AWS_REGION, $AWS_DEFAULT_REGION,\n"
	    "                         us-east-1)\n"
	    "  path_style             bucket in the URL path (default for IP and localhost\n"
	    "                         endpoints; also use_path_request_style)\n"
	    "  virtual_host           bucket in the host name (default otherwise)\n"
	    "  creds_file=PATH        AWS shared-credentials file (after the AWS_* environment)\n"
	    "  profile=NAME           profile in it (default $AWS_PROFILE, default)\n"
	    "  Credentials: AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY[/AWS_SESSION_TOKEN], then\n"
	    "  creds_file; then a pod's web identity (IRSA: AWS_WEB_IDENTITY_TOKEN_FILE +\n"
	    "  AWS_ROLE_ARN, STS at AWS_ENDPOINT_URL_STS or sts.$AWS_REGION.amazonaws.com),\n"
	    "  then $AWS_SHARED_CREDENTIALS_FILE or ~/.aws/credentials (profile $AWS_PROFILE),\n"
	    "  then the EC2 instance's role (IMDSv2; AWS_EC2_METADATA_DISABLED=true: not\n"
	    "  asked); none means anonymous requests. Temporary keys are renewed before\n"
	    "  they expire.\n",
    .options = s3_options,
    .open = s3_open,
    .close = s3core_close,
    .check = s3core_check,
    .list = s3core_list,
    .stat = s3core_stat,
    .read = s3core_read,
    .read_stream = s3core_read_stream,
    .cancel = s3core_cancel,
    .endpoint = s3core_endpoint,
};
