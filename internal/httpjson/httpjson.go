// Package httpjson writes the mesh's JSON HTTP answers; every error is
// {"error": {"code": ..., "message": ...}}, with "param" naming the
// request's field when one field is at fault.
package httpjson

import (
	"encoding/json"
	"net/http"
)

// Write writes v as JSON with status.
func Write(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// Error writes {"error": {"code": code, "message": msg}} with status.
func Error(w http.ResponseWriter, status int, code, msg string) {
	Write(w, status, map[string]any{"error": map[string]string{"code": code, "message": msg}})
}

// FieldError is Error with "param": the request's JSON field at fault.
func FieldError(w http.ResponseWriter, status int, code, msg, param string) {
	if param == "" {
		Error(w, status, code, msg)
		return
	}
	Write(w, status, map[string]any{"error": map[string]string{"code": code, "message": msg, "param": param}})
}
