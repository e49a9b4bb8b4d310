-- ACS3-HMAC-SHA256 verification in nginx's Lua module: scenario (d) of benches/e2e.sh, the
-- OpenResty-style check that Kong's and APISIX's HMAC plugins are built on.
--
-- It does the work a real check must do: parse Authorization, look the secret up by key id,
-- require the signed headers, check the date window, hash the body and compare it with
-- x-acs-content-sha256, rebuild the canonical request (method, path, sorted and encoded query,
-- signed headers, payload hash), SHA-256 it, HMAC-SHA256 the string to sign, compare, and only
-- then record the nonce (a repeat is refused). What it does not do, and akgate does: source-IP
-- allowlists, the leaked-key and high-risk-action check, routing by service, the other schemes.
--
-- Debian bookworm ships no lua-resty-string (resty.sha256 / resty.hmac), so SHA-256 comes from
-- OpenSSL's libcrypto through LuaJIT's FFI, as resty.sha256 does it, and HMAC is built on it.

local ffi = require "ffi"
local C = ffi.C

local M = {}

local function cdef(decl)
    -- Another module may have declared it already; that declaration is as good.
    pcall(ffi.cdef, decl)
end

-- The low-level SHA-256 calls, as lua-resty-string's resty.sha256 declares them. OpenSSL 3's
-- one-shot SHA256() and HMAC() look their algorithm up in the provider store on every call, which
-- cost ~40 µs a request here; resty.sha256 avoids that the same way.
cdef [[
typedef struct SHA256state_st {
    unsigned int h[8];
    unsigned int Nl, Nh;
    unsigned int data[16];
    unsigned int num, md_len;
} SHA256_CTX;
int SHA256_Init(SHA256_CTX *c);
int SHA256_Update(SHA256_CTX *c, const void *data, size_t len);
int SHA256_Final(unsigned char *md, SHA256_CTX *c);
]]
cdef [[ unsigned char *ngx_hex_dump(unsigned char *dst, const unsigned char *src, size_t len); ]]

-- nginx is linked with libcrypto, so its symbols are usually global already.
local crypto = C
if not pcall(function() return C.SHA256_Init end) then
    crypto = ffi.load("libcrypto.so.3")
end

local bxor = bit.bxor
local ctx = ffi.new("SHA256_CTX")
local digest = ffi.new("unsigned char[32]")
local inner = ffi.new("unsigned char[32]")
local pad = ffi.new("unsigned char[64]")
local hex = ffi.new("unsigned char[64]")

local function hex32()
    C.ngx_hex_dump(hex, digest, 32)
    return ffi.string(hex, 64)
end

