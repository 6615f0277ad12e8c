// Package neterr turns the error of an outbound call (a dial, a TLS
// handshake, an HTTP round trip, the SSRF guard's refusal) into a
// kernel.Error with a stable code and a message that is safe to show: it
// names the target and the cause, never the URL (whose path or query may
// carry a token: Telegram puts the bot token in the path) nor anything a
// remote party could inject.
//
// Every part of fangd that dials a configured or user-supplied URL (MCP,
// A2A, webhooks, LLM providers, channel adapters) reports failures through
// Classify, so an operator sees the same code for the same cause wherever
// it happens. docs/config.md lists the codes.
package neterr

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"strings"
	"syscall"

	"github.com/fangd/fangd/actors/kernel"
	"github.com/fangd/fangd/transport/ssrf"
)

// The codes Classify gives. They are part of the API: clients switch on
// them.
const (
	// NotAllowed: the network policy refused the URL; the message names
	// the rule (scheme, address class not in allow_hosts, link-local).
	NotAllowed = "url_not_allowed"
	// InvalidURL: the URL is malformed (no host, user:password, too long).
	InvalidURL = "invalid_url"
	// HostNotFound: the host name does not exist or has no address.
	HostNotFound = "host_not_found"
	// DNSFailed: the resolver failed or did not answer.
	DNSFailed = "dns_failed"
	// Refused: nothing listens at the address (connection refused).
	Refused = "connection_refused"
	// Timeout: no connection or no answer within the time allowed.
	Timeout = "upstream_timeout"
	// TLSFailed: the TLS handshake failed (untrusted or expired
	// certificate, wrong host name, protocol mismatch).
	TLSFailed = "tls_failed"
	// BadStatus: the remote answered with an error status.
	BadStatus = "upstream_error_status"
	// Failed: any other network failure (reset, unreachable network).
	Failed = "connection_failed"
)

// IsPolicy reports whether code is a refusal by the network policy, which
// retrying cannot fix.
func IsPolicy(code string) bool { return code == NotAllowed || code == InvalidURL }

// Classify returns err as a domain error about target (a short label such
// as "MCP server github" or "provider openai"; never a URL with a token).
// A policy refusal is KindInvalid (400); a network failure is KindUpstream
// (502), a timeout KindUnavailable (503). The cause stays in Err for the
// log. It returns nil for a nil err and an existing kernel.Error as is.
func Classify(err error, target string) *kernel.Error {
	if err == nil {
		return nil
	}
	if ke := kernel.AsError(err); ke != nil {
		return ke
	}
	code, cause := Cause(err)
	kind := kernel.KindUpstream
	switch code {
	case NotAllowed, InvalidURL:
		kind = kernel.KindInvalid
	case Timeout:
		kind = kernel.KindUnavailable
	}
	msg := cause
	if target != "" {
		msg = target + ": " + cause
	}
	return &kernel.Error{Kind: kind, Code: code, Msg: msg, Err: err}
}

// Cause returns err's code and a sanitized one-line description of the
// cause ("connection refused by 127.0.0.1:9", "host x.invalid does not
// resolve (no such host)", "TLS: certificate signed by unknown authority").
func Cause(err error) (code, cause string) {
	var se *ssrf.Error
	if errors.As(err, &se) {
		switch se.Code {
		case ssrf.CodeHostNotFound:
			return HostNotFound, se.Reason
		case ssrf.CodeDNSFailed:
			return DNSFailed, se.Reason
		case ssrf.CodeBadURL:
			return InvalidURL, "url refused: " + se.Reason
		}
		return NotAllowed, "url refused by the network policy: " + se.Reason
	}
	var de *net.DNSError
	if errors.As(err, &de) {
		if de.IsNotFound {
			return HostNotFound, "host " + clean(de.Name) + " does not resolve (no such host)"
		}
		if de.IsTimeout {
			return DNSFailed, "host " + clean(de.Name) + " could not be looked up: the DNS resolver did not answer in time"
		}
		return DNSFailed, "host " + clean(de.Name) + " could not be looked up: the DNS resolver failed"
	}
	if c, msg := tlsCause(err); c != "" {
		return c, msg
	}
	var oe *net.OpError
	addr := ""
	if errors.As(err, &oe) && oe.Addr != nil {
		addr = oe.Addr.String()
	}
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		if addr != "" {
			return Refused, "connection refused by " + addr + " (nothing listens there)"
		}
		return Refused, "connection refused (nothing listens there)"
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, os.ErrDeadlineExceeded), isTimeout(err):
		if oe != nil && oe.Op == "dial" {
			return Timeout, "no connection to " + addr + " within the time allowed"
		}
		return Timeout, "no answer within the time allowed"
	case errors.Is(err, syscall.ECONNRESET):
		return Failed, "the connection was reset by the remote end"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return Failed, "the remote end closed the connection without answering"
	case errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.ENETUNREACH):
		return Failed, "no route to " + orDefault(addr, "the host")
	}
	return Failed, "connection failed: " + innermost(err)
}

