/* validate.c - everything checked before a byte is sent, and the request bodies built from it.
 *
 * One pass over the caller's table both validates and writes the JSON body, field by field, from the schemas
 * below (the field lists of ../shared/API.md §1). A failure leaves nothing behind: the partly written body lives in
 * a userdata-owned buffer on the Lua stack and is freed with it. Errors name the field ("forward.isForwarded",
 * "attachments[2]") and never echo an id or a token. */
#include <stdint.h>
#include <stdio.h>
#include <math.h>
#include <string.h>
#include <time.h>

#include "lc.h"

/* --- checks on bytes ----------------------------------------------------------------------------------------- */

static int utf8_valid(const unsigned char *s, size_t n) {
  size_t i = 0;
  while (i < n) {
    unsigned c = s[i];
    size_t len;
    uint32_t cp;
    if (c < 0x80) {
      i++;
      continue;
    }
    if (c >= 0xc2 && c <= 0xdf) len = 2, cp = c & 0x1f;
    else if (c >= 0xe0 && c <= 0xef) len = 3, cp = c & 0x0f;
    else if (c >= 0xf0 && c <= 0xf4) len = 4, cp = c & 0x07;
    else return 0;
    if (i + len > n) return 0;
    {
      size_t k;
      for (k = 1; k < len; k++) {
        if ((s[i + k] & 0xc0) != 0x80) return 0;
        cp = (cp << 6) | (s[i + k] & 0x3f);
      }
    }
    if ((len == 3 && (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff))) || (len == 4 && (cp < 0x10000 || cp > 0x10ffff)))
      return 0;
    i += len;
  }
  return 1;
}

static int has_ctl(const char *s, size_t n) {
  size_t i;
  for (i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    if (c < 0x20 || c == 0x7f) return 1;
  }
  return 0;
}

int lc_check_token(const char *s, size_t n, char *why, size_t whylen) {
  size_t i;
  if (n == 0) {
    snprintf(why, whylen, "token must not be empty");
    return 0;
  }
  for (i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    if (c <= 0x20 || c >= 0x7f) {
      snprintf(why, whylen, "token has a character that cannot go in an HTTP header (at byte %u)", (unsigned)(i + 1));
      return 0;
    }
  }
  return 1;
}

#define UNRESERVED(ch)                                                                                                 \
  (((ch) >= 'A' && (ch) <= 'Z') || ((ch) >= 'a' && (ch) <= 'z') || ((ch) >= '0' && (ch) <= '9') || (ch) == '-' ||     \
   (ch) == '.' || (ch) == '_' || (ch) == '~')

/* --- schemas: the catalogue's field lists, compiled once into C structs -------------------------------------- *
 * core.compile(schema) turns a catalogue schema (a list of fields, README "The operation catalogue") into a
 * userdata the walkers below read without touching Lua tables of the schema again. Every block it allocates is a
 * userdata kept in the root's user value (a table), names and enum values are Lua strings kept there too: the
 * collector owns all of it, nothing is malloc'd. */

enum ftype { F_STR, F_ID, F_ENUM, F_NUM, F_INT, F_BOOL, F_ARR, F_OBJ, F_ANY, F_STR_OR_OBJ };
static const char *const FTYPES[] = {"string", "id",     "enum", "number", "integer", "boolean",
                                     "array",  "object", "any",  "string_or_object", NULL};

struct cschema;
typedef struct cfield {
  const char *name; /* NULL for array items */
  size_t nlen;
  enum ftype type;
  int required;
  const char **enums; /* F_ENUM: NULL-terminated */
  const struct cschema *sub; /* F_OBJ / F_STR_OR_OBJ with fields (NULL: any table) */
  const struct cfield *items; /* F_ARR */
  size_t max_length; /* 0: none (strings, in bytes) */
  int comma_list;    /* F_ENUM: the value may list several of the values, separated by commas */
} cfield;

typedef struct cschema {
  const cfield *fields;
  int n;
} cschema;

#define LC_SCHEMA_MT "leadconnector.Schema"
#define MAX_FIELDS 64 /* the walker's bitmask of required fields seen */

static void *anchored(lua_State *L, int anchor, size_t n) {
  void *p = lc_newuserdata(L, n ? n : 1);
  memset(p, 0, n ? n : 1);
  lua_rawseti(L, anchor, (int)lc_rawlen(L, anchor) + 1);
  return p;
}

static const char *anchored_string(lua_State *L, int anchor, int idx, size_t *n) {
  const char *s = lua_tolstring(L, idx, n);
  lua_pushvalue(L, idx);
  lua_rawseti(L, anchor, (int)lc_rawlen(L, anchor) + 1);
  return s;
}

static const cschema *compile_schema(lua_State *L, int t, int anchor, int depth);

static void compile_field(lua_State *L, int t, int anchor, cfield *f, int depth) {
  int top = lua_gettop(L);
  luaL_checkstack(L, 8, "leadconnector: schema nested too deeply");
  if (depth > 16) luaL_error(L, "leadconnector: schema nested too deeply");
  if (lua_type(L, t) != LUA_TTABLE) luaL_error(L, "leadconnector: a schema field must be a table");
  lua_getfield(L, t, "name");
  if (lua_type(L, -1) == LUA_TSTRING) f->name = anchored_string(L, anchor, -1, &f->nlen);
  lua_getfield(L, t, "type");
  {
    const char *ty = lua_tostring(L, -1);
    int i;
    for (i = 0; ty && FTYPES[i] && strcmp(FTYPES[i], ty) != 0; i++) {
    }
    if (!ty || !FTYPES[i]) luaL_error(L, "leadconnector: schema field '%s' has an unknown type", f->name ? f->name : "?");
    f->type = (enum ftype)i;
  }
  lua_getfield(L, t, "required");
  f->required = lua_toboolean(L, -1);
  lua_getfield(L, t, "comma_list");
  f->comma_list = lua_toboolean(L, -1);
  lua_getfield(L, t, "max_length");
  if (lua_type(L, -1) == LUA_TNUMBER && lua_tonumber(L, -1) >= 1) f->max_length = (size_t)lua_tonumber(L, -1);
  lua_settop(L, top);
  if (f->type == F_ENUM) {
    size_t n, i;
    lua_getfield(L, t, "enum");
    if (lua_type(L, -1) != LUA_TTABLE) luaL_error(L, "leadconnector: enum field '%s' has no values", f->name ? f->name : "?");
    n = lc_rawlen(L, -1);
    f->enums = (const char **)anchored(L, anchor, sizeof(char *) * (n + 1));
    for (i = 0; i < n; i++) {
      size_t len;
      lua_rawgeti(L, -1, (int)i + 1);
      if (lua_type(L, -1) != LUA_TSTRING) luaL_error(L, "leadconnector: enum values must be strings");
      f->enums[i] = anchored_string(L, anchor, -1, &len);
      lua_pop(L, 1);
    }
    f->enums[n] = NULL;
  }
  if (f->type == F_OBJ || f->type == F_STR_OR_OBJ) {
    lua_getfield(L, t, "fields");
    if (lua_type(L, -1) == LUA_TTABLE) f->sub = compile_schema(L, lua_gettop(L), anchor, depth + 1);
  }
  if (f->type == F_ARR) {
    cfield *it = (cfield *)anchored(L, anchor, sizeof *it);
    lua_getfield(L, t, "items");
    if (lua_type(L, -1) == LUA_TTABLE) compile_field(L, lua_gettop(L), anchor, it, depth + 1);
    else it->type = F_ANY;
    f->items = it;
  }
  lua_settop(L, top);
}

