/* validate.c - everything checked before a byte is sent, and the request bodies built from it.
 *
 * One pass over the caller's table both validates and writes the JSON body, field by field, from the schemas
 * below (the field lists of ../shared/API.md §1). A failure leaves nothing behind: the partly written body lives in
 * a userdata-owned buffer on the Lua stack and is freed with it. Errors name the field ("forward.isForwarded",
 * "attachments[2]") and never echo an id or a token. */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "lc.h"

enum ftype { F_STR, F_ID, F_ENUM, F_NUM, F_BOOL, F_STRARR, F_OBJ, F_RECIPIENTS };

struct schema;
typedef struct field {
  const char *name;
  enum ftype type;
  int required;
  const char *const *enums; /* F_ENUM */
  const struct schema *sub; /* F_OBJ, F_RECIPIENTS (element objects) */
} field;

typedef struct schema {
  const field *fields;
  int n;
} schema;

static const char *const MESSAGE_TYPES[] = {"SMS", "RCS", "Email", "WhatsApp", "IG", "FB", "Custom", "Live_Chat", "TIKTOK", NULL};
static const char *const STATUSES[] = {"delivered", "failed", "pending", "read", NULL};
static const char *const REPLY_MODES[] = {"reply", "reply_all", NULL};
static const char *const OPT_PERIODS[] = {"24h", "48h", "72h", NULL};

static const field FORWARD_FIELDS[] = {
    {"isForwarded", F_BOOL, 1, NULL, NULL},        {"forwardWholeThread", F_BOOL, 0, NULL, NULL},
    {"messageId", F_ID, 0, NULL, NULL},            {"emailMessageId", F_ID, 0, NULL, NULL},
    {"sourceContactId", F_ID, 0, NULL, NULL},      {"sourceConversationId", F_ID, 0, NULL, NULL},
    {"toEmail", F_STR, 0, NULL, NULL},             {"recipientContactId", F_ID, 0, NULL, NULL},
    {"recipientConversationId", F_ID, 0, NULL, NULL},
};
static const schema FORWARD = {FORWARD_FIELDS, sizeof FORWARD_FIELDS / sizeof *FORWARD_FIELDS};

static const field SEND_FIELDS[] = {
    {"type", F_ENUM, 1, MESSAGE_TYPES, NULL},
    {"contactId", F_ID, 1, NULL, NULL},
    {"subType", F_STR, 0, NULL, NULL},
    {"appointmentId", F_ID, 0, NULL, NULL},
    {"attachments", F_STRARR, 0, NULL, NULL},
    {"emailFrom", F_STR, 0, NULL, NULL},
    {"emailCc", F_STRARR, 0, NULL, NULL},
    {"emailBcc", F_STRARR, 0, NULL, NULL},
    {"html", F_STR, 0, NULL, NULL},
    {"message", F_STR, 0, NULL, NULL},
    {"subject", F_STR, 0, NULL, NULL},
    {"replyMessageId", F_ID, 0, NULL, NULL},
    {"templateId", F_ID, 0, NULL, NULL},
    {"threadId", F_ID, 0, NULL, NULL},
    {"scheduledTimestamp", F_NUM, 0, NULL, NULL},
    {"conversationProviderId", F_ID, 0, NULL, NULL},
    {"emailTo", F_STR, 0, NULL, NULL},
    {"customSubtypeId", F_ID, 0, NULL, NULL},
    {"emailReplyMode", F_ENUM, 0, REPLY_MODES, NULL},
    {"fromNumber", F_STR, 0, NULL, NULL},
    {"toNumber", F_STR, 0, NULL, NULL},
    {"forward", F_OBJ, 0, NULL, &FORWARD},
    {"status", F_ENUM, 0, STATUSES, NULL},
    {"usesNativeSchedulingAi", F_BOOL, 0, NULL, NULL},
    {"optimizationPeriod", F_ENUM, 0, OPT_PERIODS, NULL},
};
static const schema SEND = {SEND_FIELDS, sizeof SEND_FIELDS / sizeof *SEND_FIELDS};

static const field PROVIDER_ERROR_FIELDS[] = {
    {"code", F_STR, 0, NULL, NULL}, {"type", F_STR, 0, NULL, NULL}, {"message", F_STR, 0, NULL, NULL}};
static const schema PROVIDER_ERROR = {PROVIDER_ERROR_FIELDS, 3};

static const field RECIPIENT_FIELDS[] = {{"emailId", F_STR, 0, NULL, NULL}, {"status", F_STR, 0, NULL, NULL}};
static const schema RECIPIENT = {RECIPIENT_FIELDS, 2};

static const field STATUS_FIELDS[] = {
    {"status", F_ENUM, 1, STATUSES, NULL},
    {"error", F_OBJ, 0, NULL, &PROVIDER_ERROR},
    {"emailMessageId", F_ID, 0, NULL, NULL},
    {"recipients", F_RECIPIENTS, 0, NULL, &RECIPIENT},
};
static const schema STATUS = {STATUS_FIELDS, sizeof STATUS_FIELDS / sizeof *STATUS_FIELDS};

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

