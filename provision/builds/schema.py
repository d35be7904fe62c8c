"""Read a database's schema from PostgreSQL's catalogs into a plain model, and name the differences of two."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

from ..errors import ServerError

if TYPE_CHECKING:  # psycopg2 is imported when a schema is read, so compare() and render() stay light
    from psycopg2.extensions import connection as Connection
    from psycopg2.extensions import cursor as Cursor

# The model: {plural kind: {qualified name: {attribute: JSON-friendly value}}}. Every name is built
# from quote_ident()ed parts, so "public.user_sessions.user_id" is unambiguous and pastes into SQL.
# Children (columns, constraints, indexes, triggers) carry "table": the qualified name of their
# table (or view), and schema-level objects carry "schema"; compare() uses both to report an
# absent table or schema once instead of once per dependent object.
Record = dict[str, Any]
Schema = dict[str, dict[str, Record]]

# (plural key in a Schema, singular kind in a Difference), in report order.
KINDS: tuple[tuple[str, str], ...] = (
    ("schemas", "schema"),
    ("extensions", "extension"),
    ("types", "type"),
    ("tables", "table"),
    ("columns", "column"),
    ("constraints", "constraint"),
    ("indexes", "index"),
    ("sequences", "sequence"),
    ("views", "view"),
    ("functions", "function"),
    ("triggers", "trigger"),
)
_KIND_ORDER = {kind: i for i, kind in enumerate([*(k for _, k in KINDS), "comment"])}

# A value longer than this (after collapsing whitespace) is shown around its first difference.
_SHOWN = 72
_CONTEXT = 24


@dataclass(frozen=True)
class Difference:
    """One object that differs: what it is, which one, how, and the two values (None when absent)."""

    kind: str
    name: str
    what: str
    left: str | None
    right: str | None


# ---------------------------------------------------------------- reading


# Schemas read when none are named: everything but the system's own.
_DEFAULT_SCHEMAS = (
    "n.nspname NOT IN ('pg_catalog', 'information_schema') "
    "AND left(n.nspname, 8) <> 'pg_toast' AND left(n.nspname, 7) <> 'pg_temp'"
)


def _qualified(namespace: str, name: str) -> str:
    return f"quote_ident({namespace}.nspname) || '.' || quote_ident({name})"


def _own(catalog: str, alias: str) -> str:
    """SQL: the object is not a member of an extension (the extension itself is what gets compared)."""
    return (
        f"NOT EXISTS (SELECT 1 FROM pg_depend x WHERE x.classid = '{catalog}'::regclass "
        f"AND x.objid = {alias}.oid AND x.deptype = 'e')"
    )


_TABLE = _qualified("n", "c.relname")
_IN_SCHEMAS = "c.relnamespace = ANY(%(oids)s::oid[])"

_SCHEMAS_SQL = f"""
SELECT n.oid, quote_ident(n.nspname), obj_description(n.oid, 'pg_namespace')
FROM pg_namespace n
WHERE CASE WHEN %(all)s THEN {_DEFAULT_SCHEMAS} ELSE n.nspname = ANY(%(names)s::text[]) END
"""

_EXTENSIONS_SQL = """
SELECT quote_ident(e.extname), quote_ident(n.nspname), e.extversion
FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
"""

_TYPES_SQL = f"""
SELECT quote_ident(n.nspname), {_qualified("n", "t.typname")}, t.typtype,
       CASE WHEN t.typtype = 'e' THEN
           ARRAY(SELECT e.enumlabel FROM pg_enum e WHERE e.enumtypid = t.oid ORDER BY e.enumsortorder) END,
       CASE WHEN t.typtype = 'd' THEN format_type(t.typbasetype, t.typtypmod) END,
       t.typnotnull,
       CASE WHEN t.typtype = 'd' THEN pg_get_expr(t.typdefaultbin, 0) END,
       CASE WHEN t.typtype = 'd' THEN
           ARRAY(SELECT quote_ident(k.conname) || ' ' || pg_get_constraintdef(k.oid) FROM pg_constraint k
                 WHERE k.contypid = t.oid AND k.contype <> 'n' ORDER BY k.conname) END,
       (SELECT {_qualified("cn", "co.collname")} FROM pg_collation co
          JOIN pg_namespace cn ON cn.oid = co.collnamespace JOIN pg_type b ON b.oid = t.typbasetype
        WHERE t.typtype = 'd' AND co.oid = t.typcollation AND t.typcollation <> b.typcollation),
       CASE WHEN t.typtype = 'c' THEN
           ARRAY(SELECT quote_ident(a.attname) || ' ' || format_type(a.atttypid, a.atttypmod) FROM pg_attribute a
                 WHERE a.attrelid = t.typrelid AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum) END,
       obj_description(t.oid, 'pg_type')
FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
WHERE t.typnamespace = ANY(%(oids)s::oid[]) AND {_own("pg_type", "t")}
  AND (t.typtype IN ('e', 'd')
       OR (t.typtype = 'c' AND (SELECT r.relkind FROM pg_class r WHERE r.oid = t.typrelid) = 'c'))
"""

_TABLES_SQL = f"""
SELECT quote_ident(n.nspname), {_TABLE}, c.relkind, c.relpersistence, c.reloptions,
       c.relrowsecurity, c.relforcerowsecurity,
       CASE WHEN c.relkind = 'p' THEN pg_get_partkeydef(c.oid) END,
       pg_get_expr(c.relpartbound, c.oid),
       ARRAY(SELECT {_qualified("pn", "p.relname")} FROM pg_inherits i JOIN pg_class p ON p.oid = i.inhparent
               JOIN pg_namespace pn ON pn.oid = p.relnamespace
             WHERE i.inhrelid = c.oid ORDER BY i.inhseqno),
       obj_description(c.oid, 'pg_class')
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p') AND {_IN_SCHEMAS} AND {_own("pg_class", "c")}
"""

_COLUMNS_SQL = f"""
SELECT {_TABLE}, quote_ident(a.attname), format_type(a.atttypid, a.atttypmod), a.attnotnull,
       pg_get_expr(d.adbin, d.adrelid), a.attidentity, a.attgenerated,
       (SELECT {_qualified("cn", "co.collname")} FROM pg_collation co JOIN pg_namespace cn ON cn.oid = co.collnamespace
        WHERE co.oid = a.attcollation AND a.attcollation <> t.typcollation),
       col_description(c.oid, a.attnum)
FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
  JOIN pg_type t ON t.oid = a.atttypid
  LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
WHERE c.relkind IN ('r', 'p') AND a.attnum > 0 AND NOT a.attisdropped AND {_IN_SCHEMAS} AND {_own("pg_class", "c")}
ORDER BY 1, a.attnum
"""

# Not-null constraints ('n', PostgreSQL 18) are the columns' NOT NULL; constraint triggers ('t') are triggers.
_CONSTRAINTS_SQL = f"""
SELECT {_TABLE}, quote_ident(k.conname), k.contype, pg_get_constraintdef(k.oid), k.confdeltype, k.confupdtype,
       obj_description(k.oid, 'pg_constraint')
FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE k.contype NOT IN ('n', 't') AND c.relkind IN ('r', 'p') AND {_IN_SCHEMAS} AND {_own("pg_class", "c")}
"""

# An index that backs a primary key, unique or exclusion constraint is that constraint's business.
_INDEXES_SQL = f"""
SELECT {_TABLE}, quote_ident(ic.relname), pg_get_indexdef(i.indexrelid), i.indisvalid,
       obj_description(i.indexrelid, 'pg_class')
FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid JOIN pg_class c ON c.oid = i.indrelid
  JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p', 'm') AND {_IN_SCHEMAS} AND {_own("pg_class", "c")}
  AND NOT EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conindid = i.indexrelid AND k.conrelid = i.indrelid
                  AND k.contype IN ('p', 'u', 'x'))
