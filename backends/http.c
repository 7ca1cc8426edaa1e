/* libcurl plumbing: a pool of easy handles so connections stay alive between
 * requests, one attempt per curl_easy_perform(), retries with exponential
 * backoff and jitter around it.
 *
 * Why easy handles and not one multi handle: every caller is a FUSE worker
 * thread that must block until its bytes arrive anyway; a handle per thread
 * keeps the request path free of a shared event loop. The pool is capped so
 * idle connections do not pile up.
 */
#include "http.h"
#include "log.h"
#include "stats.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <curl/curl.h>

#define HTTP_POOL_MAX 64
#define HTTP_ERROR_BODY_MAX (64u << 10) /* an error answer's body kept for its message */

struct http {
	struct http_config cfg;
	char *ca_file;
	pthread_mutex_t lock;
	CURL *idle[HTTP_POOL_MAX]; /* protected by lock */
	int n_idle;                /* protected by lock */
	pthread_cond_t cancel_cond; /* backoff sleeps wait here, with lock */
	atomic_int cancelled;       /* set once by http_cancel, never cleared */
};

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;

static void curl_init_once(void) { curl_global_init(CURL_GLOBAL_DEFAULT); }

int http_open(const struct http_config *cfg, struct http **out)
{
	struct http *h;

	pthread_once(&curl_once, curl_init_once);
	h = calloc(1, sizeof(*h));
	if (!h)
		return -ENOMEM;
	h->cfg = *cfg;
	if (cfg->ca_file) {
		h->ca_file = strdup(cfg->ca_file);
		if (!h->ca_file) {
			free(h);
			return -ENOMEM;
		}
	}
	pthread_mutex_init(&h->lock, NULL);
	{
		/* backoff sleeps are relative: a clock step must not stretch them */
		pthread_condattr_t ca;
		pthread_condattr_init(&ca);
		pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
		pthread_cond_init(&h->cancel_cond, &ca);
		pthread_condattr_destroy(&ca);
	}
	*out = h;
	return 0;
}

void http_close(struct http *h)
{
	if (!h)
		return;
	for (int i = 0; i < h->n_idle; i++)
		curl_easy_cleanup(h->idle[i]);
	pthread_cond_destroy(&h->cancel_cond);
	pthread_mutex_destroy(&h->lock);
	free(h->ca_file);
	free(h);
}

static CURL *handle_get(struct http *h)
{
	CURL *c = NULL;

	pthread_mutex_lock(&h->lock);
	if (h->n_idle > 0)
		c = h->idle[--h->n_idle];
	pthread_mutex_unlock(&h->lock);
	return c ? c : curl_easy_init();
}

static void handle_put(struct http *h, CURL *c)
{
	pthread_mutex_lock(&h->lock);
	if (h->n_idle < HTTP_POOL_MAX) {
		h->idle[h->n_idle++] = c;
		c = NULL;
	}
	pthread_mutex_unlock(&h->lock);
	if (c)
		curl_easy_cleanup(c);
}

struct sink {
	const struct http_request *req;
	struct http_response *resp;
	CURL *c;
	int overflow;
	int checked;   /* the answer was looked at (answer_check), once */
	int ok_answer; /* a 2xx: the body is the caller's bytes */
	int abort_err; /* why the transfer was ended from a callback */
	/* a whole object answering a ranged GET (range_or_whole): bytes to
	 * drop before the range, then bytes still wanted */
	int whole;
	uint64_t skip, take;
	int done_early; /* the transfer was ended once the range was in */
};

/* Is this 2xx answer the one asked for (see http.h)? Runs before the first
 * body byte goes anywhere. @return 0, -ESTALE or -EPROTO with a line in
 * r->error. */
