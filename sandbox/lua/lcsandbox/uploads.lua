-- multipart/form-data for the sandbox's POST /conversations/messages/upload: the body parser and
-- the documented limits. No ngx here, so specs can load it too.
local M = {}

local find, sub, lower, match, gmatch = string.find, string.sub, string.lower, string.match, string.gmatch

-- The form field the files come in and the documented limits (5 files, 5 MB each) are the
-- catalogue's (the library checks the same figures before sending).
local files = {}
for _, op in ipairs(require("leadconnector.catalogue").operations) do
  if op.name == "upload_attachments" then files = op.files end
end
M.FIELD = assert(files.field, "the catalogue's upload_attachments has no files.field")
M.MAX_FILES = assert(files.max_files)         -- per request (1 when isGroupSms is "true")
M.MAX_FILE_SIZE = assert(files.max_file_size) -- bytes, per file
M.MAX_LARGE_FILE_SIZE = 25 * 1024 * 1024 -- initiate/complete uploads (the launcher's client_max_body_size is 32m)

-- The boundary of a multipart/form-data Content-Type, or nil.
function M.boundary(ct)
  if type(ct) ~= "string" or not find(lower(ct), "^%s*multipart/form%-data") then return nil end
  local b = match(ct, '[Bb][Oo][Uu][Nn][Dd][Aa][Rr][Yy]="([^"]+)"') or match(ct, "[Bb][Oo][Uu][Nn][Dd][Aa][Rr][Yy]=([^;%s]+)")
  if not b or #b > 70 then return nil end
  return b
end

local function disposition_param(h, name)
  -- name="x" (quoted, \" escapes allowed) or name=x
  local q = match(h, ";%s*" .. name .. '="(.-[^\\])"') or match(h, ";%s*" .. name .. '=""') and ""
  if q then return (q:gsub('\\(.)', "%1")) end
  return match(h, ";%s*" .. name .. "=([^;%s]+)")
end

-- Parses a multipart body. Returns a list of parts { name, filename (nil for a plain field),
-- content_type, data }, or nil and what is wrong.
function M.parse(body, boundary)
  local delim = "--" .. boundary
  local s, e = find(body, delim, 1, true)
  if not s then return nil, "no opening boundary" end
  if s ~= 1 and sub(body, s - 2, s - 1) ~= "\r\n" then return nil, "no opening boundary" end
  local parts = {}
  local pos = e + 1
  while true do
    if sub(body, pos, pos + 1) == "--" then return parts end -- the closing boundary
    local eol = find(body, "\r\n", pos, true)
    if not eol or not match(sub(body, pos, eol - 1), "^[ \t]*$") then return nil, "bad boundary line" end
    local hend = find(body, "\r\n\r\n", eol, true)
    local headers
    if hend == eol then
      headers, hend = "", eol -- no headers at all
    elseif not hend then
      return nil, "unterminated part headers"
    else
      headers = sub(body, eol + 2, hend - 1)
    end
    local part = {}
    for line in gmatch(headers .. "\r\n", "(.-)\r\n") do
      local k, v = match(line, "^([^:]+):%s*(.-)%s*$")
      if k then
        k = lower(k)
        if k == "content-disposition" then
          if not find(lower(v), "^form%-data") then return nil, "a part is not form-data" end
          part.name = disposition_param(v, "name")
          part.filename = disposition_param(v, "filename")
        elseif k == "content-type" then
          part.content_type = v
        end
      end
    end
    if not part.name then return nil, "a part has no name" end
    local dstart = hend + 4
    local nxt = find(body, "\r\n" .. delim, dstart, true)
    if not nxt then return nil, "unterminated part" end
    part.data = sub(body, dstart, nxt - 1)
    parts[#parts + 1] = part
    pos = nxt + 2 + #delim
  end
end

-- Splits parts into form fields (name -> string, or a list when repeated or named "x[]") and files.
function M.split(parts)
  local fields, files = {}, {}
  for _, p in ipairs(parts) do
    if p.filename then
      files[#files + 1] = p
    else
      local name = p.name
      local list = match(name, "^(.-)%[%]$")
      if list then
        local t = fields[list]
        if type(t) ~= "table" then t = {} fields[list] = t end
        t[#t + 1] = p.data
      elseif fields[name] ~= nil then
        local t = fields[name]
        if type(t) ~= "table" then t = { t } fields[name] = t end
        t[#t + 1] = p.data
      else
        fields[name] = p.data
      end
    end
  end
  -- attachmentUrls is an array in the DTO: one value is a list of one
  if type(fields.attachmentUrls) == "string" then fields.attachmentUrls = { fields.attachmentUrls } end
  return fields, files
end

-- Checks the files against the limits. Returns nil, or status and message as the API answers them.
function M.check_files(files, group_sms)
  if #files == 0 then return 400, "No file was uploaded: send the files in " .. M.FIELD end
  for _, f in ipairs(files) do
    if f.name ~= M.FIELD then return 400, "Unexpected field " .. tostring(f.name) end
  end
  local max = group_sms and 1 or M.MAX_FILES
  if #files > max then return 400, "Too many files: at most " .. max .. " per request" end
  for _, f in ipairs(files) do
    if #f.data > M.MAX_FILE_SIZE then
      return 413, ("File too large: %s is over %d bytes"):format(f.filename, M.MAX_FILE_SIZE)
    end
  end
  return nil
end

return M
