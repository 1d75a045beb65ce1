/* kafka_mock.c -- a Kafka broker for tests: librdkafka's mock cluster, listening on 127.0.0.1.
 * Must not: be used outside tests; it keeps every topic, message and offset in memory only. */
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void usage(void)
{
    fprintf(stderr,
            "usage: kafka-mock [-b brokers] [-f bootstrap-file] [-d debug] [topic:partitions...]\n"
            "Prints the bootstrap address (also written atomically to the file), then\n"
            "serves until SIGTERM or SIGINT.\n");
}

static int write_file(const char *path, const char *text)
{
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    if (!f)
        return -1;
    fprintf(f, "%s\n", text);
    if (fclose(f) != 0)
        return -1;
    return rename(tmp, path);
}

int main(int argc, char **argv)
{
    int brokers = 1, opt;
    const char *file = NULL, *debug = NULL;
    while ((opt = getopt(argc, argv, "b:f:d:h")) != -1) {
        if (opt == 'b')
            brokers = atoi(optarg);
        else if (opt == 'f')
            file = optarg;
        else if (opt == 'd')
            debug = optarg;
        else {
            usage();
            return 2;
        }
    }
    if (brokers < 1) {
        usage();
        return 2;
    }
    /* Signals must be blocked before librdkafka starts its threads, so sigwait below is the only
     * place they are taken. */
    sigset_t stop;
    sigemptyset(&stop);
    sigaddset(&stop, SIGTERM);
    sigaddset(&stop, SIGINT);
    pthread_sigmask(SIG_BLOCK, &stop, NULL);

    char err[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    if (rd_kafka_conf_set(conf, debug ? "debug" : "log_level", debug ? debug : "3", err,
                          sizeof err) != RD_KAFKA_CONF_OK) {
        fprintf(stderr, "kafka-mock: %s\n", err);
        return 2;
    }
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof err);
    if (!rk) {
        fprintf(stderr, "kafka-mock: %s\n", err);
        return 1;
    }
    rd_kafka_mock_cluster_t *mc = rd_kafka_mock_cluster_new(rk, brokers);
    if (!mc) {
        fprintf(stderr, "kafka-mock: cannot create the mock cluster\n");
        return 1;
    }
    for (int i = optind; i < argc; i++) {
        char *colon = strchr(argv[i], ':');
        int parts = colon ? atoi(colon + 1) : 1;
        if (colon)
            *colon = '\0';
        if (parts < 1 ||
            rd_kafka_mock_topic_create(mc, argv[i], parts, brokers < 3 ? brokers : 3)) {
            fprintf(stderr, "kafka-mock: cannot create topic %s\n", argv[i]);
            return 1;
        }
    }
    const char *bootstrap = rd_kafka_mock_cluster_bootstraps(mc);
    if (file && write_file(file, bootstrap) != 0) {
        fprintf(stderr, "kafka-mock: cannot write %s\n", file);
        return 1;
    }
    printf("%s\n", bootstrap);
    fflush(stdout);
    int sig;
    sigwait(&stop, &sig);
    rd_kafka_mock_cluster_destroy(mc);
    rd_kafka_destroy(rk);
    return 0;
}
