/* json.c - JSON through lua-cjson.
 *
 * The library keeps its own cjson instance (cjson.new()), so a user's global cjson settings never change what
 * the library sends or accepts. Request bodies are assembled here from validated fields: structure by this
 * file, every string leaf escaped by cjson.encode. That is what lets an empty Lua table leave as `[]` where the
 * API wants an array (cjson 2.1 would write `{}`) and lets Lua 5.4 integers leave as integers.
 * Answers are decoded by cjson.decode and then normalised: JSON null inside objects is dropped (a Lua nil), and
 * on Lua 5.3+ numbers with an integral value become integers, so `unreadCount` prints as 2, not 2.0. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lc.h"

static const char KEY_DECODE = 0;
static const char KEY_ENCODE = 0;

#define LC_MAX_DEPTH 1000

void lc_json_init(lua_State *L) {
  lua_getglobal(L, "require");
  lua_pushliteral(L, "cjson");
  lua_call(L, 1, 1);
  lua_getfield(L, -1, "new");
  if (!lua_isfunction(L, -1)) luaL_error(L, "leadconnector: this lua-cjson has no cjson.new()");
  lua_call(L, 0, 1);
  lua_remove(L, -2);
  /* Strict about what answers may contain: no NaN, Infinity or hex numbers. */
  lua_getfield(L, -1, "decode_invalid_numbers");
  lua_pushboolean(L, 0);
  lua_call(L, 1, 0);
  lua_getfield(L, -1, "decode_max_depth");
  lua_pushinteger(L, LC_MAX_DEPTH);
  lua_call(L, 1, 0);
  lua_getfield(L, -1, "decode");
  lc_rawsetp(L, LUA_REGISTRYINDEX, &KEY_DECODE);
  lua_getfield(L, -1, "encode");
  lc_rawsetp(L, LUA_REGISTRYINDEX, &KEY_ENCODE);
  lua_pop(L, 1);
}

int lc_is_null(lua_State *L, int idx) {
  return lua_type(L, idx) == LUA_TLIGHTUSERDATA && lua_touserdata(L, idx) == NULL;
}

int lc_json_decode(lua_State *L, const char *s, size_t len) {
  lc_rawgetp(L, LUA_REGISTRYINDEX, &KEY_DECODE);
  lua_pushlstring(L, s, len);
  if (lua_pcall(L, 1, 1, 0) != 0) return 0;
  return 1;
}

static void normalize(lua_State *L, int idx, int depth) {
  if (depth > LC_MAX_DEPTH) return;
  luaL_checkstack(L, 4, "leadconnector: answer nested too deeply");
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    int vt = lua_type(L, -1);
    if (vt == LUA_TTABLE) {
      normalize(L, lua_gettop(L), depth + 1);
    } else if (vt == LUA_TLIGHTUSERDATA && lua_touserdata(L, -1) == NULL && lua_type(L, -2) == LUA_TSTRING) {
      /* Clearing a field that exists is allowed during lua_next. */
      lua_pushvalue(L, -2);
      lua_pushnil(L);
      lua_rawset(L, idx);
    }
#if LC_HAS_INTEGERS
    else if (vt == LUA_TNUMBER && !lua_isinteger(L, -1)) {
      lua_Number n = lua_tonumber(L, -1);
      lua_Integer i;
      if (n == floor(n) && lua_numbertointeger(n, &i)) {
        lua_pushvalue(L, -2);
        lua_pushinteger(L, i);
        lua_rawset(L, idx);
      }
    }
#endif
    lua_pop(L, 1);
  }
}

void lc_json_normalize(lua_State *L, int idx) {
  if (lua_type(L, idx) != LUA_TTABLE) return;
  normalize(L, lc_absindex(L, idx), 0);
}

