/* HTTP plumbing shared by the HTTP-speaking backends: a pool of libcurl easy
 * handles (kept-alive connections), TLS settings, per-attempt timeouts, and
 * bounded retries with exponential backoff. Knows nothing of S3.
 *
 * What a 2xx answer must be before any of its bytes reach the caller (buffer
 * or sink), so that a broken or hostile server never hands out wrong bytes:
 *   - with expect_etag set: an ETag header equal to it (none at all, or
 *     another one, is -ESTALE);
 *   - for a ranged request: a 206 whose Content-Range is "bytes START-END/
 *     TOTAL" with START the offset asked, END the last byte asked (or less,
 *     only when END is the object's last byte), Content-Length END-START+1,
 *     and TOTAL equal to expect_total when that is known (else -ESTALE: the
 *     object changed); a 206 without Content-Range or with another range is
 *     -EPROTO. A 200 is the whole object: accepted only for offset 0.
 *
 * Time limits of one attempt: connect_timeout_ms to connect,
 * request_timeout_ms from start to end, and a low-speed limit: fewer than
 * HTTP_LOW_SPEED_BYTES per second over HTTP_LOW_SPEED_S seconds ends the
 * attempt (-ETIMEDOUT), so a body that trickles in fails in about
 * min(request_timeout, HTTP_LOW_SPEED_S) instead of holding a reader for the
 * whole request timeout.
 *
 * Thread safety: http_perform() may be called from any number of threads;
 * the pool is protected by its own mutex and a handle is used by one thread
 * at a time.
 */
#ifndef MODELFS_HTTP_H
#define MODELFS_HTTP_H

#include <stddef.h>
#include <stdint.h>

struct http;

struct http_config {
	const char *ca_file;         /* NULL: system trust store */
	int insecure_tls;            /* no peer/host verification */
	int retries;                 /* extra attempts on retryable failures */
	unsigned connect_timeout_ms;
	unsigned request_timeout_ms; /* one attempt, start to end */
};

/* Below 1 KiB/s for 10 s: no store that serves model weights is that slow
 * while healthy; the wait for the first byte counts too. */
#define HTTP_LOW_SPEED_BYTES 1024
#define HTTP_LOW_SPEED_S 10

/* A Retry-After (or OSS's x-oss-qos-delay-time, in ms) on a 503 or 429 is
 * honoured up to this long, and only
 * within the retry budget (it lengthens a backoff, never adds an attempt). */
#define HTTP_RETRY_AFTER_MAX_MS 10000

#define HTTP_MAX_HEADERS 8
#define HTTP_HEADER_MAX 2048

/* Headers for one attempt, rebuilt before every attempt (signatures carry a
 * timestamp). */
struct http_headers {
	size_t n;
	char v[HTTP_MAX_HEADERS][HTTP_HEADER_MAX]; /* "Name: value" */
};

struct http_response;

struct http_request {
	const char *method;   /* "GET", "HEAD", or "POST"/"PUT" with body */
	const char *body;     /* POST/PUT: what is sent ("" for none); a form unless a
			       * prepare'd Content-Type says otherwise. Never logged. */
	const char *url;
	int has_range;
	uint64_t range_off;
	uint64_t range_len;   /* > 0 when has_range */
	/* Called before each attempt to fill the request's headers; returns 0 or
	 * -errno (which ends the request). */
	int (*prepare)(void *arg, struct http_headers *h);
	void *prepare_arg;
	/* Body sink: a fixed buffer (ranged reads: a longer body is an error),
	 * or, with buf NULL, a growing heap buffer of at most body_max bytes.
	 * An error answer's body (not 2xx) always goes to resp->body (64 KiB at
	 * most), never to buf. */
	void *buf;
	size_t buf_len;
	size_t body_max;
	/* Or a streaming sink: a 2xx body goes to @sink piece by piece (an
	 * error answer's body still goes to resp->body, as above).
	 * @sink_reset runs before every attempt: the bytes start over. A
	 * non-zero return of @sink ends the request with that error. */
	int (*sink)(void *arg, const char *data, size_t n);
	void (*sink_reset)(void *arg);
	void *sink_arg;
	/* Fail with -ESTALE, before the first byte reaches the buffer or the
	 * sink, when the answer's ETag is not this one or is missing. */
	const char *expect_etag;
	unsigned timeout_ms;  /* > 0: this request's own bound per attempt */
	/* The object's size, 0 when unknown: a ranged answer's Content-Range
	 * total must be this (else -ESTALE). */
	uint64_t expect_total;
	/* Redirects followed (CDNs), at most this many; 0: none. A redirect
	 * keeps the Range; curl sends the Authorization header only to the
	 * host and port first asked. */
	int max_redirects;
	/* A 200 to a ranged GET (a server that ignores Range) is accepted at
	 * any offset: its first range_off bytes are skipped and the transfer
	 * ends after range_len (needs expect_total; resp->whole_answer is set).
	 * Without it, a 200 is accepted only at offset 0. */
	int range_or_whole;
	/* Called once per 2xx answer, after the checks above and before its
	 * first byte goes anywhere: 0, or an error (with resp->error set) that
	 * ends the request. */
	int (*check)(void *arg, struct http_response *resp);
	void *check_arg;
	/* Headers kept in resp->captured[i], from whichever response of a
	 * redirect chain carried them (NULL-terminated, HTTP_CAPTURE_MAX). */
	const char *const *capture;
};

