-- Roles for the backend-auth matrix, created on every server (run against the 'postgres' database as superuser).
-- pg_hba.conf (written by tests/cluster.sh) decides the method per role; the stored form decides what md5 can do.
SET password_encryption = 'scram-sha-256';
CREATE ROLE pgr_scram LOGIN PASSWORD 'scram_pw';
CREATE ROLE pgr_clear LOGIN PASSWORD 'clear_pw';
CREATE ROLE pgr_trust LOGIN;
-- md5 auth needs an md5-stored password: a SCRAM verifier would make the server upgrade the exchange to SCRAM.
SET password_encryption = 'md5';
CREATE ROLE pgr_md5 LOGIN PASSWORD 'md5_pw';
RESET password_encryption;
