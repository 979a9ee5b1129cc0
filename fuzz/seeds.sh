#!/usr/bin/env bash
# fuzz/seeds.sh - (re)writes the hand-made seed inputs of fuzz/corpus/<harness>/seed-*. The formats are described
# at the top of each fuzz/fuzz_<harness>.c. Inputs the fuzzer found and that were worth keeping (regress-* and
# min-*) are committed as they are and not touched here.
set -euo pipefail
cd "$(dirname "$0")"
seed() { # harness name printf-format...
  local h=$1 n=$2; shift 2
  mkdir -p "corpus/$h"
  # shellcheck disable=SC2059
  printf "$@" >"corpus/$h/seed-$n"
}

# finish: [op][status hi][status lo][ra mode][ra...][trace len][trace][token len][token][body]
#   op: 0 send 1 status 2 message 3 conv 4 raw; token bytes 26 27 28 -> token "SeCrEtabc"
seed finish send-ok         '\x00\x00\xc8\x00\x00\x00{"conversationId":"c1","messageId":"m1","status":"pending"}'
seed finish send-201-empty  '\x00\x00\xc9\x00\x00\x00'
seed finish send-no-id      '\x00\x00\xc9\x00\x00\x00{"conversationId":"c1","msg":"queued"}'
seed finish send-gmb        '\x00\x00\xc8\x00\x00\x00{"conversationId":"c1","messageId":"m1","messageIds":["a","b"],"forwardData":{"x":null}}'
seed finish status-ok       '\x01\x00\xc8\x00\x00\x00{"conversationId":"c1","messageId":"m1","status":"read"}'
seed finish message         '\x02\x00\xc8\x00\x00\x00{"id":"m1","type":1,"messageType":"TYPE_SMS","direction":"outbound","status":"delivered","contactId":"c1","body":"hi\\n\\u0001","attachments":[],"meta":{"callDuration":12,"email":{"messageIds":["e1"]}},"dateAdded":"2024-01-01T00:00:00Z"}'
seed finish message-wrapped '\x02\x00\xc8\x00\x00\x00{"message":{"id":"m1","body":"x"},"traceId":"t"}'
seed finish conversation    '\x03\x00\xc8\x00\x00\x00{"id":"conv1","contactId":"c1","type":2,"unreadCount":3.0,"deleted":false,"inbox":true,"starred":null}'
seed finish conv-wrapped    '\x03\x00\xc8\x00\x00\x00{"conversation":{"id":"conv1"}}'
seed finish raw             '\x04\x00\xc8\x00\x00\x00[1,2,{"a":[]}]'
seed finish err-400         '\x00\x01\x90\x00\x00\x00{"statusCode":400,"message":"contactId must be a string"}'
seed finish err-401         '\x02\x01\x91\x00\x00\x00{"statusCode":401,"message":"Invalid token: access token is invalid","error":"Unauthorized"}'
seed finish err-422-array   '\x00\x01\xa6\x00\x05tr-42\x00{"statusCode":422,"message":["a must be x","b must be y",3],"error":"Unprocessable Entity"}'
seed finish err-429-ra      '\x00\x01\xad\x01\x05\x00\x00{"statusCode":429,"message":"Too many requests"}'
seed finish err-429-ra-dbl  '\x02\x01\xad\x02\x00\x00\x00\x00\x00\x00\xf8\x3f\x00\x00'
seed finish err-500-trace   '\x01\x01\xf4\x00\x00\x00{"statusCode":500,"message":"Internal server error","traceId":"abc"}'
seed finish err-502-html    '\x03\x01\xf6\x00\x00\x00<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n</html>\r\n'
seed finish err-503-text    '\x02\x01\xf7\x00\x00\x00upstream connect error'
seed finish ok-malformed    '\x00\x00\xc9\x00\x00\x00{"conversationId":"c1","messag'
seed finish ok-deep         '\x04\x00\xc8\x00\x00\x00[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]'
seed finish echo-401        '\x02\x01\x91\x00\x00\x03\x1a\x1b\x1c{"statusCode":401,"message":"Invalid token: SeCrEtabc","echo":["SeCrEtabc"]}'
seed finish echo-html       '\x00\x01\xf6\x00\x00\x03\x1a\x1b\x1c<html>Bearer SeCrEtabc</html>'
# echo-201 was a finding: a 2xx error kept the echoed token in err.body (fixed in csrc/error.c)
seed finish echo-201        '\x00\x00\xc9\x00\x00\x03\x1a\x1b\x1c{"conversationId":"c1","echo":"SeCrEtabc"}'
#   op 5 table 6 table_conversation 7 messages_page 8 conversations_page 9 export_page 10 bytes
seed finish table           '\x05\x00\xc8\x00\x00\x00{"success":true,"x":null,"n":1.0}'
seed finish table-conv      '\x06\x00\xc9\x00\x00\x00{"success":true,"conversation":{"id":"c9","locationId":"l"}}'
seed finish page-flat       '\x07\x00\xc8\x00\x00\x00{"lastMessageId":"m2","nextPage":true,"messages":[{"id":"m1"},{"id":"m2","body":"b"},{"x":1}]}'
seed finish page-nested     '\x07\x00\xc8\x00\x00\x00{"messages":{"lastMessageId":"m2","nextPage":false,"messages":[{"id":"m1"}]}}'
seed finish page-convs      '\x08\x00\xc8\x00\x00\x00{"conversations":[{"id":"c1","sort":[1700000000000]},null,3],"total":2}'
seed finish page-export     '\x09\x00\xc8\x00\x00\x00{"messages":[{"id":"m1"}],"nextCursor":null,"total":1}'
seed finish bytes           '\x0a\x00\xc8\x00\x00\x00RIFF\x00\x01WAVE'
seed finish err-tamper-2p64  '\x00\x01\xf4\x03\x00\x00\x00\x00\x00\x00\xf0\x43\x00\x00{"statusCode":500}'

