-- Sample schema for the 'app' database on every server: a small catalog shaped like the queries pgrouter routes
-- and caches (multi-tenant, soft-deleted rows, composite indexes on the filtered columns).
CREATE TABLE brands (
    id          bigserial PRIMARY KEY,
    tenant_id   bigint      NOT NULL,
    name        text        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    deleted_at  timestamptz
);
CREATE INDEX brands_deleted_at_idx ON brands (deleted_at);

CREATE TABLE categories (
    id          bigserial PRIMARY KEY,
    tenant_id   bigint      NOT NULL,
    parent_id   bigint REFERENCES categories (id),
    name        text        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    deleted_at  timestamptz
);
CREATE INDEX categories_parent_id_deleted_at_idx ON categories (parent_id, deleted_at);

CREATE TABLE products (
    id           bigserial PRIMARY KEY,
    tenant_id    bigint        NOT NULL,
    brand_id     bigint REFERENCES brands (id),
    category_id  bigint REFERENCES categories (id),
    name         text          NOT NULL,
    price        numeric(10,2) NOT NULL DEFAULT 0,
    is_published boolean       NOT NULL DEFAULT false,
    created_at   timestamptz   NOT NULL DEFAULT now(),
    deleted_at   timestamptz
);
CREATE INDEX products_deleted_at_created_at_idx ON products (deleted_at, created_at);
CREATE INDEX products_category_id_deleted_at_idx ON products (category_id, deleted_at);
CREATE INDEX products_is_published_deleted_at_idx ON products (is_published, deleted_at);

CREATE TABLE users (
    id          bigserial PRIMARY KEY,
    tenant_id   bigint      NOT NULL,
    email       text        NOT NULL,
    name        text        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    deleted_at  timestamptz,
    UNIQUE (tenant_id, email)
);

-- Scratch table the real-client tests write to (inside transactions they mostly roll back).
CREATE TABLE client_events (
    id          bigserial PRIMARY KEY,
    client      text        NOT NULL,
    note        text,
    created_at  timestamptz NOT NULL DEFAULT now()
);

INSERT INTO brands (tenant_id, name, deleted_at) VALUES
    (1, 'Acme', NULL), (1, 'Globex', NULL), (2, 'Initech', NULL), (2, 'Umbrella', now() - interval '3 days');

INSERT INTO categories (tenant_id, parent_id, name) VALUES
    (1, NULL, 'Tools'), (1, 1, 'Hammers'), (2, NULL, 'Office'), (2, 3, 'Staplers');

INSERT INTO products (tenant_id, brand_id, category_id, name, price, is_published, created_at, deleted_at)
SELECT 1 + (n % 2), 1 + (n % 4), 1 + (n % 4), 'product ' || n, (n * 1.25)::numeric(10,2), n % 3 <> 0,
       now() - n * interval '1 hour', CASE WHEN n % 10 = 0 THEN now() - interval '1 day' END
FROM generate_series(1, 40) AS n;

INSERT INTO users (tenant_id, email, name) VALUES
    (1, 'ada@example.com', 'Ada'), (1, 'grace@example.com', 'Grace'), (2, 'linus@example.com', 'Linus');

-- Every test role may read and write the sample tables and create its own (PostgreSQL 15 revoked CREATE on public).
GRANT USAGE, CREATE ON SCHEMA public TO pgr_scram, pgr_md5, pgr_clear, pgr_trust;
GRANT ALL ON ALL TABLES IN SCHEMA public TO pgr_scram, pgr_md5, pgr_clear, pgr_trust;
GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO pgr_scram, pgr_md5, pgr_clear, pgr_trust;
