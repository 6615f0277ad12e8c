package kernel

import (
	"errors"
	"fmt"
)

// Kind classifies a domain error. transport/http maps each kind to one
// HTTP status in one place; actors never think in status codes.
type Kind int

const (
	KindInternal Kind = iota
	KindInvalid
	KindNotFound
	KindConflict
	KindForbidden
	KindUnauthorized
	KindTooLarge
	KindGone
	KindPreconditionFailed
	KindPaymentRequired
	KindRateLimited
	KindUnsupported
	KindUpstream
	KindUnavailable
	// KindInsufficientStorage: the store is below its free-space reserve;
	// writes are refused until space returns (HTTP 507).
	KindInsufficientStorage
)

// Error is a domain error with a kind, a stable machine code and a message
// that is safe to show to the caller (it never contains secrets).
type Error struct {
	Kind Kind
	Code string
	Msg  string
	Err  error // the cause; logged, never shown
}

func (e *Error) Error() string {
	if e.Err != nil {
		return e.Msg + ": " + e.Err.Error()
	}
	return e.Msg
}

func (e *Error) Unwrap() error { return e.Err }

// Errorf builds a domain error of kind with a machine code.
func Errorf(kind Kind, code, format string, args ...any) *Error {
	return &Error{Kind: kind, Code: code, Msg: fmt.Sprintf(format, args...)}
}

// Invalid is a 400-class error for bad input.
func Invalid(format string, args ...any) *Error {
	return Errorf(KindInvalid, "invalid_input", format, args...)
}

// NotFound is a missing resource.
func NotFound(format string, args ...any) *Error {
	return Errorf(KindNotFound, "not_found", format, args...)
}

// Conflict is a state conflict (duplicate name, already decided).
func Conflict(format string, args ...any) *Error {
	return Errorf(KindConflict, "conflict", format, args...)
}

// Unavailable means the owner of the state could not answer now.
func Unavailable(format string, args ...any) *Error {
	return Errorf(KindUnavailable, "service_unavailable", format, args...)
}

// AsError returns err's domain error, or nil.
func AsError(err error) *Error {
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	return nil
}

// PublicMessage is the text of err that may be shown to an API client or
// stored in a status field: a domain error's Msg (written for users, free
// of secrets and internals), otherwise err's own text; "" for nil.
func PublicMessage(err error) string {
	if err == nil {
		return ""
	}
	if e := AsError(err); e != nil {
		return e.Msg
	}
	return err.Error()
}

// permanentError marks a failure that retrying cannot fix (bad credentials,
// invalid configuration). The supervisor stops such an actor instead of
// restarting it.
type permanentError struct{ err error }

func (p permanentError) Error() string { return p.err.Error() }
func (p permanentError) Unwrap() error { return p.err }

// Permanent wraps err so that supervision stops rather than restarts.
func Permanent(err error) error { return permanentError{err} }

// IsPermanent reports whether reason (a panic value or error) is permanent.
func IsPermanent(reason any) bool {
	err, ok := reason.(error)
	if !ok {
		return false
	}
	var p permanentError
	return errors.As(err, &p)
}
