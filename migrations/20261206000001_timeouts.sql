-- Attempts that ran past the time limit, since the video was last
-- (re)queued: the first is blamed on a slow machine and retried, a second
-- on the input. A fact the worker decides on, where it used to compare the
-- last error's name.
ALTER TABLE videos ADD COLUMN timeouts integer NOT NULL DEFAULT 0;

UPDATE videos SET timeouts = 1
 WHERE status IN ('pending', 'processing') AND last_error_kind = 'timed_out';