static const cschema *compile_schema(lua_State *L, int t, int anchor, int depth) {
  cschema *s = (cschema *)anchored(L, anchor, sizeof *s);
  size_t n = lc_rawlen(L, t), i;
  cfield *fs;
  if (n > MAX_FIELDS) luaL_error(L, "leadconnector: a schema holds at most %d fields", MAX_FIELDS);
  fs = (cfield *)anchored(L, anchor, sizeof *fs * n);
  for (i = 0; i < n; i++) {
    lua_rawgeti(L, t, (int)i + 1);
    compile_field(L, lua_gettop(L), anchor, &fs[i], depth);
    if (fs[i].name == NULL) luaL_error(L, "leadconnector: schema field %d has no name", (int)i + 1);
    lua_pop(L, 1);
  }
  s->fields = fs;
  s->n = (int)n;
  return s;
}

typedef struct lc_schema_ud {
  const cschema *s;
} lc_schema_ud;

/** core.compile(schema) -> a compiled schema (userdata) for core.build / build_query / build_multipart.
 * A malformed schema is a misuse: it raises. */
static int l_compile(lua_State *L) {
  lc_schema_ud *u;
  int anchor;
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_settop(L, 1);
  u = (lc_schema_ud *)lc_newuserdata(L, sizeof *u);
  u->s = NULL;
  lua_newtable(L);
  anchor = lua_gettop(L);
  u->s = compile_schema(L, 1, anchor, 0);
  lc_setuv(L, 2); /* pops the anchor table */
  luaL_getmetatable(L, LC_SCHEMA_MT);
  lua_setmetatable(L, 2);
  return 1;
}

static const cschema *check_schema(lua_State *L, int idx) {
  lc_schema_ud *u = (lc_schema_ud *)luaL_checkudata(L, idx, LC_SCHEMA_MT);
  return u->s;
}

/* --- the one-pass validator and writer ------------------------------------------------------------------------ */

enum out_mode { OUT_JSON, OUT_QUERY, OUT_FORM };

typedef struct ctx {
  lua_State *L;
  lc_buf *b;
  int allow_unknown;
  const char *what; /* "field" or "query parameter" */
  int parts, nparts; /* OUT_FORM: the stack slot of the list of parts being made, and its length */
  char path[120];  /* dotted name of the field being looked at */
  char why[400];   /* set on failure */
  char field[160]; /* the field the failure is about */
} ctx;

static int fail(ctx *c, const char *fmt, const char *extra) {
  char tmp[200];
  snprintf(c->field, sizeof c->field, "%s", c->path);
  snprintf(tmp, sizeof tmp, fmt, extra ? extra : "");
  snprintf(c->why, sizeof c->why, "%s '%s' %s", c->what, c->path, tmp);
  return 0;
}

/* A field's name is appended on every field of every body (for the error that may follow), so it is copied by
 * hand: snprintf cost about 780 instructions a field, a third of building send_message's body. Same result:
 * cut to fit, always terminated. */
static void path_push(ctx *c, size_t *saved, const char *name, long index) {
  size_t n = strlen(c->path), cap = sizeof c->path, len;
  *saved = n;
  if (index > 0) {
    snprintf(c->path + n, cap - n, "[%ld]", index);
    return;
  }
  if (name == NULL) name = "?";
  if (n > 0 && n + 1 < cap) c->path[n++] = '.';
  len = strlen(name);
  if (len > cap - 1 - n) len = cap - 1 - n;
  memcpy(c->path + n, name, len);
  c->path[n + len] = '\0';
}
static void path_pop(ctx *c, size_t saved) { c->path[saved] = '\0'; }

static int check_string(ctx *c, int idx, int is_id, size_t max_length) {
  size_t n;
  const char *s;
  if (lua_type(c->L, idx) != LUA_TSTRING) return fail(c, "must be a string, got %s", luaL_typename(c->L, idx));
  s = lua_tolstring(c->L, idx, &n);
  if (is_id) {
    if (n == 0) return fail(c, "must not be empty", NULL);
    if (has_ctl(s, n)) return fail(c, "must not contain control characters", NULL);
  }
  if (!utf8_valid((const unsigned char *)s, n)) return fail(c, "is not valid UTF-8", NULL);
  if (max_length && n > max_length) {
    char tmp[32];
    snprintf(tmp, sizeof tmp, "%lu", (unsigned long)max_length);
    return fail(c, "must be at most %s bytes long", tmp);
  }
  return 1;
}

/* Counts a table's entries and checks they are exactly 1..n. */
static int sequence_length(lua_State *L, int t, size_t *out) {
  size_t count = 0;
  lua_pushnil(L);
  while (lua_next(L, t)) {
    lua_pop(L, 1);
    count++;
#if LC_HAS_INTEGERS
    if (!lua_isinteger(L, -1)) {
      lua_pop(L, 1);
      return 0;
    }
#else
    /* a key past 2^53 or NaN cannot be an index of a sequence; the range test comes before the cast */
    if (lua_type(L, -1) != LUA_TNUMBER || !(lua_tonumber(L, -1) >= 1 && lua_tonumber(L, -1) <= 9007199254740992.0) ||
        lua_tonumber(L, -1) != (lua_Number)(long long)lua_tonumber(L, -1)) {
      lua_pop(L, 1);
      return 0;
    }
#endif
  }
  if (count != lc_rawlen(L, t)) return 0;
  *out = count;
  return 1;
}

