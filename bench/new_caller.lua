-- wrk: a new caller on every request. Each request has a connection of its own
-- (Connection: close), which keys the caller when its address is a claim: the
-- X-Forwarded-For address of its own, which Envoy takes as the stream's address by default
-- (use_remote_address: false) and meshaudit records as `source.forwarded_for`. So the
-- per-caller and suppression tables see a new key every time.
local n = 0

request = function()
  n = n + 1
  local address = string.format("10.%d.%d.%d", math.floor(n / 65536) % 256, math.floor(n / 256) % 256, n % 256)
  return wrk.format(nil, nil, { ["Connection"] = "close", ["X-Forwarded-For"] = address })
end
