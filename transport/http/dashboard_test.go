package http

import (
	"io/fs"
	"regexp"
	"strings"
	"testing"
)

// The dashboard's files are public (they hold no data), carry the
// dashboard's own strict CSP, revalidate by ETag, and leave the API's
// JSON answers for unknown paths as they were.
func TestDashboardStaticRoutes(t *testing.T) {
	t.Parallel()
	ts := newTestServer(t, nil)
	r := ts.do(t, "GET", "/", "")
	if r.status != 200 || !strings.HasPrefix(r.header.Get("Content-Type"), "text/html") || !strings.Contains(string(r.body), `src="/dashboard/app.js"`) {
		t.Fatalf("GET / without a key: %d %s %.200s", r.status, r.header.Get("Content-Type"), r.body)
	}
	if got := r.header.Get("Content-Security-Policy"); got != dashboardCSP || !strings.Contains(got, "script-src 'self'") ||
		strings.Contains(got, "unsafe") || !strings.Contains(got, "frame-ancestors 'none'") {
		t.Fatalf("CSP %q", got)
	}
	if r.header.Get("X-Frame-Options") != "DENY" || r.header.Get("X-Content-Type-Options") != "nosniff" || r.header.Get("X-Request-Id") == "" {
		t.Fatalf("the chain's headers are missing: %v", r.header)
	}
	for path, ct := range map[string]string{
		"/dashboard/app.js":    "text/javascript",
		"/dashboard/api.js":    "text/javascript",
		"/dashboard/style.css": "text/css",
		"/dashboard/icon.svg":  "image/svg+xml",
		"/dashboard/":          "text/html",
	} {
		r := ts.do(t, "GET", path, "")
		if r.status != 200 || !strings.HasPrefix(r.header.Get("Content-Type"), ct) || r.header.Get("Content-Security-Policy") != dashboardCSP {
			t.Errorf("%s: %d %q", path, r.status, r.header.Get("Content-Type"))
		}
	}
	etag := r.header.Get("ETag")
	if r := ts.do(t, "GET", "/", "", "If-None-Match", etag); etag == "" || r.status != 304 || len(r.body) != 0 {
		t.Fatalf("revalidation with %q: %d", etag, r.status)
	}
	if r := ts.do(t, "HEAD", "/dashboard/app.js", ""); r.status != 200 || len(r.body) != 0 {
		t.Fatalf("HEAD: %d", r.status)
	}

	// Unknown dashboard files and traversal attempts are the API's JSON
	// 404; unknown paths are as before: 401 without the key (the router's
	// fallback is keyed), the JSON 404 with it. The API still needs the key.
	for _, p := range []string{"/dashboard/nope.js", "/dashboard/../dashboard.go", "/dashboard/..%2fdashboard.go"} {
		r := ts.do(t, "GET", p, "")
		if r.status != 404 || r.envelope(t).Code != "not_found" || !strings.HasPrefix(r.header.Get("Content-Type"), "application/json") {
			t.Errorf("GET %s: %d %s", p, r.status, r.body)
		}
	}
	for _, p := range []string{"/nope", "/api/nope", "/api/v1/nope", "/dashboardx"} {
		if r := ts.do(t, "GET", p, ""); r.status != 401 || r.envelope(t).Code != "unauthorized" {
			t.Errorf("GET %s without the key: %d %s", p, r.status, r.body)
		}
		r := ts.authed(t, "GET", p, "")
		if r.status != 404 || r.envelope(t).Code != "not_found" || !strings.HasPrefix(r.header.Get("Content-Type"), "application/json") {
			t.Errorf("GET %s: %d %s", p, r.status, r.body)
		}
	}
	if r := ts.do(t, "GET", "/api/agents", ""); r.status != 401 {
		t.Fatalf("/api/agents without the key: %d", r.status)
	}
	if r := ts.authed(t, "POST", "/", "{}"); r.status != 405 || r.envelope(t).Code != "method_not_allowed" {
		t.Fatalf("POST /: %d %s", r.status, r.body)
	}
}

// The CSP allows no inline code, so the files must have none: no inline
// script or style, no event-handler attributes, no eval, nothing from
// another origin, and no markup built from strings (innerHTML).
func TestDashboardFilesKeepTheCSP(t *testing.T) {
	t.Parallel()
	if len(dashboardAssets) < 5 {
		t.Fatalf("only %d dashboard files embedded", len(dashboardAssets))
	}
	index := string(dashboardAssets["index.html"].body)
	for _, bad := range []*regexp.Regexp{
		regexp.MustCompile(`<script(?:\s[^>]*)?>\s*[^<\s]`),   // a script with a body
		regexp.MustCompile(`<script(?:\s(?:[^>s]|s[^r])*)?>`), // a script without src
		regexp.MustCompile(`(?i)\son[a-z]+\s*=`),              // onclick=...
		regexp.MustCompile(`(?i)\sstyle\s*=`),                 // style attributes
		regexp.MustCompile(`(?i)<style`),
		regexp.MustCompile(`(?i)javascript:`),
	} {
		if m := bad.FindString(index); m != "" {
			t.Errorf("index.html has inline code: %q", m)
		}
	}
	// Every file index.html and the modules name is embedded.
	ref := regexp.MustCompile(`(?:src|href)="/dashboard/([^"]+)"|from '\./([^']+)'`)
	for name, a := range dashboardAssets {
		for _, m := range ref.FindAllStringSubmatch(string(a.body), -1) {
			if f := m[1] + m[2]; dashboardAssets[f].body == nil {
				t.Errorf("%s refers to %s, which is not embedded", name, f)
			}
		}
		if !strings.HasSuffix(name, ".js") {
			continue
		}
		src := string(a.body)
		for _, bad := range []string{"eval(", "new Function", "innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "setTimeout('", `setTimeout("`} {
			if strings.Contains(src, bad) {
				t.Errorf("%s uses %s", name, bad)
			}
		}
		for _, u := range regexp.MustCompile(`https?://[^\s'"]+`).FindAllString(src, -1) {
			if u != "http://www.w3.org/2000/svg" { // a namespace name, never fetched
				t.Errorf("%s names another origin: %s", name, u)
			}
		}
	}
	// The map is the embed, whole.
	n := 0
	fs.WalkDir(dashboardFS, "dashboard", func(_ string, d fs.DirEntry, _ error) error {
		if !d.IsDir() {
			n++
		}
		return nil
	})
	if n != len(dashboardAssets) {
		t.Fatalf("%d files embedded, %d served", n, len(dashboardAssets))
	}
}