static int write_object(ctx *c, int t, const cschema *s);

/* Any value JSON can hold, for unknown fields (allow_unknown), "any" and free objects: every string and every key
 * at any depth must be valid UTF-8, numbers finite, tables arrays (1..n) or maps with string keys. */
static int write_any(ctx *c, int v, int depth) {
  lua_State *L = c->L;
  switch (lua_type(L, v)) {
  case LUA_TSTRING:
    if (!check_string(c, v, 0, 0)) return 0;
    lc_json_add_string(L, c->b, v);
    return 1;
  case LUA_TNUMBER:
    if (!lc_json_add_number(L, c->b, v)) return fail(c, "must be a finite number", NULL);
    return 1;
  case LUA_TBOOLEAN:
    lc_buf_adds(L, c->b, lua_toboolean(L, v) ? "true" : "false");
    return 1;
  case LUA_TLIGHTUSERDATA:
    if (lc_is_null(L, v)) {
      lc_buf_adds(L, c->b, "null");
      return 1;
    }
    break;
  case LUA_TTABLE: {
    size_t n, i;
    int first = 1;
    if (depth > 32) return fail(c, "is nested too deeply%s", "");
    luaL_checkstack(L, 6, "leadconnector: fields nested too deeply");
    if (sequence_length(L, v, &n) && n > 0) {
      lc_buf_addc(L, c->b, '[');
      for (i = 1; i <= n; i++) {
        size_t saved;
        int ok;
        if (i > 1) lc_buf_addc(L, c->b, ',');
        lua_rawgeti(L, v, (int)i);
        path_push(c, &saved, NULL, (long)i);
        ok = write_any(c, lua_gettop(L), depth + 1);
        path_pop(c, saved);
        lua_pop(L, 1);
        if (!ok) return 0;
      }
      lc_buf_addc(L, c->b, ']');
      return 1;
    }
    lc_buf_addc(L, c->b, '{');
    lua_pushnil(L);
    while (lua_next(L, v)) {
      int k = lua_gettop(L) - 1;
      size_t kn, saved;
      const char *key;
      int ok;
      if (lua_type(L, k) != LUA_TSTRING) {
        lua_pop(L, 2);
        return fail(c, "has a key of type %s; JSON objects are keyed by strings", luaL_typename(L, k));
      }
      key = lua_tolstring(L, k, &kn);
      if (!utf8_valid((const unsigned char *)key, kn)) {
        lua_pop(L, 2);
        return fail(c, "has a key that is not valid UTF-8%s", "");
      }
      if (!first) lc_buf_addc(L, c->b, ',');
      first = 0;
      lc_json_add_string(L, c->b, k);
      lc_buf_addc(L, c->b, ':');
      path_push(c, &saved, key, 0);
      ok = write_any(c, k + 1, depth + 1);
      path_pop(c, saved);
      lua_pop(L, 1);
      if (!ok) {
        lua_pop(L, 1);
        return 0;
      }
    }
    lc_buf_addc(L, c->b, '}');
    return 1;
  }
  default:
    break;
  }
  return fail(c, "cannot be written as JSON (%s)", luaL_typename(L, v));
}

static int check_enum(ctx *c, int v, const cfield *f) {
  lua_State *L = c->L;
  const char *const *e;
  size_t n;
  const char *s;
  if (lua_type(L, v) != LUA_TSTRING) return fail(c, "must be a string, got %s", luaL_typename(L, v));
  s = lua_tolstring(L, v, &n);
  if (f->comma_list) { /* "TYPE_SMS,TYPE_CALL": each piece one of the values */
    const char *p = s, *end = s + n;
    int ok = 1;
    while (ok) {
      const char *q = memchr(p, ',', (size_t)(end - p));
      size_t len = q ? (size_t)(q - p) : (size_t)(end - p);
      for (e = f->enums; *e; e++)
        if (strlen(*e) == len && memcmp(*e, p, len) == 0) break;
      if (!*e) ok = 0;
      if (!q) break;
      p = q + 1;
    }
    if (ok) return 1;
  } else {
    for (e = f->enums; *e; e++)
      if (strlen(*e) == n && memcmp(*e, s, n) == 0) return 1;
  }
  {
    char list[200] = "";
    size_t used = 0;
    for (e = f->enums; *e && used < sizeof list - 1; e++) {
      int k = snprintf(list + used, sizeof list - used, "%s%s", used ? ", " : "", *e);
      if (k < 0) break;
      used += (size_t)k;
    }
    if (used >= sizeof list) used = sizeof list - 1;
    return fail(c, "must be one of %s", list);
  }
}

static int write_value(ctx *c, int v, const cfield *f);

static int write_array(ctx *c, int v, const cfield *f) {
  lua_State *L = c->L;
  size_t n, i;
  const cfield *it = f->items;
  if (lua_type(L, v) != LUA_TTABLE || !sequence_length(L, v, &n))
    return fail(c, it->type == F_STR ? "must be an array of strings (a Lua sequence), got %s"
                                     : "must be an array (a Lua sequence), got %s",
                lua_type(L, v) == LUA_TTABLE ? "a table with other keys" : luaL_typename(L, v));
  luaL_checkstack(L, 6, "leadconnector: fields nested too deeply");
  lc_buf_addc(L, c->b, '[');
  for (i = 1; i <= n; i++) {
    size_t saved;
    int e, ok;
    lua_rawgeti(L, v, (int)i);
    e = lua_gettop(L);
    path_push(c, &saved, NULL, (long)i);
    if (i > 1) lc_buf_addc(L, c->b, ',');
    ok = write_value(c, e, it);
    path_pop(c, saved);
    if (!ok) return 0;
    lua_remove(L, e);
  }
  lc_buf_addc(L, c->b, ']');
  return 1;
}

/* An object field: its own fields when the schema lists them, else any table of named fields. */
static int write_table(ctx *c, int v, const cfield *f) {
  lua_State *L = c->L;
  size_t n;
  if (lua_type(L, v) != LUA_TTABLE) return fail(c, "must be a table, got %s", luaL_typename(L, v));
  if (f->sub != NULL) return write_object(c, v, f->sub);
  if (sequence_length(L, v, &n) && n > 0) return fail(c, "must be a table of named fields, got an array%s", "");
  return write_any(c, v, 1);
}

