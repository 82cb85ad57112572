package synapse

import (
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
)

// reasoningTags are the blocks reasoning models (DeepSeek-R1, Qwen3, QwQ)
// write before their answer; they are not part of it.
var reasoningTags = [][2]string{{"<think>", "</think>"}, {"<thinking>", "</thinking>"}}

// StripReasoning removes the reasoning a reply leads with: every
// <think>...</think> (or <thinking>) block at its start, all of it when one
// is unclosed (a reply cut short while reasoning), and otherwise everything
// up to the last closing tag before the reply's first '{' (its opening tag
// was in the chat template). Tags anywhere else, inside the answer's JSON
// strings or after the object, are the answer's and are kept. It is one
// linear pass.
func StripReasoning(s string) string {
	stripped := false
	for {
		t := strings.TrimLeft(s, " \t\r\n")
		open, closing, ok := leadingTag(t)
		if !ok {
			break
		}
		j := strings.Index(t[len(open):], closing)
		if j < 0 {
			return ""
		}
		s, stripped = t[len(open)+j+len(closing):], true
	}
	if stripped {
		return s
	}
	head := s
	if i := strings.IndexByte(s, '{'); i >= 0 {
		head = s[:i]
	}
	cut := -1
	for _, tag := range reasoningTags {
		if j := strings.LastIndex(head, tag[1]); j >= 0 {
			cut = max(cut, j+len(tag[1]))
		}
	}
	if cut >= 0 {
		return s[cut:]
	}
	return s
}

// leadingTag reports the reasoning tag pair whose opening tag s starts with.
func leadingTag(s string) (open, closing string, ok bool) {
	for _, tag := range reasoningTags {
		if strings.HasPrefix(s, tag[0]) {
			return tag[0], tag[1], true
		}
	}
	return "", "", false
}

// maxCandidates bounds the '{' positions objects tries, so a reply of many
// unbalanced braces costs linear time, not quadratic.
const maxCandidates = 64

// objects returns, in order, the balanced {...} spans of text that are
// valid JSON: a scanner that follows strings and escapes, so braces inside
// strings do not count, and that does not take prose braces (or a second
// object) into the span as first-'{'-to-last-'}' would.
func objects(text string) []string {
	var out []string
	tried := 0
	for i := 0; i < len(text) && tried < maxCandidates; i++ {
		if text[i] != '{' {
			continue
		}
		tried++
		end := balanced(text, i)
		if end < 0 {
			continue
		}
		if span := text[i : end+1]; json.Valid([]byte(span)) {
			out = append(out, span)
			i = end
		}
	}
	return out
}

// balanced returns the index of the '}' that closes the '{' at start, or -1.
func balanced(text string, start int) int {
	depth, inString, escaped := 0, false, false
	for j := start; j < len(text); j++ {
		c := text[j]
		switch {
		case inString && escaped:
			escaped = false
		case inString && c == '\\':
			escaped = true
		case inString && c == '"':
			inString = false
		case inString:
		case c == '"':
			inString = true
		case c == '{':
			depth++
		case c == '}':
			depth--
			if depth == 0 {
				return j
			}
		}
	}
	return -1
}

// Field kinds a required field must have.
const (
	kindString = 's'
	kindNumber = 'n'
	kindArray  = 'a' // an array, or null for an empty one
)

// field is a required field: its dotted path and kind.
type field struct {
	path string
	kind byte
}

// requirer is implemented by agent results that name the fields a reply
// must hold; a missing field is an error for the repair turn, not a zero.
type requirer interface{ required() []field }

func (Manifest) required() []field {
	return []field{{"intent", kindString}, {"domain", kindString}, {"constraints", kindArray}, {"success_criteria", kindArray}, {"confidence", kindNumber}}
}

func (Solution) required() []field {
	return []field{{"answer", kindString}, {"confidence", kindNumber}}
}

func (Verification) required() []field {
	return []field{{"scores.accuracy", kindNumber}, {"scores.relevance", kindNumber}, {"scores.safety", kindNumber},
		{"violations", kindArray}, {"feedback", kindString}}
}

func (Verdict) required() []field {
	return []field{{"answer", kindString}, {"confidence", kindNumber}, {"note", kindString}}
}

// checkRequired reports every field of fs that obj lacks or holds in the
// wrong kind.
func checkRequired(obj string, fs []field) error {
	var errs []error
	for _, f := range fs {
		raw, ok := lookup([]byte(obj), f.path)
		if !ok {
			errs = append(errs, fmt.Errorf("%q is missing", f.path))
			continue
		}
		var good bool
		switch c := firstByte(raw); f.kind {
		case kindString:
			good = c == '"'
		case kindNumber:
			good = c == '-' || (c >= '0' && c <= '9')
		case kindArray:
			good = c == '[' || string(raw) == "null"
		}
		if !good {
			errs = append(errs, fmt.Errorf("%q must be a %s, got %s", f.path, kindName(f.kind), clip(string(raw))))
		}
	}
	return errors.Join(errs...)
}

func lookup(obj []byte, path string) (json.RawMessage, bool) {
	raw := json.RawMessage(obj)
	for _, key := range strings.Split(path, ".") {
		var m map[string]json.RawMessage
		if json.Unmarshal(raw, &m) != nil {
			return nil, false
		}
		v, ok := m[key]
		if !ok {
			return nil, false
		}
		raw = v
	}
	return raw, true
}

func firstByte(raw json.RawMessage) byte {
	s := strings.TrimSpace(string(raw))
	if s == "" {
		return 0
	}
	return s[0]
}

func kindName(k byte) string {
	switch k {
	case kindString:
		return "string"
	case kindNumber:
		return "number"
	}
	return "list"
}

func clip(s string) string {
	if len(s) > 40 {
		return s[:40] + "..."
	}
	return s
}

// decodeInto decodes obj into a fresh value of out's type and, when it
// holds every required field and validates, stores it in out.
func decodeInto(obj string, out validator) error {
	var missing error
	if r, ok := out.(requirer); ok {
		missing = checkRequired(obj, r.required())
	}
	rv := reflect.ValueOf(out)
	if rv.Kind() != reflect.Pointer || rv.IsNil() {
		return errors.New("synapse: Parse needs a non-nil pointer")
	}
	fresh := reflect.New(rv.Elem().Type())
	if err := json.Unmarshal([]byte(obj), fresh.Interface()); err != nil {
		return errors.Join(missing, fmt.Errorf("reply is not the JSON object asked for: %w", err))
	}
	if err := errors.Join(missing, fresh.Interface().(validator).Validate()); err != nil {
		return err
	}
	rv.Elem().Set(fresh.Elem())
	return nil
}
