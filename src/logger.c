/* logger.c -- levelled, one-line-per-outcome logging to stderr in logfmt or JSON.
 * Must not: buffer or drop lines, or know about any module but the json/textbuf helpers; callers
 * never pass secrets. */
#include "logger.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "json.h"
#include "textbuf.h"

static volatile int current_level = LOG_LVL_INFO;
static volatile int current_format = LOG_FORMAT_LOGFMT;

static const char *const level_names[] = {"debug", "info", "warn", "error"};

int log_level_parse(const char *s)
{
    for (int i = 0; i < 4; i++)
        if (strcasecmp(s, level_names[i]) == 0)
            return i;
    if (strcasecmp(s, "warning") == 0)
        return LOG_LVL_WARN;
    return -1;
}

void log_set_level(log_level lvl)
{
    current_level = lvl;
}

int log_enabled(log_level lvl)
{
    return (int)lvl >= current_level;
}

int log_format_parse(const char *s)
{
    if (strcasecmp(s, "logfmt") == 0)
        return LOG_FORMAT_LOGFMT;
    if (strcasecmp(s, "json") == 0)
        return LOG_FORMAT_JSON;
    return -1;
}

void log_set_format(log_format fmt)
{
    current_format = fmt;
}

static void timestamp(char out[32])
{
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    size_t n = strftime(out, 32, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out + n, 32 - n, ".%03ldZ", ts.tv_nsec / 1000000);
}

/* Quotes msg so that one call is always one line, whatever the message holds. */
static void emit_logfmt(const char *ts, log_level lvl, const char *module, const char *pos,
                        const char *msg)
{
    char line[8192];
    size_t o = 0;
    int n = snprintf(line, sizeof line, "ts=%s level=%s mod=%s%s%s msg=\"", ts, level_names[lvl],
                     module, pos ? " pos=" : "", pos ? pos : "");
    o = n > 0 && (size_t)n < sizeof line ? (size_t)n : 0;
    for (const unsigned char *p = (const unsigned char *)msg; *p && o + 8 < sizeof line; p++) {
        if (*p == '"' || *p == '\\') {
            line[o++] = '\\';
            line[o++] = (char)*p;
        } else if (*p == '\n') {
            line[o++] = '\\';
            line[o++] = 'n';
        } else if (*p < 0x20 || *p == 0x7f) {
            o += (size_t)snprintf(line + o, sizeof line - o, "\\x%02x", *p);
        } else {
            line[o++] = (char)*p;
        }
    }
    line[o++] = '"';
    line[o++] = '\n';
    fwrite(line, 1, o, stderr);
}

static int put_field(textbuf *tb, const char *key, const char *value)
{
    return textbuf_printf(tb, ",\"%s\":", key) | json_write_string(tb, value, strlen(value));
}

/* One JSON object per line; the line goes out in one write, like the logfmt one. */
static void emit_json(const char *ts, log_level lvl, const char *module, const char *pos,
                      const char *msg)
{
    textbuf tb = TEXTBUF_INIT;
    int rc = textbuf_printf(&tb, "{\"ts\":\"%s\",\"level\":\"%s\"", ts, level_names[lvl]);
    rc |= put_field(&tb, "mod", module);
    if (pos)
        rc |= put_field(&tb, "pos", pos);
    rc |= put_field(&tb, "msg", msg) | textbuf_puts(&tb, "}\n");
    /* Out of memory: a line in the other format beats losing it. */
    if (rc == 0)
        fwrite(tb.buf, 1, tb.len, stderr);
    else
        emit_logfmt(ts, lvl, module, pos, msg);
    textbuf_free(&tb);
}

static void emit(log_level lvl, const char *module, const char *pos, const char *msg)
{
    char ts[32];
    timestamp(ts);
    if (current_format == LOG_FORMAT_JSON)
        emit_json(ts, lvl, module, pos, msg);
    else
        emit_logfmt(ts, lvl, module, pos, msg);
}

static void vlog(log_level lvl, const char *module, const char *pos, const char *fmt, va_list ap)
{
    char msg[4096];
    vsnprintf(msg, sizeof msg, fmt, ap);
    emit(lvl, module, pos, msg);
}

void log_msg(log_level lvl, const char *module, const char *fmt, ...)
{
    if (!log_enabled(lvl))
        return;
    va_list ap;
    va_start(ap, fmt);
    vlog(lvl, module, NULL, fmt, ap);
    va_end(ap);
}

void log_at(log_level lvl, const char *module, const char *topic, int32_t partition, int64_t offset,
            const char *fmt, ...)
{
    if (!log_enabled(lvl))
        return;
    char pos[300];
    if (topic)
        snprintf(pos, sizeof pos, "%s/%" PRId32 "@%" PRId64, topic, partition, offset);
    va_list ap;
    va_start(ap, fmt);
    vlog(lvl, module, topic ? pos : NULL, fmt, ap);
    va_end(ap);
}

void log_lines(log_level lvl, const char *module, const char *text)
{
    if (!log_enabled(lvl))
        return;
    char line[4096];
    while (text && *text) {
        const char *nl = strchr(text, '\n');
        size_t len = nl ? (size_t)(nl - text) : strlen(text);
        if (len >= sizeof line)
            len = sizeof line - 1;
        memcpy(line, text, len);
        line[len] = '\0';
        emit(lvl, module, NULL, line);
        text = nl ? nl + 1 : NULL;
    }
}