static int write_value(ctx *c, int v, const cfield *f) {
  lua_State *L = c->L;
  lc_buf *b = c->b;
  switch (f->type) {
  case F_STR:
  case F_ID:
    if (!check_string(c, v, f->type == F_ID, f->max_length)) return 0;
    lc_json_add_string(L, b, v);
    return 1;
  case F_ENUM:
    if (!check_enum(c, v, f)) return 0;
    lc_json_add_string(L, b, v);
    return 1;
  case F_NUM:
  case F_INT:
    if (lua_type(L, v) != LUA_TNUMBER)
      return fail(c, f->type == F_NUM ? "must be a number, got %s" : "must be an integer, got %s", luaL_typename(L, v));
    if (f->type == F_INT) {
      lua_Number d = lua_tonumber(L, v);
      if (d != d || d != (lua_Number)(long long)(d > -9e18 && d < 9e18 ? d : 0)) return fail(c, "must be an integer%s", "");
    }
    if (!lc_json_add_number(L, b, v)) return fail(c, "must be a finite number", NULL);
    return 1;
  case F_BOOL:
    if (lua_type(L, v) != LUA_TBOOLEAN) return fail(c, "must be a boolean, got %s", luaL_typename(L, v));
    lc_buf_adds(L, b, lua_toboolean(L, v) ? "true" : "false");
    return 1;
  case F_STR_OR_OBJ:
    if (lua_type(L, v) == LUA_TSTRING) {
      if (!check_string(c, v, 0, 0)) return 0;
      lc_json_add_string(L, b, v);
      return 1;
    }
    if (lua_type(L, v) != LUA_TTABLE) {
      char shape[120] = "{";
      int i;
      size_t used = 1;
      for (i = 0; f->sub && i < f->sub->n && used < sizeof shape - 12; i++)
        used += (size_t)snprintf(shape + used, sizeof shape - used, "%s%s=...", i ? ", " : "", f->sub->fields[i].name);
      snprintf(shape + used, sizeof shape - used, "}");
      {
        char tmp[200];
        snprintf(tmp, sizeof tmp, "must be a string or a table %s, got %%s", shape);
        return fail(c, tmp, luaL_typename(L, v));
      }
    }
    return write_table(c, v, f);
  case F_OBJ:
    return write_table(c, v, f);
  case F_ARR:
    return write_array(c, v, f);
  case F_ANY:
    return write_any(c, v, 1);
  }
  return 0;
}

static const cfield *find_field(const cschema *s, const char *k, size_t n) {
  int i;
  for (i = 0; i < s->n; i++)
    if (s->fields[i].name[0] == k[0] && s->fields[i].nlen == n && memcmp(s->fields[i].name, k, n) == 0)
      return &s->fields[i];
  return NULL;
}

static int refuse_unknown(ctx *c, const char *key, size_t n, size_t saved) {
  /* The key is the caller's own text; show it cleaned and cut. */
  char shown[48];
  size_t j;
  for (j = 0; j < n && j < sizeof shown - 1; j++) shown[j] = (key[j] < 0x20 || key[j] == 0x7f) ? '?' : key[j];
  shown[j] = '\0';
  snprintf(c->field, sizeof c->field, "%s", c->path);
  path_pop(c, saved);
  snprintf(c->why, sizeof c->why, "unknown %s '%s%s%s' (pass { allow_unknown = true } to send it anyway)", c->what,
           c->path, c->path[0] ? "." : "", shown);
  return 0;
}

static int key_not_string(ctx *c, int k) {
  snprintf(c->field, sizeof c->field, "%s", c->path);
  snprintf(c->why, sizeof c->why, "%s%s%s has a key of type %s; %ss are named by strings", c->path[0] ? "field '" : "",
           c->path[0] ? c->path : (c->what[0] == 'f' ? "fields" : "query"), c->path[0] ? "'" : "",
           luaL_typename(c->L, k), c->what);
  return 0;
}

static int missing_required(ctx *c, const cschema *s, uint64_t seen) {
  int i;
  for (i = 0; i < s->n; i++) {
    if (s->fields[i].required && !(seen & ((uint64_t)1 << i))) {
      size_t saved;
      path_push(c, &saved, s->fields[i].name, 0);
      return fail(c, "is required", NULL);
    }
  }
  return 1;
}

/* Writes {"k":v,...} for table t, checking every key against the schema. */
static int write_object(ctx *c, int t, const cschema *s) {
  lua_State *L = c->L;
  uint64_t seen = 0;
  int first = 1;
  luaL_checkstack(L, 8, "leadconnector: fields nested too deeply");
  lc_buf_addc(L, c->b, '{');
  lua_pushnil(L);
  while (lua_next(L, t)) {
    int k = lua_gettop(L) - 1, v = lua_gettop(L);
    size_t n, saved;
    const char *key;
    const cfield *f;
    if (lua_type(L, k) != LUA_TSTRING) return key_not_string(c, k);
    key = lua_tolstring(L, k, &n);
    f = find_field(s, key, n);
    path_push(c, &saved, key, 0);
    if (f == NULL && !c->allow_unknown) return refuse_unknown(c, key, n, saved);
    if (!first) lc_buf_addc(L, c->b, ',');
    first = 0;
    if (f != NULL) {
      lc_buf_addc(L, c->b, '"');
      lc_buf_add(L, c->b, key, n);
      lc_buf_adds(L, c->b, "\":");
      if (!write_value(c, v, f)) return 0;
      seen |= (uint64_t)1 << (f - s->fields);
    } else {
      if (!utf8_valid((const unsigned char *)key, n)) return fail(c, "is not a valid UTF-8 name", NULL);
      lc_json_add_string(L, c->b, k);
      lc_buf_addc(L, c->b, ':');
      if (!write_any(c, v, 1)) return 0;
    }
    path_pop(c, saved);
    lua_pop(L, 1);
  }
  if (!missing_required(c, s, seen)) return 0;
  lc_buf_addc(L, c->b, '}');
  return 1;
}

/* --- query strings and form fields ---------------------------------------------------------------------------- */

static void add_encoded(lua_State *L, lc_buf *b, const char *s, size_t n) {
  static const char hex[] = "0123456789ABCDEF";
  size_t i;
  for (i = 0; i < n; i++) {
    unsigned char ch = (unsigned char)s[i];
    if (UNRESERVED(ch)) {
      lc_buf_addc(L, b, (char)ch);
    } else {
      lc_buf_addc(L, b, '%');
      lc_buf_addc(L, b, hex[ch >> 4]);
      lc_buf_addc(L, b, hex[ch & 15]);
    }
  }
}