void lc_json_add_string(lua_State *L, lc_buf *b, int idx) {
  size_t n;
  const char *s;
  lc_rawgetp(L, LUA_REGISTRYINDEX, &KEY_ENCODE);
  lua_pushvalue(L, idx);
  lua_call(L, 1, 1);
  s = lua_tolstring(L, -1, &n);
  lc_buf_add(L, b, s, n);
  lua_pop(L, 1);
}

int lc_json_add_number(lua_State *L, lc_buf *b, int idx) {
  char tmp[48];
  double d;
#if LC_HAS_INTEGERS
  if (lua_isinteger(L, idx)) {
    snprintf(tmp, sizeof tmp, LUA_INTEGER_FMT, (LUAI_UACINT)lua_tointeger(L, idx));
    lc_buf_adds(L, b, tmp);
    return 1;
  }
#endif
  d = (double)lua_tonumber(L, idx);
  if (!isfinite(d)) return 0;
  /* Shortest of the two that reads back as the same double. */
  snprintf(tmp, sizeof tmp, "%.15g", d);
  if (strtod(tmp, NULL) != d) snprintf(tmp, sizeof tmp, "%.17g", d);
  lc_buf_adds(L, b, tmp);
  return 1;
}

/* Any value, for fields the library does not know (allow_unknown). Written here, not by cjson.encode, whose numbers
 * keep only 14 significant digits: numbers at any depth go through lc_json_add_number and round-trip like those of
 * known fields. Returns 0 for what JSON cannot hold: functions, userdata, NaN and infinities, tables that are neither
 * a sequence nor keyed by strings only, nesting deeper than LC_MAX_DEPTH. An empty table leaves as {} (as cjson
 * wrote it). */
static int add_value(lua_State *L, lc_buf *b, int idx, int depth) {
  size_t count = 0, i;
  int all_strings = 1, first = 1;
  switch (lua_type(L, idx)) {
  case LUA_TSTRING:
    lc_json_add_string(L, b, idx);
    return 1;
  case LUA_TNUMBER:
    return lc_json_add_number(L, b, idx);
  case LUA_TBOOLEAN:
    lc_buf_adds(L, b, lua_toboolean(L, idx) ? "true" : "false");
    return 1;
  case LUA_TLIGHTUSERDATA:
    if (!lc_is_null(L, idx)) return 0;
    lc_buf_adds(L, b, "null");
    return 1;
  case LUA_TTABLE:
    break;
  default:
    return 0;
  }
  if (depth >= LC_MAX_DEPTH) return 0;
  luaL_checkstack(L, 4, "leadconnector: value nested too deeply");
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    lua_pop(L, 1);
    count++;
    if (lua_type(L, -1) != LUA_TSTRING) all_strings = 0;
  }
  if (count == 0) {
    lc_buf_adds(L, b, "{}");
    return 1;
  }
  if (!all_strings) { /* an array: exactly the keys 1..count */
    for (i = 1; i <= count; i++) {
      int missing;
      lua_rawgeti(L, idx, (int)i);
      missing = lua_isnil(L, -1);
      lua_pop(L, 1);
      if (missing) return 0;
    }
    lc_buf_addc(L, b, '[');
    for (i = 1; i <= count; i++) {
      int ok;
      if (i > 1) lc_buf_addc(L, b, ',');
      lua_rawgeti(L, idx, (int)i);
      ok = add_value(L, b, lua_gettop(L), depth + 1);
      lua_pop(L, 1);
      if (!ok) return 0;
    }
    lc_buf_addc(L, b, ']');
    return 1;
  }
  lc_buf_addc(L, b, '{');
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    int top = lua_gettop(L);
    if (!first) lc_buf_addc(L, b, ',');
    first = 0;
    lc_json_add_string(L, b, top - 1);
    lc_buf_addc(L, b, ':');
    if (!add_value(L, b, top, depth + 1)) {
      lua_pop(L, 2);
      return 0;
    }
    lua_pop(L, 1);
  }
  lc_buf_addc(L, b, '}');
  return 1;
}

