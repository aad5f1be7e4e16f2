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
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MESSAGE_PREFIX "{\"type\":\"message\""
#define READ_CHUNK (256 * 1024)

enum mode { MODE_FANOUT, MODE_HISTORY };

struct options {
    enum mode mode;
    int port;
    const char *filter;
    long clients;
    long expect;
    long last;
    long repeat;
    double timeout_s;
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
};

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
            "Usage: tidegate-bench-ws fanout|history [OPTION]...\n"
            "WebSocket clients for the Tidegate benchmarks; prints JSON lines of results.\n"
            "\n"
            "  --port P         gateway port on 127.0.0.1 (required)\n"
            "  --filter F       topic filter to subscribe to (default #)\n"
            "  --clients C      fanout: number of clients (default 10)\n"
            "  --expect N       fanout: messages each client must receive (default 10000)\n"
            "  --last N         history: history messages requested (default 1000)\n"
            "  --repeat R       history: number of late joiners, one after another (default 20)\n"
            "  --timeout S      give up after S seconds (default 120)\n"
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
    };
    if (argc >= 2 && strcmp(argv[1], "--help") == 0) {
        usage(stdout);
        exit(0);
    }
    if (argc < 2 || (strcmp(argv[1], "fanout") != 0 && strcmp(argv[1], "history") != 0)) {
        usage(stderr);
        exit(2);
    }
    o->mode = strcmp(argv[1], "fanout") == 0 ? MODE_FANOUT : MODE_HISTORY;
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
    c->cap = READ_CHUNK * 2;
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
                size_t cap = (size_t)(hlen + plen) + READ_CHUNK;
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

    if (c->cap - c->len < READ_CHUNK) {
        size_t cap = c->len + READ_CHUNK * 2;
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

int main(int argc, char **argv)
{
    struct options o;

    parse_options(argc, argv, &o);
    setvbuf(stdout, NULL, _IOLBF, 0);
    return o.mode == MODE_FANOUT ? run_fanout(&o) : run_history(&o);
}
