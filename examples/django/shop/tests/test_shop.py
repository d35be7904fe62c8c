"""The shop's tests: plain pytest-django tests, the same under provision and under pytest-django alone."""

from decimal import Decimal

import pytest
from django.db import IntegrityError, transaction
from django.db.models import Sum

from shop.models import Customer, Order

pytestmark = pytest.mark.django_db


def test_a_customer_is_saved():
    Customer.objects.create(name="Ada", email="ada@example.com")
    assert Customer.objects.get(email="ada@example.com").name == "Ada"


def test_emails_are_unique():
    Customer.objects.create(name="Ada", email="ada@example.com")
    with pytest.raises(IntegrityError), transaction.atomic():
        Customer.objects.create(name="Another Ada", email="ada@example.com")


def test_order_totals_add_up():
    ada = Customer.objects.create(name="Ada", email="ada@example.com")
    for total in ("10.50", "4.25"):
        Order.objects.create(customer=ada, total=Decimal(total))
    assert ada.orders.aggregate(sum=Sum("total"))["sum"] == Decimal("14.75")


def test_deleting_a_customer_deletes_their_orders():
    ada = Customer.objects.create(name="Ada", email="ada@example.com")
    Order.objects.create(customer=ada, total=Decimal("1.00"))
    ada.delete()
    assert Order.objects.count() == 0


def test_customers_are_not_vip_by_default():
    assert Customer.objects.create(name="Ada", email="ada@example.com").vip is False


@pytest.mark.parametrize("i", range(3))
def test_each_test_starts_empty(i):
    assert Customer.objects.count() == 0, "another test's rows are visible"
    Customer.objects.create(name=f"c{i}", email=f"c{i}@example.com")
