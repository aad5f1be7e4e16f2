/*
 * geofence: tracks positions in JSON payloads. It emits an event when a
 * topic's position enters or leaves one of the configured circular zones,
 * and adds the speed and heading since the topic's previous fix to the
 * forwarded payload.
 *
 * Config:
 *
 *     {"zones": [{"name": "ruoholahti", "lat": 60.163, "lon": 24.913,
 *                 "radius_m": 400}],
 *      "event_topic": "geofence/{topic}"}
 *
 * Optional settings: "lat_field" and "lon_field" (default "lat" and "lon",
 * dotted paths allowed), "time_field" (default "time"), "time_unit" ("ms",
 * the default, or "s") and "max_topics" (default 10000). "max_topics"
 * bounds the topics remembered. Beyond it the least recently seen topic is
 * forgotten, and its next fix counts as its first.
 *
 * A fix's time is the payload's time field when present: a number in
 * "time_unit" since the Unix epoch, or an ISO 8601 text such as
 * "2016-08-26T09:07:12.809+03:00" or "2016-08-26 09:07:12.809". Otherwise
 * it is the message's received_ms.
 *
 * Events go to "event_topic", with "{topic}" replaced by the source topic.
 * They follow the source message, with its QoS and without retain:
 *
 *     {"event":"enter","zone":"ruoholahti","topic":"devices/1",
 *      "lat":60.164,"lon":24.913,"time_ms":1472202169734}
 *
 * A fix is inside a zone when its great-circle (haversine) distance from
 * the centre is at most radius_m. A topic's first fix emits "enter" for
 * every zone it is inside and no "leave". From the second fix on, the
 * payload gains "speed_mps" (distance over time since the previous fix,
 * rounded to 0.01 m/s; left out when the time did not advance) and
 * "heading_deg" (initial bearing from the previous fix, clockwise from
 * north, rounded to 0.1 degree; left out when the position did not move).
 * A payload that is not a JSON object or lacks a numeric latitude or
 * longitude passes unchanged. A latitude or longitude out of range, or a
 * time field that cannot be read, fails the call.
 *
 * Build (the gateway's meson build does this):
 *
 *     cc -shared -fPIC -Iinclude -Iplugins/common -o geofence.so \
 *         plugins/geofence/geofence.c plugins/common/plugin_config.c \
 *         plugins/common/plugin_json.c plugins/common/topic_map.c \
 *         plugins/common/topic_template.c -ljansson -lm
 */
#include <tidegate/plugin.h>

#include "plugin_config.h"
#include "plugin_json.h"
#include "topic_map.h"
#include "topic_template.h"

#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef M_PI
#define M_PI 3.14159265358979323846
#endif

/* The mean Earth radius (IUGG), in metres. */
#define EARTH_RADIUS_M 6371008.8
/* Zones are tracked as bits of one 64-bit word per topic. */
#define GEOFENCE_MAX_ZONES 64

struct zone {
    char *name;
    double lat;
    double lon;
    double radius_m;
};

struct fix {
    double lat;
    double lon;
    int64_t time_ms;
};

/* The state kept per topic. */
struct fence_topic {
    bool has_fix;
    struct fix last;
    uint64_t inside; /* bit i: inside zones[i] */
};

struct geofence {
    const struct tg_host *host;
    struct zone *zones;
    size_t zone_count;
    char *event_topic; /* a topic template */
    char *lat_field;
    char *lon_field;
    char *time_field;
    int64_t time_scale_ms; /* 1 for "ms", 1000 for "s" */
    struct topic_map *topics;
};

static void geofence_cleanup(void *state)
{
    struct geofence *self = state;

    if (self == NULL)
        return;
    for (size_t i = 0; i < self->zone_count; i++)
        free(self->zones[i].name);
    free(self->zones);
    free(self->event_topic);
    free(self->lat_field);
    free(self->lon_field);
    free(self->time_field);
    topic_map_destroy(self->topics);
    free(self);
}

/* Reads zones[@index] into @zone and rejects a name used by an earlier
 * zone. */
