package client

import (
	"context"
	"crypto/md5"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// UploadPart is one part of an upload as the API hands it out.
type UploadPart struct {
	Number     int32  `json:"number"`
	Offset     int64  `json:"offset"`
	Size       int64  `json:"size_bytes"`
	URL        string `json:"url"`
	StoredETag string `json:"stored_etag,omitempty"`
}

// Upload is the API's plan for an upload.
type Upload struct {
	AlreadyStored bool         `json:"already_stored"`
	UploadID      string       `json:"upload_id,omitempty"`
	PartSize      int64        `json:"part_size_bytes,omitempty"`
	Parts         []UploadPart `json:"parts,omitempty"`
}

// CompletedPart is a part the store holds, by the ETag it answered.
type CompletedPart struct {
	Number int32  `json:"number"`
	ETag   string `json:"etag"`
}

// UploadOptions tune UploadAdapter.
type UploadOptions struct {
	// PartSize is the size of each part but the last; 0 lets the API choose (16 MiB).
	PartSize int64
	// Parallel is how many parts are in flight at once. Default 4.
	Parallel int
	// Progress, when set, is called as bytes reach the store (parts an
	// interrupted upload already stored included).
	Progress func(done, total int64)
	// BaseModel, when set, is checked against the mesh's backend before
	// any byte is sent.
	BaseModel string
}

// UploadResult says what an upload did.
type UploadResult struct {
	// AlreadyStored is true when the store held these bytes; nothing was sent.
	AlreadyStored bool
	UploadID      string
	Parts         []CompletedPart
	// Resumed counts the bytes an earlier, interrupted upload had stored.
	Resumed int64
}

// UploadAdapter sends size bytes of r, whose SHA-256 is sum, to the key the
// API derives from the account and sum: the API presigns a URL per part and
// the parts go straight to the object store. An interrupted upload of the
// same bytes continues: parts the store holds with the same MD5 are not
// sent again.
func (c *Client) UploadAdapter(ctx context.Context, r io.ReaderAt, size int64, sum string, o UploadOptions) (UploadResult, error) {
	var plan Upload
	err := c.do(ctx, "POST", "/v1/adapters/uploads", map[string]any{"sha256": sum, "size_bytes": size, "part_size_bytes": o.PartSize, "base_model": o.BaseModel}, &plan)
	if err != nil {
		return UploadResult{}, err
	}
	if plan.AlreadyStored {
		if o.Progress != nil {
			o.Progress(size, size)
		}
		return UploadResult{AlreadyStored: true}, nil
	}
	if err := checkPlan(plan, size); err != nil {
		return UploadResult{}, err
	}
	if o.Parallel <= 0 {
		o.Parallel = 4
	}
	var done atomic.Int64
	progress := func(n int64) {
		if o.Progress != nil {
			o.Progress(done.Add(n), size)
		}
	}
	res := UploadResult{UploadID: plan.UploadID, Parts: make([]CompletedPart, len(plan.Parts))}
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		firstErr error
		sem      = make(chan struct{}, o.Parallel)
	)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for i, p := range plan.Parts {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
		wg.Go(func() {
			defer func() { <-sem }()
			etag, resumed, err := c.part(ctx, io.NewSectionReader(r, p.Offset, p.Size), p)
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
				res.Resumed += p.Size
			}
			res.Parts[i] = CompletedPart{Number: p.Number, ETag: etag}
			progress(p.Size)
		})
	}
	wg.Wait()
	if firstErr == nil && ctx.Err() != nil {
		firstErr = ctx.Err()
	}
	if firstErr != nil {
		return res, fmt.Errorf("uploading the adapter (run the push again to resume): %w", firstErr)
	}
	return res, nil
}

// checkPlan refuses a plan that does not cover the file part by part.
func checkPlan(p Upload, size int64) error {
	var off int64
	for i, part := range p.Parts {
		if part.Number != int32(i+1) || part.Offset != off || part.Size <= 0 || part.URL == "" {
			return fmt.Errorf("the API's upload plan is not valid at part %d", i+1)
		}
		u, err := url.Parse(part.URL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") {
			return fmt.Errorf("the API's upload plan has no valid URL for part %d", i+1)
		}
		off += part.Size
	}
	if p.UploadID == "" || off != size {
		return fmt.Errorf("the API's upload plan covers %d of %d bytes", off, size)
	}
	return nil
}

var defaultStorage = &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 32, ForceAttemptHTTP2: true,
	Proxy: http.ProxyFromEnvironment, ResponseHeaderTimeout: 2 * time.Minute}}