static int answer_check(const struct http_request *q, struct http_response *r, long st)
{
	uint64_t want_end = q->range_off + q->range_len - 1;

	if (q->expect_etag && *q->expect_etag) {
		if (!r->etag[0]) {
			snprintf(r->error, sizeof(r->error), "answer without an ETag (expected %s)",
				 q->expect_etag);
			return -ESTALE;
		}
		if (strcmp(q->expect_etag, r->etag) != 0) {
			snprintf(r->error, sizeof(r->error), "ETag %s, expected %s", r->etag,
				 q->expect_etag);
			return -ESTALE;
		}
	}
	if (!q->has_range)
		return 0;
	if (st == 200 && q->range_or_whole) {
		if (!q->expect_total || (r->has_content_length && r->content_length != q->expect_total)) {
			snprintf(r->error, sizeof(r->error), "whole object (HTTP 200) of %llu bytes for a "
				 "range of an object of %llu", (unsigned long long)r->content_length,
				 (unsigned long long)q->expect_total);
			return q->expect_total ? -ESTALE : -EPROTO;
		}
		return 0;
	}
	if (st == 200) {
		if (q->range_off > 0) {
			snprintf(r->error, sizeof(r->error), "Range ignored (HTTP 200 for bytes=%llu-)",
				 (unsigned long long)q->range_off);
			return -EPROTO; /* never hand out bytes from offset 0 */
		}
		if (q->expect_total && r->has_content_length && r->content_length != q->expect_total) {
			snprintf(r->error, sizeof(r->error), "object is %llu bytes, expected %llu",
				 (unsigned long long)r->content_length,
				 (unsigned long long)q->expect_total);
			return -ESTALE;
		}
		return 0;
	}
	if (st != 206) {
		snprintf(r->error, sizeof(r->error), "HTTP %ld to a ranged GET", st);
		return -EPROTO;
	}
	if (!r->has_content_range || r->content_range_bad) {
		snprintf(r->error, sizeof(r->error), "HTTP 206 with %s Content-Range",
			 r->has_content_range ? "a malformed" : "no");
		return -EPROTO;
	}
	if (q->expect_total && r->range_total != HTTP_RANGE_TOTAL_UNKNOWN &&
	    r->range_total != q->expect_total) {
		snprintf(r->error, sizeof(r->error), "object is %llu bytes, expected %llu",
			 (unsigned long long)r->range_total, (unsigned long long)q->expect_total);
		return -ESTALE;
	}
	/* the range asked, or shorter only where the object ends */
	if (r->range_start != q->range_off || r->range_end < r->range_start ||
	    r->range_end > want_end ||
	    (r->range_total != HTTP_RANGE_TOTAL_UNKNOWN && r->range_end >= r->range_total) ||
	    (r->range_end < want_end &&
	     (r->range_total == HTTP_RANGE_TOTAL_UNKNOWN || r->range_end + 1 != r->range_total)) ||
	    (r->has_content_length && r->content_length != r->range_end - r->range_start + 1)) {
		char total[24] = "*";
		if (r->range_total != HTTP_RANGE_TOTAL_UNKNOWN)
			snprintf(total, sizeof(total), "%llu", (unsigned long long)r->range_total);
		snprintf(r->error, sizeof(r->error), "Content-Range bytes %llu-%llu/%s for bytes=%llu-%llu",
			 (unsigned long long)r->range_start, (unsigned long long)r->range_end, total,
			 (unsigned long long)q->range_off, (unsigned long long)want_end);
		return -EPROTO;
	}
	return 0;
}

/* Look at the answer once, before its first byte is used. @return 0, or an
 * error that ends the transfer. */
static int sink_check(struct sink *s)
{
	long st = 0;

	if (s->checked)
		return 0;
	s->checked = 1;
	curl_easy_getinfo(s->c, CURLINFO_RESPONSE_CODE, &st);
	s->ok_answer = st >= 200 && st < 300;
	if (!s->ok_answer)
		return 0;
	s->abort_err = answer_check(s->req, s->resp, st);
	if (!s->abort_err && st == 200 && s->req->has_range && s->req->range_or_whole) {
		s->whole = s->resp->whole_answer = 1;
		s->skip = s->req->range_off;
		s->take = s->req->range_len;
	}
	if (!s->abort_err && s->req->check)
		s->abort_err = s->req->check(s->req->check_arg, s->resp);
	return s->abort_err;
}

