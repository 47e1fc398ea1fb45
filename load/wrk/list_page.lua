-- GET /users?limit=PAGE_LIMIT&after=<AFTER_ID>: the same page each time (first page when AFTER_ID=0)
local path = "/users?limit=" .. (os.getenv("PAGE_LIMIT") or "100") .. "&after=" .. (os.getenv("AFTER_ID") or "0")
request = function()
  return wrk.format("GET", path)
end
dofile(os.getenv("WRK_REPORT_LUA"))
