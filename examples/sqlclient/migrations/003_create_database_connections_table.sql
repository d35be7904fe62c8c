-- Migration 003: database_connections table (depends on users).
-- Saved connection profiles of each user; deleting a user deletes its connections.

CREATE TABLE IF NOT EXISTS database_connections (
    id            UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id       UUID NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name          VARCHAR(255) NOT NULL,
    type          VARCHAR(50) NOT NULL DEFAULT 'postgresql',
    host          VARCHAR(255) NOT NULL,
    port          INTEGER NOT NULL DEFAULT 5432 CHECK (port BETWEEN 1 AND 65535),
    database_name VARCHAR(255) NOT NULL,
    username      VARCHAR(255) NOT NULL,
    password      TEXT,
    ssl_mode      VARCHAR(20) NOT NULL DEFAULT 'prefer',
    last_used_at  TIMESTAMP WITH TIME ZONE,
    created_at    TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT CURRENT_TIMESTAMP,
    updated_at    TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT CURRENT_TIMESTAMP
);

COMMENT ON COLUMN database_connections.password IS
    'Connection password; must hold an encrypted value (encrypted by the application), never plaintext in production';

CREATE INDEX IF NOT EXISTS idx_database_connections_user_id ON database_connections (user_id);
CREATE UNIQUE INDEX IF NOT EXISTS idx_database_connections_user_id_name ON database_connections (user_id, name);
