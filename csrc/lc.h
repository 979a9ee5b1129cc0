/* lc.h - internal interface shared by the C core's files. Nothing here is exported:
 * the library is built with -fvisibility=hidden and only luaopen_leadconnector_core is public. */
#ifndef LC_H
#define LC_H

#include <stddef.h>
#include <string.h>
#include <time.h>
#include "compat.h"

#define LC_VERSION "0.1.0"

#define LC_MESSAGE_MT "leadconnector.Message"
#define LC_CONVERSATION_MT "leadconnector.Conversation"
#define LC_ERROR_MT "leadconnector.Error"
#define LC_SESSION_MT "leadconnector.Session"

/* What a call expects back; chooses how a 2xx answer is decoded. */
/* The names (lc_op_names, error.c) are what session:call and core.finish take; the Lua layer maps the catalogue's
 * `answer` to them. raw: the decoded JSON as cjson made it; bytes: { body = ..., content_type = ... }. */
enum lc_op {
  LC_OP_SEND = 0, LC_OP_STATUS, LC_OP_MESSAGE, LC_OP_CONVERSATION, LC_OP_RAW,
  LC_OP_TABLE, LC_OP_TABLE_CONVERSATION, LC_OP_MESSAGES_PAGE, LC_OP_CONVERSATIONS_PAGE, LC_OP_EXPORT_PAGE, LC_OP_BYTES,
  LC_OP__COUNT
};
extern const char *const lc_op_names[]; /* NULL-terminated, in enum order */

/* Values taken from one answer's headers. */
typedef struct lc_ratelimit {
  double max, remaining, interval_ms, daily_limit, daily_remaining;
  unsigned seen; /* bit per field above, in that order */
} lc_ratelimit;

typedef struct lc_answer {
  long status;
  const char *body;
  size_t body_len;
  double retry_after; /* seconds; < 0 when absent */
  const char *trace_id; /* from a header, may be NULL */
  const char *secret;   /* the token: redacted wherever an error would quote the answer (may be NULL) */
  size_t secret_len;
  const char *content_type; /* the answer's Content-Type (may be NULL); for LC_OP_BYTES */
  size_t content_type_len;
} lc_answer;

/* A growable byte buffer owned by a userdata on the Lua stack: a Lua error while it is in use cannot leak it. */
typedef struct lc_buf {
  char *p;
  size_t n, cap;
} lc_buf;
lc_buf *lc_buf_new(lua_State *L); /* pushes the owning userdata */
void lc_buf_add(lua_State *L, lc_buf *b, const char *s, size_t n);
#define lc_buf_adds(L, b, s) lc_buf_add((L), (b), (s), strlen(s))
void lc_buf_addc(lua_State *L, lc_buf *b, char c);
void lc_buf_release(lc_buf *b);

/* A bounded one-line text (tostring output): appends past the end are cut, never overflow. */
typedef struct lc_line {
  char s[1024];
  size_t n;
} lc_line;
static inline void lc_line_add(lc_line *l, const char *s, size_t n) {
  size_t room = sizeof l->s - 1 - l->n;
  if (n > room) n = room;
  memcpy(l->s + l->n, s, n);
  l->n += n;
  l->s[l->n] = '\0';
}
#define lc_line_adds(l, s) lc_line_add((l), (s), strlen(s))

