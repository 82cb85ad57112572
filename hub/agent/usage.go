package agent

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"regexp"
	"time"

	"github.com/superinstance/mesh/hub/wire"
	meshv1 "github.com/superinstance/mesh/proto/meshv1"
)

// MaxUsageBody bounds a POST /v1/usage body.
const MaxUsageBody = 4 << 10

// MaxUsageTokens bounds each token count of one usage record.
const MaxUsageTokens = 100_000_000

// UsageRequest is the local API's JSON body for POST /v1/usage: one
// inference call the local kernel served itself.
type UsageRequest struct {
	// EventID is the kernel's own id for the call, 1-100 letters, digits,
	// '.', '_', ':' or '-'. The ledger bills an id once: a retry must reuse it.
	EventID string `json:"event_id"`
	// Project defaults to the account's default project.
	Project string `json:"project,omitempty"`
	// Model names the model that served the call (it prices the tokens).
	Model            string `json:"model"`
	PromptTokens     int64  `json:"prompt_tokens"`
	CompletionTokens int64  `json:"completion_tokens"`
	// At is when the call was served (RFC 3339); default now. Not more
	// than five minutes ahead of the hub's clock.
	At string `json:"at,omitempty"`
}

var (
	usageID     = regexp.MustCompile(`^[A-Za-z0-9._:-]{1,100}$`)
	usageName   = regexp.MustCompile(`^[A-Za-z0-9._:/@+-]{1,128}$`)
	projectName = regexp.MustCompile(`^[A-Za-z0-9._-]{1,100}$`)
)

// DecodeUsage reads one POST /v1/usage body into a usage record, or says
// which field is wrong and how. now is the hub's clock.
func DecodeUsage(body []byte, now time.Time) (*meshv1.UsageRecord, error) {
	if len(body) > MaxUsageBody {
		return nil, fmt.Errorf("the body is %d bytes, more than %d: send one usage record per request", len(body), MaxUsageBody)
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	var u UsageRequest
	if err := dec.Decode(&u); err != nil {
		return nil, fmt.Errorf("invalid JSON body: %w", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, errors.New("invalid JSON body: one object only, nothing after it")
	}
	var errs []error
	if !usageID.MatchString(u.EventID) {
		errs = append(errs, errors.New("event_id is required: 1-100 letters, digits, '.', '_', ':' or '-', the kernel's own id for the call (a retry with the same id is billed once)"))
	}
	if !usageName.MatchString(u.Model) {
		errs = append(errs, errors.New("model is required: up to 128 letters, digits or ._:/@+-, the model that served the call"))
	}
	if u.Project != "" && !projectName.MatchString(u.Project) {
		errs = append(errs, errors.New("project must be 1-100 letters, digits, '.', '_' or '-' (or left out for the default project)"))
	}
	for name, n := range map[string]int64{"prompt_tokens": u.PromptTokens, "completion_tokens": u.CompletionTokens} {
		if n < 0 || n > MaxUsageTokens {
			errs = append(errs, fmt.Errorf("%s must be between 0 and %d, not %d", name, MaxUsageTokens, n))
		}
	}
	at := now
	if u.At != "" {
		t, err := time.Parse(time.RFC3339Nano, u.At)
		switch {
		case err != nil:
			errs = append(errs, fmt.Errorf("at must be an RFC 3339 time such as %s, not %q", now.UTC().Format(time.RFC3339), u.At))
		case t.After(now.Add(5 * time.Minute)):
			errs = append(errs, fmt.Errorf("at %s is in the future (the hub's clock says %s): send when the call was served", u.At, now.UTC().Format(time.RFC3339)))
		case t.Year() < 2000:
			errs = append(errs, fmt.Errorf("at %s is before 2000: send when the call was served", u.At))
		default:
			at = t
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	rec := &meshv1.UsageRecord{EventId: u.EventID, Project: u.Project, Model: u.Model,
		PromptTokens: uint32(u.PromptTokens), CompletionTokens: uint32(u.CompletionTokens), AtUnixNano: at.UnixNano()}
	if err := wire.ValidateHub(&meshv1.HubMessage{Body: &meshv1.HubMessage_Usage{Usage: rec}}); err != nil {
		return nil, err
	}
	return rec, nil
}
