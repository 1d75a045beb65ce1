/* test_settings.c -- settings from an environment and a --config file: defaults, parsing, errors.
 * Must not: read the real environment; every case passes its own envp (and its own temp file). */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "settings.h"
#include "unit.h"

static void test_defaults(void)
{
    char *env[] = {"KAFKA_BOOTSTRAP=k:9092", "KAFKA_TOPIC=cloudstack", "KAFKA_GROUP=g", NULL};
    struct settings s;
    char err[256] = "";
    CHECK_INT(settings_load(&s, env, err, sizeof err), 0);
    CHECK_INT(s.dns_ttl, 60);
    CHECK_INT(s.mysql_port, 3306);
    CHECK(!s.dns_add_to_common_zone);
    CHECK(s.cs_verify_tls);
    CHECK_INT(s.cs_timeout_ms, 10000);
    CHECK(s.policy_file == NULL);
    CHECK_INT(s.policy_on_error, POLICY_ON_ERROR_SKIP);
    CHECK_INT(s.resync_interval_s, 3600);
    CHECK_INT(s.resync_max_delete_percent, 20);
    CHECK(!s.resync_force);
    CHECK_INT(s.resync_page_size, 500);
    CHECK_INT(settings_check(&s, SETTINGS_NEED_KAFKA, err, sizeof err), 0);
    CHECK_INT(settings_check(&s, SETTINGS_NEED_MYSQL, err, sizeof err), -1);
    CHECK_STR(err, "MYSQL_PDNS_HOST: is required but not set");
    settings_free(&s);
}

static void test_values(void)
{
    char *env[] = {"KAFKA_CFG_SESSION_TIMEOUT_MS=6000",
                   "KAFKA_CFG_SECURITY_PROTOCOL=SASL_SSL",
                   "DNS_RECORD_TTL=300",
                   "DNS_COMMON_ZONE=Cloud.Example.COM.",
                   "DNS_ADD_TO_COMMON_ZONE=yes",
                   "CS_VERIFY_TLS=false",
                   "CS_TIMEOUT=3",
                   "POLICY_ON_ERROR=retry",
                   "LOG_LEVEL=warn",
                   "OTHER=ignored",
                   NULL};
    struct settings s;
    char err[256] = "";
    CHECK_INT(settings_load(&s, env, err, sizeof err), 0);
    CHECK_INT(s.kafka_cfg_n, 2);
    CHECK_STR(s.kafka_cfg[0].key, "session.timeout.ms");
    CHECK_STR(s.kafka_cfg[0].value, "6000");
    CHECK_STR(s.kafka_cfg[1].key, "security.protocol");
    CHECK_INT(s.dns_ttl, 300);
    CHECK_STR(s.dns_common_zone, "cloud.example.com");
    CHECK(s.dns_add_to_common_zone);
    CHECK(!s.cs_verify_tls);
    CHECK_INT(s.cs_timeout_ms, 3000);
    CHECK_INT(s.policy_on_error, POLICY_ON_ERROR_RETRY);
    CHECK_INT(s.log_level, 2);
    settings_free(&s);
}

static void expect_error(char **env, const char *prefix)
{
    struct settings s;
    char err[256] = "";
    CHECK_INT(settings_load(&s, env, err, sizeof err), -1);
    if (strncmp(err, prefix, strlen(prefix)) != 0)
        fprintf(stderr, "error \"%s\" does not start with \"%s\"\n", err, prefix);
    CHECK(strncmp(err, prefix, strlen(prefix)) == 0);
}

