"""Initial schema: the 15 ChatBI application tables.

The same schema as sql/chatbi/init_app_tables.sql (its bootstrap equivalent, which
`provision fresh` loads and then stamps at this revision). Constraint and index names
are spelled out so they match what PostgreSQL generates for the inline constraints
in that file (<table>_pkey, <table>_<column>_fkey, <table>_<column>_check, ...).

Revision ID: 0001_initial_schema
Revises:
Create Date: 2025-01-06 09:00:00.000000

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

# revision identifiers, used by Alembic.
revision: str = "0001_initial_schema"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TIMESTAMPTZ = sa.TIMESTAMP(timezone=True)
EMPTY_JSONB = sa.text("'{}'::jsonb")


def _id() -> sa.Column:
    return sa.Column("id", sa.Uuid(), server_default=sa.text("gen_random_uuid()"), nullable=False)


def _created_at() -> sa.Column:
    return sa.Column("created_at", TIMESTAMPTZ, server_default=sa.text("now()"), nullable=False)


def _updated_at() -> sa.Column:
    return sa.Column("updated_at", TIMESTAMPTZ, server_default=sa.text("now()"), nullable=False)


def _metadata() -> sa.Column:
    return sa.Column("metadata", postgresql.JSONB(), server_default=EMPTY_JSONB, nullable=False)


def _fk(table: str, column: str, ref: str, ondelete: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint([column], [f"{ref}.id"], name=f"{table}_{column}_fkey", ondelete=ondelete)


def upgrade() -> None:
    """Upgrade schema."""
    # --- User management -----------------------------------------------------
    op.create_table(
        "app_users",
        _id(),
        sa.Column("email", sa.Text(), nullable=False),
        sa.Column("username", sa.Text(), nullable=True),
        sa.Column("display_name", sa.Text(), nullable=True),
        sa.Column(
            "password_hash",
            sa.Text(),
            nullable=True,
            comment="One-way password hash (e.g. argon2/bcrypt); never plaintext",
        ),
        sa.Column("role", sa.Text(), server_default="user", nullable=False),
        sa.Column("is_active", sa.Boolean(), server_default=sa.text("true"), nullable=False),
        sa.Column("settings", postgresql.JSONB(), server_default=EMPTY_JSONB, nullable=False),
        sa.Column("last_login_at", TIMESTAMPTZ, nullable=True),
        _created_at(),
        _updated_at(),
        sa.PrimaryKeyConstraint("id", name="app_users_pkey"),
        sa.CheckConstraint("role IN ('admin', 'editor', 'user', 'viewer')", name="app_users_role_check"),
        comment="ChatBI user accounts",
    )
    op.create_index("app_users_email_lower_key", "app_users", [sa.text("lower(email)")], unique=True)
    op.create_index(
        "app_users_username_lower_key",
        "app_users",
        [sa.text("lower(username)")],
        unique=True,
        postgresql_where=sa.text("username IS NOT NULL"),
    )

    op.create_table(
        "user_sessions",
        _id(),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column(
            "token_hash",
            sa.Text(),
            nullable=False,
            comment="Hash of the session token; the raw token is never stored",
        ),
        sa.Column("ip_address", postgresql.INET(), nullable=True),
        sa.Column("user_agent", sa.Text(), nullable=True),
        sa.Column("expires_at", TIMESTAMPTZ, nullable=False),
        sa.Column("revoked_at", TIMESTAMPTZ, nullable=True),
        sa.Column("last_seen_at", TIMESTAMPTZ, nullable=True),
        _created_at(),
        sa.PrimaryKeyConstraint("id", name="user_sessions_pkey"),
        _fk("user_sessions", "user_id", "app_users", "CASCADE"),
        comment="User authentication sessions",
    )
    op.create_index("user_sessions_token_hash_key", "user_sessions", ["token_hash"], unique=True)
    op.create_index("user_sessions_user_id_idx", "user_sessions", ["user_id"])
    op.create_index("user_sessions_expires_at_idx", "user_sessions", ["expires_at"])

    # --- Data sources and chat -----------------------------------------------
    op.create_table(
        "datasources",
        _id(),
        sa.Column("owner_id", sa.Uuid(), nullable=True),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("db_type", sa.Text(), server_default="postgresql", nullable=False),
        sa.Column("host", sa.Text(), nullable=True),
        sa.Column("port", sa.Integer(), nullable=True),
        sa.Column("database_name", sa.Text(), nullable=True),
        sa.Column("username", sa.Text(), nullable=True),
        sa.Column(
            "password_encrypted",
            postgresql.BYTEA(),
            nullable=True,
            comment="Encrypted connection password (ciphertext produced by the application key); never plaintext",
        ),
        sa.Column("ssl_mode", sa.Text(), nullable=True),
        sa.Column("options", postgresql.JSONB(), server_default=EMPTY_JSONB, nullable=False),
        sa.Column("schema_cache", postgresql.JSONB(), nullable=True),
        sa.Column("schema_cached_at", TIMESTAMPTZ, nullable=True),
        sa.Column("is_default", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("is_active", sa.Boolean(), server_default=sa.text("true"), nullable=False),
        _created_at(),
        _updated_at(),
        sa.PrimaryKeyConstraint("id", name="datasources_pkey"),
        _fk("datasources", "owner_id", "app_users", "CASCADE"),
        sa.CheckConstraint(
            "db_type IN ('postgresql', 'mysql', 'sqlite', 'duckdb', 'clickhouse', 'snowflake', 'bigquery', 'mssql')",
            name="datasources_db_type_check",
        ),
        sa.CheckConstraint("port IS NULL OR port BETWEEN 1 AND 65535", name="datasources_port_check"),
        comment="Database connection configurations queried by ChatBI",
    )
    op.create_index("datasources_owner_id_idx", "datasources", ["owner_id"])
    op.create_index("datasources_name_key", "datasources", [sa.text("lower(name)")], unique=True)
    op.create_index(
        "datasources_single_default_key",
        "datasources",
        ["is_default"],
        unique=True,
        postgresql_where=sa.text("is_default"),
    )

    op.create_table(
        "chat_sessions",
        _id(),
        sa.Column("user_id", sa.Uuid(), nullable=True),
        sa.Column("datasource_id", sa.Uuid(), nullable=True),
        sa.Column("title", sa.Text(), nullable=True),
        sa.Column("is_archived", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        _metadata(),
        sa.Column("last_message_at", TIMESTAMPTZ, nullable=True),
        _created_at(),
        _updated_at(),
        sa.PrimaryKeyConstraint("id", name="chat_sessions_pkey"),
        _fk("chat_sessions", "user_id", "app_users", "CASCADE"),
        _fk("chat_sessions", "datasource_id", "datasources", "SET NULL"),
        comment="Chat conversation sessions",
    )
    op.create_index("chat_sessions_user_id_idx", "chat_sessions", ["user_id", sa.text("updated_at DESC")])
    op.create_index("chat_sessions_datasource_id_idx", "chat_sessions", ["datasource_id"])

    op.create_table(
        "chat_messages",
        _id(),
        sa.Column("session_id", sa.Uuid(), nullable=False),
        sa.Column("role", sa.Text(), nullable=False),
        sa.Column("content", sa.Text(), server_default="", nullable=False),
        sa.Column("generated_sql", sa.Text(), nullable=True),
        sa.Column("sql_error", sa.Text(), nullable=True),
        sa.Column("result_preview", postgresql.JSONB(), nullable=True),
        sa.Column("row_count", sa.Integer(), nullable=True),
        sa.Column("execution_time_ms", sa.Integer(), nullable=True),
        sa.Column("model_name", sa.Text(), nullable=True),
        sa.Column("prompt_tokens", sa.Integer(), nullable=True),
        sa.Column("completion_tokens", sa.Integer(), nullable=True),
        sa.Column("feedback", sa.SmallInteger(), nullable=True),
        _metadata(),
        _created_at(),
        sa.PrimaryKeyConstraint("id", name="chat_messages_pkey"),
        _fk("chat_messages", "session_id", "chat_sessions", "CASCADE"),
        sa.CheckConstraint("role IN ('user', 'assistant', 'system', 'tool')", name="chat_messages_role_check"),
        sa.CheckConstraint("feedback IS NULL OR feedback IN (-1, 1)", name="chat_messages_feedback_check"),
        comment="Individual messages within a chat session",
    )
    op.create_index("chat_messages_session_id_created_at_idx", "chat_messages", ["session_id", "created_at"])

    op.create_table(
        "visualizations",
        _id(),
        sa.Column("message_id", sa.Uuid(), nullable=False),
        sa.Column("session_id", sa.Uuid(), nullable=False),
        sa.Column("chart_type", sa.Text(), server_default="table", nullable=False),
        sa.Column("title", sa.Text(), nullable=True),
        sa.Column(
            "chart_spec",
            postgresql.JSONB(),
            server_default=EMPTY_JSONB,
            nullable=False,
            comment="Chart specification (e.g. ECharts/Vega-Lite JSON)",
        ),
        _created_at(),
        _updated_at(),
        sa.PrimaryKeyConstraint("id", name="visualizations_pkey"),
        _fk("visualizations", "message_id", "chat_messages", "CASCADE"),
        _fk("visualizations", "session_id", "chat_sessions", "CASCADE"),
        comment="Chart configurations for query results",
    )
    op.create_index("visualizations_message_id_idx", "visualizations", ["message_id"])
    op.create_index("visualizations_session_id_idx", "visualizations", ["session_id"])

    op.create_table(
        "query_history",
        _id(),
        sa.Column("user_id", sa.Uuid(), nullable=True),
        sa.Column("datasource_id", sa.Uuid(), nullable=True),
        sa.Column("session_id", sa.Uuid(), nullable=True),
        sa.Column("message_id", sa.Uuid(), nullable=True),
        sa.Column("natural_language", sa.Text(), nullable=True),
        sa.Column("sql_text", sa.Text(), nullable=False),
        sa.Column("status", sa.Text(), server_default="success", nullable=False),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("row_count", sa.Integer(), nullable=True),
        sa.Column("execution_time_ms", sa.Integer(), nullable=True),
        _created_at(),
        sa.PrimaryKeyConstraint("id", name="query_history_pkey"),
        _fk("query_history", "user_id", "app_users", "SET NULL"),
        _fk("query_history", "datasource_id", "datasources", "SET NULL"),
        _fk("query_history", "session_id", "chat_sessions", "SET NULL"),
        _fk("query_history", "message_id", "chat_messages", "SET NULL"),
        sa.CheckConstraint(
            "status IN ('success', 'error', 'cancelled', 'timeout')",
            name="query_history_status_check",
        ),
        comment="SQL execution history",
    )
    op.create_index("query_history_created_at_idx", "query_history", ["created_at"])
    op.create_index("query_history_user_id_idx", "query_history", ["user_id", sa.text("created_at DESC")])
    op.create_index("query_history_datasource_id_idx", "query_history", ["datasource_id"])
    op.create_index("query_history_session_id_idx", "query_history", ["session_id"])
    op.create_index("query_history_message_id_idx", "query_history", ["message_id"])

    op.create_table(
        "chat_history",
        _id(),
        sa.Column("user_id", sa.Uuid(), nullable=True),
        sa.Column("session_id", sa.Uuid(), nullable=True),
        sa.Column("datasource_id", sa.Uuid(), nullable=True),
        sa.Column("question", sa.Text(), nullable=False),
        sa.Column("answer", sa.Text(), nullable=True),
        sa.Column("generated_sql", sa.Text(), nullable=True),
        sa.Column("intent", sa.Text(), nullable=True),
        sa.Column("success", sa.Boolean(), nullable=True),
        sa.Column("latency_ms", sa.Integer(), nullable=True),
        sa.Column("tokens_used", sa.Integer(), nullable=True),
        _metadata(),
        _created_at(),
        sa.PrimaryKeyConstraint("id", name="chat_history_pkey"),
        _fk("chat_history", "user_id", "app_users", "SET NULL"),
        _fk("chat_history", "session_id", "chat_sessions", "SET NULL"),
        _fk("chat_history", "datasource_id", "datasources", "SET NULL"),
        comment="Conversation analytics (one row per question/answer turn)",
    )
    op.create_index("chat_history_created_at_idx", "chat_history", ["created_at"])
    op.create_index("chat_history_user_id_idx", "chat_history", ["user_id"])
    op.create_index("chat_history_session_id_idx", "chat_history", ["session_id"])
    op.create_index("chat_history_datasource_id_idx", "chat_history", ["datasource_id"])

    op.create_table(
        "saved_queries",
        _id(),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("datasource_id", sa.Uuid(), nullable=True),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("natural_language", sa.Text(), nullable=True),
        sa.Column("sql_text", sa.Text(), nullable=False),
        sa.Column("chart_spec", postgresql.JSONB(), nullable=True),
        sa.Column("tags", postgresql.ARRAY(sa.Text()), server_default=sa.text("'{}'"), nullable=False),
        sa.Column("is_shared", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("last_run_at", TIMESTAMPTZ, nullable=True),
        _created_at(),
        _updated_at(),
        sa.PrimaryKeyConstraint("id", name="saved_queries_pkey"),
        _fk("saved_queries", "user_id", "app_users", "CASCADE"),
        _fk("saved_queries", "datasource_id", "datasources", "SET NULL"),
        comment="User-saved SQL queries",
    )
    op.create_index("saved_queries_user_id_idx", "saved_queries", ["user_id"])
    op.create_index("saved_queries_datasource_id_idx", "saved_queries", ["datasource_id"])

    # --- MDL (Metadata Definition Layer) -------------------------------------
    op.create_table(
        "mdl_projects",
        _id(),
        sa.Column("datasource_id", sa.Uuid(), nullable=True),
        sa.Column("owner_id", sa.Uuid(), nullable=True),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("catalog", sa.Text(), nullable=True),
        sa.Column("schema_name", sa.Text(), nullable=True),
        sa.Column("version", sa.Integer(), server_default=sa.text("1"), nullable=False),
        _metadata(),
        _created_at(),
        _updated_at(),
        sa.PrimaryKeyConstraint("id", name="mdl_projects_pkey"),
        _fk("mdl_projects", "datasource_id", "datasources", "CASCADE"),
        _fk("mdl_projects", "owner_id", "app_users", "SET NULL"),
        comment="MDL project definitions (one semantic layer per datasource)",
    )
    op.create_index("mdl_projects_datasource_id_idx", "mdl_projects", ["datasource_id"])
    op.create_index("mdl_projects_owner_id_idx", "mdl_projects", ["owner_id"])
    op.create_index("mdl_projects_name_key", "mdl_projects", ["name"], unique=True)

    op.create_table(
        "mdl_models",
        _id(),
        sa.Column("project_id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("display_name", sa.Text(), nullable=True),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("table_reference", sa.Text(), nullable=True),
        sa.Column("ref_sql", sa.Text(), nullable=True),
        sa.Column("primary_key", sa.Text(), nullable=True),
        _metadata(),
        _created_at(),
        _updated_at(),
        sa.PrimaryKeyConstraint("id", name="mdl_models_pkey"),
        _fk("mdl_models", "project_id", "mdl_projects", "CASCADE"),
        # A table-level UNIQUE in the SQL, i.e. a constraint (not just an index).
        sa.UniqueConstraint("project_id", "name", name="mdl_models_project_id_name_key"),
        comment="MDL data models (logical tables)",
    )

    op.create_table(
        "mdl_fields",
        _id(),
        sa.Column("model_id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("display_name", sa.Text(), nullable=True),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("data_type", sa.Text(), nullable=False),
        sa.Column("field_kind", sa.Text(), server_default="column", nullable=False),
        sa.Column("expression", sa.Text(), nullable=True),
        sa.Column("aggregation", sa.Text(), nullable=True),
        sa.Column("is_primary_key", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("is_nullable", sa.Boolean(), server_default=sa.text("true"), nullable=False),
        sa.Column("is_hidden", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("ordinal_position", sa.Integer(), nullable=True),
        _metadata(),
        _created_at(),
        _updated_at(),
        sa.PrimaryKeyConstraint("id", name="mdl_fields_pkey"),
        _fk("mdl_fields", "model_id", "mdl_models", "CASCADE"),
        sa.UniqueConstraint("model_id", "name", name="mdl_fields_model_id_name_key"),
        sa.CheckConstraint(
            "field_kind IN ('column', 'dimension', 'measure', 'calculated')",
            name="mdl_fields_field_kind_check",
        ),
        comment="Fields (columns, dimensions, measures) of MDL models",
    )

    op.create_table(
        "mdl_relationships",
        _id(),
        sa.Column("project_id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("from_model_id", sa.Uuid(), nullable=False),
        sa.Column("to_model_id", sa.Uuid(), nullable=False),
        sa.Column("join_type", sa.Text(), server_default="many_to_one", nullable=False),
        sa.Column(
            "condition",
            sa.Text(),
            nullable=False,
            comment="Join condition, e.g. orders.customer_id = customers.id",
        ),
        _metadata(),
        _created_at(),
        _updated_at(),
        sa.PrimaryKeyConstraint("id", name="mdl_relationships_pkey"),
        _fk("mdl_relationships", "project_id", "mdl_projects", "CASCADE"),
        _fk("mdl_relationships", "from_model_id", "mdl_models", "CASCADE"),
        _fk("mdl_relationships", "to_model_id", "mdl_models", "CASCADE"),
        sa.UniqueConstraint("project_id", "name", name="mdl_relationships_project_id_name_key"),
        sa.CheckConstraint(
            "join_type IN ('one_to_one', 'one_to_many', 'many_to_one', 'many_to_many')",
            name="mdl_relationships_join_type_check",
        ),
        comment="Join relationships between MDL models",
    )
    op.create_index("mdl_relationships_from_model_id_idx", "mdl_relationships", ["from_model_id"])
    op.create_index("mdl_relationships_to_model_id_idx", "mdl_relationships", ["to_model_id"])

    # --- Diagnosis system ----------------------------------------------------
    op.create_table(
        "error_patterns",
        _id(),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("db_type", sa.Text(), nullable=True),
        sa.Column("error_code", sa.Text(), nullable=True),
        sa.Column(
            "pattern",
            sa.Text(),
            nullable=False,
            comment="Regular expression matched against database error messages",
        ),
        sa.Column("category", sa.Text(), server_default="other", nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("fix_template", sa.Text(), nullable=True),
        sa.Column("severity", sa.Text(), server_default="error", nullable=False),
        sa.Column("is_active", sa.Boolean(), server_default=sa.text("true"), nullable=False),
        sa.Column("match_count", sa.Integer(), server_default=sa.text("0"), nullable=False),
        _metadata(),
        sa.Column("last_matched_at", TIMESTAMPTZ, nullable=True),
        _created_at(),
        _updated_at(),
        sa.PrimaryKeyConstraint("id", name="error_patterns_pkey"),
        sa.CheckConstraint(
            "severity IN ('info', 'warning', 'error', 'critical')",
            name="error_patterns_severity_check",
        ),
        comment="Known SQL error patterns used by the diagnosis system",
    )
    op.create_index("error_patterns_name_key", "error_patterns", ["name"], unique=True)
    op.create_index("error_patterns_db_type_error_code_idx", "error_patterns", ["db_type", "error_code"])

    op.create_table(
        "sql_corrections",
        _id(),
        sa.Column("error_pattern_id", sa.Uuid(), nullable=True),
        sa.Column("query_history_id", sa.Uuid(), nullable=True),
        sa.Column("message_id", sa.Uuid(), nullable=True),
        sa.Column("datasource_id", sa.Uuid(), nullable=True),
        sa.Column("user_id", sa.Uuid(), nullable=True),
        sa.Column("original_sql", sa.Text(), nullable=False),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("corrected_sql", sa.Text(), nullable=True),
        sa.Column("explanation", sa.Text(), nullable=True),
        sa.Column("correction_source", sa.Text(), server_default="llm", nullable=False),
        sa.Column("attempt_number", sa.Integer(), server_default=sa.text("1"), nullable=False),
        sa.Column("was_successful", sa.Boolean(), nullable=True),
        _metadata(),
        _created_at(),
        sa.PrimaryKeyConstraint("id", name="sql_corrections_pkey"),
        _fk("sql_corrections", "error_pattern_id", "error_patterns", "SET NULL"),
        _fk("sql_corrections", "query_history_id", "query_history", "SET NULL"),
        _fk("sql_corrections", "message_id", "chat_messages", "CASCADE"),
        _fk("sql_corrections", "datasource_id", "datasources", "SET NULL"),
        _fk("sql_corrections", "user_id", "app_users", "SET NULL"),
        sa.CheckConstraint(
            "correction_source IN ('llm', 'rule', 'user')",
            name="sql_corrections_correction_source_check",
        ),
        comment="History of SQL corrections produced by the diagnosis system",
    )
    op.create_index("sql_corrections_error_pattern_id_idx", "sql_corrections", ["error_pattern_id"])
    op.create_index("sql_corrections_query_history_id_idx", "sql_corrections", ["query_history_id"])
    op.create_index("sql_corrections_message_id_idx", "sql_corrections", ["message_id"])
    op.create_index("sql_corrections_datasource_id_idx", "sql_corrections", ["datasource_id"])
    op.create_index("sql_corrections_user_id_idx", "sql_corrections", ["user_id"])
    op.create_index("sql_corrections_created_at_idx", "sql_corrections", ["created_at"])


def downgrade() -> None:
    """Downgrade schema: drop every table, dependents first (indexes go with their tables)."""
    for table in (
        "sql_corrections",
        "error_patterns",
        "mdl_relationships",
        "mdl_fields",
        "mdl_models",
        "mdl_projects",
        "saved_queries",
        "chat_history",
        "query_history",
        "visualizations",
        "chat_messages",
        "chat_sessions",
        "datasources",
        "user_sessions",
        "app_users",
    ):
        op.drop_table(table)
