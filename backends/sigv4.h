/* Signature Version 4 request signing (OpenSSL HMAC-SHA256), in the two
 * dialects that share its scheme: AWS's (AWS4-HMAC-SHA256) and Alibaba OSS's
 * (OSS4-HMAC-SHA256: another key prefix and scope terminator, the names of
 * the signed headers that are not signed by default listed as
 * AdditionalHeaders, a query name without a value signed bare).
 *
 * The signer is pure: it takes an already-built request description and
 * returns the Authorization header value, so it can be checked against the
 * vendors' published test vectors without any network.
 */
#ifndef MODELFS_SIGV4_H
#define MODELFS_SIGV4_H

#include <stddef.h>

/* SHA-256 of the empty string, the payload hash of every GET/HEAD we send. */
#define SIGV4_EMPTY_SHA256 "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

struct sigv4_header {
	const char *name;  /* any case; signed lower-cased */
	const char *value; /* leading/trailing blanks trimmed, inner runs folded */
};

struct sigv4_dialect {
	const char *algorithm;  /* "AWS4-HMAC-SHA256" */
	const char *key_prefix; /* "AWS4": prepended to the secret for the first HMAC */
	const char *terminator; /* "aws4_request": the scope's last part */
	int oss;                /* OSS's canonical request and header (above) */
};

extern const struct sigv4_dialect sigv4_aws, sigv4_oss;

struct sigv4_request {
	const struct sigv4_dialect *dialect;
	const char *method;        /* "GET", "HEAD", ... */
	const char *path;          /* canonical URI: already URI-encoded, starts with '/' */
	const char *query;         /* raw query string without '?', may be NULL or "";
	                            * parameters are sorted and re-encoded here */
	const struct sigv4_header *headers; /* headers to sign: AWS: must include host
	                                     * and x-amz-date; OSS: x-oss-date, and every
	                                     * content-type, content-md5, x-oss-* sent */
	size_t n_headers;
	const char *payload_hash;  /* lower-case hex SHA-256 of the body */
	const char *amz_date;      /* "YYYYMMDDTHHMMSSZ" (x-amz-date, x-oss-date) */
	const char *region;        /* "us-east-1", "cn-hangzhou" */
	const char *service;       /* "s3", "oss" */
	const char *access_key;
	const char *secret_key;
};

/* Build the canonical query string of @query (sorted by encoded name, then
 * value; names and values URI-encoded per SigV4) into @out.
 * @return 0, or -ENAMETOOLONG when @out_len is too small, -EINVAL on bad
 * percent-encoding in @query. */
int sigv4_canonical_query(const char *query, char *out, size_t out_len);
/* The same; @bare_empty: a parameter without a value is signed as "name"
 * (OSS), not "name=" (AWS). */
int sigv4_canonical_query_d(const char *query, int bare_empty, char *out, size_t out_len);

/* Compute the Authorization header value for @req into @out, e.g.
 * "AWS4-HMAC-SHA256 Credential=AKID/20150830/us-east-1/s3/aws4_request,
 *  SignedHeaders=host;x-amz-date, Signature=<64 hex>", or for OSS
 * "OSS4-HMAC-SHA256 Credential=AK/20231203/cn-hangzhou/oss/aliyun_v4_request,
 *  AdditionalHeaders=host,Signature=<64 hex>" (the SDKs' spelling: no blanks,
 * AdditionalHeaders only when there are some).
 * When @canonical_out is not NULL the canonical request is also copied there
 * (for debugging and tests).
 * @return 0, -ENAMETOOLONG when a buffer is too small, -EINVAL on bad input,
 * -ENOMEM. */
int sigv4_sign(const struct sigv4_request *req, char *out, size_t out_len,
	       char *canonical_out, size_t canonical_len);

/* Lower-case hex SHA-256 of @len bytes at @data into @hex (65 bytes). */
void sigv4_sha256_hex(const void *data, size_t len, char hex[65]);

#endif
