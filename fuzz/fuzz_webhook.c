/* fuzz_webhook - leadconnector.webhook.verify (lua/leadconnector/webhook.lua over the core's webhook.c) on random
 * bodies, signatures and headers.
 *
 * The harness has its own Ed25519 key pair (made by libcrypto at start) and can sign a body itself, so inputs reach
 * both sides of the check: correctly signed bodies, signed bodies with one byte of the body or of the signature
 * changed, and arbitrary header values. Invariants: verify never raises; it returns an Event only when the
 * X-GHL-Signature it was given is the canonical base64 of a signature that OpenSSL, called here directly, accepts
 * for exactly that body; never through X-WH-Signature (nobody has the vendor's RSA private key); errors are error
 * objects of kind signature, replay or decode with a short one-line tostring; events' fields, to_table and
 * tostring work.
 *
 * Input: [flags][body length: 2 bytes][body][mutation position: 2 bytes][header bytes...]
 *   flags: 1 sign the body here   2 then change one byte of the signature   4 then change one byte of the body
 *          8 lower-case header names   16 add an X-WH-Signature from the header bytes   32 rsa = false
 *          64 use a seen store (the same body twice: the second must be a replay)
 *          128 unsigned: X-GHL-Signature is the header bytes as they are
 *   header bytes: when no flag set a signature, the X-GHL-Signature value (or X-WH-Signature's with 16); extra
 *   "Name: value\n" lines after a NUL byte are added as further headers. */
#include <openssl/evp.h>
#include <openssl/pem.h>

#include "common.h"

static EVP_PKEY *fz_key;

static int l_sign(lua_State *L) {
  size_t n;
  const unsigned char *body = (const unsigned char *)luaL_checklstring(L, 1, &n);
  unsigned char sig[64], b64[89];
  size_t siglen = sizeof sig;
  EVP_MD_CTX *ctx = EVP_MD_CTX_new();
  if (ctx == NULL || EVP_DigestSignInit(ctx, NULL, NULL, NULL, fz_key) != 1 ||
      EVP_DigestSign(ctx, sig, &siglen, body, n) != 1)
    fz_fail("EVP_DigestSign", NULL);
  EVP_MD_CTX_free(ctx);
  EVP_EncodeBlock(b64, sig, (int)siglen);
  lua_pushstring(L, (const char *)b64);
  return 1;
}

/* The reference check: OpenSSL directly, on a signature given as exactly 88 characters of canonical base64. */
static int l_valid(lua_State *L) {
  size_t n, slen;
  const unsigned char *body = (const unsigned char *)luaL_checklstring(L, 1, &n);
  const char *s = luaL_checklstring(L, 2, &slen);
  unsigned char raw[67], again[89];
  int ok;
  EVP_MD_CTX *ctx;
  if (slen != 88 || EVP_DecodeBlock(raw, (const unsigned char *)s, 88) != 66) {
    lua_pushboolean(L, 0);
    return 1;
  }
  EVP_EncodeBlock(again, raw, 64);
  if (memcmp(again, s, 88) != 0) { /* not canonical (or not base64 at all: EVP_DecodeBlock skips some bytes) */
    lua_pushboolean(L, 0);
    return 1;
  }
  ctx = EVP_MD_CTX_new();
  ok = ctx != NULL && EVP_DigestVerifyInit(ctx, NULL, NULL, NULL, fz_key) == 1 &&
       EVP_DigestVerify(ctx, raw, 64, body, n) == 1;
  EVP_MD_CTX_free(ctx);
  lua_pushboolean(L, ok);
  return 1;
}