# headers: [op][max_size selector][chunk size] then header lines (\n-terminated) up to a blank line, then the body
seed headers send-ok        '\x00\x00\x40HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nX-RateLimit-Max: 100\r\nX-RateLimit-Remaining: 99\r\nX-RateLimit-Interval-Milliseconds: 10000\r\nX-RateLimit-Limit-Daily: 200000\r\nX-RateLimit-Daily-Remaining: 199999\r\n\r\n{"conversationId":"c1","messageId":"m1"}'
seed headers 429-seconds    '\x00\x00\x10HTTP/1.1 429 Too Many Requests\r\nRetry-After: 7\r\nX-RateLimit-Remaining: 0\r\n\r\n{"statusCode":429}'
seed headers 429-date       '\x02\x00\x10HTTP/1.1 429 Too Many Requests\r\nretry-after: Wed, 21 Oct 2015 07:28:00 GMT\r\n\r\n'
seed headers 100-continue   '\x01\x00\x10HTTP/1.1 100 Continue\r\nRetry-After: 3\r\n\r\nHTTP/1.1 200 OK\r\nX-Trace-Id: abc\x01def\r\n\r\n{"messageId":"m","conversationId":"c"}'
seed headers trace          '\x03\x00\x08HTTP/2 404\r\nx-request-id:   \t r-1 \t\r\n\r\n{"statusCode":404,"message":"Conversation not found"}'
seed headers too-big        '\x02\x05\x03HTTP/1.1 200 OK\r\n\r\n{"id":"m1","body":"a long body that will not fit"}'
seed headers odd-numbers    '\x00\x00\x20HTTP/1.1 503 x\r\nX-RateLimit-Remaining: 0x10\r\nX-RateLimit-Interval-Milliseconds: 1e3\r\nRetry-After: 1.5\r\n\r\n'

# path_id: [name selector][bytes]
seed path_id plain          '\x00msg_123-abc.DEF~x'
seed path_id slash          '\x01../../locations/abc?x=1#y'
seed path_id dots           '\x02..'
seed path_id ctl            '\x00a\r\nHost: evil'
seed path_id utf8           '\x00caf\xc3\xa9 %%41 \xff'
seed path_id empty          '\x00'

