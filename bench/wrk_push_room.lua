-- wrk script: goim's room push, as goim's own push tools send it.
--   wrk -t2 -c64 -d10s -s bench/wrk_push_room.lua http://127.0.0.1:3111
wrk.method = "POST"
wrk.path = "/goim/push/room?operation=1000&type=test&room=1"
wrk.body = '{"test":1}'
wrk.headers["Content-Type"] = "application/json"