/* --- the one-pass validator and writer ------------------------------------------------------------------------ */

typedef struct ctx {
  lua_State *L;
  lc_buf *b;
  int allow_unknown;
  char path[120];  /* dotted name of the field being looked at */
  char why[400];   /* set on failure */
  char field[160]; /* the field the failure is about */
} ctx;

static int fail(ctx *c, const char *fmt, const char *extra) {
  char tmp[200];
  snprintf(c->field, sizeof c->field, "%s", c->path);
  snprintf(tmp, sizeof tmp, fmt, extra ? extra : "");
  snprintf(c->why, sizeof c->why, "field '%s' %s", c->path, tmp);
  return 0;
}

static void path_push(ctx *c, size_t *saved, const char *name, long index) {
  size_t n = strlen(c->path);
  *saved = n;
  if (index > 0) snprintf(c->path + n, sizeof c->path - n, "[%ld]", index);
  else snprintf(c->path + n, sizeof c->path - n, "%s%s", n ? "." : "", name ? name : "?");
}
static void path_pop(ctx *c, size_t saved) { c->path[saved] = '\0'; }

static int check_string(ctx *c, int idx, int is_id) {
  size_t n;
  const char *s;
  if (lua_type(c->L, idx) != LUA_TSTRING) return fail(c, "must be a string, got %s", luaL_typename(c->L, idx));
  s = lua_tolstring(c->L, idx, &n);
  if (is_id) {
    if (n == 0) return fail(c, "must not be empty", NULL);
    if (has_ctl(s, n)) return fail(c, "must not contain control characters", NULL);
  }
  if (!utf8_valid((const unsigned char *)s, n)) return fail(c, "is not valid UTF-8", NULL);
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

static int write_object(ctx *c, int t, const schema *s);

static int write_value(ctx *c, int v, const field *f) {
  lua_State *L = c->L;
  lc_buf *b = c->b;
  switch (f->type) {
  case F_STR:
  case F_ID:
    if (!check_string(c, v, f->type == F_ID)) return 0;
    lc_json_add_string(L, b, v);
    return 1;
  case F_ENUM: {
    const char *const *e;
    size_t n;
    const char *s;
    if (lua_type(L, v) != LUA_TSTRING) return fail(c, "must be a string, got %s", luaL_typename(L, v));
    s = lua_tolstring(L, v, &n);
    for (e = f->enums; *e; e++)
      if (strlen(*e) == n && memcmp(*e, s, n) == 0) break;
    if (!*e) {
      char list[200] = "";
      size_t used = 0;
      for (e = f->enums; *e; e++) used += (size_t)snprintf(list + used, sizeof list - used, "%s%s", used ? ", " : "", *e);
      return fail(c, "must be one of %s", list);
    }
    lc_json_add_string(L, b, v);
    return 1;
  }
  case F_NUM:
    if (lua_type(L, v) != LUA_TNUMBER) return fail(c, "must be a number, got %s", luaL_typename(L, v));
    if (!lc_json_add_number(L, b, v)) return fail(c, "must be a finite number", NULL);
    return 1;
  case F_BOOL:
    if (lua_type(L, v) != LUA_TBOOLEAN) return fail(c, "must be a boolean, got %s", luaL_typename(L, v));
    lc_buf_adds(L, b, lua_toboolean(L, v) ? "true" : "false");
    return 1;
  case F_OBJ:
    if (lua_type(L, v) != LUA_TTABLE) return fail(c, "must be a table, got %s", luaL_typename(L, v));
    return write_object(c, v, f->sub);
  case F_STRARR:
  case F_RECIPIENTS: {
    size_t n, i;
    if (lua_type(L, v) != LUA_TTABLE || !sequence_length(L, v, &n))
      return fail(c, f->type == F_STRARR ? "must be an array of strings (a Lua sequence), got %s"
                                         : "must be an array (a Lua sequence), got %s",
                  lua_type(L, v) == LUA_TTABLE ? "a table with other keys" : luaL_typename(L, v));
    lc_buf_addc(L, b, '[');
    for (i = 1; i <= n; i++) {
      size_t saved;
      int e, ok;
      lua_rawgeti(L, v, (int)i);
      e = lua_gettop(L);
      path_push(c, &saved, NULL, (long)i);
      if (i > 1) lc_buf_addc(L, b, ',');
      if (f->type == F_RECIPIENTS && lua_type(L, e) == LUA_TTABLE) ok = write_object(c, e, f->sub);
      else if (f->type == F_RECIPIENTS && lua_type(L, e) != LUA_TSTRING)
        ok = fail(c, "must be a string or a table {emailId=..., status=...}, got %s", luaL_typename(L, e));
      else if ((ok = check_string(c, e, 0))) lc_json_add_string(L, b, e);
      path_pop(c, saved);
      if (!ok) return 0;
      lua_remove(L, e);
    }
    lc_buf_addc(L, b, ']');
    return 1;
  }
  }
  return 0;
}

static const field *find_field(const schema *s, const char *k, size_t n) {
  int i;
  for (i = 0; i < s->n; i++)
    if (s->fields[i].name[0] == k[0] && strlen(s->fields[i].name) == n && memcmp(s->fields[i].name, k, n) == 0)
      return &s->fields[i];
  return NULL;
}

/* Writes {"k":v,...} for table t, checking every key against the schema. */
static int write_object(ctx *c, int t, const schema *s) {
  lua_State *L = c->L;
  uint64_t seen = 0;
  int first = 1, i;
  luaL_checkstack(L, 8, "leadconnector: fields nested too deeply");
  lc_buf_addc(L, c->b, '{');
  lua_pushnil(L);
  while (lua_next(L, t)) {
    int k = lua_gettop(L) - 1, v = lua_gettop(L);
    size_t n, saved;
    const char *key;
    const field *f;
    if (lua_type(L, k) != LUA_TSTRING) {
      snprintf(c->field, sizeof c->field, "%s", c->path);
      snprintf(c->why, sizeof c->why, "%s%s%s has a key of type %s; fields are named by strings", c->path[0] ? "field '" : "",
               c->path[0] ? c->path : "fields", c->path[0] ? "'" : "", luaL_typename(L, k));
      return 0;
    }
    key = lua_tolstring(L, k, &n);
    f = find_field(s, key, n);
    path_push(c, &saved, key, 0);
    if (f == NULL && !c->allow_unknown) {
      /* The key is the caller's own text; show it cleaned and cut. */
      char shown[48];
      size_t j;
      for (j = 0; j < n && j < sizeof shown - 1; j++) shown[j] = (key[j] < 0x20 || key[j] == 0x7f) ? '?' : key[j];
      shown[j] = '\0';
      snprintf(c->field, sizeof c->field, "%s", c->path);
      path_pop(c, saved);
      snprintf(c->why, sizeof c->why, "unknown field '%s%s%s' (pass { allow_unknown = true } to send it anyway)",
               c->path, c->path[0] ? "." : "", shown);
      return 0;
    }
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
      if (lua_type(L, v) == LUA_TSTRING && !check_string(c, v, 0)) return 0;
      if (lua_type(L, v) == LUA_TNUMBER) {
        if (!lc_json_add_number(L, c->b, v)) return fail(c, "must be a finite number", NULL);
      } else {
        if (!lc_json_add_value(L, c->b, v)) return fail(c, "cannot be written as JSON (%s)", luaL_typename(L, v));
      }
    }
    path_pop(c, saved);
    lua_pop(L, 1);
  }
  for (i = 0; i < s->n; i++) {
    if (s->fields[i].required && !(seen & ((uint64_t)1 << i))) {
      size_t saved;
      path_push(c, &saved, s->fields[i].name, 0);
      return fail(c, "is required", NULL);
    }
  }
  lc_buf_addc(L, c->b, '}');
  return 1;
}

