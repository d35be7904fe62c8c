"""provision.builds.schema's compare() and render() on hand-built schemas (no database)."""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

import pytest

from provision.builds.schema import Difference, Schema, _unnamed_index, compare, render

FK_DEF = "FOREIGN KEY (user_id) REFERENCES public.app_users(id) ON DELETE CASCADE"
FUNCTION_DEF = (
    "CREATE OR REPLACE FUNCTION public.touch_updated_at()\n RETURNS trigger\n LANGUAGE plpgsql\n"
    "AS $function$BEGIN NEW.updated_at := now(); RETURN NEW; END$function$\n"
)


def column(table: str, position: int, type_: str, not_null: bool = False, default: str | None = None) -> dict[str, Any]:
    return {
        "table": table,
        "position": position,
        "type": type_,
        "not_null": not_null,
        "default": default,
        "identity": None,
        "generated": None,
        "collation": None,
        "comment": None,
    }


def table(comment: str | None = None, kind: str = "table") -> dict[str, Any]:
    return {
        "schema": "public",
        "kind": kind,
        "unlogged": False,
        "options": None,
        "row_security": False,
        "force_row_security": False,
        "partition_key": None,
        "partition_bound": None,
        "inherits": None,
        "comment": comment,
    }


def constraint(table: str, type_: str, definition: str, on_delete: str | None = None) -> dict[str, Any]:
    foreign = type_ == "FOREIGN KEY"
    return {
        "table": table,
        "type": type_,
        "definition": definition,
        "on_delete": on_delete if foreign else None,
        "on_update": "NO ACTION" if foreign else None,
        "comment": None,
    }


def index(table: str, definition: str) -> dict[str, Any]:
    return {"table": table, "definition": definition, "valid": True, "comment": None}


def base() -> Schema:
    """Two tables, a FK between them, plain indexes, an owned sequence, a view, a function and trigger."""
    users, sessions = "public.app_users", "public.user_sessions"
    return {
        "schemas": {"public": {"comment": "standard public schema"}},
        "extensions": {"plpgsql": {"schema": "pg_catalog", "version": "1.0"}},
        "types": {
            "public.mood": {"schema": "public", "kind": "enum", "labels": ["happy", "sad"], "comment": None},
        },
        "tables": {users: table("ChatBI user accounts"), sessions: table()},
        "columns": {
            f"{users}.id": column(users, 1, "uuid", True, "gen_random_uuid()"),
            f"{users}.email": column(users, 2, "text", True),
            f"{users}.created_at": column(users, 3, "timestamp with time zone", True, "now()"),
            f"{users}.serial_no": column(
                users, 4, "integer", True, "nextval('public.app_users_serial_no_seq'::regclass)"
            ),
            f"{sessions}.id": column(sessions, 1, "uuid", True, "gen_random_uuid()"),
            f"{sessions}.user_id": column(sessions, 2, "uuid", True),
            f"{sessions}.expires_at": column(sessions, 3, "timestamp with time zone", True),
        },
        "constraints": {
            f"{users}.app_users_pkey": constraint(users, "PRIMARY KEY", "PRIMARY KEY (id)"),
            f"{sessions}.user_sessions_pkey": constraint(sessions, "PRIMARY KEY", "PRIMARY KEY (id)"),
            f"{sessions}.user_sessions_user_id_fkey": constraint(sessions, "FOREIGN KEY", FK_DEF, "CASCADE"),
        },
        "indexes": {
            f"{users}.app_users_email_lower_key": index(
                users, "CREATE UNIQUE INDEX ON public.app_users USING btree (lower(email))"
            ),
            f"{sessions}.user_sessions_expires_at_idx": index(
                sessions, "CREATE INDEX ON public.user_sessions USING btree (expires_at)"
            ),
        },
        "sequences": {
            "public.app_users_serial_no_seq": {
                "schema": "public",
                "type": "integer",
                "start": 1,
                "increment": 1,
                "min": 1,
                "max": 2147483647,
                "cache": 1,
                "cycle": False,
                "owned_by": f"{users}.serial_no",
                "comment": None,
            }
        },
        "views": {
            "public.active_users": {
                "schema": "public",
                "kind": "view",
                "definition": " SELECT id, email FROM public.app_users;",
                "options": None,
                "comment": None,
            }
        },
        "functions": {
            "public.touch_updated_at()": {
                "schema": "public",
                "kind": "function",
                "definition": FUNCTION_DEF,
                "comment": None,
            }
        },
        "triggers": {
            f"{users}.app_users_touch": {
                "table": users,
                "definition": "CREATE TRIGGER app_users_touch BEFORE UPDATE ON public.app_users "
                "FOR EACH ROW EXECUTE FUNCTION public.touch_updated_at()",
                "enabled": "enabled",
                "comment": None,
            }
        },
    }


