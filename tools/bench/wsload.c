/*
 * WebSocket clients for the Tidegate benchmarks, written in C so that the
 * clients cost little CPU next to the gateway they measure.
 *
 *   tidegate-bench-ws fanout --port P --clients 10 --filter '#' --expect N
 *       Opens the clients, subscribes each to the filter, prints
 *       {"event":"ready",...} once every subscription is confirmed, then
 *       counts message frames until every client has N or the timeout
 *       passes, and prints one JSON line of results.
 *
 *   tidegate-bench-ws history --port P --filter F --last 1000 --repeat 20
 *       Late joiner: each repetition opens a connection, waits for the
 *       welcome, sends {"type":"subscribe","filter":F,"history":{"last":N}}
 *       and measures the time from sending it to receiving the Nth history
 *       message. Prints one JSON line with every time, the median and p90.
 *
 *   tidegate-bench-ws load --port P --protocol tidegate|mqtt|bridge --filter F
 *       Thousands of clients in one process on epoll, driven by commands on
 *       stdin (one per line) for tools/bench/compare:
 *         connect K TIMEOUT   open clients until K are subscribed
 *         phase N TIMEOUT     count deliveries until every client has N
 *         hold SECONDS        keep the clients connected, answering pings
 *         quit
 *       Each command prints one JSON line. A phase records the end-to-end
 *       latency of every delivery, from the send time that
 *       tidegate-bench-pub puts in each payload ("ts_us") to its arrival,
 *       in a histogram. The protocols: tidegate (the gateway's JSON
 *       protocol), mqtt (MQTT 3.1.1 over WebSocket, as to Mosquitto's
 *       websockets listener: CONNECT, SUBSCRIBE at QoS 0, PUBLISH received,
 *       PINGREQ), and bridge (every text frame is a message, as from
 *       tools/bench/node-bridge).
 *
 * Only plain ws:// on 127.0.0.1 is supported. Frames are counted without
 * parsing their JSON: a message frame starts with {"type":"message" (the
 * gateway's encoding) and a history message contains "history":true.
 */
#include <errno.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <poll.h>
#include <stdbool.h>
#include <inttypes.h>
#include <fcntl.h>
#include <sys/epoll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MESSAGE_PREFIX "{\"type\":\"message\""
/* Bytes read per recv. The load mode lowers it so that 10,000 clients use little memory. */
static size_t read_chunk = 256 * 1024;

enum mode { MODE_FANOUT, MODE_HISTORY, MODE_LOAD };

enum protocol { PROTO_TIDEGATE, PROTO_MQTT, PROTO_BRIDGE };

static enum mode g_mode;

struct options {
    enum mode mode;
    int port;
    const char *filter;
    long clients;
    long expect;
    long last;
    long repeat;
    double timeout_s;
    enum protocol protocol; /* load mode */
    const char *path;       /* load mode: request path */
    long max_clients;       /* load mode: maximum clients opened in total */
    long ramp;              /* load mode: maximum connections in set-up at once */
};

struct conn {
    int fd;
    unsigned char *buf;
    size_t len;
    size_t cap;
    bool handshake_done;
    bool welcomed;
    bool subscribed;
    bool closed;
    int close_code;
    /* The message being reassembled from fragments is classified by its first frame. */
    bool in_message;
    bool message_is_data;
    bool message_is_history;
    long messages;     /* message frames received */
    long history;      /* of them, history messages */
    long history_count; /* from the subscribed reply, -1 before it */
    double first_message_s;
    double last_message_s;
    double nth_history_s;
    /* Load mode only. */
    long index;
    int load_state;        /* LOAD_* */
    bool fd_closed;
    bool phase_done;       /* received the phase's expected count */
    long phase_messages;
    double last_ping_s;
    unsigned char *mqtt;   /* MQTT byte stream from binary frames */
    size_t mqtt_len;
    size_t mqtt_cap;
};

static void load_handshake_done(struct conn *c);
static void load_text(struct conn *c, const unsigned char *data, size_t len);
static void load_binary(struct conn *c, const unsigned char *data, size_t len);

static double now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void die(const char *action)
{
    fprintf(stderr, "tidegate-bench-ws: %s failed: %s\n", action, strerror(errno));
    exit(1);
}

static void usage(FILE *out)
{
    fprintf(out,
            "Usage: tidegate-bench-ws fanout|history|load [OPTION]...\n"
            "WebSocket clients for the Tidegate benchmarks; prints JSON lines of results.\n"
            "\n"
            "  --port P         gateway port on 127.0.0.1 (required)\n"
            "  --filter F       topic filter to subscribe to (default #)\n"
            "  --clients C      fanout: number of clients (default 10)\n"
            "  --expect N       fanout: messages each client must receive (default 10000)\n"
            "  --last N         history: history messages requested (default 1000)\n"
            "  --repeat R       history: number of late joiners, one after another (default 20)\n"
            "  --timeout S      give up after S seconds (default 120)\n"
            "  --protocol P     load: tidegate, mqtt (MQTT over WebSocket) or bridge (default tidegate)\n"
            "  --path PATH      load: request path of the WebSocket upgrade (default /ws)\n"
            "  --max-clients M  load: maximum number of clients opened in total (default 20000)\n"
            "  --ramp C         load: maximum connections in set-up at once (default 200)\n"
            "  --help           print this help and exit\n");
}

static long parse_long(const char *name, const char *value, long min, long max)
{
    char *end;
    long v;

    errno = 0;
    v = strtol(value, &end, 10);
    if (errno != 0 || *value == '\0' || *end != '\0' || v < min || v > max) {
        fprintf(stderr, "tidegate-bench-ws: invalid %s '%s': expected an integer from %ld to %ld\n",
                name, value, min, max);
        exit(2);
    }
    return v;
}

