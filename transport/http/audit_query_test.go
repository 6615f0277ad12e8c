package http

import (
	"bufio"
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	nethttp "net/http"
	"strings"
	"sync"
	"testing"

	"github.com/google/uuid"

	"github.com/fangd/fangd/actors/audit"
	"github.com/fangd/fangd/store"
)

// seedAudit appends evs to the test server's chain, in order.
func (ts *testServer) seedAudit(t *testing.T, evs ...audit.Event) {
	t.Helper()
	for _, ev := range evs {
		if _, err := ts.audit.Append(context.Background(), ev); err != nil {
			t.Fatal(err)
		}
	}
}

// seedMany appends n entries from several writers (group commit keeps it quick).
func (ts *testServer) seedMany(t *testing.T, n int) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for w := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += 16 {
				if _, err := ts.audit.Append(context.Background(), audit.Event{EventType: "bulk", AgentID: "bulk",
					Details: fmt.Sprintf("entry %d, with a comma and a \"quote\"", i), Outcome: "ok", Actor: "api_key"}); err != nil {
					errs <- err
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

type auditPage struct {
	Items            []map[string]any `json:"items"`
	Entries          []map[string]any `json:"entries"`
	Total            int              `json:"total"`
	Offset           int              `json:"offset"`
	Limit            int              `json:"limit"`
	NextOffset       *int             `json:"next_offset"`
	NextBeforeID     *uint64          `json:"next_before_id"`
	HistoryTruncated *bool            `json:"history_truncated"`
}

func (ts *testServer) auditQuery(t *testing.T, query string) auditPage {
	t.Helper()
	r := ts.authed(t, "GET", "/api/audit/query?"+query, "")
	var p auditPage
	if err := json.Unmarshal(r.body, &p); err != nil || r.status != 200 {
		t.Fatalf("query %q: %d %s", query, r.status, r.body)
	}
	return p
}

func seqs(items []map[string]any) []int {
	out := make([]int, len(items))
	for i, it := range items {
		out[i] = int(it["seq"].(float64))
	}
	return out
}

// LibreFang's GET /api/audit/query (routes/audit.rs): filters user, action
// (case-insensitive AuditAction names), agent, from, to, limit; answer
// {items[{seq,timestamp,agent_id,action,detail,outcome,user_id,channel,
// hash}], total, offset, limit, history_truncated}, newest first. fangd adds
// outcome, offset and the before_id cursor, and keeps its own field names.
func TestAuditQueryLibreFangFilters(t *testing.T) {
	t.Parallel()
	ts := newTestServer(t, nil)
	user := uuid.NewString()
	ts.seedAudit(t,
		audit.Event{EventType: "agent_spawned", AgentID: "a1", Outcome: "ok", Actor: user},
		audit.Event{EventType: "tool_invoked", AgentID: "a1", Outcome: "error", Actor: "api_key"},
		audit.Event{EventType: "agent_spawned", AgentID: "a2", Outcome: "ok", Actor: "api_key"},
	)
	p := ts.auditQuery(t, "action=AgentSpawn")
	if fmt.Sprint(seqs(p.Items)) != "[3 1]" || p.Total != 2 || p.Limit != 200 || p.Offset != 0 ||
		p.HistoryTruncated == nil || *p.HistoryTruncated || len(p.Entries) != 2 || p.NextOffset != nil {
		t.Fatalf("action=AgentSpawn: %+v", p)
	}
	it := p.Items[1]
	for _, k := range []string{"seq", "timestamp", "agent_id", "action", "detail", "outcome", "user_id", "channel", "hash",
		"id", "event_type", "details", "actor", "source_ip", "prev_hash"} {
		if _, ok := it[k]; !ok {
			t.Fatalf("item has no %q: %v", k, it)
		}
	}
	if it["seq"] != it["id"] || it["action"] != "agent_spawned" || it["detail"] != it["details"] || it["user_id"] != user ||
		it["channel"] != nil || p.Items[0]["user_id"] != nil {
		t.Fatalf("item fields: %v / %v", it, p.Items[0])
	}
	for q, want := range map[string]string{
		"agent=a1":                       "[2 1]",
		"user=" + user:                   "[1]",
		"user=api_key&agent=a2":          "[3]",
		"outcome=error":                  "[2]",
		"action=tool_invoked&agent=a2":   "[]",
		"action=&agent=":                 "[3 2 1]", // empty = unset, as a dashboard sends it
		"before_id=3":                    "[2 1]",
		"after_id=1":                     "[3 2]",
		"since_id=2":                     "[3]",
		"from=2000-01-01T00:00:00Z":      "[3 2 1]",
		"to=2000-01-01T00:00:00%2B00:00": "[]",
		"from=2999-01-01T00:00:00Z":      "[]",
	} {
		if got := fmt.Sprint(seqs(ts.auditQuery(t, q).Items)); got != want {
			t.Errorf("%s: %s, want %s", q, got, want)
		}
	}
}

// Paging: offset/limit with next_offset, and the before_id cursor, which
// stays on the same entries while the chain grows in front of it.
func TestAuditQueryPaging(t *testing.T) {
	t.Parallel()
	ts := newTestServer(t, nil)
	ts.seedMany(t, 30)
	p := ts.auditQuery(t, "agent=bulk&limit=10")
	if len(p.Items) != 10 || p.Total != 30 || p.NextOffset == nil || *p.NextOffset != 10 || p.NextBeforeID == nil ||
		*p.NextBeforeID != uint64(p.Items[9]["seq"].(float64)) {
		t.Fatalf("page 1: total %d next %v cursor %v items %v", p.Total, p.NextOffset, p.NextBeforeID, seqs(p.Items))
	}
	ts.seedMany(t, 5) // new entries in front: offsets shift, the cursor does not
	p2 := ts.auditQuery(t, fmt.Sprintf("agent=bulk&limit=10&before_id=%d", *p.NextBeforeID))
	if p2.Items[0]["seq"].(float64) != p.Items[9]["seq"].(float64)-1 || p2.Total != 20 || len(p2.Items) != 10 {
		t.Fatalf("cursor page: %v total %d", seqs(p2.Items), p2.Total)
	}
	last := ts.auditQuery(t, "agent=bulk&limit=10&offset=30")
	if len(last.Items) != 5 || last.Total != 35 || last.NextOffset != nil || last.NextBeforeID != nil {
		t.Fatalf("last page: %+v", last)
	}
	// No content filter: the total comes from the id range, not a full read.
	all := ts.auditQuery(t, "limit=1")
	if all.Total < 35 || len(all.Items) != 1 {
		t.Fatalf("unfiltered: total %d", all.Total)
	}
	if big := ts.auditQuery(t, "limit=999999"); big.Limit != 5000 {
		t.Fatalf("limit is clamped at 5000 as LibreFang's, got %d", big.Limit)
	}
}

// Bad filters are a 400 naming the parameter, on both routes.
func TestAuditQueryAndExportRefuseBadInput(t *testing.T) {
	t.Parallel()
	ts := newTestServer(t, nil)
	for _, c := range []struct{ q, param, code string }{
		{"from=yesterday", `"from"`, "invalid_query"},
		{"to=2026-13-01T00:00:00Z", `"to"`, "invalid_query"},
		{"from=2026-12-02T00:00:00Z&to=2026-12-01T00:00:00Z", `"from"`, "invalid_query"},
		{"channel=api", `"channel"`, "unsupported_filter"},
		{"before_id=-1", `"before_id"`, "invalid_query"},
		{"after_id=x", `"after_id"`, "invalid_query"},
		{"user=a%01b", `"user"`, "invalid_query"},
		{"agent=" + strings.Repeat("a", 300), `"agent"`, "invalid_query"},
		{"limit=0", `"limit"`, "invalid_query"},
		{"offset=-1", `"offset"`, "invalid_query"},
	} {
		for _, route := range []string{"query", "export"} {
			if route == "export" && strings.HasPrefix(c.q, "offset") {
				continue // export has no offset
			}
			r := ts.authed(t, "GET", "/api/audit/"+route+"?"+c.q, "")
			e := r.envelope(t)
			if r.status != 400 || e.Code != c.code || !strings.Contains(e.Error, c.param) {
				t.Errorf("%s?%s: %d %s", route, c.q, r.status, r.body)
			}
		}
	}
	for _, q := range []string{"format=xml", "order=up"} {
		r := ts.authed(t, "GET", "/api/audit/export?"+q, "")
		if e := r.envelope(t); r.status != 400 || !strings.Contains(e.Error, strings.Split(q, "=")[0]) {
			t.Errorf("export?%s: %d %s", q, r.status, r.body)
		}
	}
	// Like the other audit routes: the API key is needed.
	if r := ts.do(t, "GET", "/api/audit/export", ""); r.status != 401 {
		t.Fatalf("export without a key: %d", r.status)
	}
	if r := ts.do(t, "GET", "/api/audit/query", ""); r.status != 401 {
		t.Fatalf("query without a key: %d", r.status)
	}
}

// LibreFang's export formats: json (the default, one array) and csv with
// its fixed columns (fangd's actor and source_ip after them), and JSON
// Lines; newest first unless order=asc; limit default 5000.
func TestAuditExportFormats(t *testing.T) {
	t.Parallel()
	ts := newTestServer(t, nil)
	ts.seedAudit(t, audit.Event{EventType: "x", AgentID: "=cmd|' /C calc'!A0", Details: "a,b\n\"c\"", Outcome: "ok", Actor: "api_key"})
	ts.seedMany(t, 40)

	r := ts.authed(t, "GET", "/api/audit/export?agent=bulk", "")
	var arr []map[string]any
	if err := json.Unmarshal(r.body, &arr); err != nil || r.status != 200 || len(arr) != 40 {
		t.Fatalf("json: %d %v %.200s", r.status, err, r.body)
	}
	if r.header.Get("Content-Type") != "application/json" || r.header.Get("Content-Disposition") != `attachment; filename="audit.json"` ||
		r.header.Get("X-Librefang-Audit-History-Truncated") != "false" {
		t.Fatalf("json headers: %v", r.header)
	}
	if arr[0]["seq"].(float64) < arr[39]["seq"].(float64) || arr[0]["prev_hash"] == nil || arr[0]["action"] != "bulk" {
		t.Fatalf("json order/fields: %v ... %v", arr[0], arr[39])
	}

	r = ts.authed(t, "GET", "/api/audit/export?format=jsonl&order=asc&limit=5", "")
	lines := strings.Split(strings.TrimSuffix(string(r.body), "\n"), "\n")
	if r.status != 200 || len(lines) != 5 || r.header.Get("Content-Type") != "application/x-ndjson" {
		t.Fatalf("jsonl: %d %d lines %v", r.status, len(lines), r.header)
	}
	for i, l := range lines {
		var e map[string]any
		if err := json.Unmarshal([]byte(l), &e); err != nil || e["seq"] != float64(i+1) {
			t.Fatalf("jsonl line %d: %s", i, l)
		}
	}

	r = ts.authed(t, "GET", "/api/audit/export?format=csv&order=asc", "")
	rows, err := csv.NewReader(bytes.NewReader(r.body)).ReadAll()
	if err != nil || r.status != 200 || !strings.HasPrefix(r.header.Get("Content-Type"), "text/csv") {
		t.Fatalf("csv: %d %v", r.status, err)
	}
	if strings.Join(rows[0], ",") != "seq,timestamp,agent_id,action,detail,outcome,user_id,channel,hash,prev_hash,actor,source_ip" {
		t.Fatalf("csv header: %v", rows[0])
	}
	first := rows[1]
	// The formula-looking agent id is neutralised with a leading quote;
	// commas, quotes and newlines round-trip.
	if first[0] != "1" || first[2] != "'=cmd|' /C calc'!A0" || first[4] != "a,b\n\"c\"" || first[10] != "api_key" {
		t.Fatalf("csv row: %q", first)
	}
	// Each row verifies against the chain: its prev_hash is the row before's hash.
	for i := 2; i < len(rows); i++ {
		if rows[i][9] != rows[i-1][8] {
			t.Fatalf("csv row %d: prev_hash %s, previous hash %s", i, rows[i][9], rows[i-1][8])
		}
	}
}

// The export reads the store a page at a time as the client takes bytes:
// with thousands of entries no store read holds more than one page and no
// buffer more than one page's output.
func TestAuditExportMemoryIsBoundedByThePage(t *testing.T) {
	t.Parallel()
	ts := newTestServer(t, nil)
	const n = 3000
	ts.seedMany(t, n)
	w, err := ts.audit.Walk(context.Background(), audit.Filter{}, false)
	if err != nil {
		t.Fatal(err)
	}
	sctx, cancel := ts.streamCtx()
	x := &exportStream{w: w, ctx: sctx, cancel: cancel, format: "jsonl", left: 1 << 30, closing: ts.closing}
	lines := 0
	sc := bufio.NewScanner(io.LimitReader(x, 1<<30))
	sc.Buffer(make([]byte, 64<<10), 64<<10)
	for sc.Scan() {
		lines++
	}
	if sc.Err() != nil || lines != n {
		t.Fatalf("%d lines, %v", lines, sc.Err())
	}
	// One store read is at most a page (256 entries), and the reads
	// together cover the chain; the buffer never holds more than a page's
	// output (each line here is under 600 bytes).
	if w.Held > 256 || w.Pages < n/256 || x.maxBuf > 256*600 {
		t.Fatalf("held %d entries in one read, %d reads, buffer up to %d bytes", w.Held, w.Pages, x.maxBuf)
	}
}

// A store failure in the middle of an export cuts the transfer: the client
// gets an error, not a short file that looks complete.
func TestAuditExportFailureMidwayCutsTheBody(t *testing.T) {
	t.Parallel()
	ts := newTestServer(t, nil)
	ts.seedMany(t, 600)
	if err := ts.db.AuditLog().Overwrite(store.AuditRecord{ID: 500, Raw: []byte("not json")}); err != nil {
		t.Fatal(err)
	}
	req, _ := nethttp.NewRequest("GET", ts.url+"/api/audit/export?format=csv&order=asc&limit=100000", nil)
	req.Header.Set("Authorization", "Bearer "+testKey)
	res, err := nethttp.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	if res.StatusCode != 200 || err == nil {
		t.Fatalf("status %d, read error %v after %d bytes: the cut must show", res.StatusCode, err, len(body))
	}
	if rows := bytes.Count(body, []byte("\nbulk")) + bytes.Count(body, []byte(",bulk,")); rows >= 600 {
		t.Fatalf("the whole export arrived despite the damaged entry")
	}
}
