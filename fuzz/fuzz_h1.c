/* fuzz_h1 - the curl transport's own HTTP/1.x answer reader (csrc/h1.c: lc_h1_start / lc_h1_feed / lc_h1_eof),
 * fed one answer split in four ways. No Lua: only h1.c is exercised (run.sh links every csrc file, unused here).
 *
 * Input: [flags][refuse][dirty][nsplit][split sizes...][expansion: off hi, off lo, len - 1, count][answer]
 *   flags bits 0-1: max_size 1 / 16 / 1 KiB / 4 MiB; bit 2: a HEAD's answer (head_only); bit 3: the expansion
 *     bytes are there: answer[off, off + len) (len 1..256) is repeated `count` (0..255) more times in place (at
 *     most 80 KiB in all), to reach the 64 KiB head and trailer caps past libFuzzer's -max_len (both near 255;
 *     most stay small: a large answer is slow to feed one byte at a time);
 *     bit 4: on_status / on_field refuse their `refuse`-th call (1-based, 0: never); bit 5: on_body refuses a
 *     piece that would take the body past `refuse` bytes.
 *   dirty: before the second and later runs, the reused reader is first fed the answer's first dirty * len / 256
 *     bytes (head_only and max_size the other way round), left there, and started again.
 *   nsplit & 7: how many split sizes follow; the third run feeds pieces of those sizes in turn (size 0: an empty
 *     feed; none or all 0: 2, 3, 1, 7).
 * Runs: 1. the whole answer in one piece, on a fresh reader; 2. one byte at a time; 3. the split sizes above;
 * 4. pseudo-random pieces of 1 byte to 4 KiB (seeded by the header bytes); 2-4 reuse one reader (lc_h1_start).
 * Every piece is copied into a heap buffer of exactly its size, so that reading past a piece is an ASan report
 * (and a pointer kept into an earlier one reads freed memory, or other bytes: a difference between the runs).
 * When the answer ends without DONE, lc_h1_eof. FZ_DEBUG=1 prints what the whole feed read.
 * Invariants (abort on violation):
 *  - the whole feed reads what a plain model of h1.c's rules (model_read, from the comment at the top of h1.c)
 *    reads: state, error, status, head_done, head_bytes, trailer_bytes, the status / field calls, the body bytes,
 *    and on DONE capped, keep and the bytes consumed (unless a callback refused);
 *  - the four runs agree: state, error, why, status, http10, head_done, chunked, has_length, length, close,
 *    keep_alive, capped, keep, got_any, head_bytes, trailer_bytes, body_bytes, bytes consumed before DONE, whether
 *    eof was needed, the sequence of on_status / on_field calls (hash and count) and the body bytes (hash,
 *    length); the body, capped and keep only when on_body did not refuse (then what was taken before depends on
 *    the pieces); the bytes consumed not for a capped body that runs to the close (see compare: a known issue);
 *  - a feed returns the state it leaves (MORE: a reading state), consumes at most what it was given and all of it
 *    when it returns MORE (the caller drops what was not consumed); a feed or eof after DONE / FAILED changes
 *    nothing and calls nothing;
 *  - body bytes only after the head, never past max_size, and body_bytes is what on_body took; capped => !keep;
 *  - head_bytes and trailer_bytes never past LC_MAX_HEADER_BYTES + 2 (a line is refused past the cap, its CR LF
 *    counted after), within the cap on DONE; on_field gets a non-empty line without '\n', after an on_status;
 *    on_status gets 100..999; a DONE answer has head_done, status 200..999 and no error;
 *  - after eof: DONE (only for a body that runs to the close) or FAILED (LC_H1_CUT), never MORE;
 *  - FAILED has an error 1..5, a `why` exactly for LC_H1_MALFORMED, LC_H1_REFUSED exactly when a callback refused;
 *  - keep (looked at on DONE only) only for an uncapped answer whose end its framing told (HEAD, 204, 304,
 *    chunked, Content-Length), not HTTP/1.0 without keep-alive, no Connection: close; a DONE Content-Length body
 *    that was not capped has exactly `length` bytes, a capped one none (length > max_size);
 *  - lc_h1_start resets everything but the line buffer and the callbacks; lc_h1_free at the end of each input (no
 *    leaks; the runs of one input share a line buffer, as a session's calls do). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lc.h"

#define HMAX LC_MAX_HEADER_BYTES
/* The harness's own checks run for every byte fed one at a time: no coverage tracing in them (it was most of the
 * time), so that the fuzzer's time and feedback go to h1.c. */
#define NOCOV __attribute__((no_sanitize("coverage")))
#define EXPAND_MAX (80u * 1024) /* past the 64 KiB caps, and still quick to feed one byte at a time */

