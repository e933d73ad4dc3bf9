//! Unit tests of the job queue.
