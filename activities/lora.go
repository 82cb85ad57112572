package activities

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"go.temporal.io/sdk/temporal"

	"github.com/superinstance/mesh/internal/blob"
	"github.com/superinstance/mesh/internal/llm"
	"github.com/superinstance/mesh/internal/lora"
	"github.com/superinstance/mesh/internal/store"
)

// Error types of the adapter activities.
const (
	ErrLoRANotFound    = "LoRANotFound"
	ErrLoRAForbidden   = "LoRAForbidden"
	ErrObjectMismatch  = "ObjectMismatch"
	ErrLoRAUnavailable = "LoRAUnavailable"
	ErrBaseModel       = "BaseModelNotServed"
	ErrLoRALoad        = "LoRALoadFailed"
)

// Adapters registers, loads and removes LoRA adapters: the registry in
// PostgreSQL, the weights in the object store, and the loaded set of the
// inference backend.
type Adapters struct {
	Store *store.Store
	Blob  *blob.Store
	Cache *lora.Cache
	// CacheDir is where weights are put for the backend to read (a directory
	// the inference server shares).
	CacheDir string
	// Served lists the base models the backend serves.
	Served func(ctx context.Context) ([]string, error)
}

// NewAdapters wires a cache of capacity adapters over backend.
func NewAdapters(st *store.Store, b *blob.Store, backend lora.Backend, cacheDir string, capacity int, served func(context.Context) ([]string, error)) *Adapters {
	if capacity <= 0 {
		capacity = 8
	}
	if cacheDir == "" {
		cacheDir = filepath.Join(os.TempDir(), "si-adapter-cache")
	}
	a := &Adapters{Store: st, Blob: b, CacheDir: cacheDir, Served: served}
	a.Cache = &lora.Cache{Backend: backend, Capacity: capacity, Fetch: a.fetch}
	if c, ok := backend.(*llm.Client); ok && st != nil {
		// Every worker in front of this backend keeps one loaded set.
		a.Cache.Shared, a.Cache.Name = st, c.BaseURL
	}
	return a
}

// fetch puts the adapter's files under CacheDir/<id>/, downloading the
// weights unless a complete copy is there already.
func (a *Adapters) fetch(ctx context.Context, id string) (string, error) {
	l, err := a.Store.LoRAByID(ctx, id)
	if err != nil {
		return "", err
	}
	dir := filepath.Join(a.CacheDir, l.ID)
	weights := filepath.Join(dir, lora.WeightsFile)
	if st, err := os.Stat(weights); err != nil || st.Size() != l.Size {
		if err := a.Blob.Download(ctx, l.ObjectKey, weights); err != nil {
			return "", err
		}
	}
	if err := os.WriteFile(filepath.Join(dir, lora.ConfigFile), l.Config, 0o644); err != nil {
		return "", err
	}
	return dir, nil
}

// LoRAPushInput describes an uploaded adapter. The object key is not part of
// it: the activities derive it from the owner and the checksum.
type LoRAPushInput struct {
	Owner         string
	Project       string
	Name          string
	Size          int64
	SHA256        string
	BaseModel     string
	Rank          int
	Alpha         float64
	TargetModules []string
	Config        []byte
}

// VerifyLoRAObject checks the stored object against the size and checksum
// the client computed, and that the backend serves the base model.
func (a *Adapters) VerifyLoRAObject(ctx context.Context, in LoRAPushInput) error {
	key, err := lora.ObjectKey(in.Owner, in.SHA256)
	if err != nil {
		return temporal.NewNonRetryableApplicationError(err.Error(), ErrObjectMismatch, err)
	}
	cfg, err := lora.ParseConfig(in.Config)
	if err != nil || cfg.BaseModel != in.BaseModel {
		return temporal.NewNonRetryableApplicationError(fmt.Sprintf("adapter config does not validate: %v", err), ErrObjectMismatch, err)
	}
	if a.Served != nil {
		served, err := a.Served(ctx)
		if err != nil {
			return err
		}
		if err := (&lora.Adapter{Config: cfg}).CheckBase(served); err != nil {
			return temporal.NewNonRetryableApplicationError(err.Error(), ErrBaseModel, err)
		}
	}
	info, err := a.Blob.Checksum(ctx, key)
	if errors.Is(err, blob.ErrNotFound) {
		return temporal.NewNonRetryableApplicationError("the adapter was not uploaded: no object "+key, ErrObjectMismatch, err)
	}
	if err != nil {
		return err
	}
	if info.Size != in.Size || info.SHA256 != in.SHA256 {
		return temporal.NewNonRetryableApplicationError(fmt.Sprintf(
			"stored object is %d bytes with SHA-256 %s; the client sent %d bytes with %s", info.Size, info.SHA256, in.Size, in.SHA256),
			ErrObjectMismatch, nil)
	}
	return nil
}

// RegisterLoRAResult names the registry row.
type RegisterLoRAResult struct {
	ID      string
	Created bool
	State   string
}

