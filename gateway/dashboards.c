#include "dashboards.h"
#include "topic.h"

#include <stdio.h>
#include <string.h>

#define NAME_CHARS "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-"

static const char *const widget_types[] = {"value", "gauge", "chart", "map",
                                           "table", "chat",  "inspector"};

#define FAIL(...)                                                                                  \
    do {                                                                                           \
        snprintf(err, err_size, __VA_ARGS__);                                                      \
        return false;                                                                              \
    } while (0)

static bool check_widget(json_t *widget, const char *where, char *err, size_t err_size)
{
    json_t *type = json_object_get(widget, "type");
    json_t *filter = json_object_get(widget, "filter");
    json_t *title = json_object_get(widget, "title");
    bool known = false;
    const char *why;

    if (!json_is_object(widget))
        FAIL("%s: expected an object with type and filter", where);
    if (!json_is_string(type))
        FAIL("%s.type: missing; expected one of value, gauge, chart, map, table, chat, "
             "inspector", where);
    for (size_t i = 0; i < sizeof(widget_types) / sizeof(widget_types[0]); i++)
        known = known || strcmp(json_string_value(type), widget_types[i]) == 0;
    if (!known)
        FAIL("%s.type: \"%.40s\" is not a widget type; expected one of value, gauge, chart, "
             "map, table, chat, inspector", where, json_string_value(type));
    if (!json_is_string(filter))
        FAIL("%s.filter: missing; expected an MQTT topic filter such as \"lab/+/telemetry\"",
             where);
    why = topic_check_filter(json_string_value(filter), json_string_length(filter));
    if (why != NULL)
        FAIL("%s.filter: \"%.80s\" is not a valid topic filter: the filter %s", where,
             json_string_value(filter), why);
    if (title != NULL && !json_is_string(title))
        FAIL("%s.title: expected a string", where);
    return true;
}

static bool check_dashboard(json_t *dashboard, size_t index, json_t *all, char *err,
                            size_t err_size)
{
    json_t *name = json_object_get(dashboard, "name");
    json_t *widgets = json_object_get(dashboard, "widgets");
    json_t *widget;
    char where[96];
    size_t i;

    snprintf(where, sizeof(where), "dashboards[%zu]", index);
    if (!json_is_object(dashboard))
        FAIL("%s: expected an object with name and widgets", where);
    if (!json_is_string(name) || json_string_length(name) == 0 || json_string_length(name) > 64 ||
        strspn(json_string_value(name), NAME_CHARS) != json_string_length(name))
        FAIL("%s.name: expected 1 to 64 letters, digits, '_' or '-' (the page is served at "
             "/d/NAME)", where);
    for (i = 0; i < index; i++) {
        if (strcmp(json_string_value(json_object_get(json_array_get(all, i), "name")),
                   json_string_value(name)) == 0)
            FAIL("%s.name: \"%s\" is also the name of dashboards[%zu]", where,
                 json_string_value(name), i);
    }
    if (!json_is_array(widgets) || json_array_size(widgets) == 0)
        FAIL("%s.widgets: expected a non-empty array of widgets", where);

    json_array_foreach(widgets, i, widget)
    {
        char widget_where[128];
        snprintf(widget_where, sizeof(widget_where), "%s.widgets[%zu]", where, i);
        if (!check_widget(widget, widget_where, err, err_size))
            return false;
    }
    return true;
}

json_t *dashboards_load(const char *path, char *err, size_t err_size)
{
    json_error_t jerr;
    json_t *root = json_load_file(path, JSON_REJECT_DUPLICATES, &jerr);
    json_t *list;
    json_t *dashboard;
    char inner[400];
    size_t i;

    if (root == NULL) {
        snprintf(err, err_size, "dashboards file %s: %s (line %d, column %d)", path, jerr.text,
                 jerr.line, jerr.column);
        return NULL;
    }
    list = json_object_get(root, "dashboards");
    if (!json_is_object(root) || !json_is_array(list)) {
        snprintf(err, err_size, "dashboards file %s: dashboards: expected an object with a "
                 "\"dashboards\" array", path);
        json_decref(root);
        return NULL;
    }
    json_array_foreach(list, i, dashboard)
    {
        if (!check_dashboard(dashboard, i, list, inner, sizeof(inner))) {
            snprintf(err, err_size, "dashboards file %s: %s", path, inner);
            json_decref(root);
            return NULL;
        }
    }
    json_incref(list);
    json_decref(root);
    return list;
}

bool dashboards_has(json_t *dashboards, const char *name)
{
    size_t i;
    json_t *dashboard;

    json_array_foreach(dashboards, i, dashboard)
    {
        if (strcmp(json_string_value(json_object_get(dashboard, "name")), name) == 0)
            return true;
    }
    return false;
}
