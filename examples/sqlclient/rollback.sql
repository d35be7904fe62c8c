-- Rollback for the SQL client migrations 001-004: drops all four tables in reverse order.
-- WARNING: this deletes all data.

DROP TABLE IF EXISTS query_executions CASCADE;
DROP TABLE IF EXISTS database_connections CASCADE;
DROP TABLE IF EXISTS sessions CASCADE;
DROP TABLE IF EXISTS users CASCADE;
