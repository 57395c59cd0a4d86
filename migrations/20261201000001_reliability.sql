-- What the worker needs to settle every job from the row itself, and what
-- the reconciler needs to find stranded ones.
ALTER TABLE videos
    -- Attempts handed back on purpose (shutdown, instance termination, a
    -- configuration error): they do not count toward giving up.
    ADD COLUMN interruptions   integer NOT NULL DEFAULT 0,
    -- Why a failed video failed: 'input' (the upload cannot be processed),
    -- 'gave_up' (transient failures on every allowed attempt), 'stranded'
    -- (no worker took it up, even after re-sends).
    ADD COLUMN failure_kind    text,
    -- The stable name of the last failure (e.g. 'timed_out'), for rules
    -- such as "a timeout is retried once".
    ADD COLUMN last_error_kind text,
    -- The current claim's rendition once uploaded, before it is recorded:
    -- a row with one is never failed by the reconciler.
    ADD COLUMN uploaded_key    text,
    -- Messages re-sent by the reconciler for this video, the last time and why.
    ADD COLUMN resends         integer NOT NULL DEFAULT 0,
    ADD COLUMN resent_at       timestamptz,
    ADD COLUMN resend_reason   text;

UPDATE videos SET failure_kind = CASE
        WHEN error LIKE 'gave up%' THEN 'gave_up'
        WHEN error LIKE 'abandoned%' THEN 'stranded'
        ELSE 'input'
    END
 WHERE status = 'failed';

ALTER TABLE videos
    ADD CONSTRAINT videos_failure_kind_check
        CHECK (failure_kind IN ('input', 'gave_up', 'stranded')),
    ADD CONSTRAINT videos_failed_has_kind
        CHECK ((status = 'failed') = (failure_kind IS NOT NULL));