static size_t on_body(char *data, size_t size, size_t nmemb, void *arg)
{
	struct sink *s = arg;
	size_t n = size * nmemb;
	struct http_response *r = s->resp;

	if (sink_check(s))
		return 0; /* aborts the transfer */
	if (s->whole && s->ok_answer) {
		size_t drop = s->skip < n ? (size_t)s->skip : n;
		s->skip -= drop;
		data += drop;
		n -= drop;
		if (n > s->take)
			n = (size_t)s->take;
		s->take -= n;
		if (n == 0 && s->take == 0) {
			s->done_early = 1;
			return 0; /* the range is in: end the transfer */
		}
		if (n == 0)
			return size * nmemb;
	}
	if (s->req->sink && s->ok_answer) {
		/* a 2xx body goes to the sink; an error body to resp->body */
		s->abort_err = s->req->sink(s->req->sink_arg, data, n);
		if (s->abort_err) {
			snprintf(r->error, sizeof(r->error), "%s", strerror(-s->abort_err));
			return 0;
		}
		r->body_len += n;
		return size * nmemb;
	}
	if (s->req->buf && s->ok_answer) {
		if (r->body_len + n > s->req->buf_len) {
			s->overflow = 1;
			return 0; /* aborts the transfer */
		}
		memcpy((char *)s->req->buf + r->body_len, data, n);
	} else {
		/* a heap body: the caller's (buf NULL), or an error answer's,
		 * which never goes to the caller's buffer (a 503's XML is longer
		 * than a 4-byte read) */
		size_t max = s->req->buf || s->req->sink ? HTTP_ERROR_BODY_MAX : s->req->body_max;
		char *nb;
		if (r->body_len + n > max) {
			if (!s->ok_answer) { /* an error page: its start is enough */
				n = r->body_len < max ? max - r->body_len : 0;
				if (n == 0)
					return size * nmemb;
			} else {
				s->overflow = 1;
				return 0;
			}
		}
		nb = realloc(r->body, r->body_len + n + 1);
		if (!nb)
			return 0;
		r->body = nb;
		memcpy(r->body + r->body_len, data, n);
		r->body[r->body_len + n] = '\0';
	}
	r->body_len += n;
	return size * nmemb;
}

/* Parse an unsigned decimal that fills [p, e) exactly; @return 0 or -1. */
static int parse_dec(const char *p, const char *e, uint64_t *out)
{
	uint64_t v = 0;

	if (p == e)
		return -1;
	for (; p < e; p++) {
		if (*p < '0' || *p > '9' || v > (UINT64_MAX - 9) / 10)
			return -1;
		v = v * 10 + (uint64_t)(*p - '0');
	}
	*out = v;
	return 0;
}

/* "bytes START-END/TOTAL" (TOTAL may be "*"). @return 0 or -1. */
static int parse_content_range(const char *v, struct http_response *r)
{
	const char *dash, *slash, *end = v + strlen(v);

	if (strncasecmp(v, "bytes ", 6) != 0)
		return -1;
	v += 6;
	dash = memchr(v, '-', (size_t)(end - v));
	slash = memchr(v, '/', (size_t)(end - v));
	if (!dash || !slash || slash < dash || parse_dec(v, dash, &r->range_start) ||
	    parse_dec(dash + 1, slash, &r->range_end))
		return -1;
	if (slash + 2 == end && slash[1] == '*') {
		r->range_total = HTTP_RANGE_TOTAL_UNKNOWN;
		return 0;
	}
	return parse_dec(slash + 1, end, &r->range_total);
}

/* Copy a header value, trimmed of blanks, CR/LF and surrounding quotes. */
static void copy_value(char *dst, size_t dst_len, const char *v, size_t n)
{
	while (n && (*v == ' ' || *v == '\t')) {
		v++;
		n--;
	}
	while (n && (v[n - 1] == '\r' || v[n - 1] == '\n' || v[n - 1] == ' '))
		n--;
	if (n >= 2 && v[0] == '"' && v[n - 1] == '"') {
		v++;
		n -= 2;
	}
	if (n >= dst_len)
		n = dst_len - 1;
	memcpy(dst, v, n);
	dst[n] = '\0';
}

