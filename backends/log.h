/* Logging for every layer: stderr in the foreground; once detached, a log
 * file, syslog, or the stderr the daemon was started with (no syslog socket,
 * as in most containers).
 * Thread-safe (one write per line). Never pass a secret to these functions. */
#ifndef MODELFS_LOG_H
#define MODELFS_LOG_H

#include <stdatomic.h>

enum log_level { LOG_LVL_ERROR, LOG_LVL_WARN, LOG_LVL_INFO, LOG_LVL_DEBUG };

/* @to_syslog: 0 = stderr, 1 = syslog. @level: most verbose level printed. */
void log_setup(int to_syslog, enum log_level level);
/* Write lines to @fd (a log file, or a saved stderr) instead of syslog. */
void log_to_fd(int fd);
/* Is there a syslog socket (/dev/log) that takes messages? */
int log_syslog_available(void);
/* One JSON object a line from now on: {"time", "level", "message",
 * "mount"} (@mount: the mountpoint, copied). Call before threads start. */
void log_set_json(const char *mount);
int log_enabled(enum log_level level);
void log_msg(enum log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define log_error(...) log_msg(LOG_LVL_ERROR, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_LVL_WARN, __VA_ARGS__)
#define log_info(...) log_msg(LOG_LVL_INFO, __VA_ARGS__)
#define log_debug(...)                                                       \
	do {                                                                 \
		if (log_enabled(LOG_LVL_DEBUG))                              \
			log_msg(LOG_LVL_DEBUG, __VA_ARGS__);                 \
	} while (0)

/* Log at most once per call site for the life of the process: for conditions
 * that would otherwise repeat on every read (a full cache disk, ...). */
#define log_once(level, ...)                                                 \
	do {                                                                 \
		static atomic_int once_;                                     \
		if (!atomic_exchange(&once_, 1))                             \
			log_msg(level, __VA_ARGS__);                         \
	} while (0)

#endif
