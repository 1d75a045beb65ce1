/* settings.c -- reads the settings from the environment and a --config file; defaults, bad values.
 * Must not: connect anywhere or read any file but the config file and the *_FILE secrets named. */
#include "settings.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "dns_name.h"
#include "http_server.h"
#include "logger.h"
#include "text_file.h"

const struct settings_doc settings_docs[] = {
    {"KAFKA_BOOTSTRAP", "(required)", "Kafka bootstrap servers, host:port[,host:port...]"},
    {"KAFKA_TOPIC", "(required)", "topic CloudStack's Kafka event bus publishes to"},
    {"KAFKA_GROUP", "(required)",
     "consumer group id; instances in one group share the partitions and the resyncs"},
    {"KAFKA_CFG_<PROPERTY>", "",
     "any librdkafka property, e.g. KAFKA_CFG_SECURITY_PROTOCOL=SASL_SSL; "
     "KAFKA_CFG_<PROPERTY>_FILE reads its value from a file"},
    {"CS_ENDPOINT", "(required)", "CloudStack API URL, e.g. https://cloud.example.com/client/api"},
    {"CS_API_KEY", "(required)",
     "API key of an account that can list all VMs (or CS_API_KEY_FILE)"},
    {"CS_SECRET_KEY", "(required)", "secret key for CS_API_KEY (or CS_SECRET_KEY_FILE)"},
    {"CS_TIMEOUT", "10", "seconds one CloudStack API request may take"},
    {"CS_VERIFY_TLS", "true", "verify the CloudStack server's TLS certificate"},
    {"CS_CA_FILE", "", "CA bundle for CS_ENDPOINT (PEM)"},
    {"MYSQL_PDNS_HOST", "(required)", "PowerDNS database host (an IP address for TCP)"},
    {"MYSQL_PDNS_PORT", "3306", "PowerDNS database port"},
    {"MYSQL_PDNS_NAME", "(required)", "PowerDNS database name"},
    {"MYSQL_PDNS_USER", "(required)", "database user"},
    {"MYSQL_PDNS_PASSWORD", "", "database password (or MYSQL_PDNS_PASSWORD_FILE)"},
    {"MYSQL_PDNS_TLS", "off",
     "off, required (encrypt) or verify (encrypt, check the certificate and host name)"},
    {"MYSQL_PDNS_TLS_CA", "", "CA bundle (PEM) for MYSQL_PDNS_TLS=verify"},
    {"MYSQL_PDNS_TLS_CERT", "", "client certificate (PEM) for servers that require one"},
    {"MYSQL_PDNS_TLS_KEY", "", "private key (PEM) of MYSQL_PDNS_TLS_CERT"},
    {"PDNS_API_URL", "", "PowerDNS HTTP API, e.g. http://127.0.0.1:8081: purge its caches"},
    {"PDNS_API_KEY", "", "X-API-Key for PDNS_API_URL (or PDNS_API_KEY_FILE)"},
    {"PDNS_SERVER_ID", "localhost", "server id in PowerDNS API paths"},
    {"DNS_RECORD_TTL", "60", "TTL of the records the policy writes (seconds)"},
    {"DNS_COMMON_ZONE", "", "a zone every VM may also be named in"},
    {"DNS_ADD_TO_COMMON_ZONE", "false", "also name VMs <name>.<DNS_COMMON_ZONE>"},
    {"POLICY_FILE", "(built-in)", "Lua policy deciding each VM's records"},
    {"POLICY_MAX_INSTRUCTIONS", "10000000", "Lua instructions one policy call may run"},
    {"POLICY_TIMEOUT_MS", "5000", "wall-clock time one policy call may take"},
    {"POLICY_MAX_MEMORY_MB", "64", "memory the policy's Lua state may use"},
    {"POLICY_ON_ERROR", "skip", "skip: log a failing event and go on; retry: stop and retry it"},
    {"MAX_RECORDS_PER_VM", "1000", "most records one VM may have"},
    {"RETRY_MAX_BACKOFF_MS", "30000", "longest wait between retries of a failing event"},
    {"BATCH_MAX_EVENTS", "500", "most events applied in one database transaction"},
    {"BATCH_MAX_WAIT_MS", "5", "how long a batch waits for more events before it is applied"},
    {"OWNER_CACHE_TTL", "300", "seconds an account/domain/project lookup is reused; 0: never"},
    {"LOG_LEVEL", "info", "debug, info, warn or error"},
    {"LOG_FORMAT", "logfmt", "logfmt, or json for one JSON object per line"},
    {"METRICS_ADDR", "", "serve /metrics, /healthz, /readyz on host:port, [ipv6]:port or :port"},
    {"RESYNC_INTERVAL", "3600",
     "seconds between automatic resyncs in run; 0: none, not even at start"},
    {"RESYNC_MAX_DELETE_PERCENT", "20",
     "a resync removing more than this share of the owned records refuses to remove any"},
    {"RESYNC_FORCE", "false", "resyncs ignore RESYNC_MAX_DELETE_PERCENT"},
    {"RESYNC_PAGE_SIZE", "500", "VMs per listVirtualMachines page (at most default.page.size)"},
    {NULL, NULL, NULL},
};