static void parse_options(int argc, char **argv, struct options *o)
{
    static const struct option longopts[] = {
        {"port", required_argument, NULL, 'p'},
        {"filter", required_argument, NULL, 'f'},
        {"clients", required_argument, NULL, 'c'},
        {"expect", required_argument, NULL, 'n'},
        {"last", required_argument, NULL, 'l'},
        {"repeat", required_argument, NULL, 'r'},
        {"timeout", required_argument, NULL, 'T'},
        {"protocol", required_argument, NULL, 'P'},
        {"path", required_argument, NULL, 'a'},
        {"max-clients", required_argument, NULL, 'm'},
        {"ramp", required_argument, NULL, 'R'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int c;

    *o = (struct options){
        .filter = "#",
        .clients = 10,
        .expect = 10000,
        .last = 1000,
        .repeat = 20,
        .timeout_s = 120,
        .path = "/ws",
        .max_clients = 20000,
        .ramp = 200,
    };
    if (argc >= 2 && strcmp(argv[1], "--help") == 0) {
        usage(stdout);
        exit(0);
    }
    if (argc < 2 || (strcmp(argv[1], "fanout") != 0 && strcmp(argv[1], "history") != 0 &&
                     strcmp(argv[1], "load") != 0)) {
        usage(stderr);
        exit(2);
    }
    o->mode = strcmp(argv[1], "fanout") == 0 ? MODE_FANOUT
              : strcmp(argv[1], "history") == 0 ? MODE_HISTORY : MODE_LOAD;
    optind = 2;
    while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        switch (c) {
        case 'p': o->port = (int)parse_long("--port", optarg, 1, 65535); break;
        case 'f': o->filter = optarg; break;
        case 'c': o->clients = parse_long("--clients", optarg, 1, 1000); break;
        case 'n': o->expect = parse_long("--expect", optarg, 0, 1000000000); break;
        case 'l': o->last = parse_long("--last", optarg, 1, 10000000); break;
        case 'r': o->repeat = parse_long("--repeat", optarg, 1, 10000); break;
        case 'T': o->timeout_s = (double)parse_long("--timeout", optarg, 1, 3600); break;
        case 'P':
            if (strcmp(optarg, "tidegate") == 0) {
                o->protocol = PROTO_TIDEGATE;
            } else if (strcmp(optarg, "mqtt") == 0) {
                o->protocol = PROTO_MQTT;
            } else if (strcmp(optarg, "bridge") == 0) {
                o->protocol = PROTO_BRIDGE;
            } else {
                fprintf(stderr, "tidegate-bench-ws: invalid --protocol '%s': expected tidegate, "
                                "mqtt or bridge\n", optarg);
                exit(2);
            }
            break;
        case 'a': o->path = optarg; break;
        case 'm': o->max_clients = parse_long("--max-clients", optarg, 1, 1000000); break;
        case 'R': o->ramp = parse_long("--ramp", optarg, 1, 100000); break;
        case 'h': usage(stdout); exit(0);
        default: usage(stderr); exit(2);
        }
    }
    if (o->port == 0) {
        fprintf(stderr, "tidegate-bench-ws: missing --port\n");
        exit(2);
    }
    if (strchr(o->filter, '"') != NULL || strchr(o->filter, '\\') != NULL) {
        fprintf(stderr, "tidegate-bench-ws: invalid --filter '%s': quotes and backslashes are "
                        "not supported\n", o->filter);
        exit(2);
    }
}

static void write_all(struct conn *c, const void *data, size_t len)
{
    const unsigned char *p = data;

    while (len > 0) {
        ssize_t n = send(c->fd, p, len, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN) {
                struct pollfd pfd = {.fd = c->fd, .events = POLLOUT};
                poll(&pfd, 1, 1000);
                continue;
            }
            c->closed = true;
            return;
        }
        p += n;
        len -= (size_t)n;
    }
}

/* Sends one masked client frame, as RFC 6455 requires of clients. */
static void send_frame(struct conn *c, int opcode, const void *payload, size_t len)
{
    unsigned char header[14];
    static const unsigned char mask[4] = {0x5a, 0xa5, 0x3c, 0xc3};
    unsigned char *framed;
    size_t hlen = 0;

    header[hlen++] = (unsigned char)(0x80 | opcode);
    if (len < 126) {
        header[hlen++] = (unsigned char)(0x80 | len);
    } else if (len <= 0xffff) {
        header[hlen++] = 0x80 | 126;
        header[hlen++] = (unsigned char)(len >> 8);
        header[hlen++] = (unsigned char)len;
    } else {
        header[hlen++] = 0x80 | 127;
        for (int i = 7; i >= 0; i--)
            header[hlen++] = (unsigned char)((uint64_t)len >> (8 * i));
    }
    memcpy(header + hlen, mask, 4);
    hlen += 4;

    framed = malloc(hlen + len);
    if (framed == NULL) {
        fprintf(stderr, "tidegate-bench-ws: out of memory\n");
        exit(1);
    }
    memcpy(framed, header, hlen);
    for (size_t i = 0; i < len; i++)
        framed[hlen + i] = ((const unsigned char *)payload)[i] ^ mask[i % 4];
    write_all(c, framed, hlen + len);
    free(framed);
}

static void send_text(struct conn *c, const char *text)
{
    send_frame(c, 0x1, text, strlen(text));
}

static void conn_open(struct conn *c, int port)
{
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    char request[256];
    int enable = 1;

    memset(c, 0, sizeof(*c));
    c->history_count = -1;
    c->cap = read_chunk * 2;
    c->buf = malloc(c->cap);
    if (c->buf == NULL) {
        fprintf(stderr, "tidegate-bench-ws: out of memory\n");
        exit(1);
    }
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    c->fd = socket(AF_INET, SOCK_STREAM, 0);
    if (c->fd < 0)
        die("socket");
    if (connect(c->fd, (struct sockaddr *)&addr, sizeof(addr)) != 0)
        die("connect to 127.0.0.1");
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &enable, sizeof(enable));
    snprintf(request, sizeof(request),
             "GET /ws HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUpgrade: websocket\r\n"
             "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
             "Sec-WebSocket-Version: 13\r\n\r\n",
             port);
    write_all(c, request, strlen(request));
}

static void conn_close(struct conn *c)
{
    if (!c->closed) {
        unsigned char code[2] = {0x03, 0xe8}; /* 1000 normal closure */
        send_frame(c, 0x8, code, sizeof(code));
    }
    close(c->fd);
    free(c->buf);
    c->buf = NULL;
}

