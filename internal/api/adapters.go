package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"
	"unicode"

	"go.temporal.io/sdk/temporal"

	"github.com/superinstance/mesh/activities"
	"github.com/superinstance/mesh/internal/blob"
	"github.com/superinstance/mesh/internal/httpjson"
	"github.com/superinstance/mesh/internal/lora"
	"github.com/superinstance/mesh/internal/runner"
	"github.com/superinstance/mesh/internal/store"
	"github.com/superinstance/mesh/workflows"
)

// Adapter uploads go straight to the object store through presigned URLs;
// the API derives the key from the caller's account and the weights'
// SHA-256, so a caller can only ever write under their own prefix.
const (
	// MaxAdapterBytes bounds an adapter's weights.
	MaxAdapterBytes = 20 << 30
	// PresignTTL is how long an upload's part URLs stay valid; asking again
	// resumes the upload with fresh ones.
	PresignTTL = 30 * time.Minute
	// DefaultPartSize is the part size when a request names none.
	DefaultPartSize = 16 << 20
	// maxPartSize is S3's own limit.
	maxPartSize = 5 << 30
)

// UploadRequest is POST /v1/adapters/uploads's body: which bytes the caller
// is about to send.
type UploadRequest struct {
	SHA256   string `json:"sha256"`
	Size     int64  `json:"size_bytes"`
	PartSize int64  `json:"part_size_bytes,omitempty"`
	// BaseModel, when given, is checked against the models the backend
	// serves before any URL is signed.
	BaseModel string `json:"base_model,omitempty"`
}

// UploadPart is one part of an upload: where to PUT it, and what the store
// already holds for it (an interrupted upload's part, by ETag: the MD5 of
// its bytes).
type UploadPart struct {
	Number     int32  `json:"number"`
	Offset     int64  `json:"offset"`
	Size       int64  `json:"size_bytes"`
	URL        string `json:"url"`
	StoredETag string `json:"stored_etag,omitempty"`
}

// Upload is POST /v1/adapters/uploads's answer.
type Upload struct {
	// AlreadyStored is true when the caller's object with these bytes
	// exists; there is nothing to send.
	AlreadyStored bool         `json:"already_stored"`
	UploadID      string       `json:"upload_id,omitempty"`
	PartSize      int64        `json:"part_size_bytes,omitempty"`
	Parts         []UploadPart `json:"parts,omitempty"`
	ExpiresAt     time.Time    `json:"expires_at,omitzero"`
}

// PushRequest is POST /v1/adapters's body: register uploaded weights.
type PushRequest struct {
	SHA256  string `json:"sha256"`
	Size    int64  `json:"size_bytes"`
	Name    string `json:"name"`
	Project string `json:"project,omitempty"`
	// Config is adapter_config.json, verbatim.
	Config json.RawMessage `json:"config"`
	// UploadID and Parts complete the multipart upload; empty when the
	// object was already stored.
	UploadID string               `json:"upload_id,omitempty"`
	Parts    []blob.CompletedPart `json:"parts,omitempty"`
}

// PushResult is POST /v1/adapters's answer.
type PushResult struct {
	ID         string `json:"id"`
	Existing   bool   `json:"existing"`
	State      string `json:"state"`
	SHA256     string `json:"sha256"`
	WorkflowID string `json:"workflow_id"`
}

func (s *Server) adaptersOn(w http.ResponseWriter, c Caller) bool {
	if !accountOnly(w, c) {
		return false
	}
	if s.Blob == nil {
		httpjson.Error(w, http.StatusServiceUnavailable, "adapters_off", "this mesh has no object store configured, so adapters are off")
		return false
	}
	return true
}

// objectKey is the key of the caller's adapter with that checksum, after
// checking the checksum and the size; it answers 400 itself when either is bad.
func objectKey(w http.ResponseWriter, account, sha256 string, size int64) (string, bool) {
	key, err := lora.ObjectKey(account, sha256)
	if err != nil {
		httpjson.Error(w, http.StatusBadRequest, "invalid_request", "sha256: "+err.Error())
		return "", false
	}
	if size <= 0 || size > MaxAdapterBytes {
		httpjson.Error(w, http.StatusBadRequest, "invalid_request", fmt.Sprintf("size_bytes must be 1 to %d", int64(MaxAdapterBytes)))
		return "", false
	}
	return key, true
}

