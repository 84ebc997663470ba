/*
 * keys: CURVE key pairs for the coordinator-node traffic (ZeroMQ's CURVE
 * security: encryption and authentication with Curve25519 keys).
 *
 * A key is 32 bytes, written as 40 characters of Z85 text. A key pair is
 * kept as two files made by moe-keygen: NAME.key holds the secret key
 * (readable by its owner only) and NAME.pub the public key; the public key
 * is derived from the secret one, so a node or coordinator only needs its
 * .key file. An authorized-keys file lists the public keys a node accepts
 * coordinators with, one per line ('#' starts a comment).
 *
 * Files are untrusted input like any other: parsers take a buffer
 * (parse(buf, len)), check every line, and report file:line on errors.
 */
#ifndef MC_KEYS_H
#define MC_KEYS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "error.h"

#define MC_KEY_TEXT 40 // Z85 characters of a key
#define MC_KEY_BYTES 32

typedef struct {
    char pub[MC_KEY_TEXT + 1];
    char sec[MC_KEY_TEXT + 1];
} mc_keypair_t;

// False when this libzmq was built without CURVE.
bool mc_keys_available(void);

// A fresh pair.
mc_err_t mc_keys_generate(mc_keypair_t *kp, char *err);

// dir/name.key (mode 0600, the secret key) and dir/name.pub; an existing
// file is not overwritten (MC_ERR_IO).
mc_err_t mc_keys_write(const char *dir, const char *name, const mc_keypair_t *kp, char *err);

// The key of text[0..len): 40 Z85 characters, surrounding blanks ignored.
mc_err_t mc_keys_parse(const char *text, size_t len, char out[MC_KEY_TEXT + 1], char *err);

// A secret key file (buf: its contents; what: its name for messages): the
// first line that is not blank or a comment. The public key is derived.
mc_err_t mc_keys_parse_secret(const char *buf, size_t len, const char *what, mc_keypair_t *kp, char *err);
mc_err_t mc_keys_load_secret(const char *path, mc_keypair_t *kp, char *err);

// Public keys, as binary keys (what ZeroMQ's authentication hands over).
typedef struct {
    uint8_t (*keys)[MC_KEY_BYTES];
    size_t n;
} mc_keyring_t;

mc_err_t mc_keyring_parse(const char *buf, size_t len, const char *what, mc_keyring_t *out, char *err);
mc_err_t mc_keyring_load(const char *path, mc_keyring_t *out, char *err);
bool mc_keyring_has(const mc_keyring_t *r, const uint8_t key[MC_KEY_BYTES]);
void mc_keyring_free(mc_keyring_t *r);

#endif
