/* main.c -- the cs-pdns command line: subcommands, signals and exit statuses.
 * Must not: do any work itself; it parses the command line and hands over to the pipeline. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "logger.h"
#include "pipeline.h"
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
        "Usage: cs-pdns <command> [options]\n"
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
        "  version, --version       print the version\n"
        "  help, --help             print this help\n"
        "\n"
        "Settings come from the environment:\n");
    for (const struct settings_doc *d = settings_docs; d->name; d++)
        fprintf(out, "  %-24s %s%s%s%s\n", d->name, d->meaning, *d->def ? " [" : "", d->def,
                *d->def ? "]" : "");
    fprintf(out, "\n"
                 "Signals: SIGTERM/SIGINT finish the event in hand, commit and exit 0; SIGHUP\n"
                 "reloads the policy (a policy that fails to load is not taken).\n"
                 "Exit status: 0 stopped cleanly, 1 runtime failure, 2 bad setting or policy.\n");
}

static int load_settings(struct settings *s, int need)
{
    char err[512];
    if (settings_load(s, environ, err, sizeof err) != 0) {
        fprintf(stderr, "cs-pdns: %s\n", err);
        return -1;
    }
    if (settings_check(s, need, err, sizeof err) != 0) {
        fprintf(stderr, "cs-pdns: %s\n", err);
        settings_free(s);
        return -1;
    }
    log_set_level((log_level)s->log_level);
    return 0;
}

static int cmd_run(void)
{
    struct settings s;
    if (load_settings(&s, SETTINGS_NEED_KAFKA | SETTINGS_NEED_CLOUDSTACK | SETTINGS_NEED_MYSQL))
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

static int cmd_check(void)
{
    struct settings s;
    if (load_settings(&s, SETTINGS_NEED_KAFKA | SETTINGS_NEED_CLOUDSTACK | SETTINGS_NEED_MYSQL))
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

int main(int argc, char **argv)
{
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
            fprintf(stderr, "cs-pdns: %s takes no arguments (settings come from the environment)\n",
                    cmd);
            return PIPELINE_EXIT_CONFIG;
        }
        return !strcmp(cmd, "run") ? cmd_run() : cmd_check();
    }
    if (!strcmp(cmd, "test"))
        return testrun_main(argc - 1, argv + 1);
    fprintf(stderr, "cs-pdns: unknown command \"%s\" (see cs-pdns --help)\n", cmd);
    return PIPELINE_EXIT_CONFIG;
}
