/* main.c -- the cs-pdns command line: subcommands, signals and exit statuses.
 * Must not: do any work itself; it parses the command line and hands over to the pipeline. */
#include <errno.h>
#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "logger.h"
#include "pipeline.h"
#include "resync.h"
#include "settings.h"
#include "testrun.h"

extern char **environ;

static struct pipeline_signals signals_seen;

static void on_stop(int sig)
{
    (void)sig;
    signals_seen.stop = 1;
}

static void on_hup(int sig)
{
    (void)sig;
    signals_seen.reload = 1;
}

static void install_signals(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sigemptyset(&sa.sa_mask);
    sa.sa_handler = on_stop;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sa.sa_handler = on_hup;
    sigaction(SIGHUP, &sa, NULL);
    sa.sa_handler = SIG_IGN;
    sigaction(SIGPIPE, &sa, NULL);
}

static void usage(FILE *out)
{
    fprintf(
        out,
        "Usage: cs-pdns [--config FILE] <command> [options]\n"
        "\n"
        "Gives every CloudStack VM DNS names: consumes CloudStack's Kafka event bus, asks a\n"
        "Lua policy which A/AAAA/PTR records each VM should have, and writes exactly those into\n"
        "PowerDNS's MySQL database.\n"
        "\n"
        "Commands:\n"
        "  run                      consume events in the foreground until SIGTERM/SIGINT\n"
        "  check                    validate the settings and load the policy, then exit\n"
        "  test [--policy FILE] PATH...\n"
        "                           run Lua policy tests (*_test.lua) in the policy sandbox\n"
        "  resync [--dry-run] [--json] [--force]\n"
        "                           list every VM and converge PowerDNS to it once; --dry-run\n"
        "                           prints the changes per zone and writes nothing. Exit 0\n"
        "                           converged, 1 not converged, 3 removals refused by\n"
        "                           RESYNC_MAX_DELETE_PERCENT (--force overrides)\n"
        "  plan [--event FILE|-] [--json]\n"
        "                           print the records one event would produce and, with\n"
        "                           MYSQL_PDNS_* set, the changes; writes nothing (stdin default)\n"
        "  adopt-cs-mapping [--dry-run]\n"
        "                           take over the records cs-powerdns-integration's cs_mapping\n"
        "                           table lists, so resyncs manage them\n"
        "  version, --version       print the version\n"
        "  help, --help             print this help\n"
        "\n"
        "Options of every command that reads settings (all but test):\n"
        "  --config FILE            read settings from FILE too: NAME=value lines as below,\n"
        "                           '#' comments, values optionally in '...' or \"...\" (the\n"
        "                           one-line part of systemd's EnvironmentFile= syntax); a\n"
        "                           variable set in the environment wins over FILE's line\n"
        "\n"
        "Settings come from the environment (and --config FILE):\n");
    for (const struct settings_doc *d = settings_docs; d->name; d++)
        fprintf(out, "  %-24s %s%s%s%s\n", d->name, d->meaning, *d->def ? " [" : "", d->def,
                *d->def ? "]" : "");
    fprintf(out, "\n"
                 "Signals: SIGTERM/SIGINT finish the event in hand, commit and exit 0; SIGHUP\n"
                 "reloads the policy (a policy that fails to load is not taken).\n"
                 "Exit status: 0 stopped cleanly, 1 runtime failure, 2 bad setting or policy.\n");
}

static int load_settings(struct settings *s, int need, const char *config)
{
    char err[1024];
    if (settings_load_file(s, config, environ, err, sizeof err) != 0) {
        fprintf(stderr, "cs-pdns: %s\n", err);
        return -1;
    }
    if (settings_check(s, need, err, sizeof err) != 0) {
        if (config)
            fprintf(stderr, "cs-pdns: %s (in the environment or %s)\n", err, config);
        else
            fprintf(stderr, "cs-pdns: %s\n", err);
        settings_free(s);
        return -1;
    }
    log_set_level((log_level)s->log_level);
    log_set_format((log_format)s->log_format);
    return 0;
}

static int cmd_run(const char *config)
{
    struct settings s;
    if (load_settings(&s, SETTINGS_NEED_KAFKA | SETTINGS_NEED_CLOUDSTACK | SETTINGS_NEED_MYSQL,
                      config))
        return PIPELINE_EXIT_CONFIG;
    install_signals();
    struct pipeline *p;
    char err[2048];
    int rc = pipeline_new(&s, &signals_seen, &p, err, sizeof err);
    if (rc == PIPELINE_EXIT_OK) {
        log_msg(LOG_LVL_INFO, "main", "cs-pdns %s starting", CSPDNS_VERSION);
        rc = pipeline_run(p, err, sizeof err);
        pipeline_free(p);
    }
    if (rc != PIPELINE_EXIT_OK)
        fprintf(stderr, "cs-pdns: %s\n", err);
    else
        log_msg(LOG_LVL_INFO, "main", "stopped");
    settings_free(&s);
    return rc;
}

