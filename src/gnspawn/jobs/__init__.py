"""Jobs: their record and store, the queue, and the kinds of job with what they share."""
