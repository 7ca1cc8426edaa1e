/* A strict, bounded XML reader for S3 answers.
 *
 * xml_walk() turns the document into open/close events; the close event of a
 * leaf element carries its decoded text. The list and error parsers are small
 * state machines over those events. Text is decoded into one heap buffer that
 * grows with the largest leaf, so memory is O(largest element), not O(page).
 */
#include "s3xml.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define XML_MAX_DEPTH 16
#define XML_MAX_NAME 64

struct xml_events {
	void (*open)(void *arg, int depth, const char *name);
	/* @text is NUL-terminated and decoded; NULL for an element with children */
	int (*close)(void *arg, int depth, const char *name, const char *text, size_t text_len);
	void *arg;
};

struct textbuf {
	char *p;
	size_t len, cap;
};

static int tb_put(struct textbuf *t, const char *s, size_t n)
{
	if (t->len + n + 1 > t->cap) {
		size_t ncap = t->cap ? t->cap : 256;
		char *np;
		while (ncap < t->len + n + 1)
			ncap *= 2;
		np = realloc(t->p, ncap);
		if (!np)
			return -ENOMEM;
		t->p = np;
		t->cap = ncap;
	}
	memcpy(t->p + t->len, s, n);
	t->len += n;
	t->p[t->len] = '\0';
	return 0;
}

