/* error.c - error objects and the mapping from an HTTP answer to a result.
 *
 * An error is a plain table with the metatable leadconnector.Error, so the Lua layer can add `method`, `path` and
 * `attempts` after the fact; tostring(err) gives one line. Fields: kind, status, message, body, retry_after,
 * trace_id, method, path, attempts, request_sent, curl_code. No field ever holds the token: the token only lives
 * in the session's header list (http.c). */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "lc.h"

#define RAW_BODY_KEEP 4096

void lc_push_error(lua_State *L, const char *kind, const char *fmt, ...) {
  lua_createtable(L, 0, 8);
  lua_pushstring(L, kind);
  lua_setfield(L, -2, "kind");
  if (fmt != NULL) {
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    lua_pushstring(L, msg);
    lua_setfield(L, -2, "message");
  }
  luaL_getmetatable(L, LC_ERROR_MT);
  lua_setmetatable(L, -2);
}

void lc_seterrfield_str(lua_State *L, const char *k, const char *v) {
  lua_pushstring(L, v);
  lua_setfield(L, -2, k);
}
void lc_seterrfield_num(lua_State *L, const char *k, double v) {
  /* Range first: casting NaN, inf or a value past 2^63 to long long is undefined behaviour. */
  if (v > -9.2e18 && v < 9.2e18 && v == (double)(long long)v)
    lua_pushinteger(L, (lua_Integer)v);
  else
    lua_pushnumber(L, v);
  lua_setfield(L, -2, k);
}
void lc_seterrfield_bool(lua_State *L, const char *k, int v) {
  lua_pushboolean(L, v);
  lua_setfield(L, -2, k);
}

const char *lc_kind_for_status(long status) {
  if (status == 401 || status == 403) return "auth";
  if (status == 404) return "not_found";
  if (status == 429) return "rate_limited";
  if (status >= 500 && status <= 599) return "server";
  return "http";
}

/* err.message from the API's own words: a string, or an array of strings (class-validator's 422). */
static void take_api_message(lua_State *L, int body, int err) {
  lua_getfield(L, body, "message");
  if (lua_type(L, -1) == LUA_TSTRING) {
    lua_setfield(L, err, "message");
    return;
  }
  if (lua_type(L, -1) == LUA_TTABLE) {
    int arr = lua_gettop(L), pieces = 0;
    size_t i, n = lc_rawlen(L, arr);
    if (n > 20) n = 20;
    luaL_checkstack(L, 2 * (int)n + 2, NULL);
    for (i = 1; i <= n; i++) {
      lua_rawgeti(L, arr, (int)i);
      if (lua_type(L, -1) != LUA_TSTRING) {
        lua_pop(L, 1);
        continue;
      }
      if (pieces > 0) {
        lua_pushliteral(L, "; ");
        lua_insert(L, -2);
        pieces++;
      }
      pieces++;
    }
    if (pieces > 0) {
      lua_concat(L, pieces);
      lua_setfield(L, err, "message");
    }
  }
  lua_pop(L, 1);
}

static const char *find_secret(const char *s, size_t n, const char *secret, size_t slen, size_t *span);
static void push_redacted(lua_State *L, const char *s, size_t n, const char *secret, size_t slen);

static void set_common(lua_State *L, const lc_answer *a) {
  lc_seterrfield_num(L, "status", (double)a->status);
  if (a->retry_after >= 0) lc_seterrfield_num(L, "retry_after", a->retry_after);
  if (a->trace_id != NULL && a->trace_id[0]) {
    /* A header that echoes the token: redacted first, then cut (the cut could keep part of the token). */
    char id[LC_TRACE_ID_MAX + 1];
    lc_redact_copy(id, sizeof id, a->trace_id, strlen(a->trace_id), a->secret, a->secret_len);
    lc_seterrfield_str(L, "trace_id", id);
  }
  lc_seterrfield_bool(L, "request_sent", 1);
}