def reversed_order(schema: Schema) -> Schema:
    """The same schema with every dict's keys inserted in reverse order."""
    return {
        kind: {name: dict(reversed(list(record.items()))) for name, record in reversed(list(objects.items()))}
        for kind, objects in reversed(list(schema.items()))
    }


def test_identical_schemas_have_no_differences() -> None:
    assert compare(base(), base()) == []
    assert compare(base(), base(), column_order=True) == []
    assert compare({}, {}) == []


def test_insertion_order_of_keys_never_matters() -> None:
    left = base()
    right = reversed_order(base())
    assert list(right["tables"]) != list(left["tables"])  # the copy really is in another order
    assert compare(left, right) == []
    assert compare(left, right, column_order=True) == []
    right["columns"]["public.app_users.email"]["type"] = "character varying(255)"
    changed = base()
    changed["columns"]["public.app_users.email"]["type"] = "character varying(255)"
    assert compare(left, right) == compare(left, changed) == compare(reversed_order(left), changed)


def test_column_type() -> None:
    right = base()
    right["columns"]["public.app_users.email"]["type"] = "character varying(255)"
    assert compare(base(), right) == [
        Difference(
            "column",
            "public.app_users.email",
            "type: text vs character varying(255)",
            "text",
            "character varying(255)",
        )
    ]


def test_missing_index_names_the_side_it_is_on() -> None:
    right = base()
    del right["indexes"]["public.user_sessions.user_sessions_expires_at_idx"]
    definition = "CREATE INDEX ON public.user_sessions USING btree (expires_at)"
    assert compare(base(), right, left_name="the live database", right_name="a fresh build") == [
        Difference(
            "index",
            "public.user_sessions.user_sessions_expires_at_idx",
            "only in the live database",
            definition,
            None,
        )
    ]
    assert compare(right, base(), left_name="the live database", right_name="a fresh build") == [
        Difference(
            "index", "public.user_sessions.user_sessions_expires_at_idx", "only in a fresh build", None, definition
        )
    ]


def test_index_definition() -> None:
    right = base()
    right["indexes"]["public.user_sessions.user_sessions_expires_at_idx"]["definition"] = (
        "CREATE INDEX ON public.user_sessions USING brin (expires_at)"
    )
    (diff,) = compare(base(), right)
    assert (diff.kind, diff.name) == ("index", "public.user_sessions.user_sessions_expires_at_idx")
    assert diff.what.startswith("definition: ")
    assert "btree (expires_at)" in diff.what and "brin (expires_at)" in diff.what


def test_fk_on_delete_rule_is_named_on_its_own() -> None:
    right = base()
    fk = right["constraints"]["public.user_sessions.user_sessions_user_id_fkey"]
    fk["on_delete"] = "SET NULL"
    fk["definition"] = FK_DEF.replace("ON DELETE CASCADE", "ON DELETE SET NULL")
    assert compare(base(), right) == [
        Difference(
            "constraint",
            "public.user_sessions.user_sessions_user_id_fkey",
            "ON DELETE: CASCADE vs SET NULL",
            "CASCADE",
            "SET NULL",
        )
    ]


def test_fk_on_update_rule() -> None:
    right = base()
    fk = right["constraints"]["public.user_sessions.user_sessions_user_id_fkey"]
    fk["on_update"] = "CASCADE"
    fk["definition"] = FK_DEF.replace("ON DELETE CASCADE", "ON UPDATE CASCADE ON DELETE CASCADE")
    assert render(compare(base(), right)) == [
        "constraint public.user_sessions.user_sessions_user_id_fkey: ON UPDATE: NO ACTION vs CASCADE"
    ]