static const char CHECK[] =
    "package.path = './lua/?.lua;' .. package.path\n"
    "package.loaded['leadconnector.core'] = core\n"
    "local webhook = require 'leadconnector.webhook'\n"
    "local PUB = fz_pub\n"
    "local KINDS = { signature = 1, replay = 1, decode = 1 }\n"
    "local function check_err(err)\n"
    "  assert(core.is_error(err) and KINDS[err.kind], 'not an error of a webhook kind: ' .. tostring(err and err.kind))\n"
    "  local s = tostring(err)\n"
    "  assert(#s < 1024 and not s:find('[\\r\\n]'), 'tostring(err) not one short line')\n"
    "end\n"
    "return function(body, headers, ghl, flags)\n"
    "  local opts = { public_key = PUB, tolerance = false, rsa = flags & 32 == 0 }\n"
    "  if flags & 64 ~= 0 then opts.seen = webhook.memory_seen() end\n"
    "  local ev, err = webhook.verify(body, headers, opts)\n"
    "  if ev == nil then check_err(err) return end\n"
    "  assert(err == nil and webhook.is_event(ev), 'not an Event')\n"
    "  assert(type(ghl) == 'string' and fz_valid(body, ghl), 'an Event without a valid X-GHL-Signature')\n"
    "  local t = ev:to_table()\n"
    "  assert(type(t) == 'table' and type(t.type) == 'string', 'to_table')\n"
    "  assert(type(ev.type) == 'string', 'event.type')\n"
    "  local s = tostring(ev)\n"
    "  assert(#s <= 1024, 'tostring(event) too long')\n"
    "  for k, v in pairs(ev) do local _ = ev[k] end\n"
    "  if opts.seen and ev.webhookId ~= nil then\n"
    "    local ev2, err2 = webhook.verify(body, headers, opts)\n"
    "    assert(ev2 == nil and err2.kind == 'replay', 'the same webhookId twice')\n"
    "  end\n"
    "end\n";

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  lua_State *L;
  BIO *bio;
  char *pem;
  long n;
  (void)argc;
  (void)argv;
  fz_key = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
  if (fz_key == NULL) fz_fail("EVP_PKEY_Q_keygen", NULL);
  L = fz_setup(NULL);
  lua_register(L, "fz_sign", l_sign);
  lua_register(L, "fz_valid", l_valid);
  bio = BIO_new(BIO_s_mem());
  if (bio == NULL || PEM_write_bio_PUBKEY(bio, fz_key) != 1) fz_fail("PEM_write_bio_PUBKEY", NULL);
  n = BIO_get_mem_data(bio, &pem);
  lua_pushlstring(L, pem, (size_t)n);
  lua_setglobal(L, "fz_pub");
  BIO_free(bio);
  if (luaL_loadbufferx(L, CHECK, strlen(CHECK), "=fz_check", "t") != LUA_OK) fz_fail("check chunk", lua_tostring(L, -1));
  fz_call(L, 0, 1);
  lua_setfield(L, LUA_REGISTRYINDEX, "fz_check");
  fz_L = L;
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  lua_State *L = fz_L;
  fz_in in = {data, size, 0};
  unsigned flags = fz_u8(&in);
  size_t blen = fz_u16(&in), hlen, extra_at;
  const char *body, *hb;
  unsigned pos;
  int lowercase = (flags & 8) != 0, have_ghl = 0;
  char *mbody;
  if (blen > fz_left(&in)) blen = fz_left(&in);
  body = (const char *)in.p + in.i;
  in.i += blen;
  pos = fz_u16(&in);
  hb = (const char *)in.p + in.i;
  hlen = fz_left(&in);
  for (extra_at = 0; extra_at < hlen && hb[extra_at] != '\0'; extra_at++) {
  }

  mbody = (char *)malloc(blen + 1);
  if (mbody == NULL) return 0;
  memcpy(mbody, body, blen);

  fz_push_check(L);
  lua_newtable(L); /* headers */
  if (flags & 1) {
    char sig[89];
    lua_pushcfunction(L, l_sign);
    lua_pushlstring(L, mbody, blen);
    fz_call(L, 1, 1);
    memcpy(sig, lua_tostring(L, -1), 89);
    lua_pop(L, 1);
    if (flags & 2) sig[pos % 88] = (char)(sig[pos % 88] ^ (1 + (pos >> 8) % 127));
    if ((flags & 4) && blen > 0) mbody[pos % blen] = (char)(mbody[pos % blen] ^ (1 + (pos >> 8) % 255));
    lua_pushstring(L, sig);
    lua_setfield(L, -2, lowercase ? "x-ghl-signature" : "X-GHL-Signature");
    have_ghl = 1;
  } else if (flags & 128 || !(flags & 16)) {
    lua_pushlstring(L, hb, extra_at);
    lua_setfield(L, -2, lowercase ? "x-ghl-signature" : "X-GHL-Signature");
    have_ghl = 1;
  }
  if (flags & 16) {
    lua_pushlstring(L, hb, extra_at);
    lua_setfield(L, -2, lowercase ? "x-wh-signature" : "X-WH-Signature");
  }
  /* further "Name: value" lines */
  {
    size_t i = extra_at + 1;
    while (i < hlen) {
      size_t j = i, colon = 0;
      while (j < hlen && hb[j] != '\n') {
        if (colon == 0 && hb[j] == ':') colon = j;
        j++;
      }
      if (colon > i) {
        size_t v = colon + 1;
        if (v < j && hb[v] == ' ') v++;
        lua_pushlstring(L, hb + i, colon - i);
        lua_pushlstring(L, hb + v, j - v);
        lua_settable(L, -3);
      }
      i = j + 1;
    }
  }
  lua_pushlstring(L, mbody, blen);
  lua_insert(L, -2); /* check, body, headers */
  if (have_ghl) {
    lua_getfield(L, -1, lowercase ? "x-ghl-signature" : "X-GHL-Signature");
  } else {
    lua_pushnil(L);
  }
  lua_pushinteger(L, (lua_Integer)flags);
  free(mbody);
  fz_call(L, 4, 0);
  fz_end(L);
  return 0;
}
