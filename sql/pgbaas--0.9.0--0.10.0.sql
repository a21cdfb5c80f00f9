-- pgbaas 0.9.0 -> 0.10.0, run by ALTER EXTENSION pgbaas UPDATE.
--
-- It turns a 0.9.0 database into exactly what CREATE EXTENSION makes at 0.10.0:
-- tests/tests/upgrade.rs installs 0.9.0 from its release commit, fills it (files
-- included), runs this, checks the data through the proxy and compares the schema
-- (pg_dump --binary-upgrade) with a fresh install's. Every statement below is the final
-- text of the file it names (sql/CHANGES-0.10.0.md lists what changed and why). Older
-- databases upgrade through the earlier scripts first.
--
-- Once released, an upgrade script is never edited: a fix goes into the next version's.

-- ================================================================== sql/audit.sql
-- (package A: request ids)

-- ================================================================= sql/limits.sql
-- (package D: shared per-account limits)

-- ================================================================== sql/lints.sql

-- ================================================================= sql/grants.sql

-- Tell every proxy that the extension changed (see pgbaas--0.2.0--0.3.0.sql).
select pg_catalog.pg_notify('baas_extension', '0.10.0');