/* Extracts the integer after "key": in a JSON text, or returns -1. */
static long json_int_field(const unsigned char *data, size_t len, const char *key)
{
    char pattern[64];
    const unsigned char *p;
    long v = 0;

    snprintf(pattern, sizeof(pattern), "\"%s\":", key);
    p = memmem(data, len, pattern, strlen(pattern));
    if (p == NULL)
        return -1;
    p += strlen(pattern);
    if (p >= data + len || *p < '0' || *p > '9')
        return -1;
    while (p < data + len && *p >= '0' && *p <= '9')
        v = v * 10 + (*p++ - '0');
    return v;
}

static bool has_prefix(const unsigned char *data, size_t len, const char *prefix)
{
    size_t plen = strlen(prefix);

    return len >= plen && memcmp(data, prefix, plen) == 0;
}

/* Handles one complete text message, or the first fragment of one. */
static void classify_text(struct conn *c, const unsigned char *data, size_t len)
{
    c->message_is_data = has_prefix(data, len, MESSAGE_PREFIX);
    c->message_is_history = c->message_is_data &&
                            memmem(data, len, "\"history\":true", 14) != NULL;
    if (c->message_is_data)
        return;
    if (has_prefix(data, len, "{\"type\":\"welcome\"")) {
        c->welcomed = true;
    } else if (has_prefix(data, len, "{\"type\":\"subscribed\"")) {
        c->subscribed = true;
        c->history_count = json_int_field(data, len, "history_count");
    } else if (has_prefix(data, len, "{\"type\":\"error\"")) {
        fprintf(stderr, "tidegate-bench-ws: gateway error: %.*s\n", (int)(len > 300 ? 300 : len),
                (const char *)data);
    }
}

static void finish_message(struct conn *c, long expect_history)
{
    double t;

    if (!c->message_is_data)
        return;
    t = now_s();
    if (c->messages == 0)
        c->first_message_s = t;
    c->last_message_s = t;
    c->messages++;
    if (c->message_is_history) {
        c->history++;
        if (c->history == expect_history)
            c->nth_history_s = t;
    }
}

/*
 * Parses the complete frames in c->buf. Returns false on a protocol error.
 * expect_history is the history message count whose arrival time is recorded.
 */
static bool parse_frames(struct conn *c, long expect_history)
{
    size_t pos = 0;

    if (!c->handshake_done) {
        unsigned char *end = memmem(c->buf, c->len, "\r\n\r\n", 4);
        if (end == NULL)
            return true;
        if (c->len < 12 || memcmp(c->buf, "HTTP/1.1 101", 12) != 0) {
            fprintf(stderr, "tidegate-bench-ws: WebSocket upgrade rejected: %.*s\n",
                    (int)(end - c->buf), (const char *)c->buf);
            return false;
        }
        c->handshake_done = true;
        pos = (size_t)(end - c->buf) + 4;
        if (g_mode == MODE_LOAD)
            load_handshake_done(c);
    }

    for (;;) {
        const unsigned char *f = c->buf + pos;
        size_t avail = c->len - pos;
        size_t hlen = 2;
        uint64_t plen;
        int opcode;
        bool fin;

        if (avail < 2)
            break;
        fin = (f[0] & 0x80) != 0;
        opcode = f[0] & 0x0f;
        if (f[1] & 0x80) {
            fprintf(stderr, "tidegate-bench-ws: the server sent a masked frame\n");
            return false;
        }
        plen = f[1] & 0x7f;
        if (plen == 126) {
            if (avail < 4)
                break;
            plen = ((uint64_t)f[2] << 8) | f[3];
            hlen = 4;
        } else if (plen == 127) {
            if (avail < 10)
                break;
            plen = 0;
            for (int i = 0; i < 8; i++)
                plen = (plen << 8) | f[2 + i];
            hlen = 10;
        }
        if (avail < hlen + plen) {
            /* Make room for the rest of a large frame. */
            if (hlen + plen > c->cap) {
                size_t cap = (size_t)(hlen + plen) + read_chunk;
                unsigned char *nb = realloc(c->buf, cap);
                if (nb == NULL) {
                    fprintf(stderr, "tidegate-bench-ws: out of memory\n");
                    exit(1);
                }
                c->buf = nb;
                c->cap = cap;
            }
            break;
        }

        const unsigned char *payload = f + hlen;
        switch (opcode) {
        case 0x1: /* text */
            if (g_mode == MODE_LOAD) {
                /* NOTE: the load mode counts only unfragmented text messages. The
                 * servers measured send each message in one frame. */
                load_text(c, payload, (size_t)plen);
                break;
            }
            classify_text(c, payload, (size_t)plen);
            c->in_message = !fin;
            if (fin)
                finish_message(c, expect_history);
            break;
        case 0x0: /* continuation */
            if (fin && c->in_message) {
                c->in_message = false;
                finish_message(c, expect_history);
            }
            break;
        case 0x2:
            if (g_mode == MODE_LOAD) {
                load_binary(c, payload, (size_t)plen);
                break;
            }
            fprintf(stderr, "tidegate-bench-ws: unexpected binary frame\n");
            break;
        case 0x8: /* close */
            c->close_code = plen >= 2 ? (payload[0] << 8 | payload[1]) : 1005;
            send_frame(c, 0x8, payload, plen >= 2 ? 2 : 0);
            c->closed = true;
            break;
        case 0x9: /* ping */
            send_frame(c, 0xA, payload, (size_t)plen);
            break;
        default:
            break;
        }
        pos += hlen + (size_t)plen;
    }
    memmove(c->buf, c->buf + pos, c->len - pos);
    c->len -= pos;
    return true;
}

/* Reads what is available on c; returns false when the connection ended. */
static bool conn_read(struct conn *c, long expect_history)
{
    ssize_t n;

    if (c->cap - c->len < read_chunk) {
        size_t cap = c->len + read_chunk * 2;
        unsigned char *nb = realloc(c->buf, cap);
        if (nb == NULL) {
            fprintf(stderr, "tidegate-bench-ws: out of memory\n");
            exit(1);
        }
        c->buf = nb;
        c->cap = cap;
    }
    n = recv(c->fd, c->buf + c->len, c->cap - c->len, 0);
    if (n < 0 && (errno == EINTR || errno == EAGAIN))
        return true;
    if (n <= 0) {
        c->closed = true;
        return false;
    }
    c->len += (size_t)n;
    if (!parse_frames(c, expect_history)) {
        c->closed = true;
        return false;
    }
    return !c->closed;
}