static int parse_zone(struct geofence *self, size_t index, const json_t *spec, char *err,
                      size_t err_size)
{
    static const char *const keys[] = {"name", "lat", "lon", "radius_m", NULL};
    struct zone *zone = &self->zones[index];
    const char *name = NULL;
    char path[64];

    snprintf(path, sizeof(path), "zones[%zu]", index);
    if (!json_is_object(spec)) {
        snprintf(err, err_size,
                 "invalid value for \"%s\": expected an object with name, lat, lon and "
                 "radius_m, got %s",
                 path, plugin_config_type_name(spec));
        return -1;
    }
    if (plugin_config_check_keys(spec, path, keys, err, err_size) != 0 ||
        plugin_config_require(spec, path, "name", "a string", err, err_size) != 0 ||
        plugin_config_require(spec, path, "lat", "a number", err, err_size) != 0 ||
        plugin_config_require(spec, path, "lon", "a number", err, err_size) != 0 ||
        plugin_config_require(spec, path, "radius_m", "a number", err, err_size) != 0 ||
        plugin_config_string(spec, path, "name", &name, err, err_size) != 0 ||
        plugin_config_number(spec, path, "lat", -90.0, 90.0, &zone->lat, err, err_size) != 0 ||
        plugin_config_number(spec, path, "lon", -180.0, 180.0, &zone->lon, err, err_size) != 0 ||
        plugin_config_number(spec, path, "radius_m", 0.001, INFINITY, &zone->radius_m, err,
                             err_size) != 0)
        return -1;

    for (size_t i = 0; i < index; i++) {
        if (strcmp(self->zones[i].name, name) == 0) {
            snprintf(err, err_size, "invalid value for \"%s.name\": \"%s\" is used by zones[%zu]",
                     path, name, i);
            return -1;
        }
    }
    zone->name = strdup(name);
    if (zone->name == NULL) {
        snprintf(err, err_size, "out of memory");
        return -1;
    }
    return 0;
}

static int parse_zones(struct geofence *self, const json_t *zones, char *err, size_t err_size)
{
    size_t count = json_array_size(zones);

    if (!json_is_array(zones) || count == 0 || count > GEOFENCE_MAX_ZONES) {
        snprintf(err, err_size,
                 "invalid value for \"zones\": expected an array of 1 to %d zones such as "
                 "[{\"name\": \"depot\", \"lat\": 60.16, \"lon\": 24.91, \"radius_m\": 400}], "
                 "got %s%s",
                 GEOFENCE_MAX_ZONES, plugin_config_type_name(zones),
                 count > GEOFENCE_MAX_ZONES ? " that is too long" : "");
        return -1;
    }
    self->zones = calloc(count, sizeof(*self->zones));
    if (self->zones == NULL) {
        snprintf(err, err_size, "out of memory");
        return -1;
    }
    for (size_t i = 0; i < count; i++) {
        if (parse_zone(self, i, json_array_get(zones, i), err, err_size) != 0)
            return -1;
        self->zone_count++;
    }
    return 0;
}

/* Reads the settings other than "zones" into @self. */
static int parse_settings(struct geofence *self, const json_t *config, char *err, size_t err_size)
{
    const char *event_topic = "geofence/{topic}";
    const char *lat_field = "lat";
    const char *lon_field = "lon";
    const char *time_field = "time";
    const char *time_unit = "ms";
    long long max_topics = TOPIC_MAP_DEFAULT_MAX;
    const char *reason;

    if (plugin_config_string(config, "", "event_topic", &event_topic, err, err_size) != 0 ||
        plugin_config_string(config, "", "lat_field", &lat_field, err, err_size) != 0 ||
        plugin_config_string(config, "", "lon_field", &lon_field, err, err_size) != 0 ||
        plugin_config_string(config, "", "time_field", &time_field, err, err_size) != 0 ||
        plugin_config_string(config, "", "time_unit", &time_unit, err, err_size) != 0 ||
        plugin_config_integer(config, "", "max_topics", 1, TOPIC_MAP_LIMIT, &max_topics, err,
                              err_size) != 0)
        return -1;

    reason = topic_template_check(event_topic);
    if (reason != NULL) {
        snprintf(err, err_size, "invalid value \"%s\" for \"event_topic\": %s", event_topic,
                 reason);
        return -1;
    }
    if (strcmp(time_unit, "ms") == 0) {
        self->time_scale_ms = 1;
    } else if (strcmp(time_unit, "s") == 0) {
        self->time_scale_ms = 1000;
    } else {
        snprintf(err, err_size, "invalid value \"%s\" for \"time_unit\": expected \"ms\" or \"s\"",
                 time_unit);
        return -1;
    }

    self->event_topic = strdup(event_topic);
    self->lat_field = strdup(lat_field);
    self->lon_field = strdup(lon_field);
    self->time_field = strdup(time_field);
    self->topics = topic_map_create(sizeof(struct fence_topic), (size_t)max_topics);
    if (self->event_topic == NULL || self->lat_field == NULL || self->lon_field == NULL ||
        self->time_field == NULL || self->topics == NULL) {
        snprintf(err, err_size, "out of memory");
        return -1;
    }
    return 0;
}

