/* object.c - leadconnector.Message and leadconnector.Conversation.
 *
 * Each object is a small userdata whose user value is the decoded answer (a table the user never sees directly),
 * kept as cjson made it: JSON null and integral floats are turned into nil and integers when a field is read or
 * copied, so an answer costs nothing beyond its decoding until its fields are used.
 * No reference from C to a Lua value is kept anywhere else, so the collector owns the lifetime entirely.
 * Fields read as obj.field with the API's names, including fields the API adds later; nested tables come back as
 * fresh copies, so nothing a caller does to them can change the object (read-only all the way down). */
#include <stdio.h>
#include <string.h>

#include "lc.h"

typedef struct {
  int kind;
} lc_object;

static const char *const OBJ_MTS[] = {LC_MESSAGE_MT, LC_CONVERSATION_MT};

static int obj_kind(lua_State *L, int idx) {
  int i;
  for (i = 0; i < 2; i++)
    if (lc_testudata(L, idx, OBJ_MTS[i])) return i;
  return -1;
}

static void check_obj(lua_State *L, int idx) {
  if (obj_kind(L, idx) < 0) luaL_argerror(L, idx, "leadconnector.Message or leadconnector.Conversation expected");
}

void lc_push_object(lua_State *L, const char *mt, int tidx) {
  lc_object *o;
  tidx = lc_absindex(L, tidx);
  o = (lc_object *)lc_newuserdata(L, sizeof *o);
  o->kind = strcmp(mt, LC_MESSAGE_MT) == 0 ? 0 : 1;
  lua_pushvalue(L, tidx);
  lc_setuv(L, -2);
  luaL_getmetatable(L, mt);
  lua_setmetatable(L, -2);
}

static int obj_to_table(lua_State *L) {
  check_obj(L, 1);
  lc_getuv(L, 1);
  lc_deepcopy(L, -1, 0);
  return 1;
}

static int obj_index(lua_State *L) {
  /* Methods first (upvalue 1), then the answer's fields. */
  lua_settop(L, 2);
  if (lua_type(L, 2) == LUA_TSTRING) {
    lua_pushvalue(L, 2);
    lua_rawget(L, lua_upvalueindex(1));
    if (!lua_isnil(L, -1)) return 1;
    lua_pop(L, 1);
  }
  lc_getuv(L, 1);
  lua_pushvalue(L, 2);
  lua_rawget(L, -2);
  lc_push_plain(L, -1); /* nested tables come back as copies: nothing a caller does reaches the object */
  return 1;
}

static int obj_newindex(lua_State *L) {
  const char *mt = obj_kind(L, 1) == 0 ? LC_MESSAGE_MT : LC_CONVERSATION_MT;
  return luaL_error(L, "%s is read-only (use obj:to_table() for a copy you can change)", mt);
}

static int obj_eq(lua_State *L) {
  int ka = obj_kind(L, 1), kb = obj_kind(L, 2);
  if (ka < 0 || ka != kb) {
    lua_pushboolean(L, 0);
    return 1;
  }
  lc_getuv(L, 1);
  lua_getfield(L, -1, "id");
  lc_getuv(L, 2);
  lua_getfield(L, -1, "id");
  lua_pushboolean(L, lua_type(L, -1) == LUA_TSTRING && lua_rawequal(L, -1, -3));
  return 1;
}

/* Appends field k of table t as `k=value`, strings quoted and cut to max bytes, control characters escaped. */
static void add_field(lua_State *L, lc_line *b, int t, const char *k, size_t max, int *first) {
  lua_getfield(L, t, k);
  if (lua_isnil(L, -1) || lc_is_null(L, -1)) {
    lua_pop(L, 1);
    return;
  }
  {
    char tmp[64];
    int ty = lua_type(L, -1);
    if (ty == LUA_TSTRING) {
      size_t n, i;
      const char *s = lua_tolstring(L, -1, &n);
      lua_pop(L, 1); /* s stays valid: the string is still referenced by t */
      lc_line_adds(b, *first ? "" : ", ");
      lc_line_adds(b, k);
      lc_line_adds(b, "=\"");
      for (i = 0; i < n && i < max; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') {
          { char ch_ = '\\'; lc_line_add(b, &ch_, 1); }
          { char ch_ = (char)c; lc_line_add(b, &ch_, 1); }
        } else if (c < 0x20 || c == 0x7f) {
          snprintf(tmp, sizeof tmp, "\\%u", (unsigned)c);
          lc_line_adds(b, tmp);
        } else {
          { char ch_ = (char)c; lc_line_add(b, &ch_, 1); }
        }
      }
      lc_line_adds(b, n > max ? "...\"" : "\"");
    } else {
      if (ty == LUA_TNUMBER) {
#if LC_HAS_INTEGERS
        if (lua_isinteger(L, -1))
          snprintf(tmp, sizeof tmp, LUA_INTEGER_FMT, (LUAI_UACINT)lua_tointeger(L, -1));
        else
#endif
          snprintf(tmp, sizeof tmp, "%.14g", (double)lua_tonumber(L, -1));
      } else if (ty == LUA_TBOOLEAN) {
        snprintf(tmp, sizeof tmp, "%s", lua_toboolean(L, -1) ? "true" : "false");
      } else {
        snprintf(tmp, sizeof tmp, "<%s>", lua_typename(L, ty));
      }
      lua_pop(L, 1);
      lc_line_adds(b, *first ? "" : ", ");
      lc_line_adds(b, k);
      { char ch_ = '='; lc_line_add(b, &ch_, 1); }
      lc_line_adds(b, tmp);
    }
    *first = 0;
  }
}