static size_t on_header(char *data, size_t size, size_t nmemb, void *arg)
{
	struct sink *s = arg;
	size_t n = size * nmemb;
	struct http_response *r = s->resp;
	const char *colon = memchr(data, ':', n);
	size_t name_len, vlen;

	if (n >= 5 && strncmp(data, "HTTP/", 5) == 0) {
		/* a new response (after a 100-continue or a redirect) */
		r->etag[0] = r->last_modified[0] = r->content_type[0] = '\0';
		r->has_content_length = 0;
		r->has_content_range = r->content_range_bad = 0;
		r->retry_after_ms = 0;
		return n;
	}
	if (!colon)
		return n;
	name_len = (size_t)(colon - data);
	vlen = n - name_len - 1;
	for (int i = 0; s->req->capture && i < HTTP_CAPTURE_MAX && s->req->capture[i]; i++)
		if (strlen(s->req->capture[i]) == name_len &&
		    strncasecmp(data, s->req->capture[i], name_len) == 0)
			copy_value(r->captured[i], sizeof(r->captured[i]), colon + 1, vlen);
	if (name_len == 4 && strncasecmp(data, "etag", 4) == 0) {
		copy_value(r->etag, sizeof(r->etag), colon + 1, vlen);
	} else if (name_len == 13 && strncasecmp(data, "last-modified", 13) == 0) {
		copy_value(r->last_modified, sizeof(r->last_modified), colon + 1, vlen);
	} else if (name_len == 12 && strncasecmp(data, "content-type", 12) == 0) {
		copy_value(r->content_type, sizeof(r->content_type), colon + 1, vlen);
	} else if (name_len == 14 && strncasecmp(data, "content-length", 14) == 0) {
		char num[32];
		copy_value(num, sizeof(num), colon + 1, vlen);
		r->content_length = strtoull(num, NULL, 10);
		r->has_content_length = 1;
	} else if (name_len == 13 && strncasecmp(data, "content-range", 13) == 0) {
		char v[128];
		copy_value(v, sizeof(v), colon + 1, vlen);
		r->has_content_range = 1;
		r->content_range_bad = parse_content_range(v, r) != 0;
	} else if (name_len == 20 && strncasecmp(data, "x-oss-qos-delay-time", 20) == 0) {
		/* OSS's throttling answer: how long to wait, in milliseconds */
		char v[32];
		uint64_t ms;
		copy_value(v, sizeof(v), colon + 1, vlen);
		if (parse_dec(v, v + strlen(v), &ms) == 0)
			r->retry_after_ms = ms > HTTP_RETRY_AFTER_MAX_MS ? HTTP_RETRY_AFTER_MAX_MS
									  : (unsigned)ms;
	} else if (name_len == 11 && strncasecmp(data, "retry-after", 11) == 0) {
		char v[64];
		uint64_t sec;
		copy_value(v, sizeof(v), colon + 1, vlen);
		if (parse_dec(v, v + strlen(v), &sec) != 0) {
			/* or an HTTP-date */
			time_t t = curl_getdate(v, NULL), now = time(NULL);
			sec = t > now ? (uint64_t)(t - now) : 0;
		}
		r->retry_after_ms = sec >= HTTP_RETRY_AFTER_MAX_MS / 1000 ? HTTP_RETRY_AFTER_MAX_MS
									 : (unsigned)sec * 1000;
	}
	return n;
}

int http_status_retryable(long status) { return status >= 500 || status == 429; }

static int map_curl(CURLcode rc)
{
	switch (rc) {
	case CURLE_COULDNT_CONNECT:
		return -ECONNREFUSED;
	case CURLE_COULDNT_RESOLVE_HOST:
	case CURLE_COULDNT_RESOLVE_PROXY:
		return -EHOSTUNREACH;
	case CURLE_OPERATION_TIMEDOUT:
		return -ETIMEDOUT;
	case CURLE_OUT_OF_MEMORY:
		return -ENOMEM;
	case CURLE_SSL_CONNECT_ERROR:
	case CURLE_PEER_FAILED_VERIFICATION:
	case CURLE_SSL_CERTPROBLEM:
	case CURLE_SSL_CIPHER:
	case CURLE_SSL_CACERT_BADFILE:
	case CURLE_UNSUPPORTED_PROTOCOL:
	case CURLE_URL_MALFORMAT:
		return -EPROTO;
	default:
		return -EIO;
	}
}

void http_cancel(struct http *h)
{
	pthread_mutex_lock(&h->lock);
	atomic_store(&h->cancelled, 1);
	pthread_cond_broadcast(&h->cancel_cond);
	pthread_mutex_unlock(&h->lock);
}

/* Curl calls this at least once a second while a transfer runs, stalled or
 * not: a cancelled client's transfers end within about a second. */
static int on_progress(void *arg, curl_off_t dt, curl_off_t dn, curl_off_t ut, curl_off_t un)
{
	struct http *h = arg;

	(void)dt, (void)dn, (void)ut, (void)un;
	return atomic_load(&h->cancelled);
}

