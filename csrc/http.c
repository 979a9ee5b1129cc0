/* http.c - leadconnector.Session: one libcurl easy handle per client, kept alive and reused across calls.
 *
 * Callbacks here never call into Lua (a Lua error must never unwind through libcurl): the body, the headers we
 * care about and the upload state all live in the session struct, which the userdata owns; close() and __gc free
 * it through one idempotent cleanup. The token exists only inside the Authorization header line, which is wiped
 * before it is freed, and is never copied into a message, an error or a tostring.
 *
 * A send (POST) must never go out twice. libcurl silently re-sends a request when a reused connection turns out
 * dead with no answer (Curl_retry_request), which for a non-idempotent send could deliver a message twice. So a
 * send's transfer carries a pre-request callback (CURLOPT_PREREQFUNCTION, libcurl 7.80+) that lets the request go
 * out once and aborts any second attempt of the same transfer: the caller gets a network error marked
 * request_sent = true, and the Lua layer's rules decide (never to re-send, for a send). The body itself goes with
 * POSTFIELDS, in the same write as the headers. On an older libcurl the body goes through a read callback with no
 * seek callback instead, which makes the re-send fail for want of a rewind (CURLE_SEND_FAIL_REWIND) — the same
 * guarantee, at the cost of a second write per send. Reads and status updates (idempotent) keep libcurl's
 * transparent retry. */
#include <curl/curl.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include "lc.h"

typedef struct lc_session lc_session;
typedef struct lc_xfer lc_xfer;

/* One transfer: an easy handle and everything its callbacks write. The session's main handle is one; a batch
 * uses a pool of them. */
struct lc_xfer {
  CURL *easy;
  lc_session *s;
  char *body;
  size_t body_len, body_cap;
  int too_big, added, index;
  int head_too_big;  /* the answer's status line and headers passed LC_MAX_HEADER_BYTES */
  const char *bad_head; /* why the answer's head was refused (a static string), or NULL: see on_header */
  int head_done;     /* the last answer's headers ended (their blank line came): else it was cut in them */
  int expect_status; /* the next header line may start an answer (none yet, or a head just ended and no body came) */
  int said_close;    /* the answer's Connection header said "close" (libcurl 8.14 misses it in a list) */
  size_t head_bytes; /* of this answer so far */
  enum lc_op op;
  lc_ratelimit rl_now;
  double retry_after;
  char trace_id[LC_TRACE_ID_MAX + 1];
  char content_type[128]; /* the answer's Content-Type, cut to fit (for answers kept as bytes) */
  size_t content_type_len;
  const char *up; /* upload (sends, older libcurl): points into a Lua string kept alive on the stack */
  size_t up_len, up_pos;
  int once;     /* this transfer may be sent once only (a send) */
  int attempts; /* requests libcurl started for this transfer (pre-request callback calls) */
  struct curl_slist *hdr_tmp; /* a call's own Version; freed after each call */
  curl_mime *mime;            /* a multipart body (uploads): libcurl's mime API; freed after each call */
  char *url;
  size_t url_cap;
  void *uh; /* the request's URL, parsed here (CURLU *, libcurl 7.63+; see xfer_prepare) */
  char errbuf[CURL_ERROR_SIZE];
};

/* The sockets a multi handle waits on now, as its socket callback says (watch_set). */
typedef struct lc_watch {
  struct pollfd *p;
  size_t n, cap;
  int lost; /* the list could not grow: the multi no longer knows what to wait on */
} lc_watch;

/* How a direct exchange ended, for direct_push (the exchange itself touches no Lua). */
typedef struct direct_out {
  int ok;           /* an answer to classify (the connection's h1 and x hold it) */
  const char *kind; /* else the error's kind */
  CURLcode code;
  int sent;
  char msg[CURL_ERROR_SIZE + 200];
} direct_out;

/* One connection of the direct engine and the exchange on it (see the direct engine's section). Single calls have
 * one (s->dmain, connected by a blocking curl_easy_perform); a batch has one per concurrent call, each connected on
 * a multi handle of its own: a CONNECT_ONLY handle taken off its multi loses its connection, and in a multi shared
 * with other connections libcurl's pruning of "dead" idle connections could close one whose answer is waiting. */
typedef struct lc_dconn {
  lc_session *s;
  lc_xfer *x;       /* what the answer's head and body go to: s->main, or the slot's own xb */
  lc_xfer xb;       /* a batch slot's */
  CURL *conn;       /* the CONNECT_ONLY handle holding the connection; NULL when there is none */
  curl_socket_t fd; /* its socket, once connected */
  CURLM *cm;        /* a batch slot's multi (NULL for s->dmain) */
  int connecting;   /* conn is being connected on cm */
  lc_watch cw;      /* while connecting: the sockets cm watches */
  double ctimer;    /* while connecting: when cm wants its timeout action (monotonic seconds; < 0 none) */
  lc_h1 h1;
  char *req;        /* the request being written (holds the token: wiped) */
  size_t req_cap, reqlen, off;
  double stop, tmo;
  int state, once, head_only, reused, wrote, stale, r;
  CURLcode rc, wrc;
  short wait;       /* what the exchange waits for on the connection's socket */
  direct_out o;
} lc_dconn;

struct lc_session {
  lc_xfer main;
  lc_xfer **pool; /* batch transfers, each allocated on its own: libcurl holds pointers to them (callback data) */
  int pool_n;
  CURLSH *share; /* one connection cache, DNS cache and TLS session cache for every handle of the session */
  CURLM *multi;
  struct curl_slist *hdr_get, *hdr_body; /* default Version */
  char *auth;                            /* "Authorization: Bearer ..." (wiped on free) */
  char *version;                         /* default Version value */
  char *base, *ua, *ca, *proxy;
  size_t base_len, max_size;
  long timeout_ms, connect_timeout_ms;
  int verify, busy, closed;
  lc_ratelimit rl_last;
  pid_t pid;   /* the process that made the handles: a forked child must not use them (see session_after_fork) */
  unsigned forks; /* fork_count when the handles were made (see forked()) */
  int *fds;    /* every socket libcurl opened for the session and has not closed yet */
  size_t fds_n, fds_cap;
  lc_watch watch; /* the sockets the multi handle waits on now (see drive; on a lost list, multi_reset) */
  /* The direct engine (see direct_call): libcurl connects, the library speaks HTTP/1.1. */
  int direct;           /* calls and batches use it: no proxy, and the engine was not set to "libcurl" */
  lc_dconn dmain;       /* single calls' connection and exchange */
  lc_dconn **dslots;    /* a batch's, one per concurrent call, each allocated on its own (libcurl points at them) */
  int dslot_n;
  CURLSH *conn_share;   /* their TLS sessions and DNS answers, which outlive a dropped connection */
  char *dhead;          /* " HTTP/1.1\r\nHost: ...\r\nUser-Agent: ...\r\n[Authorization: ...]Accept: ...\r\n" (wiped) */
  size_t dhead_len;
  char *host;           /* the Host header's value */
  char *prefix;         /* the base URL's path, before each call's own */
  size_t prefix_len;
  char *rbuf;           /* what curl_easy_recv reads into (one read at a time, whichever connection) */
  struct pollfd *dpoll; /* a direct batch's wait list, and the slot of each entry */
  int *dpoll_of;
  size_t dpoll_cap;
  double connects;      /* connections the direct engine made (session:stats) */
};

#define AUTH_PREFIX "Authorization: Bearer "
#define AUTH_PREFIX_LEN (sizeof AUTH_PREFIX - 1)

/* --- small helpers ------------------------------------------------------------------------------------------- */

static void wipe(void *p, size_t n) {
  volatile unsigned char *v = (volatile unsigned char *)p;
  while (n--) *v++ = 0;
}

static void free_slist_wiped(struct curl_slist *l) {
  struct curl_slist *i;
  for (i = l; i != NULL; i = i->next)
    if (i->data) wipe(i->data, strlen(i->data));
  curl_slist_free_all(l);
}

static char *dupstr(const char *s) {
  size_t n;
  char *p;
  if (s == NULL) return NULL;
  n = strlen(s) + 1;
  p = (char *)malloc(n);
  if (p) memcpy(p, s, n);
  return p;
}

static int build_headers(lc_session *s, const char *version, const char *ctype, struct curl_slist **get,
                         struct curl_slist **body) {
  char vline[128], cline[300];
  struct curl_slist *g = NULL, *b = NULL, *t;
  snprintf(vline, sizeof vline, "Version: %s", version);
#define ADD(list, str)                                                                                                 \
  do {                                                                                                                 \
    t = curl_slist_append(list, str);                                                                                  \
    if (t == NULL) goto oom;                                                                                           \
    list = t;                                                                                                          \
  } while (0)
  if (s->auth) ADD(g, s->auth); /* a session made with token = false sends none (OAuth token requests) */
  ADD(g, vline);
  ADD(g, "Accept: application/json");
  if (s->auth) ADD(b, s->auth);
  ADD(b, vline);
  ADD(b, "Accept: application/json");
  if (ctype == NULL || *ctype) { /* "": none (libcurl's mime API sets multipart/form-data; boundary=... itself) */
    snprintf(cline, sizeof cline, "Content-Type: %s", ctype ? ctype : "application/json");
    ADD(b, cline);
  }
  ADD(b, "Expect:"); /* no 100-continue round trip */
#undef ADD
  *get = g;
  *body = b;
  return 1;
oom:
  free_slist_wiped(g);
  free_slist_wiped(b);
  return 0;
}

static void xfer_cleanup(lc_session *s, lc_xfer *x) {
  if (x->easy) {
    if (x->added && s->multi) curl_multi_remove_handle(s->multi, x->easy);
    curl_easy_cleanup(x->easy);
  }
  x->easy = NULL;
  x->added = 0;
  free_slist_wiped(x->hdr_tmp);
  x->hdr_tmp = NULL;
  curl_mime_free(x->mime);
  x->mime = NULL;
  free(x->body);
  free(x->url);
  x->body = x->url = NULL;
  x->body_len = x->body_cap = x->url_cap = 0;
#if LIBCURL_VERSION_NUM >= 0x073f00
  curl_url_cleanup((CURLU *)x->uh); /* after the easy handle that pointed at it */
#endif
  x->uh = NULL;
}

/* Frees every libcurl handle of the session (connections included); the settings stay. */
static void drop_transfers(lc_session *s) { /* libcurl's engine: its transfers, multi and share */
  int i;
  xfer_cleanup(s, &s->main);
  for (i = 0; i < s->pool_n; i++) {
    xfer_cleanup(s, s->pool[i]);
    free(s->pool[i]);
  }
  free(s->pool);
  s->pool = NULL;
  s->pool_n = 0;
  if (s->multi) curl_multi_cleanup(s->multi);
  s->multi = NULL;
  if (s->share) curl_share_cleanup(s->share); /* after every handle using it is gone */
  s->share = NULL;
}

static void direct_drop(lc_dconn *d);
static void dconn_free(lc_dconn *d);
static void dslots_free(lc_session *s);

static void session_drop_handles(lc_session *s) {
  drop_transfers(s);
  direct_drop(&s->dmain); /* the direct engine's connections, then their share */
  dslots_free(s);
  if (s->conn_share) curl_share_cleanup(s->conn_share);
  s->conn_share = NULL;
}

/* In a process forked from the one that made the session, the session's sockets are the parent's connections too
 * (the same open files), and a libcurl handle knows nothing of the fork: a request from the child goes out on the
 * parent's connection and the two read each other's answers. Nor may the child close them the usual way: a TLS
 * connection's shutdown writes a close_notify into the parent's stream. So each inherited socket is first turned
 * into /dev/null in the child alone (dup2 replaces the child's descriptor; the parent's socket is untouched), then
 * the handles are freed as usual: whatever libcurl writes while shutting down goes nowhere, and closing them closes
 * /dev/null. Should /dev/null not open, the descriptors are closed instead, at once before the cleanup (nothing
 * can reuse their numbers in between: libcurl then only meets "bad descriptor"). */
static void forget_inherited_sockets(lc_session *s) {
  int devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
  size_t i;
  for (i = 0; i < s->fds_n; i++) {
    if (devnull < 0 || dup2(devnull, s->fds[i]) < 0) close(s->fds[i]);
  }
  if (devnull >= 0) close(devnull);
}

/* Forks seen by this process, counted by a pthread_atfork child handler (registered in lc_http_init): while it
 * is unchanged since a session made its handles, no fork happened and no getpid() system call is needed per call.
 * When it changed (or for a child made without fork(3)'s handlers), the pid decides. */
static volatile unsigned fork_count = 0;
static void count_fork(void) { fork_count++; }

static int forked(const lc_session *s) {
  if (s->pid == 0 || s->forks == fork_count) return 0;
  return s->pid != getpid();
}

/* The one cleanup behind close() and __gc: idempotent. */
static void session_cleanup(lc_session *s) {
  if (forked(s)) forget_inherited_sockets(s);
  session_drop_handles(s);
  free(s->fds);
  s->fds = NULL;
  s->fds_n = s->fds_cap = 0;
  free(s->watch.p);
  memset(&s->watch, 0, sizeof s->watch);
  free_slist_wiped(s->hdr_get);
  free_slist_wiped(s->hdr_body);
  s->hdr_get = s->hdr_body = NULL;
  if (s->auth) {
    wipe(s->auth, strlen(s->auth));
    free(s->auth);
    s->auth = NULL;
  }
  if (s->dhead) {
    wipe(s->dhead, s->dhead_len);
    free(s->dhead);
    s->dhead = NULL;
  }
  dconn_free(&s->dmain);
  free(s->dpoll);
  free(s->dpoll_of);
  s->dpoll = NULL;
  s->dpoll_of = NULL;
  s->dpoll_cap = 0;
  free(s->rbuf);
  free(s->host);
  free(s->prefix);
  s->rbuf = s->host = s->prefix = NULL; /* s->direct stays: stats() still says which engine it had */
  free(s->version);
  free(s->base);
  free(s->ua);
  free(s->ca);
  free(s->proxy);
  s->version = s->base = s->ua = s->ca = s->proxy = NULL;
  s->closed = 1;
}

/* --- libcurl callbacks (pure C) --------------------------------------------------------------------------------- */