static const char *env_get(char *const *envp, const char *name)
{
    size_t n = strlen(name);
    for (char *const *e = envp; e && *e; e++)
        if (strncmp(*e, name, n) == 0 && (*e)[n] == '=')
            return *e + n + 1;
    return NULL;
}

static int fail(char *err, size_t errlen, const char *name, const char *what)
{
    snprintf(err, errlen, "%s: %s", name, what);
    return -1;
}

static int dup_into(char **dst, const char *v, char *err, size_t errlen)
{
    *dst = strdup(v);
    if (!*dst) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    return 0;
}

/* The secret in the file at path (named by the variable var), trailing newlines dropped. A file
 * too large to be a secret is refused rather than cut short. */
static int read_secret_file(const char *var, const char *path, char **dst, char *err, size_t errlen)
{
    char why[512];
    size_t len;
    if (text_file_read(path, 64 * 1024, dst, &len, why, sizeof why) != 0) {
        snprintf(err, errlen, "%s: %s", var, why);
        return -1;
    }
    while (len > 0 && ((*dst)[len - 1] == '\n' || (*dst)[len - 1] == '\r'))
        (*dst)[--len] = '\0';
    return 0;
}

/* Reads a secret from NAME, or from the file named by NAME_FILE, so secrets can come from
 * container secret mounts instead of the environment. */
static int load_secret(char *const *envp, const char *name, char **dst, char *err, size_t errlen)
{
    char fname[64];
    snprintf(fname, sizeof fname, "%s_FILE", name);
    const char *direct = env_get(envp, name), *file = env_get(envp, fname);
    if (direct && file)
        return fail(err, errlen, name, "set only one of it and its _FILE variant");
    if (direct)
        return dup_into(dst, direct, err, errlen);
    if (!file)
        return 0;
    return read_secret_file(fname, file, dst, err, errlen);
}

static int load_string(char *const *envp, const char *name, char **dst, char *err, size_t errlen)
{
    const char *v = env_get(envp, name);
    if (!v)
        return 0;
    if (!*v)
        return fail(err, errlen, name, "is set but empty (unset it or give a value)");
    return dup_into(dst, v, err, errlen);
}

static int load_long(char *const *envp, const char *name, long min, long max, long *dst, char *err,
                     size_t errlen)
{
    const char *v = env_get(envp, name);
    if (!v)
        return 0;
    char *end;
    errno = 0;
    long x = strtol(v, &end, 10);
    if (errno || end == v || *end || x < min || x > max) {
        char what[160];
        snprintf(what, sizeof what, "\"%.40s\" is not a whole number from %ld to %ld", v, min, max);
        return fail(err, errlen, name, what);
    }
    *dst = x;
    return 0;
}

static int load_int(char *const *envp, const char *name, int min, int max, int *dst, char *err,
                    size_t errlen)
{
    long x = *dst;
    if (load_long(envp, name, min, max, &x, err, errlen))
        return -1;
    *dst = (int)x;
    return 0;
}

