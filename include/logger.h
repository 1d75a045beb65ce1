/* logger.h -- one line per outcome on stderr, in logfmt (default) or JSON, with the Kafka position
 * when known. Must not: format secrets; callers pass no API keys, signatures or passwords to it. */
#ifndef CSPDNS_LOGGER_H
#define CSPDNS_LOGGER_H

#include <stdint.h>

typedef enum { LOG_LVL_DEBUG = 0, LOG_LVL_INFO = 1, LOG_LVL_WARN = 2, LOG_LVL_ERROR = 3 } log_level;

/* "debug", "info", "warn", "error" -> level; -1 for anything else. */
int log_level_parse(const char *s);
void log_set_level(log_level lvl);
int log_enabled(log_level lvl);

typedef enum { LOG_FORMAT_LOGFMT = 0, LOG_FORMAT_JSON = 1 } log_format;

/* "logfmt", "json" (LOG_FORMAT) -> format; -1 for anything else. */
int log_format_parse(const char *s);
/* Selects the line format for all later calls; logfmt until called. Set it once at start-up, before
 * other threads log. */
void log_set_format(log_format fmt);

/* Writes, in logfmt: ts=<UTC ISO-8601 ms> level=<lvl> mod=<module> msg="<formatted>"
 * or in JSON: {"ts":"<UTC ISO-8601 ms>","level":"<lvl>","mod":"<module>","msg":"<formatted>"}
 * The message (in JSON, every value) is quoted and escaped so each call is exactly one line; JSON
 * strings stay valid UTF-8 (invalid bytes become U+FFFD). Messages longer than 4095 bytes are cut.
 */
void log_msg(log_level lvl, const char *module, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Same, with pos=<topic>/<partition>@<offset> (JSON: "pos":"<topic>/<partition>@<offset>") before
 * msg. */
void log_at(log_level lvl, const char *module, const char *topic, int32_t partition, int64_t offset,
            const char *fmt, ...) __attribute__((format(printf, 6, 7)));

/* Continuation lines (a Lua traceback): each input line is logged with the same prefix. */
void log_lines(log_level lvl, const char *module, const char *text);

#endif