/* Appends body bytes to x's answer, within max_response_size: 0 when past it (x->too_big) or out of memory. */
static int body_add(lc_xfer *x, const char *data, size_t n) {
  size_t max = x->s->max_size;
  if (x->body_len > max || n > max - x->body_len) {
    x->too_big = 1;
    return 0;
  }
  if (x->body_cap - x->body_len < n) {
    size_t cap = x->body_cap ? x->body_cap : 4096;
    char *p;
    while (cap - x->body_len < n) cap *= 2;
    if (cap > max) cap = max;
    p = (char *)realloc(x->body, cap);
    if (p == NULL) return 0;
    x->body = p;
    x->body_cap = cap;
  }
  memcpy(x->body + x->body_len, data, n);
  x->body_len += n;
  return 1;
}

static size_t on_write(char *data, size_t size, size_t nmemb, void *ud) {
  lc_xfer *x = (lc_xfer *)ud;
  size_t n = size * nmemb;
  x->expect_status = 0; /* a body came: header lines after it are trailers */
  return body_add(x, data, n) ? n : 0; /* 0 aborts the transfer: CURLE_WRITE_ERROR */
}

static size_t on_read(char *dest, size_t size, size_t nmemb, void *ud) {
  lc_xfer *x = (lc_xfer *)ud;
  size_t n = size * nmemb, left = x->up_len - x->up_pos;
  if (n > left) n = left;
  if (n) memcpy(dest, x->up + x->up_pos, n);
  x->up_pos += n;
  return n;
}

/* libcurl opens and closes every socket of the session through these two, so the session knows its sockets: what
 * a forked child must take away from under its inherited handles (session_after_fork). */
static curl_socket_t on_open_socket(void *ud, curlsocktype purpose, struct curl_sockaddr *a) {
  lc_session *s = (lc_session *)ud;
  curl_socket_t fd;
  (void)purpose;
  if (s->fds_n == s->fds_cap) {
    size_t cap = s->fds_cap ? s->fds_cap * 2 : 8;
    int *p = (int *)realloc(s->fds, cap * sizeof *p);
    if (p == NULL) return CURL_SOCKET_BAD;
    s->fds = p;
    s->fds_cap = cap;
  }
  fd = socket(a->family, a->socktype | SOCK_CLOEXEC, a->protocol);
  if (fd != CURL_SOCKET_BAD) s->fds[s->fds_n++] = fd;
  return fd;
}

static int on_close_socket(void *ud, curl_socket_t fd) {
  lc_session *s = (lc_session *)ud;
  size_t i;
  for (i = 0; i < s->fds_n; i++)
    if (s->fds[i] == fd) {
      s->fds[i] = s->fds[--s->fds_n];
      break;
    }
  return close(fd);
}

#if LIBCURL_VERSION_NUM >= 0x075000
#define LC_HAVE_PREREQ 1
/* Called by libcurl right before it sends a request of the transfer: the first time, and again if it decides on
 * its own to retry on a fresh connection. A send refuses that second time. */
static int on_prereq(void *ud, char *conn_primary_ip, char *conn_local_ip, int conn_primary_port, int conn_local_port) {
  lc_xfer *x = (lc_xfer *)ud;
  (void)conn_primary_ip;
  (void)conn_local_ip;
  (void)conn_primary_port;
  (void)conn_local_port;
  x->attempts++;
  return (x->once && x->attempts > 1) ? CURL_PREREQFUNC_ABORT : CURL_PREREQFUNC_OK;
}
#else
#define LC_HAVE_PREREQ 0
#endif

static int name_is(const char *line, size_t len, const char *name, const char **value, size_t *vlen) {
  size_t n = strlen(name);
  const char *v, *end = line + len;
  if (len <= n || line[n] != ':' || strncasecmp(line, name, n) != 0) return 0;
  v = line + n + 1;
  while (v < end && (*v == ' ' || *v == '\t')) v++;
  while (end > v && (end[-1] == '\r' || end[-1] == '\n' || end[-1] == ' ' || end[-1] == '\t')) end--;
  *value = v;
  *vlen = (size_t)(end - v);
  return 1;
}

static int parse_number(const char *v, size_t n, double *out) {
  char tmp[40];
  char *endp;
  size_t i;
  double d = 0;
  if (n == 0) return 0;
  for (i = 0; i < n && i < 15 && v[i] >= '0' && v[i] <= '9'; i++) d = d * 10 + (v[i] - '0');
  if (i == n) { /* the usual case: a plain non-negative integer */
    *out = d;
    return 1;
  }
  if (n >= sizeof tmp) return 0;
  for (i = 0; i < n; i++) /* plain decimals only: no hex, exponents, inf or nan */
    if (!((v[i] >= '0' && v[i] <= '9') || v[i] == '.')) return 0;
  memcpy(tmp, v, n);
  tmp[n] = '\0';
  *out = strtod(tmp, &endp);
  return *endp == '\0' && isfinite(*out); /* "inf", "1e999" and "nan" are not numbers a header may give */
}

/* The value of a header line "Name: value\r\n" once its name (of length n) has been matched. */
static void header_value(const char *line, size_t len, size_t n, const char **value, size_t *vlen) {
  const char *v = line + n + 1, *end = line + len;
  while (v < end && (*v == ' ' || *v == '\t')) v++;
  while (end > v && (end[-1] == '\r' || end[-1] == '\n' || end[-1] == ' ' || end[-1] == '\t')) end--;
  *value = v;
  *vlen = (size_t)(end - v);
}

/* An answer's status line as libcurl hands it over: "HTTP/1.0 NNN ..." or "HTTP/1.1 NNN ...", or the line libcurl
 * makes of an HTTP/2 or 3 answer's status ("HTTP/2 NNN "). Exactly three digits, 100 or more, then no further digit:
 * the cosocket reader's rule. libcurl 7.88 refuses "HTTP/1.1 2000 OK"; libcurl 8 reads it as a 200, and a 2011 as a
 * 201 (found by running spec 57 against the libcurl of bookworm-backports); both read "http/1.1 404" (lower case) as
 * a 200. So the library checks the line itself, whatever libcurl it runs on. */
static int multiplexed(CURL *e) { /* the answer came over HTTP/2 or 3, where libcurl writes the status line */
  long v = 0;
#if LIBCURL_VERSION_NUM >= 0x073400
  char *scheme = NULL; /* HTTP/2 only over TLS (libcurl's default): libcurl 7.88 says 2 after an HTTP/1.x server's
                          "HTTP/2 200 " line, which over plain http is surely a lie */
  if (curl_easy_getinfo(e, CURLINFO_SCHEME, &scheme) != CURLE_OK || scheme == NULL || strcasecmp(scheme, "https") != 0)
    return 0;
#endif
  if (curl_easy_getinfo(e, CURLINFO_HTTP_VERSION, &v) != CURLE_OK) return 0;
#if LIBCURL_VERSION_NUM >= 0x074200
  if (v == CURL_HTTP_VERSION_3) return 1;
#endif
  return v == CURL_HTTP_VERSION_2_0;
}

static int status_line_ok(CURL *e, const char *line, size_t len) {
  size_t i;
  if (len < 7 || memcmp(line, "HTTP/", 5) != 0) return 0;
  if (len >= 9 && line[5] == '1' && line[6] == '.' && (line[7] == '0' || line[7] == '1') && line[8] == ' ')
    i = 9; /* HTTP/1.2 to 1.9: libcurl refuses them, and so does the cosocket reader */
  else if (len == 13 && (line[5] == '2' || line[5] == '3') && line[6] == ' ' && memcmp(line + 10, " \r\n", 3) == 0 &&
           multiplexed(e))
    i = 7; /* exactly the line libcurl writes ("HTTP/2 %03d \r\n"): from an HTTP/1.x server, "HTTP/2 200" is a lie
              about its framing, refused as on cosockets (libcurl 7.88 reports HTTP/2 then, so the form counts too) */
  else
    return 0;
  if (len < i + 3) return 0;
  if (line[i] < '1' || line[i] > '9' || line[i + 1] < '0' || line[i + 1] > '9' || line[i + 2] < '0' ||
      line[i + 2] > '9')
    return 0;
  return len == i + 3 || line[i + 3] < '0' || line[i + 3] > '9';
}

/* A new answer starts (its status line): what the last one's headers said is forgotten. */
static void answer_reset(lc_xfer *x) {
  x->head_done = 0;
  x->said_close = 0;
  x->rl_now.seen = 0;
  x->retry_after = -1;
  x->trace_id[0] = '\0';
  x->content_type_len = 0;
}

/* A call starts on x (either engine): no answer, no body, nothing refused yet. */
static void xfer_begin(lc_xfer *x, enum lc_op op) {
  answer_reset(x);
  x->op = op;
  x->body_len = 0;
  x->too_big = 0;
  x->head_too_big = 0;
  x->bad_head = NULL;
  x->expect_status = 1;
  x->head_bytes = 0;
  x->errbuf[0] = '\0';
}

/* One header line of an answer's head ("Name: value", its line end there or not), on either engine: what the
 * library reads from it. 0 refuses the answer (x->bad_head says why). */
static int head_field(lc_xfer *x, const char *line, size_t len) {
  /* Suffixes after "X-RateLimit-", in the order of lc_ratelimit's fields. */
  static const char *const rl_names[] = {"Max", "Remaining", "Interval-Milliseconds", "Limit-Daily", "Daily-Remaining"};
  size_t vlen;
  const char *v;
  int i;
  if (len < 12) return 1;
  if ((line[0] | 0x20) == 'c' && name_is(line, len, "Content-Type", &v, &vlen)) {
    if (vlen >= sizeof x->content_type) vlen = sizeof x->content_type - 1;
    memcpy(x->content_type, v, vlen);
    x->content_type[vlen] = '\0';
    x->content_type_len = vlen;
    return 1;
  }
  if ((line[0] | 0x20) == 'c' && name_is(line, len, "Connection", &v, &vlen)) {
    size_t k;
    for (k = 0; k + 5 <= vlen; k++)
      if (strncasecmp(v + k, "close", 5) == 0) x->said_close = 1;
    return 1;
  }
  if ((line[0] | 0x20) == 'c' && name_is(line, len, "Content-Length", &v, &vlen)) {
    /* Digits only, as the cosocket reader takes it: libcurl reads "+11", "11a", "0x10" or "1 2" as a length (what
     * follows the number is ignored), and a body framed by a length the server did not mean is not trusted. */
    size_t k;
    for (k = 0; k < vlen && v[k] >= '0' && v[k] <= '9'; k++) {
    }
    if (vlen == 0 || k != vlen) {
      x->bad_head = "answer has a bad Content-Length";
      return 0;
    }
    return 1;
  }
  if ((line[0] | 0x20) == 'x' && strncasecmp(line, "X-RateLimit-", 12) == 0) {
    const char *name = line + 12;
    size_t rest = len - 12;
    for (i = 0; i < 5; i++) {
      size_t n = strlen(rl_names[i]);
      double d;
      if (rest > n && name[n] == ':' && strncasecmp(name, rl_names[i], n) == 0) {
        header_value(line, len, 12 + n, &v, &vlen);
        if (parse_number(v, vlen, &d)) {
          (&x->rl_now.max)[i] = d;
          x->rl_now.seen |= 1u << i;
        }
        break;
      }
    }
    return 1;
  }
  if ((line[0] | 0x20) == 'r' && name_is(line, len, "Retry-After", &v, &vlen)) {
    double d;
    if (parse_number(v, vlen, &d) && d >= 0) {
      x->retry_after = d;
    } else if (vlen > 0 && vlen < 64) { /* an HTTP date */
      char tmp[64];
      time_t when;
      memcpy(tmp, v, vlen);
      tmp[vlen] = '\0';
      when = curl_getdate(tmp, NULL);
      if (when != (time_t)-1) {
        double left = difftime(when, time(NULL));
        x->retry_after = left > 0 ? left : 0;
      }
    }
    return 1;
  }
  if ((line[0] | 0x20) == 'x' && (name_is(line, len, "X-Trace-Id", &v, &vlen) || name_is(line, len, "X-Request-Id", &v, &vlen))) {
    /* redacted before it is cut: a long token echoed there must not leave its first bytes */
    lc_redact_copy(x->trace_id, sizeof x->trace_id, v, vlen, x->s->auth ? x->s->auth + AUTH_PREFIX_LEN : "",
                   x->s->auth ? strlen(x->s->auth + AUTH_PREFIX_LEN) : 0);
  }
  return 1;
}

static size_t on_header(char *line, size_t size, size_t nmemb, void *ud) {
  lc_xfer *x = (lc_xfer *)ud;
  size_t len = size * nmemb;
  /* The cosocket transport's cap, so both take or refuse the same answers: 64 KiB of status line and headers. */
  if (len > LC_MAX_HEADER_BYTES - x->head_bytes) {
    x->head_too_big = 1;
    return 0; /* aborts the transfer: CURLE_WRITE_ERROR */
  }
  x->head_bytes += len;
  /* An answer's first line: its status line. Another answer's may follow a head (after a 1xx, or a proxy's answer
   * to CONNECT) but not a body: a line starting "HTTP/" among the headers or in a chunked body's trailers is only
   * a header. libcurl takes "http/" in any case. */
  if (x->expect_status && len >= 5 && strncasecmp(line, "HTTP/", 5) == 0) { /* a new answer: start over */
    x->expect_status = 0;
    if (!status_line_ok(x->easy, line, len)) {
      x->bad_head = "answer has a malformed status line (not HTTP/1.0, 1.1, 2 or 3 and a three-digit status)";
      return 0; /* aborts the transfer: CURLE_WRITE_ERROR */
    }
    answer_reset(x);
    return len;
  }
  if (len >= 1 && len <= 2 && (line[0] == '\r' || line[0] == '\n')) {
    x->head_done = 1;
    x->expect_status = 1;
    return len;
  }
  return head_field(x, line, len) ? len : 0; /* 0 aborts the transfer: CURLE_WRITE_ERROR */
}

/* --- setting up handles ------------------------------------------------------------------------------------------ */

#define SETOPT(opt, val)                                                                                               \
  do {                                                                                                                 \
    if (curl_easy_setopt(e, opt, val) != CURLE_OK) goto failed;                                                        \
  } while (0)

/* A millisecond count for libcurl, clamped: casting a double past LONG_MAX (timeout = 1e300) is undefined. */
static long clamp_ms(double ms) {
  if (!(ms > 0)) return 0;
  if (ms < 1) return 1; /* a time limit under a millisecond must not round to 0, libcurl's "no limit" */
  return ms < 2147483647.0 ? (long)ms : 2147483647L;
}

/* The settings every handle of the session has, transfers and the direct engine's connection alike: how it
 * connects (sockets the session knows of, time limits, TLS verification, the proxy or none) and to what. */
