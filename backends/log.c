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
	char line[1024];
	int n = 0;
	va_list ap;

	if (level > log_max)
		return;
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
