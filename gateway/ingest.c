#include "ingest.h"
#include "clock.h"
#include "log.h"
#include "metrics.h"
#include "topic.h"

#include <MQTTAsync.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define COMPONENT "ingest"

enum ingest_state {
    INGEST_DISCONNECTED = 0,
    INGEST_CONNECTING = 1,
    INGEST_CONNECTED = 2,
    INGEST_STOPPING = 3,
};

struct ingest {
    const struct config *cfg;
    struct mailbox *mb;
    struct pipeline *pipeline;
    MQTTAsync client;
    int mqtt_version; /* MQTTVERSION_5 or MQTTVERSION_3_1_1 */

    pthread_mutex_t lock;  /* guards the fields below */
    enum ingest_state state;
    bool fallback_pending;  /* the broker rejected MQTT 5: recreate as 3.1.1 */
    int64_t next_attempt_ms;
    int backoff_ms;
    unsigned attempts;     /* failed attempts since the last connection */
    bool disconnected_done;

    struct log_ratelimit bad_topic_rl;
    struct log_ratelimit tls_rl;
};

struct publish_ctx {
    struct ingest *in;
    uint64_t session_id;
    char *request_id_json;
};

static bool ingest_new_client(struct ingest *in);

static void set_state(struct ingest *in, enum ingest_state state)
{
    in->state = state;
    metrics_set_broker_connected(state == INGEST_CONNECTED);
}

/* Schedules the next attempt with capped exponential backoff. Call with
 * the lock held. */
static void schedule_retry(struct ingest *in)
{
    int64_t now = clock_monotonic_ms();

    in->next_attempt_ms = now + in->backoff_ms;
    log_info(COMPONENT, "retrying %s in %d ms (attempt %u)", in->cfg->mqtt_url, in->backoff_ms,
             in->attempts + 1);
    if (in->backoff_ms < in->cfg->mqtt_reconnect_max_ms) {
        in->backoff_ms *= 2;
        if (in->backoff_ms > in->cfg->mqtt_reconnect_max_ms)
            in->backoff_ms = in->cfg->mqtt_reconnect_max_ms;
    }
}

/* ---- Paho callbacks: they run on Paho's threads ---- */

static int on_message(void *context, char *topic_name, int topic_len, MQTTAsync_message *message)
{
    struct ingest *in = context;
    size_t len = topic_len > 0 ? (size_t)topic_len : strlen(topic_name);
    const char *why = topic_check_name(topic_name, len);
    struct msg *m = NULL;

    if (why != NULL) {
        metrics_add(&metrics.messages_rejected, 1);
        log_limited(&in->bad_topic_rl, LOG_WARN, COMPONENT,
                    "dropping a message from the broker: its topic name %s", why);
        goto done;
    }

    m = msg_create(topic_name, len, message->payload, (size_t)message->payloadlen,
                   (uint8_t)message->qos, message->retained != 0);
    if (m == NULL) {
        /* Returning 0 makes Paho call again later (MQTTAsync.h, messageArrived),
         * so nothing is lost. */
        return 0;
    }
    m->dup = message->dup != 0;
    m->mqtt_id = (uint16_t)message->msgid;
    metrics_add(&metrics.messages_received, 1);
    pipeline_submit(in->pipeline, m);

done:
    MQTTAsync_freeMessage(&message);
    MQTTAsync_free(topic_name);
    return 1;
}

static void on_connection_lost(void *context, char *cause)
{
    struct ingest *in = context;

    pthread_mutex_lock(&in->lock);
    if (in->state != INGEST_STOPPING) {
        log_warn(COMPONENT, "lost the connection to %s: %s", in->cfg->mqtt_url,
                 cause ? cause : "no reason given (socket closed or keepalive timed out)");
        set_state(in, INGEST_DISCONNECTED);
        in->backoff_ms = in->cfg->mqtt_reconnect_min_ms;
        in->attempts = 0;
        schedule_retry(in);
    }
    pthread_mutex_unlock(&in->lock);
}

static void on_subscribe_ok(void *context, MQTTAsync_successData *response)
{
    struct ingest *in = context;

    log_info(COMPONENT, "subscribed to %zu filter(s) at QoS %d", in->cfg->subscribe.count,
             in->cfg->mqtt_qos);
}

