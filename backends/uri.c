/* Percent-encoding and endpoint parsing, kept apart so they can be tested on
 * their own: a key is signed exactly as it is sent, byte for byte. */
#include "uri.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

int uri_encode(const char *s, int keep_slash, char *out, size_t out_len)
{
	static const char hex[] = "0123456789ABCDEF";
	size_t o = 0;

	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;
		if (isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~' ||
		    (keep_slash && c == '/')) {
			if (o + 2 > out_len)
				return -ENAMETOOLONG;
			out[o++] = (char)c;
		} else {
			if (o + 4 > out_len)
				return -ENAMETOOLONG;
			out[o++] = '%';
			out[o++] = hex[c >> 4];
			out[o++] = hex[c & 15];
		}
	}
	if (o + 1 > out_len)
		return -ENAMETOOLONG;
	out[o] = '\0';
	return (int)o;
}

int uri_parse_endpoint(const char *url, struct uri_endpoint *ep)
{
	const char *p, *host_end, *slash;
	size_t hlen;

	memset(ep, 0, sizeof(*ep));
	if (strncasecmp(url, "https://", 8) == 0) {
		ep->https = 1;
		p = url + 8;
	} else if (strncasecmp(url, "http://", 7) == 0) {
		p = url + 7;
	} else {
		return -EINVAL;
	}
	slash = strchr(p, '/');
	if (!slash)
		slash = p + strlen(p);
	if (strchr(p, '?') || strchr(p, '#') || strchr(p, '@'))
		return -EINVAL;
	if (*p == '[') {
		host_end = memchr(p, ']', (size_t)(slash - p));
		if (!host_end)
			return -EINVAL;
		host_end++;
	} else {
		host_end = memchr(p, ':', (size_t)(slash - p));
		if (!host_end)
			host_end = slash;
	}
	hlen = (size_t)(host_end - p);
	if (hlen == 0 || hlen >= sizeof(ep->host))
		return -EINVAL;
	memcpy(ep->host, p, hlen);
	ep->host[hlen] = '\0';
	for (size_t i = 0; i < hlen; i++)
		if (!isalnum((unsigned char)ep->host[i]) && !strchr("-.[]:_", ep->host[i]))
			return -EINVAL;
	if (*host_end == ':') {
		char *e;
		long port = strtol(host_end + 1, &e, 10);
		if (e != slash || port <= 0 || port > 65535)
			return -EINVAL;
		if (port != (ep->https ? 443 : 80))
			ep->port = (int)port;
	} else if (host_end != slash) {
		return -EINVAL;
	}
	if (*slash) {
		size_t plen = strlen(slash);
		while (plen > 0 && slash[plen - 1] == '/')
			plen--;
		if (plen >= sizeof(ep->path))
			return -EINVAL;
		memcpy(ep->path, slash, plen);
		ep->path[plen] = '\0';
	}
	return 0;
}

int uri_host_is_ip_or_local(const char *host)
{
	unsigned char buf[16];

	if (host[0] == '[')
		return 1;
	if (strcasecmp(host, "localhost") == 0)
		return 1;
	return inet_pton(AF_INET, host, buf) == 1;
}

static int hex_digit(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

int uri_decode(const char *s, size_t n, char *out, size_t out_len, size_t *out_n)
{
	size_t o = 0;

	for (size_t i = 0; i < n; i++) {
		char c = s[i];
		if (o + 1 >= out_len)
			return -ENAMETOOLONG;
		if (c == '%') {
			int h, l;
			if (i + 2 >= n)
				return -EINVAL;
			h = hex_digit(s[i + 1]);
			l = hex_digit(s[i + 2]);
			if (h < 0 || l < 0 || (h == 0 && l == 0))
				return -EINVAL;
			c = (char)(h << 4 | l);
			i += 2;
		}
		out[o++] = c;
	}
	out[o] = '\0';
	if (out_n)
		*out_n = o;
	return 0;
}