static int load_bool(char *const *envp, const char *name, bool *dst, char *err, size_t errlen)
{
    const char *v = env_get(envp, name);
    if (!v)
        return 0;
    static const char *const yes[] = {"true", "1", "yes", "on"}, *const no[] = {"false", "0", "no",
                                                                                "off"};
    for (int i = 0; i < 4; i++) {
        if (strcasecmp(v, yes[i]) == 0) {
            *dst = true;
            return 0;
        }
        if (strcasecmp(v, no[i]) == 0) {
            *dst = false;
            return 0;
        }
    }
    char what[120];
    snprintf(what, sizeof what, "\"%.40s\" is not a boolean (use true or false)", v);
    return fail(err, errlen, name, what);
}

/* KAFKA_CFG_SESSION_TIMEOUT_MS=6000 -> session.timeout.ms=6000. KAFKA_CFG_SASL_PASSWORD_FILE=F
 * -> sasl.password=<F's contents>: no librdkafka property ends in ".file", so the suffix is free
 * for the secrets convention. */
static int load_kafka_cfg(struct settings *s, char *const *envp, char *err, size_t errlen)
{
    static const char prefix[] = "KAFKA_CFG_";
    for (char *const *e = envp; e && *e; e++) {
        if (strncmp(*e, prefix, sizeof prefix - 1) != 0)
            continue;
        const char *name = *e + sizeof prefix - 1, *eq = strchr(name, '=');
        if (!eq || eq == name) {
            snprintf(err, errlen, "%.*s: no property name after KAFKA_CFG_",
                     (int)(eq ? eq - *e : (long)strlen(*e)), *e);
            return -1;
        }
        size_t n = (size_t)(eq - name);
        int from_file = n > 5 && strncmp(eq - 5, "_FILE", 5) == 0;
        char var[256], direct[256];
        snprintf(var, sizeof var, "%.*s", (int)(eq - *e), *e);
        if (from_file) {
            n -= 5;
            snprintf(direct, sizeof direct, "%.*s", (int)(eq - *e) - 5, *e);
            if (env_get(envp, direct))
                return fail(err, errlen, direct, "set only one of it and its _FILE variant");
        }
        struct settings_kv *kv = realloc(s->kafka_cfg, (s->kafka_cfg_n + 1) * sizeof *kv);
        if (!kv)
            return fail(err, errlen, "KAFKA_CFG_*", "out of memory");
        s->kafka_cfg = kv;
        kv = &s->kafka_cfg[s->kafka_cfg_n];
        kv->value = NULL;
        kv->key = strndup(name, n);
        if (!kv->key)
            return fail(err, errlen, "KAFKA_CFG_*", "out of memory");
        if (from_file ? read_secret_file(var, eq + 1, &kv->value, err, errlen) != 0
                      : dup_into(&kv->value, eq + 1, err, errlen) != 0) {
            free(kv->key);
            return -1;
        }
        s->kafka_cfg_n++;
        for (char *p = kv->key; *p; p++)
            *p = *p == '_' ? '.' : (char)tolower((unsigned char)*p);
    }
    return 0;
}

static int check_topic(const char *t, char *err, size_t errlen)
{
    size_t n = strlen(t);
    if (n > 249)
        return fail(err, errlen, "KAFKA_TOPIC", "is longer than Kafka's 249 characters");
    for (const char *p = t; *p; p++)
        if (!isalnum((unsigned char)*p) && *p != '.' && *p != '_' && *p != '-')
            return fail(err, errlen, "KAFKA_TOPIC",
                        "may only hold letters, digits, '.', '_' and '-' (a Kafka topic name)");
    return 0;
}