"""

_SEQUENCES_SQL = f"""
SELECT quote_ident(n.nspname), {_TABLE}, format_type(s.seqtypid, NULL), s.seqstart, s.seqincrement,
       s.seqmin, s.seqmax, s.seqcache, s.seqcycle,
       (SELECT {_qualified("tn", "t.relname")} || '.' || quote_ident(a.attname)
          FROM pg_depend d JOIN pg_class t ON t.oid = d.refobjid JOIN pg_namespace tn ON tn.oid = t.relnamespace
            JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
         WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.refclassid = 'pg_class'::regclass
           AND d.deptype IN ('a', 'i') AND d.refobjsubid > 0
         LIMIT 1),
       obj_description(c.oid, 'pg_class')
FROM pg_sequence s JOIN pg_class c ON c.oid = s.seqrelid JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE {_IN_SCHEMAS} AND {_own("pg_class", "c")}
"""

_VIEWS_SQL = f"""
SELECT quote_ident(n.nspname), {_TABLE}, c.relkind, pg_get_viewdef(c.oid), c.reloptions,
       obj_description(c.oid, 'pg_class')
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('v', 'm') AND {_IN_SCHEMAS} AND {_own("pg_class", "c")}
"""

# Keyed by argument types, as PostgreSQL identifies a function (argument names are in the definition).
# Aggregates are left out: pg_get_functiondef() cannot show them.
_FUNCTIONS_SQL = f"""
SELECT quote_ident(n.nspname),
       {_qualified("n", "p.proname")} || '(' || oidvectortypes(p.proargtypes) || ')',
       p.prokind, pg_get_functiondef(p.oid), obj_description(p.oid, 'pg_proc')
FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
WHERE p.prokind <> 'a' AND p.pronamespace = ANY(%(oids)s::oid[]) AND {_own("pg_proc", "p")}
"""

_TRIGGERS_SQL = f"""
SELECT {_TABLE}, quote_ident(g.tgname), pg_get_triggerdef(g.oid), g.tgenabled, obj_description(g.oid, 'pg_trigger')
FROM pg_trigger g JOIN pg_class c ON c.oid = g.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE NOT g.tgisinternal AND c.relkind IN ('r', 'p', 'v') AND {_IN_SCHEMAS} AND {_own("pg_class", "c")}
"""

_RELKINDS = {"r": "table", "p": "partitioned table", "v": "view", "m": "materialized view"}
_TYPE_KINDS = {"e": "enum", "d": "domain", "c": "composite"}
_PROKINDS = {"f": "function", "p": "procedure", "w": "window function"}
_CONTYPES = {"p": "PRIMARY KEY", "f": "FOREIGN KEY", "u": "UNIQUE", "c": "CHECK", "x": "EXCLUDE"}
_FK_ACTIONS = {"a": "NO ACTION", "r": "RESTRICT", "c": "CASCADE", "n": "SET NULL", "d": "SET DEFAULT"}
_IDENTITY = {"a": "ALWAYS", "d": "BY DEFAULT"}
_GENERATED = {"s": "STORED", "v": "VIRTUAL"}
_TRIGGER_STATES = {"O": "enabled", "D": "disabled", "R": "enabled on replica only", "A": "enabled always"}


def read_schema(conn: Connection, schemas: Sequence[str] | None = None) -> Schema:
    """Read the schema of the database `conn` is connected to.

    `conn` is an open psycopg2 connection (autocommit; otherwise the read happens inside a savepoint
    of the open transaction). `schemas` limits the read to those schemas (names as in the catalog,
    unquoted); the default is every schema except pg_catalog, information_schema, pg_toast* and
    pg_temp*. Extensions are database-wide and always read. Every query runs in one read-only
    snapshot with search_path = pg_catalog, so every user object in a definition is schema-qualified
    whatever the session's or database's search_path.
    """
    import psycopg2

    try:
        with _catalog_snapshot(conn) as cur:
            return _read(cur, schemas)
    except psycopg2.Error as exc:
        detail = (exc.pgerror or str(exc)).strip()
        raise ServerError(f"reading the schema failed: {detail.splitlines()[0] if detail else exc!r}") from exc


@contextlib.contextmanager
def _catalog_snapshot(conn: Connection) -> Iterator[Cursor]:
    import psycopg2

    if conn.autocommit:
        begin, end = "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", "ROLLBACK"
    else:
        begin = "SAVEPOINT provision_read_schema"
        end = "ROLLBACK TO SAVEPOINT provision_read_schema; RELEASE SAVEPOINT provision_read_schema"
    with conn.cursor() as cur:
        cur.execute(begin)
        try:
            cur.execute("SET LOCAL search_path = pg_catalog")
            yield cur
        except BaseException:
            with contextlib.suppress(psycopg2.Error):
                cur.execute(end)
            raise
        cur.execute(end)


def _read(cur: Cursor, schemas: Sequence[str] | None) -> Schema:
    def rows(query: str) -> list[tuple[Any, ...]]:
        cur.execute(query, params)
        return cur.fetchall()

    params: dict[str, Any] = {"all": schemas is None, "names": list(schemas or []), "oids": []}
    namespaces = rows(_SCHEMAS_SQL)
    params["oids"] = [oid for oid, _, _ in namespaces]
    out: Schema = {plural: {} for plural, _ in KINDS}

    out["schemas"] = {name: {"comment": comment} for _, name, comment in namespaces}
    out["extensions"] = {
        name: {"schema": schema, "version": version} for name, schema, version in rows(_EXTENSIONS_SQL)
    }
    for schema, name, typtype, labels, base, not_null, default, checks, collation, attributes, comment in rows(
        _TYPES_SQL
    ):
        domain = typtype == "d"
        out["types"][name] = {
            "schema": schema,
            "kind": _TYPE_KINDS.get(typtype, typtype),
            "labels": labels,
            "base": base,
            "not_null": bool(not_null) if domain else None,
            "default": default,
            "checks": checks,
            "collation": collation,
            "attributes": attributes,
            "comment": comment,
        }
    for schema, name, relkind, persistence, options, rls, force_rls, key, bound, inherits, comment in rows(_TABLES_SQL):
        out["tables"][name] = {
            "schema": schema,
            "kind": _RELKINDS[relkind],
            "unlogged": persistence == "u",
            "options": sorted(options) if options else None,
            "row_security": bool(rls),
            "force_row_security": bool(force_rls),
            "partition_key": key,
            "partition_bound": bound,
            "inherits": list(inherits) or None,
            "comment": comment,
        }
    positions: dict[str, int] = {}
    for table, column, type_, not_null, default, identity, generated, collation, comment in rows(_COLUMNS_SQL):
        positions[table] = positions.get(table, 0) + 1
        out["columns"][f"{table}.{column}"] = {
            "table": table,
            "position": positions[table],
            "type": type_,
            "not_null": bool(not_null),
            "default": None if generated else default,
            "identity": _IDENTITY.get(identity),
            "generated": f"{default} {_GENERATED.get(generated, generated)}" if generated else None,
            "collation": collation,
            "comment": comment,
        }
    for table, name, contype, definition, on_delete, on_update, comment in rows(_CONSTRAINTS_SQL):
        foreign = contype == "f"
        out["constraints"][f"{table}.{name}"] = {
            "table": table,
            "type": _CONTYPES.get(contype, contype),
            "definition": definition,
            "on_delete": _FK_ACTIONS.get(on_delete) if foreign else None,
            "on_update": _FK_ACTIONS.get(on_update) if foreign else None,
            "comment": comment,
        }
    for table, name, definition, valid, comment in rows(_INDEXES_SQL):
        out["indexes"][f"{table}.{name}"] = {
            "table": table,
            "definition": _unnamed_index(definition, name),
            "valid": bool(valid),
            "comment": comment,
        }
    for schema, name, type_, start, increment, minimum, maximum, cache, cycle, owned_by, comment in rows(
        _SEQUENCES_SQL
    ):
        out["sequences"][name] = {
            "schema": schema,
            "type": type_,
            "start": start,
            "increment": increment,
            "min": minimum,
            "max": maximum,
            "cache": cache,
            "cycle": bool(cycle),
            "owned_by": owned_by,
            "comment": comment,
        }
    for schema, name, relkind, definition, options, comment in rows(_VIEWS_SQL):
        out["views"][name] = {
            "schema": schema,
            "kind": _RELKINDS[relkind],
            "definition": definition,
            "options": sorted(options) if options else None,
            "comment": comment,
        }
    for schema, name, prokind, definition, comment in rows(_FUNCTIONS_SQL):
        out["functions"][name] = {
            "schema": schema,
            "kind": _PROKINDS.get(prokind, prokind),
            "definition": definition,
            "comment": comment,
        }
    for table, name, definition, enabled, comment in rows(_TRIGGERS_SQL):
        out["triggers"][f"{table}.{name}"] = {
            "table": table,
            "definition": definition,
            "enabled": _TRIGGER_STATES.get(enabled, enabled),
            "comment": comment,
        }
    return {plural: dict(sorted(objects.items())) for plural, objects in out.items()}


def _unnamed_index(definition: str, quoted_name: str) -> str:
    """pg_get_indexdef() without the index's own name (the key already says it), so definitions compare."""
    return definition.replace(f"INDEX {quoted_name} ON ", "INDEX ON ", 1)


