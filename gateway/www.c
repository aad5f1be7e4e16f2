#include "www.h"
#include "assets.h"

#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* Largest file served from --www DIR. */
#define WWW_MAX_FILE_BYTES (16 * 1024 * 1024)

const char *www_content_type(const char *name)
{
    static const struct {
        const char *ext;
        const char *type;
    } types[] = {
        {".html", "text/html; charset=utf-8"}, {".js", "text/javascript; charset=utf-8"},
        {".css", "text/css; charset=utf-8"},   {".json", "application/json"},
        {".svg", "image/svg+xml"},             {".png", "image/png"},
        {".ico", "image/x-icon"},              {".txt", "text/plain; charset=utf-8"},
        {".woff2", "font/woff2"},              {".map", "application/json"},
    };
    const char *dot = strrchr(name, '.');

    for (size_t i = 0; dot != NULL && i < sizeof(types) / sizeof(types[0]); i++) {
        if (strcmp(dot, types[i].ext) == 0)
            return types[i].type;
    }
    return "application/octet-stream";
}

/* Rejects what no asset path contains: "..", backslashes, control bytes.
 * libmicrohttpd has already decoded %XX, so "%2e%2e" arrives as "..". */
static bool path_is_plain(const char *path)
{
    if (path[0] != '/')
        return false;
    for (const char *p = path; *p; p++) {
        if ((unsigned char)*p < 0x20 || *p == '\\' || *p == 0x7f)
            return false;
        if (p[0] == '/' && p[1] == '.')
            return false; /* "..", "./" and hidden files */
    }
    return true;
}

static enum www_result read_from_disk(const char *www_dir, const char *path,
                                      struct www_file *out)
{
    char root[PATH_MAX];
    char joined[PATH_MAX];
    char real[PATH_MAX];
    struct stat st;
    FILE *f;
    size_t root_len;
    unsigned char *data;

    if (realpath(www_dir, root) == NULL)
        return WWW_NOT_FOUND;
    if (snprintf(joined, sizeof(joined), "%s%s", root, path) >= (int)sizeof(joined))
        return WWW_BAD_PATH;
    if (realpath(joined, real) == NULL)
        return WWW_NOT_FOUND;

    /* A symbolic link may not lead out of the folder either. */
    root_len = strlen(root);
    if (strncmp(real, root, root_len) != 0 || real[root_len] != '/')
        return WWW_NOT_FOUND;
    if (stat(real, &st) != 0 || !S_ISREG(st.st_mode) || st.st_size > WWW_MAX_FILE_BYTES)
        return WWW_NOT_FOUND;

    f = fopen(real, "rb");
    if (f == NULL)
        return WWW_NOT_FOUND;
    data = malloc((size_t)st.st_size + 1);
    if (data == NULL || fread(data, 1, (size_t)st.st_size, f) != (size_t)st.st_size) {
        free(data);
        fclose(f);
        return WWW_NOT_FOUND;
    }
    fclose(f);
    out->content_type = www_content_type(real);
    out->data = data;
    out->len = (size_t)st.st_size;
    out->owned = data;
    return WWW_FOUND;
}

enum www_result www_lookup(const char *www_dir, const char *path, struct www_file *out)
{
    const struct asset *asset;

    memset(out, 0, sizeof(*out));
    if (!path_is_plain(path))
        return WWW_BAD_PATH;
    if (strcmp(path, "/") == 0)
        path = "/index.html";

    if (www_dir != NULL && www_dir[0] != '\0')
        return read_from_disk(www_dir, path, out);

    asset = assets_find(path);
    if (asset == NULL)
        return WWW_NOT_FOUND;
    out->content_type = asset->content_type;
    out->data = asset->data;
    out->len = asset->len;
    return WWW_FOUND;
}