int settings_load(struct settings *s, char *const *envp, char *err, size_t errlen)
{
    memset(s, 0, sizeof *s);
    s->cs_timeout_ms = 10000;
    s->cs_verify_tls = true;
    s->mysql_port = 3306;
    s->dns_ttl = 60;
    s->policy_max_instructions = 10000000;
    s->policy_timeout_ms = 5000;
    s->policy_max_memory_mb = 64;
    s->max_records_per_vm = 1000;
    s->log_level = LOG_LVL_INFO;
    s->retry_max_backoff_ms = 30000;
    s->resync_interval_s = 3600;
    s->resync_max_delete_percent = 20;
    s->resync_page_size = 500;
    s->batch_max_events = 500;
    s->batch_max_wait_ms = 5;
    s->owner_cache_ttl_s = 300;

    int timeout_s = 10;
    const char *v;
    if (load_string(envp, "KAFKA_BOOTSTRAP", &s->kafka_bootstrap, err, errlen) ||
        load_string(envp, "KAFKA_TOPIC", &s->kafka_topic, err, errlen) ||
        load_string(envp, "KAFKA_GROUP", &s->kafka_group, err, errlen) ||
        load_kafka_cfg(s, envp, err, errlen) ||
        load_string(envp, "CS_ENDPOINT", &s->cs_endpoint, err, errlen) ||
        load_secret(envp, "CS_API_KEY", &s->cs_api_key, err, errlen) ||
        load_secret(envp, "CS_SECRET_KEY", &s->cs_secret_key, err, errlen) ||
        load_int(envp, "CS_TIMEOUT", 1, 3600, &timeout_s, err, errlen) ||
        load_bool(envp, "CS_VERIFY_TLS", &s->cs_verify_tls, err, errlen) ||
        load_string(envp, "CS_CA_FILE", &s->cs_ca_file, err, errlen) ||
        load_string(envp, "MYSQL_PDNS_HOST", &s->mysql_host, err, errlen) ||
        load_int(envp, "MYSQL_PDNS_PORT", 1, 65535, &s->mysql_port, err, errlen) ||
        load_string(envp, "MYSQL_PDNS_NAME", &s->mysql_name, err, errlen) ||
        load_string(envp, "MYSQL_PDNS_USER", &s->mysql_user, err, errlen) ||
        load_secret(envp, "MYSQL_PDNS_PASSWORD", &s->mysql_password, err, errlen) ||
        load_string(envp, "MYSQL_PDNS_TLS_CA", &s->mysql_tls_ca, err, errlen) ||
        load_string(envp, "MYSQL_PDNS_TLS_CERT", &s->mysql_tls_cert, err, errlen) ||
        load_string(envp, "MYSQL_PDNS_TLS_KEY", &s->mysql_tls_key, err, errlen) ||
        load_string(envp, "PDNS_API_URL", &s->pdns_api_url, err, errlen) ||
        load_secret(envp, "PDNS_API_KEY", &s->pdns_api_key, err, errlen) ||
        load_string(envp, "PDNS_SERVER_ID", &s->pdns_server_id, err, errlen) ||
        load_int(envp, "DNS_RECORD_TTL", 1, 604800, &s->dns_ttl, err, errlen) ||
        load_bool(envp, "DNS_ADD_TO_COMMON_ZONE", &s->dns_add_to_common_zone, err, errlen) ||
        load_string(envp, "POLICY_FILE", &s->policy_file, err, errlen) ||
        load_long(envp, "POLICY_MAX_INSTRUCTIONS", 1000, 1000000000000L,
                  &s->policy_max_instructions, err, errlen) ||
        load_int(envp, "POLICY_TIMEOUT_MS", 10, 600000, &s->policy_timeout_ms, err, errlen) ||
        load_int(envp, "POLICY_MAX_MEMORY_MB", 4, 16384, &s->policy_max_memory_mb, err, errlen) ||
        load_int(envp, "MAX_RECORDS_PER_VM", 1, 100000, &s->max_records_per_vm, err, errlen) ||
        load_int(envp, "RETRY_MAX_BACKOFF_MS", 100, 3600000, &s->retry_max_backoff_ms, err,
                 errlen) ||
        load_int(envp, "RESYNC_INTERVAL", 0, 604800, &s->resync_interval_s, err, errlen) ||
        load_int(envp, "RESYNC_MAX_DELETE_PERCENT", 0, 100, &s->resync_max_delete_percent, err,
                 errlen) ||
        load_bool(envp, "RESYNC_FORCE", &s->resync_force, err, errlen) ||
        load_int(envp, "RESYNC_PAGE_SIZE", 1, 500, &s->resync_page_size, err, errlen) ||
        load_int(envp, "BATCH_MAX_EVENTS", 1, 100000, &s->batch_max_events, err, errlen) ||
        load_int(envp, "BATCH_MAX_WAIT_MS", 0, 10000, &s->batch_max_wait_ms, err, errlen) ||
        load_int(envp, "OWNER_CACHE_TTL", 0, 86400, &s->owner_cache_ttl_s, err, errlen))
        goto fail;
    if (!s->pdns_server_id && dup_into(&s->pdns_server_id, "localhost", err, errlen))
        goto fail;
    if ((v = env_get(envp, "MYSQL_PDNS_TLS"))) {
        if (strcasecmp(v, "off") == 0)
            s->mysql_tls = SETTINGS_TLS_OFF;
        else if (strcasecmp(v, "required") == 0)
            s->mysql_tls = SETTINGS_TLS_REQUIRED;
        else if (strcasecmp(v, "verify") == 0)
            s->mysql_tls = SETTINGS_TLS_VERIFY;
        else {
            fail(err, errlen, "MYSQL_PDNS_TLS", "must be off, required or verify");
            goto fail;
        }
    }
    if ((s->mysql_tls_ca || s->mysql_tls_cert || s->mysql_tls_key) &&
        s->mysql_tls == SETTINGS_TLS_OFF) {
        fail(err, errlen, "MYSQL_PDNS_TLS",
             "is off but a MYSQL_PDNS_TLS_* file is set (set it to required or verify)");
        goto fail;
    }
    if (!s->mysql_tls_cert != !s->mysql_tls_key) {
        fail(err, errlen, s->mysql_tls_cert ? "MYSQL_PDNS_TLS_KEY" : "MYSQL_PDNS_TLS_CERT",
             "is needed with the other (a client certificate needs its key)");
        goto fail;
    }
    if (s->pdns_api_url && strncasecmp(s->pdns_api_url, "http://", 7) != 0 &&
        strncasecmp(s->pdns_api_url, "https://", 8) != 0) {
        fail(err, errlen, "PDNS_API_URL",
             "must be an http:// or https:// URL such as "
             "http://127.0.0.1:8081");
        goto fail;
    }
    if (s->pdns_api_url && !s->pdns_api_key) {
        fail(err, errlen, "PDNS_API_KEY", "is required when PDNS_API_URL is set");
        goto fail;
    }
    s->cs_timeout_ms = timeout_s * 1000;

    if (s->kafka_topic && check_topic(s->kafka_topic, err, errlen))
        goto fail;
    if (s->cs_endpoint && strncasecmp(s->cs_endpoint, "http://", 7) != 0 &&
        strncasecmp(s->cs_endpoint, "https://", 8) != 0) {
        fail(err, errlen, "CS_ENDPOINT",
             "must be an http:// or https:// URL such as https://cloud.example.com/client/api");
        goto fail;
    }
    if ((v = env_get(envp, "DNS_COMMON_ZONE")) && *v) {
        char zone[DNS_NAME_BUFSZ], why[200], what[300];
        if (dns_name_normalize(v, 0, zone, sizeof zone, why, sizeof why)) {
            snprintf(what, sizeof what, "\"%.60s\" is not a DNS zone name: %s", v, why);
            fail(err, errlen, "DNS_COMMON_ZONE", what);
            goto fail;
        }
        if (dup_into(&s->dns_common_zone, zone, err, errlen))
            goto fail;
    }
    if (s->dns_add_to_common_zone && !s->dns_common_zone) {
        fail(err, errlen, "DNS_ADD_TO_COMMON_ZONE", "is true but DNS_COMMON_ZONE is not set");
        goto fail;
    }
    if ((v = env_get(envp, "POLICY_ON_ERROR"))) {
        if (strcasecmp(v, "skip") == 0)
            s->policy_on_error = POLICY_ON_ERROR_SKIP;
        else if (strcasecmp(v, "retry") == 0)
            s->policy_on_error = POLICY_ON_ERROR_RETRY;
        else {
            fail(err, errlen, "POLICY_ON_ERROR", "must be skip or retry");
            goto fail;
        }
    }
    if ((v = env_get(envp, "LOG_FORMAT"))) {
        s->log_format = log_format_parse(v);
        if (s->log_format < 0) {
            fail(err, errlen, "LOG_FORMAT", "must be logfmt or json");
            goto fail;
        }
    }
    if ((v = env_get(envp, "METRICS_ADDR")) && *v) {
        char host[256], why[200], what[300];
        int port;
        if (http_server_parse_addr(v, host, sizeof host, &port, why, sizeof why) != 0) {
            snprintf(what, sizeof what, "\"%.60s\" is not an address: %s", v, why);
            fail(err, errlen, "METRICS_ADDR", what);
            goto fail;
        }
        if (dup_into(&s->metrics_addr, v, err, errlen))
            goto fail;
    }
    if ((v = env_get(envp, "LOG_LEVEL"))) {
        s->log_level = log_level_parse(v);
        if (s->log_level < 0) {
            fail(err, errlen, "LOG_LEVEL", "must be debug, info, warn or error");
            goto fail;
        }
    }
    return 0;
fail:
    settings_free(s);
    return -1;
}

