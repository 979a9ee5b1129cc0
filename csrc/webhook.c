/* webhook.c - HighLevel webhook signatures and the leadconnector.Event userdata.
 *
 * Signatures are checked with OpenSSL's libcrypto only (EVP_DigestVerify): Ed25519 over the raw body bytes for
 * X-GHL-Signature, RSA-SHA256 (PKCS#1 v1.5) for the legacy X-WH-Signature. Nothing here is hand-written crypto;
 * the only code of our own is a strict base64 reader for the signature header (every byte checked, exact length
 * for the key, canonical padding), which handles no secret.
 *
 * A key is a userdata (leadconnector.WebhookKey) owning its EVP_PKEY, parsed once from PEM; the Lua layer keeps
 * one per distinct PEM, so a verification parses nothing. An Event (leadconnector.Event) is a userdata whose user
 * value is the decoded body, read the way object.c reads answers (nulls read as nil, nested tables as copies).
 *
 *   core.webhook_key(pem, "ed25519"|"rsa") -> key | nil, message
 *   core.webhook_check(key, body, signature_b64) -> true | false, reason
 *   core.webhook_event(body) -> event | nil, message   (the body's JSON; the signature must be checked first)
 *   core.webhook_is_event(v) -> boolean */
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include "lc.h"

#define LC_WEBHOOK_KEY_MT "leadconnector.WebhookKey"
#define LC_EVENT_MT "leadconnector.Event"

enum { KEY_ED25519 = 0, KEY_RSA = 1 };

typedef struct {
  EVP_PKEY *pk;
  int kind;
  size_t siglen; /* the exact length of a signature made with this key */
} wh_key;

typedef struct {
  int provider; /* a ProviderOutboundMessage: the body's `type` is its channel */
} wh_event;

/* --- keys ------------------------------------------------------------------------------------------------------ */

static int key_gc(lua_State *L) {
  wh_key *k = (wh_key *)luaL_checkudata(L, 1, LC_WEBHOOK_KEY_MT);
  if (k->pk != NULL) EVP_PKEY_free(k->pk);
  k->pk = NULL;
  return 0;
}

static int key_tostring(lua_State *L) {
  wh_key *k = (wh_key *)luaL_checkudata(L, 1, LC_WEBHOOK_KEY_MT);
  lua_pushfstring(L, LC_WEBHOOK_KEY_MT "{%s}", k->kind == KEY_ED25519 ? "Ed25519" : "RSA");
  return 1;
}

static int l_webhook_key(lua_State *L) {
  static const char *const kinds[] = {"ed25519", "rsa", NULL};
  size_t n;
  const char *pem = luaL_checklstring(L, 1, &n);
  int kind = luaL_checkoption(L, 2, NULL, kinds);
  wh_key *k;
  BIO *bio;
  EVP_PKEY *pk;
  if (n == 0 || n > 64 * 1024 || (int)n < 0) {
    lua_pushnil(L);
    lua_pushliteral(L, "not a PEM public key (empty or too long)");
    return 2;
  }
  /* The userdata first: once pk is in it, a Lua error (out of memory) cannot leak the key. */
  k = (wh_key *)lc_newuserdata(L, sizeof *k);
  k->pk = NULL;
  k->kind = kind;
  k->siglen = 0;
  luaL_getmetatable(L, LC_WEBHOOK_KEY_MT);
  lua_setmetatable(L, -2);
  bio = BIO_new_mem_buf(pem, (int)n);
  if (bio == NULL) return luaL_error(L, "leadconnector: out of memory");
  pk = PEM_read_bio_PUBKEY(bio, NULL, NULL, NULL);
  BIO_free(bio);
  ERR_clear_error(); /* a refused PEM leaves errors queued; libcurl's TLS would report them as its own */
  if (pk == NULL) {
    lua_pushnil(L);
    lua_pushliteral(L, "not a PEM public key (-----BEGIN PUBLIC KEY-----)");
    return 2;
  }
  k->pk = pk;
  if (kind == KEY_ED25519) {
    if (EVP_PKEY_id(pk) != EVP_PKEY_ED25519) {
      lua_pushnil(L);
      lua_pushliteral(L, "not an Ed25519 public key");
      return 2;
    }
    k->siglen = 64;
  } else {
    int bits;
    if (EVP_PKEY_id(pk) != EVP_PKEY_RSA) {
      lua_pushnil(L);
      lua_pushliteral(L, "not an RSA public key");
      return 2;
    }
    bits = EVP_PKEY_bits(pk);
    if (bits < 2048) {
      lua_pushnil(L);
      lua_pushfstring(L, "RSA key of %d bits is too short (2048 at least)", bits);
      return 2;
    }
    k->siglen = (size_t)EVP_PKEY_size(pk);
  }
  return 1;
}

/* --- strict base64 --------------------------------------------------------------------------------------------- */

/* 0..63 for the standard alphabet, -1 otherwise. */
static int b64val(unsigned char c) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == '+') return 62;
  if (c == '/') return 63;
  return -1;
}