static void on_subscribe_ok5(void *context, MQTTAsync_successData5 *response)
{
    struct ingest *in = context;

    /* Paho 1.3 fills the reason code array only for more than one filter.
     * With one, the array pointer is not valid and reasonCode carries it. */
    if (response->alt.sub.reasonCodeCount <= 1) {
        if (response->reasonCode >= 0x80)
            log_error(COMPONENT, "the broker rejected the subscription to '%s': %s",
                      in->cfg->subscribe.items[0], MQTTReasonCode_toString(response->reasonCode));
    } else {
        for (int i = 0; i < response->alt.sub.reasonCodeCount; i++) {
            enum MQTTReasonCodes rc = response->alt.sub.reasonCodes[i];
            if (rc >= 0x80 && (size_t)i < in->cfg->subscribe.count)
                log_error(COMPONENT, "the broker rejected the subscription to '%s': %s",
                          in->cfg->subscribe.items[i], MQTTReasonCode_toString(rc));
        }
    }
    on_subscribe_ok(context, NULL);
}

static void on_subscribe_failed(void *context, MQTTAsync_failureData *response)
{
    log_error(COMPONENT, "subscribing failed: code %d %s", response ? response->code : 0,
              response && response->message ? response->message : "");
}

static void on_subscribe_failed5(void *context, MQTTAsync_failureData5 *response)
{
    log_error(COMPONENT, "subscribing failed: %s %s",
              response ? MQTTReasonCode_toString(response->reasonCode) : "",
              response && response->message ? response->message : "");
}

/* Paho never resubscribes on its own, so every connection subscribes. */
static void subscribe_all(struct ingest *in)
{
    MQTTAsync_responseOptions opts = MQTTAsync_responseOptions_initializer;
    MQTTSubscribe_options sub_opts[64];
    int qos[64];
    size_t count = in->cfg->subscribe.count;
    int rc;

    /* NOTE: filters past the 64th are not subscribed; config_validate
     * rejects more than 64. */
    if (count > sizeof(qos) / sizeof(qos[0]))
        count = sizeof(qos) / sizeof(qos[0]);
    for (size_t i = 0; i < count; i++) {
        MQTTSubscribe_options o = MQTTSubscribe_options_initializer;
        /* Keep the retain flag as the device set it, so an empty retained
         * payload (a cleared value) reads as such downstream. */
        o.retainAsPublished = 1;
        sub_opts[i] = o;
        qos[i] = in->cfg->mqtt_qos;
    }

    opts.context = in;
    if (in->mqtt_version == MQTTVERSION_5) {
        opts.onSuccess5 = on_subscribe_ok5;
        opts.onFailure5 = on_subscribe_failed5;
        if (count == 1)
            opts.subscribeOptions = sub_opts[0];
        else {
            opts.subscribeOptionsCount = (int)count;
            opts.subscribeOptionsList = sub_opts;
        }
    } else {
        opts.onSuccess = on_subscribe_ok;
        opts.onFailure = on_subscribe_failed;
    }
    rc = MQTTAsync_subscribeMany(in->client, (int)count, in->cfg->subscribe.items, qos, &opts);
    if (rc != MQTTASYNC_SUCCESS)
        log_error(COMPONENT, "subscribing failed: %s", MQTTAsync_strerror(rc));
}

static void connected(struct ingest *in, int version, int session_present)
{
    pthread_mutex_lock(&in->lock);
    set_state(in, INGEST_CONNECTED);
    in->backoff_ms = in->cfg->mqtt_reconnect_min_ms;
    in->attempts = 0;
    pthread_mutex_unlock(&in->lock);

    log_info(COMPONENT, "connected to %s as %s with MQTT %s (session %s)", in->cfg->mqtt_url,
             in->cfg->mqtt_client_id, version == MQTTVERSION_5 ? "5" : "3.1.1",
             session_present ? "resumed" : "new");
    subscribe_all(in);
}

static void on_connect_ok(void *context, MQTTAsync_successData *response)
{
    connected(context, MQTTVERSION_3_1_1, response ? response->alt.connect.sessionPresent : 0);
}

static void on_connect_ok5(void *context, MQTTAsync_successData5 *response)
{
    connected(context, MQTTVERSION_5, response ? response->alt.connect.sessionPresent : 0);
}

static void connect_failed(struct ingest *in, const char *reason, bool protocol_rejected)
{
    pthread_mutex_lock(&in->lock);
    if (in->state == INGEST_STOPPING) {
        pthread_mutex_unlock(&in->lock);
        return;
    }
    set_state(in, INGEST_DISCONNECTED);
    in->attempts++;
    log_warn(COMPONENT, "cannot connect to %s as %s: %s", in->cfg->mqtt_url,
             in->cfg->mqtt_client_id, reason);
    if (protocol_rejected && in->mqtt_version == MQTTVERSION_5) {
        log_info(COMPONENT, "the broker rejected MQTT 5; falling back to MQTT 3.1.1");
        in->fallback_pending = true;
        in->next_attempt_ms = clock_monotonic_ms();
    } else {
        schedule_retry(in);
    }
    pthread_mutex_unlock(&in->lock);
}