# ---------------------------------------------------------------- comparing


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def _listed(value: Any) -> str | None:
    return ", ".join(str(v) for v in value) if value else None


def _set(value: Any) -> str | None:
    return ", ".join(sorted(str(v) for v in value)) if value else None


def _yes_no(value: Any) -> str | None:
    return None if value is None else ("yes" if value else "no")


class _Attr(NamedTuple):
    key: str
    label: str
    show: Callable[[Any], str | None] = _text
    absent: str = "none"


# What is compared for each kind, in report order; "kind" first (when it differs nothing else is
# compared) and the comment last (reported as kind "comment"). Everything else in a record, such as
# an extension's version, a column's position or a child's "table", is not compared here.
_ATTRS: dict[str, tuple[_Attr, ...]] = {
    "schemas": (),
    "extensions": (_Attr("schema", "schema"),),
    "types": (
        _Attr("kind", "kind"),
        _Attr("labels", "labels", _listed),
        _Attr("base", "base type"),
        _Attr("not_null", "nullable", lambda v: None if v is None else ("NOT NULL" if v else "NULL")),
        _Attr("default", "default"),
        _Attr("checks", "checks", _set),
        _Attr("collation", "collation", absent="default"),
        _Attr("attributes", "attributes", _listed),
    ),
    "tables": (
        _Attr("kind", "kind"),
        _Attr("unlogged", "persistence", lambda v: "UNLOGGED" if v else "LOGGED"),
        _Attr("partition_key", "partition key"),
        _Attr("partition_bound", "partition bound"),
        _Attr("inherits", "inherits", _listed),
        _Attr("options", "storage options", _set),
        _Attr("row_security", "row level security", lambda v: "enabled" if v else "disabled"),
        _Attr("force_row_security", "forced row level security", _yes_no),
    ),
    "columns": (
        _Attr("type", "type"),
        _Attr("not_null", "nullable", lambda v: "NOT NULL" if v else "NULL"),
        _Attr("default", "default"),
        _Attr("identity", "identity"),
        _Attr("generated", "generated"),
        _Attr("collation", "collation", absent="default"),
    ),
    "constraints": (),  # see _compare_constraints
    "indexes": (
        _Attr("definition", "definition"),
        _Attr("valid", "valid", _yes_no),
    ),
    "sequences": (
        _Attr("type", "type"),
        _Attr("start", "start"),
        _Attr("increment", "increment"),
        _Attr("min", "minimum"),
        _Attr("max", "maximum"),
        _Attr("cache", "cache"),
        _Attr("cycle", "cycle", _yes_no),
        _Attr("owned_by", "owned by"),
    ),
    "views": (
        _Attr("kind", "kind"),
        _Attr("definition", "definition"),
        _Attr("options", "options", _set),
    ),
    "functions": (
        _Attr("kind", "kind"),
        _Attr("definition", "definition"),
    ),
    "triggers": (
        _Attr("definition", "definition"),
        _Attr("enabled", "state"),
    ),
}

