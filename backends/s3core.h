/* The REST core shared by the stores that speak S3's protocol with their
 * own signatures and credentials: S3 itself (s3.c) and Alibaba OSS (oss.c).
 * ListObjectsV2 pages and their bounds, HEAD, ranged GET with If-Match and
 * the ETag and Content-Range checks, status -> errno: one implementation, in
 * s3.c. A flavor says what differs: the scheme for messages, how a request
 * is signed, and a header ranged GETs carry. Internal to backends/.
 */
#ifndef MODELFS_S3CORE_H
#define MODELFS_S3CORE_H

#include <pthread.h>
#include <stdint.h>

#include "backend.h"
#include "http.h"
#include "keys.h"
#include "uri.h"

struct s3;
struct s3_req;

struct s3_flavor {
	const char *scheme; /* "s3", "oss": in messages */
	/* Add the date, credentials and Authorization headers to @h (Host and
	 * If-Match are there already), for this attempt, with @k (NULL:
	 * anonymous, the date only). */
	int (*sign)(struct s3 *s, const struct s3_req *r, const struct keyset *k,
		    struct http_headers *h);
	const char *range_header; /* "Name: value" on ranged GETs, or NULL */
	/* listings ask for encoding-type=url (keys, prefixes and tokens come
	 * percent-encoded, so a key XML 1.0 cannot carry still lists) */
	int url_listing;
};

struct s3 {
	struct backend base; /* must be first */
	const struct s3_flavor *fl;
	struct http *http;
	struct uri_endpoint ep;
	char *bucket;
	char *region;
	struct keyring *keys; /* what requests are signed with (anonymous: none) */
	int path_style;
	int no_etag_match;
	int sigv1;          /* OSS: the old signature (HMAC-SHA1) */
	char host_hdr[300]; /* Host header value, with the bucket when virtual-host */
	char base_url[600]; /* scheme://host[:port] */
	char base_path[600]; /* "/bucket" (path style) or "" plus the endpoint's path */
};

/* One request being prepared: what the signer needs on every attempt. */
struct s3_req {
	struct s3 *s3;
	const char *method;
	const char *path;  /* encoded path as sent: "/bucket/key" or "/key" (virtual host) */
	const char *query; /* encoded query string or "" */
	const char *if_match;
	int ranged;        /* a ranged GET of an object */
};

/* With s->bucket set: parse @endpoint, choose the style (@path_style -1:
 * path style for IP and localhost), build the Host and base URL, open the
 * HTTP client. @return 0, -EINVAL for a bad endpoint URL, -ENOMEM. */
int s3core_setup(struct s3 *s, const char *endpoint, int path_style,
		 const struct backend_config *cfg);

/* The operations of backend.h over struct s3. */
void s3core_close(struct backend *be);
int s3core_check(struct backend *be, const char *prefix, char *msg, size_t msg_len);
int s3core_list(struct backend *be, const char *prefix, const char *delimiter,
		backend_list_cb cb, void *arg);
int s3core_stat(struct backend *be, const char *key, struct backend_object *out);
int s3core_read(struct backend *be, const struct backend_ref *obj, uint64_t off, size_t len,
		void *buf, size_t *got);
int s3core_read_stream(struct backend *be, const struct backend_ref *obj, uint64_t off,
		       uint64_t len, int (*sink)(void *arg, const char *data, size_t n),
		       void (*reset)(void *arg), void *arg);
void s3core_cancel(struct backend *be);
const char *s3core_endpoint(struct backend *be);

#endif
