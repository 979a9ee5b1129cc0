/* h1.c - an HTTP/1.x answer reader, fed bytes as they come: the curl transport's own reader for single calls (the
 * "direct" engine of http.c: libcurl makes the connection, the library writes the request and reads the answer).
 * No I/O and no Lua: the caller feeds what it received and learns when the answer is whole, so the same code runs
 * under the fuzzer (fuzz/fuzz_h1.c) with the bytes split anywhere.
 *
 * The rules are the cosocket reader's (lua/leadconnector/ngx.lua, read_answer), so that every transport takes or
 * refuses the same answers:
 *  - a line ends at LF, one CR before it is dropped;
 *  - a status line is "HTTP/1.0 " or "HTTP/1.1 ", exactly three digits, 100 or more, then no digit; 1xx answers
 *    are interim (their heads are read and forgotten);
 *  - the heads of one answer (interim ones included) hold LC_MAX_HEADER_BYTES at most, each line counted with a
 *    CR LF, and so do a chunked body's trailers;
 *  - every header line is "name: value" without a NUL byte (libcurl's rule; the cosocket reader passes over lines
 *    it does not use); a 101 is refused (no request asks to switch protocols);
 *  - Content-Length is digits only; Transfer-Encoding is "chunked" or refused, and takes precedence over
 *    Content-Length; with neither, the body runs to the end of the connection; a HEAD's answer, a 204 and a 304
 *    have no body;
 *  - a chunk's size is optional white space, 1 to 16 hex digits, optional white space, then the line's end or an
 *    extension (";...") on a line of at most 1 KiB; a chunk's data is followed by an empty line;
 *  - a body larger than max_size is not read past the cap (a Content-Length past it: not at all), and the
 *    connection is not kept;
 *  - the connection is kept only for an HTTP/1.1 answer without "Connection: close" (or an HTTP/1.0 one saying
 *    "keep-alive"), whose end was known from its framing, with no byte after it (the caller checks that last). */
#include <string.h>
#include <stdlib.h>

#include "lc.h"

#define CHUNK_LINE_MAX 1024

void lc_h1_start(lc_h1 *p, int head_only, size_t max_size) {
  lc_h1 keep = *p; /* the line buffer and the callbacks stay */
  memset(p, 0, sizeof *p);
  p->line = keep.line;
  p->line_cap = keep.line_cap;
  p->ud = keep.ud;
  p->on_status = keep.on_status;
  p->on_field = keep.on_field;
  p->on_body = keep.on_body;
  p->head_only = head_only;
  p->max_size = max_size;
  p->state = LC_H1_STATUS;
}

void lc_h1_free(lc_h1 *p) {
  free(p->line);
  p->line = NULL;
  p->line_cap = p->line_len = 0;
}

static int fail(lc_h1 *p, int why, const char *msg) {
  p->state = LC_H1_FAILED;
  p->error = why;
  p->why = msg;
  return LC_H1_FAILED;
}

static int ieq(const char *a, size_t n, const char *lower) { /* a (n bytes) equals lower, ASCII case-insensitively */
  size_t i;
  if (strlen(lower) != n) return 0;
  for (i = 0; i < n; i++) {
    char c = a[i];
    if (c >= 'A' && c <= 'Z') c = (char)(c + 32);
    if (c != lower[i]) return 0;
  }
  return 1;
}

static int icontains(const char *v, size_t n, const char *lower) { /* lower occurs in v, case-insensitively */
  size_t k = strlen(lower), i;
  for (i = 0; i + k <= n; i++)
    if (ieq(v + i, k, lower)) return 1;
  return 0;
}

/* The status line (without its line end): 1 and p->status, or 0. */
static int status_line(lc_h1 *p, const char *s, size_t n) {
  if (n < 12 || memcmp(s, "HTTP/1.", 7) != 0 || (s[7] != '0' && s[7] != '1') || s[8] != ' ') return 0;
  if (s[9] < '1' || s[9] > '9' || s[10] < '0' || s[10] > '9' || s[11] < '0' || s[11] > '9') return 0;
  if (n > 12 && s[12] >= '0' && s[12] <= '9') return 0;
  if (memchr(s, '\0', n) != NULL) return 0;
  p->status = (s[9] - '0') * 100 + (s[10] - '0') * 10 + (s[11] - '0');
  p->http10 = s[7] == '0';
  return 1;
}

