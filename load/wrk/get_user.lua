-- GET /users/<id>, ids drawn at random from the file USER_IDS_FILE (one existing id a line),
-- so a 404 counts as an error rather than as a gap in the id sequence.
local ids = {}
for line in io.lines(os.getenv("USER_IDS_FILE")) do
  ids[#ids + 1] = line
end
math.randomseed(os.time())
request = function()
  return wrk.format("GET", "/users/" .. ids[math.random(1, #ids)])
end
dofile(os.getenv("WRK_REPORT_LUA"))