/* Checks scalar v against f (F_ANY: any string, number or boolean) and pushes its text form. */
static int scalar_text(ctx *c, int v, const cfield *f) {
  lua_State *L = c->L;
  switch (f->type) {
  case F_STR:
  case F_ID:
    if (!check_string(c, v, f->type == F_ID, f->max_length)) return 0;
    lua_pushvalue(L, v);
    return 1;
  case F_ENUM:
    if (!check_enum(c, v, f)) return 0;
    lua_pushvalue(L, v);
    return 1;
  case F_BOOL:
    if (lua_type(L, v) != LUA_TBOOLEAN) return fail(c, "must be a boolean, got %s", luaL_typename(L, v));
    lua_pushstring(L, lua_toboolean(L, v) ? "true" : "false");
    return 1;
  case F_NUM:
  case F_INT:
  case F_ANY:
  default:
    if (lua_type(L, v) == LUA_TNUMBER) {
      lua_Number d = lua_tonumber(L, v);
      char tmp[40];
      if (d != d || d == (lua_Number)HUGE_VAL || d == -(lua_Number)HUGE_VAL) return fail(c, "must be a finite number", NULL);
      if (f->type == F_INT && (d != (lua_Number)(long long)(d > -9e18 && d < 9e18 ? d : 0)))
        return fail(c, "must be an integer%s", "");
      if (d > -9e15 && d < 9e15 && d == (lua_Number)(long long)d) snprintf(tmp, sizeof tmp, "%lld", (long long)d);
      else snprintf(tmp, sizeof tmp, "%.17g", (double)d);
      lua_pushstring(L, tmp);
      return 1;
    }
    if (f->type == F_ANY && lua_type(L, v) == LUA_TSTRING) {
      if (!check_string(c, v, 0, 0)) return 0;
      lua_pushvalue(L, v);
      return 1;
    }
    if (f->type == F_ANY && lua_type(L, v) == LUA_TBOOLEAN) {
      lua_pushstring(L, lua_toboolean(L, v) ? "true" : "false");
      return 1;
    }
    return fail(c, f->type == F_INT ? "must be an integer, got %s"
                   : f->type == F_NUM ? "must be a number, got %s"
                                      : "must be a string, a number or a boolean, got %s",
                luaL_typename(L, v));
  }
}

static const cfield ANY_SCALAR = {NULL, 0, F_ANY, 0, NULL, NULL, NULL, 0, 0};

/* Emits one parameter (OUT_QUERY: name=value joined by &; OUT_FORM: a multipart part); arrays repeat it. */
static int emit_param(ctx *c, enum out_mode mode, const char *name, size_t nlen, int v, const cfield *f,
                      int *first) {
  lua_State *L = c->L;
  const cfield *it = f;
  size_t n = 1, i;
  int is_arr = 0;
  if (f->type == F_ARR || (f->type == F_ANY && lua_type(L, v) == LUA_TTABLE)) {
    if (lua_type(L, v) != LUA_TTABLE || !sequence_length(L, v, &n))
      return fail(c, "must be an array (a Lua sequence), got %s",
                  lua_type(L, v) == LUA_TTABLE ? "a table with other keys" : luaL_typename(L, v));
    it = f->type == F_ARR ? f->items : &ANY_SCALAR;
    is_arr = 1;
  }
  if (it->type == F_ARR || it->type == F_OBJ || it->type == F_STR_OR_OBJ)
    return fail(c, mode == OUT_QUERY ? "cannot go in a query string (nested values)%s" : "cannot go in a form (nested values)%s", "");
  for (i = 1; i <= n; i++) {
    size_t saved = 0, tn;
    const char *txt;
    int e = v;
    if (is_arr) {
      lua_rawgeti(L, v, (int)i);
      e = lua_gettop(L);
      path_push(c, &saved, NULL, (long)i);
    }
    if (!scalar_text(c, e, it)) return 0;
    txt = lua_tolstring(L, -1, &tn);
    if (mode == OUT_QUERY) {
      lc_buf_addc(L, c->b, *first ? '?' : '&');
      add_encoded(L, c->b, name, nlen);
      lc_buf_addc(L, c->b, '=');
      add_encoded(L, c->b, txt, tn);
    } else {
      if (has_ctl(name, nlen) || memchr(name, '"', nlen)) return fail(c, "has a name that cannot go in a form%s", "");
      lua_createtable(L, 0, 2); /* a part { name =, data = } */
      lua_pushlstring(L, name, nlen);
      lua_setfield(L, -2, "name");
      lua_pushlstring(L, txt, tn);
      lua_setfield(L, -2, "data");
      lua_rawseti(L, c->parts, ++c->nparts);
    }
    *first = 0;
    lua_pop(L, 1);
    if (is_arr) {
      path_pop(c, saved);
      lua_pop(L, 1);
    }
  }
  return 1;
}

/* The flat parameters of table t (query or form fields): known names in the schema's order, then (allow_unknown)
 * the others. Values are scalars or arrays of scalars. */
static int write_params(ctx *c, int t, const cschema *s, enum out_mode mode) {
  lua_State *L = c->L;
  uint64_t seen = 0;
  int first = 1, i, unknown = 0;
  luaL_checkstack(L, 8, "leadconnector: too many values");
  lua_pushnil(L);
  while (lua_next(L, t)) {
    int k = lua_gettop(L) - 1;
    size_t n, saved;
    const char *key;
    const cfield *f;
    if (lua_type(L, k) != LUA_TSTRING) return key_not_string(c, k);
    key = lua_tolstring(L, k, &n);
    f = find_field(s, key, n);
    if (f == NULL) {
      path_push(c, &saved, key, 0);
      if (!c->allow_unknown) return refuse_unknown(c, key, n, saved);
      if (!utf8_valid((const unsigned char *)key, n)) return fail(c, "is not a valid UTF-8 name", NULL);
      path_pop(c, saved);
      unknown = 1;
    } else {
      seen |= (uint64_t)1 << (f - s->fields);
    }
    lua_pop(L, 1);
  }
  if (!missing_required(c, s, seen)) return 0;
  for (i = 0; i < s->n; i++) {
    size_t saved;
    const cfield *f = &s->fields[i];
    if (!(seen & ((uint64_t)1 << i))) continue;
    lua_pushlstring(L, f->name, f->nlen);
    lua_rawget(L, t);
    path_push(c, &saved, f->name, 0);
    if (!emit_param(c, mode, f->name, f->nlen, lua_gettop(L), f, &first)) return 0;
    path_pop(c, saved);
    lua_pop(L, 1);
  }
  if (unknown) {
    lua_pushnil(L);
    while (lua_next(L, t)) {
      size_t n, saved;
      const char *key = lua_tolstring(L, -2, &n);
      if (find_field(s, key, n) == NULL) {
        path_push(c, &saved, key, 0);
        if (!emit_param(c, mode, key, n, lua_gettop(L), &ANY_SCALAR, &first)) return 0;
        path_pop(c, saved);
      }
      lua_pop(L, 1);
    }
  }
  return 1;
}

