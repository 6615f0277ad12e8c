package neterr

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/fangd/fangd/actors/kernel"
	"github.com/fangd/fangd/transport/ssrf"
	"github.com/fangd/fangd/transport/ssrf/ssrftest"
)

// nxResolver answers every name with NXDOMAIN, except the ones it maps; it
// never touches real DNS.
type nxResolver map[string]string

func (r nxResolver) LookupNetIP(_ context.Context, _, host string) ([]netip.Addr, error) {
	if ip, ok := r[host]; ok {
		return []netip.Addr{netip.MustParseAddr(ip)}, nil
	}
	return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
}

// downResolver fails like a resolver that does not answer.
type downResolver struct{}

func (downResolver) LookupNetIP(_ context.Context, _, host string) ([]netip.Addr, error) {
	return nil, &net.DNSError{Err: "i/o timeout", Name: host, IsTimeout: true}
}

func guard(t *testing.T, r ssrf.Resolver) *ssrf.Guard {
	t.Helper()
	g, err := ssrf.New([]string{"127.0.0.1/32"}, ssrf.WithResolver(r))
	if err != nil {
		t.Fatal(err)
	}
	return g
}

// get fetches url through the guard's client and classifies the failure.
func get(t *testing.T, g *ssrf.Guard, timeout time.Duration, url string) *kernel.Error {
	t.Helper()
	resp, err := g.Client(timeout).Get(url)
	if err == nil {
		resp.Body.Close()
		t.Fatalf("GET %s succeeded", url)
	}
	return Classify(err, "test target")
}

func TestClassifyNamesEachCause(t *testing.T) {
	g := guard(t, nxResolver{"loop.test": "127.0.0.1"})

	targets := ssrftest.Unreachable(t)

	cases := []struct {
		name, url, code string
		kind            kernel.Kind
		timeout         time.Duration
		says            string
	}{
		{"nxdomain", "http://nowhere.invalid/x", HostNotFound, kernel.KindUpstream, time.Minute, "does not resolve"},
		{"refused", "http://" + targets.Closed + "/", Refused, kernel.KindUpstream, time.Minute, "refused"},
		{"timeout", "http://" + targets.Mute + "/", Timeout, kernel.KindUnavailable, 200 * time.Millisecond, "time"},
		{"tls", targets.UntrustedTLS + "/", TLSFailed, kernel.KindUpstream, time.Minute, "unknown authority"},
		{"policy", "http://127.0.0.2:9/", NotAllowed, kernel.KindInvalid, time.Minute, "loopback"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := get(t, g, c.timeout, c.url)
			if e.Code != c.code || e.Kind != c.kind {
				t.Fatalf("got %s (kind %d): %s; want %s (kind %d)", e.Code, e.Kind, e.Msg, c.code, c.kind)
			}
			if !strings.Contains(e.Msg, c.says) || !strings.HasPrefix(e.Msg, "test target: ") {
				t.Fatalf("message %q does not say %q about the target", e.Msg, c.says)
			}
		})
	}

	e := get(t, guard(t, downResolver{}), time.Minute, "http://flaky.test/")
	if e.Code != DNSFailed {
		t.Fatalf("resolver timeout: %s %s", e.Code, e.Msg)
	}
}

// TestPolicyRefusalNamesTheRule: the message says which rule refused the
// URL, and offers the allowlist only where an entry would help.
func TestPolicyRefusalNamesTheRule(t *testing.T) {
	g := guard(t, nxResolver{"meta.test": "169.254.169.254", "lan.test": "10.1.2.3"})
	ctx := context.Background()
	for url, want := range map[string][]string{
		"http://127.0.0.2:4797/":        {"loopback", "allow_hosts", "add"},
		"http://lan.test/":              {"10.1.2.3", "private", "add"},
		"ftp://example.test/":           {"scheme ftp"},
		"http://169.254.169.254/latest": {"link-local", "never allowed"},
		"http://meta.test/":             {"169.254.169.254", "link-local", "never allowed"},
		"http://[fe80::1]/":             {"link-local", "never allowed"},
	} {
		_, err := g.Check(ctx, url)
		e := Classify(err, "")
		if e == nil || e.Code != NotAllowed {
			t.Fatalf("%s: %v", url, e)
		}
		for _, w := range want {
			if !strings.Contains(e.Msg, w) {
				t.Errorf("%s: %q does not say %q", url, e.Msg, w)
			}
		}
		if strings.Contains(e.Msg, "link-local") && strings.Contains(e.Msg, "add ") {
			t.Errorf("%s: %q suggests allow-listing an address that can never be allowed", url, e.Msg)
		}
	}
}

// TestMessagesCarryNoURL: a transport error whose text holds the URL (as
// *url.Error does) is reported without its path: Telegram's bot token
// lives there.
func TestMessagesCarryNoURL(t *testing.T) {
	addr := ssrftest.ClosedAddr(t)
	const token = "123456:SECRETtokenSECRET"
	g := guard(t, nxResolver{})
	for _, u := range []string{"http://" + addr + "/bot" + token + "/getMe", "http://nowhere.invalid/bot" + token + "/getMe"} {
		_, err := g.Client(time.Minute).Get(u)
		e := Classify(err, "telegram")
		if strings.Contains(e.Msg, token) || strings.Contains(e.Msg, "/bot") {
			t.Fatalf("message leaks the URL: %q", e.Msg)
		}
	}
	// Any other error: its text is cleaned of URLs too.
	e := Classify(errors.New(`Post "https://api.example/bot`+token+`/x": weird failure`), "telegram")
	if e.Code != Failed || strings.Contains(e.Msg, token) {
		t.Fatalf("%s %q", e.Code, e.Msg)
	}
}

func TestStatus(t *testing.T) {
	e := Status("provider x", 500, "boom\nhttps://h.example/secret/path")
	if e.Code != BadStatus || e.Kind != kernel.KindUpstream || strings.Contains(e.Msg, "secret") || !strings.Contains(e.Msg, "500") {
		t.Fatalf("%+v", e)
	}
}
