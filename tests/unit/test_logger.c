/* test_logger.c -- unit tests for the logger: both line formats, escaping, one line per call,
 * levels. Must not: depend on anything but logger, json and textbuf; stderr is captured through a
 * pipe, so each capture stays far below the pipe's buffer. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "json.h"
#include "logger.h"
#include "unit.h"

static int saved_fd = -1, pipe_rd = -1;

static void capture_begin(void)
{
    int fds[2];
    if (pipe(fds) != 0) {
        perror("pipe");
        exit(1);
    }
    fflush(stderr);
    saved_fd = dup(STDERR_FILENO);
    dup2(fds[1], STDERR_FILENO);
    close(fds[1]);
    pipe_rd = fds[0];
}

/* Restores stderr and returns everything written to it since capture_begin. Caller frees. */
static char *capture_end(void)
{
    fflush(stderr);
    dup2(saved_fd, STDERR_FILENO);
    close(saved_fd);
    textbuf tb = TEXTBUF_INIT;
    char buf[4096];
    ssize_t n;
    while ((n = read(pipe_rd, buf, sizeof buf)) > 0)
        textbuf_append(&tb, buf, (size_t)n);
    close(pipe_rd);
    char *out = strdup(textbuf_str(&tb));
    textbuf_free(&tb);
    return out;
}

static int count_lines(const char *s)
{
    int n = 0;
    for (; *s; s++)
        n += *s == '\n';
    return n;
}

/* Checks that s starts with a UTC timestamp like 2026-11-25T18:59:00.708Z and returns what
 * follows it, or NULL. */
static const char *skip_ts(const char *s)
{
    static const char shape[] = "dddd-dd-ddTdd:dd:dd.dddZ";
    for (size_t i = 0; i < sizeof shape - 1; i++) {
        int ok = shape[i] == 'd' ? (s[i] >= '0' && s[i] <= '9') : s[i] == shape[i];
        if (!ok)
            return NULL;
    }
    return s + sizeof shape - 1;
}

static void check_logfmt_line(const char *line, const char *want_after_ts)
{
    CHECK(strncmp(line, "ts=", 3) == 0);
    const char *rest = skip_ts(line + 3);
    CHECK(rest != NULL);
    CHECK_STR(rest ? rest : "", want_after_ts);
}

static void test_parse(void)
{
    CHECK_INT(log_format_parse("logfmt"), LOG_FORMAT_LOGFMT);
    CHECK_INT(log_format_parse("json"), LOG_FORMAT_JSON);
    CHECK_INT(log_format_parse("JSON"), LOG_FORMAT_JSON);
    CHECK_INT(log_format_parse("text"), -1);
    CHECK_INT(log_format_parse(""), -1);
    CHECK_INT(log_level_parse("warning"), LOG_LVL_WARN);
    CHECK_INT(log_level_parse("trace"), -1);
}

static void test_logfmt(void)
{
    log_set_level(LOG_LVL_INFO);
    capture_begin();
    log_msg(LOG_LVL_INFO, "pipeline", "vm=%s added=%d", "abc", 6);
    char *out = capture_end();
    check_logfmt_line(out, " level=info mod=pipeline msg=\"vm=abc added=6\"\n");
    free(out);

    capture_begin();
    log_at(LOG_LVL_ERROR, "pipeline", "cloudstack", 3, 11, "say \"hi\"\\\nnext\x01");
    out = capture_end();
    check_logfmt_line(out, " level=error mod=pipeline pos=cloudstack/3@11 "
                           "msg=\"say \\\"hi\\\"\\\\\\nnext\\x01\"\n");
    free(out);

    /* Below the level nothing is written; log_lines gives one line per input line. */
    capture_begin();
    log_msg(LOG_LVL_DEBUG, "pipeline", "hidden");
    log_lines(LOG_LVL_WARN, "policy", "stack traceback:\n\t[C]: in ?\nend");
    out = capture_end();
    CHECK_INT(count_lines(out), 3);
    CHECK(strstr(out, "hidden") == NULL);
    CHECK(strstr(out, " level=warn mod=policy msg=\"stack traceback:\"\n") != NULL);
    CHECK(strstr(out, " level=warn mod=policy msg=\"\\x09[C]: in ?\"\n") != NULL);
    CHECK(strstr(out, " level=warn mod=policy msg=\"end\"\n") != NULL);
    free(out);
}

