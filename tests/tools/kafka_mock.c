/* kafka_mock.c -- a Kafka broker for tests: librdkafka's mock cluster, listening on 127.0.0.1,
 * with a control socket that moves partition leaders and takes brokers down and up mid-stream.
 * Must not: be used outside tests; it keeps every topic, message and offset in memory only. */
#include <errno.h>
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define LINE_MAX_LEN 1024
#define MAX_WORDS 8

static const char help_text[] =
    "commands (one per line; each answers one line, \"ok ...\" or \"error ...\"):\n"
    "  ping                                   answers ok\n"
    "  topic TOPIC PARTITIONS [REPLICAS]      creates a topic\n"
    "  leader TOPIC PARTITION BROKER          moves the partition's leader (-1: none)\n"
    "  follower TOPIC PARTITION BROKER        sets the preferred replica to fetch from\n"
    "  down BROKER                            disconnects the broker, refuses clients (-1: all)\n"
    "  up BROKER                              lets the broker accept clients again (-1: all)\n"
    "  rtt BROKER MS                          delays the broker's answers\n"
    "  coordinator group|transaction KEY BROKER   moves a group or transaction coordinator\n"
    "  errors APIKEY CODE[,CODE...]           the next requests of that API fail with these\n"
    "  clear APIKEY                           forgets the pushed errors of that API\n"
    "  brokers                                answers the broker count\n";