static int geofence_init(const struct tg_host *host, struct tg_instance *instance,
                         const char *config_json, void **state, char *err, size_t err_size)
{
    static const char *const keys[] = {"zones",      "event_topic", "lat_field",  "lon_field",
                                       "time_field", "time_unit",   "max_topics", NULL};
    struct geofence *self;
    json_t *config;
    int rc = -1;

    (void)instance;
    *state = NULL;
    if (plugin_config_load(config_json, &config, err, err_size) != 0)
        return -1;
    if (plugin_config_check_keys(config, "", keys, err, err_size) != 0 ||
        plugin_config_require(config, "", "zones", "an array of zones", err, err_size) != 0)
        goto out;

    self = calloc(1, sizeof(*self));
    *state = self;
    if (self == NULL) {
        snprintf(err, err_size, "out of memory");
        goto out;
    }
    self->host = host;
    if (parse_zones(self, json_object_get(config, "zones"), err, err_size) != 0 ||
        parse_settings(self, config, err, err_size) != 0)
        goto out;
    rc = 0;

out:
    json_decref(config);
    return rc;
}

/* Returns the number of days from 1970-01-01 to the given date of the
 * proleptic Gregorian calendar (Howard Hinnant's days_from_civil). */
static int64_t days_from_civil(int64_t year, int64_t month, int64_t day)
{
    int64_t era;
    int64_t year_of_era;
    int64_t day_of_year;
    int64_t day_of_era;

    year -= month <= 2;
    era = (year >= 0 ? year : year - 399) / 400;
    year_of_era = year - era * 400;
    day_of_year = (153 * (month + (month > 2 ? -3 : 9)) + 2) / 5 + day - 1;
    day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    return era * 146097 + day_of_era - 719468;
}

/* Reads @count decimal digits at @text into @value. */
static bool read_digits(const char *text, int count, int *value)
{
    *value = 0;
    for (int i = 0; i < count; i++) {
        if (text[i] < '0' || text[i] > '9')
            return false;
        *value = *value * 10 + (text[i] - '0');
    }
    return true;
}

/*
 * Parses "YYYY-MM-DD[T ]HH:MM:SS[.fraction][Z|+HH:MM|-HH:MM|+HHMM|-HHMM]"
 * into milliseconds since the Unix epoch. A time without a zone is taken
 * as UTC: only differences between fixes matter here.
 */
static bool parse_iso8601_ms(const char *text, int64_t *time_ms)
{
    int year, month, day, hour, minute, second;
    int zone_hours = 0, zone_minutes = 0;
    int64_t minutes;
    int64_t ms = 0;
    const char *at;

    if (strlen(text) < 19 || !read_digits(text, 4, &year) || text[4] != '-' ||
        !read_digits(text + 5, 2, &month) || text[7] != '-' || !read_digits(text + 8, 2, &day) ||
        (text[10] != 'T' && text[10] != 't' && text[10] != ' ') ||
        !read_digits(text + 11, 2, &hour) || text[13] != ':' ||
        !read_digits(text + 14, 2, &minute) || text[16] != ':' ||
        !read_digits(text + 17, 2, &second))
        return false;
    if (month < 1 || month > 12 || day < 1 || day > 31 || hour > 23 || minute > 59 || second > 60)
        return false;
    at = text + 19;

    /* Fraction: milliseconds from the first three digits, the rest ignored. */
    if (*at == '.' || *at == ',') {
        int digits = 0;

        for (at++; *at >= '0' && *at <= '9'; at++, digits++) {
            if (digits < 3)
                ms = ms * 10 + (*at - '0');
        }
        if (digits == 0)
            return false;
        for (; digits < 3; digits++)
            ms *= 10;
    }

    if (*at == 'Z' || *at == 'z') {
        at++;
    } else if (*at == '+' || *at == '-') {
        int sign = *at == '-' ? -1 : 1;
        bool colon;

        /* read_digits stops at the NUL, so at[3] is read only after two digits. */
        if (!read_digits(at + 1, 2, &zone_hours))
            return false;
        colon = at[3] == ':';
        if (!read_digits(at + (colon ? 4 : 3), 2, &zone_minutes))
            return false;
        zone_hours *= sign;
        zone_minutes *= sign;
        at += colon ? 6 : 5;
    }
    if (*at != '\0')
        return false;

    minutes =
        (days_from_civil(year, month, day) * 24 + hour - zone_hours) * 60 + minute - zone_minutes;
    *time_ms = minutes * 60000 + second * 1000 + ms;
    return true;
}