static const size_t MAX_SIZES[] = {1, 16, 1024, 4u * 1024 * 1024};

static void fz_fail(const char *what, const char *detail) {
  fprintf(stderr, "\n*** leadconnector fuzz invariant failed: %s%s%s\n", what, detail ? ": " : "", detail ? detail : "");
  abort();
}
#define CHECK(cond, what)                                                                                              \
  do {                                                                                                                 \
    if (!(cond)) fz_fail(what, #cond);                                                                                 \
  } while (0)

/* FNV-1a, 64 bits: the same bytes in the same order give the same hash however they were handed over. */
NOCOV static uint64_t fnv(uint64_t h, const void *data, size_t n) {
  const unsigned char *s = (const unsigned char *)data;
  size_t i;
  for (i = 0; i < n; i++) h = (h ^ s[i]) * 1099511628211ULL;
  return h;
}
#define FNV0 14695981039346656037ULL

/* What the callbacks saw in one run. */
typedef struct rec {
  const lc_h1 *p;
  size_t max_size, body_limit;
  unsigned refuse_at, ncb;
  int refuse_cb, refuse_body, refused_cb, refused_body, saw_status, in_feed;
  uint64_t cb_hash, body_hash;
  size_t body_len;
} rec;

NOCOV static int refuse_here(rec *r) {
  r->ncb++;
  if (r->refuse_cb && r->ncb == r->refuse_at) {
    r->refused_cb = 1;
    return 0;
  }
  return 1;
}

NOCOV static int on_status(void *ud, int status) {
  rec *r = (rec *)ud;
  unsigned char b[3] = {'S', (unsigned char)(status >> 8), (unsigned char)status};
  CHECK(r->in_feed, "on_status outside lc_h1_feed");
  CHECK(!r->refused_cb && !r->refused_body, "a callback after a refusal");
  CHECK(status >= 100 && status <= 999, "on_status: status not 100..999");
  CHECK(!r->p->head_done, "on_status after the head was done");
  CHECK(r->body_len == 0, "on_status after body bytes");
  r->saw_status = 1;
  r->cb_hash = fnv(r->cb_hash, b, sizeof b);
  return refuse_here(r);
}

NOCOV static int on_field(void *ud, const char *line, size_t n) {
  rec *r = (rec *)ud;
  unsigned char b[5] = {'F', (unsigned char)(n >> 24), (unsigned char)(n >> 16), (unsigned char)(n >> 8),
                        (unsigned char)n};
  CHECK(r->in_feed, "on_field outside lc_h1_feed");
  CHECK(!r->refused_cb && !r->refused_body, "a callback after a refusal");
  CHECK(r->saw_status, "on_field before any on_status");
  CHECK(!r->p->head_done, "on_field after the head was done");
  CHECK(n > 0, "on_field got an empty line");
  CHECK(n <= HMAX, "on_field got a line past the header cap");
  CHECK(memchr(line, '\n', n) == NULL, "on_field got a line with a LF");
  r->cb_hash = fnv(fnv(r->cb_hash, b, sizeof b), line, n);
  return refuse_here(r);
}

NOCOV static int on_body(void *ud, const char *data, size_t n) {
  rec *r = (rec *)ud;
  CHECK(r->in_feed, "on_body outside lc_h1_feed");
  CHECK(!r->refused_cb && !r->refused_body, "a callback after a refusal");
  CHECK(r->p->head_done, "on_body before the head was done");
  CHECK(!r->p->head_only, "on_body for a HEAD's answer");
  CHECK(r->p->status != 204 && r->p->status != 304, "on_body for a 204 / 304");
  CHECK(n > 0, "on_body with no bytes");
  CHECK(n <= r->max_size && r->body_len <= r->max_size - n, "on_body past max_size");
  CHECK(r->body_len == r->p->body_bytes, "body_bytes is not what on_body took");
  if (r->refuse_body && r->body_len + n > r->body_limit) {
    r->refused_body = 1;
    return 0;
  }
  r->body_hash = fnv(r->body_hash, data, n);
  r->body_len += n;
  return 1;
}

/* The outcome of one run: compared between the four. */
typedef struct result {
  int state, error, status, http10, head_done, chunked, has_length, close, keep_alive, capped, keep, got_any, eofed;
  const char *why;
  unsigned long long length;
  size_t head_bytes, trailer_bytes, body_bytes, consumed;
  rec r;
} result;

/* Piece sizes. */
enum { WHOLE, BYTES, SPLITS, RANDOM };
typedef struct splitter {
  int mode;
  const uint8_t *sizes;
  unsigned nsizes, i;
  uint32_t x;
} splitter;

NOCOV static size_t next_piece(splitter *s, size_t left) {
  size_t k;
  switch (s->mode) {
  case WHOLE: return left;
  case BYTES: return 1;
  case SPLITS: k = s->sizes[s->i++ % s->nsizes]; break;
  default:
    s->x = s->x * 1103515245u + 12345u;
    k = ((s->x >> 8) & 0xffffu) % ((size_t)1 << ((s->x >> 24) % 13)) + 1; /* 1 .. 4 KiB, small ones likelier */
    break;
  }
  return k < left ? k : left;
}

static void check_fresh(const lc_h1 *p, int head_only, size_t max_size) {
  CHECK(p->state == LC_H1_STATUS && p->error == 0 && p->why == NULL, "lc_h1_start: state not reset");
  CHECK(p->status == 0 && p->http10 == 0 && p->head_done == 0 && p->chunked == 0 && p->has_length == 0,
        "lc_h1_start: head fields not reset");
  CHECK(p->close == 0 && p->keep_alive == 0 && p->capped == 0 && p->keep == 0 && p->got_any == 0,
        "lc_h1_start: flags not reset");
  CHECK(p->length == 0 && p->left == 0 && p->head_bytes == 0 && p->trailer_bytes == 0 && p->body_bytes == 0,
        "lc_h1_start: counts not reset");
  CHECK(p->line_len == 0, "lc_h1_start: a partial line kept");
  CHECK(p->head_only == head_only && p->max_size == max_size, "lc_h1_start: head_only / max_size not taken");
  CHECK(p->on_status == on_status && p->on_field == on_field && p->on_body == on_body, "lc_h1_start: callbacks lost");
}

/* What holds after any feed. */
NOCOV static void check_any(const lc_h1 *p, const rec *r) {
  CHECK(p->body_bytes <= p->max_size, "body_bytes past max_size");
  CHECK(p->body_bytes == r->body_len, "body_bytes is not what on_body took");
  CHECK(p->head_bytes <= HMAX + 2, "head_bytes past the cap and a line end");
  CHECK(p->trailer_bytes <= HMAX + 2, "trailer_bytes past the cap and a line end");
  CHECK(!p->capped || !p->keep, "capped and keep");
  CHECK(p->line_len <= p->line_cap, "line_len past line_cap");
  if (p->state < LC_H1_MORE) CHECK(p->state >= LC_H1_STATUS && p->state <= LC_H1_TO_CLOSE, "unknown state");
  else CHECK(p->state == LC_H1_DONE || p->state == LC_H1_FAILED, "state LC_H1_MORE or unknown");
  if (p->state >= LC_H1_LENGTH && p->state < LC_H1_MORE) CHECK(p->head_done, "a body state before the head was done");
}

/* Pieces are copied into a heap buffer of exactly their size (kept while the sizes repeat, as one at a time): reading
 * past a piece is an ASan report, and a pointer kept into an earlier piece reads freed memory or other bytes. */
static char *piece;
static size_t piece_len = (size_t)-1;

NOCOV static void drop_piece(void) {
  free(piece);
  piece = NULL;
  piece_len = (size_t)-1;
}

/* One feed of the n bytes at data. */
NOCOV static int feed(lc_h1 *p, rec *r, const uint8_t *data, size_t n, size_t *used) {
  int st;
  size_t u = (size_t)-1;
  if (n != piece_len) {
    drop_piece();
    piece = (char *)malloc(n ? n : 1);
    if (piece == NULL) fz_fail("malloc", NULL);
    piece_len = n;
  }
  if (n) memcpy(piece, data, n);
  r->in_feed = 1;
  st = lc_h1_feed(p, piece, n, &u);
  r->in_feed = 0;
  CHECK(u <= n, "lc_h1_feed consumed more than it was given");
  CHECK(st == LC_H1_MORE || st == LC_H1_DONE || st == LC_H1_FAILED, "lc_h1_feed returned no result");
  if (st == LC_H1_MORE) {
    CHECK(u == n, "lc_h1_feed returned MORE without taking every byte");
    CHECK(p->state < LC_H1_MORE, "lc_h1_feed returned MORE in a final state");
  } else {
    CHECK(st == p->state, "lc_h1_feed returned a state it did not leave");
  }
  check_any(p, r);
  *used = u;
  return st;
}

static void run(lc_h1 *p, const uint8_t *a, size_t alen, splitter *sp, int head_only, size_t max_size, unsigned flags,
                unsigned refuse, result *out) {
  rec *r = &out->r;
  size_t off = 0, used;
  int st = LC_H1_MORE;
  memset(out, 0, sizeof *out);
  r->p = p;
  r->max_size = max_size;
  r->refuse_cb = (flags & 16) != 0;
  r->refuse_body = (flags & 32) != 0;
  r->refuse_at = refuse;
  r->body_limit = refuse;
  r->cb_hash = r->body_hash = FNV0;
  lc_h1_start(p, head_only, max_size);
  p->ud = r;
  check_fresh(p, head_only, max_size);

  while (off < alen) {
    size_t k = next_piece(sp, alen - off);
    st = feed(p, r, a + off, k, &used);
    out->consumed += used;
    off += k;
    if (st != LC_H1_MORE) break;
  }
  if (st == LC_H1_MORE) {
    int before = p->state;
    st = lc_h1_eof(p); /* in_feed is 0: a callback from eof is a finding */
    out->eofed = 1;
    CHECK(st == LC_H1_DONE || st == LC_H1_FAILED, "lc_h1_eof left MORE");
    CHECK(st == p->state, "lc_h1_eof returned a state it did not leave");
    if (before == LC_H1_TO_CLOSE) CHECK(st == LC_H1_DONE, "eof did not end a body that runs to the close");
    else CHECK(st == LC_H1_FAILED && p->error == LC_H1_CUT, "eof in the middle of an answer is not LC_H1_CUT");
    CHECK(out->consumed == alen, "the answer ran out without every byte consumed");
  }
  CHECK(r->ncb == 0 || r->saw_status, "callbacks without a status");
  drop_piece(); /* what the reader kept pointing into is freed now */
  /* after the end: more bytes and another eof change nothing */
  {
    lc_h1 before = *p;
    unsigned ncb = r->ncb;
    size_t bl = r->body_len;
    static const uint8_t more[] = "HTTP/1.1 200 OK\r\n\r\n";
    CHECK(feed(p, r, more, sizeof more - 1, &used) == st && used == 0, "a feed after the end changed the state");
    CHECK(lc_h1_eof(p) == st, "an eof after the end changed the state");
    CHECK(memcmp(&before, p, sizeof before) == 0, "the reader changed after the end");
    CHECK(ncb == r->ncb && bl == r->body_len, "a callback after the end");
  }

  out->state = p->state;
  out->error = p->error;
  out->why = p->why;
  out->status = p->status;
  out->http10 = p->http10;
  out->head_done = p->head_done;
  out->chunked = p->chunked;
  out->has_length = p->has_length;
  out->length = p->length;
  out->close = p->close;
  out->keep_alive = p->keep_alive;
  out->capped = p->capped;
  out->keep = p->keep;
  out->got_any = p->got_any;
  out->head_bytes = p->head_bytes;
  out->trailer_bytes = p->trailer_bytes;
  out->body_bytes = p->body_bytes;

  /* the invariants of one run */
  CHECK(out->got_any == (alen > 0), "got_any is not whether a byte came");
  CHECK(r->body_len <= max_size, "body past max_size");
  if (out->state == LC_H1_DONE) {
    CHECK(out->error == 0 && out->why == NULL, "DONE with an error");
    CHECK(out->head_done, "DONE without head_done");
    CHECK(out->status >= 200 && out->status <= 999, "DONE with a status not 200..999");
    CHECK(out->head_bytes <= HMAX && out->trailer_bytes <= HMAX, "DONE with a head or trailers past the cap");
    CHECK(!r->refused_cb && !r->refused_body, "DONE although a callback refused");
    if (!out->capped && !head_only && out->status != 204 && out->status != 304 && !out->chunked && out->has_length)
      CHECK(out->body_bytes == out->length, "a Content-Length body of another length");
    if (out->capped && !out->chunked && out->has_length)
      CHECK(out->body_bytes == 0 && out->length > max_size, "a Content-Length past the cap, and bytes of it read");
    if (out->capped && !out->chunked && !out->has_length) CHECK(out->body_bytes == max_size, "cut before the cap");
    if (head_only || out->status == 204 || out->status == 304) CHECK(out->body_bytes == 0 && !out->capped, "a body");
  } else {
    CHECK(out->state == LC_H1_FAILED, "neither DONE nor FAILED at the end");
    CHECK(out->error >= LC_H1_MALFORMED && out->error <= LC_H1_NOMEM, "FAILED without a known error");
    CHECK((out->error == LC_H1_MALFORMED) == (out->why != NULL), "`why` not exactly for LC_H1_MALFORMED");
    CHECK(out->error != LC_H1_NOMEM, "LC_H1_NOMEM for a small answer");
    CHECK(out->error != LC_H1_TOO_LONG || !out->head_done || out->chunked, "TOO_LONG in a body without trailers");
  }
  CHECK((out->error == LC_H1_REFUSED) == (r->refused_cb || r->refused_body), "LC_H1_REFUSED not exactly a refusal");
  if (out->keep && out->state == LC_H1_DONE) { /* (keep means nothing on FAILED: the caller drops the connection) */
    CHECK(!out->capped, "keep for an answer not read whole");
    CHECK(!out->close && (!out->http10 || out->keep_alive), "keep against Connection / HTTP/1.0");
    CHECK(head_only || out->status == 204 || out->status == 304 || out->chunked || out->has_length,
          "keep for an answer whose end was the close");
    CHECK(!out->eofed, "keep for an answer that needed the close");
  }
}

/* A model of h1.c's rules (the comment at its top), written the plain way: the whole answer at once, no state
 * machine. Run 1 must read what it reads (when no callback refused). */
typedef struct model {
  int state, error, status, head_done, capped, keep, to_close;
  size_t head_bytes, trailer_bytes, consumed, body_len;
  unsigned ncb;
  uint64_t cb_hash, body_hash;
} model;

/* The next line at *pos of at most cap bytes (without its LF and one CR before it): 1, or 0 when the answer ends
 * first (cut), or -1 when it is too long (h1 refuses a line in pieces once it holds more than cap + 2 bytes). */
static int m_line(const uint8_t *a, size_t alen, size_t *pos, size_t cap, const uint8_t **s, size_t *ln) {
  const uint8_t *nl = (const uint8_t *)memchr(a + *pos, '\n', alen - *pos);
  size_t n;
  if (nl == NULL) return alen - *pos > cap + 2 ? -1 : 0;
  n = (size_t)(nl - (a + *pos));
  if (n > 0 && a[*pos + n - 1] == '\r') n--;
  if (n > cap) return -1;
  *s = a + *pos;
  *ln = n;
  *pos = (size_t)(nl - a) + 1;
  return 1;
}

static int m_lower(int c) { return c >= 'A' && c <= 'Z' ? c + 32 : c; }
static int m_is(const uint8_t *s, size_t n, const char *lower) { /* s is `lower`, in any case */
  size_t i;
  if (n != strlen(lower)) return 0;
  for (i = 0; i < n; i++)
    if (m_lower(s[i]) != lower[i]) return 0;
  return 1;
}
static int m_has(const uint8_t *s, size_t n, const char *lower) { /* `lower` is in s, in any case */
  size_t k = strlen(lower), i;
  for (i = 0; i + k <= n; i++)
    if (m_is(s + i, k, lower)) return 1;
  return 0;
}
static int m_digit(int c) { return c >= '0' && c <= '9'; }
static int m_hex(int c) {
  return m_digit(c) ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

static void m_body(model *m, const uint8_t *s, size_t n) {
  m->body_hash = fnv(m->body_hash, s, n);
  m->body_len += n;
}

static void model_read(const uint8_t *a, size_t alen, int head_only, size_t max_size, model *m) {
  size_t pos = 0, ln = 0, left;
  const uint8_t *s = NULL;
  int r, http10 = 0, chunked = 0, has_length = 0, close = 0, keep_alive = 0;
  unsigned long long length = 0;
  memset(m, 0, sizeof *m);
  m->cb_hash = m->body_hash = FNV0;
#define M_END(st, err)                                                                                                 \
  do {                                                                                                                 \
    m->state = (st);                                                                                                   \
    m->error = (err);                                                                                                  \
    m->consumed = pos;                                                                                                 \
    return;                                                                                                            \
  } while (0)
#define M_LINE(cap, toolong)                                                                                           \
  do {                                                                                                                 \
    r = m_line(a, alen, &pos, (cap), &s, &ln);                                                                         \
    if (r < 0) M_END(LC_H1_FAILED, (toolong));                                                                         \
    if (r == 0) M_END(LC_H1_FAILED, LC_H1_CUT);                                                                        \
  } while (0)
#define HEAD_CAP (m->head_bytes >= HMAX ? 0 : HMAX - m->head_bytes)
  for (;;) { /* heads: interim ones, then the answer's */
    unsigned char b[5];
    M_LINE(HEAD_CAP, LC_H1_TOO_LONG);
    m->head_bytes += ln + 2;
    if (m->head_bytes > HMAX) M_END(LC_H1_FAILED, LC_H1_TOO_LONG);
    if (ln < 12 || memcmp(s, "HTTP/1.", 7) != 0 || (s[7] != '0' && s[7] != '1') || s[8] != ' ' || !m_digit(s[9]) ||
        s[9] == '0' || !m_digit(s[10]) || !m_digit(s[11]) || (ln > 12 && m_digit(s[12])) || memchr(s, 0, ln))
      M_END(LC_H1_FAILED, LC_H1_MALFORMED);
    m->status = (s[9] - '0') * 100 + (s[10] - '0') * 10 + (s[11] - '0');
    if (m->status == 101) M_END(LC_H1_FAILED, LC_H1_MALFORMED); /* no request asks to switch protocols */
    http10 = s[7] == '0';
    b[0] = 'S';
    b[1] = (unsigned char)(m->status >> 8);
    b[2] = (unsigned char)m->status;
    m->cb_hash = fnv(m->cb_hash, b, 3);
    m->ncb++;
    chunked = has_length = close = keep_alive = 0;
    length = 0;
    for (;;) {
      const uint8_t *colon, *v, *e;
      M_LINE(HEAD_CAP, LC_H1_TOO_LONG);
      if (ln == 0) break;
      m->head_bytes += ln + 2;
      if (m->head_bytes > HMAX) M_END(LC_H1_FAILED, LC_H1_TOO_LONG);
      colon = (const uint8_t *)memchr(s, ':', ln);
      if (colon == NULL || colon == s || memchr(s, 0, ln)) M_END(LC_H1_FAILED, LC_H1_MALFORMED); /* no "name: value" */
      b[0] = 'F';
      b[1] = (unsigned char)(ln >> 24);
      b[2] = (unsigned char)(ln >> 16);
      b[3] = (unsigned char)(ln >> 8);
      b[4] = (unsigned char)ln;
      m->cb_hash = fnv(fnv(m->cb_hash, b, 5), s, ln);
      m->ncb++;
      v = colon + 1;
      e = s + ln;
      while (v < e && (*v == ' ' || *v == '\t')) v++;
      while (e > v && (e[-1] == ' ' || e[-1] == '\t')) e--;
      if (m_is(s, (size_t)(colon - s), "content-length")) {
        if (v == e) M_END(LC_H1_FAILED, LC_H1_MALFORMED);
        length = 0;
        for (; v < e; v++) {
          if (!m_digit(*v)) M_END(LC_H1_FAILED, LC_H1_MALFORMED);
          length = length > max_size ? length : length * 10 + (unsigned long long)(*v - '0'); /* past the cap: stays */
        }
        has_length = 1;
      } else if (m_is(s, (size_t)(colon - s), "connection")) {
        if (m_has(v, (size_t)(e - v), "close")) close = 1;
        if (m_has(v, (size_t)(e - v), "keep-alive")) keep_alive = 1;
      } else if (m_is(s, (size_t)(colon - s), "transfer-encoding")) {
        if (!m_is(v, (size_t)(e - v), "chunked")) M_END(LC_H1_FAILED, LC_H1_MALFORMED); /* chunked alone */
        chunked = 1;
      }
    }
    if (m->status >= 200) break;
  }
  m->head_done = 1;
  m->keep = !close && (!http10 || keep_alive);
  if (head_only || m->status == 204 || m->status == 304) M_END(LC_H1_DONE, 0);
  if (chunked) {
    for (;;) {
      size_t i = 0, d;
      unsigned long long len = 0;
      M_LINE(1024, LC_H1_MALFORMED);
      while (i < ln && (s[i] == ' ' || (s[i] >= 9 && s[i] <= 13))) i++;
      for (d = 0; i + d < ln && m_hex(s[i + d]) >= 0; d++)
        if (d < 16) len = len * 16 + (unsigned long long)m_hex(s[i + d]);
      if (d == 0 || d > 16) M_END(LC_H1_FAILED, LC_H1_MALFORMED);
      for (i += d; i < ln && (s[i] == ' ' || s[i] == '\t'); i++) {
      }
      if (i < ln && s[i] != ';') M_END(LC_H1_FAILED, LC_H1_MALFORMED); /* "0x2" is no size 0 */
      if (len == 0) break;
      if (len > max_size - m->body_len) {
        m->capped = 1;
        m->keep = 0;
        M_END(LC_H1_DONE, 0);
      }
      if (alen - pos < len) {
        m_body(m, a + pos, alen - pos);
        pos = alen;
        M_END(LC_H1_FAILED, LC_H1_CUT);
      }
      m_body(m, a + pos, (size_t)len);
      pos += (size_t)len;
      M_LINE(0, LC_H1_MALFORMED); /* the empty line after the data */
    }
    for (;;) { /* trailers */
      M_LINE(m->trailer_bytes >= HMAX ? 0 : HMAX - m->trailer_bytes, LC_H1_TOO_LONG);
      if (ln == 0) M_END(LC_H1_DONE, 0);
      m->trailer_bytes += ln + 2;
      if (m->trailer_bytes > HMAX) M_END(LC_H1_FAILED, LC_H1_TOO_LONG);
    }
  }
  if (has_length) {
    if (length > max_size) {
      m->capped = 1;
      m->keep = 0;
      M_END(LC_H1_DONE, 0);
    }
    if (alen - pos < length) {
      m_body(m, a + pos, alen - pos);
      pos = alen;
      M_END(LC_H1_FAILED, LC_H1_CUT);
    }
    m_body(m, a + pos, (size_t)length);
    pos += (size_t)length;
    M_END(LC_H1_DONE, 0);
  }
  m->keep = 0; /* to the close */
  m->to_close = 1;
  left = alen - pos;
  if (left > max_size) { /* the byte past the cap is the last taken */
    m->capped = 1;
    m_body(m, a + pos, max_size);
    pos += max_size + 1;
    M_END(LC_H1_DONE, 0);
  }
  m_body(m, a + pos, left);
  pos = alen;
  M_END(LC_H1_DONE, 0);
#undef M_END
#undef M_LINE
#undef HEAD_CAP
}

static void against_model(const result *o, const model *m) {
  char s[200];
  const char *what = NULL;
  if (o->state != m->state) what = "state";
  else if (o->error != m->error) what = "error";
  else if (o->status != m->status) what = "status";
  else if (o->head_done != m->head_done) what = "head_done";
  else if (o->head_bytes != m->head_bytes) what = "head_bytes";
  else if (o->trailer_bytes != m->trailer_bytes) what = "trailer_bytes";
  else if (o->r.ncb != m->ncb || o->r.cb_hash != m->cb_hash) what = "status / field calls";
  else if (o->body_bytes != m->body_len || o->r.body_hash != m->body_hash) what = "body";
  else if (o->state == LC_H1_DONE && o->capped != m->capped) what = "capped";
  else if (o->state == LC_H1_DONE && o->keep != m->keep) what = "keep";
  else if (o->state == LC_H1_DONE && !(m->to_close && m->capped) && o->consumed != m->consumed) what = "consumed";
  if (what == NULL) return;
  snprintf(s, sizeof s, "%s: h1 state %d error %d status %d body %zu consumed %zu; model state %d error %d status %d "
           "body %zu consumed %zu", what, o->state, o->error, o->status, o->body_bytes, o->consumed, m->state, m->error,
           m->status, m->body_len, m->consumed);
  fz_fail("h1 read the answer otherwise than its rules say", s);
}

static void fail_diff(const char *what, int run, long long a, long long b) {
  char s[160];
  snprintf(s, sizeof s, "run %d (of whole, bytes, splits, random) has %s %lld, the whole feed %lld", run + 1, what,
           b, a);
  fz_fail("the answer read differently when split differently", s);
}

static void compare(const result *a, const result *b, int run) {
  int body = !a->r.refused_body && !b->r.refused_body;
#define SAME(f)                                                                                                        \
  if (a->f != b->f) fail_diff(#f, run, (long long)a->f, (long long)b->f)
  SAME(state);
  SAME(error);
  SAME(status);
  SAME(http10);
  SAME(head_done);
  SAME(chunked);
  SAME(has_length);
  SAME(length);
  SAME(close);
  SAME(keep_alive);
  if (body) { /* a refused piece may be the one that passes max_size, or not, as the pieces fall */
    SAME(capped);
    SAME(keep);
  }
  SAME(got_any);
  SAME(head_bytes);
  SAME(trailer_bytes);
  SAME(eofed);
  SAME(r.ncb);
  SAME(r.cb_hash);
  SAME(r.refused_cb);
  SAME(r.refused_body);
  if (a->why != b->why && (a->why == NULL || b->why == NULL || strcmp(a->why, b->why) != 0))
    fz_fail("the answer read differently when split differently", "why");
  if (body) {
    SAME(body_bytes);
    SAME(r.body_len);
    SAME(r.body_hash);
  }
  /* (a body to the close past max_size: the byte past the cap is the last taken, however the bytes come) */
  if (a->state == LC_H1_DONE) SAME(consumed);
#undef SAME
}

static lc_h1 fresh, reused;
static int debug = -1;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  size_t i = 0, alen, dlen;
  unsigned flags, refuse, dirty, nsplit;
  uint8_t sizes[8];
  const uint8_t *a;
  uint8_t *big = NULL;
  int head_only, all_zero = 1, k;
  size_t max_size;
  result res[4];
  splitter sp;
  uint32_t seed = 2166136261u;

  if (debug < 0) debug = getenv("FZ_DEBUG") != NULL && getenv("FZ_DEBUG")[0] == '1';
  if (size < 4) return 0;
  flags = data[i++];
  refuse = data[i++];
  dirty = data[i++];
  nsplit = data[i++] & 7;
  if (size - i < nsplit) return 0;
  for (k = 0; k < (int)nsplit; k++) {
    sizes[k] = data[i++];
    if (sizes[k]) all_zero = 0;
  }
  if (nsplit == 0 || all_zero) { /* none given: pieces of 2, 3, 1 and 7 bytes */
    nsplit = 4;
    sizes[0] = 2;
    sizes[1] = 3;
    sizes[2] = 1;
    sizes[3] = 7;
  }
  max_size = MAX_SIZES[flags & 3];
  head_only = (flags & 4) != 0;
  if (flags & 8) {
    size_t off, len, count, total;
    if (size - i < 4) return 0;
    off = (size_t)data[i] << 8 | data[i + 1];
    len = (size_t)data[i + 2] + 1;
    count = data[i + 3];
    i += 4;
    a = data + i;
    alen = size - i;
    if (alen == 0) return 0;
    off %= alen;
    if (len > alen - off) len = alen - off;
    if (count > (EXPAND_MAX - alen) / len) count = (EXPAND_MAX - alen) / len;
    total = alen + count * len;
    big = (uint8_t *)malloc(total);
    if (big == NULL) fz_fail("malloc", NULL);
    memcpy(big, a, off);
    for (k = 0; (size_t)k < count; k++) memcpy(big + off + (size_t)k * len, a + off, len);
    memcpy(big + off + count * len, a + off, alen - off);
    a = big;
    alen = total;
  } else {
    a = data + i;
    alen = size - i;
  }
  for (k = 0; k < (int)i && k < 16; k++) seed = (seed ^ data[k]) * 16777619u;

  /* 1. the whole answer, on a reader as fresh as a caller makes one */
  memset(&fresh, 0, sizeof fresh);
  fresh.on_status = on_status;
  fresh.on_field = on_field;
  fresh.on_body = on_body;
  sp.mode = WHOLE;
  run(&fresh, a, alen, &sp, head_only, max_size, flags, refuse, &res[0]);
  if (!res[0].r.refused_cb && !res[0].r.refused_body) {
    model m;
    model_read(a, alen, head_only, max_size, &m);
    against_model(&res[0], &m);
  }
  if (debug) {
    static const char *const ERR[] = {"-", "MALFORMED", "TOO_LONG", "CUT", "REFUSED", "NOMEM"};
    const result *o = &res[0];
    fprintf(stderr, "h1: %zu bytes, max_size %zu%s: %s%s%s%s status %d%s, body %zu bytes%s%s, consumed %zu%s, head %zu, "
            "trailers %zu, %u status/field calls\n", alen, max_size, head_only ? ", HEAD" : "",
            o->state == LC_H1_DONE ? "DONE" : "FAILED ", o->state == LC_H1_DONE ? "" : ERR[o->error],
            o->why ? " " : "", o->why ? o->why : "", o->status, o->http10 ? " (HTTP/1.0)" : "", o->body_bytes,
            o->capped ? ", capped" : "", o->keep ? ", keep" : "", o->consumed, o->eofed ? " (eof)" : "",
            o->head_bytes, o->trailer_bytes, o->r.ncb);
  }
  lc_h1_free(&fresh);
  CHECK(fresh.line == NULL && fresh.line_cap == 0 && fresh.line_len == 0, "lc_h1_free left a line");

  /* 2-4 on one reader, started again each time after being left in the middle of something */
  memset(&reused, 0, sizeof reused);
  reused.on_status = on_status;
  reused.on_field = on_field;
  reused.on_body = on_body;
  dlen = (size_t)((unsigned long long)alen * dirty / 256);
  for (k = 1; k < 4; k++) {
    rec scratch;
    size_t used, off = 0;
    splitter dsp = {RANDOM, NULL, 0, 0, seed ^ (uint32_t)k};
    memset(&scratch, 0, sizeof scratch);
    scratch.p = &reused;
    scratch.max_size = MAX_SIZES[(flags + 1) & 3];
    scratch.cb_hash = scratch.body_hash = FNV0;
    lc_h1_start(&reused, !head_only, scratch.max_size);
    reused.ud = &scratch;
    while (off < dlen) { /* the dirty run: whatever it reads, only that it holds together */
      size_t n = next_piece(&dsp, dlen - off);
      if (feed(&reused, &scratch, a + off, n, &used) != LC_H1_MORE) break;
      off += n;
    }
    sp.mode = k == 1 ? BYTES : k == 2 ? SPLITS : RANDOM;
    sp.sizes = sizes;
    sp.nsizes = nsplit;
    sp.i = 0;
    sp.x = seed;
    run(&reused, a, alen, &sp, head_only, max_size, flags, refuse, &res[k]);
    compare(&res[0], &res[k], k);
  }
  lc_h1_free(&reused);
  lc_h1_free(&reused); /* twice: harmless */
  CHECK(reused.line == NULL && reused.line_cap == 0, "lc_h1_free left a line");
  free(big);
  return 0;
}