/* ---- the configuration file (--config) ---- */

static const char *const secret_names[] = {"CS_API_KEY", "CS_SECRET_KEY", "MYSQL_PDNS_PASSWORD",
                                           "PDNS_API_KEY", NULL};

static int is_setting(const char *name, size_t n)
{
    if (n > 10 && strncmp(name, "KAFKA_CFG_", 10) == 0)
        return 1;
    for (const struct settings_doc *d = settings_docs; d->name; d++)
        if (strlen(d->name) == n && strncmp(d->name, name, n) == 0)
            return 1;
    for (const char *const *sn = secret_names; *sn; sn++) {
        size_t k = strlen(*sn);
        if (n == k + 5 && strncmp(name, *sn, k) == 0 && strncmp(name + k, "_FILE", 5) == 0)
            return 1;
    }
    return 0;
}

/* A secret and its _FILE variant are one setting: the environment's wins over either line. Any
 * KAFKA_CFG_* may be a secret (sasl.password, ssl.key.password). */
static int env_has_setting(char *const *envp, const char *name)
{
    if (env_get(envp, name))
        return 1;
    char other[160]; /* a name from the file (under 128) and "_FILE" */
    size_t n = strlen(name);
    if (strncmp(name, "KAFKA_CFG_", 10) == 0) {
        if (n > 15 && strcmp(name + n - 5, "_FILE") == 0)
            snprintf(other, sizeof other, "%.*s", (int)n - 5, name);
        else
            snprintf(other, sizeof other, "%s_FILE", name);
        return env_get(envp, other) != NULL;
    }
    for (const char *const *sn = secret_names; *sn; sn++) {
        size_t k = strlen(*sn);
        if (n == k && strcmp(name, *sn) == 0)
            snprintf(other, sizeof other, "%s_FILE", *sn);
        else if (n == k + 5 && strncmp(name, *sn, k) == 0)
            snprintf(other, sizeof other, "%s", *sn);
        else
            continue;
        return env_get(envp, other) != NULL;
    }
    return 0;
}

