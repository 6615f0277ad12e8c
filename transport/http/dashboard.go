package http

import (
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"io/fs"
	"mime"
	"path"
	"strings"

	"github.com/valyala/fasthttp"
)

// The WebChat dashboard (docs/dashboard.md): plain HTML, CSS and ES
// modules embedded in the binary and served at / and /dashboard/*. The
// static routes are public because they hold no data: every panel asks
// the keyed API from the browser with the operator's credential, exactly
// as any other client does. Nothing is loaded from elsewhere (no CDN) and
// the pages run under their own strict Content-Security-Policy: scripts,
// styles and connections from this origin only, no inline script or
// style, no eval, no framing.

//go:embed dashboard
var dashboardFS embed.FS

// dashboardCSP replaces the API's "default-src 'none'" on the dashboard's
// own files. It is set whether or not [http] security_headers is on: the
// dashboard is written for it (no inline code), so it costs nothing and
// keeps an injected script from running or phoning home.
const dashboardCSP = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; " +
	"connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"

// dashboardAsset is one embedded file, ready to serve.
type dashboardAsset struct {
	body        []byte
	contentType string
	etag        string
}

// dashboardAssets are the files under dashboard/, keyed by their path
// below it ("index.html", "app.js"), read once at start.
var dashboardAssets = func() map[string]dashboardAsset {
	out := map[string]dashboardAsset{}
	err := fs.WalkDir(dashboardFS, "dashboard", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := dashboardFS.ReadFile(p)
		if err != nil {
			return err
		}
		// The dashboard's own types are not left to the host's mime
		// tables; those are read only for another kind of file (the
		// first lookup loads the system's mime databases, 1.5 MiB of
		// garbage at every start).
		var ct string
		switch path.Ext(p) {
		case ".js":
			ct = "text/javascript; charset=utf-8"
		case ".css":
			ct = "text/css; charset=utf-8"
		case ".html":
			ct = "text/html; charset=utf-8"
		case ".svg":
			ct = "image/svg+xml"
		default:
			ct = mime.TypeByExtension(path.Ext(p))
		}
		sum := sha256.Sum256(b)
		out[strings.TrimPrefix(p, "dashboard/")] = dashboardAsset{b, ct, `"` + hex.EncodeToString(sum[:8]) + `"`}
		return nil
	})
	if err != nil {
		panic("dashboard assets: " + err.Error()) // the embed is part of the binary
	}
	return out
}()

func (s *Server) dashboardRoutes() {
	s.handle("GET", "/", s.dashboardIndex, public)
	s.handle("GET", "/dashboard/{path:*}", s.dashboardFile, public)
}

// dashboardIndex serves GET /: the dashboard's page.
func (s *Server) dashboardIndex(ctx *fasthttp.RequestCtx) error {
	return serveDashboardAsset(ctx, "index.html")
}

// dashboardFile serves GET /dashboard/{path}: its scripts and styles
// (the bare /dashboard/ is the page too). Unknown files get the API's
// JSON 404, like any unknown path.
func (s *Server) dashboardFile(ctx *fasthttp.RequestCtx) error {
	p, _ := ctx.UserValue("path").(string)
	if p == "" {
		p = "index.html"
	}
	return serveDashboardAsset(ctx, p)
}

func serveDashboardAsset(ctx *fasthttp.RequestCtx, name string) error {
	a, ok := dashboardAssets[name]
	if !ok {
		return &apiError{fasthttp.StatusNotFound, "not_found", "no dashboard file " + name}
	}
	h := &ctx.Response.Header
	h.Set("Content-Security-Policy", dashboardCSP)
	// Revalidated on every load (an upgraded daemon serves new files at
	// the same names), answered 304 while unchanged.
	h.Set("Cache-Control", "no-cache")
	h.Set("ETag", a.etag)
	if string(ctx.Request.Header.Peek("If-None-Match")) == a.etag {
		ctx.SetStatusCode(fasthttp.StatusNotModified)
		return nil
	}
	ctx.SetStatusCode(fasthttp.StatusOK)
	ctx.SetContentType(a.contentType)
	ctx.SetBody(a.body)
	return nil
}
