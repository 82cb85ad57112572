package blob

import (
	"context"

	"github.com/aws/aws-sdk-go-v2/service/s3"
)

// Ping reports whether the object store answers for the bucket.
func (s *Store) Ping(ctx context.Context) error {
	_, err := s.s3.HeadBucket(ctx, &s3.HeadBucketInput{Bucket: &s.bucket})
	return err
}