// Network reports whether err is a network failure Cause can describe (a
// guard refusal, a lookup, dial, TLS or timeout error) rather than, say, a
// protocol error from a server that answered.
func Network(err error) bool {
	if err == nil {
		return false
	}
	var (
		se *ssrf.Error
		ne net.Error
		ue *url.Error
	)
	if errors.As(err, &se) || errors.As(err, &ne) || errors.As(err, &ue) || errors.Is(err, syscall.ECONNREFUSED) ||
		errors.Is(err, syscall.ECONNRESET) {
		return true
	}
	c, _ := tlsCause(err)
	return c != ""
}

// Status is the error for a remote that answered with an error status;
// reason is its own text (cleaned and cut here).
func Status(target string, status int, reason string) *kernel.Error {
	msg := fmt.Sprintf("%s answered HTTP %d", target, status)
	if reason = clean(reason); reason != "" {
		msg += ": " + reason
	}
	return &kernel.Error{Kind: kernel.KindUpstream, Code: BadStatus, Msg: msg}
}

// tlsCause recognises the TLS handshake's failures.
func tlsCause(err error) (string, string) {
	var (
		unknown  x509.UnknownAuthorityError
		hostname x509.HostnameError
		invalid  x509.CertificateInvalidError
		verify   *tls.CertificateVerificationError
		record   tls.RecordHeaderError
		alert    tls.AlertError
	)
	switch {
	case errors.As(err, &unknown):
		return TLSFailed, "TLS: the server's certificate is signed by an unknown authority"
	case errors.As(err, &hostname):
		return TLSFailed, "TLS: the server's certificate is not valid for host " + clean(hostname.Host)
	case errors.As(err, &invalid):
		return TLSFailed, "TLS: the server's certificate is invalid (" + clean(invalid.Error()) + ")"
	case errors.As(err, &verify):
		return TLSFailed, "TLS: the server's certificate does not verify"
	case errors.As(err, &record):
		return TLSFailed, "TLS: the server does not speak TLS (is the URL http rather than https?)"
	case errors.As(err, &alert):
		return TLSFailed, "TLS: the server refused the handshake (" + clean(alert.Error()) + ")"
	}
	return "", ""
}

func isTimeout(err error) bool {
	var t interface{ Timeout() bool }
	return errors.As(err, &t) && t.Timeout()
}

// innermost is the deepest error's text, past *url.Error (which carries
// the full URL) and *net.OpError (addresses are not secret, but the
// innermost text says what happened).
func innermost(err error) string {
	for {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
			continue
		}
		next := errors.Unwrap(err)
		if next == nil {
			break
		}
		err = next
	}
	return clean(err.Error())
}

// clean makes text safe to show: one line, printable, at most 200
// characters, and no URL (which may carry a token): a URL is cut to its
// host.
func clean(s string) string {
	fields := strings.Fields(s)
	for i, f := range fields {
		if j := strings.Index(f, "://"); j >= 0 {
			if u, err := url.Parse(strings.Trim(f, `"'.,;()`)); err == nil && u.Host != "" {
				fields[i] = u.Scheme + "://" + u.Host + "/…"
			} else {
				fields[i] = "<url>"
			}
		}
	}
	s = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return -1
		}
		return r
	}, strings.Join(fields, " "))
	if r := []rune(s); len(r) > 200 {
		s = string(r[:200]) + "…"
	}
	return s
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}