/* Decodes exactly `want` bytes from s (padded standard base64, nothing else: no whitespace, no URL alphabet, no
 * missing or extra padding, zero unused bits). Returns 1 when s is the canonical encoding of `want` bytes, 0 when
 * it is not base64, -1 when it is base64 of another length. out has room for want + 2 bytes. */
static int b64_decode_exact(const char *s, size_t n, unsigned char *out, size_t want) {
  size_t i, o = 0, pad = 0, enc = 4 * ((want + 2) / 3);
  if (n == 0 || n % 4 != 0) return 0;
  if (s[n - 1] == '=') pad++;
  if (s[n - 2] == '=') pad++;
  for (i = 0; i < n - pad; i++)
    if (b64val((unsigned char)s[i]) < 0) return 0;
  if (n != enc || (n / 4) * 3 - pad != want) return -1;
  for (i = 0; i < n; i += 4) {
    int a = b64val((unsigned char)s[i]), b = b64val((unsigned char)s[i + 1]);
    int c = s[i + 2] == '=' ? 0 : b64val((unsigned char)s[i + 2]);
    int d = s[i + 3] == '=' ? 0 : b64val((unsigned char)s[i + 3]);
    unsigned long v = ((unsigned long)a << 18) | ((unsigned long)b << 12) | ((unsigned long)c << 6) | (unsigned long)d;
    out[o++] = (unsigned char)(v >> 16);
    out[o++] = (unsigned char)(v >> 8);
    out[o++] = (unsigned char)v;
  }
  /* Canonical: the bits the padding hides are zero. */
  if (pad == 1 && (b64val((unsigned char)s[n - 2]) & 0x3)) return 0;
  if (pad == 2 && (b64val((unsigned char)s[n - 3]) & 0xf)) return 0;
  return 1;
}

static int l_webhook_check(lua_State *L) {
  wh_key *k = (wh_key *)luaL_checkudata(L, 1, LC_WEBHOOK_KEY_MT);
  size_t blen, slen;
  const char *body = luaL_checklstring(L, 2, &blen);
  const char *sig = luaL_checklstring(L, 3, &slen);
  unsigned char *raw;
  EVP_MD_CTX *ctx;
  int r, ok;
  if (k->pk == NULL) return luaL_argerror(L, 1, "key already released");
  /* 4 KiB of signature at most (RSA-16384): the length check comes before any decoding. */
  if (slen > 4 * ((k->siglen + 2) / 3) + 4) {
    lua_pushboolean(L, 0);
    lua_pushliteral(L, "wrong length");
    return 2;
  }
  raw = (unsigned char *)lua_newuserdata(L, k->siglen + 3); /* owned by the stack: freed whatever happens */
  r = b64_decode_exact(sig, slen, raw, k->siglen);
  if (r <= 0) {
    lua_pushboolean(L, 0);
    if (r == 0) lua_pushliteral(L, "not base64");
    else lua_pushliteral(L, "wrong length");
    return 2;
  }
  ctx = EVP_MD_CTX_new();
  if (ctx == NULL) {
    lua_pushboolean(L, 0);
    lua_pushliteral(L, "out of memory");
    return 2;
  }
  ok = EVP_DigestVerifyInit(ctx, NULL, k->kind == KEY_ED25519 ? NULL : EVP_sha256(), NULL, k->pk) == 1 &&
       EVP_DigestVerify(ctx, raw, k->siglen, (const unsigned char *)body, blen) == 1;
  EVP_MD_CTX_free(ctx);
  if (!ok) ERR_clear_error(); /* as above: nothing of a refused signature stays in OpenSSL's error queue */
  lua_pushboolean(L, ok);
  if (ok) return 1;
  lua_pushliteral(L, "does not match");
  return 2;
}

/* --- events ---------------------------------------------------------------------------------------------------- */

/* Channels a ProviderOutboundMessage carries in `type` (the send body's types, and GMB). Anything else is an
 * event name, including names HighLevel adds later. */
static int is_channel(const char *t) {
  static const char *const channels[] = {"SMS", "RCS",     "Email",     "WhatsApp", "IG",  "FB",
                                         "Custom", "Live_Chat", "TIKTOK", "GMB",      NULL};
  const char *const *c;
  for (c = channels; *c; c++)
    if (strcmp(*c, t) == 0) return 1;
  return 0;
}

static wh_event *check_event(lua_State *L, int idx) {
  return (wh_event *)luaL_checkudata(L, idx, LC_EVENT_MT);
}

static int l_webhook_event(lua_State *L) {
  size_t n;
  const char *s = luaL_checklstring(L, 1, &n);
  wh_event *e;
  int t;
  if (!lc_json_decode(L, s, n)) {
    lua_pushnil(L);
    lua_pushfstring(L, "the body is not JSON: %s", lua_isstring(L, -2) ? lua_tostring(L, -2) : "?");
    return 2;
  }
  t = lua_gettop(L);
  if (lua_type(L, t) != LUA_TTABLE) {
    lua_pushnil(L);
    lua_pushliteral(L, "the body is not a JSON object");
    return 2;
  }
  lua_rawgeti(L, t, 1);
  if (!lua_isnil(L, -1)) {
    lua_pushnil(L);
    lua_pushliteral(L, "the body is a JSON array, not an object");
    return 2;
  }
  lua_pop(L, 1);
  lua_getfield(L, t, "type");
  if (lua_type(L, -1) != LUA_TSTRING || lc_rawlen(L, -1) == 0) {
    lua_pushnil(L);
    lua_pushliteral(L, "the body has no string field `type`");
    return 2;
  }
  e = (wh_event *)lc_newuserdata(L, sizeof *e);
  e->provider = is_channel(lua_tostring(L, -2));
  lua_pushvalue(L, t);
  lc_setuv(L, -2);
  luaL_getmetatable(L, LC_EVENT_MT);
  lua_setmetatable(L, -2);
  return 1;
}