/* --- entry points ----------------------------------------------------------------------------------------------- */

static int refused(lua_State *L, ctx *c, int top) {
  lc_buf_release(c->b);
  lua_settop(L, top);
  lua_pushnil(L);
  lc_push_error(L, "invalid", "%s", c->why);
  if (c->field[0]) lc_seterrfield_str(L, "field", c->field);
  lc_seterrfield_bool(L, "request_sent", 0);
  return 2;
}

static void ctx_init(ctx *c, lua_State *L, int allow_unknown, const char *what) {
  c->L = L;
  c->allow_unknown = allow_unknown;
  c->what = what;
  c->path[0] = c->why[0] = c->field[0] = '\0';
}

/** core.build(schema, fields [, allow_unknown]) -> json | nil, err
 * Validates the table of body fields against the compiled schema and writes the JSON body in the same pass. */
static int l_build(lua_State *L) {
  ctx c;
  int top;
  const cschema *s = check_schema(L, 1);
  luaL_checktype(L, 2, LUA_TTABLE); /* a non-table is a misuse of the library: it raises */
  ctx_init(&c, L, lua_toboolean(L, 3), "field");
  lua_settop(L, 3);
  c.b = lc_buf_new(L);
  top = lua_gettop(L);
  if (!write_object(&c, 2, s)) return refused(L, &c, top);
  lua_pushlstring(L, c.b->p, c.b->n);
  lc_buf_release(c.b);
  return 1;
}

/** core.build_query(schema, query|nil [, allow_unknown [, prefix]]) -> prefix .. "?a=1&b=x" (prefix alone when
 * nothing is given) | nil, err. Values are percent-encoded (RFC 3986 unreserved kept), arrays repeat the name,
 * numbers go as integers when integral. */
static int l_build_query(lua_State *L) {
  ctx c;
  int top;
  size_t plen = 0;
  const cschema *s = check_schema(L, 1);
  const char *prefix;
  if (!lua_isnoneornil(L, 2)) luaL_checktype(L, 2, LUA_TTABLE);
  prefix = luaL_optlstring(L, 4, "", &plen);
  ctx_init(&c, L, lua_toboolean(L, 3), "query parameter");
  lua_settop(L, 4);
  if (lua_isnil(L, 2)) {
    lua_newtable(L);
    lua_replace(L, 2);
  }
  c.b = lc_buf_new(L);
  top = lua_gettop(L);
  if (plen > 0) lc_buf_add(L, c.b, prefix, plen);
  if (!write_params(&c, 2, s, OUT_QUERY)) return refused(L, &c, top);
  if (c.b->n == 0) lua_pushliteral(L, ""); /* nothing at all: no buffer was ever allocated */
  else lua_pushlstring(L, c.b->p, c.b->n);
  lc_buf_release(c.b);
  return 1;
}

static int bytes_contain(const char *h, size_t hn, const char *needle, size_t nn) {
  size_t i;
  if (nn == 0 || hn < nn) return 0;
  for (i = 0; i + nn <= hn; i++)
    if (h[i] == needle[0] && memcmp(h + i, needle, nn) == 0) return 1;
  return 0;
}

/** core.multipart_parts(schema, fields, files, file_field, max_files, max_file_size [, allow_unknown])
 *    -> parts | nil, err
 * Checks a multipart/form-data request and lists its parts, in order: the fields (scalars; arrays as one part per
 * element) checked against the schema, then one part per file in file_field. files[i] = { name = string,
 * content = string [, content_type = string] }; the limits (count, bytes per file) are checked first.
 * parts[i] = { name =, data = [, filename =, content_type =] }: what the libcurl transport hands to libcurl's mime
 * API, and core.encode_multipart writes for the cosocket transport. */
static int l_multipart_parts(lua_State *L) {
  ctx c;
  int top;
  size_t nfiles, i, fflen;
  const cschema *s = check_schema(L, 1);
  const char *ffield;
  lua_Integer max_files, max_size;
  luaL_checktype(L, 2, LUA_TTABLE);
  luaL_checktype(L, 3, LUA_TTABLE);
  ffield = luaL_checklstring(L, 4, &fflen);
  max_files = luaL_checkinteger(L, 5);
  max_size = luaL_checkinteger(L, 6);
  ctx_init(&c, L, lua_toboolean(L, 7), "field");
  lua_settop(L, 7);
  c.b = lc_buf_new(L); /* unused here; refused() releases it */
  lua_newtable(L);
  c.parts = lua_gettop(L);
  c.nparts = 0;
  top = lua_gettop(L);
  snprintf(c.path, sizeof c.path, "files");
  if (!sequence_length(L, 3, &nfiles)) {
    fail(&c, "must be a list of files (a Lua sequence)%s", "");
    return refused(L, &c, top);
  }
  if (nfiles == 0) {
    fail(&c, "must hold at least one file%s", "");
    return refused(L, &c, top);
  }
  if ((lua_Integer)nfiles > max_files) {
    char tmp[64];
    snprintf(tmp, sizeof tmp, "%lld (got %lu)", (long long)max_files, (unsigned long)nfiles);
    fail(&c, "may hold at most %s files", tmp);
    return refused(L, &c, top);
  }
  for (i = 1; i <= nfiles; i++) {
    size_t n, saved;
    const char *nm;
    int ok = 1;
    lua_rawgeti(L, 3, (int)i);
    path_push(&c, &saved, NULL, (long)i);
    if (lua_type(L, -1) != LUA_TTABLE) ok = fail(&c, "must be a table { name =, content = }, got %s", luaL_typename(L, -1));
    if (ok) {
      lua_getfield(L, -1, "name");
      lua_getfield(L, -2, "content");
      lua_getfield(L, -3, "content_type");
      if (lua_type(L, -3) != LUA_TSTRING || lc_rawlen(L, -3) == 0)
        ok = fail(&c, ".name must be a non-empty string%s", "");
      else if (nm = lua_tolstring(L, -3, &n), has_ctl(nm, n) || !utf8_valid((const unsigned char *)nm, n))
        ok = fail(&c, ".name must be valid UTF-8 without control characters%s", "");
      else if (lua_type(L, -2) != LUA_TSTRING)
        ok = fail(&c, ".content must be a string, got %s", luaL_typename(L, -2));
      else if ((lua_Integer)lc_rawlen(L, -2) > max_size) {
        char tmp[64];
        snprintf(tmp, sizeof tmp, "%lld bytes (got %lu)", (long long)max_size, (unsigned long)lc_rawlen(L, -2));
        ok = fail(&c, "is larger than the limit of %s", tmp);
      } else if (!lua_isnil(L, -1)) {
        const char *ct;
        size_t k;
        if (lua_type(L, -1) != LUA_TSTRING || lc_rawlen(L, -1) == 0 || lc_rawlen(L, -1) > 200) {
          ok = fail(&c, ".content_type must be a short non-empty string%s", "");
        } else {
          ct = lua_tolstring(L, -1, &n);
          for (k = 0; k < n && ok; k++)
            if ((unsigned char)ct[k] < 0x20 || (unsigned char)ct[k] >= 0x7f) ok = fail(&c, ".content_type must be printable ASCII%s", "");
        }
      }
      if (ok) { /* its part, kept aside until the fields are checked */
        lua_createtable(L, 0, 4);
        lua_pushlstring(L, ffield, fflen);
        lua_setfield(L, -2, "name");
        lua_pushvalue(L, -4);
        lua_setfield(L, -2, "filename");
        lua_pushvalue(L, -3);
        lua_setfield(L, -2, "data");
        if (lua_isnil(L, -2)) lua_pushliteral(L, "application/octet-stream");
        else lua_pushvalue(L, -2);
        lua_setfield(L, -2, "content_type");
        lua_replace(L, -5); /* in place of the file table */
        lua_pop(L, 3);
      } else {
        lua_pop(L, 3);
      }
    }
    if (!ok) return refused(L, &c, top);
    path_pop(&c, saved);
  }
  /* the file parts are on the stack above `top`, in order */
  c.path[0] = '\0';
  if (!write_params(&c, 2, s, OUT_FORM)) return refused(L, &c, top);
  for (i = 1; i <= nfiles; i++) {
    lua_pushvalue(L, top + (int)i);
    lua_rawseti(L, c.parts, ++c.nparts);
  }
  lc_buf_release(c.b);
  lua_pushvalue(L, c.parts);
  return 1;
}