/* Finds the fix's time: the payload's time field, else received_ms.
 * Returns -1 after host->fail when the field cannot be read. */
static int read_fix_time(const struct geofence *self, json_t *root,
                         const struct tg_message *message, struct tg_call *call, int64_t *time_ms)
{
    json_t *value = plugin_json_lookup(root, self->time_field, NULL, NULL);
    char reason[256];

    *time_ms = message->received_ms;
    if (value == NULL)
        return 0;
    if (json_is_number(value) && isfinite(json_number_value(value)) &&
        fabs(json_number_value(value)) < 1e15) {
        *time_ms = llround(json_number_value(value) * (double)self->time_scale_ms);
        return 0;
    }
    if (json_is_string(value) && parse_iso8601_ms(json_string_value(value), time_ms))
        return 0;

    snprintf(reason, sizeof(reason),
             "time field \"%s\": expected a number in %s since the Unix epoch or an ISO 8601 "
             "time such as \"2016-08-26T09:07:12.809Z\"",
             self->time_field, self->time_scale_ms == 1 ? "ms" : "s");
    self->host->fail(call, reason);
    return -1;
}

static double radians(double degrees)
{
    return degrees * (M_PI / 180.0);
}

/* Returns the great-circle distance in metres (haversine formula). */
static double haversine_m(const struct fix *from, const struct fix *to)
{
    double dlat = radians(to->lat - from->lat);
    double dlon = radians(to->lon - from->lon);
    double a = sin(dlat / 2) * sin(dlat / 2) +
               cos(radians(from->lat)) * cos(radians(to->lat)) * sin(dlon / 2) * sin(dlon / 2);

    return 2 * EARTH_RADIUS_M * atan2(sqrt(a), sqrt(1 - a));
}

/* Returns the initial bearing from @from to @to, in degrees clockwise from
 * north, in [0, 360). */
static double bearing_deg(const struct fix *from, const struct fix *to)
{
    double lat1 = radians(from->lat);
    double lat2 = radians(to->lat);
    double dlon = radians(to->lon - from->lon);
    double y = sin(dlon) * cos(lat2);
    double x = cos(lat1) * sin(lat2) - sin(lat1) * cos(lat2) * cos(dlon);

    return fmod(atan2(y, x) * (180.0 / M_PI) + 360.0, 360.0);
}

/* Adds speed_mps and heading_deg from @last to @fix into @root. Returns the
 * number of fields added, or -1 when out of memory. */
static int add_motion(json_t *root, const struct fix *last, const struct fix *fix)
{
    double distance = haversine_m(last, fix);
    int64_t elapsed_ms = fix->time_ms - last->time_ms;
    int added = 0;

    if (elapsed_ms > 0) {
        double speed = distance / ((double)elapsed_ms / 1000.0);

        if (json_object_set_new(root, "speed_mps", json_real(round(speed * 100.0) / 100.0)) != 0)
            return -1;
        added++;
    }
    if (distance > 0.0) {
        /* Rounding can give 360.0, which is north as well. */
        double heading = fmod(round(bearing_deg(last, fix) * 10.0) / 10.0, 360.0);

        if (json_object_set_new(root, "heading_deg", json_real(heading)) != 0)
            return -1;
        added++;
    }
    return added;
}

/* Emits one enter or leave event. Returns 0, or -1 after host->fail. */
static int emit_event(const struct geofence *self, const struct tg_message *message,
                      struct tg_call *call, const char *event, const struct zone *zone,
                      const struct fix *fix)
{
    char *topic = topic_template_expand(self->event_topic, message->topic, message->topic_len);
    json_t *body = json_pack("{s:s, s:s, s:s, s:f, s:f, s:I}", "event", event, "zone", zone->name,
                             "topic", message->topic, "lat", fix->lat, "lon", fix->lon, "time_ms",
                             (json_int_t)fix->time_ms);
    int rc = -1;

    if (topic == NULL || body == NULL)
        self->host->fail(call, "out of memory");
    else
        rc = plugin_json_emit(self->host, call, topic, body, message->qos, false);

    json_decref(body);
    free(topic);
    return rc;
}