static int common_opts(lc_session *s, CURL *e, char *errbuf) {
  SETOPT(CURLOPT_NOSIGNAL, 1L);
  SETOPT(CURLOPT_ERRORBUFFER, errbuf);
  SETOPT(CURLOPT_OPENSOCKETFUNCTION, on_open_socket);
  SETOPT(CURLOPT_OPENSOCKETDATA, (void *)s);
  SETOPT(CURLOPT_CLOSESOCKETFUNCTION, on_close_socket);
  SETOPT(CURLOPT_CLOSESOCKETDATA, (void *)s);
  SETOPT(CURLOPT_CONNECTTIMEOUT_MS, s->connect_timeout_ms);
  SETOPT(CURLOPT_TIMEOUT_MS, s->timeout_ms);
  SETOPT(CURLOPT_TCP_KEEPALIVE, 1L);
#if LIBCURL_VERSION_NUM >= 0x075500
  SETOPT(CURLOPT_PROTOCOLS_STR, "http,https");
#else
  SETOPT(CURLOPT_PROTOCOLS, (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS));
#endif
  SETOPT(CURLOPT_SSL_VERIFYPEER, s->verify ? 1L : 0L);
  SETOPT(CURLOPT_SSL_VERIFYHOST, s->verify ? 2L : 0L);
  if (s->ca) SETOPT(CURLOPT_CAINFO, s->ca);
  /* No proxy unless one is given: environment variables do not silently reroute the token. Without one, "no
   * proxy for any host" too: libcurl then skips reading no_proxy/NO_PROXY from the environment on every request
   * (two getenv scans per call; issue 16). */
  SETOPT(CURLOPT_PROXY, s->proxy ? s->proxy : "");
  if (s->proxy == NULL) SETOPT(CURLOPT_NOPROXY, "*");
  return 1;
failed:
  return 0;
}

/* Makes x's easy handle with the session's settings; 0 when libcurl refuses something (x->errbuf says what). */
static int xfer_init(lc_session *s, lc_xfer *x) {
  CURL *e;
  x->s = s;
  x->retry_after = -1;
  x->easy = e = curl_easy_init();
  if (e == NULL) return 0;
  if (!common_opts(s, e, x->errbuf)) goto failed;
  SETOPT(CURLOPT_SHARE, s->share);
  SETOPT(CURLOPT_PRIVATE, (void *)x);
  SETOPT(CURLOPT_WRITEFUNCTION, on_write);
  SETOPT(CURLOPT_WRITEDATA, (void *)x);
  SETOPT(CURLOPT_HEADERFUNCTION, on_header);
  SETOPT(CURLOPT_HEADERDATA, (void *)x);
  SETOPT(CURLOPT_READFUNCTION, on_read);
  SETOPT(CURLOPT_READDATA, (void *)x);
#if LC_HAVE_PREREQ
  SETOPT(CURLOPT_PREREQFUNCTION, on_prereq);
  SETOPT(CURLOPT_PREREQDATA, (void *)x);
#endif
  SETOPT(CURLOPT_USERAGENT, s->ua);
  SETOPT(CURLOPT_FOLLOWLOCATION, 0L); /* a redirect never carries the token anywhere */
  SETOPT(CURLOPT_PATH_AS_IS, 1L);
  SETOPT(CURLOPT_HEADEROPT, (long)CURLHEADER_SEPARATE); /* our headers never go to a proxy */
  SETOPT(CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)s->max_size);
  return 1;
failed:
  return 0;
}

/* Points x at one request. The path, body and version strings must stay alive (on the Lua stack) until the
 * transfer is done. Returns 1, 0 on out of memory, -1 for a version that cannot be a header value. */
static int xfer_prepare(lc_session *s, lc_xfer *x, enum lc_op op, const char *method, const char *path, size_t plen,
                        const char *body, size_t blen, const char *version, const char *ctype, double timeout_s) {
  CURL *e = x->easy;
  struct curl_slist *hdrs;
  if (x->mime) { /* left by a call cut short by a Lua error */
    curl_easy_setopt(e, CURLOPT_MIMEPOST, NULL);
    curl_mime_free(x->mime);
    x->mime = NULL;
  }
  if (x->url_cap < s->base_len + plen + 1) {
    char *p = (char *)realloc(x->url, s->base_len + plen + 1);
    if (p == NULL) return 0;
    x->url = p;
    x->url_cap = s->base_len + plen + 1;
  }
  memcpy(x->url, s->base, s->base_len);
  memcpy(x->url + s->base_len, path, plen);
  x->url[s->base_len + plen] = '\0';

  hdrs = body ? s->hdr_body : s->hdr_get;
  if (ctype != NULL) { /* a body of another type (multipart): checked by the Lua layer, never a control character */
    const char *c;
    for (c = ctype; *c; c++)
      if ((unsigned char)*c < 0x20 || *c == 0x7f) return -1;
    if (strlen(ctype) > 200) return -1;
  }
  if ((version != NULL && strcmp(version, s->version) != 0) || (ctype != NULL && body != NULL)) {
    struct curl_slist *g = NULL, *b = NULL;
    const char *c;
    if (version == NULL) version = s->version; /* before the loop: a call's own type with the default version */
    for (c = version; *c; c++) /* the Lua layer checks it; a header line is never built from a control character */
      if ((unsigned char)*c < 0x20 || *c == 0x7f) return -1;
    if (version == NULL) version = s->version;
    if (strlen(version) > 64) return -1;
    if (!build_headers(s, version, ctype, &g, &b)) return 0;
    free_slist_wiped(body ? g : b);
    x->hdr_tmp = hdrs = body ? b : g;
  }
  /* The URL parsed into a URL handle with the flags libcurl itself parses CURLOPT_URL with (it keeps the path as it
   * is, as CURLOPT_PATH_AS_IS asks): the same request, and libcurl then copies the parsed parts instead of parsing
   * the string and putting it back together again on every transfer, 10,000 instructions a request (issue 16).
   * Should it not parse (or no handle be had), libcurl gets the string, and fails the transfer as it always did. */
#if LIBCURL_VERSION_NUM >= 0x073f00 /* CURLOPT_CURLU: libcurl 7.63 */
  if (x->uh == NULL) x->uh = curl_url();
  if (x->uh != NULL && (strncmp(x->url, "http://", 7) == 0 || strncmp(x->url, "https://", 8) == 0) &&
      curl_url_set((CURLU *)x->uh, CURLUPART_URL, x->url, CURLU_GUESS_SCHEME | CURLU_NON_SUPPORT_SCHEME | CURLU_PATH_AS_IS) ==
          CURLUE_OK) {
    curl_easy_setopt(e, CURLOPT_CURLU, (CURLU *)x->uh);
  } else {
    curl_easy_setopt(e, CURLOPT_CURLU, NULL);
    curl_easy_setopt(e, CURLOPT_URL, x->url);
  }
#else
  curl_easy_setopt(e, CURLOPT_URL, x->url);
#endif
  curl_easy_setopt(e, CURLOPT_HTTPHEADER, hdrs);
  curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, timeout_s > 0 ? clamp_ms(timeout_s * 1000 + 0.5) : s->timeout_ms);
  x->up = NULL;
  x->once = 0;
  x->attempts = 0;
  if (body == NULL) {
    curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, strcmp(method, "GET") == 0 ? NULL : method);
    curl_easy_setopt(e, CURLOPT_HTTPGET, 1L);
  } else if (strcmp(method, "POST") == 0) {
    x->once = 1; /* the pre-request callback lets libcurl send it once */
#if LC_HAVE_PREREQ
    curl_easy_setopt(e, CURLOPT_POST, 1L);
    curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)blen);
    curl_easy_setopt(e, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, NULL);
#else
    x->up = body; /* read callback, no seek callback: libcurl cannot re-send it by itself */
    x->up_len = blen;
    x->up_pos = 0;
    curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, NULL);
    curl_easy_setopt(e, CURLOPT_POST, 1L);
    curl_easy_setopt(e, CURLOPT_POSTFIELDS, NULL);
    curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)blen);
#endif
  } else {
    curl_easy_setopt(e, CURLOPT_POST, 1L);
    curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)blen);
    curl_easy_setopt(e, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, method);
  }
  xfer_begin(x, op);
  return 1;
}

/* A call's own header value (a version, a content type): NULL (none) or a short one without control characters. */
static int header_value_ok(const char *v, size_t max) {
  const char *c;
  if (v == NULL) return 1;
  for (c = v; *c; c++)
    if ((unsigned char)*c < 0x20 || *c == 0x7f) return 0;
  return (size_t)(c - v) <= max;
}

/* Codes that, on their own, say that no request could be written: no connection (or no TLS session) was made.
 * On their own only: the transfer may have sent its request on an earlier connection first (x->attempts). */
static int never_left(CURLcode rc) {
  switch (rc) { /* not CURLE_UNSUPPORTED_PROTOCOL: libcurl 7.88 also says it of an answer's HTTP version */
  case CURLE_URL_MALFORMAT:
  case CURLE_COULDNT_RESOLVE_PROXY:
  case CURLE_COULDNT_RESOLVE_HOST:
  case CURLE_COULDNT_CONNECT:
  case CURLE_SSL_CONNECT_ERROR:
  case CURLE_PEER_FAILED_VERIFICATION:
  case CURLE_SSL_CERTPROBLEM:
  case CURLE_SSL_CIPHER:
  case CURLE_SSL_CACERT_BADFILE:
  case CURLE_SSL_ISSUER_ERROR:
  case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
    return 1;
  default:
    return 0;
  }
}

static int request_left(CURL *e, CURLcode rc) {
  long reqsize = 0;
  if (never_left(rc)) return 0;
  curl_easy_getinfo(e, CURLINFO_REQUEST_SIZE, &reqsize);
  return reqsize > 0;
}

/* What an answer's rate-limit headers said, into what the session has seen (session:rate_limit). */
static void merge_rl(lc_session *s, const lc_xfer *x) {
  int i;
  if (!x->rl_now.seen) return;
  for (i = 0; i < 5; i++)
    if (x->rl_now.seen & (1u << i)) (&s->rl_last.max)[i] = (&x->rl_now.max)[i];
  s->rl_last.seen |= x->rl_now.seen;
}

/* A whole answer (or an error answer cut at the size cap), classified by its status: value, or nil + error. */
static int answer_finish(lua_State *L, lc_session *s, lc_xfer *x, long status) {
  lc_answer a;
  a.status = status;
  a.body = x->body ? x->body : "";
  a.body_len = x->body_len;
  a.retry_after = x->retry_after;
  a.trace_id = x->trace_id;
  a.secret = s->auth ? s->auth + AUTH_PREFIX_LEN : NULL; /* the token itself */
  a.secret_len = a.secret ? strlen(a.secret) : 0;
  a.content_type = x->content_type;
  a.content_type_len = x->content_type_len;
  return lc_finish(L, x->op, &a);
}


/* An answer of libcurl's engine said "Connection: close": its connection is shut here, whatever libcurl made of
 * the header (libcurl 8.14 keeps a connection whose answer said "Keep-Alive, Close"). The socket is found among
 * the session's by its local port; shut down, it reads as ended, and neither libcurl nor libcurl_fresh reuses it. */
static void shut_conn_of(lc_session *s, CURL *e) {
  long port = 0;
  size_t i;
  curl_socket_t mine = s->dmain.fd;
  if (curl_easy_getinfo(e, CURLINFO_LOCAL_PORT, &port) != CURLE_OK || port <= 0) return;
  for (i = 0; i < s->fds_n; i++) {
    struct sockaddr_storage a;
    socklen_t al = sizeof a;
    if (s->fds[i] == mine || getsockname(s->fds[i], (struct sockaddr *)&a, &al) != 0) continue;
    if ((a.ss_family == AF_INET && ntohs(((struct sockaddr_in *)&a)->sin_port) == port) ||
        (a.ss_family == AF_INET6 && ntohs(((struct sockaddr_in6 *)&a)->sin6_port) == port)) {
      shutdown(s->fds[i], SHUT_RDWR);
      return;
    }
  }
}

/* After a transfer: pushes value, or nil + error (returns 1 or 2). Frees the call's own header list. */
static int xfer_result(lua_State *L, lc_session *s, lc_xfer *x, CURLcode rc) {
  long status = 0;
  int capped;
  x->up = NULL;
  if (x->hdr_tmp) {
    curl_easy_setopt(x->easy, CURLOPT_HTTPHEADER, NULL);
    free_slist_wiped(x->hdr_tmp);
    x->hdr_tmp = NULL;
  }
  if (x->mime) {
    curl_easy_setopt(x->easy, CURLOPT_MIMEPOST, NULL);
    curl_mime_free(x->mime);
    x->mime = NULL;
  }
  merge_rl(s, x);
  if (x->said_close) shut_conn_of(s, x->easy);
  curl_easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &status);
  capped = x->too_big || rc == CURLE_FILESIZE_EXCEEDED;
  if (rc == CURLE_OK && !x->head_done) {
    /* libcurl takes an answer whose connection closed in the middle of its headers as complete (and empty):
     * no whole answer came, as the cosocket transport says too */
    lua_pushnil(L);
    lc_push_error(L, "network", "answer cut short in its headers: the connection closed");
    lc_seterrfield_bool(L, "request_sent", 1);
    return 2;
  }
  if (rc == CURLE_OK || (capped && status >= 300)) /* a complete answer, or an error answer cut at the size cap */
    return answer_finish(L, s, x, status);
  lua_pushnil(L);
  if (x->once && (x->attempts > 1 || (x->attempts == 1 && never_left(rc)))) {
    /* libcurl wanted to send the request again on a fresh connection: the one it went out on closed with no
     * answer. It may have been processed, so it is not sent again. */
    /* Or libcurl tried that fresh connection and it failed (refused, say): still, the request went out on the
     * first one (the pre-request callback ran), so it is request_sent = true, never "never left". */
    lc_push_error(L, "network", "the connection closed before any answer came; the request was sent and may have "
                                "been processed, so it was not sent again (%s)",
                  x->errbuf[0] ? x->errbuf : curl_easy_strerror(rc));
    lc_seterrfield_num(L, "curl_code", (double)rc);
    lc_seterrfield_bool(L, "request_sent", 1);
    return 2;
  }
  if (x->bad_head) {
    lc_push_error(L, "network", "%s", x->bad_head);
    lc_seterrfield_num(L, "curl_code", (double)rc);
    lc_seterrfield_bool(L, "request_sent", 1);
    return 2;
  }
  if (x->head_too_big) {
    lc_push_error(L, "network", "answer has more than %d bytes of headers", LC_MAX_HEADER_BYTES);
    lc_seterrfield_num(L, "curl_code", (double)rc);
    lc_seterrfield_bool(L, "request_sent", 1);
    return 2;
  }
  if (capped) {
    lc_push_error(L, "decode", "answer is larger than max_response_size (%lu bytes)", (unsigned long)s->max_size);
    lc_seterrfield_num(L, "status", (double)status);
  } else {
    lc_push_error(L, rc == CURLE_OPERATION_TIMEDOUT ? "timeout" : "network", "%s",
                  x->errbuf[0] ? x->errbuf : curl_easy_strerror(rc));
  }
  lc_seterrfield_num(L, "curl_code", (double)rc);
  /* Sent as soon as libcurl started a request on a connection (the pre-request callback), whatever failed
   * after: a transfer whose first connection took the request and died, then whose transparent retry could not
   * connect, ends with a "could not connect" code although the server may have processed the request. */
  lc_seterrfield_bool(L, "request_sent", x->attempts > 0 || request_left(x->easy, rc));
  return 2;
}