static void on_connect_failed(void *context, MQTTAsync_failureData *response)
{
    char reason[256];

    snprintf(reason, sizeof(reason), "%s%s%s",
             response ? MQTTAsync_strerror(response->code) : "unknown error",
             response && response->message ? ": " : "",
             response && response->message ? response->message : "");
    connect_failed(context, reason, false);
}

static void on_connect_failed5(void *context, MQTTAsync_failureData5 *response)
{
    char reason[256];
    bool rejected = response != NULL &&
                   (response->reasonCode == MQTTREASONCODE_UNSUPPORTED_PROTOCOL_VERSION ||
                    response->code == 1 /* CONNACK 0x01 from a 3.1.1 broker */);

    snprintf(reason, sizeof(reason), "%s%s%s",
             response && response->reasonCode ? MQTTReasonCode_toString(response->reasonCode)
             : response                       ? MQTTAsync_strerror(response->code)
                                              : "unknown error",
             response && response->message ? ": " : "",
             response && response->message ? response->message : "");
    connect_failed(context, reason, rejected);
}

static void on_disconnected(void *context, MQTTAsync_successData *response)
{
    struct ingest *in = context;

    pthread_mutex_lock(&in->lock);
    in->disconnected_done = true;
    pthread_mutex_unlock(&in->lock);
}

static void on_disconnected5(void *context, MQTTAsync_successData5 *response)
{
    on_disconnected(context, NULL);
}

static void publish_finish(struct publish_ctx *ctx, bool ok, const char *error)
{
    struct mail *mail = calloc(1, sizeof(*mail));

    if (!ok)
        metrics_add(&metrics.publish_failures, 1);
    if (mail == NULL) {
        free(ctx->request_id_json);
        free(ctx);
        return;
    }
    mail->kind = MAIL_PUBLISH_DONE;
    mail->u.publish_done.session_id = ctx->session_id;
    mail->u.publish_done.request_id_json = ctx->request_id_json;
    mail->u.publish_done.ok = ok;
    mail->u.publish_done.error = ok ? NULL : strdup(error ? error : "publish failed");
    mailbox_post(ctx->in->mb, mail);
    free(ctx);
}

static void on_publish_ok(void *context, MQTTAsync_successData *response)
{
    publish_finish(context, true, NULL);
}

static void on_publish_ok5(void *context, MQTTAsync_successData5 *response)
{
    if (response != NULL && response->reasonCode >= 0x80) {
        publish_finish(context, false, MQTTReasonCode_toString(response->reasonCode));
        return;
    }
    publish_finish(context, true, NULL);
}

static void on_publish_failed(void *context, MQTTAsync_failureData *response)
{
    publish_finish(context, false,
                   response && response->message ? response->message
                   : response                    ? MQTTAsync_strerror(response->code)
                                                 : "publish failed");
}

static void on_publish_failed5(void *context, MQTTAsync_failureData5 *response)
{
    publish_finish(context, false,
                   response && response->reasonCode ? MQTTReasonCode_toString(response->reasonCode)
                   : response && response->message  ? response->message
                                                    : "publish failed");
}

/* ---- the loop thread's side ---- */

static bool ingest_new_client(struct ingest *in)
{
    MQTTAsync_createOptions create = MQTTAsync_createOptions_initializer;
    int rc;

    create.MQTTVersion = in->mqtt_version;
    rc = MQTTAsync_createWithOptions(&in->client, in->cfg->mqtt_url, in->cfg->mqtt_client_id,
                                     MQTTCLIENT_PERSISTENCE_NONE, NULL, &create);
    if (rc != MQTTASYNC_SUCCESS) {
        log_error(COMPONENT, "cannot create the MQTT client for %s: %s", in->cfg->mqtt_url,
                  MQTTAsync_strerror(rc));
        return false;
    }
    rc = MQTTAsync_setCallbacks(in->client, in, on_connection_lost, on_message, NULL);
    if (rc != MQTTASYNC_SUCCESS) {
        log_error(COMPONENT, "cannot set the MQTT callbacks: %s", MQTTAsync_strerror(rc));
        MQTTAsync_destroy(&in->client);
        return false;
    }
    return true;
}

