/*
 * MQTT load generator for the Tidegate benchmarks.
 *
 * Publishes N messages at QoS 1 or 0 with the Paho MQTT C asynchronous client,
 * as fast as the broker takes them or at a fixed rate, keeping at most
 * --inflight messages sent but not yet acknowledged. Each payload is a JSON
 * object with a sequence number and the send time:
 *     {"seq":41,"ts_us":1796420000123456,"pad":"xxxx"}
 * At the end it prints one JSON line of results on stdout.
 *
 * For QoS 1 a message counts as acknowledged when the PUBACK arrives; for
 * QoS 0 when Paho reports it written to the socket.
 */
#include <MQTTAsync.h>

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

struct options {
    const char *url;
    const char *topic;
    const char *client_id;
    long topics;
    long count;
    int qos;
    double rate;
    long inflight;
    long payload_bytes;
    bool ts_us;
    double timeout_s;
};

struct state {
    pthread_mutex_t lock;
    pthread_cond_t changed;
    long inflight;
    long acked;
    long failed;
    int connect_rc; /* 0 while connecting, 1 connected, < 0 failed */
    bool connection_lost;
    bool disconnected;
    struct timespec last_ack;
};

static struct state st = {
    .lock = PTHREAD_MUTEX_INITIALIZER,
    .changed = PTHREAD_COND_INITIALIZER,
};

