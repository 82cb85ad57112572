// Package blob stores adapter weights in S3 or an S3-compatible store
// (Cloudflare R2, MinIO): multipart uploads that resume where an interrupted
// one stopped, streamed checksums, copies and deletes.
package blob

import (
	"context"
	"crypto/md5"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go"
)

// Config points at a bucket.
type Config struct {
	// Endpoint is the S3 API's URL; empty means AWS S3 itself.
	Endpoint  string
	Region    string
	Bucket    string
	AccessKey string
	SecretKey string
}

// Validate says what is missing.
func (c Config) Validate() error {
	switch {
	case c.Bucket == "":
		return errors.New("object store: no bucket configured (--s3-bucket)")
	case c.AccessKey == "" || c.SecretKey == "":
		return errors.New("object store: no credentials configured (--s3-access-key, --s3-secret-key)")
	}
	return nil
}

// Store is one bucket.
type Store struct {
	s3     *s3.Client
	bucket string
}

// ErrNotFound is returned for a key that does not exist.
var ErrNotFound = errors.New("object not found")

// New returns a Store; it does not contact the service.
func New(c Config) (*Store, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	if c.Region == "" {
		c.Region = "us-east-1"
	}
	cl := s3.New(s3.Options{
		Region:                     c.Region,
		Credentials:                credentials.NewStaticCredentialsProvider(c.AccessKey, c.SecretKey, ""),
		UsePathStyle:               c.Endpoint != "",
		RequestChecksumCalculation: aws.RequestChecksumCalculationWhenRequired,
		ResponseChecksumValidation: aws.ResponseChecksumValidationWhenRequired,
		HTTPClient:                 &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 32, ForceAttemptHTTP2: true}},
	}, func(o *s3.Options) {
		if c.Endpoint != "" {
			o.BaseEndpoint = aws.String(c.Endpoint)
		}
	})
	return &Store{s3: cl, bucket: c.Bucket}, nil
}

// Bucket names the store's bucket.
func (s *Store) Bucket() string { return s.bucket }

// EnsureBucket creates the bucket if it does not exist.
func (s *Store) EnsureBucket(ctx context.Context) error {
	if _, err := s.s3.HeadBucket(ctx, &s3.HeadBucketInput{Bucket: &s.bucket}); err == nil {
		return nil
	}
	_, err := s.s3.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: &s.bucket})
	var owned *types.BucketAlreadyOwnedByYou
	if err != nil && !errors.As(err, &owned) {
		return fmt.Errorf("object store: creating bucket %s: %w", s.bucket, err)
	}
	return nil
}

// RemoveBucket deletes every object and upload in the bucket, then the bucket.
func (s *Store) RemoveBucket(ctx context.Context) error {
	p := s3.NewListObjectsV2Paginator(s.s3, &s3.ListObjectsV2Input{Bucket: &s.bucket})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return err
		}
		for _, o := range page.Contents {
			if err := s.Delete(ctx, *o.Key); err != nil {
				return err
			}
		}
	}
	if err := s.abortUploads(ctx, ""); err != nil {
		return err
	}
	_, err := s.s3.DeleteBucket(ctx, &s3.DeleteBucketInput{Bucket: &s.bucket})
	return err
}

// Info describes a stored object.
type Info struct {
	Size   int64
	SHA256 string
}

// Stat returns the object's size, or ErrNotFound.
func (s *Store) Stat(ctx context.Context, key string) (int64, error) {
	out, err := s.s3.HeadObject(ctx, &s3.HeadObjectInput{Bucket: &s.bucket, Key: &key})
	if err != nil {
		return 0, notFound(err)
	}
	return aws.ToInt64(out.ContentLength), nil
}

// Checksum streams the object and returns its size and SHA-256.
func (s *Store) Checksum(ctx context.Context, key string) (Info, error) {
	out, err := s.s3.GetObject(ctx, &s3.GetObjectInput{Bucket: &s.bucket, Key: &key})
	if err != nil {
		return Info{}, notFound(err)
	}
	defer out.Body.Close()
	h := sha256.New()
	n, err := io.Copy(h, out.Body)
	if err != nil {
		return Info{}, fmt.Errorf("object store: reading %s: %w", key, err)
	}
	return Info{Size: n, SHA256: hex.EncodeToString(h.Sum(nil))}, nil
}

