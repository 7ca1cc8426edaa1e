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

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <curl/curl.h>

#define HTTP_POOL_MAX 64

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
	pthread_cond_init(&h->cancel_cond, NULL);
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
	int checked;  /* streaming: status and ETag looked at */
	int sink_err; /* streaming: why the transfer was ended */
};

/* Streaming body: check once that this is the answer we asked for, then hand
 * the bytes on. @return 1 when consumed, 0 to fall back to the error body. */
static int stream_body(struct sink *s, const char *data, size_t n)
{
	const struct http_request *q = s->req;
	long st = 0;

	curl_easy_getinfo(s->c, CURLINFO_RESPONSE_CODE, &st);
	if (st < 200 || st >= 300)
		return 0;
	if (!s->checked) {
		s->checked = 1;
		if (q->expect_etag && *q->expect_etag && s->resp->etag[0] &&
		    strcmp(q->expect_etag, s->resp->etag) != 0) {
			s->sink_err = -ESTALE;
			return -1;
		}
		if (st == 200 && q->has_range && q->range_off > 0) {
			s->sink_err = -EPROTO; /* Range ignored */
			return -1;
		}
	}
	s->sink_err = q->sink(q->sink_arg, data, n);
	return s->sink_err ? -1 : 1;
}

static size_t on_body(char *data, size_t size, size_t nmemb, void *arg)
{
	struct sink *s = arg;
	size_t n = size * nmemb;
	struct http_response *r = s->resp;

	if (s->req->sink) {
		int used = stream_body(s, data, n);
		if (used < 0)
			return 0; /* aborts the transfer */
		if (used > 0) {
			r->body_len += n;
			return n;
		}
	}
	if (s->req->buf) {
		if (r->body_len + n > s->req->buf_len) {
			s->overflow = 1;
			return 0; /* aborts the transfer */
		}
		memcpy((char *)s->req->buf + r->body_len, data, n);
	} else {
		char *nb;
		if (r->body_len + n > s->req->body_max) {
			s->overflow = 1;
			return 0;
		}
		nb = realloc(r->body, r->body_len + n + 1);
		if (!nb)
			return 0;
		r->body = nb;
		memcpy(r->body + r->body_len, data, n);
		r->body[r->body_len + n] = '\0';
	}
	r->body_len += n;
	return n;
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
		r->etag[0] = r->last_modified[0] = '\0';
		r->has_content_length = 0;
		return n;
	}
	if (!colon)
		return n;
	name_len = (size_t)(colon - data);
	vlen = n - name_len - 1;
	if (name_len == 4 && strncasecmp(data, "etag", 4) == 0) {
		copy_value(r->etag, sizeof(r->etag), colon + 1, vlen);
	} else if (name_len == 13 && strncasecmp(data, "last-modified", 13) == 0) {
		copy_value(r->last_modified, sizeof(r->last_modified), colon + 1, vlen);
	} else if (name_len == 14 && strncasecmp(data, "content-length", 14) == 0) {
		char num[32];
		copy_value(num, sizeof(num), colon + 1, vlen);
		r->content_length = strtoull(num, NULL, 10);
		r->has_content_length = 1;
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

	clock_gettime(CLOCK_REALTIME, &ts);
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

static int attempt_once(struct http *h, CURL *c, const struct http_request *req,
			struct http_response *resp)
{
	struct http_headers hd = {0};
	struct curl_slist *list = NULL;
	struct sink s = {req, resp, c, 0, 0, 0};
	char errbuf[CURL_ERROR_SIZE] = "";
	char range[64];
	CURLcode rc;
	int err;

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
	curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
	curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, on_progress);
	curl_easy_setopt(c, CURLOPT_XFERINFODATA, h);
	curl_easy_setopt(c, CURLOPT_TCP_KEEPALIVE, 1L);
	/* bigger receive pieces: fewer callbacks and copies per GiB */
	curl_easy_setopt(c, CURLOPT_BUFFERSIZE, 512L * 1024);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, &s);
	curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
	curl_easy_setopt(c, CURLOPT_HEADERDATA, &s);
	if (strcmp(req->method, "HEAD") == 0)
		curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
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
	if (rc == CURLE_WRITE_ERROR && s.sink_err) {
		snprintf(resp->error, sizeof(resp->error), "%s", strerror(-s.sink_err));
		return s.sink_err;
	}
	if (rc == CURLE_WRITE_ERROR && s.overflow) {
		snprintf(resp->error, sizeof(resp->error), "response body larger than expected");
		return -EMSGSIZE;
	}
	if (rc != CURLE_OK) {
		snprintf(resp->error, sizeof(resp->error), "%s", errbuf[0] ? errbuf : curl_easy_strerror(rc));
		return map_curl(rc);
	}
	curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &resp->status);
	return 0;
}

int http_perform(struct http *h, const struct http_request *req, int max_attempts_override,
		 struct http_response *resp)
{
	int attempts = max_attempts_override > 0 ? max_attempts_override : h->cfg.retries + 1;
	CURL *c = handle_get(h);
	int err = -EIO;

	memset(resp, 0, sizeof(*resp));
	if (!c)
		return -ENOMEM;
	for (int a = 0; a < attempts; a++) {
		if (a > 0)
			sleep_ms(h, backoff_ms(a - 1));
		if (atomic_load(&h->cancelled)) {
			snprintf(resp->error, sizeof(resp->error), "cancelled: shutting down");
			err = -ECANCELED;
			break;
		}
		err = attempt_once(h, c, req, resp);
		if (err == 0 && !http_status_retryable(resp->status))
			break;
		if (err == 0) {
			log_debug("%s %s: HTTP %ld, attempt %d of %d", req->method, req->url,
				  resp->status, a + 1, attempts);
			continue;
		}
		log_debug("%s %s: %s, attempt %d of %d", req->method, req->url, resp->error, a + 1,
			  attempts);
		/* Every transport error is retried (the server may be restarting)
		 * but for those another attempt cannot fix. A dead connection
		 * poisons the handle: the next attempt starts with a fresh one. */
		curl_easy_cleanup(c);
		c = curl_easy_init();
		if (!c)
			return -ENOMEM;
		if (err == -EMSGSIZE || err == -ENOMEM || err == -EPROTO || err == -ESTALE ||
		    err == -ENOSPC || err == -ECANCELED)
			break;
	}
	handle_put(h, c);
	return err;
}

void http_response_free(struct http_response *resp)
{
	free(resp->body);
	resp->body = NULL;
}
