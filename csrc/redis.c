/* redis.c - a small blocking Redis client for plain Lua, on Debian's hiredis (the synchronous API).
 *
 * core.redis_connect(host, port, timeout_s) -> conn | nil, kind, message
 *   kind is "timeout" or "network". The timeout bounds the connect and then the whole of every command (its send
 *   and its whole reply, on a deadline: a server trickling a reply byte by byte cannot stretch it), and a reply
 *   is capped (LC_REDIS_MAX_REPLY bytes, LC_REDIS_MAX_OBJECTS values): a server announcing a huge bulk or array
 *   gets "network", the connection closed, instead of the process's memory.
 * conn:command(arg1, ...) -> value | nil, kind, message
 *   status -> its string; integer -> number; bulk -> string; array -> table (1..n, nested); nil -> false;
 *   an error reply -> nil, "reply", the server's words (an error inside an array becomes its string);
 *   no answer -> nil, "timeout" | "network", message, and the connection is closed for good (the Lua layer
 *   reconnects). Messages never quote the arguments (which may hold a password).
 * conn:close() - idempotent; also __gc and __close.
 * core.sha1_hex(s) -> the SHA-1 of s in lowercase hex (EVALSHA names a script by it).
 *
 * The redisContext and the reply being converted belong to the userdata: a Lua error (out of memory) in the
 * middle of a conversion leaves them to the next command, close or __gc, never leaked. */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <poll.h>
#include <stdio.h>
#include <sys/time.h>
#include <time.h>

#include <hiredis/hiredis.h>
#include <openssl/evp.h>

#include "lc.h"

#define LC_REDIS_MT "leadconnector.RedisConn"
#define LC_REDIS_MAX_ARGS 256
#define LC_REDIS_MAX_DEPTH 16
#define LC_REDIS_MAX_REPLY (32u << 20) /* bytes of one reply, buffered or in its strings */
#define LC_REDIS_MAX_OBJECTS 1000000   /* values in one reply (each costs hiredis ~50 bytes) */

typedef struct lc_redis {
  redisContext *c;
  redisReply *reply; /* the reply being turned into Lua values, freed by the next command / close / gc */
  double timeout;    /* seconds per command */
  /* hiredis's reply functions, wrapped to count what one reply costs (reader->privdata points here) */
  redisReplyObjectFunctions fns;
  redisReplyObjectFunctions *base;
  size_t objects, bytes;
  int over; /* the reply passed a cap */
} lc_redis;

static double mono_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Counts one value of n bytes; NULL from a create function makes hiredis fail the reply (and free its parts). */
static int over_cap(lc_redis *r, size_t n) {
  r->objects++;
  r->bytes += n;
  if (r->objects > LC_REDIS_MAX_OBJECTS || r->bytes > LC_REDIS_MAX_REPLY) r->over = 1;
  return r->over;
}
static void *w_string(const redisReadTask *t, char *s, size_t n) {
  lc_redis *r = (lc_redis *)t->privdata;
  return over_cap(r, n) ? NULL : r->base->createString(t, s, n);
}
static void *w_array(const redisReadTask *t, int n) {
  lc_redis *r = (lc_redis *)t->privdata;
  if (n > LC_REDIS_MAX_OBJECTS) r->over = 1;
  return over_cap(r, n > 0 ? (size_t)n * sizeof(void *) : 0) ? NULL : r->base->createArray(t, n);
}
static void *w_integer(const redisReadTask *t, long long v) {
  lc_redis *r = (lc_redis *)t->privdata;
  return over_cap(r, 0) ? NULL : r->base->createInteger(t, v);
}
static void *w_nil(const redisReadTask *t) {
  lc_redis *r = (lc_redis *)t->privdata;
  return over_cap(r, 0) ? NULL : r->base->createNil(t);
}

static void redis_release(lc_redis *r) {
  if (r->reply) {
    freeReplyObject(r->reply);
    r->reply = NULL;
  }
  if (r->c) {
    redisFree(r->c);
    r->c = NULL;
  }
}

static struct timeval to_timeval(double s) {
  struct timeval tv;
  if (!(s > 0)) s = 0.001;
  if (s > 86400) s = 86400;
  tv.tv_sec = (time_t)s;
  tv.tv_usec = (suseconds_t)((s - (double)tv.tv_sec) * 1e6);
  if (tv.tv_sec == 0 && tv.tv_usec == 0) tv.tv_usec = 1000;
  return tv;
}

/* hiredis 0.14 reports a socket timeout as an I/O error with EAGAIN. */
static const char *err_kind(const redisContext *c, int saved_errno) {
  if (c->err == REDIS_ERR_IO && (saved_errno == EAGAIN || saved_errno == EWOULDBLOCK || saved_errno == EINPROGRESS ||
                                 saved_errno == ETIMEDOUT))
    return "timeout";
  if (strstr(c->errstr, "Resource temporarily unavailable") || strstr(c->errstr, "timed out")) return "timeout";
  return "network";
}