struct ingest *ingest_create(const struct config *cfg, struct mailbox *mb,
                             struct pipeline *pipeline)
{
    struct ingest *in = calloc(1, sizeof(*in));

    if (in == NULL)
        return NULL;
    in->cfg = cfg;
    in->mb = mb;
    in->pipeline = pipeline;
    in->mqtt_version = MQTTVERSION_5;
    in->backoff_ms = cfg->mqtt_reconnect_min_ms;
    pthread_mutex_init(&in->lock, NULL);
    set_state(in, INGEST_DISCONNECTED);

    if (!ingest_new_client(in)) {
        pthread_mutex_destroy(&in->lock);
        free(in);
        return NULL;
    }
    return in;
}

void ingest_destroy(struct ingest *in)
{
    if (in == NULL)
        return;
    MQTTAsync_destroy(&in->client);
    pthread_mutex_destroy(&in->lock);
    free(in);
}

static int on_ssl_error(const char *text, size_t len, void *context)
{
    struct ingest *in = context;

    log_limited(&in->tls_rl, LOG_WARN, COMPONENT, "TLS with %s: %.*s", in->cfg->mqtt_url,
                (int)len, text);
    return 0;
}

static void start_connect(struct ingest *in)
{
    MQTTAsync_connectOptions v3 = MQTTAsync_connectOptions_initializer;
    MQTTAsync_connectOptions v5 = MQTTAsync_connectOptions_initializer5;
    MQTTAsync_connectOptions *opts = in->mqtt_version == MQTTVERSION_5 ? &v5 : &v3;
    MQTTProperties props = MQTTProperties_initializer;
    MQTTAsync_SSLOptions ssl = MQTTAsync_SSLOptions_initializer;
    MQTTProperty expiry;
    int rc;

    opts->keepAliveInterval = in->cfg->mqtt_keepalive;
    opts->context = in;
    if (strncmp(in->cfg->mqtt_url, "ssl://", 6) == 0 || strncmp(in->cfg->mqtt_url, "mqtts://", 8) == 0) {
        /* Verify the broker's certificate and host name; a client
         * certificate only when one is configured. */
        ssl.enableServerCertAuth = 1;
        ssl.verify = 1;
        ssl.trustStore = in->cfg->mqtt_ca_file[0] ? in->cfg->mqtt_ca_file : NULL;
        ssl.keyStore = in->cfg->mqtt_cert_file[0] ? in->cfg->mqtt_cert_file : NULL;
        ssl.privateKey = in->cfg->mqtt_key_file[0] ? in->cfg->mqtt_key_file : NULL;
        ssl.ssl_error_cb = on_ssl_error;
        ssl.ssl_error_context = in;
        opts->ssl = &ssl;
    }
    opts->automaticReconnect = 0; /* the gateway retries itself, with logs */
    if (in->mqtt_version == MQTTVERSION_5) {
        /* Without a session expiry above 0 an MQTT 5 broker drops the
         * session at disconnect, and with it the queued messages. */
        expiry.identifier = MQTTPROPERTY_CODE_SESSION_EXPIRY_INTERVAL;
        expiry.value.integer4 = (unsigned int)in->cfg->mqtt_session_expiry;
        MQTTProperties_add(&props, &expiry);
        v5.cleanstart = 0;
        v5.connectProperties = &props;
        v5.onSuccess5 = on_connect_ok5;
        v5.onFailure5 = on_connect_failed5;
    } else {
        v3.cleansession = 0;
        v3.MQTTVersion = MQTTVERSION_3_1_1;
        v3.onSuccess = on_connect_ok;
        v3.onFailure = on_connect_failed;
    }

    log_info(COMPONENT, "connecting to %s as %s (MQTT %s)", in->cfg->mqtt_url,
             in->cfg->mqtt_client_id, in->mqtt_version == MQTTVERSION_5 ? "5" : "3.1.1");
    rc = MQTTAsync_connect(in->client, opts);
    MQTTProperties_free(&props);
    if (rc != MQTTASYNC_SUCCESS)
        connect_failed(in, MQTTAsync_strerror(rc), false);
}

void ingest_start(struct ingest *in)
{
    pthread_mutex_lock(&in->lock);
    set_state(in, INGEST_CONNECTING);
    pthread_mutex_unlock(&in->lock);
    start_connect(in);
}

