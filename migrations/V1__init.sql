-- Service metadata (schema version notes, instance markers). The replica's tables come in
-- later migrations.
CREATE TABLE IF NOT EXISTS waypoint_meta (
    key        text PRIMARY KEY,
    value      text NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
