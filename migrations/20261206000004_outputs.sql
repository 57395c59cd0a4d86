-- A processed video can have more than one output: the ladder's MP4s, HLS
-- playlists and segments, a storyboard. The row records the set as JSONB
-- rather than in a `renditions` table: it is written once, with the outcome,
-- in the same fenced UPDATE, and always read whole (by the completion event,
-- `vidworker status` and the platform's API), never joined or updated one
-- output at a time. Every key in it lies under the claim's own prefix
-- (`processed/<id>/<claim>/`), which is what clean-up protects.
--
-- `cost` is what the job took: CPU seconds of its transcode, wall seconds
-- per stage, and a dollar estimate when a price per vCPU-hour is set.
ALTER TABLE videos
    ADD COLUMN outputs jsonb,
    ADD COLUMN cost jsonb;