/* A header line (without its line end) of the answer being read: the framing fields here, the rest to the caller. */
static int header_line(lc_h1 *p, const char *s, size_t n) {
  const char *colon = (const char *)memchr(s, ':', n), *v, *e;
  size_t name_len;
  /* A line that is no "name: value", or a NUL byte: a head that is not HTTP's, which libcurl refuses too. */
  if (colon == NULL || colon == s) return fail(p, LC_H1_MALFORMED, "answer has a malformed header line");
  if (memchr(s, '\0', n) != NULL) return fail(p, LC_H1_MALFORMED, "answer has a NUL byte in its headers");
  if (p->on_field && !p->on_field(p->ud, s, n)) return fail(p, LC_H1_REFUSED, NULL);
  name_len = (size_t)(colon - s);
  v = colon + 1;
  e = s + n;
  while (v < e && (*v == ' ' || *v == '\t')) v++;
  while (e > v && (e[-1] == ' ' || e[-1] == '\t')) e--;
  switch (s[0] | 0x20) {
  case 'c':
    if (ieq(s, name_len, "content-length")) {
      unsigned long long len = 0;
      const char *d;
      if (v == e) return fail(p, LC_H1_MALFORMED, "answer has a bad Content-Length");
      for (d = v; d < e; d++) {
        if (*d < '0' || *d > '9') return fail(p, LC_H1_MALFORMED, "answer has a bad Content-Length");
        if (len > (~0ULL - 9) / 10) len = ~0ULL; /* past any cap: saturates */
        else len = len * 10 + (unsigned long long)(*d - '0');
      }
      p->has_length = 1;
      p->length = len;
    } else if (ieq(s, name_len, "connection")) {
      if (icontains(v, (size_t)(e - v), "close")) p->close = 1;
      if (icontains(v, (size_t)(e - v), "keep-alive")) p->keep_alive = 1;
    }
    break;
  case 't':
    if (ieq(s, name_len, "transfer-encoding")) {
      /* chunked alone: no request says Accept-Encoding or TE, so gzip, deflate and the like would be bytes nobody
       * can read (handed over raw as the body, they would pass for it) */
      if (!ieq(v, (size_t)(e - v), "chunked"))
        return fail(p, LC_H1_MALFORMED, "answer has a Transfer-Encoding other than chunked");
      p->chunked = 1;
    }
    break;
  default:
    break;
  }
  return LC_H1_MORE;
}

/* The head ended (its empty line): on to the next head (after a 1xx) or the body. */
static int head_end(lc_h1 *p) {
  if (p->status < 200) { /* interim: forget its fields, read the next head */
    p->chunked = p->has_length = p->close = p->keep_alive = 0;
    p->length = 0;
    p->state = LC_H1_STATUS;
    return LC_H1_MORE;
  }
  p->head_done = 1;
  p->keep = !p->close && (!p->http10 || p->keep_alive);
  if (p->head_only || p->status == 204 || p->status == 304) {
    p->state = LC_H1_DONE;
  } else if (p->chunked) {
    p->state = LC_H1_CHUNK_SIZE;
  } else if (p->has_length) {
    if (p->length > p->max_size) { /* like libcurl's size cap: nothing of it is read */
      p->capped = 1;
      p->keep = 0;
      p->state = LC_H1_DONE;
    } else {
      p->left = p->length;
      p->state = p->left ? LC_H1_LENGTH : LC_H1_DONE;
    }
  } else {
    p->keep = 0;
    p->state = LC_H1_TO_CLOSE;
  }
  return p->state == LC_H1_DONE ? LC_H1_DONE : LC_H1_MORE;
}