/* --- the direct engine -------------------------------------------------------------------------------------------
 * A call or a batch (not a multipart upload, not through a proxy) is written and read by the library on a
 * connection libcurl makes: CURLOPT_CONNECT_ONLY, then curl_easy_send and curl_easy_recv. libcurl still does all of
 * the connecting (resolving, TCP, TLS with peer and host verification, its TLS session cache); the library does the
 * HTTP/1.1: the request written in one piece from a head made once per session, the answer read by h1.c with the
 * cosocket reader's rules. What that leaves out is libcurl's per-transfer machinery -- the request formatted a byte
 * at a time, each answer header matched against its own list, a connection struct made and freed, a 64 KB upload
 * buffer for every HTTPS request: over TLS, 117.6k instructions a request against 33.9k for the same exchange done
 * this way (issue 16; bench/raw_connect_only.c was the experiment).
 *
 * Never twice: this engine knows when a request's bytes left. A kept-alive connection is checked before it is
 * written to (a server that closed it has left an end of file to read); should it turn out dead all the same -- not
 * one byte of an answer, the connection closed or reset -- a read or an update (GET, PUT, DELETE) goes again on a
 * fresh connection, up to 4 times, as libcurl and the cosocket transport do; a send (POST) never: it fails
 * request_sent = true, and the Lua layer's rules decide. Only a first write that took no byte at all is "not sent". */

#define DIRECT_RBUF 16384
#define DIRECT_MAX_STALE 4


/* A socket callback's news for list w: what to wait for on fd (CURL_POLL_IN/OUT/INOUT), or REMOVE. Never fails
 * libcurl (a -1 would kill the multi): a list that cannot grow is marked lost, and its user fails the step. */
static void watch_set(lc_watch *w, curl_socket_t fd, int what) {
  size_t i;
  for (i = 0; i < w->n && w->p[i].fd != fd; i++) {
  }
  if (what == CURL_POLL_REMOVE) {
    if (i < w->n) w->p[i] = w->p[--w->n];
    return;
  }
  if (i == w->n) {
    if (w->n == w->cap) {
      size_t cap = w->cap ? w->cap * 2 : 4;
      struct pollfd *p = (struct pollfd *)realloc(w->p, cap * sizeof *p);
      if (p == NULL) {
        w->lost = 1;
        return;
      }
      w->p = p;
      w->cap = cap;
    }
    w->n++;
    w->p[i].fd = fd;
  }
  w->p[i].events = (short)(((what & CURL_POLL_IN) ? POLLIN : 0) | ((what & CURL_POLL_OUT) ? POLLOUT : 0));
  w->p[i].revents = 0;
}

/* What poll said of a socket, as curl_multi_socket_action takes it. */
static int cselect_of(short r) {
  return ((r & (POLLIN | POLLHUP | POLLERR)) ? CURL_CSELECT_IN : 0) | ((r & POLLOUT) ? CURL_CSELECT_OUT : 0) |
         ((r & (POLLERR | POLLNVAL)) ? CURL_CSELECT_ERR : 0);
}

static int h1_status(void *ud, int status) {
  (void)status;
  answer_reset((lc_xfer *)ud);
  return 1;
}
static int h1_field(void *ud, const char *line, size_t n) { return head_field((lc_xfer *)ud, line, n); }
static int h1_body(void *ud, const char *data, size_t n) { return body_add((lc_xfer *)ud, data, n); }

/* d, ready for use: its answers go to x. */
static void dconn_init(lc_session *s, lc_dconn *d, lc_xfer *x) {
  d->s = s;
  d->x = x;
  d->fd = CURL_SOCKET_BAD;
  d->ctimer = -1;
  d->h1.ud = x;
  d->h1.on_status = h1_status;
  d->h1.on_field = h1_field;
  d->h1.on_body = h1_body;
}

/* The connection goes (a TLS one with its close_notify); its TLS session stays in conn_share for the next. */
static void direct_drop(lc_dconn *d) {
  if (d->conn) {
    if (d->cm) curl_multi_remove_handle(d->cm, d->conn); /* which closes a CONNECT_ONLY handle's connection */
    curl_easy_cleanup(d->conn);
  }
  d->conn = NULL;
  d->fd = CURL_SOCKET_BAD;
  d->connecting = 0;
  d->cw.n = 0;
  d->cw.lost = 0;
  d->ctimer = -1;
}

/* Everything d holds, freed (d itself is its owner's). */
static void dconn_free(lc_dconn *d) {
  direct_drop(d);
  if (d->cm) curl_multi_cleanup(d->cm);
  d->cm = NULL;
  if (d->req) {
    wipe(d->req, d->req_cap);
    free(d->req);
  }
  d->req = NULL;
  d->req_cap = 0;
  lc_h1_free(&d->h1);
  free(d->cw.p);
  memset(&d->cw, 0, sizeof d->cw);
  free(d->xb.body);
  d->xb.body = NULL;
  d->xb.body_len = d->xb.body_cap = 0;
}

/* A batch's connections, gone. */
static void dslots_free(lc_session *s) {
  int i;
  for (i = 0; i < s->dslot_n; i++) {
    dconn_free(s->dslots[i]);
    free(s->dslots[i]);
  }
  free(s->dslots);
  s->dslots = NULL;
  s->dslot_n = 0;
}

static int path_char(unsigned char c) { /* RFC 3986 pchar, "/" and "?", or "%" of an escape */
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || strchr("-._~!$&'()*+,;=:@/?%", c) != NULL;
}

/* Whether calls can take the direct engine, and the Host header and path prefix they need: only for a plain
 * http(s)://host[:port][/path] base (the Lua layer allows nothing else), no proxy, and unless told "libcurl". */
static int direct_setup(lc_session *s, const char *engine) {
  const char *a, *e, *colon = NULL, *c;
  int https;
  size_t hlen;
  dconn_init(s, &s->dmain, &s->main);
  if (s->proxy != NULL || (engine != NULL && strcmp(engine, "libcurl") == 0)) return 1;
#if LIBCURL_VERSION_NUM < 0x072d00 /* CURLINFO_ACTIVESOCKET: libcurl 7.45 */
  return 1;
#endif
  if (strncmp(s->base, "https://", 8) == 0) {
    https = 1;
    a = s->base + 8;
  } else if (strncmp(s->base, "http://", 7) == 0) {
    https = 0;
    a = s->base + 7;
  } else {
    return 1;
  }
  for (e = a; *e && *e != '/'; e++) {
    if (!((*e >= 'a' && *e <= 'z') || (*e >= 'A' && *e <= 'Z') || (*e >= '0' && *e <= '9') || strchr(".-[]:", *e)))
      return 1;
    if (*e == ':') colon = e;
    if (*e == ']') colon = NULL; /* a colon of an IPv6 address */
  }
  if (e == a || colon == a) return 1;
  for (c = e; *c; c++)
    if (!path_char((unsigned char)*c) || *c == '?') return 1;
  hlen = (size_t)(e - a);
  if (colon != NULL) { /* the port: a default one is left out of Host, as libcurl and the cosocket transport do */
    long port = 0;
    for (c = colon + 1; c < e; c++) {
      if (*c < '0' || *c > '9' || port > 65535) return 1;
      port = port * 10 + (*c - '0');
    }
    if (port < 1 || port > 65535) return 1;
    if (port == (https ? 443 : 80)) hlen = (size_t)(colon - a);
  }
  s->host = (char *)malloc(hlen + 1);
  s->prefix = dupstr(e);
  if (s->host == NULL || s->prefix == NULL) return 0;
  memcpy(s->host, a, hlen);
  s->host[hlen] = '\0';
  s->prefix_len = strlen(s->prefix);
  s->direct = 1;
  return 1;
}

/* The part of every request after its target: the request line's end, then Host, User-Agent, Authorization (when
 * the session has a token) and Accept -- the headers the libcurl engine sends. Made again when the token changes. */
static int direct_head(lc_session *s) {
  static const char fmt[] = " HTTP/1.1\r\nHost: %s\r\nUser-Agent: %s\r\n%s%sAccept: application/json\r\n";
  size_t n;
  char *h;
  if (!s->direct) return 1;
  n = sizeof fmt + strlen(s->host) + strlen(s->ua) + (s->auth ? strlen(s->auth) + 2 : 0);
  h = (char *)malloc(n);
  if (h == NULL) return 0;
  snprintf(h, n, fmt, s->host, s->ua, s->auth ? s->auth : "", s->auth ? "\r\n" : "");
  if (s->dhead) {
    wipe(s->dhead, s->dhead_len);
    free(s->dhead);
  }
  s->dhead = h;
  s->dhead_len = strlen(h);
  return 1;
}

/* Whether a request is one for this engine: a method of capital letters, a path of bytes a URL carries as they
 * are (else the libcurl engine makes of it what it always did). */
static int direct_fits(const lc_session *s, const char *method, const char *path, size_t plen) {
  size_t mlen = strlen(method), i;
  if (mlen == 0 || mlen > 16) return 0;
  for (i = 0; i < mlen; i++)
    if (method[i] < 'A' || method[i] > 'Z') return 0;
  for (i = 0; i < plen; i++)
    if (!path_char((unsigned char)path[i])) return 0;
  return s->prefix_len + plen > 0 && (s->prefix_len ? s->prefix[0] : path[0]) == '/';
}

/* The request, whole, in d->req (d->reqlen): 1, 0 out of memory, -1 when it is not one for this engine. */
static int direct_request(lc_session *s, lc_dconn *d, const char *method, const char *path, size_t plen,
                          const char *body, size_t blen, const char *version, const char *ctype) {
  size_t mlen = strlen(method), vlen = strlen(version), clen = 0, need;
  char num[24];
  char *p;
  if (!direct_fits(s, method, path, plen)) return -1;
  if (body) {
    if (ctype == NULL) ctype = "application/json";
    clen = strlen(ctype);
    snprintf(num, sizeof num, "%lu", (unsigned long)blen);
  }
  need = mlen + 1 + s->prefix_len + plen + s->dhead_len + 9 + vlen + 2 + 2 + blen +
         (body ? 14 + clen + 2 + 16 + strlen(num) + 2 : 0);
  if (d->req_cap < need) {
    char *q = (char *)malloc(need); /* not realloc: the old one holds the token, and is wiped */
    if (q == NULL) return 0;
    if (d->req) {
      wipe(d->req, d->req_cap);
      free(d->req);
    }
    d->req = q;
    d->req_cap = need;
  }
  p = d->req;
#define PUT(str, n)                                                                                                    \
  do {                                                                                                                 \
    memcpy(p, str, n);                                                                                                 \
    p += n;                                                                                                            \
  } while (0)
  PUT(method, mlen);
  *p++ = ' ';
  PUT(s->prefix, s->prefix_len);
  PUT(path, plen);
  PUT(s->dhead, s->dhead_len);
  PUT("Version: ", 9);
  PUT(version, vlen);
  PUT("\r\n", 2);
  if (body) {
    PUT("Content-Type: ", 14);
    PUT(ctype, clen);
    PUT("\r\nContent-Length: ", 18);
    PUT(num, strlen(num));
    PUT("\r\n", 2);
  }
  PUT("\r\n", 2);
  if (blen) PUT(body, blen);
#undef PUT
  d->reqlen = (size_t)(p - d->req);
  return 1;
}

/* A CONNECT_ONLY handle for d, to connect within `left` seconds; NULL (*rc says why) when it cannot be made. */
static CURL *direct_handle(lc_session *s, lc_dconn *d, double left, CURLcode *rc) {
  CURL *e;
  long ms = clamp_ms(left * 1000 + 0.5);
  *rc = CURLE_OUT_OF_MEMORY;
  if (s->conn_share == NULL) {
    s->conn_share = curl_share_init();
    if (s->conn_share == NULL) return NULL;
    curl_share_setopt(s->conn_share, CURLSHOPT_SHARE, CURL_LOCK_DATA_SSL_SESSION);
    curl_share_setopt(s->conn_share, CURLSHOPT_SHARE, CURL_LOCK_DATA_DNS);
  }
  e = curl_easy_init();
  if (e == NULL) return NULL;
  if (!common_opts(s, e, d->x->errbuf)) goto failed;
  SETOPT(CURLOPT_SHARE, s->conn_share);
  SETOPT(CURLOPT_URL, s->base);
  SETOPT(CURLOPT_CONNECT_ONLY, 1L);
  SETOPT(CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1); /* ALPN offers http/1.1 only: never an h2 connection */
  SETOPT(CURLOPT_TIMEOUT_MS, ms);
  SETOPT(CURLOPT_CONNECTTIMEOUT_MS, ms < s->connect_timeout_ms ? ms : s->connect_timeout_ms);
  return e;
failed:
  curl_easy_cleanup(e);
  *rc = CURLE_FAILED_INIT;
  return NULL;
}

/* A new connection for d: made here, within `left` seconds, for single calls (CURLE_OK, or what libcurl said:
 * d->x->errbuf); started on the slot's own multi for a batch (CURLE_OK and d->connecting: the batch drives it). */
static CURLcode direct_connect(lc_session *s, lc_dconn *d, double left) {
  CURLcode rc;
  CURL *e;
  direct_drop(d);
  e = direct_handle(s, d, left, &rc);
  if (e == NULL) return rc;
  if (d->cm != NULL) {
    if (curl_multi_add_handle(d->cm, e) != CURLM_OK) {
      curl_easy_cleanup(e);
      return CURLE_OUT_OF_MEMORY;
    }
    d->conn = e;
    d->connecting = 1;
    return CURLE_OK;
  }
  rc = curl_easy_perform(e);
  if (rc != CURLE_OK) {
    curl_easy_cleanup(e);
    return rc;
  }
  d->conn = e;
  s->connects++;
  return CURLE_OK;
}

