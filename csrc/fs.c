/* fs.c - the two file primitives the OAuth file_store needs that plain Lua lacks: an advisory lock (flock) with a
 * time limit, and an atomic, private write (a 0600 temp file, fsync, rename).
 *
 * core.fs_lock(path, timeout_s) -> lock | nil, message
 *   Opens (creating, mode 0600) path and takes an exclusive flock on it, trying for up to timeout_s seconds. The
 *   kernel drops the lock when the process dies. lock:unlock() (idempotent, also __gc) releases it and closes
 *   the file.
 * core.fs_write(path, data) -> true | nil, message
 *   Writes data to a new file beside path (O_EXCL, mode 0600), flushes it to disk and renames it over path: a
 *   reader sees the old content or the new one, never a part.
 * core.time() -> wall-clock seconds since the epoch, with a fraction. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "lc.h"

#define LC_FSLOCK_MT "leadconnector.FileLock"

typedef struct {
  int fd;
} lc_fslock;

static void fslock_release(lc_fslock *l) {
  if (l->fd >= 0) {
    flock(l->fd, LOCK_UN);
    close(l->fd);
    l->fd = -1;
  }
}

static int push_errno(lua_State *L, const char *what, const char *path, int e) {
  lua_pushnil(L);
  lua_pushfstring(L, "%s %s: %s", what, path, strerror(e));
  return 2;
}

static int l_fs_lock(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  double timeout = luaL_optnumber(L, 2, 0), stop;
  lc_fslock *l = (lc_fslock *)lc_newuserdata(L, sizeof *l);
  l->fd = -1;
  luaL_getmetatable(L, LC_FSLOCK_MT);
  lua_setmetatable(L, -2);
  l->fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (l->fd < 0) return push_errno(L, "cannot open lock file", path, errno);
  if (timeout > 3600) timeout = 3600;
  stop = lc_monotonic() + (timeout > 0 ? timeout : 0);
  for (;;) {
    struct timespec ts = {0, 2000000}; /* 2 ms between tries */
    if (flock(l->fd, LOCK_EX | LOCK_NB) == 0) return 1;
    if (errno != EWOULDBLOCK && errno != EINTR) {
      int e = errno;
      fslock_release(l);
      return push_errno(L, "cannot lock", path, e);
    }
    if (lc_monotonic() >= stop) {
      fslock_release(l);
      lua_pushnil(L);
      lua_pushfstring(L, "timeout: %s stayed locked by another process", path);
      return 2;
    }
    nanosleep(&ts, NULL);
  }
}

static int l_fslock_unlock(lua_State *L) {
  lc_fslock *l = (lc_fslock *)luaL_checkudata(L, 1, LC_FSLOCK_MT);
  fslock_release(l);
  return 0;
}

static int l_fs_write(lua_State *L) {
  size_t n, plen, off = 0;
  const char *path = luaL_checklstring(L, 1, &plen);
  const char *data = luaL_checklstring(L, 2, &n);
  char *tmp;
  int fd, e;
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  luaL_addlstring(&b, path, plen);
  /* via long long: the microseconds of the monotonic clock do not fit an int */
  lua_pushfstring(L, ".tmp.%d.%d", (int)getpid(), (int)((long long)(lc_monotonic() * 1e6) & 0x7fffffff));
  luaL_addvalue(&b);
  luaL_pushresult(&b);
  tmp = (char *)lua_tostring(L, -1); /* stays alive on the stack */
  fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) return push_errno(L, "cannot create", tmp, errno);
  while (off < n) {
    ssize_t w = write(fd, data + off, n - off);
    if (w < 0) {
      if (errno == EINTR) continue;
      goto failed;
    }
    off += (size_t)w;
  }
  if (fsync(fd) != 0) goto failed;
  if (close(fd) != 0) {
    fd = -1;
    goto failed;
  }
  fd = -1;
  if (rename(tmp, path) != 0) goto failed;
  lua_pushboolean(L, 1);
  return 1;
failed:
  e = errno;
  if (fd >= 0) close(fd);
  unlink(tmp);
  return push_errno(L, "cannot write", path, e);
}

/* core.time() -> seconds since the epoch, with a fraction (token expiry times are shared between processes and
 * machines, so they are wall-clock times; os.time() counts whole seconds only). */
static int l_time(lua_State *L) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  lua_pushnumber(L, (lua_Number)ts.tv_sec + (lua_Number)ts.tv_nsec / 1e9);
  return 1;
}

const luaL_Reg lc_fs_funcs[] = {{"fs_lock", l_fs_lock}, {"fs_write", l_fs_write}, {"time", l_time}, {NULL, NULL}};

void lc_fs_init(lua_State *L) {
  if (lc_newmetatable(L, LC_FSLOCK_MT)) {
    lua_newtable(L);
    lua_pushcfunction(L, l_fslock_unlock);
    lua_setfield(L, -2, "unlock");
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, l_fslock_unlock);
    lua_setfield(L, -2, "__gc");
  }
  lua_pop(L, 1);
}