/** core.encode_multipart(parts) -> body, content_type
 * The multipart/form-data body of core.multipart_parts' list, with a boundary that occurs in no part's data
 * (filenames: `"` sent as %22, as browsers and libcurl do). */
static int l_encode_multipart(lua_State *L) {
  lc_buf *b;
  size_t n, i;
  int attempt;
  char boundary[64];
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_settop(L, 1);
  n = lc_rawlen(L, 1);
  b = lc_buf_new(L);
  for (attempt = 0;; attempt++) {
    static unsigned long counter = 0;
    int clash = 0;
    unsigned long x = (unsigned long)time(NULL) ^ ((unsigned long)(size_t)b * 2654435761UL) ^ (++counter * 40503UL) ^
                      ((unsigned long)attempt << 20);
    snprintf(boundary, sizeof boundary, "leadconnector-%08lx%08lx", x & 0xffffffffUL,
             (x * 2246822519UL + counter) & 0xffffffffUL);
    for (i = 1; i <= n && !clash; i++) {
      size_t dn;
      const char *d;
      lua_rawgeti(L, 1, (int)i);
      luaL_checktype(L, -1, LUA_TTABLE);
      lua_getfield(L, -1, "data");
      d = luaL_checklstring(L, -1, &dn);
      clash = bytes_contain(d, dn, boundary, strlen(boundary));
      lua_pop(L, 2);
    }
    if (!clash) break;
    if (attempt > 16) return luaL_error(L, "leadconnector: no multipart boundary found");
  }
  for (i = 1; i <= n; i++) {
    size_t len, k;
    const char *p;
    lua_rawgeti(L, 1, (int)i);
    lc_buf_adds(L, b, "--");
    lc_buf_adds(L, b, boundary);
    lc_buf_adds(L, b, "\r\nContent-Disposition: form-data; name=\"");
    lua_getfield(L, -1, "name");
    p = luaL_checklstring(L, -1, &len);
    lc_buf_add(L, b, p, len);
    lua_pop(L, 1);
    lc_buf_addc(L, b, '"');
    lua_getfield(L, -1, "filename");
    if (lua_type(L, -1) == LUA_TSTRING) {
      p = lua_tolstring(L, -1, &len);
      lc_buf_adds(L, b, "; filename=\"");
      for (k = 0; k < len; k++) {
        if (p[k] == '"') lc_buf_adds(L, b, "%22");
        else lc_buf_addc(L, b, p[k]);
      }
      lc_buf_addc(L, b, '"');
    }
    lua_pop(L, 1);
    lua_getfield(L, -1, "content_type");
    if (lua_type(L, -1) == LUA_TSTRING) {
      p = lua_tolstring(L, -1, &len);
      lc_buf_adds(L, b, "\r\nContent-Type: ");
      lc_buf_add(L, b, p, len);
    }
    lua_pop(L, 1);
    lc_buf_adds(L, b, "\r\n\r\n");
    lua_getfield(L, -1, "data");
    p = lua_tolstring(L, -1, &len);
    if (len) lc_buf_add(L, b, p, len);
    lc_buf_adds(L, b, "\r\n");
    lua_pop(L, 2);
  }
  lc_buf_adds(L, b, "--");
  lc_buf_adds(L, b, boundary);
  lc_buf_adds(L, b, "--\r\n");
  lua_pushlstring(L, b->p, b->n);
  lua_pushfstring(L, "multipart/form-data; boundary=%s", boundary);
  lc_buf_release(b);
  return 2;
}

/** core.build_multipart(schema, fields, files, file_field, max_files, max_file_size [, allow_unknown])
 *    -> body, content_type | nil, err: core.multipart_parts, then core.encode_multipart. */
static int l_build_multipart(lua_State *L) {
  lua_settop(L, 7);
  lua_pushcfunction(L, l_multipart_parts);
  lua_insert(L, 1);
  lua_call(L, 7, 2);
  if (lua_isnil(L, 1)) return 2;
  lua_settop(L, 1);
  return l_encode_multipart(L);
}

static int invalid(lua_State *L, const char *field, const char *fmt, const char *a) {
  lua_pushnil(L);
  lc_push_error(L, "invalid", fmt, field, a);
  lc_seterrfield_str(L, "field", field);
  lc_seterrfield_bool(L, "request_sent", 0);
  return 2;
}


