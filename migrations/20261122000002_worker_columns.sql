-- What the worker records about each job.
ALTER TABLE videos
    -- Outcome.
    ADD COLUMN processed_key          text,
    ADD COLUMN error                  text,          -- last failure, for a person
    ADD COLUMN attempts               integer NOT NULL DEFAULT 0,
    ADD COLUMN processing_started_at  timestamptz,
    ADD COLUMN processed_at           timestamptz,
    ADD COLUMN updated_at             timestamptz NOT NULL DEFAULT now(),
    -- The claim: who holds the video, until when, and a token that changes
    -- with every claim so a worker whose lease ran out cannot write over the
    -- work of the one that took over (a fencing token).
    ADD COLUMN claimed_by             text,
    ADD COLUMN claim_token            uuid,
    ADD COLUMN lease_expires_at       timestamptz,
    -- What the worker learnt about the video.
    ADD COLUMN source_duration_seconds double precision,
    ADD COLUMN source_width            integer,
    ADD COLUMN source_height           integer,
    ADD COLUMN original_bytes          bigint,
    ADD COLUMN processed_bytes         bigint,
    ADD COLUMN processed_duration_seconds double precision,
    ADD COLUMN media_info              jsonb,        -- the full probe of the original
    ADD CONSTRAINT videos_processed_has_key
        CHECK (status <> 'processed' OR processed_key IS NOT NULL),
    ADD CONSTRAINT videos_processing_has_lease
        CHECK (status <> 'processing' OR (claim_token IS NOT NULL AND lease_expires_at IS NOT NULL));

-- Operators look for stuck or failed videos by status.
CREATE INDEX IF NOT EXISTS videos_status_updated_idx ON videos (status, updated_at);