static int cmd_check(const char *config)
{
    struct settings s;
    if (load_settings(&s, SETTINGS_NEED_KAFKA | SETTINGS_NEED_CLOUDSTACK | SETTINGS_NEED_MYSQL,
                      config))
        return PIPELINE_EXIT_CONFIG;
    struct pipeline *p;
    char err[2048];
    int rc = pipeline_new(&s, &signals_seen, &p, err, sizeof err);
    if (rc == PIPELINE_EXIT_OK) {
        printf("settings and policy OK\n");
        pipeline_free(p);
    } else {
        fprintf(stderr, "cs-pdns: %s\n", err);
    }
    settings_free(&s);
    return rc;
}

/* Flags of resync, plan and adopt-cs-mapping; 0, or -1 after printing what is wrong. */
struct cli_opts {
    int dry_run, json, force;
    const char *event;
    const char *config; /* --config FILE, NULL: the environment only */
};

static int parse_opts(const char *cmd, int argc, char **argv, const char *allowed,
                      struct cli_opts *o)
{
    const char *config = o->config;
    memset(o, 0, sizeof *o);
    o->config = config;
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        int *flag = !strcmp(a, "--dry-run") ? &o->dry_run
                    : !strcmp(a, "--json")  ? &o->json
                    : !strcmp(a, "--force") ? &o->force
                                            : NULL;
        if (flag && strstr(allowed, a)) {
            *flag = 1;
        } else if (!strcmp(a, "--event") && strstr(allowed, a) && i + 1 < argc) {
            o->event = argv[++i];
        } else {
            fprintf(stderr, "cs-pdns %s: unexpected argument \"%s\" (allowed: %s)\n", cmd, a,
                    allowed);
            return -1;
        }
    }
    return 0;
}

static int cmd_resync(const struct cli_opts *o)
{
    struct settings s;
    if (load_settings(&s, SETTINGS_NEED_CLOUDSTACK | SETTINGS_NEED_MYSQL, o->config))
        return PIPELINE_EXIT_CONFIG;
    install_signals();
    struct pipeline *p;
    char err[2048];
    int rc = pipeline_new(&s, &signals_seen, &p, err, sizeof err);
    if (rc == PIPELINE_EXIT_OK) {
        struct pipeline_resync_opts ro = {.dry_run = o->dry_run,
                                          .json = o->json,
                                          .force = o->force,
                                          .progress = isatty(STDERR_FILENO),
                                          .out = stdout};
        rc = pipeline_resync(p, &ro, err, sizeof err);
        pipeline_free(p);
    }
    if (rc != PIPELINE_EXIT_OK)
        fprintf(stderr, "cs-pdns: %s\n", err);
    settings_free(&s);
    return rc;
}

/* The whole event: from a file, or standard input for "-" or no --event. */
static char *read_event(const char *path, size_t *len)
{
    FILE *f = !path || !strcmp(path, "-") ? stdin : fopen(path, "rb");
    char *buf = NULL;
    size_t cap = 0;
    *len = 0;
    if (!f) {
        fprintf(stderr, "cs-pdns plan: cannot read %s: %s\n", path, strerror(errno));
        return NULL;
    }
    for (;;) {
        if (*len + 4096 + 1 > cap) {
            char *b = realloc(buf, cap = cap ? cap * 2 : 65536);
            if (!b || cap > ((size_t)64 << 20)) {
                free(b ? b : buf);
                buf = NULL;
                fprintf(stderr, "cs-pdns plan: the event is too large (64 MB at most)\n");
                break;
            }
            buf = b;
        }
        size_t got = fread(buf + *len, 1, cap - *len - 1, f);
        *len += got;
        if (got == 0)
            break;
    }
    if (buf && ferror(f)) {
        fprintf(stderr, "cs-pdns plan: cannot read %s\n", path ? path : "standard input");
        free(buf);
        buf = NULL;
    }
    if (f != stdin)
        fclose(f);
    if (buf)
        buf[*len] = '\0';
    return buf;
}

static int cmd_plan(const struct cli_opts *o)
{
    struct settings s;
    size_t len;
    char *event = read_event(o->event, &len);
    if (!event)
        return PIPELINE_EXIT_RUNTIME;
    if (load_settings(&s, SETTINGS_NEED_CLOUDSTACK, o->config)) {
        free(event);
        return PIPELINE_EXIT_CONFIG;
    }
    struct pipeline *p;
    char err[4096];
    int rc = pipeline_new(&s, &signals_seen, &p, err, sizeof err);
    if (rc == PIPELINE_EXIT_OK) {
        rc = pipeline_plan_event(p, event, len, o->json, stdout, err, sizeof err);
        pipeline_free(p);
    }
    if (rc != PIPELINE_EXIT_OK)
        fprintf(stderr, "cs-pdns: %s\n", err);
    settings_free(&s);
    free(event);
    return rc;
}