# What stands for a whole object that is on one side only (Difference.left / .right).
_SUMMARY = {
    "schemas": None,
    "extensions": "schema",
    "types": "kind",
    "tables": "kind",
    "columns": "type",
    "constraints": "definition",
    "indexes": "definition",
    "sequences": "type",
    "views": "definition",
    "functions": "definition",
    "triggers": "definition",
}

_FK_RULE = re.compile(r" ON (?:UPDATE|DELETE) (?:NO ACTION|RESTRICT|CASCADE|SET NULL|SET DEFAULT)")


def compare(
    left: Schema,
    right: Schema,
    *,
    column_order: bool = False,
    left_name: str = "left",
    right_name: str = "right",
) -> list[Difference]:
    """Every difference between two schemas, sorted; empty when they are the same.

    Objects are matched by name, never by catalog order. An object whose table (or view) or schema
    is absent on the other side is not reported on its own: the table or schema is, once.
    Column positions are compared only with `column_order`, as one difference per table when the
    columns both sides have are in a different order.
    """
    found: list[Difference] = []
    for plural, kind in KINDS:
        lefts: Mapping[str, Record] = left.get(plural) or {}
        rights: Mapping[str, Record] = right.get(plural) or {}
        for name in sorted(lefts.keys() | rights.keys()):
            lrec, rrec = lefts.get(name), rights.get(name)
            if rrec is None:
                if lrec is not None and not _parent_absent(plural, lrec, right):
                    found.append(Difference(kind, name, f"only in {left_name}", _summary(plural, name, lrec), None))
                continue
            if lrec is None:
                if not _parent_absent(plural, rrec, left):
                    found.append(Difference(kind, name, f"only in {right_name}", None, _summary(plural, name, rrec)))
                continue
            if plural == "constraints":
                found.extend(_compare_constraints(name, lrec, rrec))
            else:
                found.extend(_compare_attrs(kind, name, _ATTRS[plural], lrec, rrec))
            found.extend(_compare_comment(kind, name, lrec, rrec))
    if column_order:
        found.extend(_compare_column_order(left, right))
    # Stable: within one object, the order of _ATTRS (found in name order, so deterministic).
    return sorted(found, key=lambda d: (_KIND_ORDER.get(d.kind, len(_KIND_ORDER)), d.name))


def render(differences: Sequence[Difference]) -> list[str]:
    """One line per difference: 'column public.app_users.email: type: text vs character varying(255)'."""
    return [f"{d.kind} {d.name}: {d.what}" for d in differences]


def _parent_absent(plural: str, record: Record, other: Schema) -> bool:
    """Whether `record`'s table, owning column or schema is missing from `other` (and reported instead)."""
    table = record.get("table")
    if table is not None and table not in (other.get("tables") or {}) and table not in (other.get("views") or {}):
        return True
    owner = record.get("owned_by") if plural == "sequences" else None
    if owner is not None and owner not in (other.get("columns") or {}):
        return True
    schema = record.get("schema")
    return (
        plural != "extensions"
        and schema is not None
        and "schemas" in other
        and schema not in (other.get("schemas") or {})
    )


def _summary(plural: str, name: str, record: Record) -> str:
    key = _SUMMARY.get(plural)
    value = record.get(key) if key else None
    return name if value is None else str(value)


def _compare_attrs(
    kind: str, name: str, attrs: Sequence[_Attr], lrec: Mapping[str, Any], rrec: Mapping[str, Any]
) -> list[Difference]:
    found: list[Difference] = []
    for attr in attrs:
        lval, rval = attr.show(lrec.get(attr.key)), attr.show(rrec.get(attr.key))
        if lval == rval:
            continue
        found.append(_difference(kind, name, attr.label, lval, rval, attr.absent))
        if attr.key == "kind":
            break  # a view that became a materialized view differs in everything else too
    return found