static double cpu_seconds(double *user, double *sys)
{
    struct rusage ru;

    getrusage(RUSAGE_SELF, &ru);
    *user = (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6;
    *sys = (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
    return *user + *sys;
}

/* Polls the connections until done(conns) is true or the deadline passes. */
static bool pump(struct conn *conns, long count, double deadline, long expect_history,
                 bool (*done)(struct conn *, long, long), long arg)
{
    struct pollfd pfds[1000];

    while (!done(conns, count, arg)) {
        double left = deadline - now_s();
        long open = 0;
        int rc;

        if (left <= 0)
            return false;
        for (long i = 0; i < count; i++) {
            pfds[i].fd = conns[i].closed ? -1 : conns[i].fd;
            pfds[i].events = POLLIN;
            pfds[i].revents = 0;
            open += !conns[i].closed;
        }
        if (open == 0)
            return done(conns, count, arg);
        rc = poll(pfds, (nfds_t)count, left > 1 ? 1000 : (int)(left * 1000) + 1);
        if (rc < 0 && errno != EINTR)
            die("poll");
        for (long i = 0; i < count; i++) {
            if (pfds[i].revents & (POLLIN | POLLHUP | POLLERR))
                conn_read(&conns[i], expect_history);
        }
    }
    return true;
}

static bool all_welcomed(struct conn *conns, long count, long unused)
{
    for (long i = 0; i < count; i++)
        if (!conns[i].welcomed && !conns[i].closed)
            return false;
    return true;
}

static bool all_subscribed(struct conn *conns, long count, long unused)
{
    for (long i = 0; i < count; i++)
        if (!conns[i].subscribed && !conns[i].closed)
            return false;
    return true;
}

static bool all_received(struct conn *conns, long count, long expect)
{
    for (long i = 0; i < count; i++)
        if (conns[i].messages < expect && !conns[i].closed)
            return false;
    return true;
}

static bool history_received(struct conn *conns, long count, long expect)
{
    return conns[0].closed || conns[0].history >= expect;
}

static int run_fanout(const struct options *o)
{
    struct conn *conns = calloc((size_t)o->clients, sizeof(*conns));
    double deadline = now_s() + o->timeout_s;
    double user, sys, t_ready;
    char request[512];
    long min = -1, max = 0, closed = 0;
    double first = 0, last = 0;
    bool complete;

    if (conns == NULL) {
        fprintf(stderr, "tidegate-bench-ws: out of memory\n");
        return 1;
    }
    for (long i = 0; i < o->clients; i++)
        conn_open(&conns[i], o->port);
    if (!pump(conns, o->clients, deadline, 0, all_welcomed, 0)) {
        fprintf(stderr, "tidegate-bench-ws: timed out waiting for the welcome messages\n");
        return 1;
    }
    snprintf(request, sizeof(request), "{\"type\":\"subscribe\",\"id\":1,\"filter\":\"%s\"}",
             o->filter);
    for (long i = 0; i < o->clients; i++)
        send_text(&conns[i], request);
    if (!pump(conns, o->clients, deadline, 0, all_subscribed, 0)) {
        fprintf(stderr, "tidegate-bench-ws: timed out waiting for the subscribed replies\n");
        return 1;
    }
    t_ready = now_s();
    cpu_seconds(&user, &sys);
    printf("{\"event\":\"ready\",\"clients\":%ld}\n", o->clients);
    fflush(stdout);

    complete = pump(conns, o->clients, deadline, 0, all_received, o->expect);

    printf("{\"tool\":\"ws\",\"mode\":\"fanout\",\"clients\":%ld,\"expect\":%ld,\"complete\":%s,"
           "\"received\":[",
           o->clients, o->expect, complete ? "true" : "false");
    for (long i = 0; i < o->clients; i++) {
        struct conn *c = &conns[i];
        printf("%s%ld", i ? "," : "", c->messages);
        if (min < 0 || c->messages < min)
            min = c->messages;
        if (c->messages > max)
            max = c->messages;
        if (c->messages > 0 && (first == 0 || c->first_message_s < first))
            first = c->first_message_s;
        if (c->last_message_s > last)
            last = c->last_message_s;
        closed += c->closed;
    }
    printf("],\"close_codes\":[");
    for (long i = 0, n = 0; i < o->clients; i++)
        if (conns[i].closed)
            printf("%s%d", n++ ? "," : "", conns[i].close_code);
    {
        double u2, s2;
        cpu_seconds(&u2, &s2);
        printf("],\"min\":%ld,\"max\":%ld,\"closed\":%ld,\"delivery_seconds\":%.4f,"
               "\"seconds_since_ready\":%.4f,\"cpu_user_s\":%.3f,\"cpu_sys_s\":%.3f}\n",
               min, max, closed, last > first ? last - first : 0.0, now_s() - t_ready,
               u2 - user, s2 - sys);
    }
    for (long i = 0; i < o->clients; i++)
        conn_close(&conns[i]);
    free(conns);
    return complete ? 0 : 1;
}

static int compare_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;

    return (x > y) - (x < y);
}

/* Nearest-rank percentile of sorted values. */
static double percentile(const double *sorted, long n, double p)
{
    long rank = (long)(p / 100.0 * (double)n + 0.999999);

    if (rank < 1)
        rank = 1;
    if (rank > n)
        rank = n;
    return sorted[rank - 1];
}

static int run_history(const struct options *o)
{
    double *ms = calloc((size_t)o->repeat, sizeof(*ms));
    double *sorted = calloc((size_t)o->repeat, sizeof(*sorted));
    double deadline = now_s() + o->timeout_s;
    char request[512];
    long done = 0, short_count = 0, history_count = -1;

    if (ms == NULL || sorted == NULL) {
        fprintf(stderr, "tidegate-bench-ws: out of memory\n");
        return 1;
    }
    snprintf(request, sizeof(request),
             "{\"type\":\"subscribe\",\"id\":1,\"filter\":\"%s\",\"history\":{\"last\":%ld}}",
             o->filter, o->last);
    for (long r = 0; r < o->repeat; r++) {
        struct conn c;
        double t0;

        conn_open(&c, o->port);
        if (!pump(&c, 1, deadline, o->last, all_welcomed, 0) || c.closed) {
            fprintf(stderr, "tidegate-bench-ws: no welcome message\n");
            conn_close(&c);
            break;
        }
        t0 = now_s();
        send_text(&c, request);
        if (!pump(&c, 1, deadline, o->last, history_received, o->last) || c.history < o->last) {
            fprintf(stderr, "tidegate-bench-ws: late joiner %ld received %ld of %ld history "
                            "messages (history_count %ld)\n",
                    r + 1, c.history, o->last, c.history_count);
            short_count++;
            conn_close(&c);
            break;
        }
        history_count = c.history_count;
        ms[done++] = (c.nth_history_s - t0) * 1000.0;
        conn_close(&c);
    }

    memcpy(sorted, ms, (size_t)done * sizeof(*ms));
    qsort(sorted, (size_t)done, sizeof(*sorted), compare_double);
    printf("{\"tool\":\"ws\",\"mode\":\"history\",\"last\":%ld,\"history_count\":%ld,"
           "\"repeat\":%ld,\"done\":%ld,\"ms\":[",
           o->last, history_count, o->repeat, done);
    for (long i = 0; i < done; i++)
        printf("%s%.3f", i ? "," : "", ms[i]);
    if (done > 0)
        printf("],\"median_ms\":%.3f,\"p90_ms\":%.3f,\"min_ms\":%.3f,\"max_ms\":%.3f}\n",
               done % 2 ? sorted[done / 2] : (sorted[done / 2 - 1] + sorted[done / 2]) / 2,
               percentile(sorted, done, 90), sorted[0], sorted[done - 1]);
    else
        printf("],\"median_ms\":null,\"p90_ms\":null,\"min_ms\":null,\"max_ms\":null}\n");
    free(ms);
    free(sorted);
    return done == o->repeat && short_count == 0 ? 0 : 1;
}

/*
 * Load mode: many clients on one epoll loop, driven by commands on stdin.
 */

enum { LOAD_CONNECTING, LOAD_HANDSHAKE, LOAD_SETUP, LOAD_READY };

/* Latency histogram in microseconds: exact below 64 us, then 32 buckets per
 * power of two (at most 3 % wide), up to 2^40 us. */
#define HIST_SUB_BITS 5
#define HIST_SUB (1u << HIST_SUB_BITS)
#define HIST_MAX_EXP 40
#define HIST_BUCKETS (2 * HIST_SUB + (HIST_MAX_EXP - HIST_SUB_BITS - 1) * HIST_SUB)

struct histogram {
    uint64_t counts[HIST_BUCKETS];
    uint64_t total;
    uint64_t max_us;
    double sum_us;
};

static unsigned hist_index(uint64_t us)
{
    unsigned exp;

    if (us < 2 * HIST_SUB)
        return (unsigned)us;
    if (us >= (1ull << HIST_MAX_EXP))
        us = (1ull << HIST_MAX_EXP) - 1;
    exp = 63u - (unsigned)__builtin_clzll(us);
    return 2 * HIST_SUB + (exp - HIST_SUB_BITS - 1) * HIST_SUB +
           (unsigned)((us >> (exp - HIST_SUB_BITS)) & (HIST_SUB - 1));
}

/* Largest value that falls into bucket idx. */
static uint64_t hist_upper(unsigned idx)
{
    unsigned k, exp, sub;

    if (idx < 2 * HIST_SUB)
        return idx;
    k = idx - 2 * HIST_SUB;
    exp = k / HIST_SUB + HIST_SUB_BITS + 1;
    sub = k % HIST_SUB;
    return ((uint64_t)(HIST_SUB + sub + 1) << (exp - HIST_SUB_BITS)) - 1;
}

static void hist_add(struct histogram *h, uint64_t us)
{
    h->counts[hist_index(us)]++;
    h->total++;
    h->sum_us += (double)us;
    if (us > h->max_us)
        h->max_us = us;
}

/* Nearest-rank percentile in milliseconds: the upper edge of the bucket that
 * holds the rank, capped at the largest value seen. */
static double hist_percentile_ms(const struct histogram *h, double p)
{
    uint64_t rank = (uint64_t)(p / 100.0 * (double)h->total + 0.999999), seen = 0;

    if (h->total == 0)
        return -1;
    if (rank < 1)
        rank = 1;
    for (unsigned i = 0; i < HIST_BUCKETS; i++) {
        seen += h->counts[i];
        if (seen >= rank) {
            uint64_t v = hist_upper(i);
            return (double)(v < h->max_us ? v : h->max_us) / 1000.0;
        }
    }
    return (double)h->max_us / 1000.0;
}

#define MAX_CLOSE_CODES 8

static struct load {
    const struct options *o;
    struct conn *conns;
    long opened;           /* connections opened so far */
    long pending;          /* opened, neither ready nor closed */
    long ready;            /* ready and open */
    long failed;           /* closed before they were ready */
    int epfd;
    int64_t now_rt_us;     /* wall clock of the current read, for latencies */

    /* connect command */
    bool connecting;
    long connect_target;
    double connect_start, connect_deadline;

    /* phase command */
    bool in_phase;
    long expect;
    long participants;
    long done_clients;
    long closed_unfinished;
    long closed_in_phase;
    double phase_start, phase_deadline, first_s, last_s;
    long delivered, no_ts, stray;
    struct histogram hist;
    double cpu_user0, cpu_sys0;
    int close_codes[MAX_CLOSE_CODES];
    long close_counts[MAX_CLOSE_CODES];

    /* hold command */
    bool holding;
    double hold_until;

    char line[1024];
    size_t line_len;
    bool quit;
    long errors_printed;
} L;

static void load_note_close_code(int code)
{
    for (int i = 0; i < MAX_CLOSE_CODES; i++) {
        if (L.close_counts[i] > 0 && L.close_codes[i] == code) {
            L.close_counts[i]++;
            return;
        }
        if (L.close_counts[i] == 0) {
            L.close_codes[i] = code;
            L.close_counts[i] = 1;
            return;
        }
    }
}

/* Closes the socket once and updates the counters. */
static void load_conn_closed(struct conn *c)
{
    if (c->fd_closed)
        return;
    c->fd_closed = true;
    c->closed = true;
    close(c->fd);
    if (c->load_state == LOAD_READY) {
        L.ready--;
        if (L.in_phase) {
            L.closed_in_phase++;
            load_note_close_code(c->close_code ? c->close_code : 1006);
            if (!c->phase_done)
                L.closed_unfinished++;
        }
    } else {
        L.pending--;
        L.failed++;
    }
    free(c->buf);
    c->buf = NULL;
    free(c->mqtt);
    c->mqtt = NULL;
}

static void load_set_ready(struct conn *c)
{
    if (c->load_state == LOAD_READY)
        return;
    c->load_state = LOAD_READY;
    L.pending--;
    L.ready++;
}

static void load_open(void)
{
    struct conn *c = &L.conns[L.opened];
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)L.o->port)};
    struct epoll_event ev = {.events = EPOLLOUT};
    int enable = 1;

    memset(c, 0, sizeof(*c));
    c->index = L.opened++;
    c->history_count = -1;
    c->load_state = LOAD_CONNECTING;
    L.pending++;
    c->cap = read_chunk * 2;
    c->buf = malloc(c->cap);
    if (c->buf == NULL) {
        fprintf(stderr, "tidegate-bench-ws: out of memory\n");
        exit(1);
    }
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (c->fd < 0)
        die("socket (raise ulimit -n for many clients)");
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &enable, sizeof(enable));
    if (connect(c->fd, (struct sockaddr *)&addr, sizeof(addr)) != 0 && errno != EINPROGRESS) {
        if (L.errors_printed++ < 5)
            fprintf(stderr, "tidegate-bench-ws: connect to 127.0.0.1:%d failed: %s\n",
                    L.o->port, strerror(errno));
        load_conn_closed(c);
        return;
    }
    ev.data.u64 = (uint64_t)c->index;
    if (epoll_ctl(L.epfd, EPOLL_CTL_ADD, c->fd, &ev) != 0)
        die("epoll_ctl");
}