/** core.path_id(id [, name [, prefix [, suffix]]]) -> prefix .. percent-encoded id .. suffix | nil, err
 * Everything but RFC 3986's unreserved characters is encoded, so an id is always exactly one segment. The
 * optional prefix and suffix (path text of the library's own, e.g. "/conversations/messages/" and "/status") are
 * put around it in the same buffer, which spares the caller a concatenation per call. */
static int l_path_id(lua_State *L) {
  static const char hex[] = "0123456789ABCDEF";
  const char *name = luaL_optstring(L, 2, "id");
  size_t plen = 0, slen = 0, n, i, clean;
  const char *prefix = luaL_optlstring(L, 3, "", &plen);
  const char *suffix = luaL_optlstring(L, 4, "", &slen);
  const char *s;
  luaL_Buffer b;
  if (lua_type(L, 1) != LUA_TSTRING) return invalid(L, name, "%s must be a string, got %s", luaL_typename(L, 1));
  s = lua_tolstring(L, 1, &n);
  if (n == 0) return invalid(L, name, "%s must not be empty%s", "");
  /* API ids are a few dozen bytes; a 10 MB one would only fail later, as a network error, after a URL copy */
  if (n > 1024) return invalid(L, name, "%s must be at most 1024 bytes long%s", "");
  for (clean = 0; clean < n && UNRESERVED((unsigned char)s[clean]); clean++) {
  }
  if (clean < n && has_ctl(s, n)) return invalid(L, name, "%s must not contain control characters%s", "");
  /* No piece between slashes may be "." or "..": servers and proxies that decode %2F before normalising the path
   * (nginx does) would otherwise resolve "x/../../conversations/c1" to another endpoint. */
  for (i = 0; i <= n; i++) {
    size_t start = i, len;
    while (i < n && s[i] != '/') i++;
    len = i - start;
    if ((len == 1 && s[start] == '.') || (len == 2 && s[start] == '.' && s[start + 1] == '.'))
      return invalid(L, name, "%s must not be or contain a dot segment (. or .. between slashes)%s", "");
  }
  luaL_buffinit(L, &b);
  luaL_addlstring(&b, prefix, plen);
  luaL_addlstring(&b, s, clean); /* the usual id is all of it */
  for (i = clean; i < n; i++) {
    unsigned char ch = (unsigned char)s[i];
    if (UNRESERVED(ch)) {
      luaL_addchar(&b, (char)ch);
    } else {
      luaL_addchar(&b, '%');
      luaL_addchar(&b, hex[ch >> 4]);
      luaL_addchar(&b, hex[ch & 15]);
    }
  }
  luaL_addlstring(&b, suffix, slen);
  luaL_pushresult(&b);
  return 1;
}

/** core.check_token(token) -> true | nil, err  (the message never contains the token) */
static int l_check_token(lua_State *L) {
  char why[160];
  size_t n;
  const char *s;
  if (lua_type(L, 1) != LUA_TSTRING) return invalid(L, "token", "%s must be a string, got %s", luaL_typename(L, 1));
  s = lua_tolstring(L, 1, &n);
  if (!lc_check_token(s, n, why, sizeof why)) return invalid(L, "token", "%s%s", why + 5);
  lua_pushboolean(L, 1);
  return 1;
}

/** core.check_header(value, name) -> true | nil, err  (for version, user_agent: no control characters) */
static int l_check_header(lua_State *L) {
  const char *name = luaL_checkstring(L, 2);
  size_t n;
  const char *s;
  if (lua_type(L, 1) != LUA_TSTRING) return invalid(L, name, "%s must be a string, got %s", luaL_typename(L, 1));
  s = lua_tolstring(L, 1, &n);
  if (n == 0) return invalid(L, name, "%s must not be empty%s", "");
  if (has_ctl(s, n)) return invalid(L, name, "%s must not contain control characters%s", "");
  lua_pushboolean(L, 1);
  return 1;
}

const luaL_Reg lc_validate_funcs[] = {{"compile", l_compile},
                                      {"build", l_build},
                                      {"build_query", l_build_query},
                                      {"build_multipart", l_build_multipart},
                                      {"multipart_parts", l_multipart_parts},
                                      {"encode_multipart", l_encode_multipart},
                                      {"path_id", l_path_id},
                                      {"check_token", l_check_token},
                                      {"check_header", l_check_header},
                                      {NULL, NULL}};

/* core.build_send / core.build_status (fields [, allow_unknown]): the seed bodies, from the catalogue's schemas
 * (compiled on first use and kept in the closure's upvalue). */
static int compat_build(lua_State *L) {
  lua_settop(L, 2);
  lua_pushvalue(L, lua_upvalueindex(2));
  if (lua_isnil(L, -1)) {
    lua_pop(L, 1);
    lua_getglobal(L, "require");
    lua_pushliteral(L, "leadconnector.catalogue");
    lua_call(L, 1, 1);
    lua_getfield(L, -1, "operations");
    lua_pushnil(L);
    while (lua_next(L, -2)) {
      lua_getfield(L, -1, "name");
      if (lua_rawequal(L, -1, lua_upvalueindex(1))) {
        lua_pop(L, 1);
        lua_getfield(L, -1, "body");
        break;
      }
      lua_pop(L, 2);
    }
    if (lua_type(L, -1) != LUA_TTABLE) return luaL_error(L, "leadconnector: the catalogue has no body for this call");
    lua_pushcfunction(L, l_compile);
    lua_insert(L, -2);
    lua_call(L, 1, 1);
    lua_pushvalue(L, -1);
    lua_replace(L, lua_upvalueindex(2));
    lua_replace(L, 3);
    lua_settop(L, 3);
  }
  lua_insert(L, 1);
  return l_build(L);
}

void lc_validate_init(lua_State *L, int module) {
  module = lc_absindex(L, module);
  lc_newmetatable(L, LC_SCHEMA_MT);
  lua_pushliteral(L, LC_SCHEMA_MT);
  lua_setfield(L, -2, "__metatable");
  lua_pop(L, 1);
  lua_pushliteral(L, "send_message");
  lua_pushnil(L);
  lua_pushcclosure(L, compat_build, 2);
  lua_setfield(L, module, "build_send");
  lua_pushliteral(L, "update_message_status");
  lua_pushnil(L);
  lua_pushcclosure(L, compat_build, 2);
  lua_setfield(L, module, "build_status");
}
