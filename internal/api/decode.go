package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"reflect"
	"strconv"
	"strings"

	"github.com/superinstance/mesh/internal/httpjson"
)

// decode reads a JSON object body of at most MaxBody bytes with no unknown
// fields into v. It answers the error itself: 413 for a body over the
// limit, 400 naming the JSON field at fault ("max_rounds must be a
// number"), never a Go type or struct field.
func decode(w http.ResponseWriter, r *http.Request, v any) bool {
	err := decodeJSON(http.MaxBytesReader(w, r.Body, MaxBody), v)
	if err == nil {
		return true
	}
	var be *bodyError
	if errors.As(err, &be) {
		httpjson.FieldError(w, be.status, be.code, be.msg, be.param)
	} else {
		httpjson.Error(w, http.StatusBadRequest, "invalid_json", err.Error())
	}
	return false
}

// bodyError is a request body the API cannot take, as the client should read it.
type bodyError struct {
	status           int
	code, msg, param string
}

func (e *bodyError) Error() string { return e.msg }

// decodeJSON decodes one JSON object from body into v and explains any
// failure in the request's own terms.
func decodeJSON(body io.Reader, v any) error {
	dec := json.NewDecoder(body)
	dec.DisallowUnknownFields()
	err := dec.Decode(v)
	if err == nil {
		// One object per body: trailing data is a malformed request.
		if _, terr := dec.Token(); terr != io.EOF {
			var mbe *http.MaxBytesError
			if errors.As(terr, &mbe) {
				return tooLarge(mbe.Limit)
			}
			return &bodyError{status: http.StatusBadRequest, code: "invalid_json", msg: "the body holds more than one JSON value: send one object"}
		}
		return nil
	}
	bad := func(msg, param string) error {
		return &bodyError{status: http.StatusBadRequest, code: "invalid_json", msg: msg, param: param}
	}
	var (
		mbe *http.MaxBytesError
		se  *json.SyntaxError
		te  *json.UnmarshalTypeError
	)
	switch {
	case errors.As(err, &mbe):
		return tooLarge(mbe.Limit)
	case errors.Is(err, io.EOF):
		return bad("the body is empty: send a JSON object", "")
	case errors.Is(err, io.ErrUnexpectedEOF):
		return bad("the body ends in the middle of its JSON: send a complete JSON object", "")
	case errors.As(err, &se):
		return bad(fmt.Sprintf("the body is not valid JSON (at byte %d): send a JSON object", se.Offset), "")
	case errors.As(err, &te):
		if te.Field == "" {
			return bad("the body must be a JSON object, not "+article(te.Value), "")
		}
		return bad(fmt.Sprintf("%s must be %s, not %s", te.Field, kind(te.Type), article(te.Value)), te.Field)
	}
	if f, ok := strings.CutPrefix(err.Error(), "json: unknown field "); ok {
		name, uerr := strconv.Unquote(f)
		if uerr != nil {
			name = f
		}
		return bad(fmt.Sprintf("unknown field %q: check its spelling against the API reference (/openapi.json)", name), name)
	}
	return bad("the body is not a valid request: send a JSON object", "")
}

func tooLarge(limit int64) error {
	return &bodyError{status: http.StatusRequestEntityTooLarge, code: "request_too_large",
		msg: fmt.Sprintf("the body is over the limit of %d bytes: send less", limit)}
}

// kind names a Go type as the JSON a client should send.
func kind(t reflect.Type) string {
	if t == nil {
		return "a value of another kind"
	}
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "true or false"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "a whole number"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.Slice, reflect.Array:
		return "a list"
	case reflect.Map, reflect.Struct:
		return "an object"
	case reflect.Pointer:
		return kind(t.Elem())
	}
	return "a value of another kind"
}

// article names a JSON value kind as encoding/json reports it ("number",
// "string", "number 1.5") with its article.
func article(v string) string {
	v, _, _ = strings.Cut(v, " ")
	switch v {
	case "array":
		return "a list"
	case "object":
		return "an object"
	case "bool":
		return "true or false"
	case "null":
		return "null"
	case "":
		return "a value of another kind"
	}
	return "a " + v
}
