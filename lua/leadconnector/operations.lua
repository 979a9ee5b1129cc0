--- leadconnector.operations: the client's API methods, derived from the operation catalogue.
--
-- Every operation of lua/leadconnector/catalogue.lua (generated from the vendor's OpenAPI file) becomes one method
-- of the client and one kind of batch entry, from the same declaration: its positional arguments (path ids, or
-- query parameters API.md makes positional), its table argument (query parameters or body fields), then the call
-- options. The schemas are compiled into C structs once, here, at load; validation, the query string, the JSON or
-- multipart body and the decoding of the answer all happen in the C core. The paging iterators and the upload come
-- from the same declarations. init.lua calls install() once.
-- @module leadconnector.operations

local core = require "leadconnector.core"
local catalogue = require "leadconnector.catalogue"

local type, error, pairs, ipairs, tostring, getmetatable = type, error, pairs, ipairs, tostring, getmetatable
local compile, build, build_query, multipart_parts, encode_multipart, path_id = core.compile, core.build,
  core.build_query, core.multipart_parts, core.encode_multipart, core.path_id
local open = io.open

local M = {}

-- The catalogue's `answer` -> the C core's name for how an answer is decoded (core.finish / session:call).
local DECODE = {
  send = "send", message = "message", conversation = "conversation", table = "table",
  raw = "bytes", messages_page = "messages_page", conversations_page = "conversations_page",
  export_page = "export_page",
}

local function invalid(field, msg)
  local err = core.error("invalid", msg)
  err.field = field
  err.request_sent = false
  return err
end
M.invalid = invalid -- init.lua's too: one constructor of the "invalid" errors raised before anything is sent

-- The template split at its {parameters}: { prefix, name1, mid, name2, suffix } (one or two ids in these paths).
local function split_path(path)
  local pieces, names = {}, {}
  local last = 1
  for s, name, e in path:gmatch("(){([^}]+)}()") do
    pieces[#pieces + 1] = path:sub(last, s - 1)
    names[#names + 1] = name
    last = e
  end
  pieces[#pieces + 1] = path:sub(last)
  return pieces, names
end

-- The declaration made ready for calls: compiled schemas, path pieces, where each positional argument goes.
local function compile_op(op)
  local d = {
    name = op.name, method = op.method, template = op.path, decode = DECODE[op.answer],
    npos = #op.args, content = op.content, files = op.files, batch = op.batch,
  }
  if not d.decode then error("leadconnector: catalogue answer " .. tostring(op.answer) .. " of " .. op.name) end
  if op.answer == "table" and op.objects and op.objects.conversation then d.decode = "table_conversation" end
  -- Every POST is a send: never re-sent once it may have arrived. The retry rule keys on the method
  -- (Client:_call, the batch, both transports); the catalogue must agree with it.
  if (op.retry == "send") ~= (op.method == "POST") then
    error("leadconnector: catalogue retry class of " .. op.name .. " disagrees with its method")
  end
  local pieces, names = split_path(op.path)
  d.pieces = pieces
  d.path_pos = {}
  local qargs = {}
  for i, a in ipairs(op.args) do
    if a["in"] == "path" then
      for k, n in ipairs(names) do if n == a.name then d.path_pos[k] = i end end
    else
      qargs[#qargs + 1] = { name = a.name, type = a.type or "id", required = true, pos = i }
    end
  end
  d.npath = #names
  d.path_names = names
  -- the path with its ids percent-encoded (core.path_id: one segment each, dot segments and control characters
  -- refused), the error naming the parameter
  local pos = d.path_pos
  if #names == 1 then
    local prefix, suffix, pname, k = pieces[1], pieces[2], names[1], pos[1]
    d.fill = function(p1, p2) return path_id(k == 1 and p1 or p2, pname, prefix, suffix) end
  elseif #names == 2 then
    d.fill = function(p1, p2)
      local path, err = path_id(pos[1] == 1 and p1 or p2, names[1], pieces[1], pieces[2])
      if not path then return nil, err end
      return path_id(pos[2] == 1 and p1 or p2, names[2], path, pieces[3])
    end
  end
  if #qargs > 0 then d.qargs = qargs end
  if op.query or d.qargs then
    local q = {}
    for _, f in ipairs(op.query or {}) do q[#q + 1] = f end
    for _, f in ipairs(qargs) do q[#q + 1] = f end
    d.query = compile(q)
    d.has_query_table = op.query ~= nil
  end
  if op.body then d.body = compile(op.body) end
  d.has_table = d.has_query_table or d.body ~= nil
  return d
end

local function basename(p) return (p:match("([^/\\]+)$")) or p end

local CONTENT_TYPES = {
  png = "image/png", jpg = "image/jpeg", jpeg = "image/jpeg", gif = "image/gif", webp = "image/webp",
  pdf = "application/pdf", txt = "text/plain", csv = "text/csv", mp3 = "audio/mpeg", wav = "audio/wav",
  mp4 = "video/mp4", json = "application/json", zip = "application/zip",
}

-- files[i] = { path = ... } or { name =, content = [, content_type =] } -> the list core.build_multipart takes.
-- The limits are checked before a file is read.
local function resolve_files(files, limits)
  local n = #files
  for k in pairs(files) do
    if type(k) ~= "number" or k < 1 or k > n or k % 1 ~= 0 then
      return nil, invalid("files", "field 'files' must be a list of files (a Lua sequence)")
    end
  end
  if n > limits.max_files then
    return nil, invalid("files", ("field 'files' may hold at most %d files (got %d)"):format(limits.max_files, n))
  end
  local out = {}
  for i = 1, n do
    local f = files[i]
    local where = ("files[%d]"):format(i)
    if type(f) ~= "table" then
      return nil, invalid(where, ("field '%s' must be a table { path = ... } or { name =, content = }, got %s")
        :format(where, type(f)))
    end
    if f.path ~= nil then
      if type(f.path) ~= "string" or f.path == "" then
        return nil, invalid(where, ("field '%s.path' must be a non-empty string"):format(where))
      end
      local fh, why = open(f.path, "rb")
      if not fh then return nil, invalid(where, ("field '%s.path': cannot open the file: %s"):format(where, why)) end
      local size = fh:seek("end")
      if size and size > limits.max_file_size then
        fh:close()
        return nil, invalid(where, ("field '%s' is larger than the limit of %d bytes (got %d)")
          :format(where, limits.max_file_size, size))
      end
      fh:seek("set")
      local content = fh:read("*a")
      fh:close()
      if not content then return nil, invalid(where, ("field '%s.path': cannot read the file"):format(where)) end
      local name = f.name or basename(f.path)
      local ext = type(name) == "string" and name:match("%.([%w]+)$")
      out[i] = { name = name, content = content,
        content_type = f.content_type or (ext and CONTENT_TYPES[ext:lower()]) or nil }
    else
      out[i] = { name = f.name, content = f.content, content_type = f.content_type }
    end
  end
  return out
end

--- Installs the methods on the client class. `h` holds what they share with init.lua: call_options(copts) and
-- finish_error(err, method, path, attempts), and Client:_call(op, method, path, body, copts, content_type).
-- Returns prepare(entry, bopts), the batch's turning of an entry into a request tuple.
function M.install(Client, h)
  local call_options, finish_error = h.call_options, h.finish_error
  local by_name = {}

  local function check_client(self, name)
    if getmetatable(self) ~= Client then
      error(("leadconnector: call it as client:%s(...), on a client made by leadconnector.new"):format(name), 3)
    end
  end

  -- prep(d, batch, x1..x4) -> decode, method, path, body, copts, content_type | nil, err
  -- x1..x4: the positional arguments, then the table argument (when the operation has one), then the options.
  local function prep(d, batch, x1, x2, x3, x4)
    local p1, p2, tab, opts
    local npos = d.npos
    if npos == 0 then tab, opts = x1, x2
    elseif npos == 1 then p1, tab, opts = x1, x2, x3
    else p1, p2, tab, opts = x1, x2, x3, x4 end
    if not d.has_table then tab, opts = nil, tab end
    local method, template = d.method, d.template
    if d.body then
      if type(tab) ~= "table" then
        error(("leadconnector: %s%s expects a table of fields, got %s"):format(batch and "batch " or "", d.name,
          type(tab)), batch and 5 or 3)
      end
    elseif tab ~= nil and type(tab) ~= "table" then
      error(("leadconnector: %s%s expects a table of query parameters, got %s"):format(batch and "batch " or "",
        d.name, type(tab)), batch and 5 or 3)
    end
    local copts, err
    if opts ~= nil then
      copts, err = call_options(opts)
      if err then return nil, err end
    end
    local path = template
    if d.fill then
      path, err = d.fill(p1, p2)
      if not path then return nil, err end
    end
    local allow = copts and copts.allow_unknown
    if d.query then
      local q = d.has_query_table and tab or nil
      local qargs = d.qargs
      if qargs then
        local merged = {}
        if q then for k, v in pairs(q) do merged[k] = v end end
        for i = 1, #qargs do
          local a = qargs[i]
          merged[a.name] = a.pos == 1 and p1 or p2
        end
        q = merged
      end
      path, err = build_query(d.query, q, allow, path)
      if not path then return nil, err end
    end
    local body
    if d.body and not d.files then
      body, err = build(d.body, tab, allow)
      if not body then return nil, err end
    end
    return d.decode, method, path, body, copts
  end

  for _, op in ipairs(catalogue.operations) do
    local d = compile_op(op)
    by_name[d.name] = d
  end

  -- Each operation's method. The common shapes get a function of their own (no varargs on the hot path).
  for _, d in pairs(by_name) do
    local name, method, template = d.name, d.method, d.template
    local names, pieces = d.path_names, d.pieces
    if d.files then
      local limits = d.files
      Client[name] = function(self, fields, files, opts)
        if getmetatable(self) ~= Client then check_client(self, name) end
        if type(fields) ~= "table" then
          error(("leadconnector: %s expects a table of fields, got %s"):format(name, type(fields)), 2)
        end
        if type(files) ~= "table" then
          error(("leadconnector: %s expects a list of files, got %s"):format(name, type(files)), 2)
        end
        local copts, err
        if opts ~= nil then
          copts, err = call_options(opts)
          if err then return finish_error(err, method, template, 0) end
        end
        local list
        list, err = resolve_files(files, limits)
        if not list then return finish_error(err, method, template, 0) end
        local parts
        parts, err = multipart_parts(d.body, fields, list, limits.field, limits.max_files, limits.max_file_size,
          copts and copts.allow_unknown)
        if not parts then return finish_error(err, method, template, 0) end
        -- libcurl takes the parts (its mime API); cosockets get the body written out by the C core
        local body, ctype = parts, nil
        if self.transport ~= "curl" then body, ctype = encode_multipart(parts) end
        return self:_call(d.decode, method, template, body, copts, ctype)
      end
    elseif d.npos == 0 and d.body and not d.query then
      -- send_message and the other POSTs of a body only: fields, opts
      local schema, decode = d.body, d.decode
      Client[name] = function(self, fields, opts)
        if getmetatable(self) ~= Client then check_client(self, name) end
        if type(fields) ~= "table" then
          error(("leadconnector: %s expects a table of fields, got %s"):format(name, type(fields)), 2)
        end
        local copts, err
        if opts ~= nil then
          copts, err = call_options(opts)
          if err then return finish_error(err, method, template, 0) end
        end
        local body
        body, err = build(schema, fields, copts and copts.allow_unknown)
        if not body then return finish_error(err, method, template, 0) end
        return self:_call(decode, method, template, body, copts)
      end
    elseif d.npos == 1 and d.npath == 1 and not d.query and not d.body then
      -- get_message, get_conversation, the DELETEs: id, opts
      local decode, prefix, suffix, pname = d.decode, pieces[1], pieces[2], names[1]
      Client[name] = function(self, id, opts)
        if getmetatable(self) ~= Client then check_client(self, name) end
        local copts, err
        if opts ~= nil then
          copts, err = call_options(opts)
          if err then return finish_error(err, method, template, 0) end
        end
        local path
        path, err = path_id(id, pname, prefix, suffix)
        if not path then return finish_error(err, method, template, 0) end
        return self:_call(decode, method, path, nil, copts)
      end
    elseif d.npos == 1 and d.npath == 1 and d.body and not d.query then
      -- update_message_status and the other PUTs: id, fields, opts
      local schema, decode, prefix, suffix, pname = d.body, d.decode, pieces[1], pieces[2], names[1]
      Client[name] = function(self, id, fields, opts)
        if getmetatable(self) ~= Client then check_client(self, name) end
        if type(fields) ~= "table" then
          error(("leadconnector: %s expects a table of fields, got %s"):format(name, type(fields)), 2)
        end
        local copts, err
        if opts ~= nil then
          copts, err = call_options(opts)
          if err then return finish_error(err, method, template, 0) end
        end
        local path, body
        path, err = path_id(id, pname, prefix, suffix)
        if not path then return finish_error(err, method, template, 0) end
        body, err = build(schema, fields, copts and copts.allow_unknown)
        if not body then return finish_error(err, method, template, 0) end
        return self:_call(decode, method, path, body, copts)
      end
    else
      -- everything else, through the general preparation
      Client[name] = function(self, x1, x2, x3, x4)
        if getmetatable(self) ~= Client then check_client(self, name) end
        local decode, m, path, body, copts = prep(d, false, x1, x2, x3, x4)
        if not decode then return finish_error(m, method, template, 0) end
        return self:_call(decode, m, path, body, copts)
      end
    end
  end

  --------------------------------------------------------------------------------------------------------------
  -- Paging. Each iterator asks for one page at a time, lazily, and stops at the end; a failure is handed to the
  -- loop once (`for item, err in ...`: item is false, err the error object) and then the loop ends.

  local function copy(t)
    local c = {}
    if t ~= nil then
      if type(t) ~= "table" then return nil end
      for k, v in pairs(t) do c[k] = v end
    end
    return c
  end

  -- iterate(fetch, items_key, next_query): fetch(q) -> page | nil, err; next_query(page, q, seen) -> true to go on
  local function iterate(fetch, items_key, q, next_query)
    local page, list, i, n, done, seen = nil, nil, 0, 0, false, 0
    return function()
      while true do
        if done then return nil end
        if list and i < n then
          i = i + 1
          seen = seen + 1
          return list[i]
        end
        if page and not next_query(page, q, seen, n) then
          done = true
          return nil
        end
        local p, err = fetch(q)
        if not p then
          done = true
          return false, err
        end
        page, list, i = p, p[items_key] or {}, 0
        n = #list
        if n == 0 then
          done = true
          return nil
        end
      end
    end
  end

  local function iter_check(self, name, query, what)
    check_client(self, name)
    if query ~= nil and type(query) ~= "table" then
      error(("leadconnector: %s expects a table of query parameters, got %s"):format(name, what or type(query)), 3)
    end
  end

  for _, it in ipairs(catalogue.iterators) do
    local d = by_name[it.op] or error("leadconnector: iterator over unknown operation " .. tostring(it.op))
    local items, cursor, param = it.items, it.cursor, it.param or it.cursor
    if it.more then
      -- each_message(conversationId [, query [, opts]]): follows lastMessageId while nextPage is true
      Client[it.name] = function(self, id, query, opts)
        iter_check(self, it.name, query)
        local q = copy(query)
        return iterate(function(qq) return self[it.op](self, id, qq, opts) end, items, q,
          function(page, qq)
            local c = page[cursor]
            if page[it.more] ~= true or c == nil or c == qq[param] then return false end
            qq[param] = c
            return true
          end)
      end
    elseif it.from then
      -- each_conversation(query [, opts]): the last result's sort value goes as startAfterDate; stops at a short
      -- or empty page, or once `total` results were seen
      Client[it.name] = function(self, query, opts)
        iter_check(self, it.name, query)
        local q = copy(query)
        local limit = type(q.limit) == "number" and q.limit or 20
        return iterate(function(qq) return self[it.op](self, qq, opts) end, items, q,
          function(page, qq, seen, n)
            if n < limit then return false end
            local total = page[it.total]
            if type(total) == "number" and seen >= total then return false end
            local last = page[items][n]
            local v = last and last[it.from]
            if type(v) == "table" and #v == 1 then v = v[1] end
            if v == nil or v == qq[param] then return false end -- no sort value, or the same again: the end
            qq[param] = v
            return true
          end)
      end
    else
      -- each_exported_message(query [, opts]): follows nextCursor until it is null
      Client[it.name] = function(self, query, opts)
        iter_check(self, it.name, query)
        local q = copy(query)
        return iterate(function(qq) return self[it.op](self, qq, opts) end, items, q,
          function(page, qq)
            local c = page[cursor]
            if type(c) ~= "string" or c == "" or c == qq[param] then return false end
            qq[param] = c
            return true
          end)
      end
    end
  end

  --------------------------------------------------------------------------------------------------------------
  -- The batch: an entry { name, args... } is prepared by the same declaration as the method.
  local function prepare(call)
    local name = call[1]
    local d = by_name[name]
    if not d then
      error(("leadconnector: batch entries are { method_name, args... }; unknown method %s"):format(tostring(name)), 4)
    end
    if not d.batch then error(("leadconnector: %s cannot go in a batch (uploads and iterators cannot)"):format(name), 4) end
    local decode, method, path, body, copts = prep(d, true, call[2], call[3], call[4], call[5])
    if not decode then
      local err = method
      err.method, err.path, err.attempts = d.method, d.template, 0
      return nil, err
    end
    return decode, method, path, body, copts
  end

  return prepare, by_name
end

return M