# build: [mode: bit0 status, bit1 allow_unknown][table: kind count, then key-selector value...]
#   value: 0-1 bytes (len, data), 2-3 word, 4 int32, 5 double, 6 bool, 7-8 table, 9 shared table, 10 null, 11 fn
seed build send-min         '\x00\x00\x03\x00\x02\x00\x01\x00\x02c1\x09\x00\x05Hello'
seed build send-empty-arr   '\x00\x00\x04\x00\x02\x02\x01\x00\x02c1\x04\x07\x01\x00\x06\x07\x01\x02\x00\x01a\x00\x01b'
seed build send-forward     '\x00\x00\x03\x00\x02\x02\x01\x00\x02c1\x15\x07\x00\x02\x19\x06\x01\x1b\x00\x02m9'
seed build send-sched       '\x00\x00\x04\x00\x02\x02\x01\x00\x02c1\x0e\x04\x65\x00\x00\x00\x17\x06\x01'
seed build send-unknown     '\x02\x00\x03\x00\x02\x00\x01\x00\x02c1\xc8\x05extra\x07\x01\x02\x00\x01x\x09\x00'
seed build send-bad-utf8    '\x00\x00\x03\x00\x02\x00\x01\x00\x02c1\x09\x02\x15'
seed build status-read      '\x01\x00\x01\x16\x02\x0c'
# mode bits 2-3: 1 query (bit0: get_messages), 2 multipart (a second table: the files), 3 [op] then the body of op
seed build query-search     '\x04\x00\x02\xc8\x00\x02l1\xc8\x00\x05limit'
seed build query-messages   '\x05\x00\x02\xc8\x00\x05limit\x04\x00\x00\x00\x14\xc8\x00\x04type\x00\x12TYPE_SMS,TYPE_CALL'
seed build multipart        '\x08\x00\x01\xc8\x00\x02c1\x01\x02\x00\x05hello\x00\x03\x00\xff\x00'
seed build op-body          '\x0c\x03\x00\x02\xc8\x00\x02l1\xc8\x00\x02c1'
seed build op-body-unknown  '\x0e\x05\x00\x02\xc8\x00\x05extra\x07\x00\x01\xc8\x00\x02\xff\xfe\xc8\x00\x01x'
seed build status-full      '\x01\x00\x04\x16\x02\x0a\x22\x07\x00\x02\x24\x00\x03E42\x09\x00\x04oops\x1c\x00\x02e1\x23\x07\x01\x02\x00\x01a\x07\x00\x02\x25\x00\x01x\x16\x02\x09'

# reader: [mode][piece seed][answer bytes]  (mode bit 0 HEAD, bits 1-2 max size, bit 3 repeat to 100 KiB)
seed reader length      '\x06\x07HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-RateLimit-Remaining: 5\r\n\r\n{}'
seed reader chunked     '\x06\x03HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n3\r\n{"a\r\n2\r\n":\r\n0\r\nX-T: 1\r\n\r\n'
seed reader unframed    '\x04\x01HTTP/1.0 200 OK\r\nRetry-After: 3\r\n\r\n{"id":"x"}'
seed reader interim     '\x06\x09HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n'
seed reader status-000  '\x06\x02HTTP/1.1 000 Zero\r\n\r\n'
seed reader huge-line   '\x0e\x05HTTP/1.1 200 AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA'
seed reader huge-header '\x0e\x05X-Big: bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb\r\n'
seed reader head        '\x01\x04HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n'
seed reader capped      '\x00\x04HTTP/1.1 200 OK\r\nContent-Length: 20\r\nX-Request-Id: r\x01q\r\n\r\n01234567890123456789'

