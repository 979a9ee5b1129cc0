/** lstore.c - the store under the process limiter (leadconnector.limiter.process and every backend's fallback).
 *
 * The limiter's algorithm is one chunk of Lua run over a store S (limiter.lua says what S must do); inside one Lua
 * state that store used to be a Lua table, and a sequential call spent more instructions in its eight store calls
 * than in the algorithm. Here the same store in C: a handful of named keys ("q", "m", "w", ...) in a small array,
 * and the numbered slots in a ring of R places (slot k at place k % R, its number beside it), overwritten in place
 * once expired, so nothing is swept and the memory is that of the slots still in their windows; a live slot met at
 * the place of a new one doubles the ring. All memory belongs to the userdata (freed by __gc), so a Lua error
 * cannot leak it.
 *
 * core.limit_store([clock]) -> S = { now, get, mget, set, add, incr, ring_size }: functions closed over one store.
 * S.now() reads the clock (core.now's monotonic one, or the given function, for tests) and every other operation
 * uses the time read there, as the algorithm expects.
 * @module leadconnector.core */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "lc.h"

#define LC_LSTORE_MT "leadconnector.LimitStore"
#define NAMES_MAX 16
#define NAME_LEN 8
#define RING_FIRST 64
#define SLOT_MAX 9007199254740992.0 /* 2^53: slot numbers are exact integers below it */

typedef struct {
  char name[NAME_LEN];
  size_t len;
  double v, e; /* value, expiry time */
} named;

typedef struct {
  double cur; /* the time of the last S.now() */
  named names[NAMES_MAX];
  int nnames;
  size_t R;
  double *rk, *rv, *re; /* the ring: slot number (0: free place), value, expiry time */
} lstore;

static lstore *self(lua_State *L) { return (lstore *)lua_touserdata(L, lua_upvalueindex(1)); }

static void push_num(lua_State *L, double d) {
#if LC_HAS_INTEGERS
  if (d == floor(d) && fabs(d) < SLOT_MAX) {
    lua_pushinteger(L, (lua_Integer)d);
    return;
  }
#endif
  lua_pushnumber(L, (lua_Number)d);
}

/* The slot number at idx (an integer >= 1), -1 when the key is a name; another number is 0 for a read (no such
 * slot) and an error for a write. */
static double slot_of(lua_State *L, int idx, int write) {
  double k;
  if (lua_type(L, idx) != LUA_TNUMBER) return -1;
  k = (double)lua_tonumber(L, idx);
  if (k >= 1 && k < SLOT_MAX && k == floor(k)) return k;
  if (write) luaL_error(L, "leadconnector.limiter: bad slot number");
  return 0;
}

/* The named key at idx: its entry, made when `make` (else NULL when absent). */
static named *name_of(lua_State *L, lstore *s, int idx, int make) {
  size_t len;
  const char *k = luaL_checklstring(L, idx, &len);
  int i;
  if (len >= NAME_LEN) luaL_error(L, "leadconnector.limiter: key name too long");
  /* about a dozen lookups a call: the first byte and the length tell the algorithm's names apart ("q", "m", ...)
   * before any memcmp */
  for (i = 0; i < s->nnames; i++) {
    const named *n = &s->names[i];
    if (n->name[0] == k[0] && n->len == len && memcmp(n->name, k, len) == 0) return &s->names[i];
  }
  if (!make) return NULL;
  if (s->nnames == NAMES_MAX) luaL_error(L, "leadconnector.limiter: too many key names");
  memcpy(s->names[s->nnames].name, k, len + 1);
  s->names[s->nnames].len = len;
  s->names[s->nnames].e = -HUGE_VAL;
  return &s->names[s->nnames++];
}

static size_t place(const lstore *s, double k) { return (size_t)((uint64_t)k % (uint64_t)s->R); }

/* A ring of twice the places, the live slots moved over (the old one stays if memory runs out). */
static void grow(lua_State *L, lstore *s) {
  size_t R = s->R * 2, i;
  double *rk = (double *)calloc(R, sizeof *rk), *rv = (double *)malloc(R * sizeof *rv),
         *re = (double *)malloc(R * sizeof *re);
  if (rk == NULL || rv == NULL || re == NULL) {
    free(rk);
    free(rv);
    free(re);
    luaL_error(L, "leadconnector.limiter: out of memory");
  }
  for (i = 0; i < s->R; i++) {
    if (s->rk[i] != 0 && s->re[i] > s->cur) {
      size_t j = (size_t)((uint64_t)s->rk[i] % (uint64_t)R);
      rk[j] = s->rk[i];
      rv[j] = s->rv[i];
      re[j] = s->re[i];
    }
  }
  free(s->rk);
  free(s->rv);
  free(s->re);
  s->rk = rk;
  s->rv = rv;
  s->re = re;
  s->R = R;
}

/* The place of slot k for a write: its own, or a free or expired one (the ring grows while a live slot has it). */
static size_t place_for(lua_State *L, lstore *s, double k) {
  size_t i = place(s, k);
  while (s->rk[i] != 0 && s->rk[i] != k && s->re[i] > s->cur) {
    grow(L, s);
    i = place(s, k);
  }
  return i;
}