// RegisterLoRA inserts the registry row (state registering), or returns the
// owner's existing row for the same checksum.
func (a *Adapters) RegisterLoRA(ctx context.Context, in LoRAPushInput) (RegisterLoRAResult, error) {
	key, err := lora.ObjectKey(in.Owner, in.SHA256)
	if err != nil {
		return RegisterLoRAResult{}, temporal.NewNonRetryableApplicationError(err.Error(), ErrObjectMismatch, err)
	}
	l, created, err := a.Store.RegisterLoRA(ctx, store.LoRA{
		ID: lora.NewID(), Owner: in.Owner, Project: in.Project, Name: in.Name, BaseModel: in.BaseModel,
		Rank: in.Rank, Alpha: in.Alpha, TargetModules: in.TargetModules, Config: in.Config,
		Size: in.Size, SHA256: in.SHA256, ObjectKey: key,
	})
	switch {
	case errors.Is(err, store.ErrForbidden):
		return RegisterLoRAResult{}, temporal.NewNonRetryableApplicationError(err.Error(), ErrLoRAForbidden, err)
	case errors.Is(err, store.ErrNotFound):
		return RegisterLoRAResult{}, temporal.NewNonRetryableApplicationError(err.Error(), ErrLoRANotFound, err)
	case err != nil:
		return RegisterLoRAResult{}, err
	}
	return RegisterLoRAResult{ID: l.ID, Created: created, State: l.State}, nil
}

// LoadLoRA loads a registered adapter into the backend.
func (a *Adapters) LoadLoRA(ctx context.Context, id string) error {
	if _, err := a.Cache.Ensure(ctx, id); err != nil {
		if lora.IsStatus4xx(err) {
			return temporal.NewNonRetryableApplicationError("the inference backend refused the adapter: "+err.Error(), ErrLoRALoad, err)
		}
		return err
	}
	return nil
}

// MarkLoRAAvailable makes the adapter usable.
func (a *Adapters) MarkLoRAAvailable(ctx context.Context, id string) error {
	return a.Store.SetLoRAState(ctx, id, store.LoRAAvailable)
}

// UnregisterLoRA unloads the adapter and deletes its registry row.
func (a *Adapters) UnregisterLoRA(ctx context.Context, id string) error {
	if err := a.Cache.Evict(ctx, id); err != nil {
		return err
	}
	_ = os.RemoveAll(filepath.Join(a.CacheDir, id))
	return a.Store.DeleteLoRA(ctx, id)
}

// DeleteLoRAObject deletes the adapter's weights from the object store,
// unless a registration still refers to them (the owner pushed the same
// bytes before, and that adapter stays).
func (a *Adapters) DeleteLoRAObject(ctx context.Context, owner, sha256 string) error {
	key, err := lora.ObjectKey(owner, sha256)
	if err != nil {
		return temporal.NewNonRetryableApplicationError(err.Error(), ErrObjectMismatch, err)
	}
	if _, err := a.Store.LoRAByChecksum(ctx, owner, sha256); err == nil {
		return nil
	} else if !errors.Is(err, store.ErrNotFound) {
		return err
	}
	return a.Blob.Delete(ctx, key)
}

// RemoveLoRAInput names an adapter and who asks to remove it.
type RemoveLoRAInput struct {
	Caller string
	ID     string
}

// PrepareRemoveLoRA checks that the caller may remove the adapter and marks
// it deleting; it returns the row.
func (a *Adapters) PrepareRemoveLoRA(ctx context.Context, in RemoveLoRAInput) (store.LoRA, error) {
	l, err := a.Store.CanDeleteLoRA(ctx, in.Caller, in.ID)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return l, temporal.NewNonRetryableApplicationError("adapter "+in.ID+" not found", ErrLoRANotFound, err)
	case errors.Is(err, store.ErrForbidden):
		return l, temporal.NewNonRetryableApplicationError(err.Error(), ErrLoRAForbidden, err)
	case err != nil:
		return l, err
	}
	return l, a.Store.SetLoRAState(ctx, l.ID, store.LoRADeleting)
}

// UseLoRAInput names an adapter and the account that wants to use it.
type UseLoRAInput struct {
	Account string
	ID      string
}

// UseLoRA loads the adapter if account may use it, and reports whether this
// call loaded it. An adapter the account may not see is "not found".
func (a *Adapters) UseLoRA(ctx context.Context, in UseLoRAInput) (bool, error) {
	l, err := a.Store.LoRAFor(ctx, in.Account, in.ID)
	if errors.Is(err, store.ErrNotFound) {
		return false, temporal.NewNonRetryableApplicationError("adapter "+in.ID+" not found", ErrLoRANotFound, err)
	}
	if err != nil {
		return false, err
	}
	if l.State != store.LoRAAvailable {
		return false, temporal.NewNonRetryableApplicationError(fmt.Sprintf("adapter %s is %s, not available", in.ID, l.State), ErrLoRAUnavailable, nil)
	}
	loaded, err := a.Cache.Ensure(ctx, l.ID)
	if err != nil {
		if lora.IsStatus4xx(err) {
			return false, temporal.NewNonRetryableApplicationError("the inference backend refused the adapter: "+err.Error(), ErrLoRALoad, err)
		}
		return false, err
	}
	_ = a.Store.TouchLoRA(ctx, l.ID)
	return loaded, nil
}