/* The TCP connection is up: send the upgrade request. */
static void load_connected(struct conn *c)
{
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = (uint64_t)c->index};
    char request[512];
    int err = 0;
    socklen_t errlen = sizeof(err);

    getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &errlen);
    if (err != 0) {
        if (L.errors_printed++ < 5)
            fprintf(stderr, "tidegate-bench-ws: connect to 127.0.0.1:%d failed: %s\n",
                    L.o->port, strerror(err));
        load_conn_closed(c);
        return;
    }
    epoll_ctl(L.epfd, EPOLL_CTL_MOD, c->fd, &ev);
    snprintf(request, sizeof(request),
             "GET %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUpgrade: websocket\r\n"
             "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
             "Sec-WebSocket-Version: 13\r\n%s\r\n",
             L.o->path, L.o->port,
             L.o->protocol == PROTO_MQTT ? "Sec-WebSocket-Protocol: mqtt\r\n" : "");
    c->load_state = LOAD_HANDSHAKE;
    write_all(c, request, strlen(request));
}

/* Appends an MQTT string: two length bytes, then the bytes. */
static size_t mqtt_put_string(unsigned char *out, const char *s)
{
    size_t len = strlen(s);

    out[0] = (unsigned char)(len >> 8);
    out[1] = (unsigned char)len;
    memcpy(out + 2, s, len);
    return len + 2;
}

