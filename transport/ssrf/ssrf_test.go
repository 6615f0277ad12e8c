package ssrf

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
)

// fakeResolver answers from a table and records lookups; it never touches DNS.
type fakeResolver map[string][]string

func (f fakeResolver) LookupNetIP(_ context.Context, _, host string) ([]netip.Addr, error) {
	ips, ok := f[host]
	if !ok {
		return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
	}
	var out []netip.Addr
	for _, s := range ips {
		out = append(out, netip.MustParseAddr(s))
	}
	return out, nil
}

func TestClassify(t *testing.T) {
	cases := map[string]string{
		"8.8.8.8":                "",
		"1.1.1.1":                "",
		"2606:4700::1111":        "",
		"127.0.0.1":              "loopback",
		"127.9.9.9":              "loopback",
		"::1":                    "loopback",
		"10.1.2.3":               "private",
		"172.16.0.1":             "private",
		"172.31.255.255":         "private",
		"192.168.1.1":            "private",
		"fc00::1":                "private",
		"fd12:3456::1":           "private",
		"169.254.169.254":        "link-local",
		"fe80::1":                "link-local",
		"100.64.0.1":             "CGNAT",
		"100.127.255.255":        "CGNAT",
		"224.0.0.1":              "multicast",
		"ff02::1":                "multicast",
		"0.0.0.0":                "unspecified",
		"0.1.2.3":                "unspecified",
		"::":                     "unspecified",
		"255.255.255.255":        "reserved",
		"::ffff:127.0.0.1":       "loopback",
		"::ffff:10.0.0.1":        "private",
		"::ffff:169.254.169.254": "link-local",
		"64:ff9b::7f00:1":        "loopback (embedded IPv4)",
		"2002:c0a8:0101::1":      "private (6to4)",
		"2002:0808:0808::1":      "",
		"172.32.0.1":             "",
		"100.128.0.1":            "",
	}
	for in, want := range cases {
		if got := Classify(netip.MustParseAddr(in)); got != want {
			t.Errorf("Classify(%s) = %q, want %q", in, got, want)
		}
	}
}

func TestParseRefusesBadURLs(t *testing.T) {
	bad := map[string]string{
		"":                            "bad_url",
		"not a url":                   "bad_url",
		"/relative/path":              "bad_url",
		"ftp://example.com/x":         "bad_scheme",
		"file:///etc/passwd":          "bad_scheme",
		"gopher://example.com":        "bad_scheme",
		"javascript:alert(1)":         "bad_scheme",
		"https://user:pw@example.com": "bad_url",
		"https://":                    "bad_url",
		"https://example.com/#frag":   "bad_url",
		"https://example.com/" + strings.Repeat("a", 2100): "bad_url",
	}
	for in, code := range bad {
		_, err := Parse(in)
		var e *Error
		if !errors.As(err, &e) || e.Code != code {
			t.Errorf("Parse(%q) = %v, want code %s", in, err, code)
		}
	}
	if _, err := Parse("https://hooks.example.com:8443/path?q=1"); err != nil {
		t.Fatal(err)
	}
}

func TestCheckResolvesAndRefusesPrivateTargets(t *testing.T) {
	res := fakeResolver{
		"public.example":   {"93.184.216.34"},
		"private.example":  {"10.0.0.5"},
		"mixed.example":    {"93.184.216.34", "127.0.0.1"},
		"metadata.example": {"169.254.169.254"},
		"mapped.example":   {"::ffff:192.168.0.1"},
		"lan.home":         {"192.168.1.20"},
		"printer.lan":      {"192.168.1.30"},
	}
	g, err := New([]string{"*.home", "printer.lan", "172.20.0.0/16", "metadata.example"}, WithResolver(res))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, ok := range []string{
		"https://public.example/hook",
		"http://lan.home:8080/", // glob
		"http://printer.lan/",   // literal host
		"http://172.20.5.5/",    // CIDR
		"http://93.184.216.34/",
	} {
		if _, err := g.Check(ctx, ok); err != nil {
			t.Errorf("Check(%s): %v", ok, err)
		}
	}
	for in, code := range map[string]string{
		"https://private.example/":                "blocked_address",
		"https://mixed.example/":                  "blocked_address",
		"https://metadata.example/":               "blocked_address", // link-local is never allowed, even by name
		"https://mapped.example/":                 "blocked_address",
		"http://127.0.0.1:9/":                     "blocked_address",
		"http://[::1]/":                           "blocked_address",
		"http://[::ffff:127.0.0.1]/":              "blocked_address",
		"http://169.254.169.254/latest/meta-data": "blocked_address",
		"http://100.64.1.1/":                      "blocked_address",
		"http://localhost:8080/":                  "blocked_address",
		"http://0.0.0.0/":                         "blocked_address",
		"https://nowhere.example/":                "host_not_found",
		"ftp://public.example/":                   "bad_scheme",
	} {
		_, err := g.Check(ctx, in)
		var e *Error
		if !errors.As(err, &e) || e.Code != code {
			t.Errorf("Check(%s) = %v, want code %s", in, err, code)
		}
	}
}

