-- The realistic read mix: ~90% GET /users/<id> for ids drawn at random from USER_IDS_FILE
-- (one existing id a line, so a 404 counts as an error), ~10% GET /users?limit=PAGE_LIMIT (first page).
-- LIST_PERCENT (default 10) sets the share of list requests.
local ids = {}
for line in io.lines(os.getenv("USER_IDS_FILE")) do
  ids[#ids + 1] = line
end
local list_percent = tonumber(os.getenv("LIST_PERCENT") or "10")
local list_path = "/users?limit=" .. (os.getenv("PAGE_LIMIT") or "100")
math.randomseed(os.time())
request = function()
  if math.random(1, 100) <= list_percent then
    return wrk.format("GET", list_path)
  end
  return wrk.format("GET", "/users/" .. ids[math.random(1, #ids)])
end
dofile(os.getenv("WRK_REPORT_LUA"))