/* Sleep between attempts; http_cancel ends it. */
static void sleep_ms(struct http *h, unsigned ms)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	ts.tv_sec += ms / 1000;
	ts.tv_nsec += (long)(ms % 1000) * 1000000L;
	if (ts.tv_nsec >= 1000000000L) {
		ts.tv_sec++;
		ts.tv_nsec -= 1000000000L;
	}
	pthread_mutex_lock(&h->lock);
	while (!atomic_load(&h->cancelled) &&
	       pthread_cond_timedwait(&h->cancel_cond, &h->lock, &ts) == 0)
		;
	pthread_mutex_unlock(&h->lock);
}

/* 100 ms, 400 ms, 1.6 s, then 2 s, each +-25% so retrying clients spread. */
static unsigned backoff_ms(int attempt)
{
	unsigned base = 100;
	for (int i = 0; i < attempt && base < 2000; i++)
		base *= 4;
	if (base > 2000)
		base = 2000;
	return base * 3 / 4 + (unsigned)(rand() % (int)(base / 2 + 1));
}

/* Failures a kept-alive connection can cause by itself: the server closed it
 * while idle, or the last answer left junk on it (seen as an HTTP/0.9 or a
 * weird reply). TLS verification failures are not among them. */
static int conn_failure(CURLcode rc)
{
	switch (rc) {
	case CURLE_WEIRD_SERVER_REPLY:
	case CURLE_UNSUPPORTED_PROTOCOL: /* "Received HTTP/0.9 when not allowed" */
	case CURLE_RECV_ERROR:
	case CURLE_SEND_ERROR:
	case CURLE_GOT_NOTHING:
		return 1;
	default:
		return 0;
	}
}

/* One attempt. *@stale_conn is set when it failed in a way a reused
 * connection explains (conn_failure() on a connection it did not open). */
/* One transfer's figures (after curl_easy_perform): how it was answered
 * and the bytes it carried. */
static void count_attempt(CURL *c)
{
	enum stats_http k = SH_NONE;
	curl_off_t dl = 0;
	long status = 0;

	if (!STATS_ON)
		return;
	curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
	if (status > 0)
		k = status >= 200 && status < 600 ? (enum stats_http)(status / 100 - 2) : SH_OTHER;
	atomic_fetch_add_explicit(&stats_backend.http[stats_cur_op][k], 1, memory_order_relaxed);
	if (curl_easy_getinfo(c, CURLINFO_SIZE_DOWNLOAD_T, &dl) == CURLE_OK && dl > 0)
		atomic_fetch_add_explicit(&stats_backend.http_bytes, (uint64_t)dl,
					  memory_order_relaxed);
}

static int attempt_once(struct http *h, CURL *c, const struct http_request *req,
			struct http_response *resp, int *stale_conn)
{
	struct http_headers hd = {0};
	struct curl_slist *list = NULL;
	struct sink s = {.req = req, .resp = resp, .c = c};
	char errbuf[CURL_ERROR_SIZE] = "";
	char range[64];
	CURLcode rc;
	int err;

	*stale_conn = 0;
	free(resp->body);
	memset(resp, 0, sizeof(*resp));
	if (req->sink_reset)
		req->sink_reset(req->sink_arg);

	if (req->prepare) {
		err = req->prepare(req->prepare_arg, &hd);
		if (err)
			return err;
	}
	for (size_t i = 0; i < hd.n; i++) {
		struct curl_slist *nl = curl_slist_append(list, hd.v[i]);
		if (!nl) {
			curl_slist_free_all(list);
			return -ENOMEM;
		}
		list = nl;
	}