def test_fk_rule_and_other_change_are_both_reported() -> None:
    right = base()
    fk = right["constraints"]["public.user_sessions.user_sessions_user_id_fkey"]
    fk["on_delete"] = "RESTRICT"
    fk["definition"] = "FOREIGN KEY (user_id) REFERENCES public.app_users(id) ON DELETE RESTRICT DEFERRABLE"
    diffs = compare(base(), right)
    assert len(diffs) == 2
    assert diffs[0].what == "ON DELETE: CASCADE vs RESTRICT"
    assert diffs[1].what.startswith("definition: ") and "DEFERRABLE" in diffs[1].what
    assert (diffs[1].left, diffs[1].right) == (FK_DEF, fk["definition"])


def test_check_constraint_definition() -> None:
    left, right = base(), base()
    left["constraints"]["public.app_users.app_users_role_check"] = constraint(
        "public.app_users", "CHECK", "CHECK ((role = ANY (ARRAY['admin'::text, 'user'::text])))"
    )
    right["constraints"]["public.app_users.app_users_role_check"] = constraint(
        "public.app_users", "CHECK", "CHECK ((role = ANY (ARRAY['admin'::text, 'viewer'::text])))"
    )
    (diff,) = compare(left, right)
    assert diff.kind == "constraint" and diff.name == "public.app_users.app_users_role_check"
    assert "'user'::text" in diff.what and "'viewer'::text" in diff.what


def test_default_added_and_removed() -> None:
    right = base()
    right["columns"]["public.app_users.created_at"]["default"] = None
    right["columns"]["public.app_users.email"]["default"] = "''::text"
    assert compare(base(), right) == [
        Difference("column", "public.app_users.created_at", "default: now() vs none", "now()", None),
        Difference("column", "public.app_users.email", "default: none vs ''::text", None, "''::text"),
    ]


def test_not_null() -> None:
    right = base()
    right["columns"]["public.user_sessions.expires_at"]["not_null"] = False
    assert render(compare(base(), right)) == ["column public.user_sessions.expires_at: nullable: NOT NULL vs NULL"]
    assert compare(base(), right)[0].left == "NOT NULL"
    assert compare(base(), right)[0].right == "NULL"


def test_table_on_one_side_is_one_difference() -> None:
    """Its columns, constraints, indexes, triggers and owned sequence are not reported on their own."""
    right = base()
    for kind in ("columns", "constraints", "indexes", "triggers"):
        right[kind] = {name: rec for name, rec in right[kind].items() if rec["table"] != "public.app_users"}
    del right["tables"]["public.app_users"]
    del right["sequences"]["public.app_users_serial_no_seq"]
    # The FK to it went too, but it belongs to user_sessions, which is on both sides: it is reported.
    del right["constraints"]["public.user_sessions.user_sessions_user_id_fkey"]
    assert render(compare(base(), right, left_name="live", right_name="fresh")) == [
        "table public.app_users: only in live",
        "constraint public.user_sessions.user_sessions_user_id_fkey: only in live",
    ]
    assert render(compare(right, base(), left_name="live", right_name="fresh")) == [
        "table public.app_users: only in fresh",
        "constraint public.user_sessions.user_sessions_user_id_fkey: only in fresh",
    ]


def test_new_table_alone_is_exactly_one_difference() -> None:
    right = base()
    right["tables"]["public.audit_log"] = table()
    right["columns"]["public.audit_log.id"] = column("public.audit_log", 1, "bigint", True)
    right["constraints"]["public.audit_log.audit_log_pkey"] = constraint(
        "public.audit_log", "PRIMARY KEY", "PRIMARY KEY (id)"
    )
    right["indexes"]["public.audit_log.audit_log_at_idx"] = index("public.audit_log", "CREATE INDEX ...")
    assert compare(base(), right) == [Difference("table", "public.audit_log", "only in right", None, "table")]


def test_schema_on_one_side_is_one_difference() -> None:
    right = base()
    right["schemas"]["app"] = {"comment": None}
    right["tables"]["app.things"] = {**table(), "schema": "app"}
    right["columns"]["app.things.id"] = column("app.things", 1, "integer")
    right["types"]["app.mood"] = {"schema": "app", "kind": "enum", "labels": ["a"], "comment": None}
    right["functions"]["app.f()"] = {"schema": "app", "kind": "function", "definition": "...", "comment": None}
    assert render(compare(base(), right)) == ["schema app: only in right"]