/* Parses one JSON log line and checks its members in order: ts, level, mod, [pos], msg. */
static void check_json_line(const char *line, size_t len, const char *level, const char *mod,
                            const char *pos, const char *msg)
{
    json_doc *doc = NULL;
    char err[200];
    CHECK_INT(json_parse(line, len, &doc, err, sizeof err), 0);
    if (!doc)
        return;
    const json_value *root = json_root(doc);
    CHECK(root->type == JSON_OBJECT);
    CHECK_INT(root->len, pos ? 5 : 4);
    if (root->type == JSON_OBJECT && root->len == (pos ? 5u : 4u)) {
        const json_member *m = root->u.members;
        size_t i = 0;
        CHECK_STR(m[i].key, "ts");
        const char *after = skip_ts(m[i++].value.u.s);
        CHECK(after && *after == '\0');
        CHECK_STR(m[i].key, "level");
        CHECK_STR(m[i++].value.u.s, level);
        CHECK_STR(m[i].key, "mod");
        CHECK_STR(m[i++].value.u.s, mod);
        if (pos) {
            CHECK_STR(m[i].key, "pos");
            CHECK_STR(m[i++].value.u.s, pos);
        }
        CHECK_STR(m[i].key, "msg");
        CHECK_STR(m[i].value.u.s, msg);
    }
    json_doc_free(doc);
}

static void test_json(void)
{
    log_set_level(LOG_LVL_INFO);
    log_set_format(LOG_FORMAT_JSON);
    capture_begin();
    log_msg(LOG_LVL_INFO, "pipeline", "vm=%s added=%d", "abc", 6);
    char *out = capture_end();
    /* The exact text after the timestamp. */
    CHECK(strncmp(out, "{\"ts\":\"", 7) == 0);
    const char *rest = skip_ts(out + 7);
    CHECK_STR(rest ? rest : "", "\",\"level\":\"info\",\"mod\":\"pipeline\",\"msg\":\"vm=abc "
                                "added=6\"}\n");
    check_json_line(out, strlen(out), "info", "pipeline", NULL, "vm=abc added=6");
    free(out);

    /* Quotes, backslashes, control characters and invalid UTF-8 are escaped; valid UTF-8 stays. */
    capture_begin();
    log_at(LOG_LVL_WARN, "kafka", "cloud\"stack", 0, 57,
           "say \"hi\"\\ tab\there\nnext\x01 caf\xc3\xa9 bad\xff");
    out = capture_end();
    CHECK_INT(count_lines(out), 1);
    CHECK(strstr(out,
                 "\"pos\":\"cloud\\\"stack/0@57\",\"msg\":\"say \\\"hi\\\"\\\\ tab\\there\\nnext"
                 "\\u0001 caf\xc3\xa9 bad\\ufffd\"}\n") != NULL);
    check_json_line(out, strlen(out), "warn", "kafka", "cloud\"stack/0@57",
                    "say \"hi\"\\ tab\there\nnext\x01 caf\xc3\xa9 bad\xef\xbf\xbd");
    free(out);

    /* One line per call, whatever the calls hold; a traceback is one line per input line. */
    capture_begin();
    log_msg(LOG_LVL_ERROR, "a", "one\ntwo\n");
    log_msg(LOG_LVL_DEBUG, "a", "hidden");
    log_lines(LOG_LVL_INFO, "policy", "l1\nl2");
    out = capture_end();
    CHECK_INT(count_lines(out), 3);
    char *save = NULL;
    const char *want[3] = {"one\ntwo\n", "l1", "l2"};
    int i = 0;
    for (char *line = strtok_r(out, "\n", &save); line && i < 3;
         line = strtok_r(NULL, "\n", &save), i++)
        check_json_line(line, strlen(line), i ? "info" : "error", i ? "policy" : "a", NULL,
                        want[i]);
    CHECK_INT(i, 3);
    free(out);

    /* A message longer than the limit is cut and still a valid line. */
    char *big = malloc(6000);
    memset(big, 'x', 5999);
    big[5999] = '\0';
    capture_begin();
    log_msg(LOG_LVL_INFO, "big", "%s", big);
    out = capture_end();
    CHECK_INT(count_lines(out), 1);
    big[4095] = '\0';
    check_json_line(out, strlen(out), "info", "big", NULL, big);
    free(out);
    free(big);

    /* Back to logfmt: the format is a switch, not a one-way door. */
    log_set_format(LOG_FORMAT_LOGFMT);
    capture_begin();
    log_msg(LOG_LVL_INFO, "m", "back");
    out = capture_end();
    check_logfmt_line(out, " level=info mod=m msg=\"back\"\n");
    free(out);
}

int main(void)
{
    test_parse();
    test_logfmt();
    test_json();
    return unit_done("test_logger");
}