static curl_socket_t direct_fd(const lc_dconn *d) {
  curl_socket_t fd = CURL_SOCKET_BAD;
#if LIBCURL_VERSION_NUM >= 0x072d00
  if (d->conn == NULL || d->connecting || curl_easy_getinfo(d->conn, CURLINFO_ACTIVESOCKET, &fd) != CURLE_OK)
    return CURL_SOCKET_BAD;
#endif
  return fd;
}

/* A kept-alive connection may be written to: nothing to read on it, neither in the socket nor kept by the TLS
 * library (a server that closed it left an end of file, or a reset; bytes no request asked for mean it is out of
 * step). One read that would block says so; TLS records without data (a TLS 1.3 session ticket) are taken on the
 * way and do not count. */
static int direct_alive(lc_dconn *d) {
  char b[64];
  size_t n = 0;
  return curl_easy_recv(d->conn, b, sizeof b, &n) == CURLE_AGAIN;
}

/* Waits until fd is ready for `events` or `stop` (monotonic seconds) passes: 1 ready (*ready: what it is ready for,
 * when asked), 0 timed out, -1 failed. */
static int direct_wait(curl_socket_t fd, short events, double stop, short *ready) {
  for (;;) {
    double left = stop - lc_monotonic();
    struct pollfd p;
    int r;
    if (left <= 0) return 0;
    p.fd = fd;
    p.events = events;
    p.revents = 0;
    r = poll(&p, 1, left > 1e6 ? 1000000000 : (int)(left * 1000) + 1);
    if (r > 0) { /* hang-ups and errors too: the read or write says what */
      if (ready) *ready = p.revents;
      return 1;
    }
    if (r < 0 && errno != EINTR) return -1;
  }
}

/* One read of the answer into d's reader: LC_H1_MORE (with *rc CURLE_AGAIN when nothing had come, or a failure
 * code when the read failed), or LC_H1_DONE / LC_H1_FAILED when the answer ended (the connection's end included). */
static int direct_read(lc_dconn *d, CURLcode *rc) {
  size_t n = 0, used = 0;
  int r;
  *rc = curl_easy_recv(d->conn, d->s->rbuf, DIRECT_RBUF, &n);
  if (*rc != CURLE_OK) return LC_H1_MORE;
  r = n == 0 ? lc_h1_eof(&d->h1) : lc_h1_feed(&d->h1, d->s->rbuf, n, &used);
  if (r == LC_H1_DONE && used < n) d->h1.keep = 0; /* bytes past the answer: the connection is not reused */
  return r;
}

static void out_error(direct_out *o, const char *kind, CURLcode code, int sent, const char *fmt, ...) {
  va_list ap;
  o->ok = 0;
  o->kind = kind;
  o->code = code;
  o->sent = sent;
  va_start(ap, fmt);
  vsnprintf(o->msg, sizeof o->msg, fmt, ap);
  va_end(ap);
}

/* An exchange is a small state machine, so that a single call (which waits on its one socket) and a batch (which
 * waits on all of its connections at once) run the same steps. dconn_step goes as far as it can without waiting:
 * it returns 1 when the call ended (d->o says how), or 0 with d->wait set to what it waits for on the socket (or
 * d->connecting, for a batch slot whose connection its multi is making). It is called again with what came:
 * poll's revents, DEV_TIMEOUT when d->stop passed first, DEV_FAIL when the wait itself failed. No Lua. */
enum { D_IDLE, D_START, D_CONNECTING, D_CONNECTED, D_WRITE_BEGIN, D_WRITE, D_READ, D_DONE };
#define DEV_TIMEOUT 0x10000
#define DEV_FAIL 0x20000

static void dconn_begin(lc_dconn *d, int once, int head_only, double tmo) {
  d->once = once;
  d->head_only = head_only;
  d->tmo = tmo;
  d->stop = lc_monotonic() + tmo;
  d->stale = 0;
  d->o.ok = 0;
  d->state = D_START;
}

static int dconn_end(lc_dconn *d) {
  d->state = D_DONE;
  return 1;
}

/* The request, in one piece, reading as it goes: a server may answer before it has read all of a large body (a
 * 413, say) and stop reading; that answer is the call's. 1 when the writing ended (d->wrc, d->r, d->off say how),
 * 0 waiting. */
static int dconn_write(lc_dconn *d, int ev) {
  if (ev & DEV_TIMEOUT) {
    d->wrc = CURLE_OPERATION_TIMEDOUT;
    return 1;
  }
  if (ev & DEV_FAIL) {
    d->wrc = CURLE_SEND_ERROR;
    return 1;
  }
  if (ev) {
    d->wrc = CURLE_OK;
    if (ev & (POLLIN | POLLHUP | POLLERR)) {
      d->r = direct_read(d, &d->rc);
      if (d->r != LC_H1_MORE) return 1; /* an answer already (or the connection's end): no more of the request */
      if (d->rc != CURLE_OK && d->rc != CURLE_AGAIN) { /* the connection failed */
        d->wrc = d->rc;
        return 1;
      }
    }
  }
  while (d->off < d->reqlen) {
    size_t n = 0, left = d->reqlen - d->off;
    /* At most one TLS record's worth (16 KiB) a write. Over TLS one write of more is many records, and it can
     * fail after the first of them went out (found by a hostile review: a server that read the head of an 8 MB
     * send and reset the connection; the failed write said nothing of what had left, and the send went twice).
     * A write of one record that fails has sent at most a part of it, which no server can read: so "nothing
     * left" holds exactly when the first write failed outright. From any write that did not (one that "would
     * block" may have sent part of its record), bytes may have left. */
    d->wrc = curl_easy_send(d->conn, d->req + d->off, left > 16384 ? 16384 : left, &n);
    if (d->wrc == CURLE_OK || d->wrc == CURLE_AGAIN) d->wrote = 1;
    if (d->wrc == CURLE_OK) {
      d->off += n;
      continue;
    }
    if (d->wrc != CURLE_AGAIN) return 1;
    d->wait = POLLOUT | POLLIN;
    return 0;
  }
  return 1;
}

/* The answer: 1 when the reading ended (d->r, d->rc say how), 0 waiting. Nothing was there before the request
 * (direct_alive), so unless some of it came while the request was written, a first read before any wait would only
 * say "not yet": the socket is waited for first. (Once a read has taken bytes, the next read comes before any wait:
 * the TLS library may hold more.) */
static int dconn_read(lc_dconn *d, int ev) {
  int may = ev != 0;
  if (ev & DEV_TIMEOUT) {
    d->rc = CURLE_OPERATION_TIMEDOUT;
    return 1;
  }
  if (ev & DEV_FAIL) {
    d->rc = CURLE_RECV_ERROR;
    return 1;
  }
  while (d->r == LC_H1_MORE) {
    if (d->rc == CURLE_AGAIN) {
      if (!may) {
        d->wait = POLLIN;
        return 0;
      }
      may = 0;
    }
    d->r = direct_read(d, &d->rc);
    if (d->rc != CURLE_OK && d->rc != CURLE_AGAIN) break;
  }
  return 1;
}

static int dconn_step(lc_dconn *d, int ev) {
  lc_session *s = d->s;
  lc_xfer *x = d->x;
  direct_out *o = &d->o;
  for (;;) {
    switch (d->state) {
    case D_START: {
      double left;
      x->errbuf[0] = '\0';
      d->reused = d->conn != NULL;
      if (d->reused && (d->fd == CURL_SOCKET_BAD || !direct_alive(d))) {
        direct_drop(d);
        d->reused = 0;
      }
      if (d->reused) {
        d->state = D_WRITE_BEGIN;
        break;
      }
      left = d->stop - lc_monotonic();
      if (left <= 0) {
        out_error(o, "timeout", CURLE_OPERATION_TIMEDOUT, d->stale > 0, "timed out after %g s before connecting", d->tmo);
        return dconn_end(d);
      }
      d->rc = direct_connect(s, d, left);
      d->state = d->rc == CURLE_OK && d->connecting ? D_CONNECTING : D_CONNECTED;
      break;
    }
    case D_CONNECTING: /* a batch slot's: its multi makes the connection, and the batch says when (d->rc) */
      if (d->connecting) return 0;
      if (d->rc == CURLE_OK) s->connects++;
      d->state = D_CONNECTED;
      break;
    case D_CONNECTED:
      if (d->rc == CURLE_OK && (d->fd = direct_fd(d)) == CURL_SOCKET_BAD) d->rc = CURLE_COULDNT_CONNECT;
      if (d->rc != CURLE_OK) {
        CURLcode rc = d->rc;
        direct_drop(d);
        /* after a dead kept-alive connection took the request (stale > 0), it may have arrived */
        out_error(o, rc == CURLE_OPERATION_TIMEDOUT ? "timeout" : "network", rc, d->stale > 0, "%s",
                  x->errbuf[0] ? x->errbuf : curl_easy_strerror(rc));
        return dconn_end(d);
      }
      d->state = D_WRITE_BEGIN;
      break;
    case D_WRITE_BEGIN:
      lc_h1_start(&d->h1, d->head_only, s->max_size);
      d->r = LC_H1_MORE;
      d->rc = d->wrc = CURLE_OK;
      d->off = 0;
      d->wrote = 0;
      d->state = D_WRITE;
      ev = 0;
      /* fall through */
    case D_WRITE:
      if (!dconn_write(d, ev)) return 0;
      ev = 0;
      if (d->off < d->reqlen && d->r == LC_H1_MORE) {
        if (!d->wrote && d->reused && !d->h1.got_any && d->stale < DIRECT_MAX_STALE) {
          direct_drop(d);
          d->stale++; /* a dead connection that took nothing: a fresh one */
          d->state = D_START;
          break;
        }
        if (d->wrc == CURLE_OPERATION_TIMEDOUT || !d->wrote) {
          CURLcode wrc = d->wrc;
          direct_drop(d);
          if (wrc == CURLE_OPERATION_TIMEDOUT)
            out_error(o, "timeout", wrc, d->wrote || d->stale > 0, "timed out after %g s writing the request", d->tmo);
          else
            out_error(o, "network", wrc, d->stale > 0, "could not write the request: %s",
                      x->errbuf[0] ? x->errbuf : curl_easy_strerror(wrc));
          return dconn_end(d);
        }
        /* the connection failed part way through the request: an answer the server sent first may be there */
      }
      d->rc = d->r == LC_H1_MORE && !d->h1.got_any ? CURLE_AGAIN : CURLE_OK;
      d->state = D_READ;
      /* fall through */
    case D_READ: {
      CURLcode rc;
      if (!dconn_read(d, ev)) return 0;
      ev = 0;
      rc = d->rc;
      if (d->off < d->reqlen) d->h1.keep = 0; /* the server would read the rest of the request as the next one */
      if (d->r != LC_H1_DONE && d->off < d->reqlen && d->wrc != CURLE_OK) {
        /* no answer, and the request was cut: say what cut it */
        direct_drop(d);
        out_error(o, "network", d->wrc, 1, "could not write the whole request: %s",
                  x->errbuf[0] ? x->errbuf : curl_easy_strerror(d->wrc));
        return dconn_end(d);
      }
      if (d->r == LC_H1_DONE) {
        if (!d->h1.keep) direct_drop(d);
        o->ok = 1;
        return dconn_end(d);
      }
      direct_drop(d);
      if (!d->h1.got_any && rc != CURLE_OPERATION_TIMEDOUT) { /* closed or reset with not one byte of an answer */
        if (d->reused && !d->once && d->stale < DIRECT_MAX_STALE) {
          d->stale++;
          d->state = D_START;
          break;
        }
        if (d->once)
          out_error(o, "network", CURLE_GOT_NOTHING, 1,
                    "the connection closed before any answer came; the request was sent and may have been processed, "
                    "so it was not sent again%s%s",
                    rc != CURLE_OK ? ": " : "", rc != CURLE_OK ? (x->errbuf[0] ? x->errbuf : curl_easy_strerror(rc)) : "");
        else
          out_error(o, "network", CURLE_GOT_NOTHING, 1, "the connection closed before any answer came%s%s",
                    rc != CURLE_OK ? ": " : "", rc != CURLE_OK ? (x->errbuf[0] ? x->errbuf : curl_easy_strerror(rc)) : "");
        return dconn_end(d);
      }
      if (rc == CURLE_OPERATION_TIMEDOUT) {
        out_error(o, "timeout", rc, 1, "timed out after %g s waiting for the answer (%lu bytes received)", d->tmo,
                  (unsigned long)(d->h1.head_bytes + d->h1.body_bytes));
        return dconn_end(d);
      }
      if (rc != CURLE_OK) {
        out_error(o, "network", rc, 1, "the connection failed while the answer was read: %s",
                  x->errbuf[0] ? x->errbuf : curl_easy_strerror(rc));
        return dconn_end(d);
      }
      switch (d->h1.error) { /* the reader refused the answer */
      case LC_H1_MALFORMED: out_error(o, "network", CURLE_WEIRD_SERVER_REPLY, 1, "%s", d->h1.why); break;
      case LC_H1_TOO_LONG:
        out_error(o, "network", CURLE_WEIRD_SERVER_REPLY, 1, "answer has more than %d bytes of headers", LC_MAX_HEADER_BYTES);
        break;
      case LC_H1_CUT:
        out_error(o, "network", CURLE_PARTIAL_FILE, 1, "answer cut short in its %s: the connection closed",
                  d->h1.head_done ? "body" : "headers");
        break;
      default: /* LC_H1_REFUSED: a header the library refuses; or no memory for the body */
        if (d->h1.error == LC_H1_REFUSED && x->bad_head)
          out_error(o, "network", CURLE_WEIRD_SERVER_REPLY, 1, "%s", x->bad_head);
        else
          out_error(o, "network", CURLE_OUT_OF_MEMORY, 1, "out of memory");
        break;
      }
      return dconn_end(d);
    }
    default: /* D_IDLE, D_DONE */
      return 1;
    }
  }
}

/* How an exchange ended, pushed: value, or nil + error (returns 1 or 2). */
static int direct_push(lua_State *L, lc_session *s, lc_dconn *d) {
  lc_xfer *x = d->x;
  merge_rl(s, x);
  if (d->o.ok) {
    x->head_done = 1;
    if (d->h1.capped && d->h1.status < 300) {
      lua_pushnil(L);
      lc_push_error(L, "decode", "answer is larger than max_response_size (%lu bytes)", (unsigned long)s->max_size);
      lc_seterrfield_num(L, "status", (double)d->h1.status);
      lc_seterrfield_bool(L, "request_sent", 1);
      return 2;
    }
    return answer_finish(L, s, x, d->h1.status);
  }
  lua_pushnil(L);
  lc_push_error(L, d->o.kind, "%s", d->o.msg);
  lc_seterrfield_num(L, "curl_code", (double)d->o.code);
  lc_seterrfield_bool(L, "request_sent", d->o.sent);
  return 2;
}