func (s *Server) startUpload(w http.ResponseWriter, r *http.Request, c Caller) {
	if !s.adaptersOn(w, c) {
		return
	}
	var req UploadRequest
	if !decode(w, r, &req) {
		return
	}
	key, ok := objectKey(w, c.Account, req.SHA256, req.Size)
	if !ok {
		return
	}
	if req.PartSize == 0 {
		req.PartSize = DefaultPartSize
	}
	if req.PartSize < blob.MinPartSize || req.PartSize > maxPartSize {
		httpjson.Error(w, http.StatusBadRequest, "invalid_request", "part_size_bytes must be 5 MiB to 5 GiB")
		return
	}
	nparts := (req.Size + req.PartSize - 1) / req.PartSize
	if nparts > blob.MaxParts {
		httpjson.Error(w, http.StatusBadRequest, "invalid_request", fmt.Sprintf("%d parts is more than %d: use a larger part_size_bytes", nparts, blob.MaxParts))
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 30*time.Second)
	defer cancel()
	if req.BaseModel != "" && s.ServedModels != nil {
		served, err := s.ServedModels(ctx)
		if err != nil {
			httpjson.Error(w, http.StatusServiceUnavailable, "unavailable", "the inference backend is unreachable")
			return
		}
		if err := (&lora.Adapter{Config: lora.Config{BaseModel: req.BaseModel}}).CheckBase(served); err != nil {
			httpjson.Error(w, http.StatusUnprocessableEntity, "base_model_not_served", err.Error())
			return
		}
	}
	if size, err := s.Blob.Stat(ctx, key); err == nil && size == req.Size {
		httpjson.Write(w, http.StatusOK, Upload{AlreadyStored: true})
		return
	}
	id, stored, err := s.Blob.Resume(ctx, key)
	if err != nil {
		httpjson.Error(w, http.StatusServiceUnavailable, "unavailable", "the object store is unreachable")
		return
	}
	have := map[int32]blob.StoredPart{}
	for _, p := range stored {
		have[p.Number] = p
	}
	up := Upload{UploadID: id, PartSize: req.PartSize, Parts: make([]UploadPart, 0, nparts), ExpiresAt: time.Now().Add(PresignTTL).UTC()}
	for i := range nparts {
		off := i * req.PartSize
		n := min(req.PartSize, req.Size-off)
		num := int32(i + 1)
		u, err := s.Blob.PresignPart(ctx, key, id, num, n, PresignTTL)
		if err != nil {
			httpjson.Error(w, http.StatusServiceUnavailable, "unavailable", "could not sign the upload")
			return
		}
		p := UploadPart{Number: num, Offset: off, Size: n, URL: u}
		if h, ok := have[num]; ok && h.Size == n {
			p.StoredETag = h.ETag
		}
		up.Parts = append(up.Parts, p)
	}
	httpjson.Write(w, http.StatusOK, up)
}

func validName(n string) bool {
	if n == "" || len(n) > 128 {
		return false
	}
	for _, r := range n {
		if !unicode.IsPrint(r) {
			return false
		}
	}
	return true
}

