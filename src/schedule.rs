//! Run times from `at` / `cron` schedules (owned by the schedule work).
