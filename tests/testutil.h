/*
 * testutil: helpers shared by the test executables (fixture discovery,
 * temporary paths, small file readers).
 *
 * Fixtures are found through $MC_FIXTURES, else the folder CMake saw beside
 * the checkout (MC_DEFAULT_FIXTURES). With MC_REQUIRE_FIXTURES=1 a missing
 * folder fails the test instead of skipping it.
 */
#ifndef MC_TESTUTIL_H
#define MC_TESTUTIL_H

#include <stddef.h>
#include <stdint.h>

// Full path of a fixture file into buf, or NULL when the fixtures folder is
// absent (caller then skips; this fails the test itself when fixtures are
// required). name may contain sub-folders ("golden/tiny-f32/p0_fox.ids.txt").
const char *mc_test_fixture(const char *name, char *buf, size_t cap);

// Read a whole file into a malloc'd buffer (NUL-terminated, *len excludes the
// NUL). NULL when it cannot be read.
uint8_t *mc_test_read_file(const char *path, size_t *len);

// A copy of the MXFP4 model src at dst with the E8M0 scale of block 0 of
// every expert of layer 1's up tensor set to 0xFF (NaN): whichever expert a
// token picks there is damaged. Fails the test on any error.
void mc_test_poison_mxfp4(const char *src, const char *dst);

// A fresh temporary directory for this test process (created once per call).
const char *mc_test_tmpdir(char *buf, size_t cap);

// Remove a directory tree made by mc_test_tmpdir (best effort).
void mc_test_rmtree(const char *path);

// Path of one of this build's programs ("moe-expert") into buf: in
// $MC_BIN_DIR (ctest sets it to the build folder), else the current folder.
const char *mc_test_bin(const char *name, char *buf, size_t cap);

// A minimal HTTP/1.1 client for the server tests: one request per
// connection (Connection: close), chunked bodies decoded. Header names in
// `headers` are lower-cased.
typedef struct {
    int status;
    char *headers; // the status line and headers (owns the buffer)
    char *body;    // NUL-terminated, body_len bytes
    size_t body_len;
} mc_test_http_t;

// GET (body NULL) or POST (a JSON body) to 127.0.0.1:port; headers: extra
// "Name: value\r\n" lines or NULL. 0, or -1 when it could not talk.
int mc_test_http(uint16_t port, const char *method, const char *path, const char *headers, const char *body,
                 mc_test_http_t *r);
void mc_test_http_free(mc_test_http_t *r);

// The same in steps, for tests that leave in the middle.
int mc_test_http_connect(uint16_t port);
int mc_test_http_send(int fd, const char *method, const char *path, const char *headers, const char *body,
                      size_t body_len);
int mc_test_http_read(int fd, mc_test_http_t *r);

#endif