/* session:call on the direct engine: pushes value, or nil + error (returns 1 or 2); -1 (nothing pushed, nothing
 * sent) when the request is not one for it. */
static int direct_call(lua_State *L, lc_session *s, enum lc_op op, const char *method, const char *path, size_t plen,
                       const char *body, size_t blen, const char *version, const char *ctype, double timeout_s) {
  lc_dconn *d = &s->dmain;
  int ev = 0;
  switch (direct_request(s, d, method, path, plen, body, blen, version ? version : s->version, ctype)) {
  case 0: return luaL_error(L, "leadconnector: out of memory");
  case -1: return -1;
  default: break;
  }
  if (s->rbuf == NULL && (s->rbuf = (char *)malloc(DIRECT_RBUF)) == NULL)
    return luaL_error(L, "leadconnector: out of memory");
  xfer_begin(d->x, op);
  s->busy = 1;
  dconn_begin(d, strcmp(method, "POST") == 0, strcmp(method, "HEAD") == 0,
              timeout_s > 0 ? timeout_s : (double)s->timeout_ms / 1000.0);
  while (!dconn_step(d, ev)) {
    short ready = 0;
    int w = direct_wait(d->fd, d->wait, d->stop, &ready);
    ev = w > 0 ? ready : w == 0 ? DEV_TIMEOUT : DEV_FAIL;
  }
  d->state = D_IDLE;
  s->busy = 0;
  return direct_push(L, s, d);
}

/* --- the direct engine's batches ---------------------------------------------------------------------------------
 * Each slot is a connection of its own, made by a multi handle of its own (see lc_dconn) and kept between batches.
 * One poll waits on them all: the sockets of connecting slots as their multi asks, the others' as their exchange
 * asks; each slot goes on by dconn_step, as a single call does. */

#define DSLOT_GRACE 1.0 /* seconds past a call's time limit a connecting slot is given before it is ended here */

static int on_dsock(CURL *e, curl_socket_t fd, int what, void *ud, void *socketp) {
  (void)e;
  (void)socketp;
  watch_set(&((lc_dconn *)ud)->cw, fd, what);
  return 0;
}

static int on_dtimer(CURLM *m, long ms, void *ud) {
  lc_dconn *d = (lc_dconn *)ud;
  (void)m;
  d->ctimer = ms < 0 ? -1 : lc_monotonic() + (double)ms / 1000.0;
  return 0;
}

/* A new batch slot: 1, 0 out of memory. */
static int dslot_add(lc_session *s) {
  lc_dconn **p, *d;
  if ((s->dslot_n & (s->dslot_n - 1)) == 0) { /* the list grows by doubling: 1, 2, 4, ... */
    p = (lc_dconn **)realloc(s->dslots, sizeof *p * (size_t)(s->dslot_n ? 2 * s->dslot_n : 1));
    if (p == NULL) return 0;
    s->dslots = p;
  }
  d = (lc_dconn *)calloc(1, sizeof *d);
  if (d == NULL) return 0;
  d->xb.s = s;
  d->xb.retry_after = -1;
  dconn_init(s, d, &d->xb);
  d->cm = curl_multi_init();
  if (d->cm == NULL) {
    free(d);
    return 0;
  }
  curl_multi_setopt(d->cm, CURLMOPT_SOCKETFUNCTION, on_dsock);
  curl_multi_setopt(d->cm, CURLMOPT_SOCKETDATA, d);
  curl_multi_setopt(d->cm, CURLMOPT_TIMERFUNCTION, on_dtimer);
  curl_multi_setopt(d->cm, CURLMOPT_TIMERDATA, d);
  s->dslots[s->dslot_n++] = d;
  return 1;
}

/* A connecting slot's multi acts on what came (its ready sockets, its timeout when due); d->connecting ends when
 * the connection is made or failed (d->rc). */
static void dslot_drive(lc_dconn *d, const struct pollfd *pf, int n, double now) {
  int running = 0, left, i;
  CURLMsg *m;
  for (i = 0; i < n; i++) {
    short r = pf[i].revents;
    if (r) curl_multi_socket_action(d->cm, pf[i].fd, cselect_of(r), &running);
  }
  if (d->ctimer >= 0 && d->ctimer <= now) {
    d->ctimer = -1;
    curl_multi_socket_action(d->cm, CURL_SOCKET_TIMEOUT, 0, &running);
  }
  while ((m = curl_multi_info_read(d->cm, &left)) != NULL)
    if (m->msg == CURLMSG_DONE && m->easy_handle == d->conn) {
      d->rc = m->data.result;
      d->connecting = 0;
    }
  if (d->connecting && d->cw.lost) {
    d->rc = CURLE_OUT_OF_MEMORY;
    d->connecting = 0;
  }
  if (d->connecting && now > d->stop + DSLOT_GRACE) { /* a backstop: libcurl's own time limit ends it first */
    d->rc = CURLE_OPERATION_TIMEDOUT;
    d->connecting = 0;
  }
}

typedef struct dbatch {
  int values, errors, have_rem;
  double rem_min, interval_ms;
} dbatch;

/* A slot's call ended: its result into values or errors, and the slot free for the next. */
static void dslot_result(lua_State *L, lc_session *s, lc_dconn *d, dbatch *b) {
  lc_xfer *x = d->x;
  d->state = D_IDLE;
  if ((x->rl_now.seen & 2u) && (!b->have_rem || x->rl_now.remaining < b->rem_min)) {
    b->rem_min = x->rl_now.remaining;
    b->have_rem = 1;
  }
  if (x->rl_now.seen & 4u) b->interval_ms = x->rl_now.interval_ms;
  if (direct_push(L, s, d) == 1) {
    lua_rawseti(L, b->values, x->index);
  } else {
    lua_rawseti(L, b->errors, x->index);
    lua_pop(L, 1);
  }
}

/* The entries of a batch, read: op, method, path, body, version, timeout of requests[k] pushed (6 values); raises
 * on one that is malformed. */
static void batch_entry(lua_State *L, int k, int *op, const char **method, const char **path, size_t *plen,
                        const char **body, size_t *blen, const char **version, double *tmo) {
  if (lua_type(L, -1) != LUA_TTABLE) luaL_error(L, "leadconnector: batch request %d is not a table", k);
  lua_rawgeti(L, -1, 1);
  lua_rawgeti(L, -2, 2);
  lua_rawgeti(L, -3, 3);
  lua_rawgeti(L, -4, 4);
  lua_rawgeti(L, -5, 5);
  lua_rawgeti(L, -6, 6);
  for (*op = 0; lc_op_names[*op] && !(lua_type(L, -6) == LUA_TSTRING && strcmp(lc_op_names[*op], lua_tostring(L, -6)) == 0); (*op)++) {
  }
  *method = lua_tostring(L, -5);
  *path = lua_tolstring(L, -4, plen);
  *blen = 0;
  *body = lua_type(L, -3) == LUA_TSTRING ? lua_tolstring(L, -3, blen) : NULL;
  *version = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : NULL;
  *tmo = lua_type(L, -1) == LUA_TNUMBER ? (double)lua_tonumber(L, -1) : -1;
  if (lc_op_names[*op] == NULL || *method == NULL || *path == NULL)
    luaL_error(L, "leadconnector: batch request %d is malformed", k);
}

/* session:batch on the direct engine (values and errors are the tables at those stack indexes): returns what
 * l_batch returns; -1 (nothing sent) when a request is not one for this engine. Every entry is read before any is
 * sent: a malformed one raises with nothing on the wire. */
static int direct_batch(lua_State *L, lc_session *s, int n, int conc, int values, int errors) {
  int next = 1, active = 0, i, k, fits = 1;
  dbatch b;
  for (k = 1; k <= n && fits; k++) {
    int op;
    const char *method, *path, *body, *version;
    size_t plen, blen;
    double tmo;
    lua_rawgeti(L, 2, k);
    batch_entry(L, k, &op, &method, &path, &plen, &body, &blen, &version, &tmo);
    if (!header_value_ok(version, 64))
      luaL_error(L, "leadconnector: version must be a short header value without control characters");
    fits = direct_fits(s, method, path, plen);
    lua_pop(L, 7);
  }
  if (!fits) return -1;
  if (s->rbuf == NULL && (s->rbuf = (char *)malloc(DIRECT_RBUF)) == NULL)
    return luaL_error(L, "leadconnector: out of memory");
  while (s->dslot_n < conc)
    if (!dslot_add(s)) return luaL_error(L, "leadconnector: out of memory");
  if (s->dpoll_cap < (size_t)conc * 4) {
    size_t cap = (size_t)conc * 4;
    struct pollfd *p = (struct pollfd *)realloc(s->dpoll, cap * sizeof *p);
    int *o;
    if (p == NULL) return luaL_error(L, "leadconnector: out of memory");
    s->dpoll = p;
    o = (int *)realloc(s->dpoll_of, cap * sizeof *o);
    if (o == NULL) return luaL_error(L, "leadconnector: out of memory");
    s->dpoll_of = o;
    s->dpoll_cap = cap;
  }
  for (i = 0; i < s->dslot_n; i++) /* a batch cut short by an error left an exchange half done: not reusable */
    if (s->dslots[i]->state != D_IDLE) {
      direct_drop(s->dslots[i]);
      s->dslots[i]->state = D_IDLE;
    }
  b.values = values;
  b.errors = errors;
  b.have_rem = 0;
  b.rem_min = 0;
  b.interval_ms = -1;
  s->busy = 1;
  while (next <= n || active > 0) {
    struct pollfd *pf = s->dpoll;
    int np = 0, r, j;
    double now, soonest = -1;
    /* Fill free slots; a call that ends before it waits (an error at once) frees its slot again. Every string a
     * request uses is copied into its slot's buffer. */
    for (i = 0; i < conc; i++) {
      lc_dconn *d = s->dslots[i];
      while (d->state == D_IDLE && next <= n) {
        int op;
        const char *method, *path, *body, *version;
        size_t plen, blen;
        double tmo;
        lua_rawgeti(L, 2, next);
        batch_entry(L, next, &op, &method, &path, &plen, &body, &blen, &version, &tmo);
        if (direct_request(s, d, method, path, plen, body, blen, version ? version : s->version, NULL) != 1) {
          s->busy = 0;
          return luaL_error(L, "leadconnector: out of memory");
        }
        xfer_begin(d->x, (enum lc_op)op);
        d->x->index = next++;
        dconn_begin(d, strcmp(method, "POST") == 0, strcmp(method, "HEAD") == 0,
                    tmo > 0 ? tmo : (double)s->timeout_ms / 1000.0);
        lua_pop(L, 7);
        active++;
        if (dconn_step(d, 0)) {
          active--;
          dslot_result(L, s, d, &b);
        }
      }
    }
    if (active == 0) continue;
    /* What each waits for, and until when. */
    for (i = 0; i < conc; i++) {
      lc_dconn *d = s->dslots[i];
      double until;
      if (d->state == D_IDLE) continue;
      if (d->state == D_CONNECTING) {
        for (k = 0; k < (int)d->cw.n; k++) {
          pf[np] = d->cw.p[k];
          pf[np].revents = 0;
          s->dpoll_of[np++] = i;
        }
        until = d->ctimer >= 0 && d->ctimer < d->stop + DSLOT_GRACE ? d->ctimer : d->stop + DSLOT_GRACE;
      } else {
        pf[np].fd = d->fd;
        pf[np].events = d->wait;
        pf[np].revents = 0;
        s->dpoll_of[np++] = i;
        until = d->stop;
      }
      if (soonest < 0 || until < soonest) soonest = until;
    }
    now = lc_monotonic();
    {
      double ms = (soonest - now) * 1000;
      r = poll(pf, (nfds_t)np, ms <= 0 ? 0 : ms > 1000 ? 1000 : (int)ms + 1);
    }
    if (r < 0 && errno != EINTR) { /* the wait itself failed: every exchange ends as a failed one would */
      for (i = 0; i < conc; i++) {
        lc_dconn *d = s->dslots[i];
        if (d->state == D_IDLE) continue;
        if (d->state == D_CONNECTING) {
          d->rc = CURLE_COULDNT_CONNECT;
          d->connecting = 0;
        }
        if (dconn_step(d, DEV_FAIL)) {
          active--;
          dslot_result(L, s, d, &b);
        }
      }
      continue;
    }
    now = lc_monotonic();
    /* Each slot in turn, with what came for it (its entries are together in pf). */
    j = 0;
    while (j < np) {
      int from = j, ev = 0;
      lc_dconn *d;
      i = s->dpoll_of[j];
      while (j < np && s->dpoll_of[j] == i) ev |= pf[j++].revents;
      d = s->dslots[i];
      if (d->state == D_CONNECTING) {
        dslot_drive(d, pf + from, j - from, now);
        if (d->connecting) continue;
        ev = 0;
      } else if (ev == 0) {
        if (now < d->stop) continue;
        ev = DEV_TIMEOUT;
      }
      if (dconn_step(d, ev)) {
        active--;
        dslot_result(L, s, d, &b);
      }
    }
    /* Connecting slots with no socket yet (libcurl resolving, or about to start) wait for their timer only. */
    for (i = 0; i < conc; i++) {
      lc_dconn *d = s->dslots[i];
      if (d->state != D_CONNECTING || d->cw.n > 0) continue;
      dslot_drive(d, NULL, 0, now);
      if (!d->connecting && dconn_step(d, 0)) {
        active--;
        dslot_result(L, s, d, &b);
      }
    }
  }
  s->busy = 0;
  if (b.have_rem) lua_pushnumber(L, b.rem_min);
  else lua_pushnil(L);
  if (b.interval_ms >= 0) lua_pushnumber(L, b.interval_ms);
  else lua_pushnil(L);
  return 4;
}

/* --- Lua side --------------------------------------------------------------------------------------------------- */

/* The share (connections, DNS, TLS sessions) and the main transfer of a session, for this process. 1, 0 on out of
 * memory, -1 when libcurl refuses an option (s->main.errbuf says which). */