/* event.type / event.channel as API.md says; every other name is the body's field. */
static void push_event_field(lua_State *L, int ev, int body, const char *k) {
  wh_event *e = check_event(L, ev);
  if (strcmp(k, "type") == 0 && e->provider) {
    lua_pushliteral(L, "ProviderOutboundMessage");
    return;
  }
  lua_getfield(L, body, strcmp(k, "channel") == 0 && e->provider ? "type" : k);
  lc_push_plain(L, -1);
  lua_remove(L, -2);
}

static int ev_index(lua_State *L) {
  lua_settop(L, 2);
  check_event(L, 1);
  if (lua_type(L, 2) == LUA_TSTRING) {
    lua_pushvalue(L, 2);
    lua_rawget(L, lua_upvalueindex(1));
    if (!lua_isnil(L, -1)) return 1;
    lua_pop(L, 1);
    lc_getuv(L, 1);
    push_event_field(L, 1, 3, lua_tostring(L, 2));
    return 1;
  }
  lc_getuv(L, 1);
  lua_pushvalue(L, 2);
  lua_rawget(L, -2);
  lc_push_plain(L, -1);
  return 1;
}

static int ev_newindex(lua_State *L) {
  return luaL_error(L, LC_EVENT_MT " is read-only (use event:to_table() for a copy you can change)");
}

static int ev_to_table(lua_State *L) {
  check_event(L, 1);
  lc_getuv(L, 1);
  lc_deepcopy(L, -1, 0);
  return 1;
}

static int ev_tostring(lua_State *L) {
  static const char *const fields[] = {"webhookId", "messageId", "conversationId", "contactId", "locationId", NULL};
  const char *const *f;
  lc_line b;
  int first = 0;
  wh_event *e = check_event(L, 1);
  lc_getuv(L, 1);
  b.n = 0;
  b.s[0] = '\0';
  lc_line_adds(&b, LC_EVENT_MT "{");
  lua_createtable(L, 0, 2); /* type and channel as event.type / event.channel read */
  push_event_field(L, 1, 2, "type");
  lua_setfield(L, -2, "type");
  if (e->provider) {
    push_event_field(L, 1, 2, "channel");
    lua_setfield(L, -2, "channel");
  }
  first = 1;
  lc_add_field(L, &b, 3, "type", 64, &first);
  lc_add_field(L, &b, 3, "channel", 64, &first);
  for (f = fields; *f; f++) lc_add_field(L, &b, 2, *f, 64, &first);
  lc_line_adds(&b, "}");
  lua_pushlstring(L, b.s, b.n);
  return 1;
}

static int ev_pairs(lua_State *L) {
  check_event(L, 1);
  return lc_pairs_copy(L);
}

static int l_webhook_is_event(lua_State *L) {
  lua_pushboolean(L, lc_testudata(L, 1, LC_EVENT_MT) != NULL);
  return 1;
}

const luaL_Reg lc_webhook_funcs[] = {{"webhook_key", l_webhook_key},
                                     {"webhook_check", l_webhook_check},
                                     {"webhook_event", l_webhook_event},
                                     {"webhook_is_event", l_webhook_is_event},
                                     {NULL, NULL}};

void lc_webhook_init(lua_State *L) {
  static const luaL_Reg ev_meta[] = {
      {"__newindex", ev_newindex}, {"__tostring", ev_tostring}, {"__pairs", ev_pairs}, {NULL, NULL}};
  static const luaL_Reg ev_methods[] = {{"to_table", ev_to_table}, {NULL, NULL}};
  lc_newmetatable(L, LC_WEBHOOK_KEY_MT);
  lua_pushcfunction(L, key_gc);
  lua_setfield(L, -2, "__gc");
  lua_pushcfunction(L, key_tostring);
  lua_setfield(L, -2, "__tostring");
  lua_pushstring(L, LC_WEBHOOK_KEY_MT);
  lua_setfield(L, -2, "__metatable");
  lua_pop(L, 1);
  lc_newmetatable(L, LC_EVENT_MT);
  lc_setfuncs(L, ev_meta, 0);
  lua_newtable(L);
  lc_setfuncs(L, ev_methods, 0);
  lua_pushcclosure(L, ev_index, 1);
  lua_setfield(L, -2, "__index");
  lua_pushstring(L, LC_EVENT_MT);
  lua_setfield(L, -2, "__metatable");
  lua_pop(L, 1);
}
