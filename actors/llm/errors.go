package llm

import (
	"fmt"
	"net/http"
	"strings"
	"time"
	"unicode"

	"github.com/fangd/fangd/actors/kernel"
	"github.com/fangd/fangd/transport/httpretry"
)

// ProviderError is a failed provider call. It unwraps to a kernel domain
// error, so the HTTP layer maps it like any other: 503 when trying again
// later may work (timeout, 429, overloaded, no key yet), 502 when the
// provider answered with a failure.
type ProviderError struct {
	Provider   string
	Outcome    string // one of the Outcome constants
	HTTPStatus int    // the provider's status, 0 when it never answered
	// Retry is the provider's Retry-After, when it sent one, capped at a
	// day: it is passed on to the API client, never waited on here.
	Retry  time.Duration
	domain *kernel.Error
}

func (e *ProviderError) Error() string { return e.domain.Error() }
func (e *ProviderError) Unwrap() error { return e.domain }

// RetryAfter is how long the provider asked callers to wait (0 if it did not).
func (e *ProviderError) RetryAfter() time.Duration { return e.Retry }

func (e *ProviderError) withCause(err error) *ProviderError {
	e.domain.Err = err
	return e
}

// scrub removes the API key from the message should a provider echo it.
func (e *ProviderError) scrub(key string) {
	if len(key) >= 4 {
		e.domain.Msg = strings.ReplaceAll(e.domain.Msg, key, "***")
	}
}

func newProviderError(prov, outcome string, status int, retry time.Duration, msg string) *ProviderError {
	kind, code := kernel.KindUpstream, "provider_error"
	switch outcome {
	case OutcomeNoKey:
		kind, code = kernel.KindUnavailable, "provider_not_configured"
	case OutcomeTimeout:
		kind, code = kernel.KindUnavailable, "provider_timeout"
	case OutcomeCanceled:
		kind, code = kernel.KindUnavailable, "provider_call_canceled"
	case OutcomeRateLimited:
		kind, code = kernel.KindUnavailable, "provider_rate_limited"
	case OutcomeUnreachable:
		code = "provider_unreachable"
	case OutcomeBadResponse:
		code = "provider_bad_response"
	case OutcomeRejected:
		code = "provider_rejected"
		if status == http.StatusUnauthorized || status == http.StatusForbidden {
			code = "provider_auth_failed"
		}
	case OutcomeServerError:
		// 503 and Anthropic's 529 "overloaded" are worth retrying.
		if status == http.StatusServiceUnavailable || status == 529 {
			kind, code = kernel.KindUnavailable, "provider_overloaded"
		}
	}
	return &ProviderError{Provider: prov, Outcome: outcome, HTTPStatus: status, Retry: retry,
		domain: &kernel.Error{Kind: kind, Code: code, Msg: msg}}
}

// statusError builds the error for a non-2xx answer, keeping the provider's
// own reason (cleaned and shortened) in the message.
func statusError(prov string, resp *http.Response, reason string) *ProviderError {
	status := resp.StatusCode
	outcome := OutcomeRejected
	switch {
	case status == http.StatusTooManyRequests:
		outcome = OutcomeRateLimited
	case status >= 500:
		outcome = OutcomeServerError
	case status == http.StatusRequestTimeout:
		outcome = OutcomeTimeout
	}
	msg := fmt.Sprintf("provider %s answered %d", prov, status)
	if reason = cleanReason(reason); reason != "" {
		msg += ": " + reason
	}
	return newProviderError(prov, outcome, status, httpretry.ParseUpTo(resp.Header.Get("Retry-After"), time.Now(), 24*time.Hour), msg)
}

// cleanReason makes a provider's text safe to show and log: printable,
// one line, at most 300 characters.
func cleanReason(s string) string {
	s = strings.Map(func(r rune) rune {
		if r == '\n' || r == '\r' || r == '\t' {
			return ' '
		}
		if !unicode.IsPrint(r) {
			return -1
		}
		return r
	}, strings.TrimSpace(s))
	if r := []rune(s); len(r) > 300 {
		s = string(r[:300]) + "…"
	}
	return s
}