// SetAllowHosts (config reload) changes what the same guard admits; a bad
// list is refused whole and the list in force stays.
func TestSetAllowHostsSwapsTheList(t *testing.T) {
	g, err := New(nil, WithResolver(fakeResolver{"lan.home": {"192.168.1.20"}}))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := g.Check(ctx, "http://127.0.0.1:9/"); !IsBlocked(err) {
		t.Fatalf("loopback before the allowlist: %v", err)
	}
	if err := g.SetAllowHosts([]string{"127.0.0.1/32", "*.home"}); err != nil {
		t.Fatal(err)
	}
	for _, ok := range []string{"http://127.0.0.1:9/", "http://lan.home/"} {
		if _, err := g.Check(ctx, ok); err != nil {
			t.Errorf("Check(%s) after SetAllowHosts: %v", ok, err)
		}
	}
	if err := g.SetAllowHosts([]string{"10.0.0.0/8", "10.0.0.0/33"}); err == nil {
		t.Fatal("a bad allowlist was accepted")
	}
	if _, err := g.Check(ctx, "http://127.0.0.1:9/"); err != nil {
		t.Fatalf("the refused list changed the one in force: %v", err)
	}
	if err := g.SetAllowHosts(nil); err != nil {
		t.Fatal(err)
	}
	if _, err := g.Check(ctx, "http://127.0.0.1:9/"); !IsBlocked(err) {
		t.Fatalf("loopback after the allowlist was emptied: %v", err)
	}
}

func TestNewRejectsBadAllowlistEntries(t *testing.T) {
	for _, bad := range []string{"", "10.0.0.0/33", "not/a/cidr", "a*b.com", "*."} {
		if _, err := New([]string{bad}); err == nil {
			t.Errorf("New(%q) accepted a bad entry", bad)
		}
	}
}

// TestClientPinsAllowedAddressAndRefusesRedirects uses a loopback receiver
// reached through a made-up name that the fake resolver maps to 127.0.0.1:
// allowed only because the allowlist names 127.0.0.1/32.
func TestClientPinsAllowedAddressAndRefusesRedirects(t *testing.T) {
	hits := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits++
		if r.URL.Path == "/redirect" {
			http.Redirect(w, r, "http://169.254.169.254/", http.StatusFound)
			return
		}
		io.WriteString(w, "ok")
	}))
	defer srv.Close()
	port := srv.Listener.Addr().(interface{ String() string }).String()
	port = port[strings.LastIndex(port, ":")+1:]
	res := fakeResolver{"receiver.test": {"127.0.0.1"}, "rebind.test": {"10.9.9.9"}}

	open, _ := New([]string{"127.0.0.1/32"}, WithResolver(res))
	c := open.Client(0)
	resp, err := c.Get("http://receiver.test:" + port + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	resp, err = c.Get("http://receiver.test:" + port + "/redirect")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusFound || hits != 2 {
		t.Fatalf("redirect was followed or not returned: status %d, hits %d", resp.StatusCode, hits)
	}

	closed, _ := New(nil, WithResolver(res))
	_, err = closed.Client(0).Get("http://receiver.test:" + port + "/")
	if !IsBlocked(err) {
		t.Fatalf("loopback receiver reached without an allowlist entry: %v", err)
	}
	// A name resolving to a private address is refused at dial time, before
	// any packet leaves (10.9.9.9 is never dialled).
	_, err = open.Client(0).Get("http://rebind.test:" + port + "/")
	if !IsBlocked(err) {
		t.Fatalf("private target not refused at dial: %v", err)
	}
	if hits != 2 {
		t.Fatalf("refused requests reached the receiver: %d hits", hits)
	}
}

// CheckStatic judges what it can without a lookup and leaves names to the
// dial; refusals name the rule, and offer the allowlist only where an
// entry would help.
func TestCheckStaticAndRefusalText(t *testing.T) {
	var e *Error
	g, err := New([]string{"127.0.0.1/32", "printer.lan"}, WithResolver(fakeResolver{}))
	if err != nil {
		t.Fatal(err)
	}
	for raw, want := range map[string]string{
		"http://127.0.0.1:8081/":           "",
		"https://api.telegram.org/":        "", // a name: judged when dialled, no lookup now
		"http://printer.lan/":              "",
		"http://127.0.0.2:4797/":           CodeBlocked,
		"http://localhost:11434/v1":        CodeBlocked,
		"http://[::1]/":                    CodeBlocked,
		"http://10.0.0.1/":                 CodeBlocked,
		"http://169.254.169.254/":          CodeBlocked,
		"gopher://x.example/":              CodeBadScheme,
		"http://user:pw@api.example.test/": CodeBadURL,
	} {
		_, err := g.CheckStatic(raw)
		switch {
		case want == "" && err != nil:
			t.Errorf("%s refused: %v", raw, err)
		case want != "" && (!errors.As(err, &e) || e.Code != want || !e.Policy()):
			t.Errorf("%s: %v, want %s", raw, err, want)
		}
	}
	_, err = g.CheckStatic("http://127.0.0.2:4797/")
	if !strings.Contains(err.Error(), "loopback") || !strings.Contains(err.Error(), "allow_hosts") || !IsBlocked(err) {
		t.Fatalf("loopback refusal: %v", err)
	}
	_, err = g.CheckStatic("http://169.254.169.254/latest")
	if !strings.Contains(err.Error(), "never allowed") || strings.Contains(err.Error(), "add ") {
		t.Fatalf("link-local refusal suggests the allowlist: %v", err)
	}
	// A name that does not resolve is not a refusal.
	_, err = g.Check(context.Background(), "http://gone.example/")
	if !errors.As(err, &e) || e.Code != CodeHostNotFound || IsBlocked(err) {
		t.Fatalf("unresolvable name: %v", err)
	}
}