static int utf8_put(struct textbuf *t, unsigned long cp)
{
	char u[4];
	size_t n;

	if (cp == 0 || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
		return -EPROTO;
	if (cp < 0x80) {
		u[0] = (char)cp;
		n = 1;
	} else if (cp < 0x800) {
		u[0] = (char)(0xC0 | cp >> 6);
		u[1] = (char)(0x80 | (cp & 0x3F));
		n = 2;
	} else if (cp < 0x10000) {
		u[0] = (char)(0xE0 | cp >> 12);
		u[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
		u[2] = (char)(0x80 | (cp & 0x3F));
		n = 3;
	} else {
		u[0] = (char)(0xF0 | cp >> 18);
		u[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
		u[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
		u[3] = (char)(0x80 | (cp & 0x3F));
		n = 4;
	}
	return tb_put(t, u, n);
}

/* Append text [s, e) decoding entities. */
static int decode_text(struct textbuf *t, const char *s, const char *e)
{
	while (s < e) {
		const char *amp = memchr(s, '&', (size_t)(e - s));
		const char *semi;
		size_t n;
		int err;

		if (!amp)
			return tb_put(t, s, (size_t)(e - s));
		err = tb_put(t, s, (size_t)(amp - s));
		if (err)
			return err;
		semi = memchr(amp, ';', (size_t)(e - amp));
		if (!semi || semi - amp > 12)
			return -EPROTO;
		n = (size_t)(semi - amp - 1);
		if (n == 3 && memcmp(amp + 1, "amp", 3) == 0)
			err = tb_put(t, "&", 1);
		else if (n == 2 && memcmp(amp + 1, "lt", 2) == 0)
			err = tb_put(t, "<", 1);
		else if (n == 2 && memcmp(amp + 1, "gt", 2) == 0)
			err = tb_put(t, ">", 1);
		else if (n == 4 && memcmp(amp + 1, "quot", 4) == 0)
			err = tb_put(t, "\"", 1);
		else if (n == 4 && memcmp(amp + 1, "apos", 4) == 0)
			err = tb_put(t, "'", 1);
		else if (n >= 2 && amp[1] == '#') {
			unsigned long cp = 0;
			int hex = amp[2] == 'x' || amp[2] == 'X';
			const char *d = amp + 2 + hex;
			if (d == semi)
				return -EPROTO;
			for (; d < semi; d++) {
				int v;
				if (*d >= '0' && *d <= '9')
					v = *d - '0';
				else if (hex && *d >= 'a' && *d <= 'f')
					v = *d - 'a' + 10;
				else if (hex && *d >= 'A' && *d <= 'F')
					v = *d - 'A' + 10;
				else
					return -EPROTO;
				cp = cp * (hex ? 16 : 10) + (unsigned long)v;
				if (cp > 0x10FFFF)
					return -EPROTO;
			}
			err = utf8_put(t, cp);
		} else
			return -EPROTO;
		if (err)
			return err;
		s = semi + 1;
	}
	return 0;
}

static const char *find_str(const char *p, const char *end, const char *needle)
{
	size_t n = strlen(needle);

	for (; p + n <= end; p++)
		if (*p == *needle && memcmp(p, needle, n) == 0)
			return p;
	return NULL;
}

static int is_name_char(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	       c == '_' || c == '-' || c == '.' || c == ':';
}

static int xml_walk(const char *xml, size_t len, const struct xml_events *ev)
{
	char stack[XML_MAX_DEPTH][XML_MAX_NAME];
	int has_child[XML_MAX_DEPTH];
	int depth = 0, seen_root = 0, err = 0;
	const char *p = xml, *end = xml + len;
	struct textbuf text = {0};

	while (p < end) {
		const char *lt = memchr(p, '<', (size_t)(end - p));
		const char *q;

		if (!lt)
			lt = end;
		if (lt > p) {
			if (depth == 0) {
				/* only blanks outside the root */
				for (q = p; q < lt; q++)
					if (*q != ' ' && *q != '\n' && *q != '\r' && *q != '\t') {
						err = -EPROTO;
						goto out;
					}
			} else if ((err = decode_text(&text, p, lt)) != 0) {
				goto out;
			}
		}
		if (lt == end)
			break;
		p = lt;
		if (end - p >= 4 && memcmp(p, "<!--", 4) == 0) {
			q = find_str(p + 4, end, "-->");
			if (!q) {
				err = -EPROTO;
				goto out;
			}
			p = q + 3;
		} else if (end - p >= 9 && memcmp(p, "<![CDATA[", 9) == 0) {
			q = find_str(p + 9, end, "]]>");
			if (!q || depth == 0) {
				err = -EPROTO;
				goto out;
			}
			if ((err = tb_put(&text, p + 9, (size_t)(q - p - 9))) != 0)
				goto out;
			p = q + 3;
		} else if (end - p >= 2 && p[1] == '?') {
			q = find_str(p + 2, end, "?>");
			if (!q || seen_root) {
				err = -EPROTO;
				goto out;
			}
			p = q + 2;
		} else if (end - p >= 2 && p[1] == '!') {
			/* <!DOCTYPE ...>: no internal subsets in S3 answers */
			q = memchr(p, '>', (size_t)(end - p));
			if (!q || seen_root || memchr(p, '[', (size_t)(q - p))) {
				err = -EPROTO;
				goto out;
			}
			p = q + 1;
		} else {
			int closing = end - p >= 2 && p[1] == '/';
			const char *n0 = p + 1 + closing, *n1 = n0;
			size_t nlen;
			int self_close = 0;

			while (n1 < end && is_name_char(*n1))
				n1++;
			nlen = (size_t)(n1 - n0);
			q = memchr(n1, '>', (size_t)(end - n1));
			if (nlen == 0 || nlen >= XML_MAX_NAME || !q) {
				err = -EPROTO;
				goto out;
			}
			if (!closing && q > n1 && q[-1] == '/')
				self_close = 1;
			if (closing) {
				const char *txt;
				if (depth == 0 || strlen(stack[depth - 1]) != nlen ||
				    memcmp(stack[depth - 1], n0, nlen) != 0) {
					err = -EPROTO;
					goto out;
				}
				txt = has_child[depth - 1] ? NULL : (text.p ? text.p : "");
				err = ev->close(ev->arg, depth, stack[depth - 1], txt,
						txt ? text.len : 0);
				if (err)
					goto out;
				depth--;
			} else {
				if (depth == 0 && seen_root) {
					err = -EPROTO;
					goto out;
				}
				if (depth == XML_MAX_DEPTH) {
					err = -EPROTO;
					goto out;
				}
				if (depth > 0)
					has_child[depth - 1] = 1;
				memcpy(stack[depth], n0, nlen);
				stack[depth][nlen] = '\0';
				has_child[depth] = 0;
				depth++;
				seen_root = 1;
				ev->open(ev->arg, depth, stack[depth - 1]);
				if (self_close) {
					err = ev->close(ev->arg, depth, stack[depth - 1], "", 0);
					if (err)
						goto out;
					depth--;
				}
			}
			text.len = 0;
			if (text.p)
				text.p[0] = '\0';
			p = q + 1;
		}
	}
	if (depth != 0 || !seen_root)
		err = -EPROTO;
out:
	free(text.p);
	return err;
}

long long s3xml_parse_time(const char *s)
{
	struct tm tm = {0};
	const char *rest;
	time_t t;

	if (!s)
		return -1;
	rest = strptime(s, "%Y-%m-%dT%H:%M:%S", &tm);
	if (!rest)
		return -1;
	if (*rest == '.') {
		rest++;
		while (*rest >= '0' && *rest <= '9')
			rest++;
	}
	if (*rest == 'Z')
		rest++;
	if (*rest != '\0')
		return -1;
	t = timegm(&tm);
	return (long long)t;
}

/* ---- ListObjectsV2 ---- */

struct list_state {
	backend_list_cb cb;
	void *arg;
	struct s3xml_page *page;
	int bad_root; /* not a ListBucketResult: no callback, ever */
	int in_contents, in_prefixes;
	char *key;
	int have_size;
	const char *bad; /* why this <Contents> is skipped, NULL if fine */
	struct backend_object obj;
};

static void list_open(void *arg, int depth, const char *name)
{
	struct list_state *s = arg;

	if (depth == 1) {
		snprintf(s->page->root, sizeof(s->page->root), "%s", name);
		s->bad_root = strcmp(name, "ListBucketResult") != 0;
	} else if (depth == 2 && strcmp(name, "Contents") == 0) {
		s->in_contents = 1;
		free(s->key);
		s->key = NULL;
		s->have_size = 0;
		s->bad = NULL;
		memset(&s->obj, 0, sizeof(s->obj));
	} else if (depth == 2 && strcmp(name, "CommonPrefixes") == 0) {
		s->in_prefixes = 1;
	}
}

static int parse_u64(const char *t, uint64_t *out)
{
	char *e;
	unsigned long long v;

	if (!*t || *t == '-' || *t == '+' || *t == ' ')
		return -EPROTO;
	errno = 0;
	v = strtoull(t, &e, 10);
	if (errno || *e)
		return -EPROTO;
	*out = v;
	return 0;
}

/* Count a skipped entry; remember the first. */
static void list_skip(struct list_state *s, const char *key, const char *why)
{
	struct s3xml_page *pg = s->page;

	if (pg->n_skipped++ == 0) {
		snprintf(pg->skip_key, sizeof(pg->skip_key), "%s", key ? key : "");
		pg->skip_why = why;
	}
}

static int list_close(void *arg, int depth, const char *name, const char *text, size_t len)
{
	struct list_state *s = arg;
	int err;

	if (s->bad_root)
		return -EPROTO;
	if (depth == 2) {
		if (strcmp(name, "IsTruncated") == 0 && text) {
			s->page->truncated = strcmp(text, "true") == 0;
		} else if (strcmp(name, "NextContinuationToken") == 0 && text) {
			free(s->page->next_token);
			s->page->next_token = strdup(text);
			if (!s->page->next_token)
				return -ENOMEM;
		} else if (strcmp(name, "Contents") == 0) {
			s->in_contents = 0;
			if (!s->bad && !s->key)
				s->bad = "no Key";
			if (!s->bad && !s->have_size)
				s->bad = "no Size";
			if (s->bad) {
				list_skip(s, s->key, s->bad);
				free(s->key);
				s->key = NULL;
				return 0;
			}
			s->obj.key = s->key;
			s->page->n_keys++;
			s->page->key_bytes += strlen(s->key);
			err = s->cb(s->arg, s->key, &s->obj);
			free(s->key);
			s->key = NULL;
			return err;
		} else if (strcmp(name, "CommonPrefixes") == 0) {
			s->in_prefixes = 0;
		}
		return 0;
	}
	if (depth != 3 || !text)
		return 0;
	if (s->in_contents) {
		if (strcmp(name, "Key") == 0) {
			if (strlen(text) != len)
				return -EPROTO; /* embedded NUL */
			free(s->key);
			s->key = strdup(text);
			if (!s->key)
				return -ENOMEM;
			if (len > S3XML_KEY_MAX && !s->bad)
				s->bad = "key longer than S3's 1024 bytes";
		} else if (strcmp(name, "Size") == 0) {
			if (parse_u64(text, &s->obj.size)) {
				if (!s->bad)
					s->bad = "Size not a number of bytes";
			} else if (s->obj.size > BACKEND_SIZE_MAX) {
				if (!s->bad)
					s->bad = "Size above 2^62";
			}
			s->have_size = 1;
		} else if (strcmp(name, "LastModified") == 0) {
			long long t = s3xml_parse_time(text);
			s->obj.mtime = t < 0 ? 0 : t;
		} else if (strcmp(name, "ETag") == 0) {
			size_t n = len;
			if (n >= 2 && text[0] == '"' && text[n - 1] == '"') {
				text++;
				n -= 2;
			}
			if (n >= sizeof(s->obj.etag)) {
				if (!s->bad)
					s->bad = "ETag longer than 127 bytes";
				return 0;
			}
			memcpy(s->obj.etag, text, n);
			s->obj.etag[n] = '\0';
		}
	} else if (s->in_prefixes && strcmp(name, "Prefix") == 0) {
		if (strlen(text) != len)
			return -EPROTO; /* embedded NUL */
		if (len > S3XML_KEY_MAX) {
			list_skip(s, text, "prefix longer than S3's 1024 bytes");
			return 0;
		}
		s->page->n_keys++;
		s->page->key_bytes += len;
		return s->cb(s->arg, text, NULL);
	}
	return 0;
}

int s3xml_parse_list(const char *xml, size_t len, backend_list_cb cb, void *arg,
		     struct s3xml_page *page)
{
	struct list_state s = {.cb = cb, .arg = arg, .page = page};
	struct xml_events ev = {list_open, list_close, &s};
	int err;

	memset(page, 0, sizeof(*page));
	err = xml_walk(xml, len, &ev);
	free(s.key);
	if (!err && page->truncated && (!page->next_token || !*page->next_token))
		err = -EPROTO; /* would loop forever */
	if (err) {
		free(page->next_token);
		page->next_token = NULL;
	}
	return err;
}

/* ---- <Error> ---- */

struct err_state {
	char *code, *msg, *rid;
	size_t code_len, msg_len, rid_len;
	int is_error;
};

static void err_open(void *arg, int depth, const char *name)
{
	struct err_state *s = arg;

	if (depth == 1 && strcmp(name, "Error") == 0)
		s->is_error = 1;
}

static void copy_trunc(char *dst, size_t dst_len, const char *src)
{
	size_t n = strlen(src);

	if (dst_len == 0)
		return;
	if (n >= dst_len)
		n = dst_len - 1;
	memcpy(dst, src, n);
	dst[n] = '\0';
}

static int err_close(void *arg, int depth, const char *name, const char *text, size_t len)
{
	struct err_state *s = arg;

	(void)len;
	if (depth != 2 || !text || !s->is_error)
		return 0;
	if (strcmp(name, "Code") == 0)
		copy_trunc(s->code, s->code_len, text);
	else if (strcmp(name, "Message") == 0)
		copy_trunc(s->msg, s->msg_len, text);
	else if (strcmp(name, "RequestId") == 0)
		copy_trunc(s->rid, s->rid_len, text);
	return 0;
}

int s3xml_parse_error(const char *xml, size_t len, char *code, size_t code_len, char *msg,
		      size_t msg_len)
{
	return s3xml_parse_error_rid(xml, len, code, code_len, msg, msg_len, NULL, 0);
}

int s3xml_parse_error_rid(const char *xml, size_t len, char *code, size_t code_len, char *msg,
			  size_t msg_len, char *rid, size_t rid_len)
{
	struct err_state s = {code, msg, rid, code_len, msg_len, rid_len, 0};
	struct xml_events ev = {err_open, err_close, &s};
	int err;

	if (code_len)
		code[0] = '\0';
	if (msg_len)
		msg[0] = '\0';
	if (rid_len)
		rid[0] = '\0';
	if (!xml || len == 0)
		return -EPROTO;
	err = xml_walk(xml, len, &ev);
	if (err || !s.is_error) {
		if (code_len)
			code[0] = '\0';
		if (msg_len)
			msg[0] = '\0';
		if (rid_len)
			rid[0] = '\0';
		return -EPROTO;
	}
	return 0;
}
