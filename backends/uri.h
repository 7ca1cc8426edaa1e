/* URL pieces for HTTP backends: percent-encoding and endpoint parsing. */
#ifndef MODELFS_URI_H
#define MODELFS_URI_H

#include <stddef.h>

/* Percent-encode @s per RFC 3986 (unreserved A-Z a-z 0-9 - _ . ~ kept; '/'
 * also kept when @keep_slash). Upper-case hex, as SigV4 requires.
 * @return the encoded length, or -ENAMETOOLONG when @out_len is too small. */
int uri_encode(const char *s, int keep_slash, char *out, size_t out_len);

struct uri_endpoint {
	int https;
	char host[256];  /* "127.0.0.1", "s3.us-east-1.amazonaws.com", "[::1]" */
	int port;        /* 0 = the scheme's default */
	char path[256];  /* base path without trailing '/', "" for none */
};

/* Decode the %XX escapes of @s[0..@n) into @out (NUL-terminated); '+' stays
 * '+'. *@out_n (may be NULL) gets the length. @return 0, -EINVAL for a bad
 * escape or an escaped NUL, -ENAMETOOLONG when @out_len is too small. */
int uri_decode(const char *s, size_t n, char *out, size_t out_len, size_t *out_n);

/* Parse "http[s]://host[:port][/path]". @return 0 or -EINVAL. */
int uri_parse_endpoint(const char *url, struct uri_endpoint *ep);

/* Is @host an IP literal or localhost (where virtual-host style cannot work)? */
int uri_host_is_ip_or_local(const char *host);

#endif