	curl_easy_reset(c);
	curl_easy_setopt(c, CURLOPT_URL, req->url);
	curl_easy_setopt(c, CURLOPT_HTTPHEADER, list);
	curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(c, CURLOPT_ERRORBUFFER, errbuf);
	curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, (long)h->cfg.connect_timeout_ms);
	curl_easy_setopt(c, CURLOPT_TIMEOUT_MS,
			 (long)(req->timeout_ms ? req->timeout_ms : h->cfg.request_timeout_ms));
	curl_easy_setopt(c, CURLOPT_LOW_SPEED_LIMIT, (long)HTTP_LOW_SPEED_BYTES);
	curl_easy_setopt(c, CURLOPT_LOW_SPEED_TIME, (long)HTTP_LOW_SPEED_S);
	curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
	curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, on_progress);
	curl_easy_setopt(c, CURLOPT_XFERINFODATA, h);
	curl_easy_setopt(c, CURLOPT_TCP_KEEPALIVE, 1L);
	/* bytes without a status line are junk, never a body */
	curl_easy_setopt(c, CURLOPT_HTTP09_ALLOWED, 0L);
	/* bigger receive pieces: fewer callbacks and copies per GiB */
	curl_easy_setopt(c, CURLOPT_BUFFERSIZE, 512L * 1024);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, &s);
	curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
	curl_easy_setopt(c, CURLOPT_HEADERDATA, &s);
	if (strcmp(req->method, "HEAD") == 0)
		curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
	if (req->body) {
		curl_easy_setopt(c, CURLOPT_POSTFIELDS, req->body);
		curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)strlen(req->body));
		if (strcmp(req->method, "POST") != 0)
			curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, req->method);
	}
	if (req->max_redirects > 0) {
		curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 1L);
		curl_easy_setopt(c, CURLOPT_MAXREDIRS, (long)req->max_redirects);
		/* never from https down to http */
		curl_easy_setopt(c, CURLOPT_REDIR_PROTOCOLS_STR,
				 strncmp(req->url, "https:", 6) == 0 ? "https" : "http,https");
	}
	if (req->has_range) {
		snprintf(range, sizeof(range), "%llu-%llu", (unsigned long long)req->range_off,
			 (unsigned long long)(req->range_off + req->range_len - 1));
		curl_easy_setopt(c, CURLOPT_RANGE, range);
	}
	if (h->ca_file)
		curl_easy_setopt(c, CURLOPT_CAINFO, h->ca_file);
	if (h->cfg.insecure_tls) {
		curl_easy_setopt(c, CURLOPT_SSL_VERIFYPEER, 0L);
		curl_easy_setopt(c, CURLOPT_SSL_VERIFYHOST, 0L);
	}

	rc = curl_easy_perform(c);
	count_attempt(c);
	curl_slist_free_all(list);
	curl_easy_setopt(c, CURLOPT_ERRORBUFFER, NULL);
	if (rc != CURLE_OK) {
		curl_off_t connect_us = 0;
		curl_easy_getinfo(c, CURLINFO_CONNECT_TIME_T, &connect_us);
		resp->connected = connect_us > 0;
	}
	if (rc == CURLE_ABORTED_BY_CALLBACK && atomic_load(&h->cancelled)) {
		snprintf(resp->error, sizeof(resp->error), "cancelled: shutting down");
		return -ECANCELED;
	}
	if (rc == CURLE_WRITE_ERROR && s.abort_err)
		return s.abort_err; /* resp->error says why */
	if (rc == CURLE_WRITE_ERROR && s.done_early) {
		resp->status = 200;
		return 0;
	}
	if (rc == CURLE_WRITE_ERROR && s.overflow) {
		snprintf(resp->error, sizeof(resp->error), "response body larger than expected");
		return -EMSGSIZE;
	}
	if (rc == CURLE_TOO_MANY_REDIRECTS) {
		snprintf(resp->error, sizeof(resp->error), "more than %d redirects",
			 req->max_redirects);
		return -EPROTO;
	}
	if (rc != CURLE_OK) {
		long new_conns = -1;
		snprintf(resp->error, sizeof(resp->error), "%s", errbuf[0] ? errbuf : curl_easy_strerror(rc));
		curl_easy_getinfo(c, CURLINFO_NUM_CONNECTS, &new_conns);
		*stale_conn = conn_failure(rc) && new_conns == 0;
		return map_curl(rc);
	}
	curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &resp->status);
	/* an answer without a body (or an empty one) is checked all the same */
	if (sink_check(&s))
		return s.abort_err;
	if (s.whole && s.take > 0 && req->range_off + req->range_len - s.take < req->expect_total) {
		/* a whole object that ended before the range did (chunked, no
		 * Content-Length to check first): not the object listed */
		snprintf(resp->error, sizeof(resp->error), "whole object ended at %llu, before %llu",
			 (unsigned long long)(req->range_off + req->range_len - s.take),
			 (unsigned long long)(req->expect_total < req->range_off + req->range_len
						  ? req->expect_total : req->range_off + req->range_len));
		return -ESTALE;
	}
	return 0;
}

