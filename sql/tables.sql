-- pgbaas protected tables: the team's own tables under pgbaas permissions (issue 17,
-- docs/tables.md). baas.protect installs forced row-level security policies made from
-- the same principals and rules as documents (sql/permissions.sql); protected tables in
-- exposed schemas (sql/rpc.sql) are served at /v1/tables/{table}.

------------------------------------------------------------------------ definitions
-- One row per protected table: the definition its policies are made from. The tables
-- door serves only tables listed here (and in an exposed schema); the lints compare
-- each table's policies with the ones its definition makes.
create table baas.protected_tables (
    rel regclass primary key,
    -- A uuid column: the row's owner, who may read, update and delete it.
    owner_column name,
    -- A jsonb column holding a document-shaped ACL {"read":[],"update":[],"delete":[]}.
    acl_column name,
    -- A column whose value names the row's tenant (see baas.protect).
    tenant_column name,
    -- A bigint column bumped on every update: the ETag / If-Match version; NULL: xmin.
    version_column name,
    -- Principals that may read / create / update / delete every row (tenant permitting).
    read_principals text[] not null default '{}',
    create_principals text[] not null default '{}',
    update_principals text[] not null default '{}',
    delete_principals text[] not null default '{}',
    protected_at timestamptz not null default now()
);
revoke all on baas.protected_tables from public;
alter table baas.protected_tables enable row level security;
alter table baas.protected_tables force row level security;
comment on table baas.protected_tables is
    'Tables under pgbaas permissions (baas.protect): the definition their row-level policies are made from';

------------------------------------------------------------------------ lints
-- The protected tables' security lints, one branch of baas.security_lints() (sql/lints.sql).
create function baas._table_lints()
returns table (lint text, object text, detail text)
language plpgsql stable
set search_path = pg_catalog, pg_temp
as $$
begin
    return;
end
$$;
