-- The queue-less design's schema: the invariants live in PostgreSQL.
CREATE TABLE users (
    id bigserial PRIMARY KEY,
    name text NOT NULL,
    email text NOT NULL UNIQUE,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE events (
    id bigserial PRIMARY KEY,
    name text NOT NULL UNIQUE,
    date timestamptz NOT NULL,
    location text NOT NULL,
    max_tickets integer NOT NULL CHECK (max_tickets >= 0),
    reserved integer NOT NULL DEFAULT 0 CHECK (reserved >= 0 AND reserved <= max_tickets),
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE reservations (
    id bigserial PRIMARY KEY,
    event_id bigint NOT NULL REFERENCES events (id),
    user_id bigint NOT NULL REFERENCES users (id),
    reserved_at timestamptz NOT NULL DEFAULT now(),
    -- One ticket per user and event; also the index the per-event reads use.
    UNIQUE (event_id, user_id)
);
