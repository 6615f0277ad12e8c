package http

import (
	"context"
	"encoding/json"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
)

// loadOpenAPI fetches /api/openapi.json without credentials (it is
// public) and loads it with kin-openapi, which must find it a valid
// OpenAPI 3.1 document.
func loadOpenAPI(t *testing.T, url string) *openapi3.T {
	t.Helper()
	ts := &testServer{url: url}
	r := ts.do(t, "GET", "/api/openapi.json", "")
	if r.status != 200 || !strings.HasPrefix(r.header.Get("Content-Type"), "application/json") {
		t.Fatalf("openapi.json: %d %s", r.status, r.body)
	}
	doc, err := openapi3.NewLoader().LoadFromData(r.body)
	if err != nil {
		t.Fatal(err)
	}
	if !doc.IsOpenAPI31OrLater() || doc.OpenAPI != "3.1.0" {
		t.Fatalf("openapi %q, want 3.1.0", doc.OpenAPI)
	}
	if err := doc.Validate(context.Background()); err != nil {
		t.Fatalf("kin-openapi finds the document invalid: %v", err)
	}
	return doc
}

// servedRoutes is what the router serves, as "METHOD path" with OpenAPI
// path templates; HEAD mirrors GET and is left out.
func servedRoutes(s *Server) map[string]bool {
	out := map[string]bool{}
	for method, paths := range s.router.List() {
		if method == "HEAD" {
			continue
		}
		for _, p := range paths {
			out[method+" "+openAPIPath(p)] = true
		}
	}
	return out
}

// sourceRoutes finds every s.api/s.handle call with literal arguments in
// the package's non-test files: the routes some configuration registers,
// even those the test servers leave out.
func sourceRoutes(t *testing.T) map[string]bool {
	t.Helper()
	out := map[string]bool{}
	files, _ := filepath.Glob("*.go")
	fset := token.NewFileSet()
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		src, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		file, err := parser.ParseFile(fset, f, src, 0)
		if err != nil {
			t.Fatal(err)
		}
		ast.Inspect(file, func(n ast.Node) bool {
			call, ok := n.(*ast.CallExpr)
			if !ok || len(call.Args) < 2 {
				return true
			}
			sel, ok := call.Fun.(*ast.SelectorExpr)
			if !ok || (sel.Sel.Name != "api" && sel.Sel.Name != "handle") {
				return true
			}
			m, ok1 := call.Args[0].(*ast.BasicLit)
			p, ok2 := call.Args[1].(*ast.BasicLit)
			if !ok1 || !ok2 {
				return true
			}
			method, _ := strconv.Unquote(m.Value)
			path, _ := strconv.Unquote(p.Value)
			if sel.Sel.Name == "api" {
				path = "/api" + path
			}
			out[method+" "+path] = true
			return true
		})
	}
	return out
}

// The document is generated from the router's registrations, so it lists
// exactly what is served; routeDocs must describe every served route and
// nothing that no code serves.
func TestOpenAPIDocumentsEveryRoute(t *testing.T) {
	t.Parallel()
	plain := newTestServer(t, nil)
	withMCP := newMCPServer(t, mcpSetup{})
	seen := map[string]bool{}
	for _, c := range []struct {
		s   *Server
		url string
	}{{plain.Server, plain.url}, {withMCP.Server, withMCP.url}} {
		doc := loadOpenAPI(t, c.url)
		inDoc := map[string]bool{}
		for p, item := range doc.Paths.Map() {
			for method := range item.Operations() {
				inDoc[method+" "+p] = true
			}
		}
		served := servedRoutes(c.s)
		var missing, extra []string
		for r := range served {
			if !inDoc[r] {
				missing = append(missing, r)
			}
		}
		for r := range inDoc {
			if !served[r] {
				extra = append(extra, r)
			}
		}
		sort.Strings(missing)
		sort.Strings(extra)
		if len(missing)+len(extra) > 0 {
			t.Fatalf("served but not in the document: %v\nin the document but not served: %v", missing, extra)
		}
		var undocumented []string
		for _, rt := range c.s.registered {
			seen[docKey(rt.method, rt.path)] = true
			if _, ok := routeDocs[docKey(rt.method, rt.path)]; !ok {
				undocumented = append(undocumented, rt.method+" "+rt.path)
			}
		}
		if len(undocumented) > 0 {
			t.Errorf("routes without a routeDocs entry: %v", undocumented)
		}
	}
	src := sourceRoutes(t)
	if !src["GET /api/agents"] || !src["POST /a2a"] {
		t.Fatalf("the source scan found too little: %d routes", len(src))
	}
	for k := range src {
		if _, ok := routeDocs[k]; !ok {
			t.Errorf("%s is registered in the source but has no routeDocs entry", k)
		}
	}
	for k := range routeDocs {
		if !seen[k] && !src[k] {
			t.Errorf("routeDocs documents %s, which no code registers", k)
		}
	}
}

