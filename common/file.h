/*
 * file: a whole small file into memory, bounded. Every configuration, key,
 * JSON and text file we read goes through mc_file_read, so each has the same
 * limits and the same messages; the parsers behind it take (buf, len) and never
 * see a path.
 */
#ifndef MC_FILE_H
#define MC_FILE_H

#include <stddef.h>

#include "error.h"

// The whole of `path` in *buf (malloc'd; the caller frees it) and its length in
// *len. A NUL follows the last byte (buf[len] == 0) so text callers may use it as
// a string; binary callers use len. Reads to the end, so pipes and /proc files
// work too; a directory is refused. On failure *buf and *len are untouched and err
// says, starting with the path:
//   MC_ERR_IO      "cannot open: <why>", "not a readable regular file (a directory)",
//                  "read failed: <why>"
//   MC_ERR_FORMAT  "the file is larger than <max_bytes> bytes"
//   MC_ERR_NOMEM   "out of memory"
mc_err_t mc_file_read(const char *path, size_t max_bytes, char **buf, size_t *len, char *err);

#endif