/* Sends an MQTT packet, whose remaining length is below 128, in one binary frame. */
static void mqtt_send(struct conn *c, unsigned char type_flags, const unsigned char *body, size_t len)
{
    unsigned char packet[300];

    packet[0] = type_flags;
    packet[1] = (unsigned char)len;
    memcpy(packet + 2, body, len);
    send_frame(c, 0x2, packet, len + 2);
}

static void load_handshake_done(struct conn *c)
{
    unsigned char body[256];
    char client_id[64];
    size_t n = 0;

    c->load_state = LOAD_SETUP;
    switch (L.o->protocol) {
    case PROTO_TIDEGATE:
        break; /* waits for the welcome message */
    case PROTO_BRIDGE:
        load_set_ready(c);
        break;
    case PROTO_MQTT:
        /* CONNECT: MQTT 3.1.1, clean session, keepalive 60 s. */
        snprintf(client_id, sizeof(client_id), "tgb-%ld-%ld", (long)getpid(), c->index);
        n += mqtt_put_string(body + n, "MQTT");
        body[n++] = 4;
        body[n++] = 0x02;
        body[n++] = 0;
        body[n++] = 60;
        n += mqtt_put_string(body + n, client_id);
        mqtt_send(c, 0x10, body, n);
        c->last_ping_s = now_s();
        break;
    }
}

/* Returns the number after "ts_us" in a payload (JSON, or JSON inside a JSON
 * string), or -1. */
static int64_t find_ts_us(const unsigned char *data, size_t len)
{
    const unsigned char *p = memmem(data, len, "ts_us", 5), *end = data + len;
    int64_t v = 0;
    int skipped = 0;

    if (p == NULL)
        return -1;
    p += 5;
    while (p < end && skipped < 4 && (*p == '"' || *p == '\\' || *p == ':' || *p == ' ')) {
        p++;
        skipped++;
    }
    if (p >= end || *p < '0' || *p > '9')
        return -1;
    while (p < end && *p >= '0' && *p <= '9')
        v = v * 10 + (*p++ - '0');
    return v;
}

static void load_message(struct conn *c, const unsigned char *payload, size_t len)
{
    int64_t ts;
    double t;

    if (!L.in_phase || c->load_state != LOAD_READY) {
        L.stray++;
        return;
    }
    t = now_s();
    if (L.delivered == 0)
        L.first_s = t;
    L.last_s = t;
    L.delivered++;
    c->phase_messages++;
    if (c->phase_messages == L.expect) {
        c->phase_done = true;
        L.done_clients++;
    }
    ts = find_ts_us(payload, len);
    if (ts < 0) {
        L.no_ts++;
        return;
    }
    hist_add(&L.hist, L.now_rt_us > ts ? (uint64_t)(L.now_rt_us - ts) : 0);
}

