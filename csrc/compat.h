/* compat.h - the one place for the differences between the Lua versions the core builds for:
 *   5.1 and LuaJIT 2.1: userdata carry an environment table (lua_setfenv), lua_objlen, no luaL_setfuncs,
 *                       luaL_testudata, lua_rawgetp/rawsetp, no __name in metatables, numbers are doubles only;
 *   5.2:                one user value, a table (lua_setuservalue), numbers are doubles only;
 *   5.3:                one user value of any type, integers as a subtype of numbers;
 *   5.4:                n user values (lua_newuserdatauv, lua_setiuservalue), integers, to-be-closed variables.
 * The Makefile builds each into its own directory (build/lua5.1 ... build/lua5.4, build/luajit). */
#ifndef LC_COMPAT_H
#define LC_COMPAT_H

#include <lua.h>
#include <lauxlib.h>

#if LUA_VERSION_NUM < 502
/* Lua 5.1 and LuaJIT: userdata carry an environment table instead of user values. */
static inline void *lc_newuserdata(lua_State *L, size_t sz) { return lua_newuserdata(L, sz); }
#define lc_setuv(L, idx) lua_setfenv((L), (idx))
#define lc_getuv(L, idx) lua_getfenv((L), (idx))
#define lc_rawlen(L, idx) lua_objlen((L), (idx))
#define lc_rawgetp(L, idx, p) (lua_pushlightuserdata((L), (void *)(p)), lua_rawget((L), (idx) < 0 && (idx) > LUA_REGISTRYINDEX ? (idx) - 1 : (idx)))
#define lc_rawsetp(L, idx, p) (lua_pushlightuserdata((L), (void *)(p)), lua_insert((L), -2), lua_rawset((L), (idx) < 0 && (idx) > LUA_REGISTRYINDEX ? (idx) - 1 : (idx)))
static inline void lc_setfuncs(lua_State *L, const luaL_Reg *l, int nup) {
  luaL_checkstack(L, nup, "too many upvalues");
  for (; l->name != NULL; l++) {
    int i;
    for (i = 0; i < nup; i++) lua_pushvalue(L, -nup);
    lua_pushcclosure(L, l->func, nup);
    lua_setfield(L, -(nup + 2), l->name);
  }
  lua_pop(L, nup);
}
static inline void *lc_testudata(lua_State *L, int ud, const char *tname) {
  void *p = lua_touserdata(L, ud);
  if (p != NULL && lua_getmetatable(L, ud)) {
    luaL_getmetatable(L, tname);
    if (!lua_rawequal(L, -1, -2)) p = NULL;
    lua_pop(L, 2);
    return p;
  }
  return NULL;
}
#define lc_newmetatable(L, name) \
  (luaL_newmetatable((L), (name)) ? (lua_pushstring((L), (name)), lua_setfield((L), -2, "__name"), 1) : 0)
#else
#if LUA_VERSION_NUM >= 504
static inline void *lc_newuserdata(lua_State *L, size_t sz) { return lua_newuserdatauv(L, sz, 1); }
#define lc_setuv(L, idx) lua_setiuservalue((L), (idx), 1)
#define lc_getuv(L, idx) lua_getiuservalue((L), (idx), 1)
#else
static inline void *lc_newuserdata(lua_State *L, size_t sz) { return lua_newuserdata(L, sz); }
#define lc_setuv(L, idx) lua_setuservalue((L), (idx))
#define lc_getuv(L, idx) lua_getuservalue((L), (idx))
#endif
#define lc_rawlen(L, idx) lua_rawlen((L), (idx))
#define lc_rawgetp(L, idx, p) lua_rawgetp((L), (idx), (p))
#define lc_rawsetp(L, idx, p) lua_rawsetp((L), (idx), (p))
#define lc_setfuncs(L, l, n) luaL_setfuncs((L), (l), (n))
#define lc_testudata(L, ud, t) luaL_testudata((L), (ud), (t))
#define lc_newmetatable(L, name) luaL_newmetatable((L), (name))
#endif

#define lc_absindex(L, i) ((i) > 0 || (i) <= LUA_REGISTRYINDEX ? (i) : lua_gettop(L) + (i) + 1)

/* Integers exist as a subtype from 5.3 on. */
#if LUA_VERSION_NUM >= 503
#define LC_HAS_INTEGERS 1
#else
#define LC_HAS_INTEGERS 0
#endif

/* The __close metamethod (local x <close>) exists from 5.4 on. */
#if LUA_VERSION_NUM >= 504
#define LC_HAS_CLOSE 1
#else
#define LC_HAS_CLOSE 0
#endif

#endif