static void test_errors(void)
{
    char *ttl[] = {"DNS_RECORD_TTL=0", NULL};
    expect_error(ttl, "DNS_RECORD_TTL: ");
    char *ttl2[] = {"DNS_RECORD_TTL=60s", NULL};
    expect_error(ttl2, "DNS_RECORD_TTL: ");
    char *port[] = {"MYSQL_PDNS_PORT=-1", NULL};
    expect_error(port, "MYSQL_PDNS_PORT: ");
    char *boolean[] = {"DNS_ADD_TO_COMMON_ZONE=sure", NULL};
    expect_error(boolean, "DNS_ADD_TO_COMMON_ZONE: ");
    char *common[] = {"DNS_ADD_TO_COMMON_ZONE=true", NULL};
    expect_error(common, "DNS_ADD_TO_COMMON_ZONE: is true but DNS_COMMON_ZONE");
    char *zone[] = {"DNS_COMMON_ZONE=a..b", NULL};
    expect_error(zone, "DNS_COMMON_ZONE: ");
    char *topic[] = {"KAFKA_TOPIC=a/b", NULL};
    expect_error(topic, "KAFKA_TOPIC: ");
    char *endpoint[] = {"CS_ENDPOINT=cloud.example.com/client/api", NULL};
    expect_error(endpoint, "CS_ENDPOINT: ");
    char *empty[] = {"KAFKA_GROUP=", NULL};
    expect_error(empty, "KAFKA_GROUP: ");
    char *cfg[] = {"KAFKA_CFG_=1", NULL};
    expect_error(cfg, "KAFKA_CFG_: ");
    char *onerr[] = {"POLICY_ON_ERROR=ignore", NULL};
    expect_error(onerr, "POLICY_ON_ERROR: ");
    char *missing_file[] = {"CS_SECRET_KEY_FILE=/nonexistent/secret", NULL};
    expect_error(missing_file, "CS_SECRET_KEY_FILE: cannot read /nonexistent/secret");
    char *interval[] = {"RESYNC_INTERVAL=-1", NULL};
    expect_error(interval, "RESYNC_INTERVAL: ");
    char *percent[] = {"RESYNC_MAX_DELETE_PERCENT=101", NULL};
    expect_error(percent, "RESYNC_MAX_DELETE_PERCENT: ");
    char *force[] = {"RESYNC_FORCE=please", NULL};
    expect_error(force, "RESYNC_FORCE: ");
    char *page[] = {"RESYNC_PAGE_SIZE=501", NULL};
    expect_error(page, "RESYNC_PAGE_SIZE: ");
    char *page0[] = {"RESYNC_PAGE_SIZE=0", NULL};
    expect_error(page0, "RESYNC_PAGE_SIZE: ");
}

static void test_resync_values(void)
{
    char *env[] = {"RESYNC_INTERVAL=0", "RESYNC_MAX_DELETE_PERCENT=100", "RESYNC_FORCE=true",
                   "RESYNC_PAGE_SIZE=1", NULL};
    struct settings s;
    char err[256] = "";
    CHECK_INT(settings_load(&s, env, err, sizeof err), 0);
    CHECK_INT(s.resync_interval_s, 0);
    CHECK_INT(s.resync_max_delete_percent, 100);
    CHECK(s.resync_force);
    CHECK_INT(s.resync_page_size, 1);
    settings_free(&s);
}

static void test_secret_file(void)
{
    char path[] = "/tmp/cspdns-secret-XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    CHECK(write(fd, "s3cret\n", 7) == 7);
    close(fd);
    char var[128];
    snprintf(var, sizeof var, "MYSQL_PDNS_PASSWORD_FILE=%s", path);
    char *env[] = {var, NULL};
    struct settings s;
    char err[256] = "";
    CHECK_INT(settings_load(&s, env, err, sizeof err), 0);
    CHECK_STR(s.mysql_password, "s3cret");
    settings_free(&s);
    char *both[] = {var, "MYSQL_PDNS_PASSWORD=x", NULL};
    expect_error(both, "MYSQL_PDNS_PASSWORD: ");
    unlink(path);
}

/* Any librdkafka property can come from a file, for sasl.password and ssl.key.password. */
static void test_kafka_secret_file(void)
{
    char path[] = "/tmp/cspdns-secret-XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    CHECK(write(fd, "sasl s3cret\r\n", 13) == 13);
    close(fd);
    char pw[128], key[128], missing[] = "KAFKA_CFG_SSL_KEY_PASSWORD_FILE=/nonexistent/k";
    snprintf(pw, sizeof pw, "KAFKA_CFG_SASL_PASSWORD_FILE=%s", path);
    snprintf(key, sizeof key, "KAFKA_CFG_SSL_KEY_PASSWORD_FILE=%s", path);
    char *env[] = {"KAFKA_CFG_SASL_USERNAME=cs-pdns", pw, key, NULL};
    struct settings s;
    char err[256] = "";
    CHECK_INT(settings_load(&s, env, err, sizeof err), 0);
    CHECK_INT(s.kafka_cfg_n, 3);
    CHECK_STR(s.kafka_cfg[0].key, "sasl.username");
    CHECK_STR(s.kafka_cfg[1].key, "sasl.password");
    CHECK_STR(s.kafka_cfg[1].value, "sasl s3cret");
    CHECK_STR(s.kafka_cfg[2].key, "ssl.key.password");
    CHECK_STR(s.kafka_cfg[2].value, "sasl s3cret");
    settings_free(&s);
    char *both[] = {"KAFKA_CFG_SASL_PASSWORD=x", pw, NULL};
    expect_error(both, "KAFKA_CFG_SASL_PASSWORD: set only one of it and its _FILE variant");
    char *unreadable[] = {missing, NULL};
    expect_error(unreadable, "KAFKA_CFG_SSL_KEY_PASSWORD_FILE: cannot read /nonexistent/k");

    /* In a --config file too; the environment's _FILE wins over the file's plain value. */
    char conf[] = "/tmp/cspdns-conf-XXXXXX";
    fd = mkstemp(conf);
    CHECK(fd >= 0);
    const char *text = "KAFKA_CFG_SASL_PASSWORD=from-conf\nKAFKA_CFG_SSL_KEY_PASSWORD=k\n";
    CHECK(write(fd, text, strlen(text)) == (ssize_t)strlen(text));
    close(fd);
    char *env_file[] = {pw, NULL};
    CHECK_INT(settings_load_file(&s, conf, env_file, err, sizeof err), 0);
    CHECK_INT(s.kafka_cfg_n, 2);
    CHECK_STR(s.kafka_cfg[0].key, "sasl.password");
    CHECK_STR(s.kafka_cfg[0].value, "sasl s3cret");
    CHECK_STR(s.kafka_cfg[1].value, "k");
    settings_free(&s);
    unlink(conf);

    /* A file too large to be a secret is refused, not cut short. */
    fd = open(path, O_WRONLY | O_TRUNC);
    CHECK(fd >= 0);
    static char big[70000];
    memset(big, 'x', sizeof big);
    CHECK(write(fd, big, sizeof big) == (ssize_t)sizeof big);
    close(fd);
    snprintf(err, sizeof err, "KAFKA_CFG_SASL_PASSWORD_FILE: %s is larger than 64 KB", path);
    char *env_big[] = {pw, NULL};
    expect_error(env_big, err);
    unlink(path);
}