#define HTTP_RANGE_TOTAL_UNKNOWN UINT64_MAX /* a Content-Range total of "*" */

#define HTTP_CAPTURE_MAX 3

struct http_response {
	long status;             /* 0 when no HTTP answer arrived */
	char *body;              /* heap body (buf NULL in the request); free() it */
	size_t body_len;         /* bytes received, in buf or body */
	char etag[128];          /* ETag header without quotes */
	char last_modified[64];
	char content_type[64];
	uint64_t content_length;
	int has_content_length;
	/* Content-Range of a 206: "bytes START-END/TOTAL" */
	int has_content_range;
	int content_range_bad;   /* present but not of that form */
	uint64_t range_start, range_end, range_total; /* total: or HTTP_RANGE_TOTAL_UNKNOWN */
	unsigned retry_after_ms; /* Retry-After, capped at HTTP_RETRY_AFTER_MAX_MS; 0: none */
	int whole_answer;        /* a 200 served a ranged GET (range_or_whole) */
	char captured[HTTP_CAPTURE_MAX][1024]; /* request's capture headers, "" if absent */
	char error[256];         /* a human line when the request failed */
	int connected;           /* a failed request had connected first */
};

int http_open(const struct http_config *cfg, struct http **out);
void http_close(struct http *h);

/* Perform @req, retrying transport errors, 5xx and 429 up to cfg->retries
 * times with backoff (a Retry-After lengthens the wait, see above).
 * @max_attempts_override > 0 caps the attempts (mount-time probes use 1). A
 * failure that a kept-alive connection can cause (junk left on it by the
 * last answer, the server closing it meanwhile) is tried once more on a
 * fresh connection, outside the retry budget; TLS verification failures
 * never are. An HTTP answer, whatever its status, returns 0 with
 * resp->status set (the body of a retried answer is the last one's).
 * @return 0, or -ECONNREFUSED, -EHOSTUNREACH, -ETIMEDOUT, -EPROTO (TLS or
 * protocol failure, an answer that is not the range asked), -ESTALE (another
 * version: ETag or total size), -EMSGSIZE (body larger than the sink),
 * -ENOMEM, -ECANCELED (http_cancel), -EIO. */
int http_perform(struct http *h, const struct http_request *req, int max_attempts_override,
		 struct http_response *resp);

void http_response_free(struct http_response *resp);

/* Shutdown: every request in flight ends within about a second, and every
 * later one at once, with -ECANCELED; backoff sleeps end too. Irreversible.
 * Safe from any thread (not from a signal handler). */
void http_cancel(struct http *h);

/* The rel="next" target of a Link header value (RFC 8288), as the Hub and
 * GitHub paginate: "<URL>; rel=\"next\", <URL2>; rel=\"last\"". @return 0
 * with @out set, -ENOENT when there is none, -ENAMETOOLONG. */
int http_link_next(const char *link, char *out, size_t out_len);

/* Is @status one we retry (5xx, 429)? */
int http_status_retryable(long status);

#endif
