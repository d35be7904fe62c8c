"""Tests that die: run one at a time by tests/faults/test_plugin_faults.py, never in a normal run."""

import os
import signal


def test_killed_mid_transaction(provision_tx):
    with provision_tx.conn.cursor() as cur:
        cur.execute("INSERT INTO app_users (email) VALUES ('never-committed@example.com')")
    provision_tx.conn.commit()  # a savepoint only
    os.kill(os.getpid(), signal.SIGKILL)


def test_worker_crashes_holding_a_copy(provision_db):
    with provision_db.conn.cursor() as cur:
        cur.execute("INSERT INTO app_users (email) VALUES ('crashed-worker@example.com')")
    provision_db.conn.commit()
    os._exit(3)


def test_sees_nothing_from_the_dead(provision_tx, provision_db):
    for conn in (provision_tx.conn, provision_db.conn):
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM app_users")
            assert cur.fetchone()[0] == 0


def test_ends_with_a_prepared_transaction(provision_db):
    with provision_db.conn.cursor() as cur:
        cur.execute("INSERT INTO app_users (email) VALUES ('prepared@example.com')")
        cur.execute("PREPARE TRANSACTION 'provision-sample-ended'")


def test_killed_holding_a_prepared_transaction(provision_db):
    with provision_db.conn.cursor() as cur:
        cur.execute("INSERT INTO app_users (email) VALUES ('prepared-killed@example.com')")
        cur.execute("PREPARE TRANSACTION 'provision-sample-killed'")
    os.kill(os.getpid(), signal.SIGKILL)
