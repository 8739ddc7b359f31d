"""Drive the official i'mport Python client (PyPI: iamport-rest-client), unmodified, against a sandbox.

Usage: python3 official_python_client.py http://127.0.0.1:PORT/
Run by tests/sandbox/official_client.rs; prints "official client OK" when every step behaved.
Uses the sandbox's default credentials and documented test cards.
"""
import sys

from iamport import Iamport

base = sys.argv[1]
client = Iamport(imp_key="imp_sandbox_key", imp_secret="imp_sandbox_secret", imp_url=base)

key = client.customer_create(customer_uid="py_cust", card_number="4242-4242-4242-4242",
                             expiry="2099-12", birth="900101", pwd_2digit="12")
assert key["customer_uid"] == "py_cust" and key["card_number"] == "424242******4242", key
assert client.customer_get("py_cust")["customer_uid"] == "py_cust"

paid = client.pay_again(customer_uid="py_cust", merchant_uid="py_order_1", amount=9900, name="Monthly plan")
assert paid["status"] == "paid", paid
assert client.find(imp_uid=paid["imp_uid"])["merchant_uid"] == "py_order_1"
assert client.find(merchant_uid="py_order_1")["imp_uid"] == paid["imp_uid"]
assert client.is_paid(9900, merchant_uid="py_order_1")

try:
    client.pay_again(customer_uid="py_cust", merchant_uid="py_order_1", amount=9900, name="Monthly plan")
    raise AssertionError("a paid merchant_uid was charged twice")
except Iamport.ResponseError as e:
    assert e.code == 1, (e.code, e.message)

try:
    client.pay_again(customer_uid="py_nobody", merchant_uid="py_order_2", amount=9900, name="Monthly plan")
    raise AssertionError("an unknown customer was charged")
except Iamport.ResponseError as e:
    assert e.code == -1 and "등록되지 않은 구매자입니다." in e.message, (e.code, e.message)

declined = client.pay_onetime(merchant_uid="py_order_3", amount=1000, card_number="4000-0000-0000-9995",
                              expiry="2099-12", birth="900101", pwd_2digit="12")
assert declined["status"] == "failed" and "잔액부족" in declined["fail_reason"], declined

cancelled = client.cancel("changed my mind", imp_uid=paid["imp_uid"])
assert cancelled["status"] == "cancelled" and cancelled["cancel_amount"] == 9900, cancelled
try:
    client.cancel("again", imp_uid="imp_000000000000")
    raise AssertionError("cancelled a payment that does not exist")
except Iamport.ResponseError as e:
    assert e.code == 1, (e.code, e.message)

try:
    client.find(imp_uid="imp_000000000000")
    raise AssertionError("found a payment that does not exist")
except Iamport.HttpError as e:
    assert e.code == 404, e.code

assert client.customer_delete("py_cust")["customer_uid"] == "py_cust"
print("official client OK")