/* --- entry points ----------------------------------------------------------------------------------------------- */

static int build(lua_State *L, const schema *s) {
  ctx c;
  int top;
  luaL_checktype(L, 1, LUA_TTABLE); /* a non-table is a misuse of the library: it raises */
  c.allow_unknown = lua_toboolean(L, 2);
  lua_settop(L, 2);
  c.L = L;
  c.b = lc_buf_new(L);
  top = lua_gettop(L);
  c.path[0] = c.why[0] = c.field[0] = '\0';
  if (!write_object(&c, 1, s)) {
    lc_buf_release(c.b);
    lua_settop(L, top);
    lua_pushnil(L);
    lc_push_error(L, "invalid", "%s", c.why);
    if (c.field[0]) lc_seterrfield_str(L, "field", c.field);
    lc_seterrfield_bool(L, "request_sent", 0);
    return 2;
  }
  lua_pushlstring(L, c.b->p, c.b->n);
  lc_buf_release(c.b);
  return 1;
}

/** core.build_send(fields [, allow_unknown]) -> json | nil, err */
static int l_build_send(lua_State *L) { return build(L, &SEND); }
/** core.build_status(fields [, allow_unknown]) -> json | nil, err */
static int l_build_status(lua_State *L) { return build(L, &STATUS); }

static int invalid(lua_State *L, const char *field, const char *fmt, const char *a) {
  lua_pushnil(L);
  lc_push_error(L, "invalid", fmt, field, a);
  lc_seterrfield_str(L, "field", field);
  lc_seterrfield_bool(L, "request_sent", 0);
  return 2;
}

#define UNRESERVED(ch)                                                                                                 \
  (((ch) >= 'A' && (ch) <= 'Z') || ((ch) >= 'a' && (ch) <= 'z') || ((ch) >= '0' && (ch) <= '9') || (ch) == '-' ||     \
   (ch) == '.' || (ch) == '_' || (ch) == '~')

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

const luaL_Reg lc_validate_funcs[] = {{"build_send", l_build_send}, {"build_status", l_build_status},
                                      {"path_id", l_path_id},       {"check_token", l_check_token},
                                      {"check_header", l_check_header}, {NULL, NULL}};