/* The one clock of deadlines, backoff, lock waits and the process limiter's store (core.now): monotonic seconds. */
static inline double lc_monotonic(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* json.c */
void lc_json_init(lua_State *L);                 /* loads cjson, keeps a private instance */
int lc_json_decode(lua_State *L, const char *s, size_t len); /* pushes value, or returns 0 and pushes message */
void lc_json_normalize(lua_State *L, int idx);   /* drops nulls from maps, integral floats become integers */
void lc_json_add_string(lua_State *L, lc_buf *b, int idx); /* appends a JSON string literal */
int lc_json_add_number(lua_State *L, lc_buf *b, int idx);  /* 0 when not finite */
int lc_json_add_value(lua_State *L, lc_buf *b, int idx);  /* any value (0 when JSON cannot hold it) */
int lc_is_null(lua_State *L, int idx);
void lc_deepcopy(lua_State *L, int idx, int depth); /* pushes a plain copy of the table at idx */
void lc_push_plain(lua_State *L, int idx);         /* pushes a decoded value as callers see it */

/* error.c */
void lc_error_init(lua_State *L);
/* Pushes a new error object {kind=..., message=...}; other fields are set by the caller. */
void lc_push_error(lua_State *L, const char *kind, const char *fmt, ...);
void lc_seterrfield_str(lua_State *L, const char *k, const char *v);
void lc_seterrfield_num(lua_State *L, const char *k, double v);
void lc_seterrfield_bool(lua_State *L, const char *k, int v);
const char *lc_kind_for_status(long status);
/* Turns an answer into the call's result: pushes the value and returns 1, or pushes nil + error and returns 2. */
int lc_finish(lua_State *L, enum lc_op op, const lc_answer *a);
/* Token redaction (error.c): the token raw or JSON-escaped anywhere in s; a trace id redacted, then cut. */
#define LC_TRACE_ID_MAX 95
/* The most bytes of status line and headers an answer may have (both transports; ngx.lua says the same). */
#define LC_MAX_HEADER_BYTES 65536
int lc_has_secret(const char *s, size_t n, const char *secret, size_t slen);
void lc_redact_copy(char *dst, size_t cap, const char *src, size_t n, const char *secret, size_t slen);

/* object.c */
void lc_object_init(lua_State *L);
void lc_push_object(lua_State *L, const char *mt, int tidx); /* wraps the table at tidx */
int lc_pairs_copy(lua_State *L); /* __pairs of a checked userdata at 1: walks a copy of its user value */
void lc_add_field(lua_State *L, lc_line *b, int t, const char *k, size_t max, int *first); /* `k=value` for tostring */

/* validate.c */
int lc_check_token(const char *s, size_t len, char *why, size_t whylen);
void lc_validate_init(lua_State *L, int module); /* core.build_send / build_status, the schema metatable */

/* h1.c: an HTTP/1.x answer reader, fed bytes as they come (see h1.c for its rules). */
enum { LC_H1_STATUS, LC_H1_HEADER, LC_H1_LENGTH, LC_H1_CHUNK_SIZE, LC_H1_CHUNK_DATA, LC_H1_CHUNK_END, LC_H1_TRAILER,
       LC_H1_TO_CLOSE };                               /* states while reading */
enum { LC_H1_MORE = 100, LC_H1_DONE, LC_H1_FAILED };   /* lc_h1_feed / lc_h1_eof results (and the last states) */
enum { LC_H1_MALFORMED = 1, LC_H1_TOO_LONG, LC_H1_CUT, LC_H1_REFUSED, LC_H1_NOMEM }; /* why it failed */
typedef struct lc_h1 {
  int state, error;
  const char *why;        /* LC_H1_MALFORMED: what was wrong (a static string) */
  int status, http10, head_done, chunked, has_length, close, keep_alive, head_only, capped, keep, got_any;
  unsigned long long length, left;
  size_t head_bytes, trailer_bytes, body_bytes, max_size;
  char *line;             /* a line that came in pieces (owned: lc_h1_free) */
  size_t line_len, line_cap;
  void *ud;               /* the callbacks' argument; each returns 0 to refuse the answer (LC_H1_REFUSED) */
  int (*on_status)(void *ud, int status);                 /* a status line, interim ones included */
  int (*on_field)(void *ud, const char *line, size_t n);  /* a header line of a head, without its line end */
  int (*on_body)(void *ud, const char *data, size_t n);   /* body bytes, within max_size */
} lc_h1;
void lc_h1_start(lc_h1 *p, int head_only, size_t max_size); /* a new answer; keeps the buffer, callbacks */
int lc_h1_feed(lc_h1 *p, const char *data, size_t len, size_t *used); /* LC_H1_MORE, _DONE or _FAILED */
int lc_h1_eof(lc_h1 *p); /* the connection closed: LC_H1_DONE for a body read to the end, else LC_H1_FAILED */
void lc_h1_free(lc_h1 *p);

/* http.c */
void lc_http_init(lua_State *L);

/* Module functions registered by each file (NULL-terminated lists, merged in core.c). */
extern const luaL_Reg lc_validate_funcs[];
extern const luaL_Reg lc_http_funcs[];
extern const luaL_Reg lc_fs_funcs[]; /* fs.c */
void lc_fs_init(lua_State *L);
extern const luaL_Reg lc_error_funcs[];
extern const luaL_Reg lc_redis_funcs[]; /* redis.c */
void lc_redis_init(lua_State *L);
extern const luaL_Reg lc_object_funcs[];
extern const luaL_Reg lc_lstore_funcs[]; /* lstore.c */
void lc_lstore_init(lua_State *L);
extern const luaL_Reg lc_webhook_funcs[]; /* webhook.c */
void lc_webhook_init(lua_State *L);

#endif
