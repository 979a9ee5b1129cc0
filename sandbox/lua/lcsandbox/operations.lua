-- The handlers of the API's operations, by the catalogue's operation `name` (API.md §4), and the
-- control endpoints that feed them (inject messages, recordings, transcriptions; serve uploads).
-- app.lua routes a request (lcsandbox.routes, from the library's catalogue), checks the token, the
-- Version and the rate limit, then calls M.run. Each handler declares the body schema
-- (rules.schemas) and query schema (rules.queries, by the spec's operationId) it is validated
-- against; fn(ctx) answers status, result, or nil, status, message [, extra fields].
local json = require "lcsandbox.json"
local store = require "lcsandbox.store"
local validate = require "lcsandbox.validate"
local uploads = require "lcsandbox.uploads"

local ngx = ngx
local type, pairs, ipairs, tostring, tonumber, floor = type, pairs, ipairs, tostring, tonumber, math.floor
local find, lower, match = string.find, string.lower, string.match
local null = json.null

local M = {}

local CT_JSON = "application/json; charset=utf-8"

-- The shape of get_messages' answer: "nested" (what the live API answers, vendor docs issue #54:
-- { messages = { lastMessageId, nextPage, messages = [...] } }) or "flat" (the documented one).
M.config = { messages_shape = "nested" }

local function err_body(status, message, error_name, extra)
  local t = { statusCode = status, message = message, error = error_name }
  if extra then for k, v in pairs(extra) do t[k] = v end end
  return json.encode(t)
end
M.err_body = err_body

local ERROR_NAMES = {
  [400] = "Bad Request", [403] = "Forbidden", [404] = "Not Found", [409] = "Conflict",
  [413] = "Payload Too Large", [415] = "Unsupported Media Type",
}

-- status, text for a store result (result, or nil, status, message, extra).
local function answer(ok_status, result, status, msg, extra)
  if result == nil then
    return status, err_body(status, msg, ERROR_NAMES[status], extra)
  end
  return ok_status, json.encode(result)
end

---------------------------------------------------------------------------------------------------
-- request bodies

-- The request's JSON body as a table, or nil, status, text. Like the API's body parser, a body
-- whose Content-Type is not JSON is not read at all (validation then reports the missing fields).
local function json_body(ctx)
  local data = ctx.read_body()
  local e = ctx.e
  e.raw_body = data
  if not data or data == "" then return {} end
  local ct = ctx.hs["content-type"]
  if type(ct) ~= "string" or not find(lower(ct), "^%s*application/[%w.+-]*json") then
    e.body = data
    return {}
  end
  local v, err = json.decode(data)
  if v == nil then
    e.body = data
    return nil, 400, err_body(400, "Invalid JSON in request body: " .. tostring(err))
  end
  e.body = v
  if type(v) ~= "table" or v[1] ~= nil then
    return nil, 400, err_body(400, "Request body must be a JSON object")
  end
  return v
end

-- A shallow copy of b without its JSON nulls (null means "not given" to the API's validator).
local function without_nulls(b)
  local c
  for k, v in pairs(b) do
    if v == null then
      if not c then
        c = {}
        for k2, v2 in pairs(b) do c[k2] = v2 end
      end
      c[k] = nil
    end
  end
  return c or b
end

local function unprocessable(errs)
  return 422, json.encode({ statusCode = 422, message = errs, error = "Unprocessable Entity" })
end

local function validated(schema, b)
  local errs = validate.check(schema, b)
  if errs then return nil, unprocessable(errs) end
  return without_nulls(b)
end

local FORBIDDEN_LOCATION = "The token does not have access to this location"

---------------------------------------------------------------------------------------------------
-- the handlers

local H = {}
M.handlers = H

H.get_message = { fn = function(ctx) return answer(200, store.get_message(ctx.loc, ctx.args[1])) end }

H.get_conversation = { fn = function(ctx) return answer(200, store.get_conversation(ctx.loc, ctx.args[1])) end }

H.send_message = { body = "SendMessageBodyDto", status = 201,
  fn = function(ctx) return answer(201, store.send(ctx.loc, ctx.body)) end }

H.update_message_status = { body = "UpdateMessageStatusDto",
  fn = function(ctx) return answer(200, store.update_status(ctx.loc, ctx.args[1], ctx.body)) end }

H.add_inbound_message = { body = "ProcessMessageBodyDto",
  fn = function(ctx) return answer(201, store.inbound(ctx.loc, ctx.body)) end }

H.add_outbound_call = { body = "ProcessOutboundMessageBodyDto",
  fn = function(ctx) return answer(201, store.outbound_call(ctx.loc, ctx.body)) end }

H.send_review_reply = { body = "SendReviewReplyDto",
  fn = function(ctx) return answer(201, store.review_reply(ctx.loc, ctx.body)) end }

H.create_conversation = { body = "CreateConversationDto",
  fn = function(ctx) return answer(201, store.create_conversation(ctx.loc, ctx.body)) end }

H.update_conversation = { body = "UpdateConversationDto",
  fn = function(ctx) return answer(200, store.update_conversation(ctx.loc, ctx.args[1], ctx.body)) end }

H.delete_conversation = { fn = function(ctx) return answer(200, store.delete_conversation(ctx.loc, ctx.args[1])) end }

H.get_messages = { query = "get-messages",
  fn = function(ctx)
    local q = ctx.query
    if q.type then
      q.types = {}
      for t in (q.type .. ","):gmatch("([^,]*),") do
        q.types[t == "TYPE_INTERNAL_COMMENTS" and "TYPE_INTERNAL_COMMENT" or t] = true
      end
    end
    local page, status, msg = store.get_messages(ctx.loc, ctx.args[1], q)
    if not page then return answer(nil, nil, status, msg) end
    if M.config.messages_shape == "flat" then return 200, json.encode(page) end
    return 200, json.encode({ messages = page })
  end }

H.search_conversations = { query = "search-conversation",
  fn = function(ctx)
    local q = ctx.query
    local after = q.startAfterDate
    if after ~= nil then
      after = tonumber(type(after) == "table" and after[1] or after)
      if not after then
        return 422, json.encode({ statusCode = 422, error = "Unprocessable Entity",
          message = { "startAfterDate must be a number (the last result's sort value, in ms)" } })
      end
    end
    return answer(200, store.search_conversations(ctx.loc, q, after))
  end }

-- The export cursor: opaque to the client, base64 of "<ms>:<id>" of the last message sent.
H.export_messages = { query = "export-messages-by-location",
  fn = function(ctx)
    local q = ctx.query
    local after
    if q.cursor and q.cursor ~= "" then
      local raw = ngx.decode_base64(q.cursor)
      local ms, id = match(raw or "", "^(%d+):(.+)$")
      if not ms then return 400, err_body(400, "Invalid cursor", "Bad Request") end
      after = { tonumber(ms), id }
    end
    local page, key_or_status, msg = store.export_messages(ctx.loc, q, after)
    if not page then return answer(nil, nil, key_or_status, msg) end
    page.nextCursor = key_or_status and ngx.encode_base64(("%d:%s"):format(key_or_status[1], key_or_status[2])) or null
    return 200, json.encode(page)
  end }

H.get_email = { fn = function(ctx) return answer(200, store.get_email(ctx.loc, ctx.args[1])) end }

H.cancel_scheduled_message = {
  fn = function(ctx) return answer(200, store.cancel_scheduled_message(ctx.loc, ctx.args[1])) end }

H.cancel_scheduled_email = {
  fn = function(ctx) return answer(200, store.cancel_scheduled_email(ctx.loc, ctx.args[1])) end }

H.add_message_attachments = { body = "AddMessageAttachmentsDto",
  fn = function(ctx) return answer(200, store.set_attachments(ctx.loc, ctx.args[1], ctx.body)) end }

local function raw_answer(r, filename)
  return 200, r.body, {
    ["Content-Disposition"] = "attachment; filename=" .. filename,
  }, r.content_type
end

H.get_message_recording = {
  fn = function(ctx)
    local p = ctx.params
    local r, status, msg = store.get_recording(ctx.loc, p.locationId, p.messageId)
    if not r then return answer(nil, nil, status, msg) end
    return raw_answer(r, "audio.wav")
  end }

H.get_message_transcription = {
  fn = function(ctx)
    local p = ctx.params
    return answer(200, store.get_transcription(ctx.loc, p.locationId, p.messageId))
  end }

H.download_message_transcription = {
  fn = function(ctx)
    local p = ctx.params
    local t, status, msg = store.get_transcription(ctx.loc, p.locationId, p.messageId)
    if not t then return answer(nil, nil, status, msg) end
    return raw_answer({ body = store.transcription_text(t), content_type = "text/plain; charset=utf-8" },
      '"transcription.txt"')
  end }

H.live_chat_typing = { body = "UserTypingBody",
  fn = function(ctx) return answer(201, store.typing(ctx.loc, ctx.body)) end }

H.get_custom_subtypes = { query = "get-all-custom-subtypes",
  fn = function(ctx) return answer(200, store.get_custom_subtypes(ctx.loc)) end }

H.create_custom_subtype = { query = "create-custom-subtype", body = "CreateCustomSubtypeDto",
  fn = function(ctx) return answer(201, store.create_custom_subtype(ctx.loc, ctx.body)) end }

H.update_custom_subtype = { query = "update-custom-subtype", body = "UpdateCustomSubtypeDto",
  fn = function(ctx) return answer(200, store.update_custom_subtype(ctx.loc, ctx.args[1], ctx.body)) end }

H.get_unsubscription_status = { query = "get-contact-unsubscription-status",
  fn = function(ctx) return answer(200, store.get_unsubscription_status(ctx.loc, ctx.query)) end }

H.change_subscription = { body = "UserSubscriptionChangeDto",
  fn = function(ctx) return answer(201, store.change_subscription(ctx.loc, ctx.body)) end }

-- Files are served by the sandbox itself, at /_sandbox/files/<id>/<name> on the host the client used.
local function base_url()
  local host = ngx.var.http_host
  if not host or host == "" then host = ngx.var.server_addr .. ":" .. ngx.var.server_port end
  return "http://" .. host
end

local function file_url(f)
  return base_url() .. "/_sandbox/files/" .. f.id .. "/" .. ngx.escape_uri(f.name)
end

local function upload_error(status, message)
  return status, json.encode({ statusCode = status, status = status, message = message, error = ERROR_NAMES[status] })
end

-- POST /conversations/messages/upload: multipart/form-data, the files in fileAttachment.
H.upload_attachments = { body = false,
  fn = function(ctx)
    local ct = ctx.hs["content-type"]
    local boundary = uploads.boundary(ct)
    local data = ctx.read_body()
    local e = ctx.e
    e.raw_body = data
    if not boundary then
      return upload_error(415, "The request must be multipart/form-data (with a boundary), the files in " .. uploads.FIELD)
    end
    local parts, perr = uploads.parse(data or "", boundary)
    if not parts then return upload_error(400, "Malformed multipart body: " .. perr) end
    local fields, files = uploads.split(parts)
    local summary = {}
    for k, v in pairs(fields) do summary[k] = v end
    local names = {}
    for i, f in ipairs(files) do names[i] = { field = f.name, filename = f.filename, size = #f.data, content_type = f.content_type } end
    summary.files = names
    e.body = summary
    local b, status, text = validated("UploadFilesDto", fields)
    if not b then return status, text end
    if b.locationId ~= ctx.loc then return 403, err_body(403, FORBIDDEN_LOCATION, "Forbidden") end
    local fstatus, fmsg = uploads.check_files(files, b.isGroupSms == "true")
    if fstatus then return upload_error(fstatus, fmsg) end
    local c, cstatus, cmsg = store.conversation_for_upload(ctx.loc, b.conversationId, b.contactId)
    if not c then return answer(nil, nil, cstatus, cmsg) end
    local out = {}
    for _, f in ipairs(files) do
      local stored = store.add_file(f.filename, f.content_type or "application/octet-stream", f.data)
      out[f.filename] = file_url(stored)
    end
    return 200, json.encode({ uploadedFiles = out })
  end }

H.initiate_upload = { body = "InitiateFileUploadDto",
  fn = function(ctx)
    local b = ctx.body
    if b.fileSize and b.fileSize > uploads.MAX_LARGE_FILE_SIZE then
      return upload_error(413, "File too large: at most " .. uploads.MAX_LARGE_FILE_SIZE .. " bytes")
    end
    local c, status, msg = store.conversation_for_upload(ctx.loc, b.conversationId)
    if not c then return answer(nil, nil, status, msg) end
    local u = store.add_upload({
      locationId = ctx.loc, conversationId = c.id, filename = b.filename, contentType = b.contentType,
      fileSize = b.fileSize, expiresAt = floor(ngx.now() * 1000) + 15 * 60 * 1000,
    })
    u.filePath = "location/" .. ctx.loc .. "/conversations/" .. c.id .. "/" .. u.uploadId .. "/" .. b.filename
    return 200, json.encode({
      uploadUrl = base_url() .. "/_sandbox/uploads/" .. u.uploadId, uploadId = u.uploadId,
      filePath = u.filePath, expiresAt = u.expiresAt, maxFileSize = uploads.MAX_LARGE_FILE_SIZE,
    })
  end }

H.complete_upload = { body = "CompleteFileUploadDto",
  fn = function(ctx)
    local b = ctx.body
    local u = store.get_upload(b.uploadId)
    if not u or u.locationId ~= ctx.loc then return answer(nil, nil, 404, "Upload not found") end
    if u.filePath ~= b.filePath or u.conversationId ~= b.conversationId then
      return answer(nil, nil, 400, "filePath and conversationId must be the ones initiate_upload answered")
    end
    if not u.data then return answer(nil, nil, 400, "The file has not been uploaded to uploadUrl yet") end
    store.drop_upload(u.uploadId)
    local f = store.add_file(b.filename, u.contentType, u.data)
    return 200, json.encode({
      uploadedFiles = { [b.filename] = file_url(f) },
      metadata = { size = #u.data, contentType = u.contentType },
    })
  end }

---------------------------------------------------------------------------------------------------
-- Runs operation `name` for an authorised, counted request. ctx: { loc, params, args, hs, e,
-- read_body }. Returns status, text [, headers [, content type]].
function M.run(name, ctx)
  local h = H[name]
  if not h then return 501, err_body(501, "Not implemented in the sandbox: " .. name) end
  if h.query then
    local q, errs = validate.check_query(h.query, ngx.req.get_uri_args(100))
    if not q then return unprocessable(errs) end
    if q.locationId and q.locationId ~= ctx.loc then return 403, err_body(403, FORBIDDEN_LOCATION, "Forbidden") end
    ctx.query = q
  end
  if h.body then
    local b, status, text = json_body(ctx)
    if not b then return status, text end
    local v, vstatus, vtext = validated(h.body, b)
    if not v then return vstatus, vtext end
    if type(v.locationId) == "string" and v.locationId ~= ctx.loc then
      return 403, err_body(403, FORBIDDEN_LOCATION, "Forbidden")
    end
    ctx.body = v
  end
  return h.fn(ctx)
end

---------------------------------------------------------------------------------------------------
-- Control endpoints (loopback only, no token; app.lua dispatches /_sandbox/* here when its own
-- table has no entry). Each answers status, table | text [, content type [, headers]].
local control = {}
M.control = control

local function control_json(read_body)
  local data = read_body()
  if not data or data == "" then return {} end
  local v, err = json.decode(data)
  if type(v) ~= "table" then return nil, "the body must be a JSON object: " .. tostring(err or "") end
  return v
end

local function location_arg(b)
  local loc = b.locationId
  if loc == nil then
    local args = ngx.req.get_uri_args()
    loc = args.locationId
  end
  return type(loc) == "string" and loc ~= "" and loc or store.DEFAULT_LOCATION
end

-- POST /_sandbox/inbound: inject a message (default inbound) for a contact, conversation created
-- if needed; with `recording` {content_type, base64} and `transcription` [sentences] for calls.
control["POST /_sandbox/inbound"] = function(read_body)
  local b, err = control_json(read_body)
  if not b then return 400, { message = err } end
  local r, status, msg = store.inject(location_arg(b), b)
  if not r then return status, { message = msg } end
  if type(b.recording) == "table" then
    local bytes = b.recording.base64 and ngx.decode_base64(b.recording.base64) or b.recording.text
    if type(bytes) ~= "string" then return 400, { message = "recording needs base64 (valid) or text" } end
    store.set_recording(r.messageId, bytes, b.recording.content_type)
  end
  if type(b.transcription) == "table" then store.set_transcription(r.messageId, b.transcription) end
  return 201, r
end

-- PUT /_sandbox/messages/{id}/recording (raw bytes, their Content-Type) and .../transcription (JSON array)
local function message_control(method, path, read_body)
  local id, what = match(path, "^/_sandbox/messages/([^/]+)/(%a+)$")
  if not id or method ~= "PUT" then return nil end
  id = ngx.unescape_uri(id)
  if what == "recording" then
    local data = read_body() or ""
    local r, status, msg = store.set_recording(id, data, ngx.var.http_content_type)
    if not r then return status, { message = msg } end
    return 200, r
  elseif what == "transcription" then
    local v = json.decode(read_body() or "")
    if type(v) ~= "table" or not json.is_array(v) then return 400, { message = "a JSON array of sentences" } end
    local r, status, msg = store.set_transcription(id, v)
    if not r then return status, { message = msg } end
    return 200, r
  end
  return nil
end

-- GET /_sandbox/files/{id}/{name}: an uploaded file. PUT /_sandbox/uploads/{uploadId}: the bytes of
-- an initiated upload (like a signed storage URL).
local function file_control(method, path, read_body)
  local id = match(path, "^/_sandbox/files/([^/]+)/")
  if id and (method == "GET" or method == "HEAD") then
    local f = store.get_file(id)
    if not f then return 404, { message = "File not found" } end
    return 200, f.data, f.content_type
  end
  local uid = match(path, "^/_sandbox/uploads/([^/]+)$")
  if uid and method == "PUT" then
    local u = store.get_upload(uid)
    if not u then return 404, { message = "Upload not found" } end
    if u.expiresAt < ngx.now() * 1000 then return 403, { message = "The upload URL has expired" } end
    local data = read_body() or ""
    if #data > uploads.MAX_LARGE_FILE_SIZE then return 413, { message = "File too large" } end
    u.data = data
    return 200, { uploadId = uid, size = #data }
  end
  return nil
end

-- GET /_sandbox/typing?conversationId=: the last live-chat typing event of a conversation.
control["GET /_sandbox/typing"] = function()
  local id = ngx.req.get_uri_args().conversationId
  local t = type(id) == "string" and store.typing_state(id)
  if not t then return 404, { message = "no typing event for that conversation" } end
  return 200, t
end

-- Answers a control request this module knows, or nil.
function M.handle_control(method, path, read_body)
  local fn = control[method .. " " .. path]
  if fn then return fn(read_body) end
  local status, body, ct = message_control(method, path, read_body)
  if status then return status, body, ct end
  return file_control(method, path, read_body)
end

-- POST /_sandbox/reset's part: the default answer shape again.
function M.reset() M.config.messages_shape = "nested" end

-- POST /_sandbox/config's part, messages_shape: check_config answers nil or what is wrong (nothing
-- is applied before every part of the config was checked), configure applies it.
function M.check_config(b)
  if b.messages_shape ~= nil and b.messages_shape ~= "nested" and b.messages_shape ~= "flat" then
    return "messages_shape must be \"nested\" or \"flat\""
  end
  return nil
end

function M.configure(b)
  if b.messages_shape ~= nil then M.config.messages_shape = b.messages_shape end
end

M.CT_JSON = CT_JSON
return M