# webhook: [flags][body len hi lo][body][pos hi lo][header bytes][\0 extra header lines] (see fuzz/fuzz_webhook.c)
seed webhook signed-inbound         '\x01\x00\x84{"type":"InboundMessage","webhookId":"w1","messageId":"m1","body":"caf\x5cu00e9","amount":10.50,"timestamp":"2026-01-01T00:00:00.000Z"}\x00\x00'
seed webhook signed-provider-lower  '\x09\x00r{"contactId":"c1","locationId":"l1","messageId":"m9","type":"SMS","phone":"+1555","message":"hi","attachments":[]}\x00\x00'
seed webhook signed-seen            'A\x00\x84{"type":"InboundMessage","webhookId":"w1","messageId":"m1","body":"caf\x5cu00e9","amount":10.50,"timestamp":"2026-01-01T00:00:00.000Z"}\x00\x00'
seed webhook sig-bitflip            '\x03\x00\x84{"type":"InboundMessage","webhookId":"w1","messageId":"m1","body":"caf\x5cu00e9","amount":10.50,"timestamp":"2026-01-01T00:00:00.000Z"}\x01\x05'
seed webhook body-bitflip           '\x05\x00\x84{"type":"InboundMessage","webhookId":"w1","messageId":"m1","body":"caf\x5cu00e9","amount":10.50,"timestamp":"2026-01-01T00:00:00.000Z"}\x00\x10'
seed webhook unsigned-na            '\x80\x00\x84{"type":"InboundMessage","webhookId":"w1","messageId":"m1","body":"caf\x5cu00e9","amount":10.50,"timestamp":"2026-01-01T00:00:00.000Z"}\x00\x00N/A'
seed webhook unsigned-b64           '\x80\x00\x84{"type":"InboundMessage","webhookId":"w1","messageId":"m1","body":"caf\x5cu00e9","amount":10.50,"timestamp":"2026-01-01T00:00:00.000Z"}\x00\x00AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=='
seed webhook wh-only                '\x10\x00\x84{"type":"InboundMessage","webhookId":"w1","messageId":"m1","body":"caf\x5cu00e9","amount":10.50,"timestamp":"2026-01-01T00:00:00.000Z"}\x00\x00AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA='
seed webhook wh-rsa-false           '0\x00\x84{"type":"InboundMessage","webhookId":"w1","messageId":"m1","body":"caf\x5cu00e9","amount":10.50,"timestamp":"2026-01-01T00:00:00.000Z"}\x00\x00AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA='
seed webhook signed-extra-dup       '\x01\x00\x84{"type":"InboundMessage","webhookId":"w1","messageId":"m1","body":"caf\x5cu00e9","amount":10.50,"timestamp":"2026-01-01T00:00:00.000Z"}\x00\x00\x00x-ghl-signature: N/A\x0aContent-Type: application/json\x0a'
seed webhook signed-not-json        '\x01\x00\x08not json\x00\x00'
seed webhook signed-array           '\x01\x00\x0e[{"type":"x"}]\x00\x00'

