package storage

// SetS3CopyLimit lowers the size above which S3 copies go in parts, and
// the size of those parts, so tests can take that path without 5 GiB blobs.
func SetS3CopyLimit(s *S3, limit, part int64) { s.copyLimit, s.copyPart = limit, part }
