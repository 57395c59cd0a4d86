-- What it takes for every outcome to be recorded once and never undone.
ALTER TABLE videos
    -- The claim whose outcome the row records (processed, failed, or handed
    -- back): a write retried after its reply was lost (a failover after the
    -- commit, a reset connection) recognises its own and succeeds, instead
    -- of taking the row for a lost claim and deleting what it records.
    ADD COLUMN settled_token      uuid,
    -- Bumped by an operator's requeue or redrive and carried in the messages
    -- sent for it, so stray copies of older messages are recognised. A final
    -- row (processed or failed) is reopened only that way.
    ADD COLUMN generation         integer NOT NULL DEFAULT 0,
    -- The outbox: the completion event of the recorded outcome (event_id) is
    -- published by the job, or failing that by the reconciler, then marked
    -- here.
    ADD COLUMN event_published_at timestamptz;

-- Outcomes recorded before the outbox were announced (or given up on) then.
UPDATE videos SET event_published_at = updated_at
 WHERE status IN ('processed', 'failed') AND event_id IS NOT NULL;

CREATE INDEX IF NOT EXISTS videos_unpublished_idx ON videos (updated_at)
 WHERE event_id IS NOT NULL AND event_published_at IS NULL;

-- One reconciler for the fleet at a time: a lease on the database's clock,
-- renewed by the pass that holds it, so a frozen holder loses it when it
-- expires (a session advisory lock on an idle connection never did).
CREATE TABLE IF NOT EXISTS reconciler_lease (
    name           text PRIMARY KEY,
    holder         text NOT NULL,
    expires_at     timestamptz NOT NULL,
    -- When the job queue was last seen empty (no visible, in-flight or
    -- delayed message): no message sent before then can still be waiting.
    queue_empty_at timestamptz
);