static void load_text(struct conn *c, const unsigned char *data, size_t len)
{
    char request[512];

    if (has_prefix(data, len, MESSAGE_PREFIX)) {
        load_message(c, data, len);
    } else if (L.o->protocol == PROTO_BRIDGE) {
        L.stray++;
    } else if (has_prefix(data, len, "{\"type\":\"welcome\"")) {
        snprintf(request, sizeof(request), "{\"type\":\"subscribe\",\"id\":1,\"filter\":\"%s\"}",
                 L.o->filter);
        send_text(c, request);
    } else if (has_prefix(data, len, "{\"type\":\"subscribed\"")) {
        load_set_ready(c);
    } else if (has_prefix(data, len, "{\"type\":\"error\"") && L.errors_printed++ < 5) {
        fprintf(stderr, "tidegate-bench-ws: gateway error: %.*s\n", (int)(len > 300 ? 300 : len),
                (const char *)data);
    }
}

static void mqtt_packet(struct conn *c, unsigned type_flags, const unsigned char *body, size_t len)
{
    unsigned char sub[300];
    size_t n = 0, topic_len;

    switch (type_flags >> 4) {
    case 2: /* CONNACK */
        if (len < 2 || body[1] != 0) {
            if (L.errors_printed++ < 5)
                fprintf(stderr, "tidegate-bench-ws: CONNACK return code %d\n", len < 2 ? -1 : body[1]);
            c->closed = true;
            return;
        }
        sub[n++] = 0;
        sub[n++] = 1; /* packet id */
        n += mqtt_put_string(sub + n, L.o->filter);
        sub[n++] = 0; /* QoS 0 */
        mqtt_send(c, 0x82, sub, n);
        break;
    case 9: /* SUBACK */
        if (len < 3 || body[2] == 0x80) {
            if (L.errors_printed++ < 5)
                fprintf(stderr, "tidegate-bench-ws: the broker rejected the subscription\n");
            c->closed = true;
            return;
        }
        load_set_ready(c);
        break;
    case 3: /* PUBLISH */
        if (len < 2)
            return;
        topic_len = (size_t)body[0] << 8 | body[1];
        n = 2 + topic_len + (((type_flags >> 1) & 3) ? 2 : 0);
        if (n > len)
            return;
        load_message(c, body + n, len - n);
        break;
    default: /* PINGRESP and others */
        break;
    }
}

/* Appends a binary frame's bytes to the MQTT stream and handles whole packets. */
static void load_binary(struct conn *c, const unsigned char *data, size_t len)
{
    size_t pos = 0;

    if (L.o->protocol != PROTO_MQTT) {
        L.stray++;
        return;
    }
    if (c->mqtt_cap - c->mqtt_len < len) {
        size_t cap = c->mqtt_len + len + 4096;
        unsigned char *nb = realloc(c->mqtt, cap);
        if (nb == NULL) {
            fprintf(stderr, "tidegate-bench-ws: out of memory\n");
            exit(1);
        }
        c->mqtt = nb;
        c->mqtt_cap = cap;
    }
    memcpy(c->mqtt + c->mqtt_len, data, len);
    c->mqtt_len += len;

    while (c->mqtt_len - pos >= 2) {
        const unsigned char *p = c->mqtt + pos;
        size_t avail = c->mqtt_len - pos, remaining = 0, hlen = 1;
        int shift = 0;
        bool whole = false;

        while (hlen < avail && hlen <= 4) {
            remaining |= (size_t)(p[hlen] & 0x7f) << shift;
            shift += 7;
            if ((p[hlen++] & 0x80) == 0) {
                whole = true;
                break;
            }
        }
        if (!whole || avail < hlen + remaining)
            break;
        mqtt_packet(c, p[0], p + hlen, remaining);
        pos += hlen + remaining;
    }
    memmove(c->mqtt, c->mqtt + pos, c->mqtt_len - pos);
    c->mqtt_len -= pos;
}

static void load_print_connected(bool timed_out)
{
    printf("{\"event\":\"connected\",\"requested\":%ld,\"ready\":%ld,\"failed\":%ld,\"pending\":%ld,"
           "\"timed_out\":%s,\"seconds\":%.3f}\n",
           L.connect_target, L.ready, L.failed, L.pending, timed_out ? "true" : "false",
           now_s() - L.connect_start);
    L.connecting = false;
}

static void load_print_phase(bool complete)
{
    double user, sys;
    long min = -1;

    cpu_seconds(&user, &sys);
    for (long i = 0; i < L.opened; i++) {
        struct conn *c = &L.conns[i];
        if (c->load_state == LOAD_READY && !c->fd_closed && (min < 0 || c->phase_messages < min))
            min = c->phase_messages;
    }
    printf("{\"event\":\"phase\",\"clients\":%ld,\"expect\":%ld,\"expected\":%ld,\"delivered\":%ld,"
           "\"complete\":%s,\"min_received\":%ld,\"closed\":%ld,\"close_codes\":{",
           L.participants, L.expect, L.participants * L.expect, L.delivered,
           complete ? "true" : "false", min, L.closed_in_phase);
    for (int i = 0, n = 0; i < MAX_CLOSE_CODES && L.close_counts[i] > 0; i++)
        printf("%s\"%d\":%ld", n++ ? "," : "", L.close_codes[i], L.close_counts[i]);
    printf("},\"latency_samples\":%" PRIu64 ",\"no_ts\":%ld,\"stray\":%ld,"
           "\"p50_ms\":%.3f,\"p90_ms\":%.3f,\"p99_ms\":%.3f,\"p999_ms\":%.3f,\"max_ms\":%.3f,"
           "\"mean_ms\":%.3f,\"first_delivery_s\":%.4f,\"last_delivery_s\":%.4f,\"wall_s\":%.4f,"
           "\"cpu_user_s\":%.3f,\"cpu_sys_s\":%.3f}\n",
           L.hist.total, L.no_ts, L.stray, hist_percentile_ms(&L.hist, 50),
           hist_percentile_ms(&L.hist, 90), hist_percentile_ms(&L.hist, 99),
           hist_percentile_ms(&L.hist, 99.9), (double)L.hist.max_us / 1000.0,
           L.hist.total ? L.hist.sum_us / (double)L.hist.total / 1000.0 : -1.0,
           L.delivered ? L.first_s - L.phase_start : -1.0,
           L.delivered ? L.last_s - L.phase_start : -1.0, now_s() - L.phase_start,
           user - L.cpu_user0, sys - L.cpu_sys0);
    L.in_phase = false;
    L.stray = 0;
}