static int cmd_adopt(const struct cli_opts *o)
{
    struct settings s;
    if (load_settings(&s, SETTINGS_NEED_MYSQL, o->config))
        return PIPELINE_EXIT_CONFIG;
    char err[1024];
    int rc = resync_adopt_cs_mapping(&s, o->dry_run, stdout, err, sizeof err);
    if (rc != 0)
        fprintf(stderr, "cs-pdns: %s\n", err);
    settings_free(&s);
    return rc;
}

/* Takes "--config FILE" (or --config=FILE), before or after the command, out of argv, so the
 * commands parse only their own options. Returns 0, or -1 after printing what is wrong. */
static int take_config(int *argc, char **argv, const char **config)
{
    int out = 1;
    *config = NULL;
    for (int i = 1; i < *argc; i++) {
        const char *path = NULL;
        if (!strcmp(argv[i], "--config")) {
            if (i + 1 >= *argc || !*argv[i + 1]) {
                fprintf(stderr, "cs-pdns: --config needs a file name (--config FILE)\n");
                return -1;
            }
            path = argv[++i];
        } else if (!strncmp(argv[i], "--config=", 9)) {
            path = argv[i] + 9;
            if (!*path) {
                fprintf(stderr, "cs-pdns: --config needs a file name (--config FILE)\n");
                return -1;
            }
        } else {
            argv[out++] = argv[i];
            continue;
        }
        if (*config) {
            fprintf(stderr, "cs-pdns: --config is given twice (give one file)\n");
            return -1;
        }
        *config = path;
    }
    *argc = out;
    argv[out] = NULL;
    return 0;
}

/* glibc raises its mmap threshold to the largest block freed so far, so after the first fetch
 * responses librdkafka's megabyte buffers come from the heap and fragment it: RSS then settles
 * near 50 MB instead of 25 MB after a backlog. A fixed threshold keeps large buffers mmapped and
 * returned on free. An operator's own MALLOC_MMAP_THRESHOLD_ or GLIBC_TUNABLES still wins. */
static void keep_large_buffers_mmapped(void)
{
    const char *tunables = getenv("GLIBC_TUNABLES");
    if (getenv("MALLOC_MMAP_THRESHOLD_") || (tunables && strstr(tunables, "mmap_threshold")))
        return;
    mallopt(M_MMAP_THRESHOLD, 128 * 1024);
}

int main(int argc, char **argv)
{
    keep_large_buffers_mmapped();
    const char *config = NULL;
    /* Policy tests read no settings: their arguments are theirs alone. */
    if (!(argc >= 2 && !strcmp(argv[1], "test")) && take_config(&argc, argv, &config) != 0)
        return PIPELINE_EXIT_CONFIG;
    if (argc < 2) {
        usage(stderr);
        return PIPELINE_EXIT_CONFIG;
    }
    const char *cmd = argv[1];
    if (!strcmp(cmd, "--help") || !strcmp(cmd, "-h") || !strcmp(cmd, "help")) {
        usage(stdout);
        return 0;
    }
    if (!strcmp(cmd, "--version") || !strcmp(cmd, "version")) {
        printf("cs-pdns %s\n", CSPDNS_VERSION);
        return 0;
    }
    if (!strcmp(cmd, "run") || !strcmp(cmd, "check")) {
        if (argc > 2) {
            fprintf(stderr,
                    "cs-pdns: %s takes no arguments but --config FILE (settings come from the "
                    "environment and that file)\n",
                    cmd);
            return PIPELINE_EXIT_CONFIG;
        }
        return !strcmp(cmd, "run") ? cmd_run(config) : cmd_check(config);
    }
    if (!strcmp(cmd, "test"))
        return testrun_main(argc - 1, argv + 1);
    struct cli_opts o = {.config = config};
    if (!strcmp(cmd, "resync"))
        return parse_opts(cmd, argc, argv, "--dry-run --json --force", &o) ? PIPELINE_EXIT_CONFIG
                                                                           : cmd_resync(&o);
    if (!strcmp(cmd, "plan"))
        return parse_opts(cmd, argc, argv, "--event --json", &o) ? PIPELINE_EXIT_CONFIG
                                                                 : cmd_plan(&o);
    if (!strcmp(cmd, "adopt-cs-mapping"))
        return parse_opts(cmd, argc, argv, "--dry-run", &o) ? PIPELINE_EXIT_CONFIG : cmd_adopt(&o);
    fprintf(stderr, "cs-pdns: unknown command \"%s\" (see cs-pdns --help)\n", cmd);
    return PIPELINE_EXIT_CONFIG;
}