static double now_s(clockid_t clock)
{
    struct timespec ts;

    clock_gettime(clock, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double timespec_s(const struct timespec *ts)
{
    return (double)ts->tv_sec + (double)ts->tv_nsec / 1e9;
}

static void usage(FILE *out)
{
    fprintf(out,
            "Usage: tidegate-bench-pub [OPTION]...\n"
            "Publishes numbered JSON messages to an MQTT broker and prints one JSON line of results.\n"
            "\n"
            "  --url URL            broker URL (default tcp://127.0.0.1:1883)\n"
            "  --topic TOPIC        topic, or topic prefix with --topics (default bench/ingest)\n"
            "  --topics K           spread messages over TOPIC/0 .. TOPIC/K-1 (default 1: TOPIC itself)\n"
            "  --count N            messages to publish (default 10000)\n"
            "  --qos 0|1            QoS of the messages (default 1)\n"
            "  --rate R             messages per second; 0 publishes as fast as the broker takes them (default 0)\n"
            "  --inflight W         most messages sent and not yet acknowledged (default 1000)\n"
            "  --payload-bytes B    pad each payload to at least B bytes (default 0: no padding)\n"
            "  --ts-unit ms|us      unit of the send timestamp in the payload (default us)\n"
            "  --client-id ID       MQTT client id (default tidegate-bench-pub-PID)\n"
            "  --timeout S          give up after S seconds (default 120)\n"
            "  --help               print this help and exit\n");
}

static long parse_long(const char *name, const char *value, long min, long max)
{
    char *end;
    long v;

    errno = 0;
    v = strtol(value, &end, 10);
    if (errno != 0 || *value == '\0' || *end != '\0' || v < min || v > max) {
        fprintf(stderr, "tidegate-bench-pub: invalid %s '%s': expected an integer from %ld to %ld\n",
                name, value, min, max);
        exit(2);
    }
    return v;
}

static double parse_double(const char *name, const char *value, double min)
{
    char *end;
    double v;

    errno = 0;
    v = strtod(value, &end);
    if (errno != 0 || *value == '\0' || *end != '\0' || !(v >= min)) {
        fprintf(stderr, "tidegate-bench-pub: invalid %s '%s': expected a number >= %g\n", name,
                value, min);
        exit(2);
    }
    return v;
}

static void parse_options(int argc, char **argv, struct options *o)
{
    static const struct option longopts[] = {
        {"url", required_argument, NULL, 'u'},
        {"topic", required_argument, NULL, 't'},
        {"topics", required_argument, NULL, 'k'},
        {"count", required_argument, NULL, 'n'},
        {"qos", required_argument, NULL, 'q'},
        {"rate", required_argument, NULL, 'r'},
        {"inflight", required_argument, NULL, 'w'},
        {"payload-bytes", required_argument, NULL, 'b'},
        {"ts-unit", required_argument, NULL, 's'},
        {"client-id", required_argument, NULL, 'c'},
        {"timeout", required_argument, NULL, 'T'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int c;

    *o = (struct options){
        .url = "tcp://127.0.0.1:1883",
        .topic = "bench/ingest",
        .topics = 1,
        .count = 10000,
        .qos = 1,
        .inflight = 1000,
        .ts_us = true,
        .timeout_s = 120,
    };
    while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        switch (c) {
        case 'u': o->url = optarg; break;
        case 't': o->topic = optarg; break;
        case 'k': o->topics = parse_long("--topics", optarg, 1, 1000000); break;
        case 'n': o->count = parse_long("--count", optarg, 0, 1000000000); break;
        case 'q': o->qos = (int)parse_long("--qos", optarg, 0, 1); break;
        case 'r': o->rate = parse_double("--rate", optarg, 0); break;
        case 'w': o->inflight = parse_long("--inflight", optarg, 1, 65535); break;
        case 'b': o->payload_bytes = parse_long("--payload-bytes", optarg, 0, 1 << 20); break;
        case 's':
            if (strcmp(optarg, "ms") != 0 && strcmp(optarg, "us") != 0) {
                fprintf(stderr, "tidegate-bench-pub: invalid --ts-unit '%s': expected ms or us\n",
                        optarg);
                exit(2);
            }
            o->ts_us = strcmp(optarg, "us") == 0;
            break;
        case 'c': o->client_id = optarg; break;
        case 'T': o->timeout_s = parse_double("--timeout", optarg, 0.001); break;
        case 'h': usage(stdout); exit(0);
        default: usage(stderr); exit(2);
        }
    }
    if (optind < argc) {
        fprintf(stderr, "tidegate-bench-pub: unexpected argument '%s'\n", argv[optind]);
        exit(2);
    }
}

static void on_connect(void *context, MQTTAsync_successData *response)
{
    pthread_mutex_lock(&st.lock);
    st.connect_rc = 1;
    pthread_cond_broadcast(&st.changed);
    pthread_mutex_unlock(&st.lock);
}

static void on_connect_failure(void *context, MQTTAsync_failureData *response)
{
    pthread_mutex_lock(&st.lock);
    st.connect_rc = response && response->code < 0 ? response->code : -1;
    if (response && response->message)
        fprintf(stderr, "tidegate-bench-pub: connect failed: %s\n", response->message);
    pthread_cond_broadcast(&st.changed);
    pthread_mutex_unlock(&st.lock);
}

static void on_connection_lost(void *context, char *cause)
{
    fprintf(stderr, "tidegate-bench-pub: connection lost: %s\n", cause ? cause : "unknown cause");
    pthread_mutex_lock(&st.lock);
    st.connection_lost = true;
    pthread_cond_broadcast(&st.changed);
    pthread_mutex_unlock(&st.lock);
}

static int on_message(void *context, char *topic, int topic_len, MQTTAsync_message *m)
{
    /* The publisher subscribes to nothing; free whatever arrives. */
    MQTTAsync_freeMessage(&m);
    MQTTAsync_free(topic);
    return 1;
}

/* Wakes the sending thread only once the window is half empty, so that it
 * refills in bursts instead of being woken once per acknowledgement. */
static long wake_below = 1;

static void on_sent(void *context, MQTTAsync_successData *response)
{
    pthread_mutex_lock(&st.lock);
    st.inflight--;
    st.acked++;
    clock_gettime(CLOCK_MONOTONIC, &st.last_ack);
    if (st.inflight <= wake_below)
        pthread_cond_broadcast(&st.changed);
    pthread_mutex_unlock(&st.lock);
}

static void on_send_failure(void *context, MQTTAsync_failureData *response)
{
    pthread_mutex_lock(&st.lock);
    st.inflight--;
    st.failed++;
    pthread_cond_broadcast(&st.changed);
    pthread_mutex_unlock(&st.lock);
}

static void on_disconnect(void *context, MQTTAsync_successData *response)
{
    pthread_mutex_lock(&st.lock);
    st.disconnected = true;
    pthread_cond_broadcast(&st.changed);
    pthread_mutex_unlock(&st.lock);
}

static void deadline_timespec(double deadline_mono, struct timespec *out)
{
    /* pthread_cond_timedwait measures against CLOCK_REALTIME by default. */
    double wait = deadline_mono - now_s(CLOCK_MONOTONIC);
    double abs_s;

    if (wait < 0)
        wait = 0;
    abs_s = now_s(CLOCK_REALTIME) + wait;
    out->tv_sec = (time_t)abs_s;
    out->tv_nsec = (long)((abs_s - (double)out->tv_sec) * 1e9);
}

/* Waits on st.changed until the deadline; returns false once it has passed. */
static bool wait_changed(double deadline_mono)
{
    struct timespec ts;

    if (now_s(CLOCK_MONOTONIC) >= deadline_mono)
        return false;
    deadline_timespec(deadline_mono, &ts);
    pthread_cond_timedwait(&st.changed, &st.lock, &ts);
    return true;
}

static void sleep_until(double t_mono)
{
    struct timespec ts;

    ts.tv_sec = (time_t)t_mono;
    ts.tv_nsec = (long)((t_mono - (double)ts.tv_sec) * 1e9);
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
        ;
}

static int build_payload(char *buf, size_t cap, long seq, const struct options *o)
{
    struct timespec now;
    int64_t ts;
    int len;

    clock_gettime(CLOCK_REALTIME, &now);
    if (o->ts_us)
        ts = (int64_t)now.tv_sec * 1000000 + now.tv_nsec / 1000;
    else
        ts = (int64_t)now.tv_sec * 1000 + now.tv_nsec / 1000000;
    len = snprintf(buf, cap, "{\"seq\":%ld,\"%s\":%" PRId64, seq, o->ts_us ? "ts_us" : "ts_ms", ts);
    if (o->payload_bytes > 0) {
        /* ,"pad":"" plus the closing brace take 10 bytes. */
        long pad = o->payload_bytes - len - 10;
        len += snprintf(buf + len, cap - (size_t)len, ",\"pad\":\"");
        for (long i = 0; i < pad && (size_t)len < cap - 3; i++)
            buf[len++] = 'x';
        buf[len++] = '"';
    }
    buf[len++] = '}';
    buf[len] = '\0';
    return len;
}

int main(int argc, char **argv)
{
    struct options o;
    MQTTAsync client;
    MQTTAsync_createOptions create_opts = MQTTAsync_createOptions_initializer;
    MQTTAsync_connectOptions conn_opts = MQTTAsync_connectOptions_initializer;
    MQTTAsync_disconnectOptions disc_opts = MQTTAsync_disconnectOptions_initializer;
    char default_id[64];
    char topic[1024];
    size_t payload_cap;
    char *payload;
    double deadline, t_start, t_end, seconds;
    long sent = 0;
    bool complete;
    struct rusage ru;
    int rc;

    parse_options(argc, argv, &o);
    if (o.client_id == NULL) {
        snprintf(default_id, sizeof(default_id), "tidegate-bench-pub-%ld", (long)getpid());
        o.client_id = default_id;
    }
    payload_cap = (size_t)o.payload_bytes + 128;
    payload = malloc(payload_cap);
    if (payload == NULL) {
        fprintf(stderr, "tidegate-bench-pub: out of memory\n");
        return 1;
    }

    /* Paho checks maxBufferedMessages while connected too, so it must cover the window. */
    create_opts.maxBufferedMessages = (int)o.inflight + 16;
    rc = MQTTAsync_createWithOptions(&client, o.url, o.client_id, MQTTCLIENT_PERSISTENCE_NONE,
                                     NULL, &create_opts);
    if (rc != MQTTASYNC_SUCCESS) {
        fprintf(stderr, "tidegate-bench-pub: cannot create the MQTT client for %s: error %d\n",
                o.url, rc);
        return 1;
    }
    MQTTAsync_setCallbacks(client, NULL, on_connection_lost, on_message, NULL);

    conn_opts.keepAliveInterval = 30;
    conn_opts.cleansession = 1;
    conn_opts.maxInflight = (int)o.inflight;
    conn_opts.onSuccess = on_connect;
    conn_opts.onFailure = on_connect_failure;
    deadline = now_s(CLOCK_MONOTONIC) + o.timeout_s;
    rc = MQTTAsync_connect(client, &conn_opts);
    if (rc != MQTTASYNC_SUCCESS) {
        fprintf(stderr, "tidegate-bench-pub: connect to %s failed: error %d\n", o.url, rc);
        return 1;
    }
    pthread_mutex_lock(&st.lock);
    while (st.connect_rc == 0 && wait_changed(deadline))
        ;
    rc = st.connect_rc;
    pthread_mutex_unlock(&st.lock);
    if (rc != 1) {
        fprintf(stderr, "tidegate-bench-pub: cannot connect to %s (%s)\n", o.url,
                rc == 0 ? "timed out" : "refused or failed");
        return 1;
    }

    wake_below = o.inflight / 2;
    t_start = now_s(CLOCK_MONOTONIC);
    clock_gettime(CLOCK_MONOTONIC, &st.last_ack);
    for (sent = 0; sent < o.count; sent++) {
        MQTTAsync_message msg = MQTTAsync_message_initializer;
        MQTTAsync_responseOptions ropts = MQTTAsync_responseOptions_initializer;
        bool stop = false;

        if (o.rate > 0)
            sleep_until(t_start + (double)sent / o.rate);

        pthread_mutex_lock(&st.lock);
        while (st.inflight >= o.inflight && !st.connection_lost) {
            if (!wait_changed(deadline)) {
                stop = true;
                break;
            }
        }
        if (st.connection_lost)
            stop = true;
        if (!stop)
            st.inflight++;
        pthread_mutex_unlock(&st.lock);
        if (stop)
            break;

        if (o.topics > 1)
            snprintf(topic, sizeof(topic), "%s/%ld", o.topic, sent % o.topics);
        else
            snprintf(topic, sizeof(topic), "%s", o.topic);
        msg.payloadlen = build_payload(payload, payload_cap, sent, &o);
        msg.payload = payload;
        msg.qos = o.qos;
        ropts.onSuccess = on_sent;
        ropts.onFailure = on_send_failure;
        rc = MQTTAsync_sendMessage(client, topic, &msg, &ropts);
        if (rc != MQTTASYNC_SUCCESS) {
            fprintf(stderr, "tidegate-bench-pub: sending message %ld failed: error %d\n", sent, rc);
            pthread_mutex_lock(&st.lock);
            st.inflight--;
            st.failed++;
            pthread_mutex_unlock(&st.lock);
            break;
        }
    }

    /* Wait for the acknowledgements still outstanding. */
    pthread_mutex_lock(&st.lock);
    while (st.inflight > 0 && !st.connection_lost && wait_changed(deadline))
        ;
    complete = st.acked == o.count;
    t_end = st.acked > 0 ? timespec_s(&st.last_ack) : now_s(CLOCK_MONOTONIC);
    pthread_mutex_unlock(&st.lock);
    seconds = t_end - t_start;

    disc_opts.timeout = 2000;
    disc_opts.onSuccess = on_disconnect;
    if (MQTTAsync_disconnect(client, &disc_opts) == MQTTASYNC_SUCCESS) {
        double disc_deadline = now_s(CLOCK_MONOTONIC) + 3;
        pthread_mutex_lock(&st.lock);
        while (!st.disconnected && wait_changed(disc_deadline))
            ;
        pthread_mutex_unlock(&st.lock);
    }
    MQTTAsync_destroy(&client);

    getrusage(RUSAGE_SELF, &ru);
    printf("{\"tool\":\"pub\",\"messages\":%ld,\"acked\":%ld,\"failed\":%ld,\"complete\":%s,"
           "\"seconds\":%.4f,\"rate\":%.1f,\"qos\":%d,\"inflight\":%ld,\"target_rate\":%.1f,"
           "\"cpu_user_s\":%.3f,\"cpu_sys_s\":%.3f}\n",
           sent, st.acked, st.failed, complete ? "true" : "false", seconds,
           seconds > 0 ? (double)st.acked / seconds : 0.0, o.qos, o.inflight, o.rate,
           (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6,
           (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6);
    free(payload);
    return complete ? 0 : 1;
}