/* Writes text to a new temporary file; path receives its name (caller unlinks). */
static void write_conf(char path[64], const char *text)
{
    snprintf(path, 64, "/tmp/cspdns-conf-XXXXXX");
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    CHECK(write(fd, text, strlen(text)) == (ssize_t)strlen(text));
    close(fd);
}

static void test_config_file(void)
{
    char secret[] = "/tmp/cspdns-secret-XXXXXX";
    int fd = mkstemp(secret);
    CHECK(fd >= 0);
    CHECK(write(fd, "from-file\n", 10) == 10);
    close(fd);
    char text[1024], path[64];
    snprintf(text, sizeof text,
             "# cs-pdns settings\n"
             "\n"
             "   ; a systemd-style comment\n"
             "KAFKA_BOOTSTRAP=k1:9092,k2:9092\n"
             "  KAFKA_TOPIC = cloudstack  \n"
             "KAFKA_GROUP='a group # not a comment'\n"
             "CS_ENDPOINT=\"https://cloud.example.com/client/api\"\n"
             "MYSQL_PDNS_USER=\"quote\\\"d \\\\ \\$x \\n\"\n"
             "MYSQL_PDNS_NAME=pdns\\ db\\\\x\r\n"
             "MYSQL_PDNS_HOST=db#1 it's\n"
             "KAFKA_CFG_SESSION_TIMEOUT_MS=6000\n"
             "DNS_RECORD_TTL=120\n"
             "CS_SECRET_KEY_FILE=%s\n"
             "CS_API_KEY=file-key\n",
             secret);
    write_conf(path, text);
    char *env[] = {"DNS_RECORD_TTL=300", "CS_API_KEY_FILE=/nonexistent/ignored-too", NULL};
    char *env_key[] = {"CS_API_KEY=env-key", "CS_SECRET_KEY=env-secret", NULL};
    struct settings s;
    char err[512] = "";
    CHECK_INT(settings_load_file(&s, path, env_key, err, sizeof err), 0);
    CHECK_STR(s.kafka_bootstrap, "k1:9092,k2:9092");
    CHECK_STR(s.kafka_topic, "cloudstack");
    CHECK_STR(s.kafka_group, "a group # not a comment");
    CHECK_STR(s.cs_endpoint, "https://cloud.example.com/client/api");
    CHECK_STR(s.mysql_user, "quote\"d \\ $x \\n"); /* \n is not an escape in "..." */
    CHECK_STR(s.mysql_name, "pdns db\\x");
    CHECK_STR(s.mysql_host, "db#1 it's");
    CHECK_INT(s.kafka_cfg_n, 1);
    CHECK_STR(s.kafka_cfg[0].key, "session.timeout.ms");
    CHECK_INT(s.dns_ttl, 120);
    /* The environment wins, and a secret in it beats the file's NAME_FILE for it too. */
    CHECK_STR(s.cs_api_key, "env-key");
    CHECK_STR(s.cs_secret_key, "env-secret");
    settings_free(&s);

    /* The file's *_FILE secret is read; the environment's value beats the file's line. The
     * environment's CS_API_KEY_FILE (unreadable) wins over the file's CS_API_KEY: it fails. */
    CHECK_INT(settings_load_file(&s, path, env, err, sizeof err), -1);
    CHECK_STR(err, "CS_API_KEY_FILE: cannot read /nonexistent/ignored-too: No such file or "
                   "directory");
    char *env_ttl[] = {"DNS_RECORD_TTL=300", NULL};
    CHECK_INT(settings_load_file(&s, path, env_ttl, err, sizeof err), 0);
    CHECK_INT(s.dns_ttl, 300);
    CHECK_STR(s.cs_secret_key, "from-file");
    CHECK_STR(s.cs_api_key, "file-key");
    settings_free(&s);

    /* No file: the environment alone. */
    CHECK_INT(settings_load_file(&s, NULL, env_ttl, err, sizeof err), 0);
    CHECK_INT(s.dns_ttl, 300);
    CHECK(s.kafka_topic == NULL);
    settings_free(&s);
    unlink(path);
    unlink(secret);
}

