package blob

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
)

// MaxParts is the most parts one multipart upload may have (S3's limit).
const MaxParts = 10000

// MinPartSize is the smallest part but the last that S3 accepts.
const MinPartSize = minPart

// StoredPart is a part an unfinished upload already holds.
type StoredPart struct {
	Number int32  `json:"number"`
	Size   int64  `json:"size"`
	ETag   string `json:"etag"`
}

// Resume returns the newest unfinished multipart upload to key with the
// parts it holds, or starts a new one. Whoever holds its parts' presigned
// URLs continues it; nothing else about it is secret.
func (s *Store) Resume(ctx context.Context, key string) (uploadID string, stored []StoredPart, err error) {
	id, parts, err := s.resumable(ctx, key)
	if err != nil {
		return "", nil, err
	}
	for n, p := range parts {
		stored = append(stored, StoredPart{Number: n, Size: aws.ToInt64(p.Size), ETag: aws.ToString(p.ETag)})
	}
	return id, stored, nil
}

// PresignPart returns a URL that uploads part num of the upload to key with
// an HTTP PUT of exactly size bytes, valid for ttl. The signature covers the
// bucket, the key, the upload id, the part number and the length, so the URL
// writes nothing else.
func (s *Store) PresignPart(ctx context.Context, key, uploadID string, num int32, size int64, ttl time.Duration) (string, error) {
	if num < 1 || num > MaxParts {
		return "", fmt.Errorf("part number %d is outside 1..%d", num, MaxParts)
	}
	req, err := s3.NewPresignClient(s.s3).PresignUploadPart(ctx, &s3.UploadPartInput{
		Bucket: &s.bucket, Key: &key, UploadId: &uploadID, PartNumber: aws.Int32(num), ContentLength: aws.Int64(size),
	}, s3.WithPresignExpires(ttl))
	if err != nil {
		return "", fmt.Errorf("object store: presigning part %d of %s: %w", num, key, err)
	}
	return req.URL, nil
}

// CompletedPart is a part the uploader sent, with the ETag the store answered.
type CompletedPart struct {
	Number int32  `json:"number"`
	ETag   string `json:"etag"`
}

// ErrBadParts says a completion named parts the upload does not hold.
var ErrBadParts = errors.New("the upload's parts do not match")

// Complete finishes the multipart upload to key from parts (in order, 1..n).
func (s *Store) Complete(ctx context.Context, key, uploadID string, parts []CompletedPart) error {
	if len(parts) == 0 || len(parts) > MaxParts {
		return fmt.Errorf("%w: %d parts", ErrBadParts, len(parts))
	}
	cp := make([]types.CompletedPart, len(parts))
	for i, p := range parts {
		if p.Number != int32(i+1) || p.ETag == "" {
			return fmt.Errorf("%w: part %d of %d is numbered %d", ErrBadParts, i+1, len(parts), p.Number)
		}
		cp[i] = types.CompletedPart{PartNumber: aws.Int32(p.Number), ETag: aws.String(p.ETag)}
	}
	_, err := s.s3.CompleteMultipartUpload(ctx, &s3.CompleteMultipartUploadInput{
		Bucket: &s.bucket, Key: &key, UploadId: &uploadID, MultipartUpload: &types.CompletedMultipartUpload{Parts: cp},
	})
	if err != nil {
		if e := notFound(err); errors.Is(e, ErrNotFound) {
			return e
		}
		var code interface{ ErrorCode() string }
		if errors.As(err, &code) && (code.ErrorCode() == "InvalidPart" || code.ErrorCode() == "InvalidPartOrder" || code.ErrorCode() == "EntityTooSmall") {
			return fmt.Errorf("%w: %v", ErrBadParts, err)
		}
		return fmt.Errorf("object store: completing %s: %w", key, err)
	}
	return nil
}