/* Computes which zones @fix is inside and emits an event per change from
 * @was_inside. Returns the new set, or fails like emit_event. */
static int emit_zone_changes(const struct geofence *self, const struct tg_message *message,
                             struct tg_call *call, const struct fix *fix, uint64_t was_inside,
                             uint64_t *inside)
{
    *inside = 0;
    for (size_t i = 0; i < self->zone_count; i++) {
        const struct zone *zone = &self->zones[i];
        struct fix centre = {.lat = zone->lat, .lon = zone->lon};
        uint64_t bit = UINT64_C(1) << i;
        bool now_inside = haversine_m(&centre, fix) <= zone->radius_m;

        if (now_inside)
            *inside |= bit;
        if (now_inside == ((was_inside & bit) != 0))
            continue;
        /* NOTE: a host limit on messages emitted per call fails a fix that
         * enters or leaves more zones at once than that limit. */
        if (emit_event(self, message, call, now_inside ? "enter" : "leave", zone, fix) != 0)
            return -1;
    }
    return 0;
}

/* Reads the fix of @root into @fix. Returns 1 when found, 0 when the
 * payload has no numeric position, -1 after host->fail. */
static int read_fix(const struct geofence *self, json_t *root, const struct tg_message *message,
                    struct tg_call *call, struct fix *fix)
{
    json_t *lat = plugin_json_lookup(root, self->lat_field, NULL, NULL);
    json_t *lon = plugin_json_lookup(root, self->lon_field, NULL, NULL);
    char reason[256];

    if (!json_is_number(lat) || !json_is_number(lon))
        return 0;
    fix->lat = json_number_value(lat);
    fix->lon = json_number_value(lon);
    if (fix->lat < -90.0 || fix->lat > 90.0 || fix->lon < -180.0 || fix->lon > 180.0) {
        snprintf(reason, sizeof(reason),
                 "position %g, %g is out of range: expected latitude -90 to 90 and longitude "
                 "-180 to 180",
                 fix->lat, fix->lon);
        self->host->fail(call, reason);
        return -1;
    }
    if (read_fix_time(self, root, message, call, &fix->time_ms) != 0)
        return -1;
    return 1;
}

static enum tg_result geofence_transform(void *state, const struct tg_message *message,
                                         struct tg_call *call)
{
    struct geofence *self = state;
    json_t *root = plugin_json_parse_object(message);
    struct fence_topic *topic_state;
    struct fix fix;
    uint64_t inside;
    int found;
    int added = 0;
    enum tg_result result = TG_ERROR;

    if (root == NULL)
        return TG_PASS;
    found = read_fix(self, root, message, call, &fix);
    if (found <= 0) {
        result = found == 0 ? TG_PASS : TG_ERROR;
        goto out;
    }

    topic_state = topic_map_get(self->topics, message->topic, message->topic_len);
    if (topic_state == NULL) {
        self->host->fail(call, "out of memory for the topic's state");
        goto out;
    }

    if (topic_state->has_fix)
        added = add_motion(root, &topic_state->last, &fix);
    if (added < 0) {
        self->host->fail(call, "out of memory");
        goto out;
    }
    if (added > 0 && plugin_json_replace(self->host, call, root) != 0)
        goto out;
    if (emit_zone_changes(self, message, call, &fix, topic_state->inside, &inside) != 0)
        goto out;

    /* The gateway discards what a failed call emitted, so the state moves
     * on only when everything above succeeded. */
    topic_state->has_fix = true;
    topic_state->last = fix;
    topic_state->inside = inside;
    result = TG_PASS;

out:
    json_decref(root);
    return result;
}

static const struct tg_plugin geofence_plugin = {
    .abi_version = TIDEGATE_PLUGIN_ABI_VERSION,
    .struct_size = sizeof(struct tg_plugin),
    .name = "geofence",
    .version = "1.0.0",
    .description = "Emits zone enter and leave events and adds speed and heading to positions.",
    .init = geofence_init,
    .transform = geofence_transform,
    .cleanup = geofence_cleanup,
};

__attribute__((visibility("default"))) const struct tg_plugin *tidegate_plugin_entry(void);

const struct tg_plugin *tidegate_plugin_entry(void)
{
    return &geofence_plugin;
}