static void load_start_phase(long expect, double timeout_s)
{
    L.in_phase = true;
    L.expect = expect;
    L.participants = L.ready;
    L.done_clients = 0;
    L.closed_unfinished = 0;
    L.closed_in_phase = 0;
    L.delivered = 0;
    L.no_ts = 0;
    memset(&L.hist, 0, sizeof(L.hist));
    memset(L.close_counts, 0, sizeof(L.close_counts));
    for (long i = 0; i < L.opened; i++) {
        L.conns[i].phase_messages = 0;
        L.conns[i].phase_done = false;
    }
    L.phase_start = now_s();
    L.phase_deadline = L.phase_start + timeout_s;
    cpu_seconds(&L.cpu_user0, &L.cpu_sys0);
    if (expect == 0)
        load_print_phase(true);
}

static void load_command(const char *line)
{
    long n = 0;
    double seconds = 0;

    if (sscanf(line, "connect %ld %lf", &n, &seconds) == 2) {
        if (n > L.o->max_clients || n < L.opened) {
            printf("{\"event\":\"error\",\"message\":\"invalid connect count %ld: expected %ld to "
                   "--max-clients %ld\"}\n", n, L.opened, L.o->max_clients);
            return;
        }
        L.connecting = true;
        L.connect_target = n;
        L.connect_start = now_s();
        L.connect_deadline = L.connect_start + seconds;
    } else if (sscanf(line, "phase %ld %lf", &n, &seconds) == 2) {
        load_start_phase(n, seconds);
    } else if (sscanf(line, "hold %lf", &seconds) == 1) {
        L.holding = true;
        L.hold_until = now_s() + seconds;
    } else if (strncmp(line, "quit", 4) == 0) {
        L.quit = true;
    } else {
        printf("{\"event\":\"error\",\"message\":\"unknown command: expected connect K SECONDS, "
               "phase N SECONDS, hold SECONDS or quit\"}\n");
    }
}

/* Reads stdin and runs each complete command line. */
static void load_read_stdin(void)
{
    ssize_t n = read(STDIN_FILENO, L.line + L.line_len, sizeof(L.line) - 1 - L.line_len);
    char *nl;

    if (n <= 0) {
        if (n == 0 || (errno != EINTR && errno != EAGAIN))
            L.quit = true;
        return;
    }
    L.line_len += (size_t)n;
    L.line[L.line_len] = '\0';
    while ((nl = strchr(L.line, '\n')) != NULL) {
        *nl = '\0';
        load_command(L.line);
        memmove(L.line, nl + 1, L.line_len - (size_t)(nl + 1 - L.line) + 1);
        L.line_len -= (size_t)(nl + 1 - L.line);
    }
    if (L.line_len == sizeof(L.line) - 1)
        L.line_len = 0; /* a line this long is no command */
}

/* Sends a PINGREQ from every MQTT client idle for 30 s (half the keepalive). */
static void load_mqtt_pings(double now)
{
    static const unsigned char empty[1];

    for (long i = 0; i < L.opened; i++) {
        struct conn *c = &L.conns[i];
        if (c->load_state == LOAD_READY && !c->fd_closed && now - c->last_ping_s >= 30) {
            mqtt_send(c, 0xc0, empty, 0);
            c->last_ping_s = now;
        }
    }
}

static int run_load(const struct options *o)
{
    struct epoll_event events[512];
    struct epoll_event stdin_ev = {.events = EPOLLIN, .data.u64 = UINT64_MAX};
    double last_ping_check = now_s();

    read_chunk = 16 * 1024;
    L.o = o;
    L.conns = calloc((size_t)o->max_clients, sizeof(*L.conns));
    L.epfd = epoll_create1(0);
    if (L.conns == NULL || L.epfd < 0)
        die("allocating the clients");
    if (epoll_ctl(L.epfd, EPOLL_CTL_ADD, STDIN_FILENO, &stdin_ev) != 0)
        die("epoll_ctl on stdin");

    while (!L.quit) {
        double now;
        int n;

        while (L.connecting && L.opened < L.connect_target && L.pending < o->ramp)
            load_open();
        n = epoll_wait(L.epfd, events, 512, 50);
        if (n < 0 && errno != EINTR)
            die("epoll_wait");
        if (n > 0) {
            struct timespec rt;
            clock_gettime(CLOCK_REALTIME, &rt);
            L.now_rt_us = (int64_t)rt.tv_sec * 1000000 + rt.tv_nsec / 1000;
        }
        for (int i = 0; i < n; i++) {
            struct conn *c;

            if (events[i].data.u64 == UINT64_MAX) {
                load_read_stdin();
                continue;
            }
            c = &L.conns[events[i].data.u64];
            if (c->fd_closed)
                continue;
            if (c->load_state == LOAD_CONNECTING) {
                load_connected(c);
                continue;
            }
            if (!conn_read(c, 0) || c->closed)
                load_conn_closed(c);
        }

        now = now_s();
        if (L.connecting && L.opened >= L.connect_target && L.pending == 0)
            load_print_connected(false);
        else if (L.connecting && now > L.connect_deadline)
            load_print_connected(true);
        if (L.in_phase && L.done_clients + L.closed_unfinished >= L.participants)
            load_print_phase(true);
        else if (L.in_phase && now > L.phase_deadline)
            load_print_phase(false);
        if (L.holding && now >= L.hold_until) {
            L.holding = false;
            printf("{\"event\":\"held\",\"ready\":%ld,\"failed\":%ld}\n", L.ready, L.failed);
        }
        if (o->protocol == PROTO_MQTT && now - last_ping_check >= 1) {
            load_mqtt_pings(now);
            last_ping_check = now;
        }
    }

    for (long i = 0; i < L.opened; i++) {
        if (!L.conns[i].fd_closed)
            close(L.conns[i].fd);
    }
    return 0;
}

int main(int argc, char **argv)
{
    struct options o;

    parse_options(argc, argv, &o);
    setvbuf(stdout, NULL, _IOLBF, 0);
    g_mode = o.mode;
    if (o.mode == MODE_LOAD)
        return run_load(&o);
    return o.mode == MODE_FANOUT ? run_fanout(&o) : run_history(&o);
}
