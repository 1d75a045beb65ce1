/* settings.h -- every setting cs-pdns reads, from the environment and a --config file, checked.
 * Must not: open connections or read files but the config file and secrets; it only validates. */
#ifndef CSPDNS_SETTINGS_H
#define CSPDNS_SETTINGS_H

#include <stdbool.h>
#include <stddef.h>

struct settings_kv {
    char *key; /* librdkafka property name, e.g. "session.timeout.ms" */
    char *value;
};

enum policy_on_error { POLICY_ON_ERROR_SKIP = 0, POLICY_ON_ERROR_RETRY = 1 };

/* MYSQL_PDNS_TLS: off = plain TCP; required = encrypted, certificate not checked; verify =
 * encrypted, certificate checked against MYSQL_PDNS_TLS_CA (or the system store) and the host. */
enum { SETTINGS_TLS_OFF = 0, SETTINGS_TLS_REQUIRED = 1, SETTINGS_TLS_VERIFY = 2 };

struct settings {
    /* Kafka */
    char *kafka_bootstrap;         /* KAFKA_BOOTSTRAP */
    char *kafka_topic;             /* KAFKA_TOPIC */
    char *kafka_group;             /* KAFKA_GROUP */
    struct settings_kv *kafka_cfg; /* KAFKA_CFG_<PROPERTY>, in environment order */
    size_t kafka_cfg_n;
    /* CloudStack */
    char *cs_endpoint;   /* CS_ENDPOINT, http(s)://host[:port]/client/api */
    char *cs_api_key;    /* CS_API_KEY */
    char *cs_secret_key; /* CS_SECRET_KEY */
    int cs_timeout_ms;   /* CS_TIMEOUT (seconds, default 10) */
    bool cs_verify_tls;  /* CS_VERIFY_TLS (default true) */
    char *cs_ca_file;    /* CS_CA_FILE (optional) */
    /* PowerDNS database */
    char *mysql_host;     /* MYSQL_PDNS_HOST */
    int mysql_port;       /* MYSQL_PDNS_PORT (default 3306) */
    char *mysql_name;     /* MYSQL_PDNS_NAME */
    char *mysql_user;     /* MYSQL_PDNS_USER */
    char *mysql_password; /* MYSQL_PDNS_PASSWORD */
    int mysql_tls;        /* MYSQL_PDNS_TLS: SETTINGS_TLS_OFF (default), _REQUIRED, _VERIFY */
    char
        *mysql_tls_ca; /* MYSQL_PDNS_TLS_CA: CA bundle (PEM) the server certificate must chain to */
    char *mysql_tls_cert; /* MYSQL_PDNS_TLS_CERT: client certificate (PEM), optional */
    char *mysql_tls_key;  /* MYSQL_PDNS_TLS_KEY: its private key (PEM) */
    /* PowerDNS HTTP API (optional: cache purges after each commit) */
    char *pdns_api_url;   /* PDNS_API_URL, e.g. http://127.0.0.1:8081; NULL: no purges */
    char *pdns_api_key;   /* PDNS_API_KEY (or PDNS_API_KEY_FILE) */
    char *pdns_server_id; /* PDNS_SERVER_ID (default "localhost") */
    /* Naming (passed to the policy) */
    int dns_ttl;                 /* DNS_RECORD_TTL (default 60) */
    char *dns_common_zone;       /* DNS_COMMON_ZONE (optional) */
    bool dns_add_to_common_zone; /* DNS_ADD_TO_COMMON_ZONE (default false) */
    /* Policy */
    char *policy_file;                    /* POLICY_FILE; NULL = the built-in default policy */
    long policy_max_instructions;         /* POLICY_MAX_INSTRUCTIONS (default 10000000) */
    int policy_timeout_ms;                /* POLICY_TIMEOUT_MS (default 5000) */
    int policy_max_memory_mb;             /* POLICY_MAX_MEMORY_MB (default 64) */
    enum policy_on_error policy_on_error; /* POLICY_ON_ERROR=skip|retry (default skip) */
    int max_records_per_vm;               /* MAX_RECORDS_PER_VM (default 1000) */
    /* Daemon */
    int log_level;      /* LOG_LEVEL=debug|info|warn|error (default info) */
    int log_format;     /* LOG_FORMAT=logfmt|json (default logfmt) */
    char *metrics_addr; /* METRICS_ADDR host:port for /metrics, /healthz, /readyz; NULL: off */
    int retry_max_backoff_ms; /* RETRY_MAX_BACKOFF_MS (default 30000) */
    int batch_max_events;     /* BATCH_MAX_EVENTS (default 250): events per transaction */
    int batch_max_wait_ms;    /* BATCH_MAX_WAIT_MS (default 5): how long a batch waits to fill */
    int owner_cache_ttl_s;    /* OWNER_CACHE_TTL (seconds, default 300; 0: no cache) */
    /* Resync */
    int resync_interval_s;         /* RESYNC_INTERVAL (seconds, default 3600; 0: no automatic
                                      resync in `run`) */
    int resync_max_delete_percent; /* RESYNC_MAX_DELETE_PERCENT (default 20) */
    bool resync_force;             /* RESYNC_FORCE (default false): ignore the deletion guard */
    int resync_page_size;          /* RESYNC_PAGE_SIZE (default 500, CloudStack's maximum) */
};

/* What a subcommand needs; settings_check reports the first missing one. */
enum {
    SETTINGS_NEED_KAFKA = 1 << 0,
    SETTINGS_NEED_CLOUDSTACK = 1 << 1,
    SETTINGS_NEED_MYSQL = 1 << 2,
};

/* Reads every setting from envp (a NULL-terminated "NAME=value" array, as environ) and applies
 * defaults. A present but invalid value fails here, whatever the subcommand.
 * Returns 0, or -1 with err = one line "NAME: what is wrong (what is expected)". */
int settings_load(struct settings *s, char *const *envp, char *err, size_t errlen);

/* settings_load over the environment envp merged with the configuration file path (--config):
 * a variable set in envp wins over the file's line for it; for the secrets, NAME in one and
 * NAME_FILE in the other count as the same setting, so the environment's wins. path NULL: just
 * settings_load(envp).
 * The file: one NAME=value per line; blank lines and lines starting with '#' or ';' are
 * comments; whitespace around the value is dropped; a value may be in '...' (verbatim) or "..."
 * (\\, \", \$ and \` escaped); unquoted, a backslash keeps the next character. That is the
 * part of systemd's EnvironmentFile= syntax that fits on one line, so a file read here means the
 * same to systemd. NAME must be a cs-pdns setting (settings_docs, KAFKA_CFG_*, a secret's _FILE)
 * set once. Errors start with "FILE:LINE: " for a line that breaks these rules, and for an
 * invalid value that came from the file. Returns 0, or -1 with err set. */
int settings_load_file(struct settings *s, const char *path, char *const *envp, char *err,
                       size_t errlen);

/* Checks that the settings in need are present. Returns 0, or -1 with err naming the variable. */
int settings_check(const struct settings *s, int need, char *err, size_t errlen);

void settings_free(struct settings *s);

/* The documented settings (name, default, meaning), for --help. NULL-terminated. */
struct settings_doc {
    const char *name;
    const char *def;
    const char *meaning;
};
extern const struct settings_doc settings_docs[];

#endif
