-- Transcodes run in a sandboxed child process: a video can now fail
-- because its transcode crashed on every attempt (a decoder bug the input
-- triggers) or because it needed more memory than MEMORY_PER_JOB allows.
-- Both are redrivable: a fixed FFmpeg or a larger limit may make them.
ALTER TABLE videos
    DROP CONSTRAINT videos_failure_kind_check,
    ADD CONSTRAINT videos_failure_kind_check
        CHECK (failure_kind IN ('input', 'gave_up', 'stranded', 'crashed', 'over_memory'));