def test_column_on_one_side_hides_its_owned_sequence() -> None:
    right = base()
    del right["columns"]["public.app_users.serial_no"]
    del right["sequences"]["public.app_users_serial_no_seq"]
    assert render(compare(base(), right)) == ["column public.app_users.serial_no: only in left"]
    # ... but a sequence missing while its column is there is reported.
    right = base()
    del right["sequences"]["public.app_users_serial_no_seq"]
    assert render(compare(base(), right)) == ["sequence public.app_users_serial_no_seq: only in left"]


def test_column_order_only_when_asked() -> None:
    right = base()
    right["columns"]["public.app_users.email"]["position"] = 3
    right["columns"]["public.app_users.created_at"]["position"] = 2
    assert compare(base(), right) == []
    assert compare(base(), right, column_order=True) == [
        Difference(
            "table",
            "public.app_users",
            "column order: id, email, created_at, serial_no vs id, created_at, email, serial_no",
            "id, email, created_at, serial_no",
            "id, created_at, email, serial_no",
        )
    ]


def test_column_order_ignores_columns_on_one_side_only() -> None:
    right = base()
    for name in ("email", "created_at", "serial_no"):
        right["columns"][f"public.app_users.{name}"]["position"] += 1
    right["columns"]["public.app_users.nickname"] = column("public.app_users", 2, "text")
    assert render(compare(base(), right, column_order=True)) == ["column public.app_users.nickname: only in right"]


def test_unique_index_and_unique_constraint_are_different_objects() -> None:
    left, right = base(), base()
    definition = "CREATE UNIQUE INDEX ON public.app_users USING btree (email)"
    left["indexes"]["public.app_users.app_users_email_key"] = index("public.app_users", definition)
    right["constraints"]["public.app_users.app_users_email_key"] = constraint(
        "public.app_users", "UNIQUE", "UNIQUE (email)"
    )
    assert compare(left, right) == [
        Difference("constraint", "public.app_users.app_users_email_key", "only in right", None, "UNIQUE (email)"),
        Difference("index", "public.app_users.app_users_email_key", "only in left", definition, None),
    ]


def test_comments_are_their_own_kind() -> None:
    right = base()
    right["tables"]["public.app_users"]["comment"] = None
    right["columns"]["public.app_users.email"]["comment"] = "it's the login"
    assert compare(base(), right) == [
        Difference(
            "comment", "public.app_users", "on table: 'ChatBI user accounts' vs none", "ChatBI user accounts", None
        ),
        Difference("comment", "public.app_users.email", "on column: none vs 'it''s the login'", None, "it's the login"),
    ]


def test_view_function_trigger_type_and_extension() -> None:
    right = base()
    right["views"]["public.active_users"]["definition"] = " SELECT id FROM public.app_users;"
    right["functions"]["public.touch_updated_at()"]["definition"] = FUNCTION_DEF.replace("now()", "clock_timestamp()")
    right["triggers"]["public.app_users.app_users_touch"]["enabled"] = "disabled"
    right["types"]["public.mood"]["labels"] = ["happy", "sad", "ok"]
    right["extensions"]["pg_trgm"] = {"schema": "public", "version": "1.6"}
    assert render(compare(base(), right)) == [
        "extension pg_trgm: only in right",
        "type public.mood: labels: happy, sad vs happy, sad, ok",
        "view public.active_users: definition: SELECT id, email FROM public.app_users; "
        "vs SELECT id FROM public.app_users;",
        "function public.touch_updated_at(): definition: ...$function$BEGIN NEW.updated_at := now(); RETURN NEW; "
        "END$function$ vs ...$function$BEGIN NEW.updated_at := clock_timestamp(); RETURN NEW; END$function$",
        "trigger public.app_users.app_users_touch: state: enabled vs disabled",
    ]


def test_long_definitions_keep_full_values_but_show_the_difference() -> None:
    right = base()
    changed = FUNCTION_DEF.replace("BEGIN", "BEGIN PERFORM 1;")
    right["functions"]["public.touch_updated_at()"]["definition"] = changed
    (diff,) = compare(base(), right)
    assert (diff.left, diff.right) == (FUNCTION_DEF, changed)
    assert "PERFORM 1;" in diff.what and "\n" not in diff.what
    assert len(diff.what) < len(FUNCTION_DEF) + len(changed)