/* A whole line (without its line end) in the state it ends. */
static int line_done(lc_h1 *p, const char *s, size_t n) {
  switch (p->state) {
  case LC_H1_STATUS:
    p->head_bytes += n + 2;
    if (p->head_bytes > LC_MAX_HEADER_BYTES) return fail(p, LC_H1_TOO_LONG, NULL);
    if (!status_line(p, s, n)) return fail(p, LC_H1_MALFORMED, "malformed answer (not an HTTP/1.x status line)");
    if (p->status == 101) /* no request asks to switch protocols: what follows is no HTTP answer */
      return fail(p, LC_H1_MALFORMED, "answer switches protocols (101), which no request asked for");
    if (p->on_status && !p->on_status(p->ud, p->status)) return fail(p, LC_H1_REFUSED, NULL);
    p->state = LC_H1_HEADER;
    return LC_H1_MORE;
  case LC_H1_HEADER:
    if (n == 0) return head_end(p);
    p->head_bytes += n + 2;
    if (p->head_bytes > LC_MAX_HEADER_BYTES) return fail(p, LC_H1_TOO_LONG, NULL);
    return header_line(p, s, n);
  case LC_H1_CHUNK_SIZE: {
    size_t i = 0, d;
    unsigned long long len = 0;
    while (i < n && (s[i] == ' ' || (s[i] >= 9 && s[i] <= 13))) i++;
    for (d = i; d < n; d++) {
      char c = s[d];
      int v = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
      if (v < 0) break;
      if (d - i == 16) return fail(p, LC_H1_MALFORMED, "answer has a malformed chunk");
      len = len * 16 + (unsigned long long)v;
    }
    if (d == i) return fail(p, LC_H1_MALFORMED, "answer has a malformed chunk");
    /* after the digits: white space, then the line's end or an extension (";..."); "0x2" is no size 0 */
    while (d < n && (s[d] == ' ' || s[d] == '\t')) d++;
    if (d < n && s[d] != ';') return fail(p, LC_H1_MALFORMED, "answer has a malformed chunk");
    if (len == 0) {
      p->trailer_bytes = 0;
      p->state = LC_H1_TRAILER;
      return LC_H1_MORE;
    }
    if (len > p->max_size - p->body_bytes) { /* body_bytes <= max_size always */
      p->capped = 1;
      p->keep = 0;
      p->state = LC_H1_DONE;
      return LC_H1_DONE;
    }
    p->left = len;
    p->state = LC_H1_CHUNK_DATA;
    return LC_H1_MORE;
  }
  case LC_H1_CHUNK_END:
    if (n != 0) return fail(p, LC_H1_MALFORMED, "answer has a malformed chunk");
    p->state = LC_H1_CHUNK_SIZE;
    return LC_H1_MORE;
  case LC_H1_TRAILER:
    if (n == 0) {
      p->state = LC_H1_DONE;
      return LC_H1_DONE;
    }
    p->trailer_bytes += n + 2;
    if (p->trailer_bytes > LC_MAX_HEADER_BYTES) return fail(p, LC_H1_TOO_LONG, NULL);
    return LC_H1_MORE;
  default:
    return fail(p, LC_H1_MALFORMED, "internal: a line in a body state");
  }
}

/* How long a line may be in the current state (without its line end), counting what the head already holds. */
static size_t line_cap(const lc_h1 *p) {
  switch (p->state) {
  case LC_H1_STATUS:
  case LC_H1_HEADER: return p->head_bytes >= LC_MAX_HEADER_BYTES ? 0 : LC_MAX_HEADER_BYTES - p->head_bytes;
  case LC_H1_TRAILER: return p->trailer_bytes >= LC_MAX_HEADER_BYTES ? 0 : LC_MAX_HEADER_BYTES - p->trailer_bytes;
  case LC_H1_CHUNK_SIZE: return CHUNK_LINE_MAX;
  default: return 0; /* LC_H1_CHUNK_END: the empty line */
  }
}

