/*
 * jsonschema: a JSON Schema compiled to a byte-level pushdown automaton that
 * knows, after any prefix of a document, which next bytes keep it on the way
 * to a document the schema accepts (constrained decoding: constraint.h).
 *
 * Supported keywords: type (object, array, string, number, integer, boolean,
 * null, or a list of them), enum, const, properties, required,
 * additionalProperties (false, true or a schema), items, anyOf, minItems,
 * maxItems, minLength, maxLength; the annotations title, description,
 * $schema, $id, default, examples and $comment are ignored. Any other
 * keyword is refused at compile time with a message naming it (the API
 * answers 400).
 *
 * The documents the automaton lets through are a strict subset of JSON, so
 * that generation is exact and always ends:
 * - no whitespace before the value or after it; inside objects and arrays
 *   a run of at most MC_JS_MAX_WS bytes of space, tab or newline wherever
 *   JSON allows whitespace;
 * - strings: any UTF-8 (validated: no overlong forms, no surrogates, nothing
 *   above U+10FFFF), the escapes \" \\ \/ \b \f \n \r \t and \uXXXX outside
 *   the surrogate range; minLength/maxLength count code points;
 * - numbers: at most MC_JS_MAX_DIGITS digits before the point and as many
 *   after it, at most 2 exponent digits (so every number fits a double); integers have neither point nor
 *   exponent;
 * - enum and const values are written exactly as cJSON prints them compactly;
 * - object keys are the properties' names, once each, in any order
 *   (additional keys, when allowed, have no backslash escapes); an object
 *   closes only when its required properties are there.
 * Nesting is limited to MC_JS_MAX_DEPTH (values with no schema, such as the
 * members of a {"type":"object"}, stop opening containers at that depth).
 *
 * anyOf is followed as a set of alternatives (at most MC_JS_MAX_ALT live at
 * once; identical ones are merged). The state is a plain value: copying
 * its first mc_jsm_state_size() bytes copies it.
 */
#ifndef MC_JSONSCHEMA_H
#define MC_JSONSCHEMA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "error.h"

#define MC_JS_MAX_DEPTH 20   // nested frames (the root's included)
#define MC_JS_MAX_ALT 8      // live anyOf alternatives
#define MC_JS_MAX_WS 8       // bytes of one whitespace run
#define MC_JS_MAX_DIGITS 16  // digits of a number's integer or fraction part
#define MC_JS_MAX_PROPS 64   // properties of one object schema
#define MC_JS_MAX_ENUM 64    // values of one enum
#define MC_JS_MAX_NODES 4096 // compiled schema nodes
#define MC_JS_MAX_SCHEMA (1u << 20) // bytes of schema text

typedef struct mc_jschema mc_jschema_t;

// Compile the schema text json[0..len). NULL on failure with err (MC_ERR_FORMAT:
// not JSON; MC_ERR_UNSUPPORTED: a keyword or construct not supported, named
// in the message; MC_ERR_ARG: a schema no document satisfies or beyond the
// limits above; MC_ERR_NOMEM).
mc_jschema_t *mc_jschema_compile(const char *json, size_t len, char *err);

// Any JSON object (response_format json_object).
mc_jschema_t *mc_jschema_any_object(char *err);

void mc_jschema_destroy(mc_jschema_t **s);

// --- the automaton ------------------------------------------------------------------

typedef struct {
    uint16_t node;  // schema node
    uint8_t kind;   // frame kind (jsonschema.c)
    uint8_t phase;
    uint8_t ws;     // whitespace run so far
    uint8_t u8left; // continuation bytes still due
    uint8_t u8lo, u8hi; // the next continuation byte's range
    uint16_t cur;   // object: the property whose value comes next
    uint16_t pos;   // literal or key: bytes matched
    uint32_t count; // string: code points; array: items; number: digits; root: prefix/suffix bytes
    uint64_t bits;  // object: properties seen; literal/key: candidates alive
} mc_jsm_frame_t;

typedef struct {
    uint32_t depth;
    mc_jsm_frame_t f[MC_JS_MAX_DEPTH];
} mc_jsm_stack_t;

typedef struct {
    uint32_t n; // live alternatives; 0: dead
    mc_jsm_stack_t a[MC_JS_MAX_ALT];
} mc_jsm_state_t;

// A document: literal prefix bytes, a value the schema accepts, literal
// suffix bytes. The matcher borrows all three.
typedef struct {
    const mc_jschema_t *schema;
    const uint8_t *prefix;
    size_t n_prefix;
    const uint8_t *suffix;
    size_t n_suffix;
} mc_jsm_t;

// The state before the first byte.
void mc_jsm_start(const mc_jsm_t *m, mc_jsm_state_t *st);

// out = in after byte c; false (out dead) when c cannot come next. in and
// out must not overlap.
bool mc_jsm_step(const mc_jsm_t *m, const mc_jsm_state_t *in, uint8_t c, mc_jsm_state_t *out);

// The document may end here.
bool mc_jsm_accepting(const mc_jsm_t *m, const mc_jsm_state_t *st);

// The document has ended: no byte may follow (every alternative is past its suffix).
bool mc_jsm_done(const mc_jsm_state_t *st);

// Inside a string's text (one alternative, not in an escape): the UTF-8
// state (tokentrie.h's numbering: 0 at a character boundary, 1..7 inside a
// character) and in *room how many more characters it may take (UINT32_MAX:
// no bound); -1 when st is not there. From there, text without '"', '\\'
// or control bytes leaves the state as it is, but for the UTF-8 state and,
// under a bound, the count.
int mc_jsm_string_state(const mc_jsm_t *m, const mc_jsm_state_t *st, uint32_t *room);

// Copy in to out (only the live part).
void mc_jsm_copy(mc_jsm_state_t *out, const mc_jsm_state_t *in);

// The live part of st as bytes (for hashing and comparing states): writes at
// most sizeof(mc_jsm_state_t) bytes to buf, returns the count.
size_t mc_jsm_serialize(const mc_jsm_state_t *st, uint8_t *buf);

#endif
