-- Runs once, when the PostgreSQL container starts on an empty data directory.
-- Databases of the infrastructure only: each shop service creates its own database if missing.
CREATE DATABASE registry OWNER shop;  -- Apicurio Registry storage
CREATE DATABASE ferretdb OWNER shop;  -- FerretDB's PostgreSQL backend, as in the local stack