static int hexval(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

/* How many bytes at s (n available) spell the character c: c itself, or a JSON escape of it (\/ for '/', \uXXXX
 * for any character, \\ and \" for themselves); 0 when they do not. An answer's JSON may escape the token it
 * echoes (an OAuth token is base64 with '/'), and what the decoder then makes of it is the token again. */
static size_t spells(const char *s, size_t n, unsigned char c) {
  if (n == 0) return 0;
  if ((unsigned char)s[0] == c) return 1;
  if (s[0] != '\\' || n < 2) return 0;
  if ((unsigned char)s[1] == c && (c == '/' || c == '\\' || c == '"')) return 2;
  if (s[1] == 'u' && n >= 6) {
    int i, v = 0;
    for (i = 2; i < 6; i++) {
      int h = hexval(s[i]);
      if (h < 0) return 0;
      v = v * 16 + h;
    }
    return v == c ? 6 : 0;
  }
  return 0;
}

/* The first place in s where the secret is spelt, raw or JSON-escaped; *span: how many bytes of s spell it. */
static const char *find_secret(const char *s, size_t n, const char *secret, size_t slen, size_t *span) {
  size_t p;
  if (secret == NULL || slen == 0) return NULL;
  for (p = 0; p < n; p++) {
    size_t q = p, i = 0, k;
    if (s[p] != secret[0] && s[p] != '\\') continue;
    while (i < slen && (k = spells(s + q, n - q, (unsigned char)secret[i])) > 0) {
      q += k;
      i++;
    }
    if (i == slen) {
      *span = q - p;
      return s + p;
    }
  }
  return NULL;
}

int lc_has_secret(const char *s, size_t n, const char *secret, size_t slen) {
  size_t span;
  return find_secret(s, n, secret, slen, &span) != NULL;
}

/* Pushes s with every occurrence of the secret replaced: a server or proxy that echoes the token back in an
 * error page must not put it into err.message or err.body. */
static void push_redacted(lua_State *L, const char *s, size_t n, const char *secret, size_t slen) {
  luaL_Buffer b;
  const char *p;
  size_t span;
  luaL_buffinit(L, &b);
  while ((p = find_secret(s, n, secret, slen, &span)) != NULL) {
    luaL_addlstring(&b, s, (size_t)(p - s));
    luaL_addstring(&b, "[REDACTED]");
    n -= (size_t)(p - s) + span;
    s = p + span;
  }
  luaL_addlstring(&b, s, n);
  luaL_pushresult(&b);
}

/* A header value made fit for err.trace_id into dst (cap bytes with its NUL): every spelling of the secret
 * replaced first, then control characters shown as '?', then cut. In that order: cut first, a long token would
 * leave its first bytes behind. */
void lc_redact_copy(char *dst, size_t cap, const char *src, size_t n, const char *secret, size_t slen) {
  static const char mark[] = "[REDACTED]";
  size_t o = 0, span;
  const char *p;
  if (cap == 0) return;
  while (o + 1 < cap && n > 0) {
    p = find_secret(src, n, secret, slen, &span);
    {
      size_t lit = p ? (size_t)(p - src) : n, i;
      for (i = 0; i < lit && o + 1 < cap; i++) {
        unsigned char c = (unsigned char)src[i];
        dst[o++] = (c < 0x20 || c >= 0x7f) ? '?' : (char)c; /* as shown: printable ASCII */
      }
      if (p == NULL) break;
      for (i = 0; mark[i] && o + 1 < cap; i++) dst[o++] = mark[i];
      n -= lit + span;
      src = p + span;
    }
  }
  dst[o] = '\0';
}

static void keep_raw_body(lua_State *L, const lc_answer *a) {
  size_t n = a->body_len > RAW_BODY_KEEP ? RAW_BODY_KEEP : a->body_len;
  if (n == 0) return;
  if (lc_has_secret(a->body, a->body_len, a->secret, a->secret_len)) {
    push_redacted(L, a->body, a->body_len, a->secret, a->secret_len);
    if (lc_rawlen(L, -1) > RAW_BODY_KEEP) {
      lua_pushlstring(L, lua_tostring(L, -1), RAW_BODY_KEEP);
      lua_remove(L, -2);
    }
  } else {
    lua_pushlstring(L, a->body, n);
  }
  lua_setfield(L, -2, "body");
}

static int decode_error(lua_State *L, const lc_answer *a, const char *why) {
  lua_pushnil(L);
  lc_push_error(L, "decode", "%s", why);
  set_common(L, a);
  return 2;
}

/* Unwraps {"message": {...}} / {"conversation": {...}} answers that carry the object one level down. */
static void unwrap(lua_State *L, int t, const char *key) {
  lua_getfield(L, t, "id");
  if (lua_isnil(L, -1)) {
    lua_pop(L, 1);
    lua_getfield(L, t, key);
    if (lua_type(L, -1) == LUA_TTABLE) {
      lua_getfield(L, -1, "id");
      if (lua_type(L, -1) == LUA_TSTRING) {
        lua_pop(L, 1);
        lua_replace(L, t);
        return;
      }
      lua_pop(L, 1);
    }
  }
  lua_pop(L, 1);
}

const char *const lc_op_names[] = {"send",  "status",        "message",          "conversation",
                                   "raw",   "table",         "table_conversation", "messages_page",
                                   "conversations_page", "export_page", "bytes", NULL};

/* LC_OP_BYTES: { body = the answer's bytes, content_type = its Content-Type } (a recording, a transcript). */
static int push_bytes(lua_State *L, const lc_answer *a) {
  lua_createtable(L, 0, 2);
  lua_pushlstring(L, a->body, a->body_len);
  lua_setfield(L, -2, "body");
  if (a->content_type && a->content_type_len) {
    lua_pushlstring(L, a->content_type, a->content_type_len);
    lua_setfield(L, -2, "content_type");
  }
  return 1;
}

/* The page answers: the list under `messages` / `conversations` becomes a list of Message / Conversation userdata
 * (entries without an id stay plain tables), the other fields plain values. get_messages' live answer nests the page
 * one level down ({ messages = { lastMessageId, nextPage, messages = [...] } }, vendor docs issue #54): it is
 * returned flat, like the documented shape. Replaces the table at t with the page. */
static int finish_page(lua_State *L, enum lc_op op, const lc_answer *a, int t) {
  const char *key = op == LC_OP_CONVERSATIONS_PAGE ? "conversations" : "messages";
  const char *mt = op == LC_OP_CONVERSATIONS_PAGE ? LC_CONVERSATION_MT : LC_MESSAGE_MT;
  int list, page;
  size_t n, i;
  if (op == LC_OP_MESSAGES_PAGE) {
    lua_getfield(L, t, "messages");
    if (lua_type(L, -1) == LUA_TTABLE) {
      lua_getfield(L, -1, "messages");
      if (lua_type(L, -1) == LUA_TTABLE) { /* nested: the inner table is the page */
        lua_pop(L, 1);
        lua_replace(L, t);
      } else {
        lua_pop(L, 2);
      }
    } else {
      lua_pop(L, 1);
    }
  }
  lua_getfield(L, t, key);
  list = lua_gettop(L);
  if (lua_isnil(L, list) || lc_is_null(L, list)) { /* no list at all: an empty page */
    lua_pop(L, 1);
    lua_newtable(L);
    list = lua_gettop(L);
  }
  if (lua_type(L, list) != LUA_TTABLE) {
    lua_settop(L, t);
    decode_error(L, a, op == LC_OP_CONVERSATIONS_PAGE ? "answer is not a page of conversations"
                                                      : "answer is not a page of messages");
    lua_pushvalue(L, t);
    lua_setfield(L, -2, "body");
    lua_remove(L, t);
    return 2;
  }
  lua_pushnil(L);
  lua_setfield(L, t, key);
  lc_json_normalize(L, t); /* the page's own fields (the list is out of the way) */
  n = lc_rawlen(L, list);
  lua_createtable(L, (int)n, 0);
  page = lua_gettop(L);
  for (i = 1; i <= n; i++) {
    lua_rawgeti(L, list, (int)i);
    if (lua_type(L, -1) == LUA_TTABLE) {
      lua_getfield(L, -1, "id");
      if (lua_type(L, -1) == LUA_TSTRING) {
        lua_pop(L, 1);
        lc_push_object(L, mt, -1);
        lua_remove(L, -2);
      } else {
        lua_pop(L, 1);
        lc_json_normalize(L, -1);
      }
    }
    lua_rawseti(L, page, (int)i);
  }
  lua_setfield(L, t, key);
  lua_pop(L, 1); /* the list */
  return 1;
}

static int finish(lua_State *L, enum lc_op op, const lc_answer *a) {
  int top = lua_gettop(L);
  if (a->status >= 200 && a->status <= 299) {
    int t;
    if (op == LC_OP_BYTES) return push_bytes(L, a);
    if (a->body_len == 0) {
      if (op == LC_OP_TABLE || op == LC_OP_TABLE_CONVERSATION) { /* e.g. a DELETE answered 200 with no body */
        lua_newtable(L);
        return 1;
      }
      if (op == LC_OP_SEND || op == LC_OP_STATUS)
        return decode_error(L, a, "empty answer without a messageId: the API did not confirm the message");
      return decode_error(L, a, "empty answer where a JSON object was expected");
    }
    if (!lc_json_decode(L, a->body, a->body_len)) {
      char why[300];
      snprintf(why, sizeof why, "answer is not valid JSON: %s", lua_tostring(L, -1));
      lua_pop(L, 1);
      decode_error(L, a, why);
      keep_raw_body(L, a);
      return 2;
    }
    t = lua_gettop(L);
    if (lua_type(L, t) != LUA_TTABLE) {
      lua_settop(L, top);
      decode_error(L, a, "answer is not a JSON object");
      keep_raw_body(L, a);
      return 2;
    }
    switch (op) {
    case LC_OP_SEND:
    case LC_OP_STATUS:
      lc_json_normalize(L, t); /* a plain table goes to the caller as is */
      lua_getfield(L, t, "messageId");
      if (lua_type(L, -1) != LUA_TSTRING || lc_rawlen(L, -1) == 0) {
        lua_pop(L, 1);
        decode_error(L, a, "answer has no messageId: the API did not confirm the message");
        lua_pushvalue(L, t);
        lua_setfield(L, -2, "body");
        lua_remove(L, t);
        return 2;
      }
      lua_pop(L, 1);
      return 1;
    case LC_OP_MESSAGE:
    case LC_OP_CONVERSATION:
      unwrap(L, t, op == LC_OP_MESSAGE ? "message" : "conversation");
      lua_getfield(L, t, "id");
      if (lua_type(L, -1) != LUA_TSTRING || lc_rawlen(L, -1) == 0) {
        lua_pop(L, 1);
        decode_error(L, a, op == LC_OP_MESSAGE ? "answer is not a message: it has no id"
                                               : "answer is not a conversation: it has no id");
        lua_pushvalue(L, t);
        lua_setfield(L, -2, "body");
        lua_remove(L, t);
        return 2;
      }
      lua_pop(L, 1);
      lc_push_object(L, op == LC_OP_MESSAGE ? LC_MESSAGE_MT : LC_CONVERSATION_MT, t);
      lua_remove(L, t);
      return 1;
    case LC_OP_TABLE:
      lc_json_normalize(L, t);
      return 1;
    case LC_OP_TABLE_CONVERSATION:
      /* { conversation = {...}, ... }: the conversation becomes a Conversation, the rest a plain table */
      lc_json_normalize(L, t);
      lua_getfield(L, t, "conversation");
      if (lua_type(L, -1) == LUA_TTABLE) {
        lc_push_object(L, LC_CONVERSATION_MT, -1);
        lua_setfield(L, t, "conversation");
      }
      lua_pop(L, 1);
      return 1;
    case LC_OP_MESSAGES_PAGE:
    case LC_OP_CONVERSATIONS_PAGE:
    case LC_OP_EXPORT_PAGE:
      return finish_page(L, op, a, t);
    default:
      return 1;
    }
  }

  /* Not a success: classify by status, keep the API's words when it gave some. */
  lua_pushnil(L);
  lc_push_error(L, lc_kind_for_status(a->status), NULL);
  set_common(L, a);
  if (a->body_len > 0) {
    int err = lua_gettop(L);
    const char *p = a->body, *end = a->body + a->body_len;
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n')) p++;
    if (p < end && *p == '{' && lc_json_decode(L, a->body, a->body_len) && lua_type(L, -1) == LUA_TTABLE) {
      int body = lua_gettop(L);
      lc_json_normalize(L, body);
      take_api_message(L, body, err);
      if (a->trace_id == NULL || !a->trace_id[0]) {
        lua_getfield(L, body, "traceId");
        if (lua_type(L, -1) == LUA_TSTRING && lc_rawlen(L, -1) < 128) {
          /* Shown in tostring(err): only a short, printable id is taken. */
          size_t n, i;
          const char *s = lua_tolstring(L, -1, &n);
          for (i = 0; i < n && (unsigned char)s[i] >= 0x20 && s[i] != 0x7f; i++) {
          }
          if (i == n) lua_setfield(L, err, "trace_id");
          else lua_pop(L, 1);
        } else {
          lua_pop(L, 1);
        }
      }
      lua_setfield(L, err, "body");
    } else {
      lua_settop(L, err);
      keep_raw_body(L, a);
    }
  }
  return 2;
}

int lc_finish(lua_State *L, enum lc_op op, const lc_answer *a) {
  lc_answer r = *a;
  int n, at;
  if (a->status >= 200 && a->status <= 299) {
    /* A success keeps the answer as it came, so it is made first and the body is searched for the secret only
     * when it turned out an error (no messageId, no id): that keeps its decoded body in err.body, so it is made
     * again from the redacted text. The common case, a success, never scans its body. */
    n = finish(L, op, a);
    if (n == 1 || !lc_has_secret(a->body, a->body_len, a->secret, a->secret_len)) return n;
    lua_pop(L, 2);
  } else if (!lc_has_secret(a->body, a->body_len, a->secret, a->secret_len)) {
    return finish(L, op, a);
  }
  push_redacted(L, a->body, a->body_len, a->secret, a->secret_len);
  at = lua_gettop(L);
  r.body = lua_tolstring(L, at, &r.body_len); /* stays alive: it is on the stack until finish is done */
  n = finish(L, op, &r);
  lua_remove(L, at);
  return n;
}

/* tostring(err): one readable line, never more than a few hundred bytes, control characters shown as spaces. */
static void add_clean(lc_line *b, const char *s, size_t n, size_t max) {
  size_t i;
  for (i = 0; i < n && i < max; i++) {
    char c = ((unsigned char)s[i] < 0x20 || s[i] == 0x7f) ? ' ' : s[i];
    lc_line_add(b, &c, 1);
  }
  if (n > max) lc_line_adds(b, "...");
}

static int err_tostring(lua_State *L) {
  lc_line b;
  const char *s;
  size_t n;
  lua_settop(L, 1);
  b.n = 0;
  lc_line_adds(&b, "leadconnector: ");
  lua_getfield(L, 1, "kind");
  s = lua_tolstring(L, -1, &n);
  add_clean(&b, s ? s : "error", s ? n : 5, 40);
  lua_pop(L, 1);
  lua_getfield(L, 1, "method");
  lua_getfield(L, 1, "path");
  if (lua_type(L, -2) == LUA_TSTRING && lua_type(L, -1) == LUA_TSTRING) {
    lc_line_adds(&b, ": ");
    s = lua_tolstring(L, -2, &n);
    add_clean(&b, s, n, 10);
    lc_line_adds(&b, " ");
    s = lua_tolstring(L, -1, &n);
    add_clean(&b, s, n, 200);
  }
  lua_pop(L, 2);
  lua_getfield(L, 1, "status");
  if (lua_type(L, -1) == LUA_TNUMBER) {
    char tmp[32];
    snprintf(tmp, sizeof tmp, ": HTTP %.0f", (double)lua_tonumber(L, -1)); /* no cast: any number prints */
    lc_line_adds(&b, tmp);
  }
  lua_pop(L, 1);
  lua_getfield(L, 1, "message");
  if (lua_type(L, -1) == LUA_TSTRING) {
    lc_line_adds(&b, ": ");
    s = lua_tolstring(L, -1, &n);
    add_clean(&b, s, n, 300);
  }
  lua_pop(L, 1);
  {
    int attempts;
    lua_getfield(L, 1, "attempts");
    {
      double d = lua_type(L, -1) == LUA_TNUMBER ? (double)lua_tonumber(L, -1) : 0;
      attempts = d >= 0 && d < 1e9 ? (int)d : 0; /* the cast only in range (NaN fails both tests) */
    }
    lua_pop(L, 1);
    lua_getfield(L, 1, "trace_id");
    if (lua_type(L, -1) == LUA_TSTRING || attempts > 1) {
      lc_line_adds(&b, " (");
      if (lua_type(L, -1) == LUA_TSTRING) {
        lc_line_adds(&b, "trace ");
        s = lua_tolstring(L, -1, &n);
        add_clean(&b, s, n, 80);
        if (attempts > 1) lc_line_adds(&b, ", ");
      }
      if (attempts > 1) {
        char tmp[32];
        snprintf(tmp, sizeof tmp, "%d attempts", attempts);
        lc_line_adds(&b, tmp);
      }
      lc_line_adds(&b, ")");
    }
    lua_pop(L, 1);
  }
  lua_pushlstring(L, b.s, b.n);
  return 1;
}

/* core.error(kind, message) - lets the Lua layer make errors of the same type (deadline, transport). */
static int l_error(lua_State *L) {
  const char *kind = luaL_checkstring(L, 1);
  const char *msg = luaL_optstring(L, 2, NULL);
  lc_push_error(L, kind, msg ? "%s" : NULL, msg);
  return 1;
}

/* core.finish(op, status, body, retry_after, trace_id, token [, content_type]) - the answer-to-result step, for transports written in Lua
 * (nginx cosockets): same decoding, objects and error kinds as the libcurl path. */
static int l_finish(lua_State *L) {
  lc_answer a;
  enum lc_op op = (enum lc_op)luaL_checkoption(L, 1, NULL, lc_op_names);
  a.status = (long)luaL_checkinteger(L, 2);
  a.body = luaL_optlstring(L, 3, "", &a.body_len);
  a.retry_after = luaL_optnumber(L, 4, -1);
  a.trace_id = luaL_optstring(L, 5, NULL);
  a.secret = luaL_optlstring(L, 6, NULL, &a.secret_len);
  a.content_type = luaL_optlstring(L, 7, NULL, &a.content_type_len);
  return lc_finish(L, op, &a);
}

static int l_is_error(lua_State *L) {
  lua_pushboolean(L, lua_type(L, 1) == LUA_TTABLE && lua_getmetatable(L, 1) &&
                         (luaL_getmetatable(L, LC_ERROR_MT), lua_rawequal(L, -1, -2)));
  return 1;
}

const luaL_Reg lc_error_funcs[] = {
    {"error", l_error}, {"finish", l_finish}, {"is_error", l_is_error}, {NULL, NULL}};

void lc_error_init(lua_State *L) {
  lc_newmetatable(L, LC_ERROR_MT);
  lua_pushcfunction(L, err_tostring);
  lua_setfield(L, -2, "__tostring");
  lua_pop(L, 1);
}