static int session_new_handles(lc_session *s) {
  s->pid = getpid();
  s->forks = fork_count;
  s->share = curl_share_init();
  if (s->share == NULL) return 0;
  curl_share_setopt(s->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_CONNECT);
  curl_share_setopt(s->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_DNS);
  curl_share_setopt(s->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_SSL_SESSION);
  return xfer_init(s, &s->main) ? 1 : -1;
}

/* libcurl's engine takes a cached connection it believes alive. libcurl 7.88 does not notice one the server has
 * reset, or closed after writing a 408, or written bytes to that no request asked for, and sends on it: a send then
 * fails "may have been processed" though it never arrived, or a call takes the stray answer for its own (spec 58,
 * found by a hostile review; libcurl 8.14 notices). So before libcurl's engine runs (a batch, an upload, a call
 * through a proxy or with engine = "libcurl"), the session looks at every idle socket it knows with one poll; if
 * any has something to read, all of libcurl's connections are dropped and made anew (the direct engine's own
 * connection is not libcurl's to reuse, and is checked on its own). 1, or what session_new_handles says. */
/* Whether fd is a connection of the direct engine (which checks its own before each use). */
static int direct_owns(const lc_session *s, curl_socket_t fd) {
  int i;
  if (fd == s->dmain.fd) return 1;
  for (i = 0; i < s->dslot_n; i++)
    if (fd == s->dslots[i]->fd) return 1;
  return 0;
}

static int libcurl_fresh(lc_session *s) {
  struct pollfd p[32];
  size_t i = 0;
  int dirty = 0;
  while (i < s->fds_n && !dirty) {
    nfds_t n = 0;
    for (; i < s->fds_n && n < 32; i++)
      if (!direct_owns(s, s->fds[i])) {
        p[n].fd = s->fds[i];
        p[n].events = POLLIN;
        p[n].revents = 0;
        n++;
      }
    dirty = n > 0 && poll(p, n, 0) > 0;
  }
  if (!dirty) return 1;
  drop_transfers(s);
  return session_new_handles(s);
}

static lc_session *check_session(lua_State *L) {
  lc_session *s = (lc_session *)luaL_checkudata(L, 1, LC_SESSION_MT);
  if (s->closed) luaL_error(L, "leadconnector: the client is closed");
  if (forked(s)) { /* made in a parent process (nginx's master, say): start clean in this one */
    forget_inherited_sockets(s);
    session_drop_handles(s);
    s->fds_n = 0;
    s->busy = 0;
    s->connects = 0; /* this process's own */
    if (session_new_handles(s) != 1) {
      session_cleanup(s);
      luaL_error(L, "leadconnector: could not make a new libcurl session after fork");
    }
  }
  if (s->busy) luaL_error(L, "leadconnector: this client is already in a call (one call at a time per client)");
  return s;
}

static double opt_number(lua_State *L, int t, const char *k, double dflt) {
  double v;
  lua_getfield(L, t, k);
  v = lua_isnil(L, -1) ? dflt : (double)lua_tonumber(L, -1);
  lua_pop(L, 1);
  return v;
}

static const char *opt_string(lua_State *L, int t, const char *k) {
  const char *v;
  lua_getfield(L, t, k);
  v = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : NULL;
  lua_pop(L, 1); /* the string stays referenced by the options table */
  return v;
}

/** core.session(opts) -> Session | nil, err
 * opts: base_url, token, version, user_agent, timeout, connect_timeout (seconds), verify, ca_file, proxy,
 * max_response_size (bytes). The Lua layer has checked their types; what reaches a header is checked again here. */
static int l_session(lua_State *L) {
  lc_session *s;
  const char *token, *base, *version, *ua;
  char why[160];
  size_t toklen = 0;
  int notoken;
  double max_size;
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_settop(L, 1);
  s = (lc_session *)lc_newuserdata(L, sizeof *s);
  memset(s, 0, sizeof *s);
  s->closed = 1; /* until fully made: __gc then has nothing to do but free what exists */
  luaL_getmetatable(L, LC_SESSION_MT);
  lua_setmetatable(L, -2);

  lua_getfield(L, 1, "token");
  token = lua_type(L, -1) == LUA_TSTRING ? lua_tolstring(L, -1, &toklen) : NULL;
  notoken = lua_type(L, -1) == LUA_TBOOLEAN && !lua_toboolean(L, -1); /* false: no Authorization header */
  if (!notoken && (token == NULL || !lc_check_token(token, toklen, why, sizeof why))) {
    lua_pushnil(L);
    lc_push_error(L, "invalid", "%s", token == NULL ? "token must be a string" : why);
    lc_seterrfield_str(L, "field", "token");
    lc_seterrfield_bool(L, "request_sent", 0);
    return 2;
  }
  base = opt_string(L, 1, "base_url");
  version = opt_string(L, 1, "version");
  ua = opt_string(L, 1, "user_agent");
  if (base == NULL || version == NULL || ua == NULL)
    return luaL_error(L, "leadconnector: session needs base_url, version, user_agent");
  if (strlen(version) > 64 || strpbrk(version, "\r\n") != NULL || strpbrk(ua, "\r\n") != NULL)
    return luaL_error(L, "leadconnector: header values must not contain line breaks");
  max_size = opt_number(L, 1, "max_response_size", 4.0 * 1024 * 1024);
  /* clamped before the cast (1e300 would be undefined); 2^62 bytes is "no cap" in practice */
  s->max_size = max_size < 1 ? 1 : max_size < 4611686018427387904.0 ? (size_t)max_size : (size_t)1 << 62;
  s->timeout_ms = clamp_ms(opt_number(L, 1, "timeout", 30) * 1000);
  s->connect_timeout_ms = clamp_ms(opt_number(L, 1, "connect_timeout", 10) * 1000);
  lua_getfield(L, 1, "verify");
  s->verify = !(lua_type(L, -1) == LUA_TBOOLEAN && !lua_toboolean(L, -1));
  lua_pop(L, 1);

  s->auth = notoken ? NULL : (char *)malloc(toklen + 32);
  s->version = dupstr(version);
  s->base = dupstr(base);
  s->ua = dupstr(ua);
  s->ca = dupstr(opt_string(L, 1, "ca_file"));
  s->proxy = dupstr(opt_string(L, 1, "proxy"));
  if ((s->auth == NULL && !notoken) || s->version == NULL || s->base == NULL || s->ua == NULL) goto oom;
  if (s->auth) snprintf(s->auth, toklen + 32, "%s%s", AUTH_PREFIX, token);
  lua_pop(L, 1); /* token */
  s->base_len = strlen(s->base);
  if (!build_headers(s, s->version, NULL, &s->hdr_get, &s->hdr_body)) goto oom;
  if (!direct_setup(s, opt_string(L, 1, "engine")) || !direct_head(s)) goto oom;
  s->closed = 0;
  switch (session_new_handles(s)) {
  case 0: goto oom;
  case -1:
    lua_pushnil(L);
    lc_push_error(L, "invalid", "this libcurl refused an option: %s",
                  s->main.errbuf[0] ? s->main.errbuf : "unsupported");
    session_cleanup(s);
    return 2;
  default: break;
  }
  return 1;
oom:
  session_cleanup(s);
  return luaL_error(L, "leadconnector: out of memory");
}

#define OPS lc_op_names

/* Pushes remaining, interval_ms, retry_after of x's answer (nil where absent). */
static void push_last(lua_State *L, const lc_xfer *x) {
  if (x->rl_now.seen & 2u) lua_pushnumber(L, x->rl_now.remaining);
  else lua_pushnil(L);
  if (x->rl_now.seen & 4u) lua_pushnumber(L, x->rl_now.interval_ms);
  else lua_pushnil(L);
  if (x->retry_after >= 0) lua_pushnumber(L, x->retry_after);
  else lua_pushnil(L);
}

/* A multipart POST through libcurl's mime API: the parts of the list at idx ({ name, data [, filename,
 * content_type] }, checked by core.multipart_parts), headers without a Content-Type of ours, sent once only like
 * every POST. libcurl copies the data, so nothing here depends on the Lua strings once the call returns. */
static int xfer_mime(lua_State *L, lc_session *s, lc_xfer *x, int idx, const char *version) {
  CURL *e = x->easy;
  struct curl_slist *g = NULL, *b = NULL;
  size_t n = lc_rawlen(L, idx), i;
  if (!build_headers(s, version ? version : s->version, "", &g, &b)) return 0;
  free_slist_wiped(g);
  if (x->hdr_tmp) {
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, NULL);
    free_slist_wiped(x->hdr_tmp);
  }
  x->hdr_tmp = b;
  curl_easy_setopt(e, CURLOPT_HTTPHEADER, b);
  x->mime = curl_mime_init(e);
  if (x->mime == NULL) return 0;
  for (i = 1; i <= n; i++) {
    curl_mimepart *part = curl_mime_addpart(x->mime);
    size_t dn;
    const char *d;
    if (part == NULL) return 0;
    lua_rawgeti(L, idx, (int)i);
    lua_getfield(L, -1, "name");
    if (lua_type(L, -1) == LUA_TSTRING) curl_mime_name(part, lua_tostring(L, -1));
    lua_getfield(L, -2, "data");
    d = lua_tolstring(L, -1, &dn);
    if (d) curl_mime_data(part, d, dn);
    lua_getfield(L, -3, "filename");
    if (lua_type(L, -1) == LUA_TSTRING) curl_mime_filename(part, lua_tostring(L, -1));
    lua_getfield(L, -4, "content_type");
    if (lua_type(L, -1) == LUA_TSTRING) curl_mime_type(part, lua_tostring(L, -1));
    lua_pop(L, 5);
  }
  curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, NULL);
  curl_easy_setopt(e, CURLOPT_MIMEPOST, x->mime);
  x->once = 1; /* a POST: the pre-request callback lets libcurl send it once */
  return 1;
}

/* --- driving the multi handle ------------------------------------------------------------------------------
 * Every transfer (a call, a batch) runs on the session's multi handle through libcurl's socket interface: libcurl
 * says which sockets it waits on (on_socket), the session polls them, and tells libcurl which one is ready and how
 * (curl_multi_socket_action with the event). Told that, libcurl reads at once. Driven with curl_multi_perform
 * instead, it first polls each transfer's socket itself, with a zero timeout, to learn what the wait that just
 * returned already knew: one more system call per answer, one per transfer of a batch on every pass. */

/* libcurl's socket callback: what to wait for on fd (CURL_POLL_IN/OUT/INOUT), or REMOVE. No Lua here. */
static int on_socket(CURL *e, curl_socket_t fd, int what, void *ud, void *socketp) {
  (void)e;
  (void)socketp;
  watch_set(&((lc_session *)ud)->watch, fd, what);
  return 0;
}

/* The session's multi handle, made on first use with the socket callback. NULL when out of memory. */
static CURLM *session_multi(lc_session *s) {
  if (s->multi == NULL) {
    s->multi = curl_multi_init();
    if (s->multi == NULL) return NULL;
    curl_multi_setopt(s->multi, CURLMOPT_SOCKETFUNCTION, on_socket);
    curl_multi_setopt(s->multi, CURLMOPT_SOCKETDATA, s);
    /* Keep every connection a batch made (concurrency is 256 at most): by default libcurl keeps 4 per transfer
     * still attached, so the last answer of a batch, alone, had all but 4 closed (found by spec 59). */
    curl_multi_setopt(s->multi, CURLMOPT_MAXCONNECTS, 256L);
    s->watch.n = 0;
    s->watch.lost = 0;
  }
  return s->multi;
}

/* Every transfer off the multi: a batch cut short by a Lua error may have left some attached. */
static void detach_all(lc_session *s) {
  int i;
  if (s->main.added) curl_multi_remove_handle(s->multi, s->main.easy);
  s->main.added = 0;
  for (i = 0; i < s->pool_n; i++) {
    if (s->pool[i]->added) curl_multi_remove_handle(s->multi, s->pool[i]->easy);
    s->pool[i]->added = 0;
  }
}

/* After a failed step: every transfer off the multi, and the multi freed (the next call makes a new one, with a
 * new watch list). The connections stay in the share handle's cache. */
static void multi_reset(lc_session *s) {
  if (s->multi == NULL) return;
  detach_all(s);
  curl_multi_cleanup(s->multi);
  s->multi = NULL;
}

/* One step of the multi: wait (as long as libcurl's next timeout, 1 s at most, not at all when a timeout is due)
 * for the sockets libcurl watches, then let it act on each ready one, or on its timeouts when none is. *running:
 * the transfers still running. */
static CURLMcode drive(lc_session *s, int *running) {
  long tmo = -1;
  CURLMcode mc;
  int ready;
  if (s->watch.lost) return CURLM_OUT_OF_MEMORY;
  mc = curl_multi_timeout(s->multi, &tmo);
  if (mc != CURLM_OK) return mc;
  if (tmo < 0 || tmo > 1000) tmo = 1000;
  if (tmo > 0) {
    /* poll on the list itself: the callback changes it only inside libcurl, never while it is polled */
    size_t i, n = s->watch.n;
    ready = poll(s->watch.p, (nfds_t)n, (int)tmo);
    if (ready > 0) {
      /* act on a copy of each ready entry: libcurl may change the list (and close sockets) while it acts */
      struct pollfd got[16];
      size_t k = 0;
      for (i = 0; i < n && k < 16; i++)
        if (s->watch.p[i].revents) got[k++] = s->watch.p[i];
      for (i = 0; i < k; i++) {
        mc = curl_multi_socket_action(s->multi, got[i].fd, cselect_of(got[i].revents), running);
        if (mc != CURLM_OK) return mc;
      }
      return CURLM_OK;
    }
  }
  return curl_multi_socket_action(s->multi, CURL_SOCKET_TIMEOUT, 0, running);
}

/* One transfer on the session's multi handle, driven here (drive). curl_easy_perform would run it on a multi of
 * its own, polling that multi's wake-up socket before every transfer and each socket again before reading it. The
 * transfer's options, callbacks (the pre-request one that keeps a POST to one attempt) and the share handle are
 * the same. */
static CURLcode perform_one(lc_session *s, lc_xfer *x) {
  CURLMcode mc;
  CURLMsg *m;
  CURLcode rc = CURLE_OK;
  int running = 1, left, done = 0;
  if (session_multi(s) == NULL) return CURLE_OUT_OF_MEMORY;
  if (curl_multi_add_handle(s->multi, x->easy) != CURLM_OK) return CURLE_FAILED_INIT;
  x->added = 1;
  do {
    mc = drive(s, &running);
    while (mc == CURLM_OK && (m = curl_multi_info_read(s->multi, &left)) != NULL) {
      if (m->msg == CURLMSG_DONE && m->easy_handle == x->easy) {
        rc = m->data.result;
        done = 1;
      }
    }
  } while (mc == CURLM_OK && !done && running);
  if (!done) rc = mc == CURLM_OUT_OF_MEMORY ? CURLE_OUT_OF_MEMORY : CURLE_RECV_ERROR;
  if (mc != CURLM_OK) {
    multi_reset(s);
  } else {
    curl_multi_remove_handle(s->multi, x->easy);
    x->added = 0;
  }
  return rc;
}

