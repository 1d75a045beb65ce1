/* test_settings.c -- settings from an environment: defaults, parsing, and errors naming variables.
 * Must not: read the real environment; every case passes its own envp. */
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

int main(void)
{
    test_defaults();
    test_values();
    test_errors();
    test_resync_values();
    test_secret_file();
    return unit_done("settings");
}