static void push_value(lua_State *L, lstore *s, int idx) {
  double k = slot_of(L, idx, 0);
  if (k == 0) {
    lua_pushnil(L);
  } else if (k > 0) {
    size_t i = place(s, k);
    if (s->rk[i] == k && s->re[i] > s->cur) push_num(L, s->rv[i]);
    else lua_pushnil(L);
  } else {
    named *n = name_of(L, s, idx, 0);
    if (n != NULL && n->e > s->cur) push_num(L, n->v);
    else lua_pushnil(L);
  }
}

/** S.now() -> the time, kept for the operations that follow. */
static int s_now(lua_State *L) {
  lstore *s = self(L);
  if (lua_isfunction(L, lua_upvalueindex(2))) {
    lua_pushvalue(L, lua_upvalueindex(2));
    lua_call(L, 0, 1);
    s->cur = (double)luaL_checknumber(L, -1);
  } else {
    s->cur = lc_monotonic();
  }
  lua_pushnumber(L, (lua_Number)s->cur);
  return 1;
}

/** S.get(k) -> the value of k, nil when absent or expired. */
static int s_get(lua_State *L) {
  push_value(L, self(L), 1);
  return 1;
}

/** S.mget(k1, ..., k5) -> their values (nil for an absent, expired or nil key). */
static int s_mget(lua_State *L) {
  lstore *s = self(L);
  int i;
  lua_settop(L, 5);
  for (i = 1; i <= 5; i++) {
    if (lua_isnil(L, i)) lua_pushnil(L);
    else push_value(L, s, i);
  }
  return 5;
}

static int put(lua_State *L, int only_new) {
  lstore *s = self(L);
  double k = slot_of(L, 1, 1), v = (double)luaL_checknumber(L, 2), e = s->cur + (double)luaL_checknumber(L, 3);
  if (k > 0) {
    size_t i = place_for(L, s, k);
    if (only_new && s->rk[i] == k && s->re[i] > s->cur) {
      lua_pushboolean(L, 0);
      return 1;
    }
    s->rk[i] = k;
    s->rv[i] = v;
    s->re[i] = e;
  } else {
    named *n = name_of(L, s, 1, 1);
    if (only_new && n->e > s->cur) {
      lua_pushboolean(L, 0);
      return 1;
    }
    n->v = v;
    n->e = e;
  }
  lua_pushboolean(L, 1);
  return 1;
}

/** S.set(k, v, ttl) -> true: k holds v for ttl seconds from S.now()'s time. */
static int s_set(lua_State *L) { return put(L, 0); }

/** S.add(k, v, ttl) -> true, or false (and nothing changed) when k holds a live value. */
static int s_add(lua_State *L) { return put(L, 1); }

/** S.incr(name, n) -> the new value: n added to the live value, or n itself (kept with no expiry) from nothing. */
static int s_incr(lua_State *L) {
  lstore *s = self(L);
  named *k = name_of(L, s, 1, 1);
  double n = (double)luaL_checknumber(L, 2);
  if (k->e > s->cur) {
    k->v += n;
  } else {
    k->v = n;
    k->e = HUGE_VAL;
  }
  push_num(L, k->v);
  return 1;
}

/** S.ring_size() -> the places of the ring (memory follows the slots in their windows). */
static int s_ring_size(lua_State *L) {
  lua_pushnumber(L, (lua_Number)self(L)->R);
  return 1;
}

static int s_gc(lua_State *L) {
  lstore *s = (lstore *)luaL_checkudata(L, 1, LC_LSTORE_MT);
  free(s->rk);
  free(s->rv);
  free(s->re);
  s->rk = s->rv = s->re = NULL;
  s->R = 0;
  return 0;
}

static const luaL_Reg store_funcs[] = {{"now", s_now},   {"get", s_get},   {"mget", s_mget}, {"set", s_set},
                                       {"add", s_add},   {"incr", s_incr}, {"ring_size", s_ring_size},
                                       {NULL, NULL}};

/** core.limit_store([clock]) -> a new store (see the top of this file). */
static int l_limit_store(lua_State *L) {
  lstore *s;
  if (!lua_isnoneornil(L, 1)) luaL_checktype(L, 1, LUA_TFUNCTION);
  lua_settop(L, 1);
  lua_newtable(L); /* S, at 2 */
  s = (lstore *)lc_newuserdata(L, sizeof *s);
  memset(s, 0, sizeof *s);
  luaL_getmetatable(L, LC_LSTORE_MT);
  lua_setmetatable(L, -2);
  s->rk = (double *)calloc(RING_FIRST, sizeof *s->rk);
  s->rv = (double *)malloc(RING_FIRST * sizeof *s->rv);
  s->re = (double *)malloc(RING_FIRST * sizeof *s->re);
  if (s->rk == NULL || s->rv == NULL || s->re == NULL) return luaL_error(L, "leadconnector.limiter: out of memory");
  s->R = RING_FIRST;
  s->cur = -HUGE_VAL;
  lua_pushvalue(L, 1); /* upvalues: the store, the clock (nil: the monotonic clock) */
  lc_setfuncs(L, store_funcs, 2);
  return 1;
}

const luaL_Reg lc_lstore_funcs[] = {{"limit_store", l_limit_store}, {NULL, NULL}};

void lc_lstore_init(lua_State *L) {
  if (lc_newmetatable(L, LC_LSTORE_MT)) {
    lua_pushcfunction(L, s_gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_pop(L, 1);
}