void lc_add_field(lua_State *L, lc_line *b, int t, const char *k, size_t max, int *first) { add_field(L, b, t, k, max, first); }

static int obj_tostring(lua_State *L) {
  static const char *const msg_fields[] = {"id", "messageType", "direction", "status", "contactId", "body", NULL};
  static const char *const conv_fields[] = {"id", "contactId", "type", "unreadCount", NULL};
  lc_line b;
  int kind = obj_kind(L, 1), t, first = 1;
  const char *const *f;
  check_obj(L, 1);
  lc_getuv(L, 1);
  t = lua_gettop(L);
  b.n = 0;
  lc_line_adds(&b, kind == 0 ? LC_MESSAGE_MT "{" : LC_CONVERSATION_MT "{");
  for (f = kind == 0 ? msg_fields : conv_fields; *f; f++) add_field(L, &b, t, *f, strcmp(*f, "body") ? 64 : 40, &first);
  lc_line_adds(&b, "}");
  lua_pushlstring(L, b.s, b.n);
  return 1;
}

static int obj_next(lua_State *L) {
  lua_settop(L, 2);
  if (lua_next(L, 1)) return 2;
  lua_pushnil(L);
  return 1;
}

/* pairs() of the (already checked) userdata at 1 whose user value holds its fields: walks a copy, so the loop body
   may do anything. The messages' and conversations' __pairs here, the webhook events' in webhook.c. */
int lc_pairs_copy(lua_State *L) {
  lua_pushcfunction(L, obj_next);
  lc_getuv(L, 1);
  lc_deepcopy(L, -1, 0);
  lua_remove(L, -2);
  lua_pushnil(L);
  return 3;
}

static int obj_pairs(lua_State *L) {
  check_obj(L, 1);
  return lc_pairs_copy(L);
}

static const luaL_Reg obj_methods[] = {{"to_table", obj_to_table}, {NULL, NULL}};

static const luaL_Reg obj_meta[] = {{"__newindex", obj_newindex}, {"__eq", obj_eq},   {"__tostring", obj_tostring},
                                    {"__pairs", obj_pairs},       {NULL, NULL}};

/* core.wrap(kind, table) - builds an object from a table (used by tests and by transports written in Lua). */
static int l_wrap(lua_State *L) {
  static const char *const kinds[] = {"message", "conversation", NULL};
  int k = luaL_checkoption(L, 1, NULL, kinds);
  luaL_checktype(L, 2, LUA_TTABLE);
  lc_push_object(L, OBJ_MTS[k], 2);
  return 1;
}

static int l_typeof(lua_State *L) {
  int k = obj_kind(L, 1);
  if (k < 0) lua_pushnil(L);
  else lua_pushstring(L, k == 0 ? "Message" : "Conversation");
  return 1;
}

const luaL_Reg lc_object_funcs[] = {{"wrap", l_wrap}, {"typeof", l_typeof}, {NULL, NULL}};

void lc_object_init(lua_State *L) {
  int i;
  for (i = 0; i < 2; i++) {
    lc_newmetatable(L, OBJ_MTS[i]);
    lc_setfuncs(L, obj_meta, 0);
    lua_newtable(L);
    lc_setfuncs(L, obj_methods, 0);
    lua_pushcclosure(L, obj_index, 1);
    lua_setfield(L, -2, "__index");
    lua_pushstring(L, OBJ_MTS[i]);
    lua_setfield(L, -2, "__metatable");
    lua_pop(L, 1);
  }
}