static int l_redis_connect(lua_State *L) {
  const char *host = luaL_checkstring(L, 1);
  lua_Integer port = luaL_checkinteger(L, 2);
  double tmo = luaL_optnumber(L, 3, 1.0);
  struct timeval tv;
  lc_redis *r;
  int saved;
  if (port < 1 || port > 65535) return luaL_argerror(L, 2, "port must be 1..65535");
  if (!(tmo > 0) || tmo != tmo) return luaL_argerror(L, 3, "timeout must be > 0 seconds");
  if (tmo > 86400) tmo = 86400;
  tv = to_timeval(tmo);
  r = (lc_redis *)lc_newuserdata(L, sizeof *r);
  r->c = NULL;
  r->reply = NULL;
  r->base = NULL;
  r->objects = r->bytes = 0;
  r->over = 0;
  luaL_getmetatable(L, LC_REDIS_MT);
  lua_setmetatable(L, -2);
  errno = 0;
  r->c = redisConnectWithTimeout(host, (int)port, tv);
  saved = errno;
  if (r->c == NULL) {
    lua_pushnil(L);
    lua_pushliteral(L, "network");
    lua_pushliteral(L, "cannot allocate a Redis context");
    return 3;
  }
  if (r->c->err) {
    const char *kind = err_kind(r->c, saved);
    lua_pushnil(L);
    lua_pushstring(L, kind);
    lua_pushfstring(L, "cannot connect to Redis at %s:%d: %s", host, (int)port, r->c->errstr);
    redis_release(r);
    return 3;
  }
  /* From here on the socket is non-blocking and every command runs on its own deadline (poll). */
  {
    int fl = fcntl(r->c->fd, F_GETFL);
    if (fl < 0 || fcntl(r->c->fd, F_SETFL, fl | O_NONBLOCK) < 0 || r->c->reader == NULL || r->c->reader->fn == NULL) {
      lua_pushnil(L);
      lua_pushliteral(L, "network");
      lua_pushliteral(L, "cannot set up the Redis connection");
      redis_release(r);
      return 3;
    }
  }
  r->c->flags &= ~REDIS_BLOCK; /* hiredis then takes EAGAIN as "try again later" */
  r->timeout = tmo;
  r->base = r->c->reader->fn;
  r->fns = *r->base;
  r->fns.createString = w_string;
  r->fns.createArray = w_array;
  r->fns.createInteger = w_integer;
  r->fns.createNil = w_nil;
  r->c->reader->fn = &r->fns;
  r->c->reader->privdata = r;
  return 1;
}

static lc_redis *check_conn(lua_State *L) {
  return (lc_redis *)luaL_checkudata(L, 1, LC_REDIS_MT);
}

static void push_reply(lua_State *L, const redisReply *rep, int depth) {
  size_t i;
  luaL_checkstack(L, 4, "Redis reply too deep");
  switch (rep->type) {
  case REDIS_REPLY_STATUS:
  case REDIS_REPLY_STRING:
  case REDIS_REPLY_ERROR: lua_pushlstring(L, rep->str, rep->len); break;
  case REDIS_REPLY_INTEGER:
#if LC_HAS_INTEGERS
    lua_pushinteger(L, (lua_Integer)rep->integer);
#else
    lua_pushnumber(L, (lua_Number)rep->integer);
#endif
    break;
  case REDIS_REPLY_ARRAY:
    if (depth >= LC_REDIS_MAX_DEPTH) {
      lua_pushboolean(L, 0);
      break;
    }
    lua_createtable(L, rep->elements > 1000000 ? 0 : (int)rep->elements, 0);
    for (i = 0; i < rep->elements; i++) {
      push_reply(L, rep->element[i], depth + 1);
      lua_rawseti(L, -2, (int)(i + 1));
    }
    break;
  case REDIS_REPLY_NIL:
  default: lua_pushboolean(L, 0); break;
  }
}

/* Waits until fd is ready for ev or the deadline passes: 1 ready, 0 timed out, -1 error. */
static int wait_fd(int fd, short ev, double deadline) {
  for (;;) {
    struct pollfd p;
    double left = deadline - mono_now();
    int ms, n;
    if (left <= 0) return 0;
    ms = left > 86400 ? 86400000 : (int)(left * 1000) + 1;
    p.fd = fd;
    p.events = ev;
    p.revents = 0;
    n = poll(&p, 1, ms);
    if (n > 0) return 1;
    if (n < 0 && errno != EINTR) return -1;
  }
}

/* Sends one command and reads its whole reply within r->timeout. 0: *rep set; 1: timed out; 2: the reply passed
 * a cap; 3: an error in r->c. */
