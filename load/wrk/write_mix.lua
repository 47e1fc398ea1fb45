-- A write mix: ~70% GET /users/<id>, ~20% PATCH /users/<id> (a new full_name), ~10% POST /users
-- (a new username each time), ids drawn at random from USER_IDS_FILE. A 409 or 404 counts as an error.
local ids = {}
for line in io.lines(os.getenv("USER_IDS_FILE")) do
  ids[#ids + 1] = line
end
local created = 0
local prefix
setup = function(thread)
  thread:set("thread_prefix", string.format("w%d%d", os.time() % 100000, math.random(1, 999999)))
end
init = function(args)
  prefix = thread_prefix
  math.randomseed(os.time() + math.random(1, 1000000))
end
-- wrk.format uses the headers it is given instead of wrk.headers (where the token is): merge them.
local function with_body_type(content_type)
  local headers = {["Content-Type"] = content_type}
  for name, value in pairs(wrk.headers) do
    headers[name] = value
  end
  return headers
end
request = function()
  local roll = math.random(1, 100)
  local id = ids[math.random(1, #ids)]
  if roll <= 70 then
    return wrk.format("GET", "/users/" .. id)
  elseif roll <= 90 then
    local body = string.format('{"full_name": "Load %d"}', math.random(1, 1000000))
    return wrk.format("PATCH", "/users/" .. id, with_body_type("application/merge-patch+json"), body)
  end
  created = created + 1
  local body = string.format('{"username": "%s-%d"}', prefix, created)
  return wrk.format("POST", "/users", with_body_type("application/json"), body)
end
dofile(os.getenv("WRK_REPORT_LUA"))
