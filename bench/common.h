/* Shared bits of the raw libcurl baselines (raw_easy.c, raw_multi.c).
 * Header-only on purpose: each program is built from one .c file with
 *   cc -O2 -Wall -Wextra raw_easy.c $(pkg-config --cflags --libs libcurl)
 * and the "+ cjson.decode" variants from the same file with
 *   cc -O2 -Wall -Wextra -DBENCH_DECODE raw_easy.c $(pkg-config --cflags --libs libcurl lua5.4)
 */
#ifndef BENCH_COMMON_H
#define BENCH_COMMON_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <curl/curl.h>

/* A growable response buffer: the baselines keep the whole body, as any real
 * client must, but do nothing else with it. */
struct body {
    char *data;
    size_t len, cap;
};

static size_t body_write(char *ptr, size_t size, size_t nmemb, void *userdata)
{
    struct body *b = userdata;
    size_t n = size * nmemb;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 1024;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *p = realloc(b->data, cap);
        if (!p)
            return 0; /* makes libcurl fail the transfer */
        b->data = p;
        b->cap = cap;
    }
    memcpy(b->data + b->len, ptr, n);
    b->len += n;
    b->data[b->len] = '\0';
    return n;
}

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* The headers every call of the contract (API.md section 1) carries. */
static struct curl_slist *api_headers(const char *token, int with_body)
{
    char auth[1024];
    snprintf(auth, sizeof auth, "Authorization: Bearer %s", token);
    struct curl_slist *h = NULL;
    h = curl_slist_append(h, auth);
    h = curl_slist_append(h, "Version: 2021-04-15");
    h = curl_slist_append(h, "Accept: application/json");
    if (with_body)
        h = curl_slist_append(h, "Content-Type: application/json");
    return h;
}

static long parse_count(const char *s, const char *what)
{
    char *end;
    long n = strtol(s, &end, 10);
    if (*s == '\0' || *end != '\0' || n <= 0) {
        fprintf(stderr, "bad %s: %s\n", what, s);
        exit(2);
    }
    return n;
}

/* The sequential rows' argument line, BASE_URL TOKEN CALL ID COUNT (exits 2 on misuse). */
struct seq_args {
    const char *base, *token, *call, *id;
    long count;
};

static inline struct seq_args seq_args(int argc, char **argv)
{
    struct seq_args a;
    if (argc != 6) {
        fprintf(stderr, "usage: %s BASE_URL TOKEN CALL ID COUNT\n", argv[0]);
        exit(2);
    }
    a.base = argv[1];
    a.token = argv[2];
    a.call = argv[3];
    a.id = argv[4];
    a.count = parse_count(argv[5], "COUNT");
    return a;
}

/* Built with -DBENCH_DECODE (the "+ cjson.decode" rows), every answer is also decoded by lua-cjson in an
 * embedded Lua 5.4 and one field of it read: the least any Lua client that hands back decoded answers must do
 * beyond the HTTP, so these rows are the floor under every such client, the library included. Without it an
 * answer only has to be non-empty. */
#ifdef BENCH_DECODE
#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

static lua_State *decode_L; /* cjson.decode sits at stack index 1 */

static void decode_init(void)
{
    decode_L = luaL_newstate();
    if (!decode_L) {
        fprintf(stderr, "luaL_newstate failed\n");
        exit(1);
    }
    luaL_openlibs(decode_L);
    lua_getglobal(decode_L, "require");
    lua_pushliteral(decode_L, "cjson");
    if (lua_pcall(decode_L, 1, 1, 0) != LUA_OK) {
        fprintf(stderr, "require \"cjson\": %s\n", lua_tostring(decode_L, -1));
        exit(1);
    }
    lua_getfield(decode_L, -1, "decode");
    lua_replace(decode_L, 1);
    lua_settop(decode_L, 1);
}

static int answer_ok(const struct body *b, const char *field)
{
    lua_State *L = decode_L;
    int ok;
    lua_pushvalue(L, 1);
    lua_pushlstring(L, b->data ? b->data : "", b->len);
    if (lua_pcall(L, 1, 1, 0) != LUA_OK) {
        lua_settop(L, 1);
        return 0;
    }
    if (lua_type(L, -1) == LUA_TTABLE) { /* the field: an id (a string), or a page's list (a table) */
        int t = lua_getfield(L, -1, field);
        ok = t == LUA_TSTRING || t == LUA_TTABLE;
    } else {
        ok = 0;
    }
    lua_settop(L, 1);
    return ok;
}
#else
static void decode_init(void) {}

static int answer_ok(const struct body *b, const char *field)
{
    (void)field;
    return b->len > 0;
}
#endif

/* The one line bench/bench.lua reads from every client. */
static void report(long requests, long errors, double seconds)
{
    printf("BENCH requests=%ld errors=%ld seconds=%.6f\n", requests, errors, seconds);
    fflush(stdout);
}

#endif