struct file_entry {
    char *kv; /* "NAME=value" */
    unsigned line;
};

struct file_env {
    struct file_entry *e;
    size_t n;
};

static void file_env_free(struct file_env *fe)
{
    for (size_t i = 0; i < fe->n; i++)
        free(fe->e[i].kv);
    free(fe->e);
}

static int is_blank(char c)
{
    return c == ' ' || c == '\t' || c == '\r';
}

/* The value after '=' (with line's trailing newline removed) into out, which holds strlen(v) + 1.
 * Returns NULL, or what is wrong with it. */
static const char *parse_value(const char *v, char *out)
{
    size_t o = 0;
    while (is_blank(*v))
        v++;
    if (*v == '\'' || *v == '"') {
        char q = *v++;
        for (; *v && *v != q; v++) {
            if (q == '"' && *v == '\\' && v[1] && strchr("\\\"$`", v[1]))
                v++;
            else if (q == '"' && *v == '\\' && !v[1])
                break;
            out[o++] = *v;
        }
        if (*v != q)
            return "the quoted value does not end on its line (a value must fit on one line)";
        for (v++; *v; v++)
            if (!is_blank(*v))
                return "text after the closing quote (put the whole value inside the quotes)";
        out[o] = '\0';
        return NULL;
    }
    size_t last = 0; /* length up to the last character that is not trailing whitespace */
    for (; *v; v++) {
        if (*v == '\\') {
            if (!*++v)
                return "a backslash at the end of the line (continued lines are not supported)";
            out[o++] = *v;
            last = o;
            continue;
        }
        out[o++] = *v;
        if (!is_blank(*v))
            last = o;
    }
    out[last] = '\0';
    return NULL;
}