void ingest_tick(struct ingest *in, int64_t now_ms)
{
    bool fallback;

    pthread_mutex_lock(&in->lock);
    if (in->state != INGEST_DISCONNECTED || now_ms < in->next_attempt_ms) {
        pthread_mutex_unlock(&in->lock);
        return;
    }
    fallback = in->fallback_pending;
    in->fallback_pending = false;
    set_state(in, INGEST_CONNECTING);
    pthread_mutex_unlock(&in->lock);

    /* A client made for MQTT 5 cannot connect with 3.1.1: make a new one.
     * This runs outside Paho's callbacks, where destroying is allowed. */
    if (fallback) {
        MQTTAsync_destroy(&in->client);
        in->mqtt_version = MQTTVERSION_3_1_1;
        if (!ingest_new_client(in)) {
            pthread_mutex_lock(&in->lock);
            set_state(in, INGEST_DISCONNECTED);
            schedule_retry(in);
            pthread_mutex_unlock(&in->lock);
            return;
        }
    }
    start_connect(in);
}

bool ingest_is_connected(const struct ingest *in)
{
    return metrics_broker_connected();
}

enum ingest_publish_result ingest_publish(struct ingest *in, const char *topic,
                                          const void *payload, size_t len, int qos, bool retain,
                                          uint64_t session_id, const char *request_id_json)
{
    MQTTAsync_responseOptions opts = MQTTAsync_responseOptions_initializer;
    MQTTAsync_message message = MQTTAsync_message_initializer;
    struct publish_ctx *ctx;
    int rc;

    if (!ingest_is_connected(in))
        return INGEST_PUBLISH_UNAVAILABLE;
    if (len > INT32_MAX)
        return INGEST_PUBLISH_FAILED;

    ctx = calloc(1, sizeof(*ctx));
    if (ctx == NULL)
        return INGEST_PUBLISH_FAILED;
    ctx->in = in;
    ctx->session_id = session_id;
    ctx->request_id_json = request_id_json ? strdup(request_id_json) : NULL;

    message.payload = (void *)payload;
    message.payloadlen = (int)len;
    message.qos = qos;
    message.retained = retain;
    opts.context = ctx;
    if (in->mqtt_version == MQTTVERSION_5) {
        opts.onSuccess5 = on_publish_ok5;
        opts.onFailure5 = on_publish_failed5;
    } else {
        opts.onSuccess = on_publish_ok;
        opts.onFailure = on_publish_failed;
    }

    rc = MQTTAsync_sendMessage(in->client, topic, &message, &opts);
    if (rc != MQTTASYNC_SUCCESS) {
        free(ctx->request_id_json);
        free(ctx);
        metrics_add(&metrics.publish_failures, 1);
        return rc == MQTTASYNC_DISCONNECTED ? INGEST_PUBLISH_UNAVAILABLE : INGEST_PUBLISH_FAILED;
    }
    return INGEST_PUBLISH_QUEUED;
}

void ingest_stop(struct ingest *in, int timeout_ms)
{
    MQTTAsync_disconnectOptions opts = MQTTAsync_disconnectOptions_initializer;
    MQTTAsync_disconnectOptions opts5 = MQTTAsync_disconnectOptions_initializer5;
    MQTTAsync_disconnectOptions *o = in->mqtt_version == MQTTVERSION_5 ? &opts5 : &opts;
    int64_t deadline = clock_monotonic_ms() + timeout_ms;
    bool was_connected;

    pthread_mutex_lock(&in->lock);
    was_connected = in->state == INGEST_CONNECTED;
    set_state(in, INGEST_STOPPING);
    in->disconnected_done = false;
    pthread_mutex_unlock(&in->lock);

    if (!was_connected && !MQTTAsync_isConnected(in->client))
        return;

    o->timeout = timeout_ms;
    o->context = in;
    if (in->mqtt_version == MQTTVERSION_5)
        opts5.onSuccess5 = on_disconnected5;
    else
        opts.onSuccess = on_disconnected;

    if (MQTTAsync_disconnect(in->client, o) != MQTTASYNC_SUCCESS) {
        log_warn(COMPONENT, "could not disconnect from %s cleanly", in->cfg->mqtt_url);
        return;
    }
    for (;;) {
        bool done;
        pthread_mutex_lock(&in->lock);
        done = in->disconnected_done;
        pthread_mutex_unlock(&in->lock);
        if (done || clock_monotonic_ms() >= deadline)
            break;
        struct timespec pause = {0, 10 * 1000 * 1000};
        nanosleep(&pause, NULL);
    }
    log_info(COMPONENT, "disconnected from %s", in->cfg->mqtt_url);
}