func (c *Client) storage() *http.Client {
	if c.Storage != nil {
		return c.Storage
	}
	return defaultStorage
}

// part sends one part unless the store holds the same bytes for it.
func (c *Client) part(ctx context.Context, body *io.SectionReader, p UploadPart) (etag string, resumed bool, err error) {
	if p.StoredETag != "" {
		h := md5.New()
		if _, err := io.Copy(h, body); err != nil {
			return "", false, err
		}
		if strings.Trim(p.StoredETag, `"`) == hex.EncodeToString(h.Sum(nil)) {
			return p.StoredETag, true, nil
		}
		if _, err := body.Seek(0, io.SeekStart); err != nil {
			return "", false, err
		}
	}
	// No Authorization header: the URL's signature is the only credential
	// the object store sees, and the API token never leaves for it.
	req, err := http.NewRequestWithContext(ctx, "PUT", p.URL, io.NopCloser(body))
	if err != nil {
		return "", false, err
	}
	req.ContentLength = p.Size
	resp, err := c.storage().Do(req)
	if err != nil {
		return "", false, fmt.Errorf("part %d: %w", p.Number, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
		return "", false, fmt.Errorf("part %d: the object store answered %s: %s", p.Number, resp.Status, s3Code(b))
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	etag = resp.Header.Get("ETag")
	if etag == "" {
		return "", false, fmt.Errorf("part %d: the object store answered no ETag", p.Number)
	}
	return etag, false, nil
}

// s3Code picks the <Code> out of an S3 error document.
func s3Code(b []byte) string {
	s := string(b)
	if i := strings.Index(s, "<Code>"); i >= 0 {
		s = s[i+len("<Code>"):]
		if j := strings.Index(s, "</Code>"); j >= 0 {
			return s[:j]
		}
	}
	return strings.TrimSpace(s)
}

// PushRequest registers uploaded weights.
type PushRequest struct {
	SHA256   string          `json:"sha256"`
	Size     int64           `json:"size_bytes"`
	Name     string          `json:"name"`
	Project  string          `json:"project,omitempty"`
	Config   json.RawMessage `json:"config"`
	UploadID string          `json:"upload_id,omitempty"`
	Parts    []CompletedPart `json:"parts,omitempty"`
}

// PushResult is what a push registered.
type PushResult struct {
	ID         string `json:"id"`
	Existing   bool   `json:"existing"`
	State      string `json:"state"`
	SHA256     string `json:"sha256"`
	WorkflowID string `json:"workflow_id"`
}

// PushAdapter completes the upload and registers the adapter; it returns
// once the adapter is available (or the push failed and was undone).
func (c *Client) PushAdapter(ctx context.Context, r PushRequest) (PushResult, error) {
	var out PushResult
	return out, c.do(ctx, "POST", "/v1/adapters", r, &out)
}

// Adapter is a registered adapter.
type Adapter struct {
	ID            string     `json:"id"`
	Owner         string     `json:"owner"`
	Project       string     `json:"project,omitempty"`
	Name          string     `json:"name"`
	BaseModel     string     `json:"base_model"`
	Rank          int        `json:"rank"`
	Alpha         float64    `json:"alpha"`
	TargetModules []string   `json:"target_modules"`
	Size          int64      `json:"size_bytes"`
	SHA256        string     `json:"sha256"`
	State         string     `json:"state"`
	CreatedAt     time.Time  `json:"created_at"`
	AvailableAt   *time.Time `json:"available_at,omitempty"`
	LastUsedAt    *time.Time `json:"last_used_at,omitempty"`
}

// Adapters lists the adapters the account may use.
func (c *Client) Adapters(ctx context.Context) ([]Adapter, error) {
	var out struct {
		Adapters []Adapter `json:"adapters"`
	}
	return out.Adapters, c.do(ctx, "GET", "/v1/adapters", nil, &out)
}

// Adapter reads one adapter the account may use.
func (c *Client) Adapter(ctx context.Context, id string) (Adapter, error) {
	var a Adapter
	return a, c.do(ctx, "GET", "/v1/adapters/"+url.PathEscape(id), nil, &a)
}

// RemoveAdapter unloads, unregisters and deletes an adapter.
func (c *Client) RemoveAdapter(ctx context.Context, id string) error {
	return c.do(ctx, "DELETE", "/v1/adapters/"+url.PathEscape(id), nil, nil)
}

// SHA256 returns the hex SHA-256 of r's bytes.
func SHA256(r io.Reader) (string, error) {
	h := sha256.New()
	if _, err := io.Copy(h, r); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