def test_enum_label_order_matters_but_option_order_does_not() -> None:
    right = base()
    right["types"]["public.mood"]["labels"] = ["sad", "happy"]
    assert render(compare(base(), right)) == ["type public.mood: labels: happy, sad vs sad, happy"]
    left, right = base(), base()
    left["tables"]["public.app_users"]["options"] = ["fillfactor=70", "autovacuum_enabled=false"]
    right["tables"]["public.app_users"]["options"] = ["autovacuum_enabled=false", "fillfactor=70"]
    assert compare(left, right) == []


def test_ignored_attributes() -> None:
    """An extension's version, and anything a record holds that compare() does not know, are not compared."""
    right = base()
    right["extensions"]["plpgsql"]["version"] = "2.0"
    right["tables"]["public.app_users"]["oid"] = 12345
    assert compare(base(), right) == []
    right["extensions"]["plpgsql"]["schema"] = "public"
    assert render(compare(base(), right)) == ["extension plpgsql: schema: pg_catalog vs public"]


def test_a_changed_kind_is_reported_alone() -> None:
    right = base()
    right["views"]["public.active_users"]["kind"] = "materialized view"
    right["views"]["public.active_users"]["options"] = ["x=1"]
    assert render(compare(base(), right)) == ["view public.active_users: kind: view vs materialized view"]


def test_sequence_parameters_in_a_fixed_order() -> None:
    right = base()
    seq = right["sequences"]["public.app_users_serial_no_seq"]
    seq.update(cycle=True, increment=2, type="bigint")
    assert render(compare(base(), right)) == [
        "sequence public.app_users_serial_no_seq: type: integer vs bigint",
        "sequence public.app_users_serial_no_seq: increment: 1 vs 2",
        "sequence public.app_users_serial_no_seq: cycle: no vs yes",
    ]


def test_result_is_sorted_by_kind_then_name() -> None:
    right = base()
    right["triggers"]["public.app_users.app_users_touch"]["enabled"] = "disabled"
    right["columns"]["public.user_sessions.expires_at"]["not_null"] = False
    right["columns"]["public.app_users.email"]["type"] = "citext"
    right["tables"]["public.app_users"]["comment"] = "users"
    right["tables"]["public.zz"] = table()
    assert [(d.kind, d.name) for d in compare(base(), right)] == [
        ("table", "public.zz"),
        ("column", "public.app_users.email"),
        ("column", "public.user_sessions.expires_at"),
        ("trigger", "public.app_users.app_users_touch"),
        ("comment", "public.app_users"),
    ]


def test_render_one_line_per_difference() -> None:
    diffs = [
        Difference("column", "public.app_users.email", "type: text vs character varying(255)", "text", "varchar"),
        Difference("table", "public.audit_log", "only in the live database", "table", None),
    ]
    assert render(diffs) == [
        "column public.app_users.email: type: text vs character varying(255)",
        "table public.audit_log: only in the live database",
    ]
    assert render([]) == []


def test_difference_is_frozen() -> None:
    diff = Difference("table", "public.t", "only in left", "table", None)
    with pytest.raises(dataclasses.FrozenInstanceError):
        diff.name = "other"  # type: ignore[misc]


def test_inputs_are_not_modified() -> None:
    left, right = base(), base()
    right["columns"]["public.app_users.email"]["type"] = "citext"
    before = copy.deepcopy((left, right))
    compare(left, right, column_order=True)
    assert (left, right) == before


@pytest.mark.parametrize(
    ("definition", "name", "expected"),
    [
        (
            "CREATE INDEX user_sessions_user_id_idx ON public.user_sessions USING btree (user_id)",
            "user_sessions_user_id_idx",
            "CREATE INDEX ON public.user_sessions USING btree (user_id)",
        ),
        (
            'CREATE UNIQUE INDEX "Odd ON name" ON ONLY public.p USING btree (a)',
            '"Odd ON name"',
            "CREATE UNIQUE INDEX ON ONLY public.p USING btree (a)",
        ),
    ],
)
def test_index_name_is_removed_from_its_definition(definition: str, name: str, expected: str) -> None:
    assert _unnamed_index(definition, name) == expected
