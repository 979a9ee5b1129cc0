/** leadconnector.core - the C core of leadconnector.
 *
 * One small file per concern: json.c (lua-cjson bridge), validate.c (checks and request bodies), object.c
 * (Message and Conversation userdata), error.c (error objects, answer classification), http.c (libcurl session),
 * fs.c (file locks and atomic writes), webhook.c (signatures), redis.c (hiredis), lstore.c (the process limiter's
 * store).
 * This file only assembles the module. Only luaopen_leadconnector_core is exported.
 * @module leadconnector.core */
#include <errno.h>
#include <time.h>

#include "lc.h"

/** core.now() -> seconds from a monotonic clock (for deadlines and backoff). */
static int l_now(lua_State *L) {
  lua_pushnumber(L, (lua_Number)lc_monotonic());
  return 1;
}

/** core.sleep(seconds) - blocking sleep, used between retries outside nginx. */
static int l_sleep(lua_State *L) {
  double d = luaL_checknumber(L, 1);
  struct timespec ts, rem;
  if (!(d > 0)) return 0;
  if (d > 86400) d = 86400;
  ts.tv_sec = (time_t)d;
  ts.tv_nsec = (long)((d - (double)ts.tv_sec) * 1e9);
  while (nanosleep(&ts, &rem) != 0 && errno == EINTR) ts = rem;
  return 0;
}

static const luaL_Reg core_funcs[] = {{"now", l_now}, {"sleep", l_sleep}, {NULL, NULL}};

#if defined(__GNUC__)
#define LC_EXPORT __attribute__((visibility("default")))
#else
#define LC_EXPORT
#endif

LC_EXPORT int luaopen_leadconnector_core(lua_State *L) {
  lc_json_init(L);
  lc_error_init(L);
  lc_object_init(L);
  lc_http_init(L);
  lc_fs_init(L);
  lc_webhook_init(L);
  lc_redis_init(L);
  lc_lstore_init(L);
  lua_newtable(L);
  lc_setfuncs(L, core_funcs, 0);
  lc_setfuncs(L, lc_validate_funcs, 0);
  lc_setfuncs(L, lc_error_funcs, 0);
  lc_setfuncs(L, lc_object_funcs, 0);
  lc_setfuncs(L, lc_http_funcs, 0);
  lc_setfuncs(L, lc_fs_funcs, 0);
  lc_setfuncs(L, lc_webhook_funcs, 0);
  lc_setfuncs(L, lc_redis_funcs, 0);
  lc_setfuncs(L, lc_lstore_funcs, 0);
  lc_validate_init(L, -1);
  lua_pushliteral(L, LC_VERSION);
  lua_setfield(L, -2, "version");
  return 1;
}
