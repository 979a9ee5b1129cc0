/* common.h - what every leadconnector fuzz harness shares.
 *
 * Each harness is a libFuzzer binary that embeds one Lua 5.4 state (the harness links -llua5.4; the module itself
 * never does) and the C core compiled in. The state is made once, the module is opened into the global `core`,
 * and every input runs inside lua_pcall: any Lua error that reaches the harness is a finding (the C core must
 * return `nil, err` for bad input, never raise), and so is any failed invariant (fz_fail). A full collection after
 * every input makes use-after-free between userdata and their tables show up at once under ASan. */
#ifndef LC_FUZZ_COMMON_H
#define LC_FUZZ_COMMON_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

int luaopen_leadconnector_core(lua_State *L);

static lua_State *fz_L;

static void fz_fail(const char *what, const char *detail) {
  fprintf(stderr, "\n*** leadconnector fuzz invariant failed: %s%s%s\n", what, detail ? ": " : "", detail ? detail : "");
  abort();
}

static int fz_traceback(lua_State *L) {
  const char *msg = lua_tostring(L, 1);
  luaL_traceback(L, L, msg ? msg : "(error object is not a string)", 1);
  return 1;
}

/* Calls the function below its nargs arguments; a Lua error is a finding. Leaves nres results. */
static void fz_call(lua_State *L, int nargs, int nres) {
  int base = lua_gettop(L) - nargs;
  lua_pushcfunction(L, fz_traceback);
  lua_insert(L, base);
  if (lua_pcall(L, nargs, nres, base) != LUA_OK) fz_fail("Lua error escaped", lua_tostring(L, -1));
  lua_remove(L, base);
}

/* A Lua state with the standard libraries, the core module as global `core`, and the chunk `check` (a harness's
 * invariants, written in Lua) compiled into the registry field "fz_check". */
static lua_State *fz_setup(const char *check) {
  lua_State *L = luaL_newstate();
  if (L == NULL) fz_fail("luaL_newstate", NULL);
  luaL_openlibs(L);
  /* cjson from the system (the core requires it), whatever LUA_CPATH the caller has. */
  lua_getglobal(L, "package");
  lua_pushliteral(L, "/usr/lib/x86_64-linux-gnu/lua/5.4/?.so;/usr/local/lib/lua/5.4/?.so;/usr/lib/lua/5.4/?.so");
  lua_setfield(L, -2, "cpath");
  /* the catalogue (core.build_send / build_status compile their schemas from it): run from the repository root */
  lua_pushliteral(L, "./lua/?.lua;./lua/?/init.lua");
  lua_setfield(L, -2, "path");
  lua_pop(L, 1);
  lua_pushcfunction(L, luaopen_leadconnector_core);
  fz_call(L, 0, 1);
  lua_setglobal(L, "core");
  if (check != NULL) {
    if (luaL_loadbufferx(L, check, strlen(check), "=fz_check", "t") != LUA_OK) fz_fail("check chunk", lua_tostring(L, -1));
    fz_call(L, 0, 1); /* the chunk returns the check function */
    lua_setfield(L, LUA_REGISTRYINDEX, "fz_check");
  }
  return L;
}

static inline void fz_push_check(lua_State *L) { lua_getfield(L, LUA_REGISTRYINDEX, "fz_check"); }

/* After each input: nothing may be left on the stack, and a full collection frees every object it made. */
static void fz_end(lua_State *L) {
  if (lua_gettop(L) != 0) fz_fail("Lua stack not balanced", NULL);
  lua_gc(L, LUA_GCCOLLECT, 0);
}

/* A cursor over the input bytes; reads past the end give zeros. */
typedef struct fz_in {
  const uint8_t *p;
  size_t n, i;
} fz_in;

static inline unsigned fz_u8(fz_in *in) { return in->i < in->n ? in->p[in->i++] : 0; }
static inline unsigned fz_u16(fz_in *in) {
  unsigned a = fz_u8(in);
  return (a << 8) | fz_u8(in);
}
static inline size_t fz_left(const fz_in *in) { return in->n - in->i; }
/* Takes up to max bytes (length from one byte, capped by what is left). */
static inline const char *fz_bytes(fz_in *in, size_t max, size_t *len) {
  size_t n = fz_u8(in);
  const char *s = (const char *)in->p + in->i;
  if (n > max) n = max;
  if (n > fz_left(in)) n = fz_left(in);
  in->i += n;
  *len = n;
  return s;
}
static inline double fz_double(fz_in *in) {
  double d;
  unsigned char b[8];
  size_t k;
  for (k = 0; k < 8; k++) b[k] = (unsigned char)fz_u8(in);
  memcpy(&d, b, sizeof d);
  return d;
}

/* libFuzzer's set-up for a harness that needs nothing beyond fz_setup: its Lua invariants `check`. */
#define FZ_INITIALIZE(check)                                                                                           \
  int LLVMFuzzerInitialize(int *argc, char ***argv) {                                                                  \
    (void)argc;                                                                                                        \
    (void)argv;                                                                                                        \
    fz_L = fz_setup(check);                                                                                            \
    return 0;                                                                                                          \
  }

#endif
