-- wrk script: POST /subscribe/payments/again with a distinct merchant_uid per request.
-- Needs TOKEN and CUSTOMER_UID in the environment (see BENCHMARKS.md for the full command).
-- Check afterwards with GET /__sandbox/payments that every attempt is "paid".
local token = os.getenv("TOKEN")
local customer = os.getenv("CUSTOMER_UID") or "bench_customer"
local run = os.getenv("RUN_ID") or tostring(os.time())
local counter = 0
local next_thread = 0 -- setup() runs in the main state; thread_id becomes a global in each thread

function setup(thread)
  next_thread = next_thread + 1
  thread:set("thread_id", next_thread)
end

function request()
  counter = counter + 1
  local body = string.format(
    '{"customer_uid":"%s","merchant_uid":"wrk%s_%d_%d","amount":9900,"name":"wrk"}',
    customer, run, thread_id, counter)
  return wrk.format("POST", "/subscribe/payments/again",
    { ["Content-Type"] = "application/json", ["Authorization"] = "Bearer " .. token }, body)
end

function done(summary, latency, requests)
  io.write(string.format("requests: %d, errors: %d\n", summary.requests,
    summary.errors.status + summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
end