int http_perform(struct http *h, const struct http_request *req, int max_attempts_override,
		 struct http_response *resp)
{
	int attempts = max_attempts_override > 0 ? max_attempts_override : h->cfg.retries + 1;
	CURL *c = handle_get(h);
	int err = -EIO, fresh_retry_used = 0, at_once = 0, stale_conn, tries = 0;
	unsigned wait_ms = 0; /* a Retry-After of the last answer */

	memset(resp, 0, sizeof(*resp));
	if (!c)
		return -ENOMEM;
	if (STATS_ON)
		atomic_fetch_add_explicit(&stats_backend.in_flight, 1, memory_order_relaxed);
	for (int a = 0; a < attempts; a++) {
		if (a > 0 && !at_once) {
			unsigned b = backoff_ms(a - 1);
			sleep_ms(h, wait_ms > b ? wait_ms : b);
		}
		wait_ms = 0;
		at_once = 0;
		if (atomic_load(&h->cancelled)) {
			snprintf(resp->error, sizeof(resp->error), "cancelled: shutting down");
			err = -ECANCELED;
			break;
		}
		if (STATS_ON && tries++ > 0)
			atomic_fetch_add_explicit(&stats_backend.retries, 1, memory_order_relaxed);
		err = attempt_once(h, c, req, resp, &stale_conn);
		if (err == 0 && !http_status_retryable(resp->status))
			break;
		if (err == 0) {
			log_debug("%s %s: HTTP %ld, attempt %d of %d", req->method, req->url,
				  resp->status, a + 1, attempts);
			wait_ms = resp->retry_after_ms;
			continue;
		}
		log_debug("%s %s: %s, attempt %d of %d", req->method, req->url, resp->error, a + 1,
			  attempts);
		/* Every transport error is retried (the server may be restarting)
		 * but for those another attempt cannot fix. A dead connection
		 * poisons the handle: the next attempt starts with a fresh one. */
		curl_easy_cleanup(c);
		c = curl_easy_init();
		if (!c) {
			err = -ENOMEM;
			goto out;
		}
		if (stale_conn && !fresh_retry_used) {
			/* the connection, not the server, may be at fault: once more
			 * at once, on a new connection, whatever the budget */
			fresh_retry_used = at_once = 1;
			a--;
			continue;
		}
		if (err == -EMSGSIZE || err == -ENOMEM || err == -EPROTO || err == -ESTALE ||
		    err == -ENOSPC || err == -ECANCELED)
			break;
	}
	handle_put(h, c);
out:
	if (STATS_ON)
		atomic_fetch_sub_explicit(&stats_backend.in_flight, 1, memory_order_relaxed);
	return err;
}

void http_response_free(struct http_response *resp)
{
	free(resp->body);
	resp->body = NULL;
}

/* Link: <URL>; rel="next", <URL2>; rel=last  (rel may list several types) */
int http_link_next(const char *link, char *out, size_t out_len)
{
	const char *p = link;

	while (p && *p) {
		const char *lt = strchr(p, '<'), *gt, *end, *rel;
		if (!lt)
			break;
		gt = strchr(lt + 1, '>');
		if (!gt)
			break;
		/* this link's parameters run to the next ",<" (a comma outside <>) */
		end = gt + 1;
		while (*end && *end != ',')
			end++;
		for (rel = gt + 1; rel < end; rel++) {
			if (strncasecmp(rel, "rel", 3) != 0)
				continue;
			const char *v = rel + 3;
			while (v < end && (*v == ' ' || *v == '\t'))
				v++;
			if (v >= end || *v != '=')
				continue;
			v++;
			while (v < end && (*v == ' ' || *v == '"'))
				v++;
			/* a space-separated list of types */
			while (v < end && *v != '"' && *v != ';') {
				const char *w = v;
				while (w < end && *w != ' ' && *w != '"' && *w != ';')
					w++;
				if (w - v == 4 && strncasecmp(v, "next", 4) == 0) {
					size_t n = (size_t)(gt - lt - 1);
					if (n == 0)
						return -ENOENT;
					if (n >= out_len)
						return -ENAMETOOLONG;
					memcpy(out, lt + 1, n);
					out[n] = '\0';
					return 0;
				}
				v = w;
				while (v < end && *v == ' ')
					v++;
			}
		}
		p = *end ? end + 1 : end;
	}
	return -ENOENT;
}