# h1: [flags][refuse][dirty][nsplit][split sizes...][expansion if flags bit 3: off hi lo, len-1, count hi lo][answer]
#   flags bits 0-1: max_size 1 / 16 / 1 KiB / 4 MiB; bit 2 HEAD; bit 3 expansion; bit 4 refuse the refuse-th
#   status/field; bit 5 refuse a body past refuse bytes (see fuzz/fuzz_h1.c)
seed h1 length          '\x02\x00\x80\x00HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nContent-Length: 40\r\n\r\n{"conversationId":"c1","messageId":"m1"}'
seed h1 chunked-ext     '\x02\x00\x40\x03\x05\x01\x11HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, Chunked\r\nContent-Length: 3\r\n\r\n3;name="v"\r\n{"a\r\n  2 ; x=1\r\n":\r\n00000001\r\n1\r\n0;end\r\nX-Trailer: 1\r\nX-Other: 2\r\n\r\n'
seed h1 interim         '\x02\x00\xc0\x00HTTP/1.1 100 Continue\r\nContent-Length: 9\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>; rel=preload\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}'
seed h1 http10-close    '\x02\x00\x20\x02\x00\x09HTTP/1.0 200 OK\r\nServer: x\r\n\r\n{"id":"x"}'
seed h1 http10-keep     '\x01\x00\x20\x00HTTP/1.0 200 OK\r\nconnection: Keep-Alive\r\ncontent-length:  5 \r\n\r\nhello'
seed h1 no-content      '\x02\x00\x10\x00HTTP/1.1 204 No Content\r\nConnection: close\r\nContent-Length: 7\r\n\r\n'
seed h1 not-modified    '\x02\x00\x10\x00HTTP/1.1 304 Not Modified\nTransfer-Encoding: chunked\n\n'
seed h1 head            '\x06\x00\x30\x00HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n'
seed h1 bad-length      '\x02\x00\x30\x00HTTP/1.1 200 OK\r\nContent-Length: 1x\r\n\r\n1x'
seed h1 empty-length    '\x02\x00\x30\x00HTTP/1.1 400 Bad\r\nContent-Length:\t \r\n\r\n'
seed h1 huge-length     '\x02\x00\x30\x00HTTP/1.1 200 OK\r\nContent-Length: 18446744073709551616\r\n\r\nabc'
seed h1 capped-close    '\x01\x00\x50\x00HTTP/1.1 500 Oops\r\nContent-Type: text/plain\r\n\r\nupstream connect error or disconnect/reset before headers'
seed h1 capped-chunk    '\x01\x00\x50\x00HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n8\r\n01234567\r\nff\r\n'
seed h1 bad-chunk-end   '\x02\x00\x50\x00HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcXY\r\n0\r\n\r\n'
seed h1 long-chunk-size '\x02\x00\x50\x00HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n00000000000000001\r\nx\r\n0\r\n\r\n'
seed h1 cut-body        '\x02\x00\x50\x00HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc'
seed h1 past-answer     '\x02\x00\x50\x00HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}HTTP/1.1 200 OK\r\n'
seed h1 bad-status      '\x02\x00\x50\x00HTTP/1.1 2000 OK\r\n\r\n'
seed h1 status-099      '\x02\x00\x50\x00HTTP/1.1 099 Low\r\n\r\n'
seed h1 refuse-field    '\x12\x02\x50\x00HTTP/1.1 200 OK\r\nA: 1\r\nB: 2\r\nContent-Length: 0\r\n\r\n'
seed h1 refuse-body     '\x22\x05\x50\x00HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n0123456789'
#   a chunk-size line of exactly 1 KiB (taken) and of 1 KiB + 1 (refused)
S1023=$(printf ';%.0s' $(seq 1023))
seed h1 chunk-line-1024 "\x02\x00\x50\x00HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3${S1023}\r\nabc\r\n0\r\n\r\n"
seed h1 chunk-line-1025 "\x02\x00\x50\x00HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3${S1023};\nabc\r\n0\r\n\r\n"
#   expansions (off hi lo, len - 1, count): a 64 KiB header line; 4096 header lines (64 KiB); the head exactly
#   65535 bytes (17 + 4080 * 16 + 238); 4096 trailer lines (65536 bytes: at the cap); trailers of 65537 bytes
#   (4095 * 16 + 17, one past it)
B256=$(printf 'b%.0s' $(seq 256))
L16=$(printf 'X-A: 012345678\\r\\n%.0s' $(seq 16))
T16=$(printf 'X-T: 012345678\\r\\n%.0s' $(seq 16))
P229=$(printf 'p%.0s' $(seq 229))
seed h1 head-line-big   "\x0a\x00\x80\x00\x00\x18\xff\xffHTTP/1.1 200 OK\r\nX-Big: ${B256}\r\n\r\n"
seed h1 head-many       "\x0a\x00\x80\x00\x00\x11\xff\xffHTTP/1.1 200 OK\r\n${L16}\r\n"
seed h1 head-at-cap     "\x0a\x00\x80\x00\x00\x11\xff\xfeHTTP/1.1 200 OK\r\n${L16}X-Pad: ${P229}\r\n\r\n"
L15=$(printf 'X-T: 012345678\\r\\n%.0s' $(seq 15))
seed h1 trailers-past-cap "\x0a\x00\x80\x00\x00\x39\xff\xfeHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n${T16}${L15}X-T: 0123456789\r\n\r\n"
seed h1 trailers-big    "\x0a\x00\x80\x00\x00\x39\xff\xffHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n${T16}\r\n"
