-- ChatBI application metadata schema (bootstrap equivalent of migration 0001_initial_schema).
-- Creates the 15 app tables in an empty "chatbi" database. Plain script: the caller wraps it
-- in a single transaction and stamps the migration version itself.

-- ---------------------------------------------------------------------------
-- User management
-- ---------------------------------------------------------------------------

CREATE TABLE app_users (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    email           text NOT NULL,
    username        text,
    display_name    text,
    password_hash   text,
    role            text NOT NULL DEFAULT 'user'
                    CHECK (role IN ('admin', 'editor', 'user', 'viewer')),
    is_active       boolean NOT NULL DEFAULT true,
    settings        jsonb NOT NULL DEFAULT '{}'::jsonb,
    last_login_at   timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE app_users IS 'ChatBI user accounts';
COMMENT ON COLUMN app_users.password_hash IS 'One-way password hash (e.g. argon2/bcrypt); never plaintext';
CREATE UNIQUE INDEX app_users_email_lower_key ON app_users (lower(email));
CREATE UNIQUE INDEX app_users_username_lower_key ON app_users (lower(username)) WHERE username IS NOT NULL;

CREATE TABLE user_sessions (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id         uuid NOT NULL REFERENCES app_users (id) ON DELETE CASCADE,
    token_hash      text NOT NULL,
    ip_address      inet,
    user_agent      text,
    expires_at      timestamptz NOT NULL,
    revoked_at      timestamptz,
    last_seen_at    timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE user_sessions IS 'User authentication sessions';
COMMENT ON COLUMN user_sessions.token_hash IS 'Hash of the session token; the raw token is never stored';
CREATE UNIQUE INDEX user_sessions_token_hash_key ON user_sessions (token_hash);
CREATE INDEX user_sessions_user_id_idx ON user_sessions (user_id);
CREATE INDEX user_sessions_expires_at_idx ON user_sessions (expires_at);

-- ---------------------------------------------------------------------------
-- Data sources and chat
-- ---------------------------------------------------------------------------

CREATE TABLE datasources (
    id                  uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    owner_id            uuid REFERENCES app_users (id) ON DELETE CASCADE,
    name                text NOT NULL,
    description         text,
    db_type             text NOT NULL DEFAULT 'postgresql'
                        CHECK (db_type IN ('postgresql', 'mysql', 'sqlite', 'duckdb',
                                           'clickhouse', 'snowflake', 'bigquery', 'mssql')),
    host                text,
    port                integer CHECK (port IS NULL OR port BETWEEN 1 AND 65535),
    database_name       text,
    username            text,
    password_encrypted  bytea,
    ssl_mode            text,
    options             jsonb NOT NULL DEFAULT '{}'::jsonb,
    schema_cache        jsonb,
    schema_cached_at    timestamptz,
    is_default          boolean NOT NULL DEFAULT false,
    is_active           boolean NOT NULL DEFAULT true,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE datasources IS 'Database connection configurations queried by ChatBI';
COMMENT ON COLUMN datasources.password_encrypted IS
    'Encrypted connection password (ciphertext produced by the application key); never plaintext';
CREATE INDEX datasources_owner_id_idx ON datasources (owner_id);
CREATE UNIQUE INDEX datasources_name_key ON datasources (lower(name));
CREATE UNIQUE INDEX datasources_single_default_key ON datasources (is_default) WHERE is_default;

CREATE TABLE chat_sessions (
    id                  uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id             uuid REFERENCES app_users (id) ON DELETE CASCADE,
    datasource_id       uuid REFERENCES datasources (id) ON DELETE SET NULL,
    title               text,
    is_archived         boolean NOT NULL DEFAULT false,
    metadata            jsonb NOT NULL DEFAULT '{}'::jsonb,
    last_message_at     timestamptz,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE chat_sessions IS 'Chat conversation sessions';
CREATE INDEX chat_sessions_user_id_idx ON chat_sessions (user_id, updated_at DESC);
CREATE INDEX chat_sessions_datasource_id_idx ON chat_sessions (datasource_id);

CREATE TABLE chat_messages (
    id                  uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    session_id          uuid NOT NULL REFERENCES chat_sessions (id) ON DELETE CASCADE,
    role                text NOT NULL CHECK (role IN ('user', 'assistant', 'system', 'tool')),
    content             text NOT NULL DEFAULT '',
    generated_sql       text,
    sql_error           text,
    result_preview      jsonb,
    row_count           integer,
    execution_time_ms   integer,
    model_name          text,
    prompt_tokens       integer,
    completion_tokens   integer,
    feedback            smallint CHECK (feedback IS NULL OR feedback IN (-1, 1)),
    metadata            jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at          timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE chat_messages IS 'Individual messages within a chat session';
CREATE INDEX chat_messages_session_id_created_at_idx ON chat_messages (session_id, created_at);

CREATE TABLE visualizations (
    id                  uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    message_id          uuid NOT NULL REFERENCES chat_messages (id) ON DELETE CASCADE,
    session_id          uuid NOT NULL REFERENCES chat_sessions (id) ON DELETE CASCADE,
    chart_type          text NOT NULL DEFAULT 'table',
    title               text,
    chart_spec          jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE visualizations IS 'Chart configurations for query results';
COMMENT ON COLUMN visualizations.chart_spec IS 'Chart specification (e.g. ECharts/Vega-Lite JSON)';
CREATE INDEX visualizations_message_id_idx ON visualizations (message_id);
CREATE INDEX visualizations_session_id_idx ON visualizations (session_id);

CREATE TABLE query_history (
    id                  uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id             uuid REFERENCES app_users (id) ON DELETE SET NULL,
    datasource_id       uuid REFERENCES datasources (id) ON DELETE SET NULL,
    session_id          uuid REFERENCES chat_sessions (id) ON DELETE SET NULL,
    message_id          uuid REFERENCES chat_messages (id) ON DELETE SET NULL,
    natural_language    text,
    sql_text            text NOT NULL,
    status              text NOT NULL DEFAULT 'success'
                        CHECK (status IN ('success', 'error', 'cancelled', 'timeout')),
    error_message       text,
    row_count           integer,
    execution_time_ms   integer,
    created_at          timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE query_history IS 'SQL execution history';
CREATE INDEX query_history_created_at_idx ON query_history (created_at);
CREATE INDEX query_history_user_id_idx ON query_history (user_id, created_at DESC);
CREATE INDEX query_history_datasource_id_idx ON query_history (datasource_id);
CREATE INDEX query_history_session_id_idx ON query_history (session_id);
CREATE INDEX query_history_message_id_idx ON query_history (message_id);

CREATE TABLE chat_history (
    id                  uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id             uuid REFERENCES app_users (id) ON DELETE SET NULL,
    session_id          uuid REFERENCES chat_sessions (id) ON DELETE SET NULL,
    datasource_id       uuid REFERENCES datasources (id) ON DELETE SET NULL,
    question            text NOT NULL,
    answer              text,
    generated_sql       text,
    intent              text,
    success             boolean,
    latency_ms          integer,
    tokens_used         integer,
    metadata            jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at          timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE chat_history IS 'Conversation analytics (one row per question/answer turn)';
CREATE INDEX chat_history_created_at_idx ON chat_history (created_at);
CREATE INDEX chat_history_user_id_idx ON chat_history (user_id);
CREATE INDEX chat_history_session_id_idx ON chat_history (session_id);
CREATE INDEX chat_history_datasource_id_idx ON chat_history (datasource_id);

CREATE TABLE saved_queries (
    id                  uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id             uuid NOT NULL REFERENCES app_users (id) ON DELETE CASCADE,
    datasource_id       uuid REFERENCES datasources (id) ON DELETE SET NULL,
    name                text NOT NULL,
    description         text,
    natural_language    text,
    sql_text            text NOT NULL,
    chart_spec          jsonb,
    tags                text[] NOT NULL DEFAULT '{}',
    is_shared           boolean NOT NULL DEFAULT false,
    last_run_at         timestamptz,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE saved_queries IS 'User-saved SQL queries';
CREATE INDEX saved_queries_user_id_idx ON saved_queries (user_id);
CREATE INDEX saved_queries_datasource_id_idx ON saved_queries (datasource_id);

-- ---------------------------------------------------------------------------
-- MDL (Metadata Definition Layer)
-- ---------------------------------------------------------------------------

CREATE TABLE mdl_projects (
    id                  uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    datasource_id       uuid REFERENCES datasources (id) ON DELETE CASCADE,
    owner_id            uuid REFERENCES app_users (id) ON DELETE SET NULL,
    name                text NOT NULL,
    description         text,
    catalog             text,
    schema_name         text,
    version             integer NOT NULL DEFAULT 1,
    metadata            jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE mdl_projects IS 'MDL project definitions (one semantic layer per datasource)';
CREATE INDEX mdl_projects_datasource_id_idx ON mdl_projects (datasource_id);
CREATE INDEX mdl_projects_owner_id_idx ON mdl_projects (owner_id);
CREATE UNIQUE INDEX mdl_projects_name_key ON mdl_projects (name);

CREATE TABLE mdl_models (
    id                  uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    project_id          uuid NOT NULL REFERENCES mdl_projects (id) ON DELETE CASCADE,
    name                text NOT NULL,
    display_name        text,
    description         text,
    table_reference     text,
    ref_sql             text,
    primary_key         text,
    metadata            jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    UNIQUE (project_id, name)
);
COMMENT ON TABLE mdl_models IS 'MDL data models (logical tables)';
-- project_id is covered by the leading column of the (project_id, name) unique index.

CREATE TABLE mdl_fields (
    id                  uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    model_id            uuid NOT NULL REFERENCES mdl_models (id) ON DELETE CASCADE,
    name                text NOT NULL,
    display_name        text,
    description         text,
    data_type           text NOT NULL,
    field_kind          text NOT NULL DEFAULT 'column'
                        CHECK (field_kind IN ('column', 'dimension', 'measure', 'calculated')),
    expression          text,
    aggregation         text,
    is_primary_key      boolean NOT NULL DEFAULT false,
    is_nullable         boolean NOT NULL DEFAULT true,
    is_hidden           boolean NOT NULL DEFAULT false,
    ordinal_position    integer,
    metadata            jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    UNIQUE (model_id, name)
);
COMMENT ON TABLE mdl_fields IS 'Fields (columns, dimensions, measures) of MDL models';
-- model_id is covered by the leading column of the (model_id, name) unique index.

CREATE TABLE mdl_relationships (
    id                  uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    project_id          uuid NOT NULL REFERENCES mdl_projects (id) ON DELETE CASCADE,
    name                text NOT NULL,
    from_model_id       uuid NOT NULL REFERENCES mdl_models (id) ON DELETE CASCADE,
    to_model_id         uuid NOT NULL REFERENCES mdl_models (id) ON DELETE CASCADE,
    join_type           text NOT NULL DEFAULT 'many_to_one'
                        CHECK (join_type IN ('one_to_one', 'one_to_many', 'many_to_one', 'many_to_many')),
    condition           text NOT NULL,
    metadata            jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    UNIQUE (project_id, name)
);
COMMENT ON TABLE mdl_relationships IS 'Join relationships between MDL models';
COMMENT ON COLUMN mdl_relationships.condition IS 'Join condition, e.g. orders.customer_id = customers.id';
CREATE INDEX mdl_relationships_from_model_id_idx ON mdl_relationships (from_model_id);
CREATE INDEX mdl_relationships_to_model_id_idx ON mdl_relationships (to_model_id);

-- ---------------------------------------------------------------------------
-- Diagnosis system
-- ---------------------------------------------------------------------------

CREATE TABLE error_patterns (
    id                  uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name                text NOT NULL,
    db_type             text,
    error_code          text,
    pattern             text NOT NULL,
    category            text NOT NULL DEFAULT 'other',
    description         text,
    fix_template        text,
    severity            text NOT NULL DEFAULT 'error'
                        CHECK (severity IN ('info', 'warning', 'error', 'critical')),
    is_active           boolean NOT NULL DEFAULT true,
    match_count         integer NOT NULL DEFAULT 0,
    metadata            jsonb NOT NULL DEFAULT '{}'::jsonb,
    last_matched_at     timestamptz,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE error_patterns IS 'Known SQL error patterns used by the diagnosis system';
COMMENT ON COLUMN error_patterns.pattern IS 'Regular expression matched against database error messages';
CREATE UNIQUE INDEX error_patterns_name_key ON error_patterns (name);
CREATE INDEX error_patterns_db_type_error_code_idx ON error_patterns (db_type, error_code);

CREATE TABLE sql_corrections (
    id                  uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    error_pattern_id    uuid REFERENCES error_patterns (id) ON DELETE SET NULL,
    query_history_id    uuid REFERENCES query_history (id) ON DELETE SET NULL,
    message_id          uuid REFERENCES chat_messages (id) ON DELETE CASCADE,
    datasource_id       uuid REFERENCES datasources (id) ON DELETE SET NULL,
    user_id             uuid REFERENCES app_users (id) ON DELETE SET NULL,
    original_sql        text NOT NULL,
    error_message       text,
    corrected_sql       text,
    explanation         text,
    correction_source   text NOT NULL DEFAULT 'llm'
                        CHECK (correction_source IN ('llm', 'rule', 'user')),
    attempt_number      integer NOT NULL DEFAULT 1,
    was_successful      boolean,
    metadata            jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at          timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE sql_corrections IS 'History of SQL corrections produced by the diagnosis system';
CREATE INDEX sql_corrections_error_pattern_id_idx ON sql_corrections (error_pattern_id);
CREATE INDEX sql_corrections_query_history_id_idx ON sql_corrections (query_history_id);
CREATE INDEX sql_corrections_message_id_idx ON sql_corrections (message_id);
CREATE INDEX sql_corrections_datasource_id_idx ON sql_corrections (datasource_id);
CREATE INDEX sql_corrections_user_id_idx ON sql_corrections (user_id);
CREATE INDEX sql_corrections_created_at_idx ON sql_corrections (created_at);
