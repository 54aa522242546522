-- One database per service (ARCHITECTURE §2): each service has its own Alembic version chain
-- and tables, and GATEHOUSE_DATABASE_URL names `gatehouse_{service}`. Runs once, on an empty
-- data volume (docker-entrypoint-initdb.d).
CREATE DATABASE gatehouse_auth OWNER gatehouse;
CREATE DATABASE gatehouse_access OWNER gatehouse;
CREATE DATABASE gatehouse_monitoring OWNER gatehouse;
CREATE DATABASE gatehouse_payments OWNER gatehouse;
CREATE DATABASE gatehouse_notifications OWNER gatehouse;