def _compare_constraints(name: str, lrec: Mapping[str, Any], rrec: Mapping[str, Any]) -> list[Difference]:
    ldef, rdef = _text(lrec.get("definition")), _text(rrec.get("definition"))
    found: list[Difference] = []
    if lrec.get("type") == rrec.get("type") == "FOREIGN KEY":
        # The referential actions are named on their own; the rest of the definition is compared without them.
        for key, label in (("on_delete", "ON DELETE"), ("on_update", "ON UPDATE")):
            lval, rval = _text(lrec.get(key)), _text(rrec.get(key))
            if lval != rval:
                found.append(_difference("constraint", name, label, lval, rval))
        if _FK_RULE.sub("", ldef or "") == _FK_RULE.sub("", rdef or ""):
            return found
    if ldef != rdef:
        found.append(_difference("constraint", name, "definition", ldef, rdef))
    return found


def _compare_comment(kind: str, name: str, lrec: Mapping[str, Any], rrec: Mapping[str, Any]) -> list[Difference]:
    lval, rval = _text(lrec.get("comment")), _text(rrec.get("comment"))
    if lval == rval:
        return []
    shown_l, shown_r = _excerpts(_quoted(lval), _quoted(rval))
    return [Difference("comment", name, f"on {kind}: {shown_l} vs {shown_r}", lval, rval)]


def _compare_column_order(left: Schema, right: Schema) -> list[Difference]:
    lorder, rorder = _column_orders(left), _column_orders(right)
    found: list[Difference] = []
    for table in sorted(lorder.keys() & rorder.keys()):
        shared = set(lorder[table]) & set(rorder[table])
        lcols = [c for c in lorder[table] if c in shared]
        rcols = [c for c in rorder[table] if c in shared]
        if lcols != rcols:
            lval, rval = ", ".join(lcols), ", ".join(rcols)
            found.append(_difference("table", table, "column order", lval, rval))
    return found


def _column_orders(schema: Schema) -> dict[str, list[str]]:
    """{table: [column, ...] by position}, for the tables whose columns all have a position."""
    by_table: dict[str, list[tuple[int, str]]] = {}
    unordered: set[str] = set()
    for name, record in (schema.get("columns") or {}).items():
        table, position = record.get("table"), record.get("position")
        if table is None:
            continue
        if position is None:
            unordered.add(table)
            continue
        by_table.setdefault(table, []).append((int(position), name[len(table) + 1 :]))
    return {table: [c for _, c in sorted(cols)] for table, cols in by_table.items() if table not in unordered}


def _difference(
    kind: str, name: str, label: str, left: str | None, right: str | None, absent: str = "none"
) -> Difference:
    shown_l, shown_r = _excerpts(absent if left is None else left, absent if right is None else right)
    return Difference(kind, name, f"{label}: {shown_l} vs {shown_r}", left, right)


def _quoted(text: str | None) -> str:
    return "none" if text is None else "'" + text.replace("'", "''") + "'"


def _excerpts(left: str, right: str) -> tuple[str, str]:
    """Both values on one line; long ones cut to the part around their first difference."""
    a, b = " ".join(left.split()), " ".join(right.split())
    if len(a) <= _SHOWN and len(b) <= _SHOWN:
        return a, b
    prefix = next((i for i, (ca, cb) in enumerate(zip(a, b, strict=False)) if ca != cb), min(len(a), len(b)))
    suffix = 0
    limit = min(len(a), len(b)) - prefix
    while suffix < limit and a[len(a) - 1 - suffix] == b[len(b) - 1 - suffix]:
        suffix += 1
    # Start inside the common prefix (so at the same place in both), at a word's beginning.
    start = max(0, prefix - _CONTEXT)
    space = a.rfind(" ", 0, start + 1)
    start = space + 1 if space >= 0 and start - space <= _CONTEXT else start
    return _window(a, start, len(a) - suffix), _window(b, start, len(b) - suffix)


def _window(text: str, start: int, differs_until: int) -> str:
    """text[start:], shown up to a little after `differs_until` (the difference itself cut at _SHOWN characters)."""
    end = differs_until + _CONTEXT
    space = text.find(" ", end)
    end = space if space >= 0 and space - end <= _CONTEXT // 2 else end
    end = len(text) if len(text) - end <= _CONTEXT // 2 else end
    end = min(len(text), end, start + _CONTEXT + _SHOWN)
    return ("..." if start > 0 else "") + text[start:end] + ("..." if end < len(text) else "")