/* text as a config file must fail with err == "<path>:" + want. */
static void expect_file_error(const char *text, char **env, const char *want)
{
    char path[64], full[512], err[512] = "";
    struct settings s;
    write_conf(path, text);
    snprintf(full, sizeof full, "%s:%s", path, want);
    CHECK_INT(settings_load_file(&s, path, env, err, sizeof err), -1);
    CHECK_STR(err, full);
    unlink(path);
}

static void test_config_file_errors(void)
{
    char *none[] = {NULL};
    /* A malformed line is reported by its position only: it may hold a secret. */
    expect_file_error("# ok\nKAFKA_TOPIC=t\nMYSQL_PDNS_PASSWORD hunter2\n", none,
                      "3: expected NAME=value, a comment (# or ;) or a blank line");
    expect_file_error("export MYSQL_PDNS_PASSWORD=hunter2\n", none,
                      "1: expected a variable name before '=' (letters, digits and '_'; no "
                      "\"export\")");
    expect_file_error("MYSQL_PDNS_PASSWORD: hunter2=x\n", none,
                      "1: expected a variable name before '=' (letters, digits and '_'; no "
                      "\"export\")");
    expect_file_error("=x\n", none,
                      "1: expected a variable name before '=' (letters, digits and '_'; no "
                      "\"export\")");
    expect_file_error("KAFKA_BOOTSTRAPS=k:9092\n", none,
                      "1: KAFKA_BOOTSTRAPS is not a cs-pdns setting (see cs-pdns --help)");
    expect_file_error("POLICY_FILE_FILE=/x\n", none,
                      "1: POLICY_FILE_FILE is not a cs-pdns setting (see cs-pdns --help)");
    expect_file_error("KAFKA_TOPIC=a\n\nKAFKA_TOPIC=b\n", none,
                      "3: KAFKA_TOPIC is already set on line 1");
    expect_file_error("KAFKA_GROUP=\"open\n", none,
                      "1: KAFKA_GROUP: the quoted value does not end on its line (a value must fit "
                      "on one line)");
    expect_file_error("KAFKA_GROUP='a'b\n", none,
                      "1: KAFKA_GROUP: text after the closing quote (put the whole value inside "
                      "the quotes)");
    expect_file_error("KAFKA_GROUP=a\\\nb\n", none,
                      "1: KAFKA_GROUP: a backslash at the end of the line (continued lines are "
                      "not supported)");
    /* A bad value is traced to the file's line when the file set it... */
    expect_file_error("# x\nDNS_RECORD_TTL=0\n", none,
                      "2: DNS_RECORD_TTL: \"0\" is not a whole number from 1 to 604800");
    expect_file_error("KAFKA_GROUP=\"\"\n", none,
                      "1: KAFKA_GROUP: is set but empty (unset it or give a value)");
    expect_file_error("CS_SECRET_KEY_FILE=/nonexistent/s\n", none,
                      "1: CS_SECRET_KEY_FILE: cannot read /nonexistent/s: No such file or "
                      "directory");

    /* ...and not when the environment's value won. */
    char path[64], err[512] = "";
    struct settings s;
    write_conf(path, "DNS_RECORD_TTL=60\n");
    char *env[] = {"DNS_RECORD_TTL=0", NULL};
    CHECK_INT(settings_load_file(&s, path, env, err, sizeof err), -1);
    CHECK_STR(err, "DNS_RECORD_TTL: \"0\" is not a whole number from 1 to 604800");
    unlink(path);
    CHECK_INT(settings_load_file(&s, path, none, err, sizeof err), -1);
    char want[256];
    snprintf(want, sizeof want, "%s: cannot read the configuration file: No such file or directory",
             path);
    CHECK_STR(err, want);
}

int main(void)
{
    test_defaults();
    test_values();
    test_errors();
    test_resync_values();
    test_secret_file();
    test_kafka_secret_file();
    test_config_file();
    test_config_file_errors();
    return unit_done("settings");
}