// checkAnswer validates a real answer against the documented success
// schema of its operation.
func checkAnswer(t *testing.T, doc *openapi3.T, method, path string, r response) {
	t.Helper()
	item := doc.Paths.Find(path)
	if item == nil {
		t.Fatalf("%s not in the document", path)
	}
	op := item.GetOperation(method)
	if op == nil {
		t.Fatalf("%s %s not in the document", method, path)
	}
	res := op.Responses.Status(r.status)
	if res == nil || res.Value == nil {
		t.Fatalf("%s %s answered %d, which the document does not list: %s", method, path, r.status, r.body)
	}
	mt := res.Value.Content.Get("application/json")
	if mt == nil || mt.Schema == nil || mt.Schema.Ref == "" {
		t.Fatalf("%s %s %d has no documented schema", method, path, r.status)
	}
	var v any
	if err := json.Unmarshal(r.body, &v); err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	if err := doc.ValidateSchemaJSON(mt.Schema.Value, v, openapi3.EnableJSONSchema2020()); err != nil {
		t.Errorf("%s %s answer does not match %s: %v\n%s", method, path, mt.Schema.Ref, err, r.body)
	}
}

func TestOpenAPISchemasMatchRealAnswers(t *testing.T) {
	t.Parallel()
	extra, _ := withApprovals(t, nil)
	ts := newTestServer(t, nil, extra)
	doc := loadOpenAPI(t, ts.url)
	checkAnswer(t, doc, "GET", "/api/health", ts.do(t, "GET", "/api/health", ""))
	checkAnswer(t, doc, "GET", "/api/ready", ts.do(t, "GET", "/api/ready", ""))
	a := ts.mustStatus(t, 201, "POST", "/api/agents", `{"name":"ops","model":"fake/m","tools":["shell_exec"]}`)
	checkAnswer(t, doc, "POST", "/api/agents", a)
	var agent struct{ ID string }
	a.json(t, &agent)
	checkAnswer(t, doc, "GET", "/api/agents", ts.mustStatus(t, 200, "GET", "/api/agents", ""))
	checkAnswer(t, doc, "GET", "/api/v1/agents/{id}", ts.mustStatus(t, 200, "GET", "/api/v1/agents/ops", ""))
	ap := ts.mustStatus(t, 201, "POST", "/api/approvals", `{"agent_id":"`+agent.ID+`","action":"delete_file","description":"remove it","payload":{"path":"/x"}}`)
	checkAnswer(t, doc, "POST", "/api/approvals", ap)
	checkAnswer(t, doc, "GET", "/api/approvals", ts.mustStatus(t, 200, "GET", "/api/approvals", ""))
	checkAnswer(t, doc, "GET", "/api/audit/verify", ts.mustStatus(t, 200, "GET", "/api/audit/verify", ""))
	checkAnswer(t, doc, "GET", "/api/usage", ts.mustStatus(t, 200, "GET", "/api/usage", ""))

	// A wrong answer fails the check: the schemas are not vacuous.
	var bad map[string]any
	ts.mustStatus(t, 200, "GET", "/api/agents", "").json(t, &bad)
	bad["items"] = []any{map[string]any{"id": 7}}
	b, _ := json.Marshal(bad)
	sch := doc.Paths.Find("/api/agents").Get.Responses.Status(200).Value.Content.Get("application/json").Schema.Value
	if err := doc.ValidateSchemaJSON(sch, decodeAny(t, b), openapi3.EnableJSONSchema2020()); err == nil {
		t.Fatal("a malformed agent list passed the schema")
	}

	cs := newCommsServer(t)
	cdoc := loadOpenAPI(t, cs.url)
	checkAnswer(t, cdoc, "POST", "/api/comms/send", cs.authed(t, "POST", "/api/comms/send", `{"to":"agent:coder","content":"hi"}`))
}

func decodeAny(t *testing.T, b []byte) any {
	t.Helper()
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatal(err)
	}
	return v
}