/** session:call(op, method, path, body|parts|nil, version|nil, timeout_seconds|nil, content_type|nil)
 *    -> value | nil, err; then remaining, interval_ms, retry_after of this answer (nil where absent), which saves
 *    the Lua layer a session:last() on every call. */
static int l_call(lua_State *L) {
  lc_session *s = check_session(L);
  enum lc_op op = (enum lc_op)luaL_checkoption(L, 2, NULL, OPS);
  const char *method = luaL_checkstring(L, 3);
  size_t plen, blen = 0;
  const char *path = luaL_checklstring(L, 4, &plen);
  int parts = lua_type(L, 5) == LUA_TTABLE; /* a multipart body, as core.multipart_parts lists it */
  const char *body = parts ? NULL : luaL_optlstring(L, 5, NULL, &blen);
  const char *version = luaL_optstring(L, 6, NULL);
  double tmo = luaL_optnumber(L, 7, -1);
  const char *ctype = luaL_optstring(L, 8, NULL);
  CURLcode rc;
  int n;
  if (s->direct && !parts) {
    if (!header_value_ok(version, 64) || !header_value_ok(ctype, 200))
      return luaL_error(L, "leadconnector: version and content type must be short header values without control characters");
    n = direct_call(L, s, op, method, path, plen, body, blen, version, ctype, tmo);
    if (n >= 0) {
      if (n == 1) lua_pushnil(L);
      push_last(L, &s->main);
      return 5;
    }
  }
  if (libcurl_fresh(s) != 1) return luaL_error(L, "leadconnector: could not make a new libcurl session");
  switch (xfer_prepare(s, &s->main, op, method, path, plen, body, blen, version, ctype, tmo)) {
  case 0: return luaL_error(L, "leadconnector: out of memory");
  case -1: return luaL_error(L, "leadconnector: version and content type must be short header values without control characters");
  default: break;
  }
  if (parts && !xfer_mime(L, s, &s->main, 5, version)) return luaL_error(L, "leadconnector: out of memory");
  s->busy = 1;
  rc = perform_one(s, &s->main);
  s->busy = 0;
  if (xfer_result(L, s, &s->main, rc) == 1) lua_pushnil(L);
  push_last(L, &s->main);
  return 5;
}

/** session:batch(requests, concurrency) -> values, errors, remaining, interval_ms
 * requests[i] = { op, method, path, body|false, version|false, timeout|false }. Runs up to `concurrency` at once on
 * the direct engine (direct_batch), or libcurl's multi interface over the session's shared connection cache (engine
 * "libcurl", a proxy, a request the direct engine does not take). values[i] or errors[i] is set for each i.
 * remaining: the smallest X-RateLimit-Remaining of the answers; interval_ms: the window they gave (nil if none). */
static int l_batch(lua_State *L) {
  lc_session *s = check_session(L);
  int n, conc, next = 1, active = 0, i, values, errors, have_rem = 0;
  double rem_min = 0, interval_ms = -1;
  luaL_checktype(L, 2, LUA_TTABLE);
  n = (int)lc_rawlen(L, 2);
  {
    double c = luaL_optnumber(L, 3, 8); /* clamped before the cast: 1e300, 2^63 or NaN must not reach (int) */
    conc = c >= 256 ? 256 : c >= 1 ? (int)c : 1;
  }
  if (conc > n) conc = n;
  lua_settop(L, 3);
  lua_createtable(L, n, 0);
  values = lua_gettop(L);
  lua_createtable(L, n, 0);
  errors = lua_gettop(L);
  if (n == 0) return 2;
  if (s->direct) {
    int r = direct_batch(L, s, n, conc, values, errors);
    if (r >= 0) return r;
  }
  if (libcurl_fresh(s) != 1) return luaL_error(L, "leadconnector: could not make a new libcurl session");
  if (session_multi(s) == NULL) return luaL_error(L, "leadconnector: out of memory");
  if (s->pool_n < conc) {
    /* The list may move; the transfers it points to never do (their easy handles point back at them). */
    lc_xfer **p = (lc_xfer **)realloc(s->pool, sizeof *p * (size_t)conc);
    if (p == NULL) return luaL_error(L, "leadconnector: out of memory");
    s->pool = p;
    while (s->pool_n < conc) {
      lc_xfer *x = (lc_xfer *)calloc(1, sizeof *x);
      if (x == NULL) return luaL_error(L, "leadconnector: out of memory");
      s->pool[s->pool_n++] = x; /* owned by the session from here: session_cleanup frees it */
      if (!xfer_init(s, x)) return luaL_error(L, "leadconnector: libcurl refused an option");
    }
  }
  detach_all(s);
  curl_multi_setopt(s->multi, CURLMOPT_MAX_HOST_CONNECTIONS, (long)conc);
  s->busy = 1;
  while (next <= n || active > 0) {
    CURLMsg *m;
    int left, running = 0;
    /* Fill free slots. Every string used by a transfer lives in `requests`, which stays on the stack. */
    for (i = 0; i < conc && next <= n; i++) {
      lc_xfer *x = s->pool[i];
      size_t plen, blen = 0;
      const char *method, *path, *body, *version;
      double tmo;
      int op;
      if (x->added) continue;
      lua_rawgeti(L, 2, next);
      s->busy = 0; /* batch_entry raises on a malformed entry */
      batch_entry(L, next, &op, &method, &path, &plen, &body, &blen, &version, &tmo);
      s->busy = 1;
      switch (xfer_prepare(s, x, (enum lc_op)op, method, path, plen, body, blen, version, NULL, tmo)) {
      case 0: s->busy = 0; return luaL_error(L, "leadconnector: out of memory");
      case -1: s->busy = 0; return luaL_error(L, "leadconnector: version must be a short header value without control characters");
      default: break;
      }
      lua_pop(L, 7); /* the strings stay referenced by requests[next] */
      x->index = next++;
      if (curl_multi_add_handle(s->multi, x->easy) != CURLM_OK) {
        s->busy = 0;
        return luaL_error(L, "leadconnector: curl_multi_add_handle failed");
      }
      x->added = 1;
      active++;
    }
    if (drive(s, &running) != CURLM_OK) {
      multi_reset(s);
      s->busy = 0;
      return luaL_error(L, "leadconnector: out of memory");
    }
    while ((m = curl_multi_info_read(s->multi, &left)) != NULL) {
      lc_xfer *x = NULL;
      int nres;
      if (m->msg != CURLMSG_DONE) continue;
      curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&x);
      {
        CURLcode rc = m->data.result; /* m is invalid after remove_handle */
        curl_multi_remove_handle(s->multi, x->easy);
        x->added = 0;
        active--;
        if ((x->rl_now.seen & 2u) && (!have_rem || x->rl_now.remaining < rem_min)) {
          rem_min = x->rl_now.remaining;
          have_rem = 1;
        }
        if (x->rl_now.seen & 4u) interval_ms = x->rl_now.interval_ms;
        nres = xfer_result(L, s, x, rc);
      }
      if (nres == 1) {
        lua_rawseti(L, values, x->index);
      } else {
        lua_rawseti(L, errors, x->index);
        lua_pop(L, 1);
      }
    }
    /* The freed slots are refilled and started before the next wait (drive waits on nothing while a new
     * transfer's timeout of 0 is due): the pipe stays full. */
  }
  s->busy = 0;
  /* The answers finish in any order, so "the last one's" X-RateLimit-Remaining says little: the smallest is
   * what is left of the window (or less, when the batch crossed into a new one). */
  if (have_rem) lua_pushnumber(L, rem_min);
  else lua_pushnil(L);
  if (interval_ms >= 0) lua_pushnumber(L, interval_ms);
  else lua_pushnil(L);
  return 4;
}

static void push_rl(lua_State *L, const lc_ratelimit *rl) {
  static const char *const keys[] = {"max", "remaining", "interval_ms", "daily_limit", "daily_remaining"};
  int i;
  lua_createtable(L, 0, 5);
  for (i = 0; i < 5; i++) {
    if (rl->seen & (1u << i)) {
      double d = (&rl->max)[i];
      if (d > -9.2e18 && d < 9.2e18 && d == (double)(long long)d) lua_pushinteger(L, (lua_Integer)d); /* cast only in range */
      else lua_pushnumber(L, d);
      lua_setfield(L, -2, keys[i]);
    }
  }
}

/** session:rate_limit() -> { max, remaining, interval_ms, daily_limit, daily_remaining } (what the last answers said) */
static int l_rate_limit(lua_State *L) {
  lc_session *s = (lc_session *)luaL_checkudata(L, 1, LC_SESSION_MT);
  push_rl(L, &s->rl_last);
  return 1;
}

/** session:stats() -> { connects = n }: connections the direct engine made (each a TCP connect, and over https a
 * TLS handshake) -- keep-alive shows as one for many calls. */
static int l_stats(lua_State *L) {
  lc_session *s = (lc_session *)luaL_checkudata(L, 1, LC_SESSION_MT);
  lua_createtable(L, 0, 2);
  lua_pushnumber(L, s->connects);
  lua_setfield(L, -2, "connects");
  lua_pushstring(L, s->direct ? "direct" : "libcurl");
  lua_setfield(L, -2, "engine");
  return 1;
}

/** session:last() -> remaining, interval_ms, retry_after  (the last call's answer; nil where absent) */
static int l_last(lua_State *L) {
  lc_session *s = (lc_session *)luaL_checkudata(L, 1, LC_SESSION_MT);
  push_last(L, &s->main);
  return 3;
}

/** session:set_token(token | false) -> true | nil, err: the token of the calls that follow (an OAuth access token
 * changes after a refresh); false sends no Authorization header. The old header line is wiped before it is freed. */
static int l_set_token(lua_State *L) {
  lc_session *s = check_session(L);
  size_t toklen = 0;
  const char *token = NULL;
  char why[160], *auth = NULL, *old;
  struct curl_slist *g = NULL, *b = NULL;
  if (!(lua_type(L, 2) == LUA_TBOOLEAN && !lua_toboolean(L, 2))) {
    token = lua_type(L, 2) == LUA_TSTRING ? lua_tolstring(L, 2, &toklen) : NULL;
    if (token == NULL || !lc_check_token(token, toklen, why, sizeof why)) {
      lua_pushnil(L);
      lc_push_error(L, "invalid", "%s", token == NULL ? "token must be a string" : why);
      lc_seterrfield_str(L, "field", "token");
      lc_seterrfield_bool(L, "request_sent", 0);
      return 2;
    }
    if (s->auth && strlen(s->auth + AUTH_PREFIX_LEN) == toklen && memcmp(s->auth + AUTH_PREFIX_LEN, token, toklen) == 0) {
      lua_pushboolean(L, 1); /* the usual case: unchanged */
      return 1;
    }
    auth = (char *)malloc(toklen + 32);
    if (auth == NULL) return luaL_error(L, "leadconnector: out of memory");
    snprintf(auth, toklen + 32, "%s%s", AUTH_PREFIX, token);
  } else if (s->auth == NULL) {
    lua_pushboolean(L, 1);
    return 1;
  }
  old = s->auth;
  s->auth = auth;
  if (!build_headers(s, s->version, NULL, &g, &b) || !direct_head(s)) {
    free_slist_wiped(g);
    free_slist_wiped(b);
    s->auth = old;
    if (auth) {
      wipe(auth, strlen(auth));
      free(auth);
    }
    return luaL_error(L, "leadconnector: out of memory");
  }
  free_slist_wiped(s->hdr_get);
  free_slist_wiped(s->hdr_body);
  s->hdr_get = g;
  s->hdr_body = b;
  if (old) {
    wipe(old, strlen(old));
    free(old);
  }
  lua_pushboolean(L, 1);
  return 1;
}

static int l_close(lua_State *L) {
  lc_session *s = (lc_session *)luaL_checkudata(L, 1, LC_SESSION_MT);
  if (s->busy) return luaL_error(L, "leadconnector: cannot close a client during its own call");
  session_cleanup(s);
  return 0;
}

static int l_gc(lua_State *L) {
  lc_session *s = (lc_session *)luaL_checkudata(L, 1, LC_SESSION_MT);
  session_cleanup(s);
  return 0;
}

static int l_tostring(lua_State *L) {
  lc_session *s = (lc_session *)luaL_checkudata(L, 1, LC_SESSION_MT);
  lua_pushfstring(L, "leadconnector.Session (%s)", s->closed ? "closed" : s->base);
  return 1;
}

static int l_closed(lua_State *L) {
  lc_session *s = (lc_session *)luaL_checkudata(L, 1, LC_SESSION_MT);
  lua_pushboolean(L, s->closed);
  return 1;
}

static const luaL_Reg session_methods[] = {{"call", l_call},   {"batch", l_batch},   {"rate_limit", l_rate_limit},
                                           {"last", l_last},   {"close", l_close},   {"closed", l_closed},
                                           {"set_token", l_set_token}, {"stats", l_stats},
                                           {NULL, NULL}};

static int l_curl_version(lua_State *L) {
  curl_version_info_data *d = curl_version_info(CURLVERSION_NOW);
  lua_pushstring(L, d->version);
  lua_pushboolean(L, (d->features & CURL_VERSION_SSL) != 0);
  return 2;
}

const luaL_Reg lc_http_funcs[] = {{"session", l_session}, {"curl_version", l_curl_version}, {NULL, NULL}};

void lc_http_init(lua_State *L) {
  static int inited = 0;
  if (!inited) {
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) luaL_error(L, "leadconnector: curl_global_init failed");
    if (pthread_atfork(NULL, NULL, count_fork) != 0) luaL_error(L, "leadconnector: pthread_atfork failed");
    inited = 1;
  }
  if (lc_newmetatable(L, LC_SESSION_MT)) {
    lua_newtable(L);
    lc_setfuncs(L, session_methods, 0);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, l_gc);
    lua_setfield(L, -2, "__gc");
#if LC_HAS_CLOSE
    lua_pushcfunction(L, l_close);
    lua_setfield(L, -2, "__close");
#endif
    lua_pushcfunction(L, l_tostring);
    lua_setfield(L, -2, "__tostring");
  }
  lua_pop(L, 1);
}