int lc_json_add_value(lua_State *L, lc_buf *b, int idx) { return add_value(L, b, lc_absindex(L, idx), 0); }

/* Pushes the value at idx as callers see it: JSON null becomes nil, an integral float an integer (5.3+), a table a
 * copy made the same way (null entries of objects dropped; nulls inside arrays stay, to keep positions). */
static void push_plain(lua_State *L, int idx, int depth);

static void deepcopy(lua_State *L, int idx, int depth) {
  luaL_checkstack(L, 4, "leadconnector: value nested too deeply");
  lua_newtable(L);
  if (depth > LC_MAX_DEPTH) return;
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    if (lc_is_null(L, -1) && lua_type(L, -2) == LUA_TSTRING) {
      lua_pop(L, 1);
      continue;
    }
    lua_pushvalue(L, -2);
    push_plain(L, lua_gettop(L) - 1, depth + 1);
    lua_rawset(L, -5);
    lua_pop(L, 1);
  }
}

static void push_plain(lua_State *L, int idx, int depth) {
  switch (lua_type(L, idx)) {
  case LUA_TTABLE:
    deepcopy(L, idx, depth);
    return;
#if LC_HAS_INTEGERS
  case LUA_TNUMBER:
    if (!lua_isinteger(L, idx)) {
      lua_Number n = lua_tonumber(L, idx);
      lua_Integer i;
      if (n == floor(n) && lua_numbertointeger(n, &i)) {
        lua_pushinteger(L, i);
        return;
      }
    }
    break;
#endif
  case LUA_TLIGHTUSERDATA:
    if (lua_touserdata(L, idx) == NULL && depth == 0) { /* a null field reads as nil */
      lua_pushnil(L);
      return;
    }
    break;
  default:
    break;
  }
  lua_pushvalue(L, idx);
}

void lc_push_plain(lua_State *L, int idx) { push_plain(L, lc_absindex(L, idx), 0); }

void lc_deepcopy(lua_State *L, int idx, int depth) { deepcopy(L, lc_absindex(L, idx), depth); }

/* --- lc_buf ------------------------------------------------------------------------------------------------------ */

static const char BUF_MT = 0;

static int buf_gc(lua_State *L) {
  lc_buf *b = (lc_buf *)lua_touserdata(L, 1);
  lc_buf_release(b);
  return 0;
}

lc_buf *lc_buf_new(lua_State *L) {
  lc_buf *b = (lc_buf *)lc_newuserdata(L, sizeof *b);
  b->p = NULL;
  b->n = b->cap = 0;
  lc_rawgetp(L, LUA_REGISTRYINDEX, &BUF_MT);
  if (lua_isnil(L, -1)) {
    lua_pop(L, 1);
    lua_createtable(L, 0, 1);
    lua_pushcfunction(L, buf_gc);
    lua_setfield(L, -2, "__gc");
    lua_pushvalue(L, -1);
    lc_rawsetp(L, LUA_REGISTRYINDEX, &BUF_MT);
  }
  lua_setmetatable(L, -2);
  return b;
}

void lc_buf_add(lua_State *L, lc_buf *b, const char *s, size_t n) {
  if (b->cap - b->n < n) {
    size_t cap = b->cap ? b->cap : 256;
    char *p;
    while (cap - b->n < n) {
      if (cap > ((size_t)-1) / 2) luaL_error(L, "leadconnector: body too large");
      cap *= 2;
    }
    p = (char *)realloc(b->p, cap);
    if (p == NULL) luaL_error(L, "leadconnector: out of memory");
    b->p = p;
    b->cap = cap;
  }
  memcpy(b->p + b->n, s, n);
  b->n += n;
}

void lc_buf_addc(lua_State *L, lc_buf *b, char c) {
  if (b->n < b->cap) b->p[b->n++] = c;
  else lc_buf_add(L, b, &c, 1);
}

void lc_buf_release(lc_buf *b) {
  free(b->p);
  b->p = NULL;
  b->n = b->cap = 0;
}
