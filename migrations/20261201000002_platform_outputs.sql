-- What a video platform expects beside the rendition: its poster, live
-- progress, and the id of the completion event of the recorded outcome.
ALTER TABLE videos
    -- The poster (a JPEG of the rendition), beside it.
    ADD COLUMN poster_key       text,
    -- Where the current attempt is, for the upload page.
    ADD COLUMN phase            text NOT NULL DEFAULT 'queued',
    ADD COLUMN progress_percent smallint NOT NULL DEFAULT 0,
    -- The completion event (video.processed / video.failed) of the
    -- recorded outcome: a re-published event carries the same id.
    ADD COLUMN event_id         uuid;

UPDATE videos SET
    phase = CASE status WHEN 'processed' THEN 'done' WHEN 'failed' THEN 'failed' ELSE 'queued' END,
    progress_percent = CASE status WHEN 'processed' THEN 100 ELSE 0 END;

ALTER TABLE videos
    ADD CONSTRAINT videos_phase_check
        CHECK (phase IN ('queued', 'downloading', 'transcoding', 'uploading', 'recording', 'done', 'failed')),
    ADD CONSTRAINT videos_progress_check CHECK (progress_percent BETWEEN 0 AND 100);