/* One line of the file: a comment, or NAME=value added to fe. Returns 0, or -1 with why set. */
static int parse_line(struct file_env *fe, char *line, unsigned lineno, char *why, size_t whylen)
{
    size_t len = strlen(line);
    while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r'))
        line[--len] = '\0';
    char *p = line;
    while (is_blank(*p))
        p++;
    if (!*p || *p == '#' || *p == ';')
        return 0;
    /* A malformed line is never echoed: it may be a secret's line gone wrong
     * ("MYSQL_PDNS_PASSWORD hunter2"), and this message goes to the journal. */
    char *eq = strchr(p, '=');
    if (!eq) {
        snprintf(why, whylen, "expected NAME=value, a comment (# or ;) or a blank line");
        return -1;
    }
    size_t n = (size_t)(eq - p);
    while (n > 0 && is_blank(p[n - 1]))
        n--;
    int valid = n > 0 && (isalpha((unsigned char)p[0]) || p[0] == '_');
    for (size_t i = 0; i < n && valid; i++)
        valid = isalnum((unsigned char)p[i]) || p[i] == '_';
    if (!valid) {
        snprintf(why, whylen,
                 "expected a variable name before '=' (letters, digits and '_'; no \"export\")");
        return -1;
    }
    if (!is_setting(p, n)) {
        snprintf(why, whylen, "%.*s is not a cs-pdns setting (see cs-pdns --help)", (int)n, p);
        return -1;
    }
    for (size_t i = 0; i < fe->n; i++)
        if (strncmp(fe->e[i].kv, p, n) == 0 && fe->e[i].kv[n] == '=') {
            snprintf(why, whylen, "%.*s is already set on line %u", (int)n, p, fe->e[i].line);
            return -1;
        }
    struct file_entry *e = realloc(fe->e, (fe->n + 1) * sizeof *e);
    char *kv = malloc(n + 1 + strlen(eq + 1) + 1);
    if (e)
        fe->e = e;
    if (!e || !kv) {
        free(kv);
        snprintf(why, whylen, "out of memory");
        return -1;
    }
    memcpy(kv, p, n);
    kv[n] = '=';
    const char *bad = parse_value(eq + 1, kv + n + 1);
    if (bad) {
        free(kv);
        snprintf(why, whylen, "%.*s: %s", (int)n, p, bad);
        return -1;
    }
    fe->e[fe->n].kv = kv;
    fe->e[fe->n].line = lineno;
    fe->n++;
    return 0;
}

static int read_file_env(const char *path, struct file_env *fe, char *err, size_t errlen)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        snprintf(err, errlen, "%s: cannot read the configuration file: %s", path, strerror(errno));
        return -1;
    }
    char *line = NULL, why[300];
    size_t cap = 0;
    unsigned lineno = 0;
    int rc = 0;
    ssize_t got;
    while (rc == 0 && (got = getline(&line, &cap, f)) >= 0) {
        lineno++;
        if ((size_t)got != strlen(line)) {
            snprintf(err, errlen, "%s:%u: a NUL byte (is this a text file?)", path, lineno);
            rc = -1;
        } else if (parse_line(fe, line, lineno, why, sizeof why) != 0) {
            snprintf(err, errlen, "%s:%u: %s", path, lineno, why);
            rc = -1;
        }
    }
    if (rc == 0 && ferror(f)) {
        snprintf(err, errlen, "%s: cannot read the configuration file: %s", path, strerror(errno));
        rc = -1;
    }
    free(line);
    fclose(f);
    return rc;
}