static int too_long(lc_h1 *p) {
  if (p->state == LC_H1_CHUNK_SIZE || p->state == LC_H1_CHUNK_END)
    return fail(p, LC_H1_MALFORMED, "answer has a malformed chunk");
  return fail(p, LC_H1_TOO_LONG, NULL);
}

/* Body bytes to the caller, within max_size. */
static int body(lc_h1 *p, const char *s, size_t n) {
  if (n > p->max_size - p->body_bytes) {
    n = p->max_size - p->body_bytes; /* what fits is kept: an error answer cut at the cap is still classified */
    p->capped = 1;
    p->keep = 0;
  }
  if (n && p->on_body && !p->on_body(p->ud, s, n)) return fail(p, LC_H1_REFUSED, NULL);
  p->body_bytes += n;
  if (p->capped) {
    p->state = LC_H1_DONE;
    return LC_H1_DONE;
  }
  return LC_H1_MORE;
}

int lc_h1_feed(lc_h1 *p, const char *data, size_t len, size_t *used) {
  size_t at = 0;
  int r = LC_H1_MORE;
  *used = 0;
  if (p->state == LC_H1_DONE || p->state == LC_H1_FAILED) return p->state; /* the answer has ended */
  if (len) p->got_any = 1;
  while (at < len && r == LC_H1_MORE) {
    const char *s = data + at;
    size_t n = len - at;
    switch (p->state) {
    case LC_H1_LENGTH:
    case LC_H1_CHUNK_DATA: {
      size_t take = n < p->left ? n : (size_t)p->left;
      r = body(p, s, take);
      at += take;
      p->left -= take;
      if (r == LC_H1_MORE && p->left == 0) {
        if (p->state == LC_H1_LENGTH) {
          p->state = LC_H1_DONE;
          r = LC_H1_DONE;
        } else {
          p->state = LC_H1_CHUNK_END;
        }
      }
      break;
    }
    case LC_H1_TO_CLOSE: { /* past the cap: the byte that shows it is the last taken, however the bytes come */
      size_t room = p->max_size - p->body_bytes, take = n > room ? room + 1 : n;
      r = body(p, s, take);
      at += take;
      break;
    }
    case LC_H1_DONE:
      r = LC_H1_DONE;
      break;
    case LC_H1_FAILED:
      r = LC_H1_FAILED;
      break;
    default: { /* a line */
      const char *nl = (const char *)memchr(s, '\n', n);
      size_t cap = line_cap(p), take = nl ? (size_t)(nl - s) + 1 : n;
      if (p->line_len == 0 && nl) { /* the whole line is here: read in place */
        size_t ln = take - 1;
        if (ln && s[ln - 1] == '\r') ln--;
        at += take;
        r = ln > cap ? too_long(p) : line_done(p, s, ln);
        break;
      }
      /* a line in pieces: gathered (its line end too), refused as soon as it passes its cap */
      if (p->line_len + take > cap + 2) {
        r = too_long(p);
        break;
      }
      if (p->line_cap - p->line_len < take) {
        size_t c = p->line_cap ? p->line_cap : 256;
        char *q;
        while (c - p->line_len < take) c *= 2;
        q = (char *)realloc(p->line, c);
        if (q == NULL) {
          r = fail(p, LC_H1_NOMEM, NULL);
          break;
        }
        p->line = q;
        p->line_cap = c;
      }
      memcpy(p->line + p->line_len, s, take);
      p->line_len += take;
      at += take;
      if (nl) {
        size_t ln = p->line_len - 1;
        if (ln && p->line[ln - 1] == '\r') ln--;
        p->line_len = 0;
        r = ln > cap ? too_long(p) : line_done(p, p->line, ln);
      }
      break;
    }
    }
  }
  *used = at;
  return r;
}

int lc_h1_eof(lc_h1 *p) {
  if (p->state == LC_H1_TO_CLOSE) {
    p->state = LC_H1_DONE;
    return LC_H1_DONE;
  }
  if (p->state == LC_H1_DONE) return LC_H1_DONE;
  if (p->state == LC_H1_FAILED) return LC_H1_FAILED;
  return fail(p, LC_H1_CUT, NULL);
}
