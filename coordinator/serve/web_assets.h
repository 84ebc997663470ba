/*
 * web_assets: the files of coordinator/serve/web (the chat page and cluster
 * dashboard), compiled into moe-coordinator at build time by
 * coordinator/serve/embed.cmake, so the server needs nothing beside the binary.
 */
#ifndef MC_WEB_ASSETS_H
#define MC_WEB_ASSETS_H

#include <stddef.h>

typedef struct {
    const char *path;          // "/index.html"
    const unsigned char *data; // len bytes (and a NUL after them)
    size_t len;
} mc_web_asset_t;

extern const mc_web_asset_t mc_web_assets[];
extern const size_t mc_web_n_assets;

#endif