static void usage(void)
{
    fprintf(stderr,
            "usage: kafka-mock [-b brokers] [-f bootstrap-file] [-c control-socket] [-d debug]\n"
            "                  [topic:partitions...]\n"
            "Prints the bootstrap address (also written atomically to the file), then\n"
            "serves until SIGTERM or SIGINT. With -c, a Unix socket at that path takes\n"
            "line commands (try: echo help | socat - UNIX-CONNECT:PATH):\n%s",
            help_text);
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

struct control {
    rd_kafka_mock_cluster_t *mc;
    int brokers;
    int listen_fd;
    int stop_pipe[2]; /* main writes a byte here to end the control thread */
};

/* Parses a whole decimal integer; returns 0, or -1 when text is not one. */
static int parse_int(const char *text, long min, long max, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(text, &end, 10);
    if (errno || end == text || *end || v < min || v > max)
        return -1;
    *out = v;
    return 0;
}

static void reply_err(char *out, size_t outlen, rd_kafka_resp_err_t e)
{
    if (e)
        snprintf(out, outlen, "error %s", rd_kafka_err2name(e));
    else
        snprintf(out, outlen, "ok");
}

/* Splits line in place at blanks; returns the word count (at most MAX_WORDS). */
static int split(char *line, char **words)
{
    int n = 0;
    for (char *save = NULL, *w = strtok_r(line, " \t\r\n", &save); w && n < MAX_WORDS;
         w = strtok_r(NULL, " \t\r\n", &save))
        words[n++] = w;
    return n;
}

/* Runs one command line and writes the one-line answer (without newline) to out. */
static void run_command(struct control *c, char *line, char *out, size_t outlen)
{
    char *w[MAX_WORDS];
    int n = split(line, w);
    long a, b;
    if (n == 0) {
        snprintf(out, outlen, "error empty command; try help");
    } else if (!strcmp(w[0], "ping") && n == 1) {
        snprintf(out, outlen, "ok pong");
    } else if (!strcmp(w[0], "brokers") && n == 1) {
        snprintf(out, outlen, "ok %d", c->brokers);
    } else if (!strcmp(w[0], "help")) {
        snprintf(out, outlen, "ok see kafka-mock -h");
    } else if (!strcmp(w[0], "topic") && (n == 3 || n == 4)) {
        long replicas = c->brokers < 3 ? c->brokers : 3;
        if (parse_int(w[2], 1, 100000, &a) || (n == 4 && parse_int(w[3], 1, c->brokers, &replicas)))
            snprintf(out, outlen, "error bad partition or replica count");
        else
            reply_err(out, outlen, rd_kafka_mock_topic_create(c->mc, w[1], (int)a, (int)replicas));
    } else if ((!strcmp(w[0], "leader") || !strcmp(w[0], "follower")) && n == 4) {
        if (parse_int(w[2], 0, INT32_MAX, &a) || parse_int(w[3], -1, INT32_MAX, &b))
            snprintf(out, outlen, "error bad partition or broker id");
        else if (w[0][0] == 'l')
            reply_err(out, outlen,
                      rd_kafka_mock_partition_set_leader(c->mc, w[1], (int32_t)a, (int32_t)b));
        else
            reply_err(out, outlen,
                      rd_kafka_mock_partition_set_follower(c->mc, w[1], (int32_t)a, (int32_t)b));
    } else if ((!strcmp(w[0], "down") || !strcmp(w[0], "up")) && n == 2) {
        if (parse_int(w[1], -1, c->brokers, &a))
            snprintf(out, outlen, "error bad broker id (1..%d, or -1 for all)", c->brokers);
        else if (w[0][0] == 'd')
            reply_err(out, outlen, rd_kafka_mock_broker_set_down(c->mc, (int32_t)a));
        else
            reply_err(out, outlen, rd_kafka_mock_broker_set_up(c->mc, (int32_t)a));
    } else if (!strcmp(w[0], "rtt") && n == 3) {
        if (parse_int(w[1], -1, c->brokers, &a) || parse_int(w[2], 0, 600000, &b))
            snprintf(out, outlen, "error bad broker id or delay");
        else
            reply_err(out, outlen, rd_kafka_mock_broker_set_rtt(c->mc, (int32_t)a, (int)b));
    } else if (!strcmp(w[0], "coordinator") && n == 4) {
        if ((strcmp(w[1], "group") && strcmp(w[1], "transaction")) ||
            parse_int(w[3], 0, INT32_MAX, &b))
            snprintf(out, outlen, "error usage: coordinator group|transaction KEY BROKER");
        else
            reply_err(out, outlen, rd_kafka_mock_coordinator_set(c->mc, w[1], w[2], (int32_t)b));
    } else if (!strcmp(w[0], "errors") && n == 3) {
        rd_kafka_resp_err_t codes[64];
        size_t cnt = 0;
        int bad = parse_int(w[1], 0, INT16_MAX, &a);
        for (char *save = NULL, *t = strtok_r(w[2], ",", &save); t && !bad;
             t = strtok_r(NULL, ",", &save)) {
            bad = cnt == sizeof codes / sizeof codes[0] || parse_int(t, -200, 1000, &b);
            if (!bad)
                codes[cnt++] = (rd_kafka_resp_err_t)b;
        }
        if (bad || cnt == 0) {
            snprintf(out, outlen, "error usage: errors APIKEY CODE[,CODE...] (at most 64)");
        } else {
            rd_kafka_mock_push_request_errors_array(c->mc, (int16_t)a, cnt, codes);
            snprintf(out, outlen, "ok %zu", cnt);
        }
    } else if (!strcmp(w[0], "clear") && n == 2) {
        if (parse_int(w[1], 0, INT16_MAX, &a)) {
            snprintf(out, outlen, "error bad API key");
        } else {
            rd_kafka_mock_clear_request_errors(c->mc, (int16_t)a);
            snprintf(out, outlen, "ok");
        }
    } else {
        snprintf(out, outlen, "error unknown command or wrong arguments: %s; try help", w[0]);
    }
}

/* Serves one client: one answer per line until it hangs up or the mock stops. */
static void serve_client(struct control *c, int fd)
{
    char buf[LINE_MAX_LEN];
    size_t used = 0;
    for (;;) {
        struct pollfd p[2] = {{fd, POLLIN, 0}, {c->stop_pipe[0], POLLIN, 0}};
        if (poll(p, 2, -1) < 0) {
            if (errno == EINTR)
                continue;
            return;
        }
        if (p[1].revents)
            return;
        ssize_t got = read(fd, buf + used, sizeof buf - 1 - used);
        if (got <= 0)
            return;
        used += (size_t)got;
        char *nl;
        while ((nl = memchr(buf, '\n', used))) {
            *nl = '\0';
            char answer[512], cmd[LINE_MAX_LEN];
            snprintf(cmd, sizeof cmd, "%s", buf); /* run_command splits its copy */
            run_command(c, cmd, answer, sizeof answer);
            fprintf(stderr, "kafka-mock: control: %s -> %s\n", buf, answer);
            size_t alen = strlen(answer);
            answer[alen++] = '\n';
            if (write(fd, answer, alen) != (ssize_t)alen)
                return;
            used -= (size_t)(nl + 1 - buf);
            memmove(buf, nl + 1, used);
        }
        if (used == sizeof buf - 1) {
            static const char too_long[] = "error line too long\n";
            if (write(fd, too_long, sizeof too_long - 1) < 0)
                return;
            used = 0;
        }
    }
}

static void *control_thread(void *arg)
{
    struct control *c = arg;
    for (;;) {
        struct pollfd p[2] = {{c->listen_fd, POLLIN, 0}, {c->stop_pipe[0], POLLIN, 0}};
        if (poll(p, 2, -1) < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        if (p[1].revents)
            break;
        int fd = accept(c->listen_fd, NULL, NULL);
        if (fd < 0)
            continue;
        serve_client(c, fd);
        close(fd);
    }
    return NULL;
}

static int control_listen(const char *path)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof sa.sun_path) {
        fprintf(stderr, "kafka-mock: control socket path too long (max %zu): %s\n",
                sizeof sa.sun_path - 1, path);
        return -1;
    }
    strcpy(sa.sun_path, path);
    unlink(path);
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof sa) != 0 || listen(fd, 8) != 0) {
        fprintf(stderr, "kafka-mock: cannot listen on %s: %s\n", path, strerror(errno));
        if (fd >= 0)
            close(fd);
        return -1;
    }
    return fd;
}