static int run_command(lc_redis *r, int argc, const char **argv, const size_t *lens, redisReply **rep) {
  redisContext *c = r->c;
  double deadline = mono_now() + r->timeout;
  int done = 0;
  void *out = NULL;
  r->objects = r->bytes = 0;
  r->over = 0;
  if (redisAppendCommandArgv(c, argc, argv, lens) != REDIS_OK) return 3;
  while (!done) {
    int w = wait_fd(c->fd, POLLOUT, deadline);
    if (w == 0) return 1;
    if (w < 0 || redisBufferWrite(c, &done) != REDIS_OK) return 3;
  }
  for (;;) {
    int w;
    if (redisGetReplyFromReader(c, &out) != REDIS_OK) return r->over ? 2 : 3;
    if (out != NULL) break;
    if (c->reader->len - c->reader->pos > LC_REDIS_MAX_REPLY) return 2; /* a bulk announced past the cap */
    w = wait_fd(c->fd, POLLIN, deadline);
    if (w == 0) return 1;
    if (w < 0 || redisBufferRead(c) != REDIS_OK) return 3;
  }
  *rep = (redisReply *)out;
  return 0;
}

static int l_redis_command(lua_State *L) {
  lc_redis *r = check_conn(L);
  int argc = lua_gettop(L) - 1, i, saved, is_err;
  const char *argv[LC_REDIS_MAX_ARGS];
  size_t lens[LC_REDIS_MAX_ARGS];
  redisReply *rep;
  if (argc < 1) return luaL_error(L, "leadconnector.redis: a command needs a name");
  if (argc > LC_REDIS_MAX_ARGS) return luaL_error(L, "leadconnector.redis: at most %d arguments", LC_REDIS_MAX_ARGS);
  for (i = 0; i < argc; i++) {
    int t = lua_type(L, i + 2);
    if (t != LUA_TSTRING && t != LUA_TNUMBER)
      return luaL_error(L, "leadconnector.redis: argument %d must be a string or a number, got %s", i + 1,
                        lua_typename(L, t));
    argv[i] = lua_tolstring(L, i + 2, &lens[i]); /* numbers become strings in place: the stack owns them */
  }
  if (r->reply) {
    freeReplyObject(r->reply);
    r->reply = NULL;
  }
  if (r->c == NULL) {
    lua_pushnil(L);
    lua_pushliteral(L, "network");
    lua_pushliteral(L, "the Redis connection is closed");
    return 3;
  }
  errno = 0;
  rep = NULL;
  switch (run_command(r, argc, argv, lens, &rep)) {
  case 0: break;
  case 1:
    lua_pushnil(L);
    lua_pushliteral(L, "timeout");
    lua_pushfstring(L, "timeout: no whole answer from Redis within %f s", r->timeout);
    redis_release(r);
    return 3;
  case 2:
    lua_pushnil(L);
    lua_pushliteral(L, "network");
    lua_pushfstring(L, "network: the Redis reply exceeds %d bytes or %d values", (int)LC_REDIS_MAX_REPLY,
                    LC_REDIS_MAX_OBJECTS);
    redis_release(r);
    return 3;
  default: {
    const char *kind;
    saved = errno;
    kind = err_kind(r->c, saved);
    lua_pushnil(L);
    lua_pushstring(L, kind);
    lua_pushfstring(L, "%s: no answer from Redis: %s", kind, r->c->errstr);
    redis_release(r); /* a context after an I/O error cannot be used again */
    return 3;
  }
  }
  r->reply = rep;
  is_err = rep->type == REDIS_REPLY_ERROR;
  if (is_err) {
    lua_pushnil(L);
    lua_pushliteral(L, "reply");
    lua_pushlstring(L, rep->str, rep->len);
  } else {
    push_reply(L, rep, 0);
  }
  freeReplyObject(rep);
  r->reply = NULL;
  return is_err ? 3 : 1;
}

static int l_redis_close(lua_State *L) {
  redis_release(check_conn(L));
  return 0;
}

static int l_redis_closed(lua_State *L) {
  lua_pushboolean(L, check_conn(L)->c == NULL);
  return 1;
}

static int l_sha1_hex(lua_State *L) {
  size_t n;
  const char *s = luaL_checklstring(L, 1, &n);
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int mdlen = 0, i;
  char hex[2 * EVP_MAX_MD_SIZE + 1];
  if (EVP_Digest(s, n, md, &mdlen, EVP_sha1(), NULL) != 1) return luaL_error(L, "leadconnector: SHA-1 failed");
  for (i = 0; i < mdlen; i++) snprintf(hex + 2 * i, 3, "%02x", md[i]);
  lua_pushlstring(L, hex, 2 * (size_t)mdlen);
  return 1;
}

static const luaL_Reg conn_methods[] = {
    {"command", l_redis_command}, {"close", l_redis_close}, {"closed", l_redis_closed}, {NULL, NULL}};

void lc_redis_init(lua_State *L) {
  if (lc_newmetatable(L, LC_REDIS_MT)) {
    lua_newtable(L);
    lc_setfuncs(L, conn_methods, 0);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, l_redis_close);
    lua_setfield(L, -2, "__gc");
    lua_pushcfunction(L, l_redis_close);
    lua_setfield(L, -2, "__close");
  }
  lua_pop(L, 1);
}

const luaL_Reg lc_redis_funcs[] = {{"redis_connect", l_redis_connect}, {"sha1_hex", l_sha1_hex}, {NULL, NULL}};
