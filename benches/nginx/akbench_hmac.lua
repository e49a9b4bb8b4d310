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
-- Debian bookworm ships no lua-resty-string (resty.sha256 / resty.hmac), so SHA-256 and HMAC come
-- from OpenSSL's libcrypto through LuaJIT's FFI, which is what those libraries do themselves.

local ffi = require "ffi"
local C = ffi.C

local M = {}

local function cdef(decl)
    -- Another module may have declared it already; that declaration is as good.
    pcall(ffi.cdef, decl)
end

cdef [[ typedef struct evp_md_st EVP_MD; ]]
cdef [[ const EVP_MD *EVP_sha256(void); ]]
cdef [[ unsigned char *HMAC(const EVP_MD *evp_md, const void *key, int key_len,
                            const unsigned char *d, size_t n, unsigned char *md,
                            unsigned int *md_len); ]]
cdef [[ unsigned char *SHA256(const unsigned char *d, size_t n, unsigned char *md); ]]
cdef [[ unsigned char *ngx_hex_dump(unsigned char *dst, const unsigned char *src, size_t len); ]]

-- nginx is linked with libcrypto, so its symbols are usually global already.
local crypto = C
if not pcall(function() return C.EVP_sha256 end) then
    crypto = ffi.load("libcrypto.so.3")
end
local EVP_SHA256 = crypto.EVP_sha256()

local digest = ffi.new("unsigned char[32]")
local digest_len = ffi.new("unsigned int[1]")
local hex = ffi.new("unsigned char[64]")

local function hex32()
    C.ngx_hex_dump(hex, digest, 32)
    return ffi.string(hex, 64)
end

local function sha256_hex(s)
    crypto.SHA256(s, #s, digest)
    return hex32()
end

local function hmac_sha256_hex(key, s)
    crypto.HMAC(EVP_SHA256, key, #key, s, #s, digest, digest_len)
    return hex32()
end

local secrets = {}
local skew = 900

-- `id secret` lines, written by `loadgen rules --lua-secrets`. Loaded in the master before the
-- workers fork, so they share one copy.
function M.init(path)
    local n = 0
    for line in io.lines(path) do
        local id, secret = line:match("^(%S+) (%S+)$")
        if id then
            secrets[id] = secret
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
    local secret = secrets[id]
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