int main(int argc, char **argv)
{
    int brokers = 1, opt;
    const char *file = NULL, *debug = NULL, *control_path = NULL;
    while ((opt = getopt(argc, argv, "b:f:c:d:h")) != -1) {
        if (opt == 'b')
            brokers = atoi(optarg);
        else if (opt == 'f')
            file = optarg;
        else if (opt == 'c')
            control_path = optarg;
        else if (opt == 'd')
            debug = optarg;
        else {
            usage();
            return opt == 'h' ? 0 : 2;
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
    signal(SIGPIPE, SIG_IGN); /* a control client hanging up must not end the broker */

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
    struct control ctl = {.mc = mc, .brokers = brokers, .listen_fd = -1};
    pthread_t ctl_thread;
    int have_thread = 0;
    if (control_path) {
        ctl.listen_fd = control_listen(control_path);
        if (ctl.listen_fd < 0 || pipe(ctl.stop_pipe) != 0)
            return 1;
        if (pthread_create(&ctl_thread, NULL, control_thread, &ctl) != 0) {
            fprintf(stderr, "kafka-mock: cannot start the control thread\n");
            return 1;
        }
        have_thread = 1;
    }
    /* The bootstrap file is written last: once it exists, the control socket answers too. */
    const char *bootstrap = rd_kafka_mock_cluster_bootstraps(mc);
    if (file && write_file(file, bootstrap) != 0) {
        fprintf(stderr, "kafka-mock: cannot write %s\n", file);
        return 1;
    }
    printf("%s\n", bootstrap);
    fflush(stdout);
    int sig;
    sigwait(&stop, &sig);
    if (have_thread) {
        if (write(ctl.stop_pipe[1], "x", 1) != 1)
            fprintf(stderr, "kafka-mock: cannot stop the control thread\n");
        pthread_join(ctl_thread, NULL);
        close(ctl.listen_fd);
        close(ctl.stop_pipe[0]);
        close(ctl.stop_pipe[1]);
        unlink(control_path);
    }
    rd_kafka_mock_cluster_destroy(mc);
    rd_kafka_destroy(rk);
    return 0;
}