func (s *Server) pushAdapter(w http.ResponseWriter, r *http.Request, c Caller) {
	if !s.adaptersOn(w, c) {
		return
	}
	var req PushRequest
	if !decode(w, r, &req) {
		return
	}
	key, ok := objectKey(w, c.Account, req.SHA256, req.Size)
	if !ok {
		return
	}
	if !validName(req.Name) {
		httpjson.Error(w, http.StatusBadRequest, "invalid_request", "name must be 1 to 128 printable characters")
		return
	}
	if req.Project != "" {
		if err := store.ValidProjectID(req.Project); err != nil {
			httpjson.Error(w, http.StatusBadRequest, "invalid_request", err.Error())
			return
		}
	}
	// The registry's fields come from the config itself, not from the caller.
	cfg, err := lora.ParseConfig(req.Config)
	if err != nil {
		httpjson.Error(w, http.StatusBadRequest, "invalid_request", "config: "+err.Error())
		return
	}
	if req.UploadID != "" {
		if len(req.UploadID) > 1024 {
			httpjson.Error(w, http.StatusBadRequest, "invalid_request", "upload_id is too long")
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Minute)
		err := s.Blob.Complete(ctx, key, req.UploadID, req.Parts)
		cancel()
		switch {
		case errors.Is(err, blob.ErrNotFound):
			httpjson.Error(w, http.StatusNotFound, "not_found", "no upload "+req.UploadID+" for these bytes: start the push again")
			return
		case errors.Is(err, blob.ErrBadParts):
			httpjson.Error(w, http.StatusBadRequest, "invalid_parts", err.Error()+": run the push again to resume")
			return
		case err != nil:
			httpjson.Error(w, http.StatusServiceUnavailable, "unavailable", "the object store could not complete the upload")
			return
		}
	}
	in := activities.LoRAPushInput{Owner: c.Account, Project: req.Project, Name: req.Name, Size: req.Size, SHA256: req.SHA256,
		BaseModel: cfg.BaseModel, Rank: cfg.Rank, Alpha: cfg.Alpha, TargetModules: cfg.TargetModules, Config: req.Config}
	ctx, cancel := context.WithTimeout(r.Context(), 20*time.Minute)
	defer cancel()
	res, err := runner.RegisterLoRA(ctx, s.Temporal, in)
	if err != nil {
		var ae *temporal.ApplicationError
		code, status := "push_failed", http.StatusUnprocessableEntity
		if errors.As(err, &ae) {
			switch ae.Type() {
			case activities.ErrLoRAForbidden:
				code, status = "forbidden", http.StatusForbidden
			case activities.ErrLoRANotFound:
				code, status = "not_found", http.StatusNotFound
			}
		} else if ctx.Err() != nil || !errors.As(err, new(*runner.Failure)) {
			httpjson.Error(w, http.StatusServiceUnavailable, "unavailable", "the registration did not finish: run the push again to join it")
			return
		}
		httpjson.Error(w, status, code, err.Error())
		return
	}
	httpjson.Write(w, http.StatusOK, PushResult{ID: res.ID, Existing: res.Existing, State: res.State, SHA256: req.SHA256,
		WorkflowID: workflows.LoRAPushWorkflowID(c.Account, req.SHA256)})
}

func (s *Server) listAdapters(w http.ResponseWriter, r *http.Request, c Caller) {
	if !accountOnly(w, c) {
		return
	}
	ls, err := s.Store.LoRAs(r.Context(), c.Account)
	if err != nil {
		httpjson.Error(w, http.StatusServiceUnavailable, "unavailable", "the adapter registry is unreachable")
		return
	}
	if ls == nil {
		ls = []store.LoRA{}
	}
	httpjson.Write(w, http.StatusOK, map[string]any{"adapters": ls})
}

func (s *Server) getAdapter(w http.ResponseWriter, r *http.Request, c Caller) {
	if !accountOnly(w, c) {
		return
	}
	id := r.PathValue("id")
	if !lora.ValidID(id) {
		httpjson.Error(w, http.StatusNotFound, "not_found", "no adapter "+id)
		return
	}
	l, err := s.Store.LoRAFor(r.Context(), c.Account, id)
	if errors.Is(err, store.ErrNotFound) {
		httpjson.Error(w, http.StatusNotFound, "not_found", "no adapter "+id)
		return
	}
	if err != nil {
		httpjson.Error(w, http.StatusServiceUnavailable, "unavailable", "the adapter registry is unreachable")
		return
	}
	httpjson.Write(w, http.StatusOK, l)
}

func (s *Server) removeAdapter(w http.ResponseWriter, r *http.Request, c Caller) {
	if !accountOnly(w, c) {
		return
	}
	id := r.PathValue("id")
	if !lora.ValidID(id) {
		httpjson.Error(w, http.StatusNotFound, "not_found", "no adapter "+id)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 5*time.Minute)
	defer cancel()
	err := runner.RemoveLoRA(ctx, s.Temporal, c.Account, id)
	var ae *temporal.ApplicationError
	switch {
	case err == nil:
		w.WriteHeader(http.StatusNoContent)
	case errors.As(err, &ae) && ae.Type() == activities.ErrLoRANotFound:
		httpjson.Error(w, http.StatusNotFound, "not_found", "no adapter "+id)
	case errors.As(err, &ae) && ae.Type() == activities.ErrLoRAForbidden:
		httpjson.Error(w, http.StatusForbidden, "forbidden", err.Error())
	case errors.As(err, &ae):
		httpjson.Error(w, http.StatusConflict, "remove_failed", err.Error())
	default:
		httpjson.Error(w, http.StatusServiceUnavailable, "unavailable", "the removal did not finish: "+strings.TrimSpace(err.Error()))
	}
}
