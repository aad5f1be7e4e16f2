/*
 * The web assets: the dashboard page, its scripts and styles. They are
 * compiled into the binary; with --www DIR they are read from disk instead,
 * for development. Every path is resolved and must stay inside DIR.
 */
#ifndef TIDEGATE_WWW_H
#define TIDEGATE_WWW_H

#include <stddef.h>

struct www_file {
    const char *content_type;
    const unsigned char *data;
    size_t len;
    void *owned; /* non-NULL when read from disk: free() after sending */
};

enum www_result {
    WWW_FOUND = 0,
    WWW_NOT_FOUND = 1,
    WWW_BAD_PATH = 2, /* traversal, encoded dots, NUL: rejected with 400 */
};

/* Looks up the asset at URL path @path ("/" is "/index.html"). @www_dir is
 * NULL or empty for the built-in assets. */
enum www_result www_lookup(const char *www_dir, const char *path, struct www_file *out);

/* Returns the content type for a file name, by its extension. */
const char *www_content_type(const char *name);

#endif
