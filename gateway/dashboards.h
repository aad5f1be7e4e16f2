/*
 * Dashboards as files: named dashboards of widgets bound to topic filters,
 * read from the JSON file given with --dashboards, checked at start and
 * served to the page at GET /api/v1/dashboards.
 */
#ifndef TIDEGATE_DASHBOARDS_H
#define TIDEGATE_DASHBOARDS_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

/*
 * Reads and checks the dashboards file at @path. Returns its "dashboards"
 * array (a new reference), or NULL with an error in @err that names the
 * file and the path of the bad field, such as dashboards[0].widgets[2].type.
 */
json_t *dashboards_load(const char *path, char *err, size_t err_size);

/* Returns true when @dashboards (an array from dashboards_load, or NULL)
 * has one named @name. */
bool dashboards_has(json_t *dashboards, const char *name);

#endif