// Download writes the object to path (through a temporary file, renamed
// into place when complete).
func (s *Store) Download(ctx context.Context, key, path string) error {
	out, err := s.s3.GetObject(ctx, &s3.GetObjectInput{Bucket: &s.bucket, Key: &key})
	if err != nil {
		return notFound(err)
	}
	defer out.Body.Close()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".download-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := io.Copy(tmp, out.Body); err != nil {
		tmp.Close()
		return fmt.Errorf("object store: downloading %s: %w", key, err)
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// Copy copies src to dst inside the bucket (server side).
func (s *Store) Copy(ctx context.Context, src, dst string) error {
	source := s.bucket + "/" + src
	_, err := s.s3.CopyObject(ctx, &s3.CopyObjectInput{Bucket: &s.bucket, Key: &dst, CopySource: &source})
	return notFound(err)
}

// Delete removes the object and any unfinished upload to its key. Deleting
// what is not there succeeds.
func (s *Store) Delete(ctx context.Context, key string) error {
	if _, err := s.s3.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: &s.bucket, Key: &key}); err != nil {
		if e := notFound(err); !errors.Is(e, ErrNotFound) {
			return e
		}
	}
	return s.abortUploads(ctx, key)
}

func (s *Store) abortUploads(ctx context.Context, key string) error {
	ups, err := s.uploads(ctx, key)
	if err != nil {
		return err
	}
	for _, u := range ups {
		if key != "" && aws.ToString(u.Key) != key {
			continue
		}
		if _, err := s.s3.AbortMultipartUpload(ctx, &s3.AbortMultipartUploadInput{Bucket: &s.bucket, Key: u.Key, UploadId: u.UploadId}); err != nil {
			return notFound(err)
		}
	}
	return nil
}

func (s *Store) uploads(ctx context.Context, prefix string) ([]types.MultipartUpload, error) {
	var all []types.MultipartUpload
	in := &s3.ListMultipartUploadsInput{Bucket: &s.bucket, Prefix: aws.String(prefix)}
	for {
		out, err := s.s3.ListMultipartUploads(ctx, in)
		if err != nil {
			return nil, err
		}
		all = append(all, out.Uploads...)
		if !aws.ToBool(out.IsTruncated) {
			return all, nil
		}
		in.KeyMarker, in.UploadIdMarker = out.NextKeyMarker, out.NextUploadIdMarker
	}
}

func notFound(err error) error {
	if err == nil {
		return nil
	}
	var ae smithy.APIError
	if errors.As(err, &ae) {
		switch ae.ErrorCode() {
		case "NotFound", "NoSuchKey", "NoSuchUpload", "NoSuchBucket":
			return fmt.Errorf("%w: %s", ErrNotFound, ae.ErrorMessage())
		}
	}
	return err
}

// UploadOptions tune Upload.
type UploadOptions struct {
	// PartSize is the size of each part but the last (at least 5 MiB).
	PartSize int64
	// Parallel is how many parts are in flight at once.
	Parallel int
	// Progress, when set, is called as bytes reach the store (including
	// parts an earlier, interrupted upload already stored).
	Progress func(done, total int64)
}

// UploadResult says what an upload did.
type UploadResult struct {
	Parts int
	// Resumed counts the bytes an earlier, interrupted upload had already stored.
	Resumed int64
}

const minPart = 5 << 20