int settings_load_file(struct settings *s, const char *path, char *const *envp, char *err,
                       size_t errlen)
{
    if (!path)
        return settings_load(s, envp, err, errlen);
    memset(s, 0, sizeof *s);
    struct file_env fe = {0};
    if (read_file_env(path, &fe, err, errlen) != 0) {
        file_env_free(&fe);
        return -1;
    }
    size_t nenv = 0;
    while (envp && envp[nenv])
        nenv++;
    /* The environment's entries are borrowed, the file's owned by fe. */
    char **merged = calloc(nenv + fe.n + 1, sizeof *merged);
    if (!merged) {
        file_env_free(&fe);
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    size_t m = 0;
    for (size_t i = 0; i < nenv; i++)
        merged[m++] = envp[i];
    for (size_t i = 0; i < fe.n; i++) {
        char name[128];
        snprintf(name, sizeof name, "%.*s", (int)(strchr(fe.e[i].kv, '=') - fe.e[i].kv),
                 fe.e[i].kv);
        if (!env_has_setting(envp, name))
            merged[m++] = fe.e[i].kv;
    }
    int rc = settings_load(s, merged, err, errlen);
    if (rc != 0) {
        /* The message starts with the variable at fault: point at its line when the file set
         * it, since the file is where the operator will look. */
        size_t n = strcspn(err, ": ");
        for (size_t i = 0; i < fe.n; i++) {
            const char *kv = fe.e[i].kv;
            int used = 0;
            for (size_t j = nenv; j < m && !used; j++)
                used = merged[j] == kv;
            if (used && n > 0 && strncmp(kv, err, n) == 0 && kv[n] == '=') {
                char msg[1024];
                snprintf(msg, sizeof msg, "%s:%u: %s", path, fe.e[i].line, err);
                snprintf(err, errlen, "%s", msg);
                break;
            }
        }
    }
    free(merged);
    file_env_free(&fe);
    return rc;
}

int settings_check(const struct settings *s, int need, char *err, size_t errlen)
{
    struct {
        int need;
        const char *name;
        const void *value;
    } req[] = {
        {SETTINGS_NEED_KAFKA, "KAFKA_BOOTSTRAP", s->kafka_bootstrap},
        {SETTINGS_NEED_KAFKA, "KAFKA_TOPIC", s->kafka_topic},
        {SETTINGS_NEED_KAFKA, "KAFKA_GROUP", s->kafka_group},
        {SETTINGS_NEED_CLOUDSTACK, "CS_ENDPOINT", s->cs_endpoint},
        {SETTINGS_NEED_CLOUDSTACK, "CS_API_KEY", s->cs_api_key},
        {SETTINGS_NEED_CLOUDSTACK, "CS_SECRET_KEY", s->cs_secret_key},
        {SETTINGS_NEED_MYSQL, "MYSQL_PDNS_HOST", s->mysql_host},
        {SETTINGS_NEED_MYSQL, "MYSQL_PDNS_NAME", s->mysql_name},
        {SETTINGS_NEED_MYSQL, "MYSQL_PDNS_USER", s->mysql_user},
    };
    for (size_t i = 0; i < sizeof req / sizeof req[0]; i++)
        if ((need & req[i].need) && !req[i].value)
            return fail(err, errlen, req[i].name, "is required but not set");
    return 0;
}

void settings_free(struct settings *s)
{
    char **strings[] = {
        &s->kafka_bootstrap, &s->kafka_topic,   &s->kafka_group,    &s->cs_endpoint,
        &s->cs_api_key,      &s->cs_secret_key, &s->cs_ca_file,     &s->mysql_host,
        &s->mysql_name,      &s->mysql_user,    &s->mysql_password, &s->dns_common_zone,
        &s->policy_file,     &s->metrics_addr,  &s->mysql_tls_ca,   &s->mysql_tls_cert,
        &s->mysql_tls_key,   &s->pdns_api_url,  &s->pdns_api_key,   &s->pdns_server_id};
    for (size_t i = 0; i < sizeof strings / sizeof strings[0]; i++) {
        free(*strings[i]);
        *strings[i] = NULL;
    }
    for (size_t i = 0; i < s->kafka_cfg_n; i++) {
        free(s->kafka_cfg[i].key);
        free(s->kafka_cfg[i].value);
    }
    free(s->kafka_cfg);
    s->kafka_cfg = NULL;
    s->kafka_cfg_n = 0;
}
