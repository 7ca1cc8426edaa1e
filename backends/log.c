/* Logging: one formatted line per call, written with a single write(2) to
 * stderr (or a log file) or handed to syslog(3), so lines from worker
 * threads never mix. */
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

/* Set before threads start (log_setup, log_to_fd), read by every thread. */
static int log_to_syslog;
static int log_fd = STDERR_FILENO;
static enum log_level log_max = LOG_LVL_INFO;
static int log_json;
static char log_mount[1024]; /* JSON-escaped, for log_json */

/* Append @s to @out as the inside of a JSON string: quotes, backslashes
 * and control bytes escaped, and a byte that is not valid UTF-8 written
 * as \u00XX (its Latin-1 reading), so every line parses. */
static size_t json_escape(char *out, size_t cap, const char *s)
{
	size_t o = 0;
	const unsigned char *p = (const unsigned char *)s;

	while (*p && o + 8 < cap) {
		unsigned char c = *p;
		int len = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
		int ok = len > 0;
		for (int i = 1; ok && i < len; i++)
			ok = (p[i] & 0xc0) == 0x80;
		if (c == '"' || c == '\\') {
			out[o++] = '\\';
			out[o++] = (char)c;
			p++;
		} else if (c < 0x20 || !ok) {
			o += (size_t)snprintf(out + o, cap - o, "\\u%04x", c);
			p++;
		} else {
			if (o + (size_t)len >= cap)
				break;
			memcpy(out + o, p, (size_t)len);
			o += (size_t)len;
			p += len;
		}
	}
	out[o] = '\0';
	return o;
}

void log_set_json(const char *mount)
{
	log_json = 1;
	json_escape(log_mount, sizeof(log_mount), mount ? mount : "");
}

void log_setup(int to_syslog, enum log_level level)
{
	log_to_syslog = to_syslog;
	log_max = level;
	if (to_syslog)
		openlog("modelfs", LOG_PID, LOG_DAEMON);
}

void log_to_fd(int fd)
{
	log_to_syslog = 0;
	log_fd = fd;
}

int log_syslog_available(void)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX, .sun_path = "/dev/log"};
	int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0), ok;

	if (fd < 0)
		return 0;
	ok = connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0;
	close(fd);
	return ok;
}

int log_enabled(enum log_level level) { return level <= log_max; }

void log_msg(enum log_level level, const char *fmt, ...)
{
	static const char *const names[] = {"error", "warning", "info", "debug"};
	static const int prio[] = {LOG_ERR, LOG_WARNING, LOG_INFO, LOG_DEBUG};
	char line[4096];
	int n = 0;
	va_list ap;

	if (level > log_max)
		return;
	if (log_json) {
		char msg[1024], esc[2048];
		struct timespec ts;
		struct tm tm;
		va_start(ap, fmt);
		vsnprintf(msg, sizeof(msg), fmt, ap);
		va_end(ap);
		json_escape(esc, sizeof(esc), msg);
		clock_gettime(CLOCK_REALTIME, &ts);
		gmtime_r(&ts.tv_sec, &tm);
		n = snprintf(line, sizeof(line), "{\"time\":\"%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ\","
			     "\"level\":\"%s\",\"message\":\"%s\",\"mount\":\"%s\"}",
			     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
			     tm.tm_sec, ts.tv_nsec / 1000000, names[level], esc, log_mount);
		if (n < 0 || (size_t)n >= sizeof(line) - 1) /* cut: still one object */
			n = snprintf(line, sizeof(line), "{\"level\":\"%s\",\"message\":\"(a line "
				     "too long to log)\",\"mount\":\"%s\"}", names[level], log_mount);
		if (log_to_syslog) {
			syslog(prio[level], "%s", line);
			return;
		}
		line[n++] = '\n';
		if (write(log_fd, line, (size_t)n) < 0) {
			/* nowhere left to report it */
		}
		return;
	}
	if (!log_to_syslog) {
		struct timespec ts;
		struct tm tm;
		clock_gettime(CLOCK_REALTIME, &ts);
		localtime_r(&ts.tv_sec, &tm);
		n = snprintf(line, sizeof(line), "%02d:%02d:%02d.%03ld modelfs %s: ", tm.tm_hour,
			     tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000, names[level]);
	}
	va_start(ap, fmt);
	vsnprintf(line + n, sizeof(line) - (size_t)n - 1, fmt, ap);
	va_end(ap);
	if (log_to_syslog) {
		syslog(prio[level], "%s", line);
		return;
	}
	n = (int)strlen(line);
	line[n++] = '\n';
	if (write(log_fd, line, (size_t)n) < 0) {
		/* nowhere left to report it */
	}
}
