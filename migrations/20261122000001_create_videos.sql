-- The contract with the platform's API: it inserts (id, original_key) with
-- status 'pending' and sends {"video_id": id} to SQS; vidworker fills in the
-- rest. Keys come from this row, never from the message.
CREATE TABLE IF NOT EXISTS videos (
    id           uuid PRIMARY KEY,
    original_key text NOT NULL,
    status       text NOT NULL DEFAULT 'pending'
                 CONSTRAINT videos_status_check
                 CHECK (status IN ('pending', 'processing', 'processed', 'failed')),
    created_at   timestamptz NOT NULL DEFAULT now()
);
