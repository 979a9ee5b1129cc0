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
 * core.limit_store([clock]) -> S = { now, get, mget, set, add, incr, ring_size, acquire1, done1, done_round1, tune }:
 * functions closed over one store. S.now() reads the clock (core.now's monotonic one, or the given function, for
 * tests) and every other operation uses the time read there, as the algorithm expects.
 *
 * S.acquire1, S.done1 and S.done_round1 are the algorithm's operations of a call (acquire of new numbers, done of an
 * answer, done_round of a batch round's answers) over this store, in C. Run in Lua over this store, a sequential
 * call's acquire + done cost about 11,300 instructions (some 160 VM instructions and nine calls into the store);
 * through these, 5,800, most of it the handle's Lua around the two calls. They are the Lua algorithm's lines
 * written out, store operation for store operation, and leave the store exactly as it would (spec/54 runs both on
 * the same random histories and compares every answer and every key and slot); where that source takes a branch a
 * call rarely takes (an acquire while the limits are learned or the daily budget is spent, a 429) they change
 * nothing and return nothing, and the caller runs the Lua algorithm. Its constants (SLACK, MAX_WAIT, MAX_SCAN, the
 * documented Max, the time to live that ends a key) come from that source through S.tune; until it is called, all
 * three decline every call.
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

/* The algorithm's named keys, made at these places when the store is made (read as absent until written). */
enum { K_Q, K_M, K_W, K_F, K_B, K_P, K_D, K_L, K_S, K_COUNT };
static const char *const KEY_NAMES[K_COUNT] = {"q", "m", "w", "f", "b", "p", "d", "l", "s"};