// Upload stores size bytes of r under key as a multipart upload. An upload
// to the same key that was interrupted is continued: parts already stored
// with the same bytes (by size and MD5) are not sent again. An interrupted
// upload is left in place for that; Delete clears it.
func (s *Store) Upload(ctx context.Context, key string, r io.ReaderAt, size int64, o UploadOptions) (UploadResult, error) {
	if o.PartSize < minPart {
		o.PartSize = 16 << 20
	}
	if o.Parallel <= 0 {
		o.Parallel = 4
	}
	progress := func(int64) {}
	var done atomic.Int64
	if o.Progress != nil {
		progress = func(n int64) { o.Progress(done.Add(n), size) }
	}
	nparts := int((size + o.PartSize - 1) / o.PartSize)
	if nparts <= 1 {
		_, err := s.s3.PutObject(ctx, &s3.PutObjectInput{Bucket: &s.bucket, Key: &key,
			Body: io.NewSectionReader(r, 0, size), ContentLength: aws.Int64(size)})
		if err != nil {
			return UploadResult{}, fmt.Errorf("object store: uploading %s: %w", key, err)
		}
		progress(size)
		return UploadResult{Parts: 1}, nil
	}
	uploadID, stored, err := s.resumable(ctx, key)
	if err != nil {
		return UploadResult{}, err
	}
	res := UploadResult{Parts: nparts}
	parts := make([]types.CompletedPart, nparts)
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		firstErr error
		sem      = make(chan struct{}, o.Parallel)
	)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for i := range nparts {
		num := int32(i + 1)
		off := int64(i) * o.PartSize
		n := min(o.PartSize, size-off)
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
		wg.Go(func() {
			defer func() { <-sem }()
			etag, resumed, err := s.part(ctx, key, uploadID, num, io.NewSectionReader(r, off, n), stored[num])
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				if firstErr == nil {
					firstErr = err
					cancel()
				}
				return
			}
			if resumed {
				res.Resumed += n
			}
			parts[num-1] = types.CompletedPart{PartNumber: aws.Int32(num), ETag: aws.String(etag)}
			progress(n)
		})
	}
	wg.Wait()
	if firstErr == nil && ctx.Err() != nil {
		firstErr = ctx.Err()
	}
	if firstErr != nil {
		return res, fmt.Errorf("object store: uploading %s (run the push again to resume): %w", key, firstErr)
	}
	_, err = s.s3.CompleteMultipartUpload(ctx, &s3.CompleteMultipartUploadInput{
		Bucket: &s.bucket, Key: &key, UploadId: &uploadID,
		MultipartUpload: &types.CompletedMultipartUpload{Parts: parts},
	})
	if err != nil {
		return res, fmt.Errorf("object store: completing %s: %w", key, err)
	}
	return res, nil
}

// resumable finds the newest unfinished upload to key, with the parts it
// holds, or starts a new one.
func (s *Store) resumable(ctx context.Context, key string) (string, map[int32]types.Part, error) {
	ups, err := s.uploads(ctx, key)
	if err != nil {
		return "", nil, fmt.Errorf("object store: listing uploads: %w", err)
	}
	var mine []types.MultipartUpload
	for _, u := range ups {
		if aws.ToString(u.Key) == key {
			mine = append(mine, u)
		}
	}
	sort.Slice(mine, func(i, j int) bool { return aws.ToTime(mine[i].Initiated).After(aws.ToTime(mine[j].Initiated)) })
	if len(mine) > 0 {
		id := aws.ToString(mine[0].UploadId)
		stored := map[int32]types.Part{}
		in := &s3.ListPartsInput{Bucket: &s.bucket, Key: &key, UploadId: &id}
		for {
			out, err := s.s3.ListParts(ctx, in)
			if err != nil {
				if errors.Is(notFound(err), ErrNotFound) {
					break
				}
				return "", nil, fmt.Errorf("object store: listing parts: %w", err)
			}
			for _, p := range out.Parts {
				stored[aws.ToInt32(p.PartNumber)] = p
			}
			if !aws.ToBool(out.IsTruncated) {
				return id, stored, nil
			}
			in.PartNumberMarker = out.NextPartNumberMarker
		}
	}
	out, err := s.s3.CreateMultipartUpload(ctx, &s3.CreateMultipartUploadInput{Bucket: &s.bucket, Key: &key})
	if err != nil {
		return "", nil, fmt.Errorf("object store: starting upload: %w", err)
	}
	return aws.ToString(out.UploadId), map[int32]types.Part{}, nil
}

// part uploads one part unless the stored one has the same bytes.
func (s *Store) part(ctx context.Context, key, uploadID string, num int32, body *io.SectionReader, stored types.Part) (etag string, resumed bool, err error) {
	if stored.PartNumber != nil && aws.ToInt64(stored.Size) == body.Size() {
		h := md5.New()
		if _, err := io.Copy(h, body); err != nil {
			return "", false, err
		}
		if strings.Trim(aws.ToString(stored.ETag), `"`) == hex.EncodeToString(h.Sum(nil)) {
			return aws.ToString(stored.ETag), true, nil
		}
		if _, err := body.Seek(0, io.SeekStart); err != nil {
			return "", false, err
		}
	}
	out, err := s.s3.UploadPart(ctx, &s3.UploadPartInput{
		Bucket: &s.bucket, Key: &key, UploadId: &uploadID, PartNumber: aws.Int32(num),
		Body: body, ContentLength: aws.Int64(body.Size()),
	})
	if err != nil {
		return "", false, err
	}
	return aws.ToString(out.ETag), false, nil
}