local function sha256_hex(s)
    crypto.SHA256_Init(ctx)
    crypto.SHA256_Update(ctx, s, #s)
    crypto.SHA256_Final(digest, ctx)
    return hex32()
end

-- HMAC-SHA256 (RFC 2104) over the SHA-256 above.
local function hmac_sha256_hex(key, msg)
    if #key > 64 then
        crypto.SHA256_Init(ctx)
        crypto.SHA256_Update(ctx, key, #key)
        crypto.SHA256_Final(digest, ctx)
        key = ffi.string(digest, 32)
    end
    local n = #key
    ffi.fill(pad, 64, 0x36)
    for i = 0, n - 1 do
        pad[i] = bxor(key:byte(i + 1), 0x36)
    end
    crypto.SHA256_Init(ctx)
    crypto.SHA256_Update(ctx, pad, 64)
    crypto.SHA256_Update(ctx, msg, #msg)
    crypto.SHA256_Final(inner, ctx)
    ffi.fill(pad, 64, 0x5c)
    for i = 0, n - 1 do
        pad[i] = bxor(key:byte(i + 1), 0x5c)
    end
    crypto.SHA256_Init(ctx)
    crypto.SHA256_Update(ctx, pad, 64)
    crypto.SHA256_Update(ctx, inner, 32)
    crypto.SHA256_Final(digest, ctx)
    return hex32()
end

local skew = 900

-- `id secret` lines, written by `loadgen rules --lua-secrets`, into a shared dictionary: off the
-- Lua heap, as OpenResty advises for large data (and as Kong's second-level cache is). A Lua
-- table of 100k secrets would be traversed by every garbage collection cycle: measured here, it
-- cut throughput to a third.
function M.init(path)
    local dict = ngx.shared.akbench_secrets
    local n = 0
    for line in io.lines(path) do
        local id, secret = line:match("^(%S+) (%S+)$")
        if id then
            local ok, err = dict:safe_set(id, secret)
            if not ok then
                error("akbench_secrets: " .. tostring(err) .. " after " .. n .. " keys; enlarge it")
            end
            n = n + 1
        end
    end
    ngx.log(ngx.NOTICE, "akbench_hmac: ", n, " keys")
end

local function deny(status, code)
    ngx.status = status
    ngx.header["Content-Type"] = "application/json;charset=utf-8"
    ngx.say('{"Code":"', code, '"}')
    return ngx.exit(status)
end

-- RFC 3986 unreserved characters stay; everything else is %XX (upper-case hex).
local function pct(c)
    return string.format("%%%02X", string.byte(c))
end
local function encode(s)
    if not s:find("[^%w%-%._~]") then
        return s
    end
    return (s:gsub("[^%w%-%._~]", pct))
end

local function form_decode(s)
    if s:find("+", 1, true) then
        s = s:gsub("+", " ")
    end
    if s:find("%", 1, true) then
        s = ngx.unescape_uri(s)
    end
    return s
end

local function canonical_query(args)
    if not args or args == "" then
        return ""
    end
    local pairs_ = {}
    for pair in args:gmatch("[^&]+") do
        local k, v = pair:match("^([^=]*)=?(.*)$")
        pairs_[#pairs_ + 1] = encode(form_decode(k)) .. "=" .. encode(form_decode(v))
    end
    table.sort(pairs_)
    return table.concat(pairs_, "&")
end

local function canonical_uri(path)
    if path == "" or path == "/" then
        return "/"
    end
    if not path:find("[^%w%-%._~/]") then
        return path
    end
    local out = {}
    for seg in (path .. "/"):gmatch("([^/]*)/") do
        out[#out + 1] = encode(ngx.unescape_uri(seg))
    end
    return table.concat(out, "/")
end

local function trim(s)
    return (s:gsub("^[ \t]+", ""):gsub("[ \t]+$", ""))
end

local REQUIRED = { "host", "x-acs-action", "x-acs-content-sha256", "x-acs-date",
    "x-acs-signature-nonce", "x-acs-version" }

-- yyyy-MM-ddTHH:mm:ssZ to Unix seconds (days-from-civil, as akgate does).
local function parse_date(s)
    local y, mo, d, h, mi, se = s:match("^(%d%d%d%d)%-(%d%d)%-(%d%d)T(%d%d):(%d%d):(%d%d)Z$")
    if not y then
        return nil
    end
    y, mo, d = tonumber(y), tonumber(mo), tonumber(d)
    if mo <= 2 then
        y = y - 1
    end
    local era = math.floor(y / 400)
    local yoe = y - era * 400
    local mp = (mo + 9) % 12
    local doy = math.floor((153 * mp + 2) / 5) + d - 1
    local doe = yoe * 365 + math.floor(yoe / 4) - math.floor(yoe / 100) + doy
    local days = era * 146097 + doe - 719468
    return days * 86400 + tonumber(h) * 3600 + tonumber(mi) * 60 + tonumber(se)
end

function M.check()
    local auth = ngx.var.http_authorization
    if not auth then
        return deny(400, "MissingAccessKeyId")
    end
    local id, signed, signature = auth:match(
        "^ACS3%-HMAC%-SHA256 Credential=([^,]+),SignedHeaders=([^,]+),Signature=(%x+)$")
    if not id then
        return deny(400, "IncompleteSignature")
    end
    local secret = ngx.shared.akbench_secrets:get(id)
    if not secret then
        return deny(404, "InvalidAccessKeyId.NotFound")
    end
    local list = ";" .. signed .. ";"
    for _, h in ipairs(REQUIRED) do
        if not list:find(";" .. h .. ";", 1, true) then
            return deny(400, "IncompleteSignature")
        end
    end

    local headers = ngx.req.get_headers(100)
    local date = headers["x-acs-date"]
    local t = type(date) == "string" and parse_date(date)
    if not t then
        return deny(400, "InvalidTimeStamp.Format")
    end
    if math.abs(ngx.time() - t) > skew then
        return deny(400, "InvalidTimeStamp.Expired")
    end

    ngx.req.read_body()
    local body = ngx.req.get_body_data() or ""
    local payload = sha256_hex(body)
    local claimed = headers["x-acs-content-sha256"]
    if type(claimed) ~= "string" or claimed:lower() ~= payload then
        return deny(400, "InvalidContentSha256")
    end

    local request_uri = ngx.var.request_uri
    local q = request_uri:find("?", 1, true)
    local path = q and request_uri:sub(1, q - 1) or request_uri
    local parts = {
        ngx.req.get_method(), "\n",
        canonical_uri(path), "\n",
        canonical_query(ngx.var.args), "\n",
    }
    for name in signed:gmatch("[^;]+") do
        local v = headers[name]
        if type(v) == "table" then
            local vs = {}
            for i, x in ipairs(v) do
                vs[i] = trim(x)
            end
            table.sort(vs)
            v = table.concat(vs, ",")
        elseif v then
            v = trim(v)
        else
            v = ""
        end
        parts[#parts + 1] = name
        parts[#parts + 1] = ":"
        parts[#parts + 1] = v
        parts[#parts + 1] = "\n"
    end
    parts[#parts + 1] = "\n"
    parts[#parts + 1] = signed
    parts[#parts + 1] = "\n"
    parts[#parts + 1] = payload
    local string_to_sign = "ACS3-HMAC-SHA256\n" .. sha256_hex(table.concat(parts))
    if hmac_sha256_hex(secret, string_to_sign) ~= signature:lower() then
        return deny(400, "SignatureDoesNotMatch")
    end

    local nonce = headers["x-acs-signature-nonce"]
    if type(nonce) ~= "string" then
        return deny(400, "IncompleteSignature")
    end
    local ok, err = ngx.shared.akbench_nonces:add(id .. "\0" .. nonce, true, 2 * skew)
    if not ok then
        if err == "exists" then
            return deny(400, "SignatureNonceUsed")
        end
        -- A full dictionary evicts the oldest entries (`add` still succeeds); anything else fails closed.
        return deny(503, "ServiceUnavailable")
    end

    ngx.req.clear_header("Authorization")
end

return M
