-- Migration 004: query_executions table (depends on users and database_connections).
-- History of queries run by a user against one of its connections.

CREATE TABLE IF NOT EXISTS query_executions (
    id                UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id           UUID NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    connection_id     UUID NOT NULL REFERENCES database_connections (id) ON DELETE CASCADE,
    query             TEXT NOT NULL,
    status            VARCHAR(20) NOT NULL DEFAULT 'success'
                      CHECK (status IN ('running', 'success', 'error', 'cancelled')),
    rows_affected     BIGINT,
    execution_time_ms INTEGER,
    error_message     TEXT,
    created_at        TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT CURRENT_TIMESTAMP
);

CREATE INDEX IF NOT EXISTS idx_query_executions_user_id ON query_executions (user_id);
CREATE INDEX IF NOT EXISTS idx_query_executions_connection_id ON query_executions (connection_id);
CREATE INDEX IF NOT EXISTS idx_query_executions_created_at ON query_executions (created_at);