typedef struct {
  double cur; /* the time of the last S.now() */
  named names[NAMES_MAX];
  int nnames;
  int tuned;                         /* S.tune was called: acquire1, done1 and done_round1 work */
  double slack, max_wait, max_scan, documented_max, over; /* the algorithm's constants, from its source */
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

static int is_slot(double k) { return k >= 1 && k < SLOT_MAX && k == floor(k); }

/* The slot number at idx (an integer >= 1), -1 when the key is a name; another number is 0 for a read (no such
 * slot) and an error for a write. */
static double slot_of(lua_State *L, int idx, int write) {
  double k;
  if (lua_type(L, idx) != LUA_TNUMBER) return -1;
  k = (double)lua_tonumber(L, idx);
  if (is_slot(k)) return k;
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

/* The store's operations at the time of the last clock reading, for S.get/S.set/... and for the algorithm's
 * operations in C alike: a named key by its entry, a slot by its number (a read of a number that is no slot reads
 * absent; a write raises). */

/* S.get(name): 1 and its value when live. */
static int xget(const lstore *s, const named *x, double *v) {
  if (x->e > s->cur) {
    *v = x->v;
    return 1;
  }
  return 0;
}
#define nget(s, k, v) xget((s), &(s)->names[k], (v))

static void nset(lstore *s, int k, double v, double ttl) {
  s->names[k].v = v;
  s->names[k].e = s->cur + ttl;
}

/* S.incr(name, n) */
static double xincr(const lstore *s, named *x, double n) {
  if (x->e > s->cur) {
    x->v += n;
  } else {
    x->v = n;
    x->e = HUGE_VAL;
  }
  return x->v;
}
#define nincr(s, k, n) xincr((s), &(s)->names[k], (n))

/* S.get(k) of a number: 1 and its value when live. */
static int kget(const lstore *s, double k, double *v) {
  size_t i;
  if (!is_slot(k)) return 0;
  i = place(s, k);
  if (s->rk[i] == k && s->re[i] > s->cur) {
    *v = s->rv[i];
    return 1;
  }
  return 0;
}

/* S.set(k, v, ttl) of a number, or S.add (only_new): 0 when add found it live. */
static int kput(lua_State *L, lstore *s, double k, double v, double ttl, int only_new) {
  size_t i;
  if (!is_slot(k)) luaL_error(L, "leadconnector.limiter: bad slot number");
  i = place_for(L, s, k);
  if (only_new && s->rk[i] == k && s->re[i] > s->cur) return 0;
  s->rk[i] = k;
  s->rv[i] = v;
  s->re[i] = s->cur + ttl;
  return 1;
}

static void push_value(lua_State *L, lstore *s, int idx) {
  double k = slot_of(L, idx, 0);
  if (k == 0) {
    lua_pushnil(L);
  } else {
    named *n = k > 0 ? NULL : name_of(L, s, idx, 0);
    double v;
    if (k > 0 ? kget(s, k, &v) : n != NULL && xget(s, n, &v)) push_num(L, v);
    else lua_pushnil(L);
  }
}

/* Reads the clock into s->cur (the given function's, else the monotonic one). */
static double read_clock(lua_State *L, lstore *s) {
  if (lua_isfunction(L, lua_upvalueindex(2))) {
    lua_pushvalue(L, lua_upvalueindex(2));
    lua_call(L, 0, 1);
    s->cur = (double)luaL_checknumber(L, -1);
    lua_pop(L, 1);
  } else {
    s->cur = lc_monotonic();
  }
  return s->cur;
}

/** S.now() -> the time, kept for the operations that follow. */
static int s_now(lua_State *L) {
  lua_pushnumber(L, (lua_Number)read_clock(L, self(L)));
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
  double k = slot_of(L, 1, 1), v = (double)luaL_checknumber(L, 2), ttl = (double)luaL_checknumber(L, 3);
  if (k > 0) {
    lua_pushboolean(L, kput(L, s, k, v, ttl, only_new));
  } else {
    named *n = name_of(L, s, 1, 1);
    if (only_new && n->e > s->cur) {
      lua_pushboolean(L, 0);
      return 1;
    }
    n->v = v;
    n->e = s->cur + ttl;
    lua_pushboolean(L, 1);
  }
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
  push_num(L, xincr(s, k, (double)luaL_checknumber(L, 2)));
  return 1;
}

/* ---- The algorithm's operations of a call (see the top of this file and limiter.lua's ALGO, line for line). ---- */

/* The algorithm's gate(t, n, m, w, f) (have_f: f was read). */
static double gate(lua_State *L, lstore *s, double t, double n, double m, double w, int have_f, double f) {
  double b = m - (have_f ? f : 0), k, v;
  if (b < 1) b = 1;
  k = n - b;
  if (k < 1) return 0;
  if (!kget(s, k, &v)) {
    if (kput(L, s, k, 0, w + 1, 1)) return 0;
    if (!kget(s, k, &v)) v = 0;
  }
  if (v == 0) return 0;
  if (v > 0) return v > t ? v - t : 0;
  v = -v;
  if (v <= t) return 0;
  return v - t < w ? v - t : w; /* min(w, v - t), as Lua's math.min picks */
}

static void push_wait(lua_State *L, double g) {
  if (g == 0) lua_pushinteger(L, 0); /* the algorithm's literal 0 */
  else lua_pushnumber(L, (lua_Number)g);
}

/* The algorithm's give_back(t, n, m, w, f): number n will not be sent; its slot takes the value of the one its gate
 * waited for. */
static void give_back(lua_State *L, lstore *s, double t, double n, double m, double w, int have_f, double f) {
  double b = m - (have_f ? f : 0), v = 0, left;
  if (b < 1) b = 1;
  if (!(n - b >= 1 && kget(s, n - b, &v))) v = 0;
  left = v > 0 ? v : v < 0 ? -v : t;
  kput(L, s, n, v, (0 > left - t ? 0 : left - t) + w + 1, 0); /* max(left - t, 0) */
}

/** S.acquire1(tmo [, count]) -> wait, t, n1, n2, ...: the algorithm's acquire(0, count, tmo), new numbers for a
 * sequential call (count 1, the default) or a batch round; nothing (and the store unchanged) when the limits are
 * not known yet or the daily budget is spent: run the algorithm. */
static int s_acquire1(lua_State *L) {
  lstore *s = self(L);
  double tmo = (double)luaL_checknumber(L, 1), t, m = 0, w, b = 0, d = 0, f = 0, bw = 0, pend, ttl, wait = 0;
  lua_Integer count = luaL_optinteger(L, 2, 1), i, nout = 0;
  int have_m, have_b, have_d, have_f, base;
  if (!s->tuned) return 0;
  t = read_clock(L, s);
  have_m = nget(s, K_M, &m);
  if (!nget(s, K_W, &w)) w = 10000;
  have_b = nget(s, K_B, &b);
  have_d = nget(s, K_D, &d);
  have_f = nget(s, K_F, &f);
  w = w / 1000;
  if (have_b && b > t) bw = s->max_wait < b - t ? s->max_wait : b - t; /* min(b - t, MAX_WAIT) */
  pend = -(t + tmo + w + s->slack);
  ttl = tmo + w + 2;
  if (bw > 0) {
    if (bw == b - t) lua_pushnumber(L, (lua_Number)bw);
    else push_num(L, bw); /* MAX_WAIT itself, an integer in the source */
    lua_pushnumber(L, (lua_Number)t);
    return 2;
  }
  if (!have_m || (have_d && d <= 0)) return 0; /* learning, or the daily budget spent: the Lua algorithm's */
  /* room for every number before anything changes (a C function has LUA_MINSTACK, 20, slots to begin with) */
  if (count > 16 && (count > 1000000 || !lua_checkstack(L, (int)count + 4)))
    return luaL_error(L, "leadconnector.limiter: too many numbers at once");
  lua_settop(L, 0);
  lua_pushinteger(L, 0); /* wait and t, set below */
  lua_pushnumber(L, (lua_Number)t);
  base = lua_gettop(L);
  for (i = 1; i <= count; i++) {
    double k = nincr(s, K_Q, 1);
    if (!kput(L, s, k, pend, ttl, 1)) {
      k = nincr(s, K_Q, 1); /* a gate claimed this number as ended: take the next one */
      kput(L, s, k, pend, ttl, 0);
    }
    double g = gate(L, s, t, k, m, w, have_f, f);
    if (g > 0 && i > 1) {
      give_back(L, s, t, k, m, w, have_f, f); /* not this round */
      break;
    }
    push_num(L, k);
    nout++;
    if (g > 0) {
      wait = g;
      break;
    }
  }
  if (have_d) nincr(s, K_D, -(double)nout);
  push_wait(L, wait);
  lua_replace(L, 1);
  return base + (int)nout;
}

/* The algorithm's done(n, ta, status, rem, int_ms, ra, mx, dr) for a status other than 429 (retry_after is a
 * 429's alone). */
static void done(lua_State *L, lstore *s, double n, double ta, double rem, double int_ms, double mx, double dr) {
  double t = read_clock(L, s), m = 0, w, f = 0, q, l = 0;
  int learning, have_f, have_q, have_l;
  learning = !nget(s, K_M, &m);
  if (!nget(s, K_W, &w)) w = 10000;
  have_f = nget(s, K_F, &f);
  have_q = nget(s, K_Q, &q);
  have_l = nget(s, K_L, &l);
  w = w / 1000;
  if (int_ms > 0 && int_ms != w * 1000) {
    w = int_ms / 1000;
    nset(s, K_W, int_ms, 86400);
  }
  kput(L, s, n, t + w + s->slack, w + 1, 0);
  if (mx > 0) {
    if (learning || mx != m) nset(s, K_M, mx, 86400);
    m = mx;
  } else if (learning) { /* the answer said nothing: the documented budget */
    nset(s, K_M, s->documented_max, 86400);
    m = s->documented_max;
  }
  if (learning) nset(s, K_P, 0, s->over); /* the probe is over */
  if (!have_q) q = n;
  if (dr >= 0) nset(s, K_D, dr - (q - n), 86400);
  if (rem >= 0) {
    double used = m - rem;
    if (!have_f) f = 0;
    if (used > f + (q - n + 1)) {
      double lo = 1, since = ta > 0 ? ta : t - w, k0, k, v, own = 0, foreign;
      if (n - m + 1 > lo) lo = n - m + 1;
      if (q - s->max_scan > lo) lo = q - s->max_scan;
      k0 = have_l && l > lo ? l : lo;
      while (k0 < n) {
        if (!kget(s, k0, &v) || v == 0 || (v > 0 && v <= since)) k0 = k0 + 1;
        else break;
      }
      if (k0 > (have_l ? l : 0)) nset(s, K_L, k0, 86400);
      if (used <= f + (q - k0 + 1)) {
        double last;
        if (nget(s, K_S, &last) && t - last < w / 2) return;
      }
      nset(s, K_S, t, w / 2 + 1);
      for (k = lo; k <= q; k++) {
        if (kget(s, k, &v) && (v < 0 || v > since)) own = own + 1;
      }
      foreign = used - own;
      if (foreign > f) nset(s, K_F, m < foreign ? m : foreign, w + s->slack); /* min(foreign, m) */
    }
  }
}

/** S.done1(n, ta, status, remaining, interval_ms, retry_after, max, daily_remaining) -> true: the algorithm's
 * done; nothing (and the store unchanged) for a 429: run the algorithm. */
static int s_done1(lua_State *L) {
  lstore *s = self(L);
  double n = (double)luaL_checknumber(L, 1), ta = (double)luaL_checknumber(L, 2),
         status = (double)luaL_checknumber(L, 3), rem = (double)luaL_checknumber(L, 4),
         int_ms = (double)luaL_checknumber(L, 5), mx = (double)luaL_checknumber(L, 7),
         dr = (double)luaL_checknumber(L, 8);
  luaL_checknumber(L, 6); /* retry_after: a 429's alone */
  if (!s->tuned || status == 429) return 0;
  done(L, s, n, ta, rem, int_ms, mx, dr);
  lua_pushboolean(L, 1);
  return 1;
}

/** S.done_round1(ta, list, remaining, interval_ms, max, daily_remaining) -> true: the algorithm's done_round of a
 * batch round's answers, list = { n1, status1, retry_after1, ... } (status false for a success or no answer);
 * nothing (and the store unchanged) when one of them is a 429, or the list is not numbers and statuses. */
static int s_done_round1(lua_State *L) {
  lstore *s = self(L);
  double ta = (double)luaL_checknumber(L, 1), rem = (double)luaL_checknumber(L, 3),
         int_ms = (double)luaL_checknumber(L, 4), mx = (double)luaL_checknumber(L, 5),
         dr = (double)luaL_checknumber(L, 6), t = 0, m = 0, w = 0;
  lua_Integer len, i;
  int have_t = 0, have_m = 0;
  luaL_checktype(L, 2, LUA_TTABLE);
  len = (lua_Integer)lc_rawlen(L, 2);
  if (!s->tuned || len < 3) return 0;
  for (i = 1; i <= len; i += 3) { /* every number a number; any 429: the algorithm's */
    lua_rawgeti(L, 2, i);
    lua_rawgeti(L, 2, i + 1);
    if (lua_type(L, -2) != LUA_TNUMBER || (lua_type(L, -1) == LUA_TNUMBER && lua_tonumber(L, -1) == 429)) return 0;
    lua_pop(L, 2);
  }
  lua_rawgeti(L, 2, 1);
  done(L, s, (double)lua_tonumber(L, -1), ta, rem, int_ms, mx, dr);
  lua_pop(L, 1);
  for (i = 4; i <= len; i += 3) {
    double n;
    lua_rawgeti(L, 2, i);
    n = (double)lua_tonumber(L, -1);
    lua_pop(L, 1);
    if (!have_t) {
      t = read_clock(L, s);
      have_m = nget(s, K_M, &m);
      if (!nget(s, K_W, &w)) w = 10000;
      w = w / 1000;
      have_t = 1;
    }
    if (have_m && !(int_ms > 0 && int_ms != w * 1000)) {
      kput(L, s, n, t + w + s->slack, w + 1, 0);
    } else {
      done(L, s, n, ta, -1, int_ms, -1, -1);
      have_t = 0; /* read again after done's writes */
    }
  }
  lua_pushboolean(L, 1);
  return 1;
}

/** S.tune(slack, max_wait, max_scan, documented_max, over): the algorithm's constants, from its source (its
 * A.CONSTANTS); acquire1, done1 and done_round1 work after. */
static int s_tune(lua_State *L) {
  lstore *s = self(L);
  s->slack = (double)luaL_checknumber(L, 1);
  s->max_wait = (double)luaL_checknumber(L, 2);
  s->max_scan = (double)luaL_checknumber(L, 3);
  s->documented_max = (double)luaL_checknumber(L, 4);
  s->over = (double)luaL_checknumber(L, 5);
  s->tuned = 1;
  return 0;
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
                                       {"acquire1", s_acquire1}, {"done1", s_done1}, {"done_round1", s_done_round1},
                                       {"tune", s_tune},
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
  for (s->nnames = 0; s->nnames < K_COUNT; s->nnames++) { /* the algorithm's names, absent until written */
    named *x = &s->names[s->nnames];
    x->len = strlen(KEY_NAMES[s->nnames]);
    memcpy(x->name, KEY_NAMES[s->nnames], x->len + 1);
    x->e = -HUGE_VAL;
  }
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
