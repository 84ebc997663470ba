/*
 * cors: which web pages on other origins may call the API from a browser
 * (`--cors-origin`), and the headers that tell the browser so.
 *
 * Off by default: a page served elsewhere cannot read this server's answers
 * (the browser refuses them) unless its origin is listed. The list is "*"
 * (any origin) or comma-separated origins as browsers send them
 * ("https://app.example.com", "http://localhost:5173": scheme, host, port;
 * no path), compared without regard to case. For a listed origin every
 * answer carries Access-Control-Allow-Origin (the origin itself, or "*")
 * and Vary: Origin; a preflight (OPTIONS) learns the methods of the path,
 * that Authorization and Content-Type (and the other headers it asks for)
 * may be sent, and may cache that for 10 minutes. An origin not listed gets
 * none of these, so its browser refuses the answer.
 */
#ifndef MC_CORS_H
#define MC_CORS_H

#include <stdbool.h>
#include <stddef.h>

#include "error.h"

#define MC_CORS_MAX_AGE 600 // seconds a browser may cache a preflight's answer

typedef struct mc_cors mc_cors_t;

// From the flag's value; NULL with err for a malformed list (an entry that
// is not "*" nor scheme://host[:port]).
mc_cors_t *mc_cors_new(const char *spec, char *err);
void mc_cors_destroy(mc_cors_t **c);

// The Access-Control-Allow-Origin value for a request's Origin header
// (NULL: no Origin, or not allowed: no CORS headers). c may be NULL (off).
const char *mc_cors_allow(const mc_cors_t *c, const char *origin);

// Access-Control-Allow-Headers for a preflight that asked for `requested`
// (Access-Control-Request-Headers, may be NULL): Authorization and
// Content-Type, and the requested names when they are plain header names.
// Writes at most cap bytes (always NUL-terminated).
void mc_cors_allow_headers(const char *requested, char *out, size_t cap);

#endif
